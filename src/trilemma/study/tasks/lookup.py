"""The ``lookup`` task kind: ground truth read from a benchmark's table instead of trained.

A tabular benchmark (NAS-Bench-201) publishes the trained accuracy of every cell; a lookup
task turns it into a trained column of the study, so the study's report sets every closed-form
and at-init indicator against it exactly as it does with trained ground truth::

    [tasks.lookup]
    source = "nb201-cifar10"        # or a CSV file with an `arch` column (relative to the study)
    column = "val_acc"              # the table's value column
    name = "cifar10_val_acc"        # the study's column (default: `column`)
    axis = "generalization"         # the axis it measures
    higher_is_better = true

Sources: ``"nb201-cifar10"`` (NAS-Bench-201 CIFAR-10 validation accuracy after the 200-epoch
schedule, :func:`trilemma.nb201.load_nb201_accuracy`; its ``column`` is ``val_acc``) or a CSV
path. Table keys are matched through the space's canonical names. An architecture the table
does not hold fails with a message saying so (never a silent gap). Dataset- and seed-free.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

from trilemma._schema import Column
from trilemma.errors import ConfigError, InvalidSpecError, TrilemmaError
from trilemma.study._config import StudyConfig
from trilemma.study._context import TaskContext
from trilemma.study._task_api import TaskKind

__all__ = ["LookupOptions", "LookupTask", "BUILTIN_SOURCES"]

#: Named sources and what they hold.
BUILTIN_SOURCES: dict[str, str] = {
    "nb201-cifar10": "NAS-Bench-201 CIFAR-10 validation accuracy (%), 200-epoch schedule",
}


class LookupOptions(BaseModel):
    """Options of the ``lookup`` task kind (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str
    column: str = "val_acc"
    name: str | None = None
    axis: Literal["expressivity", "convergence", "generalization"] = "generalization"
    higher_is_better: bool = True
    label: str = ""

    @property
    def output(self) -> str:
        return self.name or self.column


@functools.lru_cache(maxsize=8)
def _load(source: str, base_dir: str) -> pd.DataFrame:
    if source == "nb201-cifar10":
        from trilemma.nb201 import load_nb201_accuracy

        return load_nb201_accuracy()
    path = Path(source)
    if not path.is_absolute():
        path = Path(base_dir) / path
    if not path.is_file():
        raise ConfigError(f"tasks.lookup.source: {source!r} is neither a built-in source ({', '.join(BUILTIN_SOURCES)}) "
                          f"nor a file (looked at {str(path)!r})")
    return pd.read_csv(path)


class LookupTask(TaskKind):
    """Ground truth looked up in a benchmark's table (dataset- and seed-free)."""

    name = "lookup"
    uses_data = False
    uses_seed = False
    chunk_size = 512
    priority = -1  # a table lookup: first, with the closed form
    options_model = LookupOptions

    def validate(self, config: StudyConfig, archs: Any) -> list[str]:
        lines = super().validate(config, archs)
        if lines:
            return lines
        opts = self.options(config)
        try:
            table = _load(opts.source, config.base_dir)
        except TrilemmaError as err:
            return [f"tasks.lookup.source: {err}"]
        for col in ("arch", opts.column):
            if col not in table.columns:
                lines.append(f"tasks.lookup.column: the table of {opts.source!r} has no column {col!r}; "
                             f"it has: {', '.join(map(str, table.columns))}")
        return lines

    def columns(self, ctx: TaskContext, options: LookupOptions) -> tuple[Column, ...]:
        return (Column(options.output, "trained", label=options.label or options.output,
                       directions={options.axis: options.higher_is_better}, source="lookup", role="truth",
                       description=f"{options.column} of {BUILTIN_SOURCES.get(options.source, options.source)}"),)

    def _values(self, ctx: TaskContext, options: LookupOptions) -> dict[str, float]:
        cache = ctx.__dict__.setdefault("_lookup_values", {})
        key = (options.source, options.column)
        if key not in cache:
            table = _load(options.source, ctx.config.base_dir)
            values: dict[str, float] = {}
            for arch, value in zip(table["arch"], table[options.column]):
                try:
                    values[ctx.space.canonical(str(arch))] = float(value)
                except InvalidSpecError:
                    continue  # rows of other spaces' cells
            cache[key] = values
        return dict(cache[key])

    def run(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: LookupOptions) -> dict[str, Any]:
        values = self._values(ctx, options)
        if arch not in values:
            raise ConfigError(f"architecture {arch!r} is not in the table of {options.source!r}")
        return {options.output: values[arch]}

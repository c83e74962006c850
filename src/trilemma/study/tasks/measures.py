"""The ``measures`` task kind: measures at initialization (:mod:`trilemma.measures`).

Each architecture is measured on a seeded subset of ``batch_size`` training inputs, averaged
over ``repeats`` re-initializations. Seeds: the study seed ``s`` initializes the model;
measure repeat ``r`` uses init seed ``s + 1_000_000·r``, so repeat 0 measures exactly the
network that training starts from. Each measure's column carries the axis and direction the
measure was registered with (one source of truth: :func:`trilemma.measures.register_measure`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from trilemma._schema import AXES, Column
from trilemma.errors import TrilemmaError
from trilemma.study._config import MeasuresConfig, StudyConfig
from trilemma.study._context import TaskContext, torch_options
from trilemma.study._task_api import TaskKind
from trilemma.study.tasks._common import check_datasets, section

__all__ = ["MeasuresTask", "init_seed", "measure_batch", "measure_columns"]


def init_seed(seed: int, repeat: int) -> int:
    """Initialization seed of measure repeat ``repeat`` under study seed ``seed``."""
    return seed + 1_000_000 * repeat


def measure_columns(names: Sequence[str], repeats: int = 1) -> tuple[Column, ...]:
    """The columns of measures ``names``: the value (kind ``init``, the measure's axis and
    direction), its seconds (``<name>_time``), its spread over repeats (``<name>_std``) and
    its error message when it failed under ``on_error = "record"`` (``<name>_error``)."""
    from trilemma.measures import get_measure

    out = []
    for name in names:
        m = get_measure(name)
        dirs = {a: hib for a, hib in m.directions.items() if a in AXES}
        out.append(Column(name, "init", label=getattr(m, "label", "") or name, directions=dirs,
                          description=m.description, source="measures"))
        for extra in getattr(m, "extra_columns", ()) or ():
            out.append(extra if isinstance(extra, Column) else Column(**extra))
        out.append(Column(f"{name}_time", "cost", unit="s", label=f"{name} seconds",
                          description=f"seconds to compute {name}", source="measures"))
        if repeats > 1:
            out.append(Column(f"{name}_std", "info", label=f"{name} std",
                              description=f"standard deviation of {name} over re-initializations", source="measures"))
        out.append(Column(f"{name}_error", "info", "str", description=f"why {name} failed (on_error = 'record')",
                          source="measures"))
    return tuple(out)


def measure_batch(ds: Any, batch_size: int, seed: int) -> tuple[Any, Any]:
    """The seeded subset of training inputs (and labels) that measures are computed on.

    Returns:
        ``(x, y)`` with ``x`` of shape ``(min(batch_size, n_train), *input_shape)``.
    """
    import torch

    n = int(ds.x_train.shape[0])
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[: min(batch_size, n)]
    return ds.x_train[idx], ds.y_train[idx]


class MeasuresTask(TaskKind):
    """Measures at initialization, averaged over re-initializations."""

    name = "measures"
    chunk_size = 4
    priority = 5

    def options(self, config: StudyConfig) -> MeasuresConfig:
        return section(config, "measures")

    def validate(self, config: StudyConfig, archs: Sequence[str]) -> list[str]:
        from trilemma.measures import get_measure

        cfg = config.measures
        lines = check_datasets(config)
        if cfg is None:
            return lines
        for i, name in enumerate(cfg.names):
            try:
                m = get_measure(name)
            except KeyError as err:
                lines.append(f"measures.names[{i}]: {err}")
                continue
            allowed = m.options
            for opt in cfg.options.get(name, {}):
                if allowed and opt not in allowed:
                    lines.append(f"measures.options.{name}.{opt}: unknown option of measure {name!r}; "
                                 f"allowed: {', '.join(allowed)}")
                elif not allowed and m._options is not None:  # noqa: SLF001 - takes no options
                    lines.append(f"measures.options.{name}.{opt}: measure {name!r} takes no options")
        return lines

    def columns(self, ctx: TaskContext, options: MeasuresConfig) -> tuple[Column, ...]:
        return measure_columns(options.names, options.repeats)

    def run(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: MeasuresConfig) -> dict[str, Any]:
        from trilemma.measures import get_measure

        ds = ctx.dataset(dataset)
        x, y = measure_batch(ds, options.batch_size, seed)
        x, y = x.to(ctx.device), y.to(ctx.device)
        values: dict[str, list[float]] = {n: [] for n in options.names}
        times: dict[str, list[float]] = {n: [] for n in options.names}
        extras: dict[str, dict[str, list[float]]] = {n: {} for n in options.names}
        errors: dict[str, str] = {}
        for r in range(options.repeats):
            model = ctx.build_model(arch, dataset, init_seed(seed, r))
            for name in options.names:
                if name in errors:
                    continue
                measure = get_measure(name)
                try:
                    res = measure(model, x, y if measure.needs_labels else None, seed=init_seed(seed, r),
                                  **torch_options(options.options.get(name, {})))
                except TrilemmaError as err:
                    if options.on_error == "fail":
                        raise
                    errors[name] = f"{type(err).__name__}: {err}"
                    continue
                values[name].append(res.value)
                times[name].append(res.seconds)
                for k, v in res.extras.items():
                    if isinstance(v, bool):
                        continue
                    if hasattr(v, "numel") and v.numel() == 1:
                        v = v.item()
                    if isinstance(v, (int, float)):
                        extras[name].setdefault(k, []).append(float(v))
        payload: dict[str, Any] = {}
        for name in options.names:
            if name in errors:
                payload[name] = None
                payload[f"{name}_error"] = errors[name]
                continue
            vs = values[name]
            payload[name] = sum(vs) / len(vs)
            payload[f"{name}_time"] = sum(times[name]) / len(times[name])
            if len(vs) > 1:
                mean = payload[name]
                payload[f"{name}_std"] = math.sqrt(sum((v - mean) ** 2 for v in vs) / (len(vs) - 1))
            for k, ev in extras[name].items():
                finite = [e for e in ev if math.isfinite(e)]
                payload[f"{name}_{k}"] = sum(finite) / len(finite) if len(finite) == len(ev) else None
        payload["info"] = {**ctx.info(arch, dataset), "batch": int(x.shape[0]), "repeats": options.repeats}
        return payload



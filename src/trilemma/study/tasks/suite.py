"""The ``proxy_suite`` task kind: the whole zero-cost proxy suite per architecture in one fused pass.

Where the ``measures`` kind calls every measure on its own, this kind calls
:func:`trilemma.measures.proxy_suite`, which shares one labelled forward/backward pass between
snip, grad_norm, fisher and grasp, takes NASWOT's and the linear regions' activation codes and
the FLOPs from the same forward pass, jacob_cov from a backward pass of the same graph and the
five NTK statistics from one kernel (each value equals the registered measure's). Every value
is stored as its own column, declared with the axis and direction its measure was registered
with::

    [tasks.proxy_suite]
    names = ["naswot", "jacob_cov", "ntk_condition"]   # default: the whole suite
    batch_size = 64
    labels = "random"          # "data" (the dataset's labels), "random" (seeded) or "none"
    on_error = "record"        # a failing measure leaves its column empty, its reason in <name>_error
    unique = true              # measure each distinct function once (see below)
    sample = { n = 500, seed = 0 }
    [tasks.proxy_suite.options]
    ntk_condition = { batchnorm = "eval", dtype = "float32" }

**Each function once** (``unique = true``, the default): architectures that the space maps to
the same :meth:`~trilemma.spaces.ArchSpace.representative` compute the same function (for
NAS-Bench-201: the same cell after dropping every edge on no input→output path, up to
relabelling, :func:`~trilemma.spaces.nb201_canonical_key`); the representative's network is
built and measured once, and every member of the class gets its values (the ``measured_as``
column names the network measured). The study's ``<kind>_seconds`` of a member is its share
of that one computation.

Seeds: the study seed ``s`` initializes the network (the same initialization the ``measures``
kind's repeat 0 measures) and picks the batch (:func:`~trilemma.study.tasks.measure_batch`);
random labels are drawn from a generator seeded with ``10_000 + s``, the same for every
architecture. The images of ``cifar10_unlabeled`` carry no labels: with ``labels = "random"``
the label-needing proxies (snip, grad_norm, grasp, fisher) see loss gradients of the same kind
as with true labels, but their numbers are not those of the published protocol (true labels).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trilemma._schema import AXES, Column
from trilemma.errors import ConfigError, TrilemmaError
from trilemma.study._config import SampleConfig, StudyConfig
from trilemma.study._context import TaskContext, torch_options
from trilemma.study._task_api import TaskKind
from trilemma.study.tasks._common import check_datasets
from trilemma.study.tasks.measures import measure_batch

__all__ = ["SuiteOptions", "SuiteTask", "suite_columns", "suite_names"]

#: Seed offset of the random labels (the benchmarks' convention: ``10_000 + seed``).
LABEL_SEED_OFFSET = 10_000


class SuiteOptions(BaseModel):
    """Options of the ``proxy_suite`` task kind (see the module docstring).

    Attributes:
        names: Measures of :data:`trilemma.measures.SUITE` (default: all of them, without the
            label-needing ones when ``labels = "none"``).
        batch_size: Inputs measured on (a seeded subset of the training inputs).
        labels: ``"data"``: the dataset's labels; ``"random"``: seeded uniformly random
            labels (for unlabeled data); ``"none"``: no labels (label-needing measures cannot
            be named).
        options: ``{measure: {option: value}}`` as for the registered measures.
        on_error: ``"fail"``: a failing measure fails the task; ``"record"``: its column is
            left empty and its error stored as ``<name>_error``.
        unique: Measure each distinct function once (the space's representatives).
        sample: Measure only a seeded subset of the study's architectures.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    names: tuple[str, ...] | None = None
    batch_size: int = Field(64, gt=1)
    labels: Literal["data", "random", "none"] = "data"
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    on_error: Literal["fail", "record"] = "fail"
    unique: bool = True
    sample: SampleConfig | None = None

    @field_validator("names")
    @classmethod
    def _names_ok(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from trilemma.measures import SUITE

        if v is None:
            return v
        if not v:
            raise ValueError("must name at least one measure (or be left out for the whole suite)")
        unknown = [n for n in v if n not in SUITE]
        if unknown:
            raise ValueError(f"{unknown} not in the proxy suite; it computes {', '.join(SUITE)}")
        dup = sorted({n for n in v if v.count(n) > 1})
        if dup:
            raise ValueError(f"lists {dup} more than once")
        return v


def suite_names(options: SuiteOptions) -> tuple[str, ...]:
    """The measures a ``proxy_suite`` task computes under ``options``."""
    from trilemma.measures import SUITE, get_measure

    if options.names is not None:
        return options.names
    return tuple(n for n in SUITE if options.labels != "none" or not get_measure(n).needs_labels)


def suite_columns(names: Sequence[str]) -> tuple[Column, ...]:
    """The columns of a ``proxy_suite`` task: each value (kind ``init``, its measure's axis and
    direction), its error under ``on_error = "record"`` (``<name>_error``) and ``measured_as``."""
    from trilemma.measures import get_measure

    out = []
    for name in names:
        m = get_measure(name)
        dirs = {m.axis: bool(m.higher_is_better)} if m.axis in AXES and m.higher_is_better is not None else {}
        kind = "cost" if m.axis == "cost" else "init"
        out.append(Column(name, kind, label=getattr(m, "label", "") or name, directions=dirs,
                          description=m.description, source="proxy_suite"))
    for name in names:
        out.append(Column(f"{name}_error", "info", "str", description=f"why {name} failed (on_error = 'record')",
                          source="proxy_suite"))
    out.append(Column("measured_as", "info", "str", source="proxy_suite",
                      description="the architecture whose network was measured (the representative of the "
                                  "architectures computing the same function)"))
    return tuple(out)


class SuiteTask(TaskKind):
    """The zero-cost proxy suite in one fused pass per distinct function."""

    name = "proxy_suite"
    chunk_size = 1
    priority = 4
    options_model = SuiteOptions

    def validate(self, config: StudyConfig, archs: Sequence[str]) -> list[str]:
        lines = super().validate(config, archs)
        if lines or self.name not in config.tasks:
            return lines
        from trilemma.data import dataset_info
        from trilemma.measures import get_measure

        opts = self.options(config)
        lines = check_datasets(config)
        if not config.datasets:
            lines.append("tasks.proxy_suite: needs a [data] section naming the inputs (data.names = [...])")
        names = suite_names(opts)
        labelled = [n for n in names if get_measure(n).needs_labels]
        if labelled and opts.labels == "none":
            lines.append(f"tasks.proxy_suite.labels: {labelled} need labels; set labels = 'data' or 'random', "
                         f"or leave them out of names")
        if labelled and opts.labels == "data" and not lines:
            unlabeled = [d for d in config.datasets if dataset_info(d).task == "unlabeled"]
            if unlabeled:
                lines.append(f"tasks.proxy_suite.labels: dataset(s) {unlabeled} carry no labels but {labelled} "
                             f"need them; set labels = 'random' (seeded random labels) or leave them out of names")
        extra = sorted(set(opts.options) - set(names))
        if extra:
            lines.append(f"tasks.proxy_suite.options: options given for measures that are not run: {extra}; "
                         f"running {list(names)}")
        for name in names:
            allowed = get_measure(name).options
            for opt in opts.options.get(name, {}):
                if opt not in allowed:
                    lines.append(f"tasks.proxy_suite.options.{name}.{opt}: unknown option of measure {name!r}; "
                                 f"allowed: {', '.join(allowed) or 'none'}")
        return lines

    def columns(self, ctx: TaskContext, options: SuiteOptions) -> tuple[Column, ...]:
        return suite_columns(suite_names(options))

    def hash_inputs(self, config: StudyConfig, options: Any, dataset: str) -> Any:
        """As the base class, without ``sample``: it picks architectures, it does not change a
        value, so growing a sample (or dropping it for the whole space) keeps what is measured."""
        out = super().hash_inputs(config, options, dataset)
        out["options"] = {k: v for k, v in out["options"].items() if k != "sample"}
        return out

    def group_key(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: SuiteOptions
                  ) -> Hashable | None:
        return ("function", ctx.space.representative(arch)) if options.unique else None

    def max_group_size(self, options: SuiteOptions) -> int | None:
        return 1 << 30  # one job per distinct function: the class is measured once

    def _batch(self, ctx: TaskContext, dataset: str, seed: int, options: SuiteOptions) -> tuple[Any, Any]:
        import torch

        cache = ctx.__dict__.setdefault("_suite_batches", {})
        key = (dataset, seed, options.batch_size, options.labels)
        if key not in cache:
            ds = ctx.dataset(dataset)
            x, y = measure_batch(ds, options.batch_size, seed)
            if options.labels == "random":
                g = torch.Generator().manual_seed(LABEL_SEED_OFFSET + seed)
                y = torch.randint(0, int(ds.num_classes), (int(x.shape[0]),), generator=g)
            elif options.labels == "none":
                y = None
            elif getattr(ds, "task", "classification") == "unlabeled":
                raise ConfigError(f"dataset {dataset!r} carries no labels; set tasks.proxy_suite.labels = 'random'")
            cache[key] = (x, y)
        return cache[key]

    def _measure(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: SuiteOptions) -> dict[str, Any]:
        """The suite's values for the network of ``arch`` (already the representative)."""
        from trilemma.measures import get_measure, proxy_suite

        names = suite_names(options)
        x, y = self._batch(ctx, dataset, seed, options)
        x = x.to(ctx.device)
        y = None if y is None else y.to(ctx.device)
        model = ctx.build_model(arch, dataset, seed)
        opts = {n: torch_options(options.options[n]) for n in names if n in options.options}
        results = proxy_suite(model, x, y, names, options=opts, seed=seed,
                              on_error="raise" if options.on_error == "fail" else "skip")
        payload: dict[str, Any] = {"measured_as": arch}
        for name in names:
            if name in results:
                payload[name] = results[name].value
                continue
            # the suite logged the failure; the separate measure (same options) gives its message
            measure = get_measure(name)
            try:
                value = measure(model, x, y if measure.needs_labels else None, seed=seed, **opts.get(name, {})).value
            except TrilemmaError as err:
                payload[name] = None
                payload[f"{name}_error"] = f"{type(err).__name__}: {err}"
            else:  # pragma: no cover - the fused pass and the measure disagree on failing
                payload[name] = value
        return payload

    def run(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: SuiteOptions) -> dict[str, Any]:
        rep = ctx.space.representative(arch) if options.unique else arch
        payload = self._measure(ctx, rep, dataset, seed, options)
        payload["info"] = {**ctx.info(arch, dataset), "batch": options.batch_size}
        return payload

    def run_batch(self, ctx: TaskContext, archs: Sequence[str], dataset: str, seed: int, options: SuiteOptions
                  ) -> Sequence[dict[str, Any] | BaseException]:
        """Each distinct function among ``archs`` measured once (the planner sends one per job)."""
        shared: dict[str, dict[str, Any] | BaseException] = {}
        out: list[dict[str, Any] | BaseException] = []
        for arch in archs:
            rep = ctx.space.representative(arch) if options.unique else arch
            if rep not in shared:
                try:
                    shared[rep] = self._measure(ctx, rep, dataset, seed, options)
                except Exception as err:  # noqa: BLE001 - recorded for every member of the class
                    shared[rep] = err
            result = shared[rep]
            if isinstance(result, BaseException):
                out.append(result)
            else:
                out.append({**result, "info": {**ctx.info(arch, dataset), "batch": options.batch_size}})
        return out

"""The built-in task kinds: ``theory``, ``measures`` and ``train``.

* ``theory`` — closed-form quantities of a DAG cell (:func:`trilemma.theory.theory_row`:
  Theorems 4.1, 4.4 and 4.6 of Chen, Huang & Wang, AutoML-Conf 2023). Dataset- and
  seed-free; cells are bundled 64 to a job.
* ``measures`` — measures at initialization (:mod:`trilemma.measures`) on a seeded subset of
  ``batch_size`` training inputs, averaged over ``repeats`` re-initializations.
* ``train`` — ground-truth training with the papers' protocol (:mod:`trilemma.training`)
  and the SPEC §3 curve metrics. DAG cells of one shape (same H and width) are trained
  together by the batched trainer when ``training.batched`` (default).

Seeds: the study seed ``s`` initializes the model (``build_model(seed=s)``) and orders the
mini-batches (``TrainConfig.seed = s``); measure repeat ``r`` uses init seed
``s + 1_000_000·r``, so repeat 0 measures exactly the network that training starts from.
The train/test split is fixed by the data options (``seed`` there, default 0).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import time
from collections.abc import Hashable, Sequence
from typing import Any

from trilemma.errors import ConfigError, TrilemmaError
from trilemma.study._config import MeasuresConfig, StudyConfig, TheoryConfig, TrainingConfig
from trilemma.study._tasks import TaskContext, TaskKind, TaskOutput, register_task, torch_options

__all__ = ["TheoryTask", "MeasuresTask", "TrainTask", "init_seed", "measure_batch"]

logger = logging.getLogger(__name__)

#: Keys of ``theory_row`` that are topology (already columns of the space), not theory.
_TOPOLOGY_KEYS = ("arch", "index", "P", "depths", "mean_depth", "eff_width", "sum_depth", "num_linear",
                  "trainable", "group", "params")
#: ``theory_row`` arguments the study sets itself.
_THEORY_SET = ("spec", "width", "in_features", "num_classes", "bias")


def init_seed(seed: int, repeat: int) -> int:
    """Initialization seed of measure repeat ``repeat`` under study seed ``seed``."""
    return seed + 1_000_000 * repeat


def _needs_dag(kind: str, config: StudyConfig, archs: Sequence[str]) -> list[str]:
    from trilemma.study._spaces import make_space

    try:
        space = make_space(config.space, config.base_dir)
    except TrilemmaError:
        return []  # reported by the planner
    if archs and space.cell_spec(archs[0]) is None:
        return [f"{kind}: the {kind} task needs DAG cells (space 'dag' or a space of CellSpec objects); "
                f"space {config.space.name!r} has none"]
    return []


def _section(config: StudyConfig, name: str) -> Any:
    section = getattr(config, name)
    if section is None:
        raise ConfigError(f"the study has no [{name}] section")
    return section


def _check_datasets(config: StudyConfig) -> list[str]:
    try:
        from trilemma.data import list_datasets
    except ImportError as err:  # pragma: no cover - data module missing
        return [f"data.names: datasets are unavailable ({err})"]
    known = list_datasets()
    lines = []
    for i, name in enumerate(config.datasets):
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"data.names[{i}]: unknown dataset {name!r}{hint}; registered: {', '.join(known)}")
    return lines


# --------------------------------------------------------------------------- theory


class TheoryTask(TaskKind):
    """Closed-form theory of each DAG cell (dataset- and seed-free)."""

    name = "theory"
    uses_data = False
    uses_seed = False
    chunk_size = 64
    priority = 9

    def options(self, config: StudyConfig) -> TheoryConfig:
        return _section(config, "theory")

    def validate(self, config: StudyConfig, archs: Sequence[str]) -> list[str]:
        from trilemma.theory import theory_row

        lines = _needs_dag("theory", config, archs)
        params = inspect.signature(theory_row).parameters
        allowed = sorted(p for p in params if p not in _THEORY_SET)
        for key in (config.theory.options if config.theory else {}):
            if key in _THEORY_SET:
                lines.append(f"theory.options.{key}: set by the study ([model] and [data]), not here")
            elif key not in params:
                lines.append(f"theory.options.{key}: unknown option; allowed: {', '.join(allowed)}")
        return lines

    def hash_inputs(self, config: StudyConfig, options: Any, dataset: str) -> Any:
        out = super().hash_inputs(config, options, dataset)
        out["shape_from"] = list(config.datasets[:1])
        return out

    def run(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: TheoryConfig) -> dict[str, Any]:
        from trilemma.theory import theory_row

        spec = ctx.space.cell_spec(arch)
        if spec is None:
            raise TrilemmaError(f"theory needs a DAG cell, got architecture {arch!r} of space {ctx.space.name!r}")
        m = ctx.config.model
        kwargs: dict[str, Any] = {"bias": m.bias}
        first = ctx.config.datasets[0] if ctx.config.datasets else None
        if first is not None:
            kwargs["in_features"], kwargs["num_classes"] = ctx.shape(first)
            info = ctx.info(arch, first)
            width = info["width"]
        else:
            if m.fixed_width is None:
                raise TrilemmaError("model.param_budget needs a [data] section to know the input size")
            width = m.fixed_width
            info = {"width": width}
        t0 = time.perf_counter()
        row = theory_row(spec, width=width, **kwargs, **options.options)
        seconds = time.perf_counter() - t0
        info.setdefault("params", row.get("params"))
        payload: dict[str, Any] = {k: v for k, v in row.items() if k not in _TOPOLOGY_KEYS}
        payload["info"] = info
        logger.debug("theory of %s in %.2g s", arch, seconds)
        return payload


# --------------------------------------------------------------------------- measures


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
        return _section(config, "measures")

    def validate(self, config: StudyConfig, archs: Sequence[str]) -> list[str]:
        from trilemma.measures import get_measure

        cfg = config.measures
        lines = _check_datasets(config)
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


# --------------------------------------------------------------------------- training


def _train_config_fields() -> dict[str, Any]:
    from trilemma.training import TrainConfig

    return {f.name: f for f in dataclasses.fields(TrainConfig)}


#: TrainConfig fields the study sets itself.
_TRAIN_SET = {"seed": "the study's seeds", "device": "the top-level device"}


class TrainTask(TaskKind):
    """Ground-truth training with the SPEC §3 curve metrics (batched for DAG cells)."""

    name = "train"
    priority = 0

    def options(self, config: StudyConfig) -> TrainingConfig:
        return _section(config, "training")

    def validate(self, config: StudyConfig, archs: Sequence[str]) -> list[str]:
        lines = _check_datasets(config)
        cfg = config.training
        if cfg is None:
            return lines
        fields = _train_config_fields()
        ok = {}
        for key, value in cfg.protocol.items():
            if key in _TRAIN_SET:
                lines.append(f"training.{key}: set by {_TRAIN_SET[key]}, not here")
            elif key not in fields:
                import difflib

                allowed = sorted([*(f for f in fields if f not in _TRAIN_SET), *TrainingConfig.model_fields])
                allowed.remove("protocol")
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                lines.append(f"training.{key}: unknown key{hint}; allowed keys: {', '.join(allowed)}")
            else:
                ok[key] = value
        if len(ok) == len(cfg.protocol):
            try:
                self.train_config(config, seed=0)
            except TrilemmaError as err:
                text = str(err)
                field = next((k for k in ok if f"TrainConfig.{k} " in text), None)
                if field is not None:
                    lines.append(f"training.{field}: {text.replace(f'TrainConfig.{field} ', '', 1)}")
                else:
                    lines.append(f"training: {text.replace('TrainConfig.', '')}")
            except TypeError as err:
                lines.append(f"training: {err}")
        return lines

    @staticmethod
    def train_config(config: StudyConfig, seed: int) -> Any:
        from trilemma.training import TrainConfig

        protocol = dict(_section(config, "training").protocol)
        if isinstance(protocol.get("betas"), list):
            protocol["betas"] = tuple(protocol["betas"])
        device = None if config.device == "auto" else config.device
        if config.device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return TrainConfig(**protocol, seed=seed, device=device)

    def group_key(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: TrainingConfig) -> Hashable | None:
        if not options.batched or ctx.config.model.batchnorm:
            return None  # the batched trainer has no BatchNorm
        spec = ctx.space.cell_spec(arch)
        if spec is None:
            return None
        return ("dag", spec.nodes, ctx.width(arch, dataset))

    def max_group_size(self, options: TrainingConfig) -> int | None:
        return None if options.group_size == "auto" else int(options.group_size)

    def run(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: TrainingConfig) -> TaskOutput:
        from trilemma.training import train, train_cell

        ds = ctx.dataset(dataset)
        config = self.train_config(ctx.config, seed)
        spec = ctx.space.cell_spec(arch)
        m = ctx.config.model
        if spec is not None:
            result = train_cell(spec, ds, config, width=ctx.width(arch, dataset), seed=seed, init=m.init,
                                bias=m.bias, batchnorm=m.batchnorm)
        else:
            result = train(ctx.build_model(arch, dataset, seed), ds, config)
        return self._output(ctx, arch, dataset, result, options)

    def run_batch(self, ctx: TaskContext, archs: Sequence[str], dataset: str, seed: int,
                  options: TrainingConfig) -> list[Any]:
        from trilemma.training import train_batched

        ds = ctx.dataset(dataset)
        specs = [ctx.space.cell_spec(a) for a in archs]
        m = ctx.config.model
        results = train_batched(
            specs, ds, self.train_config(ctx.config, seed), width=ctx.width(archs[0], dataset),
            seeds=[seed] * len(specs), init=m.init, bias=m.bias, batchnorm=m.batchnorm,
        )
        return [self._output(ctx, a, dataset, r, options) for a, r in zip(archs, results)]

    def _output(self, ctx: TaskContext, arch: str, dataset: str, result: Any, options: TrainingConfig) -> TaskOutput:
        payload = train_payload(result, options)
        payload["info"] = ctx.info(arch, dataset)
        return TaskOutput(payload, status="diverged" if result.diverged else "complete")


def train_payload(result: Any, options: TrainingConfig) -> dict[str, Any]:
    """The payload of one training run (a ``TrainResult``): SPEC §3 metrics, final values, curves.

    Keys: ``convergence_epoch``, ``expressivity``, ``generalization_gap``,
    ``epochs_to_<t>``, ``final_train_loss``, ``final_test_loss``, ``final_train_acc``,
    ``final_test_acc``, ``epochs_run``, ``diverged_epoch``; ``curves`` holds per-epoch
    ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` (``null`` where the test set
    was not evaluated) and ``lr``.
    """
    from trilemma.training import curve_metrics

    opts = options.metrics.options()
    metrics = curve_metrics(result, **opts)
    thr = options.metrics.accuracy_threshold
    epochs = int(result.epochs)
    payload: dict[str, Any] = {
        "convergence_epoch": metrics.convergence_epoch,
        "expressivity": metrics.expressivity,
        "generalization_gap": metrics.generalization_gap,
        f"epochs_to_{round(thr * 100)}": metrics.epochs_to_accuracy,
        "final_train_loss": metrics.final_train_loss,
        "final_test_loss": metrics.final_test_loss,
        "final_train_acc": result.train_acc[-1] if result.train_acc else None,
        "final_test_acc": metrics.final_test_acc,
        "epochs_run": epochs,
        "diverged_epoch": result.diverged_epoch,
    }
    if options.keep_curves:
        curves: dict[str, list[Any]] = {"train_loss": list(result.train_loss), "lr": list(result.lr[:epochs])}
        if result.train_acc is not None:
            curves["train_acc"] = list(result.train_acc)
        at = {e: i for i, e in enumerate(result.eval_epochs)}
        for name in ("test_loss", "test_acc"):
            series = getattr(result, name)
            if series is not None:
                curves[name] = [series[at[e]] if e in at else None for e in range(1, epochs + 1)]
        payload["curves"] = curves
    return payload


register_task(TheoryTask())
register_task(MeasuresTask())
register_task(TrainTask())

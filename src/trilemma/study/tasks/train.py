"""The ``train`` task kind: ground truth by training with the papers' protocol (:mod:`trilemma.training`).

Plain SGD, constant learning rate, batch 128, cross-entropy by default (``[training]`` keys
are :class:`~trilemma.training.TrainConfig` fields). Architectures with the same
:meth:`~trilemma.spaces.ArchSpace.batch_key` (DAG cells of one width) are trained together
by the batched trainer when ``training.batched`` (default). The study seed ``s`` initializes
the model and orders the mini-batches; the train/test split is fixed by the data options.

Columns (Chen, Huang & Wang, AutoML-Conf 2023, appendix A): ``expressivity`` (training loss at
convergence), ``epochs_to_<p>`` (epochs to ``p``% training accuracy, the convergence ground
truth), ``generalization_gap`` (test − train loss at convergence), the loss-plateau
``convergence_epoch``, final losses and accuracies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from typing import Any

from trilemma._schema import Column
from trilemma.errors import TrilemmaError
from trilemma.study._config import StudyConfig, TrainingConfig
from trilemma.study._context import TaskContext
from trilemma.study._task_api import TaskKind, TaskOutput
from trilemma.study.tasks._common import check_datasets, section

__all__ = ["TrainTask", "train_columns", "train_payload"]

_E, _C, _G = "expressivity", "convergence", "generalization"


def train_columns(accuracy_threshold: float = 0.5) -> tuple[Column, ...]:
    """The columns of the ``train`` task at an accuracy threshold (``epochs_to_<p>``)."""
    from trilemma.training import accuracy_metric_name

    epochs, steps = accuracy_metric_name(accuracy_threshold, "epoch"), accuracy_metric_name(accuracy_threshold, "step")
    pct = f"{accuracy_threshold * 100:g}"
    return (
        Column("expressivity", "trained", label="train loss", directions={_E: False}, source="train", role="truth",
               description="training loss at convergence (mean over the 10 epochs from the plateau; the last 10 "
                           "epochs of a run that never plateaus); lower = more expressive"),
        Column(epochs, "trained", label=f"epochs to {pct}%", unit="epochs", directions={_C: False},
               source="train", role="truth", description=f"first epoch with training accuracy >= {pct}% (the papers' "
                                           "convergence ground truth at 50%); lower = faster"),
        Column(steps, "trained", label=f"epochs to {pct}% (sub-epoch)", unit="epochs",
               directions={_C: False}, source="train",
               description=f"the crossing of {pct}% running training accuracy at sub-epoch resolution"),
        Column("generalization_gap", "trained", label="test − train loss", directions={_G: False}, source="train",
               role="truth",
               description="test loss minus training loss at convergence (lower = generalizes better)"),
        Column("convergence_epoch", "trained", "float", label="plateau epoch", unit="epochs", source="train",
               description="first epoch where the moving-mean training loss stops changing (decides when the loss "
                           "has converged; not the papers' convergence ground truth)"),
        Column("converged", "info", "bool", source="train",
               description="the training loss reached the plateau (false: expressivity and gap from the last epochs)"),
        Column("final_train_loss", "trained", label="final train loss", source="train"),
        Column("final_test_loss", "trained", label="final test loss", source="train"),
        Column("final_train_acc", "trained", label="final train accuracy", directions={_E: True}, source="train"),
        Column("final_test_acc", "trained", label="final test accuracy", directions={_G: True}, source="train"),
        Column("epochs_run", "info", "int", source="train"),
        Column("diverged_epoch", "info", "int", source="train", description="epoch the loss became non-finite"),
    )


def _train_config_fields() -> dict[str, Any]:
    from trilemma.training import TrainConfig

    return {f.name: f for f in dataclasses.fields(TrainConfig)}


#: TrainConfig fields the study sets itself.
_TRAIN_SET = {"seed": "the study's seeds", "device": "the top-level device"}


class TrainTask(TaskKind):
    """Ground-truth training with the papers' curve metrics (batched where the space can)."""

    name = "train"
    priority = 0

    def options(self, config: StudyConfig) -> TrainingConfig:
        return section(config, "training")

    def validate(self, config: StudyConfig, archs: Sequence[str]) -> list[str]:
        lines = check_datasets(config)
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

        protocol = dict(section(config, "training").protocol)
        if isinstance(protocol.get("betas"), list):
            protocol["betas"] = tuple(protocol["betas"])
        device = None if config.device == "auto" else config.device
        if config.device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return TrainConfig(**protocol, seed=seed, device=device)

    def columns(self, ctx: TaskContext, options: TrainingConfig) -> tuple[Column, ...]:
        return train_columns(options.metrics.accuracy_threshold)

    def group_key(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: TrainingConfig) -> Hashable | None:
        if not options.batched or ctx.config.model.batchnorm or "batched_training" not in ctx.space.capabilities:
            return None  # the batched trainer has no BatchNorm
        key = ctx.space.batch_key(arch)
        return None if key is None else (key, ctx.width(arch, dataset))

    def max_group_size(self, options: TrainingConfig) -> int | None:
        return None if options.group_size == "auto" else int(options.group_size)

    def run(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: TrainingConfig) -> TaskOutput:
        import torch

        from trilemma.training import train

        ds = ctx.dataset(dataset)
        config = self.train_config(ctx.config, seed)
        dtype = config.torch_dtype or torch.float32
        # drawn in the training dtype: the same network as the batched trainer's
        model = ctx.build_model(arch, dataset, seed, device=config.device, dtype=dtype)
        result = train(model, ds, config.replace(dtype=str(dtype).removeprefix("torch.")))
        result.spec = arch
        return self._output(ctx, arch, dataset, result, options)

    def run_batch(self, ctx: TaskContext, archs: Sequence[str], dataset: str, seed: int,
                  options: TrainingConfig) -> list[Any]:
        from trilemma.training import train_batched

        ds = ctx.dataset(dataset)
        specs = [ctx.space.spec(a) for a in archs]
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
    """The payload of one training run (a ``TrainResult``): the papers' metrics, final values, curves.

    Keys: those of :meth:`~trilemma.training.CurveMetrics.as_dict` (``convergence_epoch``,
    ``converged``, ``expressivity``, ``generalization_gap``, ``epochs_to_<p>``,
    ``steps_to_<p>``, final losses and accuracies), ``epochs_run``, ``diverged_epoch``; ``curves`` holds per-epoch
    ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` (``null`` where the test set
    was not evaluated) and ``lr``.
    """
    from trilemma.training import curve_metrics

    metrics = curve_metrics(result, **options.metrics.options())
    epochs = int(result.epochs)
    payload: dict[str, Any] = {**metrics.as_dict(), "epochs_run": epochs, "diverged_epoch": result.diverged_epoch}
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



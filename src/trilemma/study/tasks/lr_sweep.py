"""The ``lr_sweep`` task kind: each architecture trained at its own best learning rate (Fig. 8).

Chen, Huang & Wang (AutoML-Conf 2023, appendix C.3, Figure 8) re-check the three trends with a
learning rate tuned per architecture from a grid (the authors ship the chosen rates as
``lrs.txt``). This kind trains every selected architecture with the study's ``[training]``
protocol at each rate of a grid — ``lrs``, or ``factors`` times the protocol's ``lr`` (default:
5 values log-spaced around it, ×¼ … ×4) — picks one rate per architecture by a stated rule and
reports the papers' three ground truths of the chosen run:

* ``rule = "train_loss"`` (default): the lowest final training loss (the last epoch's);
* ``rule = "val_loss"``: the lowest final validation loss, the grid trained on the training set
  minus a seeded held-out fraction ``val_fraction`` that serves as the validation set; the
  chosen run's ``lr_generalization_gap`` is then validation − training loss.

A diverged run (non-finite loss) is never chosen; ties go to the rate closest to the
protocol's (then the smaller). Rates of one batched group train together, one batched
computation per rate. Columns: ``best_lr``, ``lr_expressivity``, ``lr_epochs_to_<p>``,
``lr_generalization_gap`` (the papers' axes at the chosen rate), ``lr_converged``; the
payload's ``extras.grid`` keeps every rate's metrics.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trilemma._schema import Column
from trilemma.study._config import SampleConfig, StudyConfig
from trilemma.study._context import TaskContext
from trilemma.study._task_api import TaskKind, TaskOutput
from trilemma.study.tasks._common import check_datasets, section
from trilemma.study.tasks.train import TrainTask

__all__ = ["LRSweepOptions", "LRSweepTask", "choose_lr", "lr_grid"]

_E, _C, _G = "expressivity", "convergence", "generalization"


class LRSweepOptions(BaseModel):
    """Options of ``[tasks.lr_sweep]``.

    Attributes:
        factors: The grid as multiples of ``[training] lr`` (default ×¼, ×½, ×1, ×2, ×4).
        lrs: An explicit grid (replaces ``factors``).
        rule: ``"train_loss"`` or ``"val_loss"`` (module docstring).
        val_fraction: Held-out fraction of the training set under ``rule = "val_loss"``.
        val_seed: Seed of that split.
        only: Run only on architectures whose descriptive columns match, e.g.
            ``{ single_cell = true }`` (the ensemble space's plain cells).
        sample: A seeded subset of those.
        batched: Train each rate of a batched group as one computation.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    factors: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    lrs: tuple[float, ...] | None = None
    rule: Literal["train_loss", "val_loss"] = "train_loss"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    val_seed: int = 0
    only: dict[str, Any] = Field(default_factory=dict)
    sample: SampleConfig | None = None
    batched: bool = True

    @field_validator("factors", "lrs")
    @classmethod
    def _positive(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must list at least one value")
        if any(not math.isfinite(x) or x <= 0 for x in v):
            raise ValueError(f"must be positive numbers, got {list(v)}")
        if len(set(v)) != len(v):
            raise ValueError(f"must be distinct, got {list(v)}")
        return tuple(sorted(v))


def lr_grid(options: LRSweepOptions, base_lr: float) -> tuple[float, ...]:
    """The learning rates of the sweep (sorted)."""
    if options.lrs is not None:
        return options.lrs
    return tuple(sorted(float(f"{base_lr * f:.6g}") for f in options.factors))


def choose_lr(grid: Sequence[dict[str, Any]], key: str, base_lr: float) -> dict[str, Any] | None:
    """The grid entry with the lowest finite ``key`` (ties: the rate closest to ``base_lr`` on a log
    scale, then the smaller); ``None`` when no entry has a finite value."""
    ok = [g for g in grid if isinstance(g.get(key), (int, float)) and math.isfinite(g[key])]
    if not ok:
        return None
    return min(ok, key=lambda g: (g[key], abs(math.log(g["lr"] / base_lr)), g["lr"]))


class LRSweepTask(TaskKind):
    """Per-architecture learning-rate grid with the papers' metrics at the chosen rate (Fig. 8)."""

    name = "lr_sweep"
    priority = 1
    options_model = LRSweepOptions

    def validate(self, config: StudyConfig, archs: Sequence[str]) -> list[str]:
        lines = super().validate(config, archs) + check_datasets(config)
        if config.training is None:
            lines.append("tasks.lr_sweep: needs a [training] section (the protocol every rate is trained with)")
        return lines

    def columns(self, ctx: TaskContext, options: LRSweepOptions) -> tuple[Column, ...]:
        from trilemma.training import accuracy_metric_name

        threshold = section(ctx.config, "training").metrics.accuracy_threshold
        epochs = accuracy_metric_name(threshold, "epoch")
        rule = "final training loss" if options.rule == "train_loss" else "final validation loss"
        return (
            Column("best_lr", "info", label="best LR", source=self.name,
                   description=f"the learning rate of the grid with the lowest {rule} (Fig. 8 protocol)"),
            Column("lr_expressivity", "trained", label="train loss (best LR)", directions={_E: False},
                   source=self.name, description="training loss at convergence, at the architecture's best rate"),
            Column(f"lr_{epochs}", "trained", label=f"epochs to {threshold * 100:g}% (best LR)", unit="epochs",
                   directions={_C: False}, source=self.name,
                   description="epochs to the accuracy threshold at the architecture's best rate"),
            Column("lr_generalization_gap", "trained", label="test − train loss (best LR)", directions={_G: False},
                   source=self.name, description="generalization gap at the architecture's best rate"
                   + (" (validation − train under the val_loss rule)" if options.rule == "val_loss" else "")),
            Column("lr_converged", "info", "bool", source=self.name,
                   description="the chosen run reached the loss plateau"),
            Column("lr_selection_loss", "info", label="selection loss", source=self.name,
                   description=f"the {rule} the rate was chosen by"),
            Column("lr_rule", "info", "str", source=self.name, description="the selection rule"),
        )

    def group_key(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: LRSweepOptions) -> Hashable | None:
        if not options.batched or ctx.config.model.batchnorm or "batched_training" not in ctx.space.capabilities:
            return None
        key = ctx.space.batch_key(arch)
        return None if key is None else (key, ctx.width(arch, dataset))

    def _dataset(self, ctx: TaskContext, dataset: str, options: LRSweepOptions) -> Any:
        ds = ctx.dataset(dataset)
        if options.rule != "val_loss":
            return ds
        import torch

        n = ds.num_train
        n_val = max(1, int(round(options.val_fraction * n)))
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(options.val_seed))
        val, keep = perm[:n_val], perm[n_val:]
        return dataclasses.replace(ds, x_train=ds.x_train[keep], y_train=ds.y_train[keep], x_test=ds.x_train[val],
                                   y_test=ds.y_train[val],
                                   metadata={**ds.metadata, "validation": f"{n_val} of {n} training samples"})

    def _grid(self, ctx: TaskContext, seed: int, options: LRSweepOptions) -> tuple[Any, tuple[float, ...]]:
        config = TrainTask.train_config(ctx.config, seed)
        return config, lr_grid(options, config.lr)

    def run(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: LRSweepOptions) -> TaskOutput:
        import torch

        from trilemma.training import train

        ds = self._dataset(ctx, dataset, options)
        config, lrs = self._grid(ctx, seed, options)
        dtype = config.torch_dtype or torch.float32
        results = []
        for lr in lrs:
            model = ctx.build_model(arch, dataset, seed, device=config.device, dtype=dtype)
            results.append(train(model, ds, config.replace(lr=lr, dtype=str(dtype).removeprefix("torch."))))
        return self._output(ctx, arch, dataset, lrs, results, config.lr, options)

    def run_batch(self, ctx: TaskContext, archs: Sequence[str], dataset: str, seed: int,
                  options: LRSweepOptions) -> list[Any]:
        from trilemma.training import train_batched

        ds = self._dataset(ctx, dataset, options)
        config, lrs = self._grid(ctx, seed, options)
        m = ctx.config.model
        specs = [ctx.space.spec(a) for a in archs]
        per_lr = [train_batched(specs, ds, config.replace(lr=lr), width=ctx.width(archs[0], dataset),
                                seeds=[seed] * len(specs), init=m.init, bias=m.bias, batchnorm=m.batchnorm)
                  for lr in lrs]
        return [self._output(ctx, a, dataset, lrs, [runs[i] for runs in per_lr], config.lr, options)
                for i, a in enumerate(archs)]

    def _output(self, ctx: TaskContext, arch: str, dataset: str, lrs: Sequence[float], results: Sequence[Any],
                base_lr: float, options: LRSweepOptions) -> TaskOutput:
        from trilemma.training import accuracy_metric_name, curve_metrics

        metrics_options = section(ctx.config, "training").metrics
        threshold = metrics_options.accuracy_threshold
        epochs = accuracy_metric_name(threshold, "epoch")
        grid = []
        for lr, result in zip(lrs, results):
            cm = curve_metrics(result, **metrics_options.options()).as_dict()
            grid.append({"lr": lr, "status": result.status, "final_train_loss": cm["final_train_loss"],
                         "final_val_loss": cm["final_test_loss"], "expressivity": cm["expressivity"],
                         epochs: cm[epochs], "generalization_gap": cm["generalization_gap"],
                         "converged": cm["converged"]})
            if result.diverged:
                grid[-1]["final_train_loss"] = grid[-1]["final_val_loss"] = None
        key = "final_train_loss" if options.rule == "train_loss" else "final_val_loss"
        best = choose_lr(grid, key, base_lr)
        payload: dict[str, Any] = {"extras": {"grid": grid}, "lr_rule": options.rule, "info": ctx.info(arch, dataset)}
        if best is None:
            payload.update(best_lr=None, lr_expressivity=None, lr_generalization_gap=None, lr_converged=None,
                           lr_selection_loss=None, **{f"lr_{epochs}": None})
            return TaskOutput(payload, status="diverged")
        payload.update(best_lr=best["lr"], lr_expressivity=best["expressivity"],
                       lr_generalization_gap=best["generalization_gap"], lr_converged=best["converged"],
                       lr_selection_loss=best[key], **{f"lr_{epochs}": best[epochs]})
        return TaskOutput(payload)

"""Lesson ``normalization``: BatchNorm, LayerNorm, weight normalization or none.

The same deep ReLU MLP (``depth`` hidden layers of ``width`` units, PyTorch's default
``nn.Linear`` initialization unless ``init="he"``) is trained with plain SGD on a real offline dataset in four versions:
``Linear → ReLU`` (none), ``Linear → BatchNorm1d → ReLU`` (Ioffe & Szegedy 2015),
``Linear → LayerNorm → ReLU`` (Ba, Kiros & Hinton 2016) and weight-normalized linear layers
``w = g·v/‖v‖`` (Salimans & Kingma 2016). Convergence speed is the first epoch at which the
training accuracy (full pass, eval mode) reaches ``target_acc``; final accuracy is the test
accuracy after the last epoch. Normalizing activations keeps every layer's input at a fixed
scale however the weights drift, so the deep plain network, whose signal shrinks layer by
layer under the default initialization, trains slowly while BatchNorm and LayerNorm train
fast; weight normalization fixes only the weights' scale, not the activations'. With a
signal-preserving He initialization (``init="he"``) the plain network trains about as fast
as the normalized ones at this depth and learning rate — the lesson's claim is conditional on
the initialization, and running it with ``init="he"`` shows that.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from trilemma.data import load_dataset
from trilemma.errors import InvalidArgumentError
from trilemma.lessons._base import Check, LessonOutput, register_lesson
from trilemma.training import TrainConfig, epochs_to_accuracy, train

__all__ = ["NORMALIZATIONS", "normalized_mlp"]

NORMALIZATIONS = ("none", "batchnorm", "layernorm", "weightnorm")
INITS = ("he", "default")


def normalized_mlp(
    in_features: int, num_classes: int, width: int, depth: int, norm: str, *, seed: int, init: str = "he"
) -> nn.Sequential:
    """A ``depth``-hidden-layer ReLU MLP with the given normalization.

    Args:
        in_features: Input dimension.
        num_classes: Output dimension.
        width: Units per hidden layer.
        depth: Number of hidden layers (≥ 1).
        norm: One of :data:`NORMALIZATIONS`.
        seed: Seed of the initialization.
        init: ``"he"`` (He-normal hidden weights, zero biases) or ``"default"`` (PyTorch's
            ``Linear`` default, whose variance ``1/(3·fan_in)`` shrinks the signal layer by layer).

    Returns:
        The network.

    Raises:
        InvalidArgumentError: Unknown ``norm`` or non-positive sizes.
    """
    if norm not in NORMALIZATIONS:
        raise InvalidArgumentError(f"norm must be one of {NORMALIZATIONS}, got {norm!r}")
    if init not in INITS:
        raise InvalidArgumentError(f"init must be one of {INITS}, got {init!r}")
    if min(in_features, num_classes, width, depth) < 1:
        raise InvalidArgumentError("in_features, num_classes, width and depth must be ≥ 1")
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = in_features
    for _ in range(depth):
        linear = nn.Linear(fan_in, width)
        if init == "he":
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
            nn.init.zeros_(linear.bias)
        layers.append(weight_norm(linear) if norm == "weightnorm" else linear)
        if norm == "batchnorm":
            layers.append(nn.BatchNorm1d(width))
        elif norm == "layernorm":
            layers.append(nn.LayerNorm(width))
        layers.append(nn.ReLU())
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


@register_lesson(
    "normalization",
    title="Normalization: BatchNorm, LayerNorm, weight normalization, none",
    claim=(
        "Under PyTorch's default initialization, BatchNorm and LayerNorm make the same deep MLP reach the target "
        "training accuracy in fewer epochs than the un-normalized network, without lowering the final test accuracy."
    ),
    references=(
        "Ioffe & Szegedy (2015), Batch normalization, ICML.",
        "Ba, Kiros & Hinton (2016), Layer normalization, arXiv:1607.06450.",
        "Salimans & Kingma (2016), Weight normalization, NeurIPS.",
    ),
    defaults={
        "dataset": "digits",
        "depth": 8,
        "width": 64,
        "epochs": 30,
        "batch_size": 64,
        "lr": 0.05,
        "target_acc": 0.95,
        "init": "default",
        "seeds": 2,
        "seed": 0,
    },
    quick={"depth": 6, "epochs": 8, "seeds": 1},
)
def _compute(p: dict[str, Any]) -> LessonOutput:
    if not 0 < p["target_acc"] <= 1:
        raise InvalidArgumentError(f"target_acc must be in (0, 1], got {p['target_acc']!r}")
    if p["seeds"] < 1 or p["epochs"] < 1:
        raise InvalidArgumentError("seeds and epochs must be ≥ 1")
    ds = load_dataset(p["dataset"], normalize="standardize", seed=p["seed"])
    runs, curves = [], []
    for norm in NORMALIZATIONS:
        for s in range(p["seeds"]):
            seed = p["seed"] + s
            model = normalized_mlp(ds.in_features, ds.num_classes, p["width"], p["depth"], norm, seed=seed,
                                   init=p["init"])
            cfg = TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], optimizer="sgd",
                              full_train_eval=True, eval_every=1, seed=seed)
            res = train(model, ds, cfg)
            acc = res.train_acc_full or []
            hit = epochs_to_accuracy(acc, p["target_acc"]) if acc else None
            runs.append({
                "normalization": norm, "seed": seed, "status": res.status,
                "epochs_to_target": hit if hit is not None else np.nan,
                "reached_target": hit is not None,
                "final_train_acc": acc[-1] if acc else np.nan,
                "final_test_acc": res.test_acc[-1] if res.test_acc else np.nan,
                "final_train_loss": res.train_loss_full[-1] if res.train_loss_full else np.nan,
            })
            curves += [{"normalization": norm, "seed": seed, "epoch": e, "train_acc": a, "test_acc": t}
                       for e, a, t in zip(res.eval_epochs, acc, res.test_acc or [])]
    frame = pd.DataFrame(runs)
    table = frame.groupby("normalization", sort=False, as_index=False).agg(
        runs=("seed", "count"), reached=("reached_target", "sum"),
        epochs_to_target=("epochs_to_target", "mean"),
        final_train_acc=("final_train_acc", "mean"), final_test_acc=("final_test_acc", "mean"),
        final_train_loss=("final_train_loss", "mean"),
    )
    # A run that never reaches the target counts as epochs + 1 (a lower bound on its time).
    frame["epochs_or_budget"] = frame.epochs_to_target.fillna(p["epochs"] + 1)
    table["epochs_to_target_or_budget"] = frame.groupby("normalization", sort=False).epochs_or_budget.mean().to_numpy()
    row = table.set_index("normalization")
    none_t, none_acc = row.loc["none", "epochs_to_target_or_budget"], row.loc["none", "final_test_acc"]
    one_sample = 1.0 / ds.num_test
    checks = []
    for norm in ("batchnorm", "layernorm"):
        checks.append(Check(
            f"{norm} reaches {p['target_acc']:.0%} training accuracy in fewer epochs than no normalization",
            bool(row.loc[norm, "reached"] == p["seeds"] and row.loc[norm, "epochs_to_target_or_budget"] < none_t),
            f"{row.loc[norm, 'epochs_to_target_or_budget']:.1f} vs {none_t:.1f} epochs (mean over seeds; a run that "
            f"never reaches the target counts {p['epochs'] + 1})",
        ))
        checks.append(Check(
            f"{norm} does not lower the final test accuracy",
            bool(row.loc[norm, "final_test_acc"] >= none_acc - one_sample - 1e-12),
            f"{row.loc[norm, 'final_test_acc']:.3f} vs {none_acc:.3f} without normalization",
        ))
    curve_frame = pd.DataFrame(curves)
    notes = [
        f"`{p['dataset']}` ({ds.num_train} train / {ds.num_test} test, standardized); {p['depth']} hidden layers of "
        f"{p['width']} units, init={p['init']!r}; plain SGD lr={p['lr']}, batch {p['batch_size']}, "
        f"{p['epochs']} epochs; {p['seeds']} seed(s).",
        "Training accuracy is a full pass in eval mode after every epoch (BatchNorm uses its running statistics).",
        "Weight normalization is reported but not part of the claim: it rescales weights, not activations.",
    ]

    def draw(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2, sharex=True)
        fig.set_size_inches(11, 4)
        for i, norm in enumerate(NORMALIZATIONS):
            c = curve_frame[curve_frame.normalization == norm].groupby("epoch").mean(numeric_only=True)
            ax1.plot(c.index, c.train_acc, color=f"C{i}", label=norm)
            ax2.plot(c.index, c.test_acc, color=f"C{i}", label=norm)
        ax1.axhline(p["target_acc"], color="0.5", ls=":", lw=1)
        ax1.set_title("training accuracy")
        ax2.set_title("test accuracy")
        for ax in (ax1, ax2):
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        ax1.legend(fontsize=8)

    return LessonOutput(
        table=table, checks=checks, figures={"curves": draw}, notes=notes,
        numbers={f"epochs_to_target_{n}": float(row.loc[n, "epochs_to_target_or_budget"]) for n in NORMALIZATIONS},
    )

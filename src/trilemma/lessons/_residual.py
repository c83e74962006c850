"""Lesson ``residual-depth``: skip connections keep deep networks trainable.

He, Zhang, Ren & Sun (2016), "Deep residual learning for image recognition", observed the
*degradation problem*: deeper plain networks reach a *higher* training error than shallower
ones — an optimization failure, not overfitting — while the same networks with identity
shortcuts keep improving with depth. Balduzzi et al. (2017), "The shattered gradients
problem", trace it to the gradients of deep plain networks at initialization.

This lesson trains plain and residual ReLU MLPs of depth 2 … 64 (hidden layers of equal
width after a stem layer) on digits with plain SGD for the same number of epochs, at each
learning rate of a small grid, and reports the training loss each reaches (the best over the
grid, so neither family is held back by one learning rate). Every hidden layer computes
``f(h) = W·ReLU(h) + b`` (the pre-activation form of He et al. 2016b); a plain network
chains them, ``h ← f(h)`` — an ordinary ReLU MLP — and a residual network adds the
identity, ``h ← h + α·f(h)``. Both use He initialization (the one that keeps a plain
network's forward signal at a fixed scale; He et al. 2015) and ``α = 1/√depth``, the
branch scaling that keeps the residual network's forward signal bounded at any depth (as in
Fixup / SkipInit; Zhang, Dauphin & Ma 2019; De & Smith 2020; Hayou et al. 2021). It also records the gradient norm of every layer's
weights at initialization.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from trilemma.data import load_dataset
from trilemma.errors import InvalidArgumentError
from trilemma.lessons._base import Check, LessonOutput, register_lesson
from trilemma.lessons._fit import fit

__all__ = ["DeepMLP", "layer_gradient_norms"]


class DeepMLP(nn.Module):
    """A ReLU MLP with ``depth`` hidden layers of ``width`` units after a stem, plain or residual.

    ``h₀ = W_in x + b_in``; then per hidden layer ``h ← W·ReLU(h) + b`` (plain: an ordinary
    ReLU MLP) or ``h ← h + α·(W·ReLU(h) + b)`` (residual, ``α = branch_scale``, default
    ``1/√depth``; the pre-activation residual unit of He et al. 2016b); output
    ``W_out·ReLU(h) + b_out``. Hidden and stem weights are He-normal (fan-in), biases zero;
    the readout keeps PyTorch's default initialization.

    Args:
        in_features: Input dimension.
        num_classes: Output dimension.
        width: Units of every hidden layer.
        depth: Number of hidden ``width × width`` layers (≥ 1).
        residual: Add the identity shortcut around every hidden layer.
        seed: Seed of the initialization.
        branch_scale: ``α`` of the residual branches (``None``: ``1/√depth``).

    Raises:
        InvalidArgumentError: Non-positive sizes.
    """

    def __init__(self, in_features: int, num_classes: int, width: int, depth: int, *, residual: bool, seed: int,
                 branch_scale: float | None = None) -> None:
        super().__init__()
        if min(in_features, num_classes, width, depth) < 1:
            raise InvalidArgumentError(
                f"in_features, num_classes, width and depth must be ≥ 1, got {in_features}, {num_classes}, "
                f"{width}, {depth}")
        torch.manual_seed(seed)
        self.residual = residual
        self.alpha = (1.0 / math.sqrt(depth)) if branch_scale is None else float(branch_scale)
        self.stem = nn.Linear(in_features, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.readout = nn.Linear(width, num_classes)
        for layer in (self.stem, *self.layers):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x.flatten(1))
        for layer in self.layers:
            h = h + self.alpha * layer(F.relu(h)) if self.residual else layer(F.relu(h))
        return self.readout(F.relu(h))


def layer_gradient_norms(model: DeepMLP, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Frobenius norms of ``∂L/∂W`` of the stem, every hidden layer and the readout (cross-entropy on ``(x, y)``)."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    layers = (model.stem, *model.layers, model.readout)
    norms = np.array([float(layer.weight.grad.norm()) if layer.weight.grad is not None else 0.0
                      for layer in layers])
    model.zero_grad(set_to_none=True)
    return norms


@register_lesson(
    "residual-depth",
    title="Residual connections keep deep networks trainable",
    claim=(
        "With the same optimizer, epoch budget and learning-rate grid, plain ReLU MLPs stop training beyond some "
        "depth (their training loss stays near its initial value) while residual MLPs of the same depth keep "
        "training."
    ),
    references=(
        "He, Zhang, Ren & Sun (2016), Deep residual learning for image recognition, CVPR.",
        "Balduzzi, Frean, Leary, Lewis, Ma & McWilliams (2017), The shattered gradients problem: if resnets are the "
        "answer, then what is the question?, ICML.",
        "He, Zhang, Ren & Sun (2016b), Identity mappings in deep residual networks, ECCV.",
        "He, Zhang, Ren & Sun (2015), Delving deep into rectifiers (He initialization), ICCV.",
        "Hayou, Clerico, He, Deligiannidis, Doucet & Rousseau (2021), Stable ResNet, AISTATS.",
    ),
    defaults={
        "depths": (2, 4, 8, 16, 32, 64),
        "width": 64,
        "epochs": 10,
        "batch_size": 64,
        "lrs": (0.01, 0.03, 0.1),
        "seed": 0,
    },
    quick={"depths": (2, 6, 40), "epochs": 4, "lrs": (0.1,)},
)
def _compute(p: dict[str, Any]) -> LessonOutput:
    depths, lrs = p["depths"], p["lrs"]
    if len(depths) < 2 or min(depths) < 1 or list(depths) != sorted(set(depths)):
        raise InvalidArgumentError(f"depths must be at least two strictly increasing positive ints, got {depths!r}")
    if min(lrs) <= 0 or p["epochs"] < 1 or p["width"] < 1:
        raise InvalidArgumentError("lrs must be positive and epochs, width ≥ 1")
    ds = load_dataset("digits", normalize="standardize", seed=p["seed"])
    x, y = ds.x_train, ds.y_train
    rows, grads, curves = [], [], []
    for residual in (False, True):
        kind = "residual" if residual else "plain"
        for depth in depths:
            model = DeepMLP(ds.in_features, ds.num_classes, p["width"], depth, residual=residual, seed=p["seed"])
            norms = layer_gradient_norms(model, x, y)
            grads += [{"kind": kind, "depth": depth, "layer": i, "grad_norm": g} for i, g in enumerate(norms)]
            best: dict[str, Any] | None = None
            for lr in lrs:
                model = DeepMLP(ds.in_features, ds.num_classes, p["width"], depth, residual=residual, seed=p["seed"])
                hist = fit(model, x, y, optimizer="sgd", lr=lr, epochs=p["epochs"], batch_size=p["batch_size"],
                           seed=p["seed"], x_test=ds.x_test, y_test=ds.y_test)
                final = hist.train_loss[-1] if hist.train_loss and not hist.diverged else math.inf
                run = {"kind": kind, "depth": depth, "lr": lr, "initial_loss": hist.initial_train_loss,
                       "train_loss": final, "train_acc": hist.train_acc[-1] if hist.train_acc else math.nan,
                       "test_acc": hist.test_acc[-1] if hist.test_acc else math.nan, "diverged": hist.diverged}
                if best is None or final < best["train_loss"]:
                    best = run
                    best_curve = list(hist.train_loss)
            assert best is not None
            best["grad_norm_stem"], best["grad_norm_last_hidden"] = float(norms[0]), float(norms[-2])
            best["grad_norm_ratio"] = float(norms[0] / norms[-2]) if norms[-2] > 0 else math.inf
            rows.append(best)
            curves += [{"kind": kind, "depth": depth, "epoch": e + 1, "train_loss": v} for e, v in enumerate(best_curve)]
    table = pd.DataFrame(rows)
    grad_frame, curve_frame = pd.DataFrame(grads), pd.DataFrame(curves)
    plain = table[table.kind == "plain"].set_index("depth")
    res = table[table.kind == "residual"].set_index("depth")
    initial = float(np.log(ds.num_classes))
    deepest, shallowest = depths[-1], depths[0]
    stuck = [d for d in depths if plain.loc[d, "train_loss"] >= 0.5 * plain.loc[d, "initial_loss"]]
    checks = [
        Check(
            "the shallowest plain network trains (training loss below 1/4 of its initial value)",
            bool(plain.loc[shallowest, "train_loss"] <= 0.25 * plain.loc[shallowest, "initial_loss"]),
            f"depth {shallowest}: {plain.loc[shallowest, 'initial_loss']:.3f} → {plain.loc[shallowest, 'train_loss']:.4f}",
        ),
        Check(
            "plain networks stop training beyond some depth (the deepest keeps ≥ 1/2 of its initial loss at its best "
            "learning rate)",
            bool(deepest in stuck),
            "plain training loss by depth: "
            + ", ".join(f"{d}: {plain.loc[d, 'train_loss']:.3f}" for d in depths)
            + f" (initial ≈ ln {ds.num_classes} = {initial:.3f}); stuck from depth {stuck[0] if stuck else None}",
        ),
        Check(
            "residual networks keep training at every depth (loss below 1/3 of the initial value, and below half "
            "the plain network's at the largest depth)",
            bool(all(res.loc[d, "train_loss"] <= res.loc[d, "initial_loss"] / 3 for d in depths)
                 and res.loc[deepest, "train_loss"] <= 0.5 * plain.loc[deepest, "train_loss"]),
            "residual training loss by depth: " + ", ".join(f"{d}: {res.loc[d, 'train_loss']:.3f}" for d in depths),
        ),
    ]
    notes = [
        f"digits ({ds.num_train} training images, standardized); width {p['width']}; plain SGD, batch "
        f"{p['batch_size']}, {p['epochs']} epochs; every (network, depth) at each learning rate of {tuple(lrs)}, "
        "the table keeps the learning rate with the lowest final training loss.",
        "Training loss is a full pass over the training set after the last epoch; a diverged run counts as +∞.",
        "Gradient norms at initialization (cross-entropy on the whole training set), per layer: "
        + "; ".join(f"{k} depth {deepest}: stem {t.loc[deepest, 'grad_norm_stem']:.3g}, last hidden "
                    f"{t.loc[deepest, 'grad_norm_last_hidden']:.3g}" for k, t in (("plain", plain), ("residual", res)))
        + ". He initialization keeps the *expected* gradient scale of a plain network, but at finite width the "
        "per-layer gradients of a deep plain network fluctuate from layer to layer and across inputs (shattered "
        "gradients, Balduzzi et al. 2017); the figure shows them.",
        "The residual branch scale α = 1/√depth is part of the recipe: with α = 1 and He initialization the forward "
        "signal's variance doubles at every residual layer.",
    ]

    def draw_loss(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        fig.set_size_inches(11, 4)
        ax1.plot(plain.index, plain.train_loss, "o-", label="plain")
        ax1.plot(res.index, res.train_loss, "s-", label="residual")
        ax1.axhline(initial, color="0.5", ls=":", lw=1, label=f"ln {ds.num_classes} (chance)")
        ax1.set_xscale("log", base=2)
        ax1.set_xlabel("hidden layers")
        ax1.set_ylabel(f"training loss after {p['epochs']} epochs (best lr)")
        ax1.legend(fontsize=8)
        ax1.grid(alpha=0.3)
        for i, d in enumerate(depths):
            for kind, style in (("plain", "-"), ("residual", "--")):
                c = curve_frame[(curve_frame.kind == kind) & (curve_frame.depth == d)]
                ax2.plot(c.epoch, c.train_loss, style, color=f"C{i}", label=f"{kind} {d}" if kind == "plain" or
                         i == 0 else None)
        ax2.set_yscale("log")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("training loss (solid plain, dashed residual)")
        ax2.legend(fontsize=7, ncol=2)
        ax2.grid(alpha=0.3)

    def draw_grads(fig: Any) -> None:
        axes = fig.subplots(1, 2, sharey=True)
        fig.set_size_inches(11, 4)
        for ax, kind in zip(axes, ("plain", "residual")):
            for i, d in enumerate(depths):
                g = grad_frame[(grad_frame.kind == kind) & (grad_frame.depth == d)]
                ax.semilogy(g.layer, g.grad_norm, ".-", color=f"C{i}", label=f"depth {d}")
            ax.set_title(f"{kind}: ‖∂L/∂W‖ per layer at initialization")
            ax.set_xlabel("layer (0 = stem, last = readout)")
            ax.grid(alpha=0.3, which="both")
        axes[0].legend(fontsize=8)

    return LessonOutput(
        table=table, checks=checks, figures={"loss": draw_loss, "gradients": draw_grads}, notes=notes,
        numbers={"plain_loss_deepest": float(plain.loc[deepest, "train_loss"]),
                 "residual_loss_deepest": float(res.loc[deepest, "train_loss"]),
                 "plain_first_stuck_depth": float(stuck[0]) if stuck else math.nan},
    )

"""Lesson ``loss-landscape``: 1-D and 2-D slices of the training loss (Li et al. 2018).

Li, Xu, Taylor, Studer & Goldstein (2018), "Visualizing the loss landscape of neural nets",
plot the training loss on a plane through a solution ``θ*`` spanned by two random
directions ``δ, η``: ``L(θ* + a·δ + b·η)``. A raw Gaussian direction is meaningless for a
ReLU network, whose function does not change when a layer's incoming weights are scaled up
and the next layer's down; *filter normalization* rescales every filter of the direction
(for a dense layer: every row of a weight matrix, i.e. one unit's incoming weights) to the
norm of the same filter of ``θ*``, ``d_{i,j} ← d_{i,j}·‖θ*_{i,j}‖ / ‖d_{i,j}‖``, and sets the
directions of biases to zero. Along such directions, sharpness can be compared between
networks. Their findings reproduced here: networks without skip connections have much
sharper (and, when deep, chaotic) minima than the same networks with them, and large-batch
minima are sharper than small-batch ones. A 1-D slice from the initialization to the
solution, ``L((1 − t)·θ₀ + t·θ*)``, shows the path gradient descent could have taken in a
straight line (Goodfellow, Vinyals & Saxe 2015).

Sharpness along a direction is the mean rise of the training loss a distance ``radius``
away on both sides, ``(L(θ* + r·d) + L(θ* − r·d))/2 − L(θ*)``, averaged over the directions;
both networks of a pair have the same parameter shapes, so both use the *same* random draws,
each filter-normalized to its own solution.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from trilemma.data import load_dataset
from trilemma.errors import InvalidArgumentError
from trilemma.lessons._base import Check, LessonOutput, register_lesson
from trilemma.lessons._fit import evaluate, fit
from trilemma.lessons._residual import DeepMLP

__all__ = ["filter_normalized_direction", "loss_slice"]

Params = dict[str, torch.Tensor]


def filter_normalized_direction(params: Params, generator: torch.Generator) -> Params:
    """A Gaussian direction in parameter space, filter-normalized to ``params`` (Li et al. 2018).

    Every row of a weight matrix (one unit's incoming weights; for a convolution, one
    output filter) is rescaled to the norm of the same row of ``params``; the directions of
    vectors (biases, normalization parameters) are zero.

    Args:
        params: ``{name: tensor}`` of the solution.
        generator: Source of the Gaussian draws (draws are taken in ``params`` order, so two
            solutions with the same shapes get the same raw draws from equally seeded generators).

    Returns:
        ``{name: direction}`` with the shapes of ``params``.
    """
    direction = {}
    for name, value in params.items():
        raw = torch.randn(value.shape, generator=generator, dtype=value.dtype)
        if value.dim() <= 1:
            direction[name] = torch.zeros_like(value)
            continue
        rows, draws = value.flatten(1), raw.flatten(1)
        scale = rows.norm(dim=1, keepdim=True) / draws.norm(dim=1, keepdim=True).clamp_min(1e-12)
        direction[name] = (draws * scale).reshape(value.shape)
    return direction


@torch.no_grad()
def loss_slice(model: nn.Module, params: Params, directions: list[Params], coords: np.ndarray,
               x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Training loss at ``params + Σ_k coords[i, k]·directions[k]`` for every row ``i`` of ``coords``.

    Args:
        model: The module whose parameters ``params`` are (evaluated with ``functional_call``,
            in its current mode; the module itself is not changed).
        params: ``{name: tensor}`` base point.
        directions: K directions shaped like ``params``.
        coords: ``(n, K)`` coefficients.
        x, y: Inputs and class labels.

    Returns:
        ``(n,)`` mean cross-entropy values.
    """
    out = np.empty(coords.shape[0])
    for i, row in enumerate(coords):
        point = {k: v + sum(float(c) * d[k] for c, d in zip(row, directions)) for k, v in params.items()}
        out[i] = float(F.cross_entropy(functional_call(model, point, (x,)), y))
    return out


def _largest_bump(values: np.ndarray) -> float:
    """Largest rise of a curve above its running minimum (0 for a non-increasing curve)."""
    return float(np.max(values - np.minimum.accumulate(values)))


def _solution_params(model: nn.Module) -> Params:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@register_lesson(
    "loss-landscape",
    title="Loss-landscape slices: skip connections and small batches give flatter minima",
    claim=(
        "Along the same filter-normalized random directions, the minimum reached by a deep MLP without skip "
        "connections is sharper than that of the same MLP with them, and a large-batch minimum is sharper than a "
        "small-batch one."
    ),
    references=(
        "Li, Xu, Taylor, Studer & Goldstein (2018), Visualizing the loss landscape of neural nets, NeurIPS.",
        "Goodfellow, Vinyals & Saxe (2015), Qualitatively characterizing neural network optimization problems, ICLR.",
        "Keskar, Mudigere, Nocedal, Smelyanskiy & Tang (2017), On large-batch training for deep learning, ICLR.",
    ),
    defaults={
        "depth": 12,
        "width": 64,
        "skip_lr": 0.05,
        "skip_batch": 64,
        "small_batch": 8,
        "large_batch": 0,
        "batch_width": 128,
        "batch_lr": 0.1,
        "max_epochs": 2000,
        "directions": 10,
        "radius": 0.25,
        "grid": 25,
        "span": 1.0,
        "max_train": 0,
        "seed": 0,
    },
    quick={"depth": 8, "directions": 4, "grid": 11, "max_epochs": 600},
)
def _compute(p: dict[str, Any]) -> LessonOutput:
    if p["depth"] < 1 or p["width"] < 1 or p["directions"] < 2 or p["grid"] < 3 or p["radius"] <= 0:
        raise InvalidArgumentError("need depth, width ≥ 1, directions ≥ 2, grid ≥ 3 and radius > 0")
    if p["max_train"] < 0:
        raise InvalidArgumentError(f"max_train must be ≥ 0 (0: the whole training set), got {p['max_train']!r}")
    ds = load_dataset("digits", normalize="standardize", seed=p["seed"], max_train=p["max_train"] or None)
    x, y = ds.x_train, ds.y_train
    large = p["large_batch"] or ds.num_train
    if not 1 <= p["small_batch"] < large <= ds.num_train:
        raise InvalidArgumentError(
            f"need 1 ≤ small_batch < large_batch ≤ {ds.num_train} (0: full batch), got {p['small_batch']}, {large}")
    setups = {  # name: (pair, residual, depth, width, batch, lr)
        "no skip": ("skip", False, p["depth"], p["width"], p["skip_batch"], p["skip_lr"]),
        "skip": ("skip", True, p["depth"], p["width"], p["skip_batch"], p["skip_lr"]),
        "large batch": ("batch", False, 1, p["batch_width"], large, p["batch_lr"]),
        "small batch": ("batch", False, 1, p["batch_width"], p["small_batch"], p["batch_lr"]),
    }
    grid = np.linspace(-p["span"], p["span"], p["grid"])
    ts = np.linspace(-0.5, 1.5, 41)
    rows, rises, slices, lines = [], {}, {}, {}
    for name, (pair, residual, depth, width, batch, lr) in setups.items():
        model = DeepMLP(ds.in_features, ds.num_classes, width, depth, residual=residual, seed=p["seed"])
        init = _solution_params(model)
        hist = fit(model, x, y, optimizer="sgd", lr=lr, epochs=p["max_epochs"], batch_size=batch, seed=p["seed"],
                   stop_at_train_acc=1.0)
        if hist.diverged:
            raise InvalidArgumentError(f"training of {name!r} diverged; lower its learning rate ({lr})")
        theta = _solution_params(model)
        model.eval()
        gen = torch.Generator().manual_seed(p["seed"] + 7)  # the same raw draws for both members of a pair
        dirs = [filter_normalized_direction(theta, gen) for _ in range(p["directions"])]
        base = loss_slice(model, theta, [], np.zeros((1, 0)), x, y)[0]
        r = p["radius"]
        rise = np.array([loss_slice(model, theta, [d], np.array([[r], [-r]]), x, y).mean() - base for d in dirs])
        rises[name] = rise
        lines[name] = loss_slice(model, init, [{k: theta[k] - init[k] for k in theta}], ts[:, None], x, y)
        a, b = np.meshgrid(grid, grid)
        slices[name] = loss_slice(model, theta, dirs[:2], np.stack([a.ravel(), b.ravel()], 1), x, y).reshape(a.shape)
        rows.append({
            "solution": name, "pair": pair, "residual": residual, "hidden_layers": depth + 1, "width": width,
            "batch_size": batch, "lr": lr, "epochs": hist.epochs[-1], "steps": hist.epochs[-1] * -(-ds.num_train // batch),
            "train_loss": base, "train_acc": hist.train_acc[-1], "test_acc": evaluate(model, ds.x_test, ds.y_test)[1],
            "sharpness": float(rise.mean()), "sharpness_min": float(rise.min()), "sharpness_max": float(rise.max()),
            "init_to_solution_max_bump": _largest_bump(lines[name][(ts >= 0) & (ts <= 1)]),
        })
    table = pd.DataFrame(rows)
    t = table.set_index("solution")
    checks = [Check(
        "every solution fits the training set (100% training accuracy)",
        bool((table.train_acc >= 1.0).all()),
        ", ".join(f"{n}: {a:.4f} after {e} epochs" for n, a, e in zip(table.solution, table.train_acc, table.epochs)),
    )]
    for sharp, flat in (("no skip", "skip"), ("large batch", "small batch")):
        share = float(np.mean(rises[sharp] > rises[flat]))
        checks.append(Check(
            f"the {sharp} minimum is sharper than the {flat} one along the same directions (mean rise ≥ 2×, and "
            "larger along ≥ 80% of the directions)",
            bool(t.loc[sharp, "sharpness"] >= 2 * t.loc[flat, "sharpness"] and share >= 0.8),
            f"loss rise at radius {p['radius']}: {t.loc[sharp, 'sharpness']:.4g} vs {t.loc[flat, 'sharpness']:.4g} "
            f"({t.loc[sharp, 'sharpness'] / max(t.loc[flat, 'sharpness'], 1e-300):.1f}×); larger along "
            f"{share:.0%} of {p['directions']} directions; losses at the minima {t.loc[sharp, 'train_loss']:.2e} vs "
            f"{t.loc[flat, 'train_loss']:.2e}",
        ))
    notes = [
        f"digits ({ds.num_train} training images, standardized). Skip pair: {p['depth'] + 1} hidden layers of "
        f"{p['width']} units with and without identity shortcuts (the residual-depth lesson's networks), SGD "
        f"lr={p['skip_lr']}, batch {p['skip_batch']}. Batch pair: 2 hidden layers of {p['batch_width']} units, SGD "
        f"lr={p['batch_lr']} with batch {p['small_batch']} vs {large}. Every network is trained until its first "
        f"epoch at 100% training accuracy (at most {p['max_epochs']} epochs).",
        f"Sharpness: mean over {p['directions']} filter-normalized directions of the training-loss rise at distance "
        f"{p['radius']} on both sides; the 2-D slices span the first two directions on [−{p['span']}, "
        f"{p['span']}]² ({p['grid']}×{p['grid']} points).",
        "The 1-D interpolation from the initialization (t = 0) to the solution (t = 1): "
        + ", ".join(f"{n}: largest bump on the way {b:.3g}" for n, b in zip(table.solution,
                                                                          table.init_to_solution_max_bump))
        + " (0 = the loss falls monotonically along the straight line).",
        f"Both members of a pair stop at their first epoch with 100% training accuracy, not at equal losses: the "
        f"losses there are {t.loc['no skip', 'train_loss']:.2e} (no skip) vs {t.loc['skip', 'train_loss']:.2e} "
        f"(skip) and {t.loc['large batch', 'train_loss']:.2e} (large batch) vs "
        f"{t.loc['small batch', 'train_loss']:.2e} (small batch). Cross-entropy flattens as its loss falls, so "
        "a sharper minimum at a *lower* loss (as for no skip vs skip here, when it happens) is the clearer case; "
        "a sharper minimum at a higher loss mixes the two effects.",
        "Sharpness depends on the parameterization (Dinh et al. 2017); filter normalization removes the "
        "per-unit scale freedom of ReLU networks, which is what makes the comparison meaningful.",
    ]
    names = list(setups)

    def draw_contours(fig: Any) -> None:
        axes = fig.subplots(2, 2)
        fig.set_size_inches(10, 9)
        levels = np.log10(np.geomspace(max(min(float(s.min()) for s in slices.values()), 1e-6),
                                       max(float(s.max()) for s in slices.values()), 24))
        for ax, name in zip(axes.ravel(), names):
            cs = ax.contour(grid, grid, np.log10(np.maximum(slices[name], 1e-6)), levels=levels, cmap="viridis")
            ax.plot([0], [0], "r*", ms=8)
            ax.set_title(f"{name}: log10 training loss")
            ax.set_aspect("equal")
        fig.colorbar(cs, ax=axes, shrink=0.6, label="log10 loss")

    def draw_lines(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        fig.set_size_inches(11, 4)
        for i, name in enumerate(names):
            ax1.semilogy(ts, lines[name], color=f"C{i}", label=name)
        ax1.axvline(0, color="0.6", ls=":")
        ax1.axvline(1, color="0.6", ls=":")
        ax1.set_xlabel("t  (0 = initialization, 1 = solution)")
        ax1.set_ylabel("training loss")
        ax1.set_title("straight line from initialization to solution")
        ax1.legend(fontsize=8)
        mid = len(grid) // 2
        for i, name in enumerate(names):
            ax2.semilogy(grid, slices[name][mid, :], color=f"C{i}", label=name)
        ax2.set_xlabel("a (filter-normalized direction 1)")
        ax2.set_title("1-D slice through the solution")
        ax2.legend(fontsize=8)

    return LessonOutput(
        table=table, checks=checks, figures={"contours": draw_contours, "slices": draw_lines}, notes=notes,
        numbers={f"sharpness_{n.replace(' ', '_')}": float(t.loc[n, "sharpness"]) for n in names},
    )

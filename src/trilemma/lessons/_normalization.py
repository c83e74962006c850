"""Lesson ``normalization``: BatchNorm, LayerNorm and weight normalization against a plain network that trains.

The same deep ReLU MLP (``depth`` hidden layers of ``width`` units) is trained with plain
SGD on digits in four versions: plain ``Linear → ReLU`` with He initialization (the
initialization under which a plain deep network trains at all; He et al. 2015),
``Linear → BatchNorm1d → ReLU`` (Ioffe & Szegedy 2015), ``Linear → LayerNorm → ReLU``
(Ba, Kiros & Hinton 2016) and weight-normalized layers ``w = g·v/‖v‖`` with the
*data-dependent initialization* of Salimans & Kingma (2016): layer by layer on a batch of
training inputs, ``g`` and ``b`` are set so that every unit's pre-activation has mean 0 and
variance 1. The directions ``v`` start from the same He-initialized weights as the plain
network: with plain SGD (unlike Adam, which Salimans & Kingma used with ``v ~ N(0, 0.05²)``)
the norm of ``v`` sets the effective learning rate of the direction, ``∝ g²/‖v‖²``, and a
tiny ``v`` makes SGD erratic.

Each version is trained at every learning rate of the same grid for the same number of
epochs (equal learning-rate budgets). Reported per version: the fewest epochs to reach a
training-loss target at its best learning rate, and the largest learning rate at which it
trains stably (no divergence on any seed, final training loss below half its initial
value). Training loss is a full pass in eval mode after every epoch (BatchNorm uses its
running statistics).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from trilemma.data import load_dataset
from trilemma.errors import InvalidArgumentError
from trilemma.lessons._base import Check, LessonOutput, register_lesson
from trilemma.training import TrainConfig, train

__all__ = ["NORMALIZATIONS", "data_dependent_init", "normalized_mlp"]

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
        norm: One of :data:`NORMALIZATIONS`. ``"weightnorm"`` layers start with ``v`` = the
            initial weights of ``init``; call :func:`data_dependent_init` before training.
        seed: Seed of the initialization.
        init: ``"he"`` (He-normal hidden weights, zero biases) or ``"default"`` (PyTorch's
            ``Linear`` default, whose variance ``1/(3·fan_in)`` shrinks the signal layer by layer).

    Returns:
        The network.

    Raises:
        InvalidArgumentError: Unknown ``norm`` / ``init`` or non-positive sizes.
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
        if norm == "weightnorm":
            linear = weight_norm(linear)
        layers.append(linear)
        if norm == "batchnorm":
            layers.append(nn.BatchNorm1d(width))
        elif norm == "layernorm":
            layers.append(nn.LayerNorm(width))
        layers.append(nn.ReLU())
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


@torch.no_grad()
def data_dependent_init(model: nn.Sequential, x: torch.Tensor) -> None:
    """Salimans & Kingma (2016)'s data-dependent initialization of weight-normalized layers, in place.

    Layer by layer on the batch ``x``: with ``t = v·h/‖v‖`` the pre-activation of the
    current weights, set ``g ← g/σ(t)`` and ``b ← −μ(t)/σ(t)`` per unit, so that every
    weight-normalized unit starts with zero mean and unit variance on ``x``; the batch is then
    propagated through the initialized layer.

    Args:
        model: A :func:`normalized_mlp` (other modules are passed through unchanged).
        x: Input batch ``(n, *)`` with ``n ≥ 2``.
    """
    h = x
    for module in model:
        if isinstance(module, nn.Linear) and parametrize_is_weight_norm(module):
            pre = module(h) - module.bias
            mean, std = pre.mean(0), pre.std(0).clamp_min(1e-8)
            scale = module.get_parameter("parametrizations.weight.original0")
            scale.div_(std[:, None])
            module.bias.copy_(-mean / std)
        h = module(h)


def parametrize_is_weight_norm(module: nn.Module) -> bool:
    """Whether ``module.weight`` is weight-normalized (``torch.nn.utils.parametrizations.weight_norm``)."""
    params = getattr(module, "parametrizations", None)
    return params is not None and "weight" in params and hasattr(params.weight, "original0")


@register_lesson(
    "normalization",
    title="Normalization: BatchNorm, LayerNorm, weight normalization vs a plain network that trains",
    claim=(
        "With equal learning-rate budgets, a deep plain MLP with He initialization trains, and so do its LayerNorm "
        "and weight-normalized (data-dependent init) versions; BatchNorm reaches the training-loss target in fewer "
        "epochs than the plain network and trains stably at learning rates at least 3× larger."
    ),
    references=(
        "Ioffe & Szegedy (2015), Batch normalization, ICML.",
        "Ba, Kiros & Hinton (2016), Layer normalization, arXiv:1607.06450.",
        "Salimans & Kingma (2016), Weight normalization, NeurIPS.",
        "He, Zhang, Ren & Sun (2015), Delving deep into rectifiers (He initialization), ICCV.",
        "Santurkar, Tsipras, Ilyas & Madry (2018), How does batch normalization help optimization?, NeurIPS.",
    ),
    defaults={
        "dataset": "digits",
        "depth": 8,
        "width": 64,
        "epochs": 15,
        "batch_size": 64,
        "lrs": (0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
        "target_loss": 0.1,
        "init": "he",
        "ddi_batch": 256,
        "seeds": 2,
        "seed": 0,
    },
    quick={"epochs": 8, "lrs": (0.03, 0.3, 3.0), "seeds": 1, "target_loss": 0.2},
)
def _compute(p: dict[str, Any]) -> LessonOutput:
    lrs = p["lrs"]
    if not lrs or min(lrs) <= 0 or list(lrs) != sorted(set(lrs)):
        raise InvalidArgumentError(f"lrs must be strictly increasing positive numbers, got {lrs!r}")
    if p["seeds"] < 1 or p["epochs"] < 1 or p["target_loss"] <= 0 or p["ddi_batch"] < 2:
        raise InvalidArgumentError("seeds, epochs must be ≥ 1, target_loss > 0 and ddi_batch ≥ 2")
    ds = load_dataset(p["dataset"], normalize="standardize", seed=p["seed"])
    runs, curves = [], []
    for norm in NORMALIZATIONS:
        for lr in lrs:
            for s in range(p["seeds"]):
                seed = p["seed"] + s
                model = normalized_mlp(ds.in_features, ds.num_classes, p["width"], p["depth"], norm, seed=seed,
                                       init=p["init"])
                if norm == "weightnorm":
                    data_dependent_init(model, ds.x_train[: p["ddi_batch"]])
                cfg = TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=lr, optimizer="sgd",
                                  full_train_eval=True, eval_every=1, seed=seed)
                res = train(model, ds, cfg)
                losses = res.train_loss_full or []
                hit = next((i + 1 for i, v in enumerate(losses) if v <= p["target_loss"]), None)
                final = losses[-1] if losses and not res.diverged else math.inf
                runs.append({"normalization": norm, "lr": lr, "seed": seed, "diverged": res.diverged,
                             "epochs_to_target": float(hit) if hit is not None else math.nan,
                             "final_train_loss": final,
                             "final_test_acc": res.test_acc[-1] if res.test_acc and not res.diverged else math.nan})
                curves += [{"normalization": norm, "lr": lr, "seed": seed, "epoch": e, "train_loss": v}
                           for e, v in zip(res.eval_epochs, losses)]
    frame = pd.DataFrame(runs)
    frame["epochs_or_budget"] = frame.epochs_to_target.fillna(p["epochs"] + 1)
    initial = math.log(ds.num_classes)
    per_lr = frame.groupby(["normalization", "lr"], sort=False, as_index=False).agg(
        reached=("epochs_to_target", lambda v: int(v.notna().sum())), epochs_or_budget=("epochs_or_budget", "mean"),
        diverged=("diverged", "sum"), final_train_loss=("final_train_loss", "max"),
        final_test_acc=("final_test_acc", "mean"))
    per_lr["stable"] = (per_lr.diverged == 0) & (per_lr.final_train_loss <= 0.5 * initial)
    rows = []
    for norm in NORMALIZATIONS:
        g = per_lr[per_lr.normalization == norm]
        best = g.sort_values(["epochs_or_budget", "final_train_loss"], kind="stable").iloc[0]
        stable = g[g.stable]
        rows.append({
            "normalization": norm, "best_lr": best.lr, "epochs_to_target": best.epochs_or_budget,
            "reached_all_seeds": bool(best.reached == p["seeds"]), "final_train_loss": best.final_train_loss,
            "final_test_acc": best.final_test_acc,
            "largest_stable_lr": float(stable.lr.max()) if len(stable) else math.nan,
            "stable_lrs": ", ".join(f"{v:g}" for v in stable.lr),
        })
    table = pd.DataFrame(rows)
    row = table.set_index("normalization")
    plain = row.loc["none"]
    bn = row.loc["batchnorm"]
    budget_note = f"(a seed that never reaches the target counts {p['epochs'] + 1})"
    checks = [
        Check(
            f"the plain He-initialized network trains: it reaches training loss {p['target_loss']} on every seed",
            bool(plain.reached_all_seeds),
            f"{plain.epochs_to_target:.1f} epochs at lr {plain.best_lr:g} {budget_note}",
        ),
        Check(
            "LayerNorm and weight normalization (data-dependent init) train too: they reach the target on every seed",
            bool(row.loc["layernorm", "reached_all_seeds"] and row.loc["weightnorm", "reached_all_seeds"]),
            f"layernorm {row.loc['layernorm', 'epochs_to_target']:.1f} epochs at lr "
            f"{row.loc['layernorm', 'best_lr']:g}; weightnorm {row.loc['weightnorm', 'epochs_to_target']:.1f} epochs "
            f"at lr {row.loc['weightnorm', 'best_lr']:g}",
        ),
        Check(
            "BatchNorm reaches the target in fewer epochs than the plain network (each at its best learning rate)",
            bool(bn.reached_all_seeds and bn.epochs_to_target < plain.epochs_to_target),
            f"{bn.epochs_to_target:.1f} vs {plain.epochs_to_target:.1f} epochs (lr {bn.best_lr:g} vs "
            f"{plain.best_lr:g}; mean over seeds) {budget_note}",
        ),
        Check(
            "BatchNorm trains stably at learning rates at least 3× larger than the plain network's largest",
            bool(np.isfinite(plain.largest_stable_lr) and bn.largest_stable_lr >= 3 * plain.largest_stable_lr),
            "largest stable learning rate: " + ", ".join(f"{n} {row.loc[n, 'largest_stable_lr']:g}"
                                                        for n in NORMALIZATIONS),
        ),
    ]
    curve_frame = pd.DataFrame(curves)
    notes = [
        f"`{p['dataset']}` ({ds.num_train} train / {ds.num_test} test, standardized); {p['depth']} hidden layers of "
        f"{p['width']} units, init={p['init']!r} for the plain, BatchNorm and LayerNorm versions; plain SGD, batch "
        f"{p['batch_size']}, {p['epochs']} epochs at every learning rate of {tuple(lrs)}; {p['seeds']} seed(s).",
        "Stable: no seed diverges and every seed ends below half the initial loss ln "
        f"{ds.num_classes} = {initial:.2f}. Stable learning rates: "
        + "; ".join(f"{n}: {row.loc[n, 'stable_lrs'] or 'none'}" for n in NORMALIZATIONS) + ".",
        f"Epochs to the target at each one's best learning rate: plain {plain.epochs_to_target:.1f}, BatchNorm "
        f"{bn.epochs_to_target:.1f}, LayerNorm {row.loc['layernorm', 'epochs_to_target']:.1f}, weight normalization "
        f"{row.loc['weightnorm', 'epochs_to_target']:.1f}. Only BatchNorm's advantages are part of the claim: with "
        "He initialization the plain network already keeps the signal's scale, and whether LayerNorm or weight "
        "normalization beat it depends on the depth, the seeds and the learning-rate grid.",
    ]

    def draw(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        fig.set_size_inches(11, 4)
        for i, norm in enumerate(NORMALIZATIONS):
            g = per_lr[per_lr.normalization == norm]
            ax1.plot(g.lr, g.epochs_or_budget, "o-", color=f"C{i}", label=norm)
            b = row.loc[norm, "best_lr"]
            c = curve_frame[(curve_frame.normalization == norm) & (curve_frame.lr == b)].groupby("epoch").mean(
                numeric_only=True)
            ax2.semilogy(c.index, c.train_loss, color=f"C{i}", label=f"{norm} (lr {b:g})")
        ax1.axhline(p["epochs"] + 1, color="0.5", ls=":", lw=1, label="not reached")
        ax1.set_xscale("log")
        ax1.set_xlabel("learning rate")
        ax1.set_ylabel(f"epochs to training loss {p['target_loss']}")
        ax1.legend(fontsize=8)
        ax1.grid(alpha=0.3)
        ax2.axhline(p["target_loss"], color="0.5", ls=":", lw=1)
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("training loss (full pass), best learning rate")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3, which="both")

    return LessonOutput(
        table=table, checks=checks, figures={"learning_rates": draw}, notes=notes,
        numbers={**{f"epochs_to_target_{n}": float(row.loc[n, "epochs_to_target"]) for n in NORMALIZATIONS},
                 **{f"largest_stable_lr_{n}": float(row.loc[n, "largest_stable_lr"]) for n in NORMALIZATIONS}},
    )

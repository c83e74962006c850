"""Lesson ``random-labels``: the same network fits true and shuffled labels (Zhang et al. 2017).

Zhang, Bengio, Hardt, Recht & Vinyals (2017), "Understanding deep learning requires
rethinking generalization", train standard networks on CIFAR-10 and ImageNet with the
labels replaced by random ones and find that they still reach 100% training accuracy —
with test accuracy at chance, since nothing about the test labels can be learned — and
that fitting noise takes only a small constant factor longer than fitting the true labels.
A capacity measure that depends only on the network (its size, its VC dimension) is the
same in both runs, so it cannot explain why one generalizes and the other does not.

This lesson repeats the experiment on scikit-learn's digits with a two-hidden-layer MLP and
a small CNN (two 3×3 convolutions, max-pooling, a hidden dense layer): for each corruption
level p a random fraction p of the training labels is shuffled among themselves (p = 1:
all labels shuffled, so class counts are kept), and each network is trained with Adam until
it fits the training set or the epoch budget runs out. Test labels are never changed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from trilemma._stats import kendall_tau
from trilemma.data import load_dataset
from trilemma.errors import InvalidArgumentError
from trilemma.lessons._base import Check, LessonOutput, register_lesson
from trilemma.lessons._fit import fit

__all__ = ["ARCHS", "corrupt_labels", "small_cnn", "two_layer_mlp"]

ARCHS = ("mlp", "cnn")


def corrupt_labels(y: torch.Tensor, fraction: float, *, seed: int) -> torch.Tensor:
    """Shuffle the labels of a random ``fraction`` of the samples among themselves.

    Args:
        y: Class indices ``(n,)``.
        fraction: In [0, 1]; 1 shuffles every label (class counts are kept).
        seed: Seed of the choice and of the shuffle.

    Returns:
        A new tensor of labels ``(n,)``.

    Raises:
        InvalidArgumentError: ``fraction`` outside [0, 1].
    """
    if not 0.0 <= fraction <= 1.0:
        raise InvalidArgumentError(f"fraction must be in [0, 1], got {fraction!r}")
    gen = torch.Generator().manual_seed(seed)
    n = y.shape[0]
    chosen = torch.randperm(n, generator=gen)[: round(fraction * n)]
    out = y.clone()
    out[chosen] = y[chosen[torch.randperm(chosen.numel(), generator=gen)]]
    return out


def two_layer_mlp(in_features: int, num_classes: int, width: int, *, seed: int) -> nn.Sequential:
    """``Linear → ReLU → Linear → ReLU → Linear`` with PyTorch's default initialization."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, num_classes))


def small_cnn(image_shape: tuple[int, int, int], num_classes: int, channels: int, *, seed: int) -> nn.Sequential:
    """Two 3×3 convolutions (``channels``, ``2·channels``), 2×2 max-pooling, a 128-unit dense layer.

    Args:
        image_shape: ``(C, H, W)`` of one image (inputs arrive flattened and are unflattened).
        num_classes: Outputs.
        channels: Channels of the first convolution.
        seed: Seed of the initialization.
    """
    c, h, w = image_shape
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Unflatten(1, image_shape),
        nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(2 * channels * (h // 2) * (w // 2), 128), nn.ReLU(),
        nn.Linear(128, num_classes),
    )


@register_lesson(
    "random-labels",
    title="Fitting random labels: capacity alone does not explain generalization",
    claim=(
        "The same MLP and the same small CNN fit shuffled labels of the training set to ~100% training accuracy, as "
        "they fit the true labels; on shuffled labels their test accuracy is at chance, and fitting the noise takes "
        "more epochs than fitting the true labels."
    ),
    references=(
        "Zhang, Bengio, Hardt, Recht & Vinyals (2017), Understanding deep learning requires rethinking "
        "generalization, ICLR.",
        "Arpit et al. (2017), A closer look at memorization in deep networks, ICML.",
    ),
    defaults={
        "archs": ("mlp", "cnn"),
        "corruptions": (0.0, 0.2, 0.5, 0.8, 1.0),
        "max_train": 0,
        "mlp_width": 512,
        "cnn_channels": 32,
        "epochs": 200,
        "batch_size": 128,
        "lr": 0.001,
        "fit_acc": 0.99,
        "chance_band": 0.1,
        "seed": 0,
    },
    quick={"corruptions": (0.0, 1.0), "max_train": 300, "mlp_width": 256, "cnn_channels": 8, "batch_size": 32,
           "epochs": 100},
)
def _compute(p: dict[str, Any]) -> LessonOutput:
    archs, levels = p["archs"], p["corruptions"]
    if not archs or any(a not in ARCHS for a in archs) or len(set(archs)) != len(archs):
        raise InvalidArgumentError(f"archs must be distinct names from {ARCHS}, got {archs!r}")
    if list(levels) != sorted(set(levels)) or levels[0] != 0.0 or levels[-1] != 1.0:
        raise InvalidArgumentError(f"corruptions must increase strictly from 0.0 to 1.0, got {levels!r}")
    if not 0 < p["fit_acc"] <= 1 or p["epochs"] < 1 or p["max_train"] < 0:
        raise InvalidArgumentError("need fit_acc in (0, 1], epochs ≥ 1 and max_train ≥ 0 (0: all)")
    ds = load_dataset("digits", normalize="standardize", seed=p["seed"], max_train=p["max_train"] or None)
    side = math.isqrt(ds.in_features)
    if side * side != ds.in_features:
        raise InvalidArgumentError(f"the CNN needs square images; got {ds.in_features} features")
    chance = 1.0 / ds.num_classes
    sigma = math.sqrt(chance * (1 - chance) / ds.num_test)
    band = p["chance_band"]
    rows, curves = [], []
    for arch in archs:
        for level in levels:
            y = corrupt_labels(ds.y_train, level, seed=p["seed"] + 1)
            if arch == "mlp":
                model = two_layer_mlp(ds.in_features, ds.num_classes, p["mlp_width"], seed=p["seed"])
            else:
                model = small_cnn((1, side, side), ds.num_classes, p["cnn_channels"], seed=p["seed"])
            hist = fit(model, ds.x_train, y, optimizer="adam", lr=p["lr"], epochs=p["epochs"],
                       batch_size=p["batch_size"], seed=p["seed"], x_test=ds.x_test, y_test=ds.y_test,
                       stop_at_train_acc=1.0)
            if hist.diverged:
                raise InvalidArgumentError(f"training diverged ({arch}, corruption {level}); lower lr={p['lr']}")
            fitted = hist.first_epoch(hist.train_acc, p["fit_acc"])
            rows.append({
                "arch": arch, "corruption": level, "params": sum(q.numel() for q in model.parameters()),
                "epochs_run": hist.epochs[-1], "epochs_to_fit": fitted if fitted is not None else np.nan,
                "fitted": fitted is not None, "train_acc": hist.train_acc[-1], "train_loss": hist.train_loss[-1],
                "test_acc": hist.test_acc[-1], "test_loss": hist.test_loss[-1],
                "agree_with_true_labels": float((y == ds.y_train).double().mean()),
            })
            curves += [{"arch": arch, "corruption": level, "epoch": e, "train_acc": a}
                       for e, a in zip(hist.epochs, hist.train_acc)]
    table = pd.DataFrame(rows)
    curve_frame = pd.DataFrame(curves)
    checks = []
    for arch in archs:
        t = table[table.arch == arch].set_index("corruption")
        true, noise = t.loc[0.0], t.loc[1.0]
        checks.append(Check(
            f"{arch}: fits the training labels at every corruption level (≥ {p['fit_acc']:.0%} training accuracy)",
            bool(t.fitted.all()),
            ", ".join(f"p={lv:g}: {a:.3f}" for lv, a in zip(t.index, t.train_acc)) + f" (budget {p['epochs']} epochs)",
        ))
        checks.append(Check(
            f"{arch}: with shuffled labels the test accuracy is at chance (within {band:g} of 1/{ds.num_classes}), "
            "with true labels far above it",
            bool(abs(noise.test_acc - chance) <= band and true.test_acc >= chance + 0.5),
            f"test accuracy {noise.test_acc:.3f} shuffled vs chance {chance:.2f} ± {band:g}; {true.test_acc:.3f} "
            "with true labels",
        ))
        checks.append(Check(
            f"{arch}: fitting shuffled labels takes at least 1.5× the epochs of the true labels",
            bool(true.fitted and noise.fitted and noise.epochs_to_fit >= 1.5 * true.epochs_to_fit),
            f"{noise.epochs_to_fit:.0f} vs {true.epochs_to_fit:.0f} epochs to {p['fit_acc']:.0%} training accuracy",
        ))
        if len(levels) >= 3:
            tau = kendall_tau(t.index.to_numpy(), t.test_acc.to_numpy())
            checks.append(Check(
                f"{arch}: test accuracy falls as more labels are shuffled",
                bool(tau <= -0.8),
                f"Kendall τ(corruption, test accuracy) = {tau:.2f}; "
                + ", ".join(f"p={lv:g}: {a:.3f}" for lv, a in zip(t.index, t.test_acc)),
            ))
    notes = [
        f"digits: {ds.num_train} training / {ds.num_test} test images (8×8, standardized). Labels of a random "
        "fraction p of the training images are shuffled among themselves; test labels are untouched.",
        f"MLP: 64-{p['mlp_width']}-{p['mlp_width']}-10; CNN: conv3×3({p['cnn_channels']})-conv3×3("
        f"{2 * p['cnn_channels']})-maxpool-dense(128)-10; PyTorch default initialization. Adam lr={p['lr']}, "
        f"batch {p['batch_size']}, stopped at 100% training accuracy or after {p['epochs']} epochs.",
        f"Chance is 1/{ds.num_classes}. Random guessing would scatter by σ = {sigma:.3f} on {ds.num_test} test "
        f"images, but a network fitted to shuffled labels scatters more: on a finite training set the shuffled "
        "labels keep a chance association with the true classes (a class may by luck get its own label more "
        f"often than 1/{ds.num_classes} of the time), which the network learns and carries to the test set; "
        f"hence the band of ±{band:g}.",
        "The parameter count is the same with true and shuffled labels, so any bound that depends on it alone "
        "is the same for a network that generalizes and one that is at chance.",
    ]

    def draw_curves(fig: Any) -> None:
        axes = fig.subplots(1, len(archs), sharey=True, squeeze=False)[0]
        fig.set_size_inches(5.5 * len(archs), 4)
        for ax, arch in zip(axes, archs):
            for i, level in enumerate(levels):
                c = curve_frame[(curve_frame.arch == arch) & (curve_frame.corruption == level)]
                ax.plot(c.epoch, c.train_acc, color=f"C{i}", label=f"{level:.0%} shuffled")
            ax.axhline(chance, color="0.5", ls=":", lw=1)
            ax.set_xlabel("epoch")
            ax.set_title(f"{arch}: training accuracy")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("training accuracy (full pass)")
        axes[0].legend(fontsize=8)

    def draw_summary(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        fig.set_size_inches(10, 4)
        for i, arch in enumerate(archs):
            t = table[table.arch == arch]
            ax1.plot(t.corruption, t.test_acc, "o-", color=f"C{i}", label=f"{arch} test")
            ax1.plot(t.corruption, t.train_acc, "s--", color=f"C{i}", alpha=0.6, label=f"{arch} train")
            ax2.plot(t.corruption, t.epochs_to_fit, "o-", color=f"C{i}", label=arch)
        ax1.axhline(chance, color="0.5", ls=":", lw=1, label="chance")
        ax1.set_xlabel("fraction of labels shuffled")
        ax1.set_ylabel("accuracy")
        ax1.legend(fontsize=8)
        ax1.grid(alpha=0.3)
        ax2.set_xlabel("fraction of labels shuffled")
        ax2.set_ylabel(f"epochs to {p['fit_acc']:.0%} training accuracy")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)

    numbers: dict[str, float] = {}
    for arch in archs:
        t = table[table.arch == arch].set_index("corruption")
        numbers[f"{arch}_test_acc_shuffled"] = float(t.loc[1.0, "test_acc"])
        numbers[f"{arch}_train_acc_shuffled"] = float(t.loc[1.0, "train_acc"])
        numbers[f"{arch}_epochs_to_fit_true"] = float(t.loc[0.0, "epochs_to_fit"])
        numbers[f"{arch}_epochs_to_fit_shuffled"] = float(t.loc[1.0, "epochs_to_fit"])
    return LessonOutput(table=table, checks=checks, figures={"training": draw_curves, "summary": draw_summary},
                        notes=notes, numbers=numbers)

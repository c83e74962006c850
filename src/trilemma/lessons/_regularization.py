"""Lesson ``regularization``: remedies for a network that overfits a small noisy dataset.

A wide two-hidden-layer MLP trained long enough on a few hundred digits whose labels are
partly wrong memorizes them: its training loss goes to zero while its test loss, after an
early minimum, rises again — the network becomes confidently wrong on the test points that
resemble mislabeled training points. The lesson compares, on the same data and the same
training budget, four remedies with the unregularized network's final test loss:

* **dropout** (Srivastava et al. 2014) after each hidden layer, rate chosen on the
  validation split;
* **weight decay**, decoupled from Adam's step (AdamW; Loshchilov & Hutter 2019), strength
  chosen on the validation split;
* **early stopping** (Prechelt 1998): the unregularized run, stopped at the epoch with the
  smallest validation loss;
* a **snapshot ensemble** (Huang et al. 2017): one run with a cyclic cosine learning rate
  (restarts as in SGDR, Loshchilov & Hutter 2017), averaging the predicted probabilities of
  the snapshot taken at the end of every cycle.

The validation split is drawn from the same noisy pool as the training set (a practitioner
has no clean labels); the test set keeps the true labels. Losses are cross-entropy; curves
are averaged over seeds (initialization and mini-batch order).
"""

from __future__ import annotations

import copy
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
from trilemma.lessons._fit import evaluate, fit

__all__ = ["dropout_mlp", "noisy_split"]


def dropout_mlp(in_features: int, num_classes: int, width: int, rate: float, *, seed: int) -> nn.Sequential:
    """``Linear → ReLU → Dropout → Linear → ReLU → Dropout → Linear`` (no dropout layers when ``rate = 0``)."""
    if not 0 <= rate < 1:
        raise InvalidArgumentError(f"dropout rate must be in [0, 1), got {rate!r}")
    torch.manual_seed(seed)

    def drop() -> list[nn.Module]:
        return [nn.Dropout(rate)] if rate > 0 else []

    return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), *drop(), nn.Linear(width, width), nn.ReLU(),
                         *drop(), nn.Linear(width, num_classes))


def noisy_split(x: torch.Tensor, y: torch.Tensor, n_train: int, n_val: int, noise: float, num_classes: int, *,
                seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random training and validation subset whose labels are replaced, with probability ``noise``, by a uniform class.

    Returns:
        ``(x_train, y_train, x_val, y_val)``.

    Raises:
        InvalidArgumentError: Not enough samples or ``noise`` outside [0, 1].
    """
    if n_train < 1 or n_val < 1 or n_train + n_val > x.shape[0] or not 0 <= noise <= 1:
        raise InvalidArgumentError(
            f"need n_train, n_val ≥ 1 with n_train + n_val ≤ {x.shape[0]} and noise in [0, 1], got {n_train}, "
            f"{n_val}, {noise}")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=gen)
    labels = y[perm[: n_train + n_val]].clone()
    flip = torch.rand(labels.shape[0], generator=gen) < noise
    labels[flip] = torch.randint(0, num_classes, (int(flip.sum()),), generator=gen)
    return x[perm[:n_train]], labels[:n_train], x[perm[n_train:n_train + n_val]], labels[n_train:]


@torch.no_grad()
def _ensemble_loss(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    probs = torch.stack([F.softmax(m.eval()(x), 1) for m in models]).mean(0)
    return float(F.nll_loss(probs.clamp_min(1e-12).log(), y)), float((probs.argmax(1) == y).double().mean())


@register_lesson(
    "regularization",
    title="Regularization: dropout, weight decay, early stopping, snapshot ensembles",
    claim=(
        "An MLP that memorizes a small noisy training set ends with a test loss well above its minimum; early "
        "stopping on a validation split picks an epoch before the test loss rises, and dropout, weight decay, "
        "early stopping and a snapshot ensemble each end with a lower test loss than the unregularized network."
    ),
    references=(
        "Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov (2014), Dropout, JMLR.",
        "Loshchilov & Hutter (2019), Decoupled weight decay regularization, ICLR.",
        "Prechelt (1998), Early stopping — but when?, Neural Networks: Tricks of the Trade.",
        "Huang, Li, Pleiss, Liu, Hopcroft & Weinberger (2017), Snapshot ensembles: train 1, get M for free, ICLR.",
        "Loshchilov & Hutter (2017), SGDR: stochastic gradient descent with warm restarts, ICLR.",
    ),
    defaults={
        "n_train": 200,
        "n_val": 200,
        "label_noise": 0.3,
        "width": 512,
        "epochs": 100,
        "batch_size": 32,
        "lr": 0.001,
        "dropout_rates": (0.2, 0.5, 0.8),
        "weight_decays": (0.1, 1.0, 3.0),
        "snapshots": 5,
        "seeds": 3,
        "seed": 0,
    },
    quick={"epochs": 50, "dropout_rates": (0.5,), "weight_decays": (1.0,), "seeds": 1},
)
def _compute(p: dict[str, Any]) -> LessonOutput:
    if p["seeds"] < 1 or p["epochs"] < 2 or p["snapshots"] < 2 or p["epochs"] < p["snapshots"]:
        raise InvalidArgumentError("need seeds ≥ 1, snapshots ≥ 2 and epochs ≥ max(2, snapshots)")
    if not p["dropout_rates"] or not p["weight_decays"]:
        raise InvalidArgumentError("dropout_rates and weight_decays must not be empty")
    ds = load_dataset("digits", normalize="standardize", seed=p["seed"])
    x, y, xv, yv = noisy_split(ds.x_train, ds.y_train, p["n_train"], p["n_val"], p["label_noise"], ds.num_classes,
                               seed=p["seed"])
    xt, yt = ds.x_test, ds.y_test
    epochs = p["epochs"]
    cycle = epochs // p["snapshots"]

    def run(rate: float, wd: float, seed: int, cyclic: bool = False) -> dict[str, Any]:
        model = dropout_mlp(ds.in_features, ds.num_classes, p["width"], rate, seed=seed)
        curve: dict[str, list[float]] = {"val": [], "test": []}
        snaps: list[nn.Module] = []

        def after(epoch: int, m: nn.Module) -> None:
            curve["val"].append(evaluate(m, xv, yv)[0])
            curve["test"].append(evaluate(m, xt, yt)[0])
            if cyclic and epoch % cycle == 0 and len(snaps) < p["snapshots"]:
                snaps.append(copy.deepcopy(m).eval())

        schedule = (lambda e: p["lr"] * 0.5 * (1 + math.cos(math.pi * (e % cycle) / cycle))) if cyclic else p["lr"]
        hist = fit(model, x, y, optimizer="adamw" if wd > 0 else "adam", lr=schedule, epochs=epochs,
                   batch_size=p["batch_size"], seed=seed, weight_decay=wd, after_epoch=after)
        if hist.diverged:
            raise InvalidArgumentError(f"training diverged (dropout {rate}, weight decay {wd}); lower lr={p['lr']}")
        out: dict[str, Any] = {"train": hist.train_loss, "val": curve["val"], "test": curve["test"],
                               "test_acc": evaluate(model, xt, yt)[1]}
        if cyclic:
            out["ensemble"] = _ensemble_loss(snaps, xt, yt)
        return out

    seeds = [p["seed"] + s for s in range(p["seeds"])]
    plain = [run(0.0, 0.0, s) for s in seeds]
    train_c = np.mean([r["train"] for r in plain], 0)
    val_c = np.mean([r["val"] for r in plain], 0)
    test_c = np.mean([r["test"] for r in plain], 0)
    final_plain = float(test_c[-1])
    rows = [{"method": "none", "setting": "", "test_loss": final_plain,
             "test_acc": float(np.mean([r["test_acc"] for r in plain])), "val_loss": float(val_c[-1]),
             "train_loss": float(train_c[-1]), "epoch": epochs}]
    e_val = int(np.argmin(val_c)) + 1
    rows.append({"method": "early stopping", "setting": f"epoch {e_val}", "test_loss": float(test_c[e_val - 1]),
                 "test_acc": math.nan, "val_loss": float(val_c[e_val - 1]), "train_loss": float(train_c[e_val - 1]),
                 "epoch": e_val})
    curves = {"none": test_c}
    for method, grid in (("dropout", p["dropout_rates"]), ("weight decay", p["weight_decays"])):
        tried = []
        for value in grid:
            runs = [run(value, 0.0, s) if method == "dropout" else run(0.0, value, s) for s in seeds]
            tried.append((float(np.mean([r["val"][-1] for r in runs])), value, runs))
        val_loss, value, runs = min(tried, key=lambda t: t[0])
        curves[method] = np.mean([r["test"] for r in runs], 0)
        rows.append({"method": method, "setting": f"{'rate' if method == 'dropout' else 'λ'} {value:g} (of "
                     + ", ".join(f"{v:g}" for v in grid) + ")", "test_loss": float(curves[method][-1]),
                     "test_acc": float(np.mean([r["test_acc"] for r in runs])), "val_loss": val_loss,
                     "train_loss": float(np.mean([r["train"][-1] for r in runs])), "epoch": epochs})
    snap = [run(0.0, 0.0, s, cyclic=True) for s in seeds]
    curves["snapshot (last member)"] = np.mean([r["test"] for r in snap], 0)
    rows.append({"method": "snapshot ensemble", "setting": f"{p['snapshots']} cycles of {cycle} epochs",
                 "test_loss": float(np.mean([r["ensemble"][0] for r in snap])),
                 "test_acc": float(np.mean([r["ensemble"][1] for r in snap])), "val_loss": math.nan,
                 "train_loss": float(np.mean([r["train"][-1] for r in snap])), "epoch": epochs})
    table = pd.DataFrame(rows)
    t = table.set_index("method")
    i_min = int(np.argmin(test_c))
    rise_level = test_c[i_min] + 0.1 * (final_plain - test_c[i_min])
    after_min = np.nonzero(test_c[i_min:] >= rise_level)[0]
    e_rise = i_min + 1 + int(after_min[0]) if after_min.size else epochs + 1
    checks = [
        Check(
            "the unregularized network overfits: training loss near zero, final test loss ≥ 1.3× its minimum",
            bool(train_c[-1] <= 0.05 and final_plain >= 1.3 * test_c[i_min]),
            f"training loss {train_c[-1]:.4f}; test loss minimum {test_c[i_min]:.3f} at epoch {i_min + 1}, final "
            f"{final_plain:.3f} at epoch {epochs}",
        ),
        Check(
            "early stopping on the validation split picks an epoch before the test loss rises",
            bool(e_val < e_rise and t.loc["early stopping", "test_loss"] < final_plain),
            f"validation minimum at epoch {e_val}; the test loss has its minimum at epoch {i_min + 1} and has risen "
            f"10% of the way to its final value by epoch {e_rise}; test loss at the chosen epoch "
            f"{t.loc['early stopping', 'test_loss']:.3f}",
        ),
    ]
    for method in ("dropout", "weight decay", "early stopping", "snapshot ensemble"):
        checks.append(Check(
            f"{method} ends with a lower test loss than the unregularized network",
            bool(t.loc[method, "test_loss"] < final_plain),
            f"{t.loc[method, 'test_loss']:.3f} ({t.loc[method, 'setting']}) vs {final_plain:.3f}",
        ))
    notes = [
        f"digits: {p['n_train']} training and {p['n_val']} validation images drawn at random, each label replaced by "
        f"a uniformly random class with probability {p['label_noise']}; the {ds.num_test} test images keep their "
        "true labels.",
        f"MLP 64-{p['width']}-{p['width']}-10 (PyTorch default initialization), Adam lr={p['lr']} (AdamW for "
        f"weight decay), batch {p['batch_size']}, {epochs} epochs; means over {p['seeds']} seed(s). Dropout rate "
        "and weight-decay strength are the ones with the lowest final validation loss.",
        f"Snapshot ensemble: the learning rate follows a cosine from {p['lr']} to 0 within each of "
        f"{p['snapshots']} cycles of {cycle} epochs; the ensemble averages the softmax outputs of the "
        "end-of-cycle snapshots.",
        "Test accuracy (reported, not part of the claim): " + ", ".join(
            f"{m} {a:.3f}" for m, a in zip(table.method, table.test_acc) if np.isfinite(a))
        + ". Cross-entropy punishes confident mistakes, so the memorizing network's test loss grows faster than "
        "its test error.",
    ]

    def draw(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        fig.set_size_inches(11, 4.2)
        ep = np.arange(1, epochs + 1)
        ax1.semilogy(ep, train_c, color="0.4", ls="--", label="training (noisy labels)")
        ax1.semilogy(ep, val_c, color="C1", label="validation (noisy labels)")
        ax1.semilogy(ep, test_c, color="C0", label="test (true labels)")
        ax1.axvline(e_val, color="C1", ls=":", label=f"early stop (epoch {e_val})")
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("cross-entropy")
        ax1.set_title("unregularized network")
        ax1.legend(fontsize=8)
        ax1.grid(alpha=0.3, which="both")
        for i, (name, c) in enumerate(curves.items()):
            ax2.plot(ep, c, color=f"C{i}", label=name)
        ax2.axhline(t.loc["snapshot ensemble", "test_loss"], color="k", ls=":", label="snapshot ensemble")
        ax2.plot([e_val], [t.loc["early stopping", "test_loss"]], "k*", ms=10, label="early stopping")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("test loss")
        ax2.set_title("remedies")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)

    return LessonOutput(
        table=table, checks=checks, figures={"losses": draw}, notes=notes,
        numbers={"test_loss_none": final_plain, "test_loss_min_none": float(test_c[i_min]),
                 "early_stop_epoch": float(e_val), **{f"test_loss_{m.replace(' ', '_')}": float(t.loc[m, "test_loss"])
                                                      for m in ("dropout", "weight decay", "snapshot ensemble")}},
    )

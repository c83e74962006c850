"""Lesson ``error-decomposition``: approximation, estimation and optimization error.

Bottou & Bousquet (2008), "The tradeoffs of large scale learning": the excess risk of the
predictor an algorithm returns splits into

    E = E_app + E_est + E_opt
      = [R(f*_F) − R*] + [R(f_n) − R(f*_F)] + [R(f̃_n) − R(f_n)],

with ``f*_F`` the best predictor of the class F, ``f_n`` the empirical risk minimizer on n
samples and ``f̃_n`` what a limited optimization budget returns.

Setting (teacher–student regression with a known target): a fixed random two-layer ReLU
*teacher* ``f*`` (unit variance) and Gaussian label noise of standard deviation σ, so the
Bayes risk is ``R* = σ²`` and the excess risk of ``f`` is ``E_x (f(x) − f*(x))²``. The
students are two-layer ReLU networks whose hidden layer is frozen at a random
initialization (random features; Rahimi & Recht 2008): width ``m`` uses the first ``m``
units of one fixed pool, so the classes are nested, and training the output layer is a
least-squares problem whose every quantity below is computed exactly:

* *approximation error* ``E_app(m) = min_w E (φ_m(x)·w − f*(x))²`` — the best student of
  width m, by least squares on a large "population" sample of ``n_population`` inputs on
  which all risks are evaluated;
* *estimation error* ``E_est(m, n) = R(ŵ_n) − R(w*_m)`` with ``ŵ_n`` the (minimum-norm)
  least-squares fit to n noisy samples, the limit of gradient descent from zero; it is
  ``≥ 0`` because ``w*_m`` minimizes the population risk;
* *optimization error* ``E_opt(m, n, T) = R(w_T) − R(ŵ_n)`` with ``w_T`` the exact iterate
  after T full-batch gradient-descent steps from zero at step ``1/L``
  (``w_T = Σ_i (1 − (1 − λ_i/L)^T)/λ_i · u_i u_iᵀ Φᵀy/n`` in the eigenbasis of ``ΦᵀΦ/n``).

The three sum to the excess risk ``R(w_T) − R*`` exactly. Estimation errors are averaged
over ``repeats`` independent training samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from trilemma._stats import kendall_tau
from trilemma.errors import InvalidArgumentError
from trilemma.lessons._base import Check, LessonOutput, register_lesson

__all__ = ["decompose"]

_FLOOR = 1e-4  # lower end of the log-scale plot


class _Problem:
    """Teacher, random-feature pool and the population sample's sufficient statistics."""

    def __init__(self, p: dict[str, Any]) -> None:
        rng = np.random.default_rng(p["seed"])
        d, h, pool = p["in_features"], p["teacher_width"], max(p["widths"] + (p["base_width"],))
        self.rng = rng
        self.noise = p["noise"]
        self.t_in = rng.standard_normal((d, h)) / np.sqrt(d)
        self.t_bias = 0.5 * rng.standard_normal(h)
        self.t_out = rng.standard_normal(h)
        self.f_in = rng.standard_normal((d, pool)) / np.sqrt(d)
        self.f_bias = 0.5 * rng.standard_normal(pool)
        x = self.inputs(p["n_population"])
        raw = self._teacher_raw(x)
        self.t_shift, self.t_scale = raw.mean(), raw.std()
        target = self.teacher(x)
        phi = self.features(x, pool)
        n = x.shape[0]
        self.gram = phi.T @ phi / n  # E φφᵀ
        self.cross = phi.T @ target / n  # E φ f*
        self.power = float(target @ target / n)  # E f*²
        self._best: dict[int, np.ndarray] = {}

    def inputs(self, n: int) -> np.ndarray:
        return self.rng.standard_normal((n, self.t_in.shape[0]))

    def _teacher_raw(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ self.t_in + self.t_bias, 0.0) @ self.t_out

    def teacher(self, x: np.ndarray) -> np.ndarray:
        return (self._teacher_raw(x) - self.t_shift) / self.t_scale

    def features(self, x: np.ndarray, m: int) -> np.ndarray:
        return np.maximum(x @ self.f_in[:, :m] + self.f_bias[:m], 0.0)

    def risk(self, w: np.ndarray) -> float:
        """Population excess risk ``E (φ_m·w − f*)²`` of output weights ``w`` (width ``len(w)``)."""
        m = w.shape[0]
        return float(w @ self.gram[:m, :m] @ w - 2 * w @ self.cross[:m] + self.power)

    def best(self, m: int) -> np.ndarray:
        """Output weights of the best student of width ``m`` (least squares on the population)."""
        if m not in self._best:
            self._best[m] = np.linalg.lstsq(self.gram[:m, :m], self.cross[:m], rcond=None)[0]
        return self._best[m]

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        x = self.inputs(n)
        return x, self.teacher(x) + self.noise * self.rng.standard_normal(n)


def _gd_and_erm(phi: np.ndarray, y: np.ndarray, steps: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Minimum-norm least squares and the exact GD iterates (step 1/L from zero) for ``steps``."""
    n = phi.shape[0]
    lam, vec = np.linalg.eigh(phi.T @ phi / n)
    b = vec.T @ (phi.T @ y / n)
    top = lam[-1]
    keep = lam > top * 1e-12
    erm = vec[:, keep] @ (b[keep] / lam[keep])
    iterates = []
    for t in steps:
        filt = np.zeros_like(lam)
        filt[keep] = (1.0 - (1.0 - lam[keep] / top) ** t) / lam[keep]
        iterates.append(vec @ (filt * b))
    return erm, iterates


def decompose(p: dict[str, Any]) -> pd.DataFrame:
    """The three sweeps (width, sample size, budget) as one table (see module docstring).

    Returns:
        Columns ``sweep, width, n, steps, approximation, estimation, optimization, excess``
        (means over ``repeats``), plus ``estimation_std``.
    """
    prob = _Problem(p)
    rows = []
    budget_steps = list(p["budgets"])

    def point(m: int, n: int, steps: list[int]) -> list[dict[str, float]]:
        w_star = prob.best(m)
        approx = prob.risk(w_star)
        est, opt = [], []
        for _ in range(p["repeats"]):
            x, y = prob.sample(n)
            erm, its = _gd_and_erm(prob.features(x, m), y, steps)
            r_erm = prob.risk(erm)
            est.append(r_erm - approx)
            opt.append([prob.risk(w) - r_erm for w in its])
        est_a, opt_a = np.array(est), np.array(opt)
        return [
            {"width": m, "n": n, "steps": t, "approximation": approx, "estimation": float(est_a.mean()),
             "estimation_std": float(est_a.std()), "optimization": float(opt_a[:, j].mean()),
             "excess": approx + float(est_a.mean()) + float(opt_a[:, j].mean())}
            for j, t in enumerate(steps)
        ]

    final = [p["base_steps"]]
    for m in p["widths"]:
        rows += [{"sweep": "width", **r} for r in point(m, p["base_n"], final)]
    for n in p["sizes"]:
        rows += [{"sweep": "samples", **r} for r in point(p["base_width"], n, final)]
    rows += [{"sweep": "budget", **r} for r in point(p["base_width"], p["base_n"], budget_steps)]
    return pd.DataFrame(rows)


def _tau(a: pd.Series, b: pd.Series) -> float:
    return kendall_tau(a.to_numpy(), b.to_numpy())


@register_lesson(
    "error-decomposition",
    title="Approximation, estimation and optimization error",
    claim=(
        "The excess risk splits into approximation error (falls as the model class grows), estimation error "
        "(falls with more samples, grows with model size at a fixed sample size, so the best model size is "
        "intermediate) and optimization error (falls with the training budget)."
    ),
    references=(
        "Bottou & Bousquet (2008), The tradeoffs of large scale learning, NeurIPS.",
        "Rahimi & Recht (2008), Weighted sums of random kitchen sinks, NeurIPS.",
    ),
    defaults={
        "in_features": 8,
        "teacher_width": 16,
        "noise": 0.5,
        "widths": (2, 4, 8, 16, 32, 64, 128, 256),
        "sizes": (128, 256, 512, 1024, 2048, 4096, 8192),
        "budgets": (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000),
        "base_width": 64,
        "base_n": 2048,
        "base_steps": 100000,
        "n_population": 40000,
        "repeats": 10,
        "seed": 0,
    },
    quick={
        "widths": (2, 8, 32, 128, 256),
        "sizes": (128, 512, 2048),
        "budgets": (1, 10, 100, 1000, 10000),
        "base_width": 32,
        "base_n": 512,
        "n_population": 8000,
        "repeats": 3,
    },
)
def _compute(p: dict[str, Any]) -> LessonOutput:
    for key in ("widths", "sizes", "budgets"):
        if any(v < 1 for v in p[key]) or list(p[key]) != sorted(set(p[key])):
            raise InvalidArgumentError(f"{key} must be strictly increasing positive ints, got {p[key]!r}")
    if p["noise"] < 0 or p["n_population"] < 10 * max(p["widths"] + (p["base_width"],)):
        raise InvalidArgumentError("need noise ≥ 0 and n_population ≥ 10 × the largest width")
    table = decompose(p)
    w = table[table.sweep == "width"]
    s = table[table.sweep == "samples"]
    b = table[table.sweep == "budget"]
    approx = w.approximation.to_numpy()
    opt = b.optimization.to_numpy()
    excess = w.excess.to_numpy()
    scale = approx[0]
    checks = [
        Check(
            "approximation error never rises with width (nested classes) and falls clearly",
            bool(np.all(np.diff(approx) <= 1e-9 * scale) and approx[-1] < 0.5 * approx[0]),
            f"{approx[0]:.4f} at width {int(w.width.iloc[0])} → {approx[-1]:.4f} at width {int(w.width.iloc[-1])}",
        ),
        Check(
            "estimation error falls with the sample size",
            bool(_tau(s.n, s.estimation) <= -0.8 and s.estimation.iloc[-1] < 0.25 * s.estimation.iloc[0]),
            f"Kendall τ(n, E_est) = {_tau(s.n, s.estimation):.2f}; {s.estimation.iloc[0]:.4f} at n={int(s.n.iloc[0])} "
            f"→ {s.estimation.iloc[-1]:.4f} at n={int(s.n.iloc[-1])}",
        ),
        Check(
            "estimation error grows with the width at a fixed sample size",
            bool(_tau(w.width, w.estimation) >= 0.8),
            f"Kendall τ(width, E_est) = {_tau(w.width, w.estimation):.2f} at n={p['base_n']}; "
            f"{w.estimation.iloc[0]:.4f} → {w.estimation.iloc[-1]:.4f}",
        ),
        Check(
            "optimization error falls with the budget (its positive part never rises) to ≈ 0",
            bool(np.all(np.diff(np.maximum(opt, 0.0)) <= 1e-12) and opt[0] > 0 and abs(opt[-1]) < 0.01 * opt[0]),
            f"E_opt = {opt[0]:.4f} at T={int(b.steps.iloc[0])} → {opt[-1]:.2e} at T={int(b.steps.iloc[-1])}; "
            f"smallest {opt.min():.2e} (negative: early stopping beats the ERM)",
        ),
        Check(
            "at a fixed sample size the total excess risk is smallest at an intermediate width (the trade-off)",
            bool(0 < int(np.argmin(excess)) < len(excess) - 1),
            f"excess risk at n={p['base_n']} by width: "
            + ", ".join(f"{int(m)}: {e:.4f}" for m, e in zip(w.width, excess)),
        ),
    ]
    best = w.loc[w.excess.idxmin()]
    numbers = {
        "bayes_risk": p["noise"] ** 2,
        "best_width_at_base_n": float(best.width),
        "best_excess_at_base_n": float(best.excess),
    }
    notes = [
        "Students: two-layer ReLU networks with a frozen random hidden layer (random features), so the best "
        "student, the empirical risk minimizer and the gradient-descent iterates are computed exactly.",
        f"Risks are evaluated on a population sample of {p['n_population']} inputs (the best student is the "
        "least-squares fit on it), so E_est ≥ 0 by construction; E_opt can be negative where early stopping "
        "regularizes.",
        f"Width sweep at n={p['base_n']} and T={p['base_steps']} steps; sample sweep at width {p['base_width']}; "
        f"budget sweep at width {p['base_width']} and n={p['base_n']}. The Bayes risk σ² = {p['noise'] ** 2:.3g} "
        "is not part of the excess risk.",
    ]

    def panel(ax: Any, frame: pd.DataFrame, xcol: str, label: str) -> None:
        for col, style in (("approximation", "o-"), ("estimation", "s-"), ("optimization", "^-"), ("excess", "k--")):
            vals = frame[col].to_numpy()
            ax.plot(frame[xcol], np.clip(vals, _FLOOR, None), style, label=col, ms=4)
        ax.set_xscale("log", base=2 if xcol != "steps" else 10)
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)

    def draw(fig: Any) -> None:
        fig.set_size_inches(12, 4)
        axes = fig.subplots(1, 3, sharey=True)
        panel(axes[0], w, "width", "student width m")
        panel(axes[1], s, "n", "training samples n")
        panel(axes[2], b, "steps", "gradient-descent steps T")
        axes[0].set_ylabel(f"error (values below {_FLOOR:g} drawn at {_FLOOR:g})")
        axes[0].set_ylim(_FLOOR / 2, None)
        axes[0].legend(fontsize=8)
        fig.suptitle("Excess risk = approximation + estimation + optimization (Bottou & Bousquet 2008)")

    return LessonOutput(table=table, checks=checks, figures={"errors": draw}, notes=notes, numbers=numbers)

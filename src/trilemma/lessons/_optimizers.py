"""Lesson ``optimizers``: conditioning, momentum and adaptive methods.

On a quadratic ``f(x) = ½ xᵀAx`` with eigenvalues in ``[μ, L]`` and condition number
``κ = L/μ``, gradient descent with its best constant step ``2/(L + μ)`` contracts the error by
``(κ − 1)/(κ + 1)`` per step, so reaching a fixed accuracy takes ``∝ κ`` iterations; the heavy
ball (Polyak 1964) with step ``4/(√L + √μ)²`` and momentum ``((√κ − 1)/(√κ + 1))²``, and
Nesterov's accelerated gradient (step ``1/L``, momentum ``(√κ − 1)/(√κ + 1)``), contract by
about ``(√κ − 1)/(√κ + 1)`` and need ``∝ √κ`` (Nesterov 2004, *Introductory Lectures on
Convex Optimization*, §2.1–2.2; Polyak 1964). Gradient descent, heavy ball and Nesterov are
linear and rotation-equivariant, so they are run exactly in the eigenbasis of A.

AdaGrad, RMSProp and Adam rescale every coordinate by a running estimate of its gradient's
size: a *diagonal* preconditioner. They are run (with their best learning rate from a grid)
on the same spectra in two orientations: axis-aligned (A diagonal, where a diagonal
preconditioner can undo the ill-conditioning) and randomly rotated (A = Q diag(λ) Qᵀ, where
it cannot). Finally the same optimizers train a small MLP on digits.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from trilemma.data import load_dataset
from trilemma.errors import InvalidArgumentError
from trilemma.lessons._base import Check, LessonOutput, register_lesson
from trilemma.lessons._fit import fit
from trilemma.models import build_model

__all__ = ["quadratic_spectrum", "iterations_linear", "iterations_adaptive"]

LINEAR_METHODS = ("gd", "heavy_ball", "nesterov")
ADAPTIVE_METHODS = ("adagrad", "rmsprop", "adam")
MLP_OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adagrad", "adam")


def quadratic_spectrum(kappa: float, dim: int) -> np.ndarray:
    """Eigenvalues ``1/κ … 1`` (geometrically spaced, ``dim`` of them; L = 1, μ = 1/κ)."""
    if kappa < 1 or dim < 2:
        raise InvalidArgumentError(f"need kappa ≥ 1 and dim ≥ 2, got {kappa}, {dim}")
    return np.geomspace(1.0 / kappa, 1.0, dim)


def iterations_linear(method: str, eigenvalues: np.ndarray, x0: np.ndarray, tol: float, max_iter: int) -> int | None:
    """Iterations until ``f(x_t) ≤ tol·f(x_0)`` for ``f = ½ Σ λ_i x_i²`` (eigenbasis), ``None`` if not reached.

    Args:
        method: ``"gd"`` (step 2/(L+μ)), ``"heavy_ball"`` (Polyak's optimal step and
            momentum) or ``"nesterov"`` (step 1/L, momentum (√κ−1)/(√κ+1)).
        eigenvalues: ``(d,)`` positive.
        x0: ``(d,)`` start in the eigenbasis.
        tol: Relative accuracy in (0, 1).
        max_iter: Iteration cap.
    """
    lam = np.asarray(eigenvalues, dtype=float)
    big, small = float(lam.max()), float(lam.min())
    root = math.sqrt(big / small)
    f0 = 0.5 * float(np.sum(lam * x0**2))
    x, prev = x0.astype(float).copy(), x0.astype(float).copy()
    if method == "gd":
        step, beta = 2.0 / (big + small), 0.0
    elif method == "heavy_ball":
        step, beta = 4.0 / (math.sqrt(big) + math.sqrt(small)) ** 2, ((root - 1) / (root + 1)) ** 2
    elif method == "nesterov":
        step, beta = 1.0 / big, (root - 1) / (root + 1)
    else:
        raise InvalidArgumentError(f"method must be one of {LINEAR_METHODS}, got {method!r}")
    for t in range(1, max_iter + 1):
        if method == "nesterov":
            look = x + beta * (x - prev)
            prev, x = x, look - step * lam * look
        else:
            prev, x = x, x - step * lam * x + beta * (x - prev)
        if 0.5 * float(np.sum(lam * x**2)) <= tol * f0:
            return t
    return None


def iterations_adaptive(method: str, matrices: torch.Tensor, x0: torch.Tensor, lrs: torch.Tensor, tol: float,
                        max_iter: int) -> np.ndarray:
    """Iterations after which an adaptive method stays at ``f ≤ tol·f(x_0)``, on several problems and rates at once.

    With a constant learning rate these methods may oscillate around the minimum and dip
    below the target by chance; the count is the first iteration from which ``f`` stays
    below the target until ``max_iter`` (every run goes to ``max_iter``).

    Args:
        method: ``"adagrad"``, ``"rmsprop"`` (decay 0.99) or ``"adam"`` (β = 0.9, 0.999, bias
            corrected); ε = 1e-8 (PyTorch's defaults).
        matrices: ``(K, d, d)`` symmetric positive-definite, float64.
        x0: ``(K, d)`` starts.
        lrs: ``(R,)`` learning rates.
        tol: Relative accuracy.
        max_iter: Iteration cap.

    Returns:
        ``(K, R)`` iterations (``nan`` where the target was not reached).
    """
    if method not in ADAPTIVE_METHODS:
        raise InvalidArgumentError(f"method must be one of {ADAPTIVE_METHODS}, got {method!r}")
    k, r = matrices.shape[0], lrs.shape[0]
    x = x0[:, None, :].expand(k, r, -1).clone()

    def value(z: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.einsum("kri,kij,krj->kr", z, matrices, z)

    f0 = value(x)
    lr = lrs[None, :, None]
    m1, m2 = torch.zeros_like(x), torch.zeros_like(x)
    last_above = torch.zeros((k, r), dtype=torch.float64)
    for t in range(1, max_iter + 1):
        g = torch.einsum("kij,krj->kri", matrices, x)
        if method == "adagrad":
            m2 += g * g
            x = x - lr * g / (m2.sqrt() + 1e-8)
        elif method == "rmsprop":
            m2 = 0.99 * m2 + 0.01 * g * g
            x = x - lr * g / (m2.sqrt() + 1e-8)
        else:
            m1 = 0.9 * m1 + 0.1 * g
            m2 = 0.999 * m2 + 0.001 * g * g
            x = x - lr * (m1 / (1 - 0.9**t)) / ((m2 / (1 - 0.999**t)).sqrt() + 1e-8)
        above = ~(value(x) <= tol * f0)  # NaN counts as above
        last_above[above] = float(t)
    done = last_above + 1
    done[last_above >= max_iter] = math.nan
    return done.numpy()


def _slope(kappas: np.ndarray, iters: np.ndarray) -> float:
    ok = np.isfinite(iters)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(kappas[ok]), np.log(iters[ok]), 1)[0])


@register_lesson(
    "optimizers",
    title="Conditioning and optimizers: GD, momentum, AdaGrad, RMSProp, Adam",
    claim=(
        "On ill-conditioned quadratics gradient descent needs iterations proportional to the condition number κ "
        "while heavy-ball momentum needs only ∝ √κ, so momentum wins by a factor that grows like √κ."
    ),
    references=(
        "Polyak (1964), Some methods of speeding up the convergence of iteration methods, USSR Comput. Math.",
        "Nesterov (2004), Introductory Lectures on Convex Optimization, §2.1–2.2.",
        "Duchi, Hazan & Singer (2011), Adaptive subgradient methods (AdaGrad), JMLR.",
        "Tieleman & Hinton (2012), Lecture 6.5 — RMSProp, COURSERA: Neural Networks for Machine Learning.",
        "Kingma & Ba (2015), Adam: a method for stochastic optimization, ICLR.",
        "Goh (2017), Why momentum really works, Distill.",
    ),
    defaults={
        "kappas": (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0),
        "dim": 50,
        "tol": 1e-6,
        "max_iter": 200000,
        "adaptive_lrs": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
        "adaptive_max_iter": 10000,
        "mlp_width": 128,
        "mlp_epochs": 15,
        "mlp_batch_size": 64,
        "mlp_target_loss": 0.05,
        "mlp_sgd_lrs": (0.01, 0.03, 0.1, 0.3),
        "mlp_adaptive_lrs": (0.0003, 0.001, 0.003, 0.01),
        "seed": 0,
    },
    quick={"kappas": (10.0, 100.0, 1000.0, 10000.0), "adaptive_lrs": (1e-3, 1e-2, 1e-1), "adaptive_max_iter": 2000,
           "mlp_epochs": 6, "mlp_sgd_lrs": (0.1,), "mlp_adaptive_lrs": (0.003,), "mlp_target_loss": 0.2},
)
def _compute(p: dict[str, Any]) -> LessonOutput:
    kappas = np.asarray(p["kappas"], dtype=float)
    if len(kappas) < 3 or kappas.min() < 1 or list(kappas) != sorted(set(kappas)):
        raise InvalidArgumentError(f"kappas must be at least three strictly increasing values ≥ 1, got {p['kappas']!r}")
    if not 0 < p["tol"] < 1 or p["dim"] < 2 or p["max_iter"] < 1:
        raise InvalidArgumentError("need tol in (0, 1), dim ≥ 2 and max_iter ≥ 1")
    rng = np.random.default_rng(p["seed"])
    x0 = rng.standard_normal(p["dim"])
    q, _ = np.linalg.qr(rng.standard_normal((p["dim"], p["dim"])))
    rows = []
    for kappa in kappas:
        lam = quadratic_spectrum(kappa, p["dim"])
        for method in LINEAR_METHODS:
            it = iterations_linear(method, lam, x0, p["tol"], p["max_iter"])
            rows.append({"problem": "quadratic", "orientation": "any", "method": method, "kappa": kappa,
                         "iterations": float(it) if it is not None else math.nan, "best_lr": math.nan})
    lrs = torch.tensor(p["adaptive_lrs"], dtype=torch.float64)
    qt = torch.from_numpy(q)
    for orientation in ("axis-aligned", "rotated"):
        mats, starts = [], []
        for kappa in kappas:
            spectrum = torch.from_numpy(quadratic_spectrum(kappa, p["dim"]))
            basis = qt if orientation == "rotated" else torch.eye(p["dim"], dtype=torch.float64)
            mats.append(basis @ torch.diag(spectrum) @ basis.T)
            starts.append(basis @ torch.from_numpy(x0))  # the same start in the eigenbasis
        for method in ADAPTIVE_METHODS:
            its = iterations_adaptive(method, torch.stack(mats), torch.stack(starts), lrs, p["tol"],
                                      p["adaptive_max_iter"])
            for kappa, row in zip(kappas, its):
                best = int(np.nanargmin(row)) if np.isfinite(row).any() else -1
                rows.append({"problem": "quadratic", "orientation": orientation, "method": method, "kappa": kappa,
                             "iterations": float(row[best]) if best >= 0 else math.nan,
                             "best_lr": float(lrs[best]) if best >= 0 else math.nan})
    quad = pd.DataFrame(rows)
    mlp_rows, mlp_curves = [], []
    ds = load_dataset("digits", normalize="standardize", seed=p["seed"])
    for opt in MLP_OPTIMIZERS:
        grid = p["mlp_sgd_lrs"] if opt in ("sgd", "momentum") else p["mlp_adaptive_lrs"]
        best_row: dict[str, Any] | None = None
        for lr in grid:
            model = build_model("2", ds.in_features, ds.num_classes, width=p["mlp_width"], seed=p["seed"])
            hist = fit(model, ds.x_train, ds.y_train, optimizer=opt, lr=lr, epochs=p["mlp_epochs"],
                       batch_size=p["mlp_batch_size"], seed=p["seed"])
            hit = hist.first_epoch(hist.train_loss, p["mlp_target_loss"], below=True) if not hist.diverged else None
            final = hist.train_loss[-1] if hist.train_loss and not hist.diverged else math.inf
            key = (hit if hit is not None else math.inf, final)
            if best_row is None or key < (best_row["_hit"], best_row["final_train_loss"]):
                best_row = {"problem": "mlp", "method": opt, "best_lr": lr, "_hit": key[0],
                            "epochs_to_target": float(hit) if hit is not None else math.nan,
                            "final_train_loss": final}
                best_curve = list(hist.train_loss)
        assert best_row is not None
        best_row.pop("_hit")
        mlp_rows.append(best_row)
        mlp_curves.append((opt, best_row["best_lr"], best_curve))
    mlp = pd.DataFrame(mlp_rows)
    table = pd.concat([quad, mlp], ignore_index=True)
    gd = quad[quad.method == "gd"].set_index("kappa").iterations
    hb = quad[quad.method == "heavy_ball"].set_index("kappa").iterations
    nag = quad[quad.method == "nesterov"].set_index("kappa").iterations
    s_gd, s_hb, s_nag = _slope(kappas, gd.to_numpy()), _slope(kappas, hb.to_numpy()), _slope(kappas, nag.to_numpy())
    kmax = float(kappas[-1])
    ratio = float(gd.loc[kmax] / hb.loc[kmax])
    checks = [
        Check(
            "gradient descent needs iterations ∝ κ (log-log slope in [0.8, 1.2])",
            bool(np.isfinite(gd.to_numpy()).all() and 0.8 <= s_gd <= 1.2),
            f"slope {s_gd:.2f}; iterations " + ", ".join(f"κ={k:g}: {v:.0f}" for k, v in gd.items()),
        ),
        Check(
            "heavy-ball momentum needs iterations ∝ √κ (log-log slope in [0.35, 0.65])",
            bool(np.isfinite(hb.to_numpy()).all() and 0.35 <= s_hb <= 0.65),
            f"slope {s_hb:.2f}; iterations " + ", ".join(f"κ={k:g}: {v:.0f}" for k, v in hb.items()),
        ),
        Check(
            "momentum needs fewer iterations than gradient descent at every κ ≥ 100, by at least √κ/4 at the largest",
            bool(all(hb.loc[k] < gd.loc[k] for k in kappas if k >= 100) and ratio >= math.sqrt(kmax) / 4),
            f"GD/heavy-ball iteration ratio at κ={kmax:g}: {ratio:.1f} (√κ/4 = {math.sqrt(kmax) / 4:.1f}); by κ: "
            + ", ".join(f"{k:g}: {gd.loc[k] / hb.loc[k]:.1f}" for k in kappas),
        ),
    ]
    adaptive = quad[quad.method.isin(ADAPTIVE_METHODS)]
    summary = []
    for orientation in ("axis-aligned", "rotated"):
        for method in ADAPTIVE_METHODS:
            a = adaptive[(adaptive.orientation == orientation) & (adaptive.method == method)]
            reached = a[np.isfinite(a.iterations)]
            summary.append(f"{method} {orientation}: reached the target up to κ = "
                           f"{reached.kappa.max() if len(reached) else 'none'} within {p['adaptive_max_iter']} "
                           f"iterations (slope {_slope(a.kappa.to_numpy(), a.iterations.to_numpy()):.2f})")
    notes = [
        f"Quadratics: d = {p['dim']}, eigenvalues geometrically spaced in [1/κ, 1], the same random start for every "
        f"κ; target f(x_t) ≤ {p['tol']:g}·f(x_0). Nesterov's slope {s_nag:.2f}.",
        "Adaptive methods (best learning rate of " + ", ".join(f"{v:g}" for v in p["adaptive_lrs"]) + " per κ; "
        "reported, not part of the claim): " + "; ".join(summary) + ". A diagonal preconditioner removes "
        "axis-aligned ill-conditioning but not a rotated one; with a constant learning rate Adam and RMSProp "
        "also hover at a distance ∝ lr from the minimum instead of converging linearly.",
        f"MLP (build_model('2', width={p['mlp_width']}) on digits, batch {p['mlp_batch_size']}, "
        f"{p['mlp_epochs']} epochs, each optimizer at its best learning rate from its grid; reported, not part "
        "of the claim): epochs to training loss "
        f"{p['mlp_target_loss']}: " + ", ".join(
            f"{r.method} {r.epochs_to_target:.0f} (lr {r.best_lr:g})" if np.isfinite(r.epochs_to_target)
            else f"{r.method} not reached (lr {r.best_lr:g})" for r in mlp.itertuples()) + ".",
    ]

    def draw_quadratic(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2, sharey=True)
        fig.set_size_inches(11, 4.2)
        for i, method in enumerate(LINEAR_METHODS):
            it = quad[quad.method == method]
            ax1.loglog(it.kappa, it.iterations, "o-", color=f"C{i}", label=method)
        ln = math.log(1 / p["tol"])
        ax1.loglog(kappas, kappas / 4 * ln, "k:", lw=1, label="κ/4·ln(1/tol)")
        ax1.loglog(kappas, np.sqrt(kappas) / 2 * ln, "k--", lw=1, label="√κ/2·ln(1/tol)")
        ax1.set_xlabel("condition number κ")
        ax1.set_ylabel(f"iterations to f ≤ {p['tol']:g}·f₀")
        ax1.set_title("GD vs momentum (exact)")
        ax1.legend(fontsize=8)
        ax1.grid(alpha=0.3, which="both")
        for i, method in enumerate(ADAPTIVE_METHODS):
            for orientation, style in (("axis-aligned", "o-"), ("rotated", "s--")):
                a = adaptive[(adaptive.method == method) & (adaptive.orientation == orientation)]
                ax2.loglog(a.kappa, a.iterations, style, color=f"C{i + 3}", label=f"{method}, {orientation}")
        ax2.set_xlabel("condition number κ")
        ax2.set_title(f"adaptive methods (best lr; cap {p['adaptive_max_iter']})")
        ax2.legend(fontsize=7)
        ax2.grid(alpha=0.3, which="both")

    def draw_mlp(fig: Any) -> None:
        ax = fig.subplots()
        for i, (opt, lr, curve) in enumerate(mlp_curves):
            ax.semilogy(range(1, len(curve) + 1), curve, "o-", ms=3, color=f"C{i}", label=f"{opt} (lr {lr:g})")
        ax.axhline(p["mlp_target_loss"], color="0.5", ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (full pass)")
        ax.set_title("2-hidden-layer MLP on digits, best learning rate of each optimizer")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")

    return LessonOutput(
        table=table, checks=checks, figures={"quadratic": draw_quadratic, "mlp": draw_mlp}, notes=notes,
        numbers={"slope_gd": s_gd, "slope_heavy_ball": s_hb, "slope_nesterov": s_nag, "gd_over_momentum": ratio},
    )

"""Lesson ``universal-approximation``: one hidden ReLU layer built from "rectangles".

A ramp ``s_a(x) = (ReLU(x − a) − ReLU(x − a − δ)) / δ`` rises from 0 to 1 on ``[a, a + δ]``;
a *rectangle* ``s_a − s_b`` (four ReLU units) is 1 on ``[a + δ, b]`` and 0 outside
``[a, b + δ]``. Summing K rectangles on the cells ``[k/K, (k+1)/K]`` with heights
``f(cell midpoint)`` gives a one-hidden-layer ReLU network with ``4K`` units whose sup error
on [0, 1] is at most ``L·(1/(2K) + δ)`` for an L-Lipschitz f: the constructive proof of
universal approximation in one dimension (Cybenko 1989; Hornik, Stinchcombe & White 1989;
the "rectangle" argument of Nielsen's *Neural networks and deep learning*, ch. 4).
The lesson compares the constructed networks with networks of the same width trained by
gradient descent on the same function.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from trilemma._checks import is_int
from trilemma.errors import InvalidArgumentError
from trilemma.lessons._base import Check, LessonOutput, register_lesson

__all__ = ["rectangle_network", "target_function", "TARGET_LIPSCHITZ"]

#: Lipschitz bound of :func:`target_function`: ``|f'| ≤ 2π + 0.5·6π = 5π``.
TARGET_LIPSCHITZ = 5 * math.pi


def target_function(x: torch.Tensor) -> torch.Tensor:
    """The approximated function ``f(x) = sin(2πx) + 0.5·sin(6πx)`` on [0, 1]."""
    return torch.sin(2 * math.pi * x) + 0.5 * torch.sin(6 * math.pi * x)


def rectangle_network(num_rectangles: int, ramp: float = 0.01, *, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """The constructed network ``Linear(1, 4K) → ReLU → Linear(4K, 1)`` for :func:`target_function`.

    Args:
        num_rectangles: K, the number of rectangles (cells of width 1/K).
        ramp: Ramp width δ as a fraction of the cell width (δ = ramp / K).
        dtype: Parameter dtype.

    Returns:
        The network; rectangle k uses hidden units ``4k .. 4k+3``.

    Raises:
        InvalidArgumentError: ``num_rectangles < 1`` or ``ramp`` not in (0, 1).
    """
    if not is_int(num_rectangles) or num_rectangles < 1:
        raise InvalidArgumentError(f"num_rectangles must be a positive int, got {num_rectangles!r}")
    if not 0 < ramp < 1:
        raise InvalidArgumentError(f"ramp must be in (0, 1), got {ramp!r}")
    k = num_rectangles
    delta = ramp / k
    starts = torch.arange(k, dtype=dtype) / k
    starts[0] = -delta  # the first rectangle is already 1 at x = 0
    ends = torch.arange(1, k + 1, dtype=dtype) / k
    heights = target_function((torch.arange(k, dtype=dtype) + 0.5) / k)
    kinks = torch.stack([starts, starts + delta, ends, ends + delta], dim=1).reshape(-1)
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=dtype).repeat(k)
    hidden, readout = nn.Linear(1, 4 * k, dtype=dtype), nn.Linear(4 * k, 1, dtype=dtype)
    with torch.no_grad():
        hidden.weight.fill_(1.0)
        hidden.bias.copy_(-kinks)
        readout.weight.copy_((signs * heights.repeat_interleave(4) / delta)[None, :])
        readout.bias.zero_()
    return nn.Sequential(hidden, nn.ReLU(), readout)


def _train(units: int, x: torch.Tensor, y: torch.Tensor, iters: int, seed: int,
           out_bias: float = 0.0) -> nn.Sequential:
    """Fit ``Linear(1, units) → ReLU → Linear(units, 1)`` to ``(x, y)`` by full-batch L-BFGS.

    The readout bias starts at ``out_bias`` (e.g. the target's mean level)."""
    gen = torch.Generator().manual_seed(seed)
    hidden, readout = nn.Linear(1, units).double(), nn.Linear(units, 1).double()
    net = nn.Sequential(hidden, nn.ReLU(), readout)
    with torch.no_grad():  # kinks spread uniformly over [0, 1] (a common 1-D initialization)
        sign = torch.where(torch.rand(units, generator=gen) < 0.5, -1.0, 1.0).double()
        hidden.weight.copy_(sign[:, None])
        hidden.bias.copy_(-sign * torch.rand(units, generator=gen, dtype=torch.float64))
        readout.weight.copy_(torch.randn(1, units, generator=gen, dtype=torch.float64) / math.sqrt(units))
        readout.bias.fill_(out_bias)
    opt = torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=iters, history_size=50,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.mean((net(x) - y) ** 2)
        loss.backward()
        return loss

    opt.step(closure)
    return net


@register_lesson(
    "universal-approximation",
    title="Universal approximation with ReLU rectangles",
    claim=(
        "One hidden ReLU layer approximates a continuous function arbitrarily well: K rectangles (4K units) "
        "reach sup error ≤ L·(1/(2K) + δ), halving with each doubling of K, and trained networks of the same "
        "width approximate at least as well."
    ),
    references=(
        "Cybenko (1989), Approximation by superpositions of a sigmoidal function, MCSS.",
        "Hornik, Stinchcombe & White (1989), Multilayer feedforward networks are universal approximators.",
        "Nielsen (2015), Neural Networks and Deep Learning, ch. 4 (the visual proof with rectangles).",
    ),
    defaults={
        "rectangles": (1, 2, 4, 8, 16, 32, 64),
        "ramp": 0.01,
        "n_train": 1024,
        "n_eval": 20001,
        "iters": 500,
        "restarts": 3,
        "seed": 0,
    },
    quick={"rectangles": (2, 8, 32), "iters": 150, "restarts": 2, "n_train": 256, "n_eval": 4001},
)
def _compute(p: dict[str, Any]) -> LessonOutput:
    if p["restarts"] < 1 or p["iters"] < 1 or p["n_train"] < 2 or p["n_eval"] < 2 or min(p["rectangles"]) < 1:
        raise InvalidArgumentError("restarts, iters and rectangles must be ≥ 1 and n_train, n_eval ≥ 2")
    x_eval = torch.linspace(0, 1, p["n_eval"], dtype=torch.float64)[:, None]
    f_eval = target_function(x_eval)
    x_train = torch.linspace(0, 1, p["n_train"], dtype=torch.float64)[:, None]
    y_train = target_function(x_train)
    rows = []
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for k in p["rectangles"]:
        units = 4 * k
        with torch.no_grad():
            built = rectangle_network(k, p["ramp"])(x_eval)
        err_c = (built - f_eval).abs()
        trained_rms, trained_sup = [], []
        for s in range(p["restarts"]):
            net = _train(units, x_train, y_train, p["iters"], p["seed"] + 1000 * s + k)
            with torch.no_grad():
                out = net(x_eval)
            err_t = (out - f_eval).abs()
            trained_rms.append(float(err_t.pow(2).mean().sqrt()))
            trained_sup.append(float(err_t.max()))
            if trained_rms[-1] == min(trained_rms):
                curves[f"trained {units}"] = (x_eval[:, 0].numpy(), out[:, 0].numpy())
        curves[f"constructed {units}"] = (x_eval[:, 0].numpy(), built[:, 0].numpy())
        rows.append({
            "rectangles": k, "units": units,
            "constructed_sup": float(err_c.max()), "constructed_rms": float(err_c.pow(2).mean().sqrt()),
            "bound_sup": TARGET_LIPSCHITZ * (0.5 / k + p["ramp"] / k),
            "trained_rms": float(np.min(trained_rms)),
            "trained_sup": float(trained_sup[int(np.argmin(trained_rms))]),
            "trained_rms_mean": float(np.mean(trained_rms)),
        })
    table = pd.DataFrame(rows)
    tail = table[table.rectangles >= 8]  # the 1/K regime (a few rectangles cannot follow the oscillations)
    if len(tail) < 2:
        raise InvalidArgumentError(f"need at least two rectangle counts ≥ 8, got {p['rectangles']!r}")
    slope = float(np.polyfit(np.log(tail.units), np.log(tail.constructed_sup), 1)[0])
    last, first = table.iloc[-1], table.iloc[0]
    checks = [
        Check(
            "constructed sup error stays below the bound L·(1/(2K) + δ) at every K",
            bool((table.constructed_sup <= table.bound_sup * (1 + 1e-9)).all()),
            ", ".join(f"K={r.rectangles}: {r.constructed_sup:.4f} ≤ {r.bound_sup:.4f}" for r in table.itertuples()),
        ),
        Check(
            "constructed error halves per doubling of K (log-log slope ≈ −1 for K ≥ 8)",
            bool(-1.25 <= slope <= -0.75),
            f"fitted slope of log sup error vs log units over K ≥ 8: {slope:.2f}",
        ),
        Check(
            "trained networks approximate better as width grows",
            bool(last.trained_rms < 0.2 * first.trained_rms),
            f"RMS error {first.trained_rms:.4f} at {int(first.units)} units → {last.trained_rms:.4f} at "
            f"{int(last.units)} units",
        ),
        Check(
            "at the largest width the trained network is at least as accurate as the constructed one",
            bool(last.trained_rms <= last.constructed_rms),
            f"RMS trained {last.trained_rms:.4f} vs constructed {last.constructed_rms:.4f} at {int(last.units)} units",
        ),
    ]
    notes = [
        "f(x) = sin(2πx) + 0.5·sin(6πx) with Lipschitz constant L = 5π; errors on a grid of "
        f"{p['n_eval']} points; δ = {p['ramp']}/K.",
        f"Trained nets: same architecture (4K hidden units), full-batch L-BFGS ({p['iters']} iterations, strong "
        f"Wolfe line search) on {p['n_train']} grid points, kinks initialized uniformly in [0, 1]; best of "
        f"{p['restarts']} restarts (small nets often stop in poor local minima; `trained_rms_mean` is the mean).",
        "The constructed network is piecewise constant (error ∝ 1/K); a trained ReLU net is piecewise linear "
        "and can reach error ∝ 1/K², so it usually wins at equal width.",
    ]

    def draw_fit(fig: Any) -> None:
        ax = fig.subplots()
        ax.plot(x_eval[:, 0].numpy(), f_eval[:, 0].numpy(), "k", lw=2, label="f")
        for name in (f"constructed {int(table.units.iloc[len(table) // 2])}", f"constructed {int(last.units)}",
                     f"trained {int(first.units)}", f"trained {int(last.units)}"):
            xs, ys = curves[name]
            ax.plot(xs, ys, lw=1, label=name + " units")
        ax.set_xlabel("x")
        ax.legend(fontsize=8)
        ax.set_title("Rectangle construction vs trained one-hidden-layer ReLU nets")

    def draw_error(fig: Any) -> None:
        ax = fig.subplots()
        ax.loglog(table.units, table.constructed_sup, "o-", label="constructed, sup")
        ax.loglog(table.units, table.bound_sup, "k--", label="bound L(1/(2K)+δ)")
        ax.loglog(table.units, table.constructed_rms, "s-", label="constructed, RMS")
        ax.loglog(table.units, table.trained_rms, "^-", label="trained, RMS")
        ax.loglog(table.units, table.trained_sup, "v-", label="trained, sup")
        ax.set_xlabel("hidden units")
        ax.set_ylabel("error")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)

    return LessonOutput(
        table=table, checks=checks, figures={"fits": draw_fit, "errors": draw_error}, notes=notes,
        numbers={"constructed_slope": slope, "trained_rms_at_max_width": float(last.trained_rms)},
    )

"""Lesson ``depth-separation``: the tent map composed k times (Telgarsky 2016).

``tri(x) = ReLU(ReLU(2x) − ReLU(4x − 2))`` maps [0, 1] onto itself with two linear pieces;
composing it k times gives a sawtooth with ``2^k`` linear pieces (``2^(k−1)`` teeth). A
*deep, narrow* network — k blocks ``Linear(1, 2) → ReLU → Linear(2, 1) → ReLU``, 7 parameters
per block — computes it exactly, while a one-hidden-layer network with H units has at most
``H + 1`` linear pieces, so at the same parameter count (``3H + 1 ≈ 7k``) it cannot follow
the oscillations once ``2^k > H + 1`` and needs exponentially many units instead
(Telgarsky 2016; the linear-region view of Montúfar, Pascanu, Cho & Bengio 2014).

Linear pieces are counted exactly on [0, 1] with
:func:`trilemma.measures.count_linear_regions_exact` (every breakpoint located; no
sampling). The deep network's error is measured on a dyadic grid, where both the network
(in float64) and the target are computed without rounding, so "zero" means exactly zero.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from trilemma._checks import is_int
from trilemma.data import sawtooth_target
from trilemma.errors import InvalidArgumentError
from trilemma.lessons._approximation import _train
from trilemma.lessons._base import Check, LessonOutput, register_lesson
from trilemma.measures import count_linear_regions_exact

__all__ = ["tent_network", "shallow_width"]


def tent_network(k: int, *, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """The deep network computing ``tri^k`` on [0, 1]: k blocks of ``Linear(1,2)-ReLU-Linear(2,1)-ReLU``.

    Args:
        k: Number of compositions (≥ 1).
        dtype: Parameter dtype.

    Returns:
        An ``nn.Sequential`` with ``7k`` parameters.

    Raises:
        InvalidArgumentError: ``k < 1``.
    """
    if not is_int(k) or k < 1:
        raise InvalidArgumentError(f"k must be a positive int, got {k!r}")
    layers: list[nn.Module] = []
    for _ in range(k):
        inner, outer = nn.Linear(1, 2, dtype=dtype), nn.Linear(2, 1, dtype=dtype)
        with torch.no_grad():
            inner.weight.copy_(torch.tensor([[2.0], [4.0]], dtype=dtype))
            inner.bias.copy_(torch.tensor([0.0, -2.0], dtype=dtype))
            outer.weight.copy_(torch.tensor([[1.0, -1.0]], dtype=dtype))
            outer.bias.zero_()
        layers += [inner, nn.ReLU(), outer, nn.ReLU()]
    return nn.Sequential(*layers)


def shallow_width(num_params: int) -> int:
    """Hidden units H of a ``Linear(1, H) → ReLU → Linear(H, 1)`` network closest to ``num_params`` (3H + 1)."""
    return max(1, round((num_params - 1) / 3))


def _pieces(net: nn.Module) -> int:
    ends = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    return count_linear_regions_exact(net, ends).count


def _fit_shallow(units: int, x: torch.Tensor, y: torch.Tensor, iters: int, seed: int) -> nn.Sequential:
    """The universal-approximation lesson's L-BFGS fit, readout bias at the tent map's mean 0.5."""
    return _train(units, x, y, iters, seed, out_bias=0.5)


@register_lesson(
    "depth-separation",
    title="Depth separation: the composed tent map",
    claim=(
        "k compositions of the tent map have exactly 2^k linear pieces; a deep narrow ReLU network with 7k "
        "parameters computes them with zero error, while the best trained one-hidden-layer network with the same "
        "parameter count has at most H + 1 < 2^k pieces and keeps a clear error that grows with k."
    ),
    references=(
        "Telgarsky (2016), Benefits of depth in neural networks, COLT.",
        "Montúfar, Pascanu, Cho & Bengio (2014), On the number of linear regions of deep neural networks, NeurIPS.",
    ),
    defaults={"ks": (1, 2, 3, 4, 5, 6, 7), "grid_bits": 16, "n_train": 2048, "iters": 500, "restarts": 4, "seed": 0},
    quick={"ks": (1, 3, 5), "grid_bits": 12, "n_train": 512, "iters": 200, "restarts": 2},
)
def _compute(p: dict[str, Any]) -> LessonOutput:
    ks = p["ks"]
    if min(ks) < 1 or list(ks) != sorted(set(ks)) or len(ks) < 2:
        raise InvalidArgumentError(f"ks must be at least two strictly increasing positive ints, got {ks!r}")
    if not 4 <= p["grid_bits"] <= 24:
        raise InvalidArgumentError(f"grid_bits must be in [4, 24], got {p['grid_bits']!r}")
    if p["restarts"] < 1 or p["iters"] < 1 or p["n_train"] < 4:
        raise InvalidArgumentError("restarts and iters must be ≥ 1 and n_train ≥ 4")
    grid = torch.arange(2 ** p["grid_bits"] + 1, dtype=torch.float64)[:, None] / 2 ** p["grid_bits"]
    x_train = torch.linspace(0, 1, p["n_train"], dtype=torch.float64)[:, None]
    rows = []
    curves: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for k in ks:
        target = torch.from_numpy(sawtooth_target(grid[:, 0].numpy(), k))[:, None]
        deep = tent_network(k)
        deep_params = sum(q.numel() for q in deep.parameters())
        with torch.no_grad():
            deep_err = float((deep(grid) - target).abs().max())
        units = shallow_width(deep_params)
        y_train = torch.from_numpy(sawtooth_target(x_train[:, 0].numpy(), k))[:, None]
        best: tuple[float, nn.Module] | None = None
        for r in range(p["restarts"]):
            net = _fit_shallow(units, x_train, y_train, p["iters"], p["seed"] + 1000 * r + k)
            with torch.no_grad():
                rms = float((net(grid) - target).pow(2).mean().sqrt())
            if best is None or rms < best[0]:
                best = (rms, net)
        assert best is not None
        shallow = best[1]
        with torch.no_grad():
            shallow_out = shallow(grid)
        rows.append({
            "k": k, "target_pieces": 2 ** k, "deep_params": deep_params, "deep_pieces": _pieces(deep),
            "deep_max_error": deep_err, "shallow_units": units,
            "shallow_params": sum(q.numel() for q in shallow.parameters()),
            "shallow_max_pieces": units + 1, "shallow_pieces": _pieces(shallow),
            "shallow_rms": best[0], "shallow_max_error": float((shallow_out - target).abs().max()),
        })
        curves[k] = (grid[:, 0].numpy(), target[:, 0].numpy(), shallow_out[:, 0].numpy())
    table = pd.DataFrame(rows)
    first, last = table.iloc[0], table.iloc[-1]
    checks = [
        Check(
            "the deep network has exactly 2^k linear pieces on [0, 1] (exact count)",
            bool((table.deep_pieces == table.target_pieces).all()),
            ", ".join(f"k={r.k}: {r.deep_pieces}" for r in table.itertuples()),
        ),
        Check(
            "the deep network's error is exactly zero on the dyadic grid",
            bool((table.deep_max_error == 0.0).all()),
            f"max |error| over k: {table.deep_max_error.max():.3g} on {grid.shape[0]} points",
        ),
        Check(
            "the trained shallow network at the same parameter count has fewer pieces than the target at the largest k",
            bool(last.shallow_pieces <= last.shallow_max_pieces < last.target_pieces),
            f"k={int(last.k)}: {int(last.shallow_pieces)} pieces (≤ H + 1 = {int(last.shallow_max_pieces)}) vs "
            f"2^k = {int(last.target_pieces)}",
        ),
        Check(
            "the best trained shallow network keeps a clear error that grows with k",
            bool(last.shallow_rms >= 0.1 and last.shallow_rms > 10 * first.shallow_rms),
            f"best RMS error {first.shallow_rms:.2e} at k={int(first.k)} → {last.shallow_rms:.3f} at k={int(last.k)}"
            f" (a constant 1/2 has RMS {1 / math.sqrt(12):.3f})",
        ),
    ]
    notes = [
        "Pieces are counted exactly with trilemma.measures.count_linear_regions_exact on the segment [0, 1] "
        "(activation regions; for these networks each region is one linear piece).",
        f"Shallow nets: Linear(1, H) → ReLU → Linear(H, 1) with H = round((7k − 1)/3) (same parameter count as the "
        f"deep net up to rounding), trained by full-batch L-BFGS ({p['iters']} iterations) on {p['n_train']} grid "
        f"points; best of {p['restarts']} restarts by RMS error on the evaluation grid.",
        "Where H + 1 ≥ 2^k a shallow net of this size could represent tri^k exactly; a clear error there is a "
        "failure of training, not of capacity. Where H + 1 < 2^k no shallow net of this size can be exact: it has "
        "too few pieces.",
    ]

    def draw_fits(fig: Any) -> None:
        shown = [ks[0], ks[len(ks) // 2], ks[-1]]
        axes = fig.subplots(len(shown), 1, sharex=True)
        fig.set_size_inches(7, 2.2 * len(shown))
        for ax, k in zip(axes, shown):
            xs, target, shallow = curves[k]
            ax.plot(xs, target, "k", lw=1.5, label=f"tri^{k} = deep net (exact)")
            ax.plot(xs, shallow, "C3", lw=1, label="best shallow net, same #params")
            ax.set_ylabel(f"k = {k}")
            ax.legend(fontsize=7, loc="upper right")
        axes[-1].set_xlabel("x")

    def draw_counts(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        fig.set_size_inches(10, 4)
        ax1.semilogy(table.k, table.deep_pieces, "o-", label="deep net (exact count)")
        ax1.semilogy(table.k, table.shallow_pieces, "s-", label="trained shallow net")
        ax1.semilogy(table.k, table.shallow_max_pieces, "k--", label="shallow bound H + 1")
        ax1.set_xlabel("k")
        ax1.set_ylabel("linear pieces on [0, 1]")
        ax1.legend(fontsize=8)
        ax2.plot(table.k, table.shallow_rms, "s-", color="C1", label="shallow, best RMS error")
        ax2.plot(table.k, table.deep_max_error, "o-", color="C0", label="deep, max error")
        ax2.set_xlabel("k")
        ax2.set_ylabel("error")
        ax2.legend(fontsize=8)

    return LessonOutput(
        table=table, checks=checks, figures={"fits": draw_fits, "pieces": draw_counts}, notes=notes,
        numbers={"shallow_rms_at_max_k": float(last.shallow_rms), "deep_max_error": float(table.deep_max_error.max())},
    )

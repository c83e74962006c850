"""Closed-form (training-free, data-free) indicators of NAS-Bench-201 cells.

Every indicator is a function of the cell string alone. :func:`closed_form_table` computes all
of them for many cells at once with numpy (all 15,625 cells in well under a second);
:func:`closed_form_indicators` computes them for one cell the slow, obvious way (path
enumeration, the scalar cost formulas and the DAG-cell theory of :mod:`trilemma.theory`) and is
the reference the vectorized table is tested against.

Topology (Chen et al., "Deep Architecture Connectivity Matters for Its Convergence",
NeurIPS 2022): paths input→output with no ``none`` edge, ``d_p`` = convolutions on path ``p``,
``P``, ``d̄ = Σ_p d_p / P``, ``m̄ = #{p: d_p > 0} / d̄``. Cells without a path get ``d̄ = 0``;
cells without a parameterized path get ``m̄ = 0`` (the paper's formulas are 0/0 there; the
``has_path`` / ``num_param_paths`` columns identify them).

Theory columns apply the DAG-cell bounds of Chen, Huang & Wang ("'No Free Lunch' in Neural
Architectures?", AutoML-Conf 2023, Theorems 4.1, 4.4, 4.6) to the cell's topology: a convolution
(ReLU-Conv-BN) is a parameterized layer, ``skip_connect`` and ``avg_pool_3x3`` pass the signal
without parameters (see :meth:`~trilemma.spaces.NB201Spec.dag_skeleton`).

Designed indicators (ours):

* ``live_params``: parameters of the macro network counting only cell ops that lie on an
  input→output path (ops off every path are dead weight: they never reach the output).
* ``conv_score``: ``Σ`` over live edges of a per-op score: ``+1`` for a learnable channel
  mixing (both convolutions), ``+1`` more for a learnable spatial mixing (``nor_conv_3x3``),
  ``−1`` for a fixed spatial smoothing (``avg_pool_3x3``), ``0`` for ``skip_connect``. Rationale:
  learnable layers on live paths add trainable depth/capacity; a fixed average pool on a path
  low-passes the features in every one of the 15 cells and cannot be undone by training.
  A cell with no input→output path (its output is identically zero, so the network ignores
  its input) gets :data:`DISCONNECTED_SCORE` = −7, below every connected cell (whose minimum,
  six live average pools, is −6). **Disclosure:** the integer weights (1, 2, −1, 0) were picked after looking at NAS-Bench-201
  CIFAR-10 accuracies (a coarse grid of small integers); the benchmark also reports a
  split-half check (weights chosen on one half of the cells, scored on the other).
* ``trilemma_score`` (the combined three-axis indicator, :func:`combined_indicator`; in
  :func:`closed_form_table` its closed-form variant).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trilemma._checks import is_int, is_real
from trilemma.errors import InvalidArgumentError, InvalidTypeError
from trilemma.nb201._cost import MacroConfig, nb201_flops, nb201_live_params, nb201_params, vector_costs
from trilemma.spaces._nb201 import (
    NB201_EDGES,
    NB201_OPS,
    NB201_PATHS,
    NUM_NB201_CELLS,
    NB201Spec,
)

__all__ = [
    "Indicator",
    "INDICATORS",
    "CONV_SCORE_WEIGHTS",
    "DISCONNECTED_SCORE",
    "closed_form_table",
    "closed_form_indicators",
    "combined_indicator",
    "COMBINED_AXES",
    "COMBINED_VARIANTS",
    "CLOSED_FORM_COMBINED",
    "DEFAULT_COMBINED",
    "SECONDARY_WEIGHT",
    "cells_to_codes",
]

logger = logging.getLogger(__name__)

#: ``conv_score`` of a cell without an input→output path (below the −6 of any connected cell).
DISCONNECTED_SCORE = -7

#: Per-op weights of ``conv_score`` (ops on no input→output path count 0).
CONV_SCORE_WEIGHTS: Mapping[str, int] = {
    "none": 0,
    "skip_connect": 0,
    "nor_conv_1x1": 1,
    "nor_conv_3x3": 2,
    "avg_pool_3x3": -1,
}


@dataclass(frozen=True)
class Indicator:
    """Metadata of one closed-form indicator.

    Attributes:
        name: Column name.
        description: One line.
        direction: ``+1`` if larger should mean a better architecture a priori (from the
            theory or the design, never from the benchmark), ``−1`` if smaller.
        axis: ``"expressivity"``, ``"convergence"``, ``"generalization"``, ``"cost"``,
            ``"topology"`` or ``"combined"``.
    """

    name: str
    description: str
    direction: int
    axis: str


INDICATORS: dict[str, Indicator] = {
    i.name: i
    for i in (
        Indicator("P", "number of input→output paths with no 'none' (topological width)", 1, "convergence"),
        Indicator("mean_depth", "d̄: mean number of convolutions per path (effective depth)", 1, "expressivity"),
        Indicator("eff_width", "m̄ = #{p: d_p > 0} / d̄ (effective width, NeurIPS 2022)", 1, "convergence"),
        Indicator("sum_depth", "Σ_p d_p", 1, "expressivity"),
        Indicator("num_param_paths", "#{p: d_p > 0}", 1, "convergence"),
        Indicator("max_depth", "largest d_p", 1, "expressivity"),
        Indicator("live_convs", "convolutions on some input→output path", 1, "expressivity"),
        Indicator("live_conv3", "3×3 convolutions on some input→output path", 1, "expressivity"),
        Indicator("live_pools", "average pools on some input→output path", -1, "expressivity"),
        Indicator("params", "trainable parameters of the macro network", 1, "cost"),
        Indicator("flops", "FLOPs (conv + linear multiply-accumulates) of the macro network", 1, "cost"),
        Indicator("live_params", "parameters, counting only cell ops on an input→output path", 1, "cost"),
        Indicator("nngp_bound", "Theorem 4.4 bound on λ_min of the NNGP (larger: faster convergence)", 1, "convergence"),
        Indicator("ntk_bound", "Theorem 4.6 bound on λ_min of the NTK (larger: faster convergence)", 1, "convergence"),
        Indicator(
            "jacobian_path_sum",
            "Theorem 4.1 C(m)·Σ_p exp(−5 d_p/(8m)) (smaller: higher curvature, more expressive)",
            -1,
            "expressivity",
        ),
        Indicator(
            "generalization_bound",
            "Theorem 4.5 comparison Σ_p d_p / sqrt(NTK λ_min bound) (smaller: better generalization)",
            -1,
            "generalization",
        ),
        Indicator("conv_score", "Σ over live edges of conv 1×1: 1, conv 3×3: 2, avg pool: −1 (ours)", 1, "expressivity"),
        Indicator("trilemma_score", "combined three-axis indicator, closed-form variant (ours, see combined_indicator)", 1, "combined"),
    )
}


# ---------------------------------------------------------------------------- inputs
def cells_to_codes(cells: Iterable[NB201Spec | str | int] | None) -> np.ndarray:
    """Op-code matrix ``(n, 6)`` (int8) of ``cells`` (specs, strings or indices); ``None`` = all 15,625."""
    if cells is None:
        idx = np.arange(NUM_NB201_CELLS)
        return np.stack([(idx // 5 ** (5 - k)) % 5 for k in range(6)], axis=1).astype(np.int8)
    if isinstance(cells, (str, NB201Spec)):
        raise InvalidTypeError("cells must be an iterable of cells (or None for all), not a single cell")
    rows = []
    for c in cells:
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            rows.append(NB201Spec.from_index(int(c)).codes)
        else:
            rows.append(NB201Spec.parse(c).codes)  # type: ignore[arg-type]
    return np.asarray(rows, dtype=np.int8).reshape(-1, len(NB201_EDGES))


def _check_corr(corr: float) -> float:
    if not is_real(corr) or not -1.0 <= float(corr) < 1.0:
        raise InvalidArgumentError(
            f"corr must be a correlation in [-1, 1) (corr = 1 means identical inputs, where every bound is 0), got {corr!r}"
        )
    return float(corr)


def _check_width(width: int) -> int:
    if not is_int(width) or width < 1:
        raise InvalidArgumentError(f"width must be a positive int, got {width!r}")
    return width


# ---------------------------------------------------------------------------- theory per skeleton
def _skeleton_bounds(corr: float, width: int) -> np.ndarray:
    """Theory columns for the 729 DAG skeletons: ``(729, 3)`` = nngp, ntk, jacobian path sum."""
    from trilemma.spaces import CellSpec
    from trilemma.theory import jacobian_path_sum, nngp_bound, ntk_bound

    out = np.empty((3**6, 3))
    for i in range(3**6):
        spec = CellSpec.from_index(i, 3)
        out[i] = (nngp_bound(spec, corr), ntk_bound(spec, corr), jacobian_path_sum(spec.topology, width))
    return out


_SKELETON_CACHE: dict[tuple[float, int], np.ndarray] = {}


def _skeleton_table(corr: float, width: int) -> np.ndarray:
    key = (corr, width)
    if key not in _SKELETON_CACHE:
        _SKELETON_CACHE[key] = _skeleton_bounds(corr, width)
    return _SKELETON_CACHE[key]


# ---------------------------------------------------------------------------- the table
def closed_form_table(
    cells: Iterable[NB201Spec | str | int] | None = None,
    *,
    config: MacroConfig = MacroConfig(),
    corr: float = 0.5,
    width: int | None = None,
    combined: bool = True,
) -> pd.DataFrame:
    """Every closed-form indicator for many cells (vectorized).

    Args:
        cells: Cells as specs, strings or indices; ``None`` = all 15,625 in index order.
        config: Macro-network size for ``params``, ``flops``, ``live_params``.
        corr: Input correlation ``C`` at the cell input used by the NNGP / NTK bounds, in
            ``[-1, 1)`` (the bound's ``min_{i≠j}`` is attained at the most correlated pair;
            pass that pair's correlation).
        width: ``m`` of the Jacobian path sum; default ``config.C``.
        combined: Add the ``trilemma_score`` column: :func:`combined_indicator` with the
            closed-form variant ``"closed_form"`` (the default design needs a measured column).

    Returns:
        One row per cell with columns ``index``, ``arch``, ``has_path`` and every key of
        :data:`INDICATORS` (``trilemma_score`` only when ``combined``).

    Raises:
        InvalidArgumentError: bad ``corr`` or ``width``.
        InvalidSpecError: a malformed cell.
    """
    corr = _check_corr(corr)
    width = _check_width(config.C if width is None else width)
    codes = cells_to_codes(cells).astype(np.int64)
    n = codes.shape[0]
    nonzero = codes != 0
    conv = (codes == 2) | (codes == 3)
    # paths (n, 4): alive and conv depth
    alive = np.stack([nonzero[:, list(p)].all(1) for p in NB201_PATHS], axis=1)
    depth = np.stack([conv[:, list(p)].sum(1) for p in NB201_PATHS], axis=1) * alive
    live = np.zeros_like(nonzero)
    for k, p in enumerate(NB201_PATHS):
        live[:, list(p)] |= alive[:, [k]]
    P = alive.sum(1)
    sum_depth = depth.sum(1)
    num_param_paths = ((depth > 0) & alive).sum(1)
    mean_depth = np.divide(sum_depth, P, out=np.zeros(n), where=P > 0)
    eff_width = np.divide(num_param_paths, mean_depth, out=np.zeros(n), where=mean_depth > 0)
    costs = vector_costs(codes, live, config)
    skeleton = np.where(codes == 0, 0, np.where(conv, 2, 1))
    sk_index = skeleton @ (3 ** np.arange(5, -1, -1))
    bounds = _skeleton_table(corr, width)[sk_index]
    ntk = bounds[:, 1]
    weights = np.array([CONV_SCORE_WEIGHTS[op] for op in NB201_OPS])
    df = pd.DataFrame(
        {
            "index": codes @ (5 ** np.arange(5, -1, -1)),
            "arch": [NB201Spec.from_codes(tuple(int(c) for c in row)).name for row in codes],
            "has_path": P > 0,
            "P": P,
            "mean_depth": mean_depth,
            "eff_width": eff_width,
            "sum_depth": sum_depth,
            "num_param_paths": num_param_paths,
            "max_depth": depth.max(1),
            "live_convs": (conv & live).sum(1),
            "live_conv3": ((codes == 3) & live).sum(1),
            "live_pools": ((codes == 4) & live).sum(1),
            "params": costs["params"],
            "flops": costs["flops"],
            "live_params": costs["live_params"],
            "nngp_bound": bounds[:, 0],
            "ntk_bound": ntk,
            "jacobian_path_sum": bounds[:, 2],
            "generalization_bound": _generalization(sum_depth, ntk),
            "conv_score": np.where(P > 0, (weights[codes] * live).sum(1), DISCONNECTED_SCORE),
        }
    )
    if combined:
        df["trilemma_score"] = combined_indicator(df, CLOSED_FORM_COMBINED)
    return df


def _generalization(sum_depth: np.ndarray, ntk: np.ndarray) -> np.ndarray:
    """``Σ_p d_p / sqrt(NTK bound)``; 0 without a parameterized path (then Σ_p d_p = 0).

    With ``corr < 1`` the NTK bound of a cell with a path is positive (each path adds at least
    ``1 − f^{d_p}(C) > 0``), so the division is always defined where ``Σ_p d_p > 0``.
    """
    sum_depth = np.asarray(sum_depth, dtype=float)
    ntk = np.asarray(ntk, dtype=float)
    out = np.zeros_like(sum_depth)
    pos = sum_depth > 0
    out[pos] = sum_depth[pos] / np.sqrt(ntk[pos])
    return out


def closed_form_indicators(
    spec: NB201Spec | str,
    *,
    config: MacroConfig = MacroConfig(),
    corr: float = 0.5,
    width: int | None = None,
) -> dict[str, float | int | bool | str]:
    """Every closed-form indicator of one cell, computed directly (the reference implementation).

    Enumerates the cell's paths, uses the scalar cost formulas and calls :mod:`trilemma.theory`
    on the DAG skeleton. ``trilemma_score`` is not included (it is a rank over a population).

    Args:
        spec: The cell or its string.
        config, corr, width: As in :func:`closed_form_table`.

    Returns:
        ``{column: value}`` with the same columns as :func:`closed_form_table` (except
        ``trilemma_score``).
    """
    from trilemma.theory import generalization_indicator, jacobian_path_sum, nngp_bound, ntk_bound

    spec = NB201Spec.parse(spec)
    corr = _check_corr(corr)
    width = _check_width(config.C if width is None else width)
    topo = spec.topology
    live = spec.live_edges
    skeleton = spec.dag_skeleton()
    ntk = ntk_bound(skeleton, corr)
    return {
        "index": spec.index,
        "arch": spec.name,
        "has_path": topo.has_path,
        "P": topo.num_paths,
        "mean_depth": topo.mean_depth or 0.0,
        "eff_width": topo.eff_width or 0.0,
        "sum_depth": topo.sum_depth,
        "num_param_paths": topo.num_param_paths,
        "max_depth": topo.max_depth,
        "live_convs": sum(1 for op, lv in zip(spec.ops, live) if lv and op in ("nor_conv_1x1", "nor_conv_3x3")),
        "live_conv3": sum(1 for op, lv in zip(spec.ops, live) if lv and op == "nor_conv_3x3"),
        "live_pools": sum(1 for op, lv in zip(spec.ops, live) if lv and op == "avg_pool_3x3"),
        "params": nb201_params(spec, config),
        "flops": nb201_flops(spec, config),
        "live_params": nb201_live_params(spec, config),
        "nngp_bound": nngp_bound(skeleton, corr),
        "ntk_bound": ntk,
        "jacobian_path_sum": jacobian_path_sum(topo, width),
        "generalization_bound": generalization_indicator(skeleton, corr) if topo.has_path else 0.0,
        "conv_score": (
            sum(CONV_SCORE_WEIGHTS[op] for op, lv in zip(spec.ops, live) if lv) if topo.has_path else DISCONNECTED_SCORE
        ),
    }


# ---------------------------------------------------------------------------- combined indicator
#: Weight of the convergence and generalization axes relative to the expressivity axis in the
#: default designs (see :func:`combined_indicator`). Chosen on NAS-Bench-201 (disclosed there).
SECONDARY_WEIGHT = 0.03

#: Named designs of the combined indicator: ``name → ((column, direction, weight), ...)``.
#: ``"trilemma"`` is the default; the others are kept by name for comparison.
COMBINED_VARIANTS: Mapping[str, tuple[tuple[str, int, float], ...]] = {
    # expressivity (closed form), convergence (Jacobian-correlation spectrum, measured at init),
    # generalization (live parameters); expressivity first, the other two order cells within its levels
    "trilemma": (("conv_score", 1, 1.0), ("jacob_cov", 1, SECONDARY_WEIGHT), ("live_params", 1, SECONDARY_WEIGHT)),
    # the same design with the closed-form convergence axis (Theorem 4.6 NTK bound): needs no measure
    "closed_form": (("conv_score", 1, 1.0), ("ntk_bound", 1, SECONDARY_WEIGHT), ("live_params", 1, SECONDARY_WEIGHT)),
    # the former default: the three closed-form axes with equal weights
    "closed_form_equal": (("conv_score", 1, 1.0), ("ntk_bound", 1, 1.0), ("live_params", 1, 1.0)),
    # theory-aligned, equal weights: closed-form and measured expressivity, NTK condition number (TE-NAS)
    "theory": (("conv_score", 1, 1.0), ("curvature", 1, 1.0), ("ntk_cond", -1, 1.0)),
    # zero-cost ensemble, equal weights: conv_score with three label-free baselines
    "zero_cost": (("conv_score", 1, 1.0), ("naswot", 1, 1.0), ("synflow", 1, 1.0), ("jacob_cov", 1, 1.0)),
}

#: Name of the default combined design (needs a measured ``jacob_cov`` column).
DEFAULT_COMBINED = "trilemma"

#: Closed-form design used where no measure is available (``closed_form_table``, the CLI).
CLOSED_FORM_COMBINED = "closed_form"

#: The former default axes (equal weights, closed form): ``{axis: (column, direction)}``;
#: the same as variant ``"closed_form_equal"``.
COMBINED_AXES: Mapping[str, tuple[str, int]] = {
    "expressivity": ("conv_score", 1),
    "convergence": ("ntk_bound", 1),
    "generalization": ("live_params", 1),
}

AxesLike = Mapping[str, tuple] | Sequence[tuple] | str


def _resolve_axes(axes: AxesLike | None) -> list[tuple[str, int, float]]:
    """``axes`` as a list of ``(column, direction, weight)``; validates everything but the columns."""
    if axes is None:
        axes = DEFAULT_COMBINED
    if isinstance(axes, str):
        if axes not in COMBINED_VARIANTS:
            raise InvalidArgumentError(
                f"unknown combined-indicator variant {axes!r}; valid names: {', '.join(COMBINED_VARIANTS)}"
            )
        axes = COMBINED_VARIANTS[axes]
    items = list(axes.values()) if isinstance(axes, Mapping) else list(axes)
    if not items:
        raise InvalidArgumentError("combined_indicator needs at least one (column, direction) axis, got none")
    out = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) in (2, 3)):
            raise InvalidArgumentError(
                f"each axis must be a (column, direction) or (column, direction, weight) tuple, got {item!r}"
            )
        col, direction = item[0], item[1]
        weight = item[2] if len(item) == 3 else 1.0
        if direction not in (1, -1) or isinstance(direction, bool):
            raise InvalidArgumentError(f"direction of {col!r} must be +1 or -1, got {direction!r}")
        if not is_real(weight) or not np.isfinite(weight) or weight <= 0:
            raise InvalidArgumentError(f"weight of {col!r} must be a finite number > 0, got {weight!r}")
        out.append((col, int(direction), float(weight)))
    return out


def combined_indicator(
    table: pd.DataFrame,
    axes: AxesLike | None = None,
    *,
    disconnected_last: bool = True,
) -> pd.Series:
    """Three-axis indicator: weighted sum over axes of ``log(rank / n)`` (larger = better).

    Each axis contributes ``w · log(rank / n)`` (rank 1 for the worst of ``n`` cells, ``n``
    for the best; ties get their average rank), the log-rank aggregation of AZ-NAS (Lee & Ham,
    CVPR 2024): a bad rank on one axis costs more than a good rank on another earns.

    **Default design** (variant ``"trilemma"``), one representative per axis:

    * expressivity: ``conv_score`` (closed form, weight 1) — learnable convolutions on live
      paths, average pools on them count against;
    * convergence: ``jacob_cov`` (Mellor et al., "Neural Architecture Search without Training",
      ICML 2021; measured at init) — the spectrum of the correlation matrix of the input
      Jacobians of a batch: decorrelated Jacobians mean a better-conditioned Gram ``J Jᵀ``
      (the input-gradient analogue of the NTK Gram), i.e. faster gradient descent (the
      λ_min convergence theory of Chen, Huang & Wang 2023, Theorem 4.3); on the sample it orders cells within a
      ``conv_score`` level better than the measured NTK/NNGP spectra;
    * generalization: ``live_params`` (closed form) — over-parameterized networks generalize
      better (the lecture's width sweep), parameters off every input→output path do not count.

    The two last axes get weight :data:`SECONDARY_WEIGHT` = 0.03 (so the score is, in effect,
    ``conv_score`` with ties and near-ties ordered by the other two axes). **Disclosure:** the
    representatives and the weight were selected on the NAS-Bench-201 CIFAR-10 accuracies of
    the benchmark's 1,000-cell sample (``benchmarks/nb201.py``, part 2, which also reports a
    split-half check: choose on one half, score on the other, 10 seeds); ``conv_score``'s own
    weights were picked on all 15,625 cells. On that sample the design reaches Kendall
    τ-b ≈ 0.71, below ``conv_score`` alone (≈ 0.73): ``conv_score`` has 15 levels and τ-b does
    not count tied pairs, so any refinement by an axis whose within-level τ is below about
    ``τ/2`` lowers τ-b; equal weights (variants ``"closed_form_equal"``, ``"zero_cost"``,
    ``"theory"``) lower it more (0.61-0.68). Needs a measured ``jacob_cov`` column; the
    closed-form counterpart is variant ``"closed_form"`` (``ntk_bound``, Theorem 4.6, for
    convergence).

    Args:
        table: One row per cell holding the axis columns.
        axes: A variant name of :data:`COMBINED_VARIANTS` (default ``"trilemma"``),
            ``{axis: (column, direction[, weight])}`` or a sequence of
            ``(column, direction[, weight])``; ``direction`` is +1 if larger is better, −1 if
            smaller is; ``weight`` (default 1) is a finite number > 0.
        disconnected_last: When ``table`` has a ``has_path`` column, cells without an
            input→output path (their output ignores the input, so measures of them are
            undefined) are ranked below every other cell and may hold NaN in the axis columns.

    Returns:
        The score aligned with ``table.index`` (name ``"trilemma_score"``).

    Raises:
        InvalidArgumentError: an unknown variant, a missing column, a bad direction or weight,
            or a NaN in a ranked row.
    """
    items = _resolve_axes(axes)
    ranked = np.ones(len(table), dtype=bool)
    if disconnected_last and "has_path" in table.columns:
        ranked = table["has_path"].to_numpy(dtype=bool)
    n = int(ranked.sum())
    score = np.zeros(len(table))
    for col, direction, weight in items:
        if col not in table.columns:
            raise InvalidArgumentError(
                f"combined_indicator: column {col!r} not in the table; available: {', '.join(map(str, table.columns))}"
            )
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)[ranked]
        if np.isnan(values).any():
            raise InvalidArgumentError(
                f"combined_indicator: column {col!r} has {int(np.isnan(values).sum())} missing/NaN value(s) "
                "in cells with an input→output path; drop or fill those cells first"
            )
        ranks = pd.Series(direction * values).rank(method="average").to_numpy()
        score[ranked] += weight * np.log(ranks / n)
    if not ranked.all():
        floor = score[ranked].min() - 1.0 if ranked.any() else 0.0
        score[~ranked] = floor
    return pd.Series(score, index=table.index, name="trilemma_score")

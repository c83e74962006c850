"""The rank correlations every part of trilemma uses: one implementation (Kendall τ-b, Spearman ρ).

A thin, checked wrapper of SciPy so that analysis, measures, lessons, NAS-Bench-201 and the
benchmarks compute the same number the same way (τ-b: ties counted as in
``scipy.stats.kendalltau``; pairs with a missing value dropped). The bootstrap fast paths of
:mod:`trilemma.analysis` are tested against this function.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from trilemma.errors import InvalidArgumentError

__all__ = ["kendall_tau", "placed_rank", "rank_correlation_value", "spearman_rho"]


def _pairs(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=float).ravel()
    b = np.asarray(y, dtype=float).ravel()
    if a.shape != b.shape:
        raise InvalidArgumentError(f"x and y must have the same length, got {a.size} and {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


def rank_correlation_value(x: Any, y: Any, method: str = "kendall") -> tuple[float, float]:
    """``(statistic, p value)`` of ``method`` (``"kendall"``: τ-b, ``"spearman"``: ρ) over the
    pairs where both values are finite; NaN when fewer than two pairs remain or a side is constant.

    Raises:
        InvalidArgumentError: an unknown method or unequal lengths.
    """
    if method not in ("kendall", "spearman"):
        raise InvalidArgumentError(f"method must be 'kendall' or 'spearman', got {method!r}")
    a, b = _pairs(x, y)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan")
    res = stats.kendalltau(a, b) if method == "kendall" else stats.spearmanr(a, b)
    return float(res.statistic), float(res.pvalue)


def kendall_tau(x: Any, y: Any) -> float:
    """Kendall τ-b over the finite pairs (NaN when undefined; see :func:`rank_correlation_value`)."""
    return rank_correlation_value(x, y, "kendall")[0]


def spearman_rho(x: Any, y: Any) -> float:
    """Spearman ρ over the finite pairs (NaN when undefined)."""
    return rank_correlation_value(x, y, "spearman")[0]


def placed_rank(values: Any, reference: Any, higher_is_better: bool) -> np.ndarray:
    """Rank of each value among the finite ``reference`` values: ``1 +`` the number of reference
    values strictly better (1 = best). For a member of ``reference`` this is its ``"min"`` rank
    (ties share the best rank of their block, 1, 2, 2, 4), as the paper's Table 1 ranks;
    NaN where a value is missing.

    Raises:
        InvalidArgumentError: no finite reference value.
    """
    v = np.asarray(values, dtype=float).ravel()
    ref = np.asarray(reference, dtype=float).ravel()
    ref = ref[np.isfinite(ref)]
    if not len(ref):
        raise InvalidArgumentError("placed_rank needs at least one finite reference value")
    sign = -1.0 if higher_is_better else 1.0
    better = np.searchsorted(np.sort(sign * ref), sign * v, side="left").astype(float)
    return np.where(np.isfinite(v), better + 1.0, np.nan)

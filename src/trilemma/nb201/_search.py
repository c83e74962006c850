"""The (d̄, m̄) centre filter of NeurIPS 2022 and a training-free search simulation.

Centre filter (Chen et al., "Deep Architecture Connectivity Matters for Its Convergence",
NeurIPS 2022): architectures whose effective depth ``d̄`` and effective width ``m̄`` are both
near the middle of their ranges are kept; extreme topologies (too deep and narrow, or too wide
and shallow) are removed before any search spends effort on them. With ``lo``/``hi`` the range
of a quantity over the reference population, centre ``c = (lo + hi)/2`` and half-range
``h = (hi − lo)/2``, a cell is kept when ``|d̄ − c_d| ≤ f·h_d`` and ``|m̄ − c_m| ≤ f·h_m`` with
``f = 1/2`` ("centre ± half the half-range").

Search simulation: draw ``sample_size`` cells at random, optionally drop the ones outside the
centre, pick the best by an indicator, read its benchmark accuracy; repeat. Ties on the
indicator are broken uniformly at random (seeded), so a coarse indicator is not credited with
lucky index order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trilemma._checks import is_int, is_real
from trilemma.errors import InvalidArgumentError

__all__ = ["CentreFilter", "centre_filter", "SearchResult", "simulate_search", "search_table"]


@dataclass(frozen=True)
class CentreFilter:
    """Result of :func:`centre_filter`.

    Attributes:
        keep: Boolean mask over the filtered rows.
        depth_range: ``(low, high)`` of ``d̄`` that is kept.
        width_range: ``(low, high)`` of ``m̄`` that is kept.
        removed_fraction: Fraction of the filtered rows removed.
    """

    keep: np.ndarray
    depth_range: tuple[float, float]
    width_range: tuple[float, float]
    removed_fraction: float


def _window(values: np.ndarray, fraction: float) -> tuple[float, float]:
    lo, hi = float(np.min(values)), float(np.max(values))
    c, h = (lo + hi) / 2, (hi - lo) / 2
    return c - fraction * h, c + fraction * h


def centre_filter(
    table: pd.DataFrame,
    *,
    fraction: float = 0.5,
    reference: pd.DataFrame | None = None,
    depth_column: str = "mean_depth",
    width_column: str = "eff_width",
) -> CentreFilter:
    """Keep the cells near the centre of the (d̄, m̄) ranges (NeurIPS 2022).

    Args:
        table: Cells to filter, with ``depth_column`` and ``width_column``.
        fraction: Kept half-width as a fraction of the half-range (paper: 0.5).
        reference: Population defining the ranges (default ``table`` itself; pass the
            whole-space table to filter a sample with the space's ranges).
        depth_column, width_column: Column names of d̄ and m̄.

    Returns:
        The mask, the kept windows and the removed fraction.

    Raises:
        InvalidArgumentError: ``fraction`` outside (0, 1], a missing column or an empty table.
    """
    if not is_real(fraction) or not 0 < fraction <= 1:
        raise InvalidArgumentError(f"fraction must be in (0, 1], got {fraction!r}")
    ref = table if reference is None else reference
    for name, df in (("table", table), ("reference", ref)):
        for col in (depth_column, width_column):
            if col not in df.columns:
                raise InvalidArgumentError(f"centre_filter: {name} has no column {col!r}; got {list(df.columns)}")
    if len(ref) == 0:
        raise InvalidArgumentError("centre_filter: the reference population is empty")
    dr = _window(ref[depth_column].to_numpy(dtype=float), float(fraction))
    wr = _window(ref[width_column].to_numpy(dtype=float), float(fraction))
    d = table[depth_column].to_numpy(dtype=float)
    m = table[width_column].to_numpy(dtype=float)
    eps = 1e-12
    keep = (d >= dr[0] - eps) & (d <= dr[1] + eps) & (m >= wr[0] - eps) & (m <= wr[1] + eps)
    removed = 1.0 - float(keep.mean()) if len(keep) else 0.0
    return CentreFilter(keep=keep, depth_range=dr, width_range=wr, removed_fraction=removed)


@dataclass(frozen=True)
class SearchResult:
    """Outcome of :func:`simulate_search` for one indicator.

    Attributes:
        picks: Accuracy of the chosen cell in each repeat, ``(repeats,)``.
        evaluated: Number of cells scored in each repeat (after the filter), ``(repeats,)``.
        optimum: Best accuracy within each repeat's sample (an oracle), ``(repeats,)``.
    """

    picks: np.ndarray
    evaluated: np.ndarray
    optimum: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.picks.mean())

    @property
    def std(self) -> float:
        return float(self.picks.std())


def simulate_search(
    scores: np.ndarray,
    accuracy: np.ndarray,
    *,
    sample_size: int = 100,
    repeats: int = 500,
    seed: int = 0,
    keep: np.ndarray | None = None,
    direction: int = 1,
) -> SearchResult:
    """Random-sample-then-pick search with a training-free indicator.

    Each repeat draws ``sample_size`` distinct cells uniformly, drops those with
    ``keep == False`` (when given), and picks the cell with the best score (``direction`` ±1;
    ties broken at random). The same seed gives the same samples for every indicator, so
    indicators are compared on identical draws.

    Args:
        scores: Indicator value per cell, ``(n,)``.
        accuracy: Ground-truth accuracy per cell, ``(n,)``.
        sample_size: Cells per repeat.
        repeats: Number of repeats.
        seed: Seed of the numpy generator.
        keep: Optional filter mask ``(n,)`` applied to each sample.
        direction: +1 if larger scores are better, −1 if smaller are.

    Returns:
        The picks' accuracies, the number of cells evaluated and the per-sample optimum.

    Raises:
        InvalidArgumentError: shape mismatch, NaN scores, bad sizes.
    """
    scores = np.asarray(scores, dtype=float)
    accuracy = np.asarray(accuracy, dtype=float)
    n = scores.shape[0]
    if scores.ndim != 1 or accuracy.shape != scores.shape:
        raise InvalidArgumentError(f"scores and accuracy must be 1-D of equal length, got {scores.shape} and {accuracy.shape}")
    if np.isnan(scores).any():
        raise InvalidArgumentError(f"scores contain {int(np.isnan(scores).sum())} NaN value(s)")
    for name, v in (("sample_size", sample_size), ("repeats", repeats)):
        if not is_int(v) or v < 1:
            raise InvalidArgumentError(f"{name} must be a positive int, got {v!r}")
    if sample_size > n:
        raise InvalidArgumentError(f"sample_size={sample_size} exceeds the {n} available cells")
    if direction not in (1, -1):
        raise InvalidArgumentError(f"direction must be +1 or -1, got {direction!r}")
    mask = np.ones(n, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    if mask.shape != scores.shape:
        raise InvalidArgumentError(f"keep must have shape {scores.shape}, got {mask.shape}")
    rng = np.random.default_rng(seed)
    tie_rng = np.random.default_rng([seed, 1])
    picks = np.empty(repeats)
    evaluated = np.empty(repeats, dtype=np.int64)
    optimum = np.empty(repeats)
    for r in range(repeats):
        sample = rng.choice(n, size=sample_size, replace=False)
        optimum[r] = accuracy[sample].max()
        pool = sample[mask[sample]]
        if pool.size == 0:  # the filter removed everything: fall back to the whole sample
            pool = sample
        evaluated[r] = pool.size
        s = direction * scores[pool]
        best = np.flatnonzero(s == s.max())
        picks[r] = accuracy[pool[best[tie_rng.integers(best.size)]]]
    return SearchResult(picks=picks, evaluated=evaluated, optimum=optimum)


def search_table(
    table: pd.DataFrame,
    accuracy: np.ndarray,
    indicators: Mapping[str, int],
    *,
    keep: np.ndarray | None = None,
    sample_size: int = 100,
    repeats: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`simulate_search` for several indicators, with and without a filter.

    Args:
        table: One row per cell with a column per indicator.
        accuracy: Ground truth aligned with ``table``.
        indicators: ``{column: direction}``.
        keep: Optional filter mask (e.g. :func:`centre_filter`'s ``keep``); when given, every
            indicator is also run with the filter.
        sample_size, repeats, seed: As in :func:`simulate_search`.

    Returns:
        Rows ``indicator``, ``filter`` (``"none"`` / ``"centre"``), ``mean``, ``std``,
        ``evaluated`` (mean cells scored per repeat), ``optimum`` (mean best-in-sample).
    """
    rows = []
    variants: list[tuple[str, np.ndarray | None]] = [("none", None)]
    if keep is not None:
        variants.append(("centre", np.asarray(keep, dtype=bool)))
    for col, direction in indicators.items():
        if col not in table.columns:
            raise InvalidArgumentError(f"search_table: no column {col!r}; available: {list(table.columns)}")
        for fname, mask in variants:
            res = simulate_search(
                table[col].to_numpy(dtype=float), accuracy, sample_size=sample_size, repeats=repeats,
                seed=seed, keep=mask, direction=direction,
            )
            rows.append(
                {"indicator": col, "filter": fname, "mean": res.mean, "std": res.std,
                 "evaluated": float(res.evaluated.mean()), "optimum": float(res.optimum.mean())}
            )
    return pd.DataFrame(rows)

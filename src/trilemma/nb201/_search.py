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
lucky index order. :func:`simulate_search` does this for one precomputed score per cell;
:func:`run_search` does it with the indicators of training-free NAS that rank the evaluated
cells against each other (TE-NAS's rank sum of the NTK condition number and the linear
regions, trilemma's combined indicator) and writes one row per search seed with the chosen
cell (:func:`summarise_search`: mean ± std, cells evaluated, the filter's saving).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trilemma._checks import is_int, is_real
from trilemma.errors import InvalidArgumentError

__all__ = [
    "REFERENCE_WINDOW",
    "CentreFilter",
    "SearchIndicator",
    "SearchResult",
    "centre_filter",
    "run_search",
    "score_pool",
    "search_draw",
    "search_indicator",
    "search_table",
    "simulate_search",
    "summarise_search",
]


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
    window: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> CentreFilter:
    """Keep the cells near the centre of the (d̄, m̄) ranges (NeurIPS 2022).

    Args:
        table: Cells to filter, with ``depth_column`` and ``width_column``.
        fraction: Kept half-width as a fraction of the half-range (paper: 0.5).
        reference: Population defining the ranges (default ``table`` itself; pass the
            whole-space table to filter a sample with the space's ranges).
        depth_column, width_column: Column names of d̄ and m̄.
        window: Fixed ``((d̄ low, d̄ high), (m̄ low, m̄ high))`` instead of the centre of the
            ranges (e.g. :data:`REFERENCE_WINDOW`, the authors' released code); ``fraction``
            and ``reference`` are then unused.

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
    if window is not None:
        (d_lo, d_hi), (w_lo, w_hi) = window
        if not (d_lo <= d_hi and w_lo <= w_hi):
            raise InvalidArgumentError(f"centre_filter: window bounds must be (low, high) pairs, got {window!r}")
        dr, wr = (float(d_lo), float(d_hi)), (float(w_lo), float(w_hi))
    else:
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


# ---------------------------------------------------------------------------- search with measured indicators
#: The window of the NeurIPS 2022 authors' released NASWOT search code (``--dag``): keep
#: ``d̄ ∈ [0.99, 2.51]`` and ``m̄ ∈ [0.99, 3.01]`` (fixed numbers; :func:`centre_filter`
#: derives its window from the space's ranges instead: ``[0.75, 2.25] × [1, 3]`` on NB201).
REFERENCE_WINDOW: tuple[tuple[float, float], tuple[float, float]] = ((0.99, 2.51), (0.99, 3.01))


@dataclass(frozen=True)
class SearchIndicator:
    """How a training-free search scores the cells it evaluates.

    Attributes:
        name: The indicator's name (``--indicator``).
        columns: ``(column, direction)`` pairs it reads (+1: larger is better).
        aggregate: ``"value"`` (one column, as is), ``"rank_sum"`` (TE-NAS: the sum of each
            column's dense rank among the evaluated cells, best rank first) or ``"log_rank"``
            (:func:`~trilemma.nb201.combined_indicator` of the evaluated cells, with weights).
        weights: Column weights of ``"log_rank"``.
        description: One line, with the source.
    """

    name: str
    columns: tuple[tuple[str, int], ...]
    aggregate: str = "value"
    weights: tuple[float, ...] = ()
    description: str = ""


def _builtin_search_indicators() -> dict[str, SearchIndicator]:
    from trilemma.nb201._indicators import COMBINED_VARIANTS, DEFAULT_COMBINED

    design = COMBINED_VARIANTS[DEFAULT_COMBINED]
    return {
        "tenas": SearchIndicator(
            "tenas", (("ntk_condition", -1), ("linear_regions_batch", 1)), "rank_sum",
            description="TE-NAS (Chen, Gong & Wang, ICLR 2021): rank of the NTK condition number (lower is better) "
                        "plus rank of the number of linear regions (higher is better) among the evaluated cells",
        ),
        "trilemma": SearchIndicator(
            "trilemma", tuple((c, d) for c, d, _ in design), "log_rank", tuple(w for *_, w in design),
            description=f"trilemma's combined indicator (design {DEFAULT_COMBINED!r}: "
                        + ", ".join(f"{c} w={w:g}" for c, _, w in design) + ") among the evaluated cells",
        ),
    }


def search_indicator(name: str, directions: Mapping[str, int] | None = None) -> SearchIndicator:
    """The search indicator ``name``: ``"tenas"``, ``"trilemma"``, or any column with a direction.

    Args:
        name: The indicator.
        directions: ``{column: ±1}`` of single-column indicators (default: the closed-form
            :data:`~trilemma.nb201.INDICATORS` and the registered measures' directions).

    Raises:
        UnknownNameError: ``name`` is neither built in nor a column with a known direction.
    """
    from trilemma.errors import UnknownNameError
    from trilemma.nb201._indicators import INDICATORS

    builtin = _builtin_search_indicators()
    if name in builtin:
        return builtin[name]
    dirs = dict(directions or {})
    if name not in dirs and name in INDICATORS:
        dirs[name] = INDICATORS[name].direction
    if name not in dirs:
        try:
            from trilemma.measures import get_measure

            hib = get_measure(name).higher_is_better
        except (ImportError, KeyError):
            hib = None
        if hib is not None:
            dirs[name] = 1 if hib else -1
    if name not in dirs:
        raise UnknownNameError(
            f"unknown search indicator {name!r}: use {', '.join(builtin)}, a closed-form column "
            f"({', '.join(INDICATORS)}) or a measure with a direction (naswot, jacob_cov, ntk_condition, ...)"
        )
    return SearchIndicator(name, ((name, int(dirs[name])),), description=f"{name} ({'+' if dirs[name] > 0 else '−'})")


def _dense_rank_of_quality(values: np.ndarray, direction: int) -> np.ndarray:
    """Dense rank, 0 for the best value (TE-NAS shares a rank between equal values)."""
    return pd.Series(-direction * values).rank(method="dense").to_numpy() - 1.0


def score_pool(pool: pd.DataFrame, indicator: SearchIndicator) -> np.ndarray:
    """Scores of the evaluated cells ``pool`` (larger is better; NaN where a value is missing).

    ``"rank_sum"`` and ``"log_rank"`` indicators rank the cells of the pool against each
    other (as TE-NAS and AZ-NAS do), so a cell's score depends on the pool.
    """
    from trilemma.nb201._indicators import combined_indicator

    values = np.stack([pool[c].to_numpy(dtype=float) for c, _ in indicator.columns], axis=1)
    ok = np.isfinite(values).all(axis=1)
    out = np.full(len(pool), np.nan)
    if not ok.any():
        return out
    if indicator.aggregate == "value":
        out[ok] = indicator.columns[0][1] * values[ok, 0]
    elif indicator.aggregate == "rank_sum":
        ranks = sum(_dense_rank_of_quality(values[ok, k], d) for k, (_, d) in enumerate(indicator.columns))
        out[ok] = -np.asarray(ranks, dtype=float)
    elif indicator.aggregate == "log_rank":
        sub = pool[ok]
        axes = [(c, d, w) for (c, d), w in zip(indicator.columns, indicator.weights)]
        out[ok] = combined_indicator(sub, axes, disconnected_last=False).to_numpy()
    else:
        raise InvalidArgumentError(f"unknown aggregate {indicator.aggregate!r}")
    return out


def search_draw(seed: int, sample_size: int, n: int) -> np.ndarray:
    """The cells (row positions in ``range(n)``) search seed ``seed`` draws: ``sample_size`` distinct, uniformly."""
    if not is_int(sample_size) or not 1 <= sample_size <= n:
        raise InvalidArgumentError(f"sample_size must be an int in [1, {n}], got {sample_size!r}")
    return np.random.default_rng(seed).choice(n, size=sample_size, replace=False)


def run_search(
    table: pd.DataFrame,
    accuracy: np.ndarray,
    indicator: SearchIndicator,
    *,
    seeds: int | Sequence[int] = 20,
    sample_size: int = 100,
    keep: np.ndarray | None = None,
    filter_name: str = "none",
) -> pd.DataFrame:
    """Training-free search, one row per seed: draw, filter, score the rest, pick the best.

    The NeurIPS 2022 protocol on NAS-Bench-201 (the NASWOT budget of Mellor et al., ICML 2021):
    each seed draws ``sample_size`` cells uniformly (:func:`search_draw`; the draws depend on
    the seed only, so every indicator and filter sees the same cells), drops those outside the
    filter (``keep``; they are never measured: the filter's saving of search cost), scores the
    remaining cells with ``indicator`` (:func:`score_pool`) and picks the best (ties broken at
    random, seeded). A cell whose indicator could not be computed (a recorded failure: e.g.
    no input→output path) is ranked below every scored cell.

    Args:
        table: One row per cell (``arch``, ``index`` and the indicator's columns).
        accuracy: Ground truth aligned with ``table``.
        indicator: From :func:`search_indicator`.
        seeds: Number of seeds (``0..seeds-1``) or the seeds.
        sample_size: Cells drawn per seed (NeurIPS 2022 / NASWOT: 100).
        keep: Filter mask aligned with ``table`` (``None``: no filter).
        filter_name: Written in the ``filter`` column.

    Returns:
        Rows ``seed, indicator, filter, arch, index, accuracy, drawn, evaluated, failed,
        optimum`` (``optimum``: the best accuracy among the drawn cells).

    Raises:
        InvalidArgumentError: a missing column, a value that was never computed for an
            evaluated cell (a failure recorded as ``<column>_error`` is not missing), shapes.
    """
    acc = np.asarray(accuracy, dtype=float)
    if acc.shape != (len(table),):
        raise InvalidArgumentError(f"accuracy must have one value per row ({len(table)}), got shape {acc.shape}")
    mask = np.ones(len(table), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    if mask.shape != acc.shape:
        raise InvalidArgumentError(f"keep must have one value per row ({len(table)}), got shape {mask.shape}")
    for col, _ in indicator.columns:
        if col not in table.columns:
            raise InvalidArgumentError(f"search indicator {indicator.name!r} needs column {col!r}; the table has "
                                       f"{', '.join(map(str, table.columns))}")
    seed_list = list(range(seeds)) if is_int(seeds) else list(seeds)
    rows = []
    for seed in seed_list:
        drawn = search_draw(int(seed), sample_size, len(table))
        pool = drawn[mask[drawn]]
        if pool.size == 0:
            pool = drawn  # the filter removed every drawn cell: fall back to the whole draw
        sub = table.iloc[pool]
        for col, _ in indicator.columns:
            values = sub[col].to_numpy(dtype=float)
            err = sub[f"{col}_error"] if f"{col}_error" in sub.columns else pd.Series([None] * len(sub))
            missing = ~np.isfinite(values) & err.isna().to_numpy()
            if missing.any():
                raise InvalidArgumentError(
                    f"seed {seed}: {int(missing.sum())} evaluated cell(s) have no {col!r} value and no recorded "
                    f"failure (e.g. {sub['arch'].iloc[int(np.flatnonzero(missing)[0])]!r}); measure the drawn cells "
                    f"first (trilemma nb201 search --measure)"
                )
        scores = score_pool(sub, indicator)
        failed = ~np.isfinite(scores)
        s = np.where(failed, -np.inf, scores)
        best = np.flatnonzero(s == s.max())
        pick = pool[best[np.random.default_rng([int(seed), 1]).integers(best.size)]]
        rows.append({
            "seed": int(seed), "indicator": indicator.name, "filter": filter_name,
            "arch": str(table["arch"].iloc[pick]), "index": int(table["index"].iloc[pick]),
            "accuracy": float(acc[pick]), "drawn": int(drawn.size), "evaluated": int(pool.size),
            "failed": int(failed.sum()), "optimum": float(acc[drawn].max()),
        })
    return pd.DataFrame(rows)


def summarise_search(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std (over seeds, ``ddof=1``) of the chosen cells' accuracy per indicator and filter,
    cells evaluated per seed and the filter's saving of search cost (``1 − evaluated / drawn``)."""
    out = []
    for (ind, filt), g in rows.groupby(["indicator", "filter"], sort=False):
        out.append({
            "indicator": ind, "filter": filt, "seeds": len(g), "mean": float(g["accuracy"].mean()),
            "std": float(g["accuracy"].std(ddof=1)) if len(g) > 1 else 0.0,
            "evaluated": float(g["evaluated"].mean()), "drawn": float(g["drawn"].mean()),
            "cost_saving": float(1.0 - g["evaluated"].sum() / g["drawn"].sum()),
            "optimum": float(g["optimum"].mean()),
        })
    return pd.DataFrame(out)

"""The papers' remedy, analysed: ensembles and pruned cells ranked among the single cells (Table 1,
Figure 7), the per-architecture learning rate (Figure 8) and Theorem 4.3's convergence rate.

Chen, Huang & Wang (AutoML-Conf 2023) rank every row of Table 1 — the best single cell, a
wide-shallow and a deep-narrow cell, their ensemble and its randomly pruned version — *among
the single cells* on each axis (1 = best, ties share the best rank), and sum the three ranks.
Here the single cells are the rows of the results' reference column (``role="reference"``;
the ensemble space's ``single_cell``); every other row is *placed* among them: its rank on an
axis is one plus the number of reference rows strictly better, which for a reference row is
exactly its ``"min"`` rank among them (:func:`placed_ranks`).

Everything is driven by the table: the members of a pruning grid are read from the
``member_cells`` / ``member_ratios`` columns, the paper's rows from
:data:`~trilemma.analysis.PUBLISHED_TABLE1`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trilemma._stats import placed_rank, rank_correlation_value
from trilemma.analysis._correlation import rank_correlation
from trilemma.analysis._metrics import schema_of
from trilemma.analysis._published import (
    PUBLISHED_CORRELATIONS,
    PUBLISHED_FIG7_TAU,
    PUBLISHED_TABLE1,
    PublishedRank,
)
from trilemma.analysis._ranking import Objective
from trilemma.analysis._table import check_frame, numeric_column
from trilemma.errors import InvalidArgumentError, TrilemmaError

__all__ = [
    "ConvergenceRateSummary",
    "PruningGrid",
    "Table1",
    "best_lr_correlations",
    "convergence_rate_summary",
    "lr_table",
    "placed_ranks",
    "pruning_grids",
    "reference_mask",
    "table1",
]

logger = logging.getLogger(__name__)


def reference_mask(df: pd.DataFrame) -> np.ndarray:
    """Which rows form the reference population: the schema's ``role="reference"`` column (true
    values), or every row when the table has none."""
    check_frame(df)
    col = schema_of(df).reference()
    if col is None or col not in df.columns:
        return np.ones(len(df), dtype=bool)
    return np.array([bool(v) if isinstance(v, (bool, np.bool_)) else False for v in df[col]], dtype=bool)


def placed_ranks(df: pd.DataFrame, objectives: Sequence[Objective], *, reference: np.ndarray | None = None,
                 arch_col: str = "arch") -> pd.DataFrame:
    """Every row's rank on each objective among the reference rows (1 = best; ties: min rank).

    Args:
        df: Results, one row per architecture.
        objectives: The axes and their ground-truth columns.
        reference: Boolean mask of the reference rows (default :func:`reference_mask`).
        arch_col: The architecture column.

    Returns:
        ``arch_col``, ``reference``, the objective columns, ``rank_<axis>`` (``1 + #`` reference
        rows strictly better; NaN without a value) and ``rank_sum``, in the table's order.

    Raises:
        InvalidArgumentError: no objective, a missing column, or no reference row with values.
    """
    if not objectives:
        raise InvalidArgumentError("placed_ranks needs at least one objective")
    check_frame(df, [arch_col, *[o.column for o in objectives]])
    ref = reference_mask(df) if reference is None else np.asarray(reference, dtype=bool)
    if ref.shape != (len(df),):
        raise InvalidArgumentError(f"reference must have one flag per row ({len(df)}), got shape {ref.shape}")
    out = pd.DataFrame({arch_col: df[arch_col].to_numpy(), "reference": ref})
    for o in objectives:
        values = numeric_column(df, o.column)
        if not np.isfinite(values[ref]).any():
            raise InvalidArgumentError(f"no reference row has a value of {o.column!r}; nothing to rank against")
        out[o.column] = values
        out[f"rank_{o.axis}"] = placed_rank(values, values[ref], o.higher_is_better)
    out["rank_sum"] = out[[f"rank_{o.axis}" for o in objectives]].sum(axis=1, min_count=len(objectives))
    return out


# --------------------------------------------------------------------------- Table 1
@dataclass(frozen=True)
class Table1:
    """Our Table 1 next to the paper's.

    Attributes:
        rows: One row per Table 1 row: ``row``, ``label``, ``arch``, ``in_study``, ``P``,
            ``mean_depth``, ``params`` (effective), ``pruning``, ``rank_<axis>``, ``rank_sum``,
            then the paper's ``paper_arch``, ``paper_params_m``, ``paper_rank_<axis>``,
            ``paper_rank_sum``.
        n_reference: Single cells ranked against.
        objectives: The axes and columns ranked.
        params_column: The parameter column shown (effective counts when the table has them).
        notes: What the reader should know.
    """

    rows: pd.DataFrame
    n_reference: int
    objectives: tuple[Objective, ...]
    params_column: str
    notes: tuple[str, ...] = ()

    def rank_sum(self, row: str) -> float | None:
        """Our rank sum of Table 1 row ``row`` (``None`` when not in the study)."""
        r = self.rows[self.rows["row"] == row]
        value = float(r["rank_sum"].iloc[0]) if len(r) else math.nan
        return value if math.isfinite(value) else None

    @property
    def v_beats_i(self) -> bool | None:
        """Whether the pruned ensemble (row V) has a lower rank sum than our best single cell (row I)."""
        v, i = self.rank_sum("V"), self.rank_sum("I")
        return None if v is None or i is None else v < i


def _row_values(df: pd.DataFrame, placed: pd.DataFrame, arch: str, objectives: Sequence[Objective], arch_col: str,
                params_col: str) -> dict[str, Any]:
    hit = np.flatnonzero(df[arch_col].astype(str).to_numpy() == arch)
    out: dict[str, Any] = {"arch": arch, "in_study": bool(len(hit))}
    if not len(hit):
        out.update({"P": None, "mean_depth": None, "params": None, "pruning": None, "rank_sum": math.nan,
                    **{f"rank_{o.axis}": math.nan for o in objectives}})
        return out
    i = int(hit[0])
    get = (lambda c: df[c].iloc[i] if c in df.columns else None)  # noqa: E731
    out.update({"P": get("P"), "mean_depth": get("mean_depth"), "params": get(params_col),
                "pruning": get("member_ratios"), "rank_sum": placed["rank_sum"].iloc[i],
                **{f"rank_{o.axis}": placed[f"rank_{o.axis}"].iloc[i] for o in objectives}})
    return out


def table1(df: pd.DataFrame, objectives: Sequence[Objective], *, reference: np.ndarray | None = None,
           arch_col: str = "arch", published: Sequence[PublishedRank] = PUBLISHED_TABLE1) -> Table1:
    """Our Table 1 (Chen, Huang & Wang, AutoML-Conf 2023) beside the published one.

    Row I is *our* best single cell by rank sum (ties: by name), the other rows are the paper's
    architectures; a row whose architecture the study did not train is kept, marked
    ``in_study = False``. When our row I is not the paper's (``2_22_221``), the paper's cell is
    added as row ``"I (paper's cell)"`` so both can be read.

    Raises:
        InvalidArgumentError: no objective or no reference row with values.
    """
    placed = placed_ranks(df, objectives, reference=reference, arch_col=arch_col)
    ref = placed["reference"].to_numpy()
    params_col = "effective_params" if "effective_params" in df.columns else "params"
    ranked = placed[ref & placed["rank_sum"].notna().to_numpy()]
    if ranked.empty:
        raise InvalidArgumentError("no single cell has a value on every axis; Table 1 needs them")
    best = ranked.sort_values(["rank_sum", arch_col], kind="stable").iloc[0][arch_col]
    rows = []
    notes = []
    for pub in published:
        arch = str(best) if pub.row == "I" else pub.arch
        rec = {"row": pub.row, "label": pub.label, **_row_values(df, placed, arch, objectives, arch_col, params_col)}
        rec.update(_paper(pub, objectives))
        rows.append(rec)
        if pub.row == "I" and arch != pub.arch:
            extra = {"row": "I (paper's cell)", "label": "the paper's best single cell",
                     **_row_values(df, placed, pub.arch, objectives, arch_col, params_col), **_paper(pub, objectives)}
            rows.append(extra)
            notes.append(f"our best single cell by rank sum is {best}; the paper's row I, {pub.arch}, is shown "
                         "next to it")
        if not rec["in_study"]:
            notes.append(f"row {pub.row} ({arch}) is not in this study")
    frame = pd.DataFrame(rows)
    return Table1(frame, int(ref.sum()), tuple(objectives), params_col, tuple(notes))


def _paper(pub: PublishedRank, objectives: Sequence[Objective]) -> dict[str, Any]:
    out: dict[str, Any] = {"paper_arch": pub.arch, "paper_params_m": pub.params_millions}
    for o in objectives:
        out[f"paper_rank_{o.axis}"] = getattr(pub, o.axis, None)
    out["paper_rank_sum"] = pub.rank_sum
    return out


# --------------------------------------------------------------------------- Figure 7
@dataclass(frozen=True)
class PruningGrid:
    """One grid of pruning ratios over a fixed set of member cells (the paper's Figure 7).

    Attributes:
        members: The member cells, in order.
        points: ``arch``, ``ratio_1`` … (one per member), ``rank_<axis>``, ``rank_sum``,
            ``params`` (effective when available).
        taus: ``{member: (Kendall τ of its ratio vs the rank sum, p value)}`` (NaN when undefined).
        published: ``{member: the paper's τ}`` for the members the paper reports.
    """

    members: tuple[str, ...]
    points: pd.DataFrame
    taus: Mapping[str, tuple[float, float]]
    published: Mapping[str, float] = field(default_factory=dict)

    @property
    def best(self) -> pd.Series:
        """The grid point with the lowest rank sum (ties: the fewest parameters)."""
        return self.points.sort_values(["rank_sum", "params"], kind="stable").iloc[0]


def _published_fig7(members: tuple[str, ...]) -> dict[str, float]:
    roles = {r.row: r.arch for r in PUBLISHED_TABLE1}
    wide, deep = roles.get("II"), roles.get("III")
    out = {}
    if wide in members:
        out[wide] = PUBLISHED_FIG7_TAU["wide_shallow_ratio"]
    if deep in members:
        out[deep] = PUBLISHED_FIG7_TAU["deep_narrow_ratio"]
    return out


def pruning_grids(df: pd.DataFrame, placed: pd.DataFrame, *, min_points: int = 4,
                  arch_col: str = "arch") -> tuple[PruningGrid, ...]:
    """The pruning grids of a results table: rows with two or more members (stem and readout
    unpruned) grouped by their member cells, kept when the group has ``min_points`` distinct
    ratio combinations.

    Args:
        df: Results with ``member_cells`` and ``member_ratios`` (the ensemble space's columns).
        placed: :func:`placed_ranks` of ``df`` (same row order).
        min_points: Smallest grid reported.

    Returns:
        The grids (empty when the table has no such columns).
    """
    if not {"member_cells", "member_ratios"} <= set(df.columns) or "rank_sum" not in placed:
        return ()
    params_col = "effective_params" if "effective_params" in df.columns else "params"
    groups: dict[str, list[int]] = {}
    for i, (cells, ratios) in enumerate(zip(df["member_cells"], df["member_ratios"])):
        if not isinstance(cells, str) or "+" not in cells or not isinstance(ratios, str):
            continue
        if any(float(df[c].iloc[i] or 0) > 0 for c in ("stem_ratio", "readout_ratio") if c in df.columns):
            continue
        groups.setdefault(cells, []).append(i)
    out = []
    rank_cols = [c for c in placed.columns if c.startswith("rank_")]
    for cells, idx in groups.items():
        members = tuple(cells.split("+"))
        ratios = np.array([[float(r) for r in str(df["member_ratios"].iloc[i]).split("/")] for i in idx])
        if len({tuple(r) for r in ratios}) < min_points:
            continue
        pts = pd.DataFrame({"arch": df[arch_col].iloc[idx].to_numpy()})
        for k in range(len(members)):
            pts[f"ratio_{k + 1}"] = ratios[:, k]
        for c in rank_cols:
            pts[c] = placed[c].iloc[idx].to_numpy()
        pts["params"] = df[params_col].iloc[idx].to_numpy() if params_col in df.columns else np.nan
        pts = pts[pts["rank_sum"].notna()].reset_index(drop=True)
        if len(pts) < min_points:
            continue
        taus = {}
        for k, member in enumerate(members):
            key = member if members.count(member) == 1 else f"{member} (member {k + 1})"
            taus[key] = rank_correlation_value(pts[f"ratio_{k + 1}"], pts["rank_sum"])
        out.append(PruningGrid(members, pts, taus, _published_fig7(members)))
    return tuple(out)


# --------------------------------------------------------------------------- Figure 8
def lr_table(df: pd.DataFrame, *, arch_col: str = "arch", column: str = "best_lr") -> pd.DataFrame:
    """Architecture → chosen learning rate (the authors' ``lrs.txt``), rows with a choice only."""
    check_frame(df, [arch_col, column])
    values = numeric_column(df, column)
    ok = np.isfinite(values)
    return pd.DataFrame({arch_col: df[arch_col].to_numpy()[ok], column: values[ok]})


def best_lr_correlations(df: pd.DataFrame, pairs: Sequence[tuple[str, str, str]], *,
                         versus: Sequence[str] = ("mean_depth", "P"), n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Kendall τ of the best-LR ground truths (and, beside them, the default-LR ones) against
    the topology, over architectures and over (P, d̄) groups, next to the paper's Figure 8.

    Args:
        df: Results (reference rows only: the single cells).
        pairs: ``(axis, best-LR column, default-LR column)`` per axis.
        versus: Topology columns.
        n_boot: Bootstrap resamples of each interval.
        seed: Bootstrap seed.

    Returns:
        ``axis, column, versus, tau_arch, tau_arch_low, tau_arch_high, tau_group, default_tau_arch,
        default_tau_group, n_arch, paper`` (the paper's Fig. 8 value).
    """
    published = {(p.axis, p.versus): p.value for p in PUBLISHED_CORRELATIONS if p.setting == "best LR"}
    rows = []
    for axis, col, default in pairs:
        for x in versus:
            rec: dict[str, Any] = {"axis": axis, "column": col, "versus": x, "paper": published.get((axis, x), math.nan)}
            for prefix, y in (("", col), ("default_", default)):
                for level, key in (("architecture", "arch"), ("group", "group")):
                    try:
                        c = rank_correlation(df, x, y, level=level, n_boot=n_boot if not prefix else 0, seed=seed)  # type: ignore[arg-type]
                    except TrilemmaError as err:
                        logger.info("Fig. 8: no τ of %s vs %s (%s): %s", y, x, level, err)
                        rec[f"{prefix}tau_{key}"] = math.nan
                        continue
                    rec[f"{prefix}tau_{key}"] = c.value
                    if not prefix:
                        rec[f"tau_{key}_low"], rec[f"tau_{key}_high"] = c.ci_low, c.ci_high
                        rec[f"n_{key}"] = c.n
            rows.append(rec)
    cols = ["axis", "column", "versus", "tau_arch", "tau_arch_low", "tau_arch_high", "n_arch", "tau_group",
            "tau_group_low", "tau_group_high", "n_group", "default_tau_arch", "default_tau_group", "paper"]
    return pd.DataFrame(rows).reindex(columns=cols)


# --------------------------------------------------------------------------- Theorem 4.3
@dataclass(frozen=True)
class ConvergenceRateSummary:
    """Theorem 4.3 checked on a set of architectures (the ``convergence_rate`` task's columns).

    Attributes:
        cells: ``arch, gd_rate, gd_bound_rate, gd_within_bound, gd_first_violation, gd_lambda_min, gd_eta``.
        n: Architectures checked.
        within: Of those, how many stayed under the bound at every step.
        tau_rate_bound: Kendall τ between the measured and the theorem's rate.
    """

    cells: pd.DataFrame
    n: int
    within: int
    tau_rate_bound: float

    def sentence(self) -> str:
        """One sentence for the report."""
        text = (f"Full-batch gradient descent stayed under Theorem 4.3's bound (1 − ηλ_min(K)/2)^k at every step for "
                f"{self.within} of {self.n} architectures; Kendall τ between the measured per-step contraction and "
                f"the theorem's rate is {self.tau_rate_bound:+.2f}.")
        if self.within < self.n:
            text += (f" The other {self.n - self.within} contract more slowly than the bound at some step: at finite "
                     "width the tangent kernel moves during training, which the infinite-width argument ignores.")
        return text


def convergence_rate_summary(df: pd.DataFrame, *, arch_col: str = "arch") -> ConvergenceRateSummary | None:
    """Summarize the ``convergence_rate`` columns (``None`` when the table has none)."""
    if "gd_rate" not in df.columns or "gd_bound_rate" not in df.columns:
        return None
    cols = [c for c in (arch_col, "gd_rate", "gd_bound_rate", "gd_within_bound", "gd_first_violation",
                        "gd_lambda_min", "gd_eta", "P", "mean_depth") if c in df.columns]
    cells = df[cols][np.isfinite(numeric_column(df, "gd_rate"))].reset_index(drop=True)
    if cells.empty:
        return None
    within = int(sum(bool(v) for v in cells["gd_within_bound"] if v is not None and v == v))
    tau, _ = rank_correlation_value(cells["gd_rate"], cells["gd_bound_rate"])
    return ConvergenceRateSummary(cells, len(cells), within, tau)

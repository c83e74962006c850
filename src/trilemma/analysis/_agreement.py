"""Agreement tables: theory vs measures at initialization vs trained ground truth, per axis.

For each axis (the paper's Figures 4 and 6, Chen, Huang & Wang, AutoML-Conf 2023) the columns
that speak about it are split by kind — topology (d̄, P), closed-form theory, measures at
initialization, trained ground truth — and every pair of columns of different kinds is rank-
correlated (with a bootstrap interval, over architectures and over (P, d̄) group means). Each
row says which sign the theory predicts, whether the data agree, and — where the paper
published the same correlation — the published value beside ours.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trilemma._schema import ResultSchema
from trilemma.analysis._correlation import LEVELS, METHODS, rank_correlation
from trilemma.analysis._metrics import AXES, AxisSpec, check_axis, default_axes, direction, schema_of
from trilemma.analysis._published import PUBLISHED_CORRELATIONS, PublishedCorrelation
from trilemma.analysis._table import check_frame
from trilemma.errors import InvalidArgumentError, TrilemmaError, UnknownNameError

__all__ = ["AxisColumns", "default_axis_columns", "agreement_table", "published_columns", "AGREEMENT_COLUMNS"]

logger = logging.getLogger(__name__)

#: Leading columns of :func:`agreement_table` (published-value columns follow).
AGREEMENT_COLUMNS: tuple[str, ...] = (
    "axis", "x", "x_kind", "y", "y_kind", "method", "level", "n", "value", "ci_low", "ci_high",
    "p_value", "sign", "oriented", "agrees", "ci_excludes_zero", "note", "n_boot_valid",
)



#: The kinds of columns an agreement table correlates, upstream to downstream.
AGREEMENT_KINDS: tuple[str, ...] = ("topology", "cost", "theory", "init", "trained")


@dataclass(frozen=True)
class AxisColumns:
    """The columns that speak about one axis, by kind.

    Attributes:
        axis: The axis.
        topology: Topology columns (default: the schema's topology-group keys, d̄ and P in
            the DAG space).
        cost: Cost columns with a direction on the axis (#params, FLOPs as indicators).
        theory: Closed-form theory columns.
        init: Columns measured at initialization.
        trained: Trained ground-truth columns, the axis's main one first.
    """

    axis: str
    topology: tuple[str, ...] = ()
    theory: tuple[str, ...] = ()
    init: tuple[str, ...] = ()
    trained: tuple[str, ...] = ()
    cost: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_axis(self.axis)
        for kind in AGREEMENT_KINDS:
            value = getattr(self, kind)
            if isinstance(value, str):
                raise InvalidArgumentError(f"AxisColumns.{kind} must be a tuple of column names, got the string {value!r}")
            object.__setattr__(self, kind, tuple(value))

    def by_kind(self) -> list[tuple[str, str]]:
        """``[(kind, column), ...]`` upstream to downstream."""
        return [(kind, col) for kind in AGREEMENT_KINDS for col in getattr(self, kind)]

    @property
    def ground_truth(self) -> str | None:
        """The main trained column, if any."""
        return self.trained[0] if self.trained else None


def default_axis_columns(df: pd.DataFrame, axes: Sequence[AxisSpec] | None = None,
                         schema: ResultSchema | None = None) -> tuple[AxisColumns, ...]:
    """The schema's columns of each kind present in ``df``, per axis.

    Topology: the schema's topology-group keys. Cost / theory / init / trained: every column
    of that kind with a direction on the axis, the axis's ground truth first among the
    trained ones.

    Args:
        df: The results table.
        axes: Each axis's ground truth (default: the schema's, :func:`default_axes`).
        schema: The table's schema (default: :func:`schema_of` ``(df)``).
    """
    check_frame(df)
    schema = schema_of(df) if schema is None else schema
    axes = default_axes(schema=schema) if axes is None else axes
    present = set(df.columns)
    truth = {spec.name: spec for spec in axes}
    groups = tuple(c for c in schema.group_keys() if c in present)
    out = []
    for axis in AXES:
        spec = truth.get(axis)
        trained = [c for c in spec.ground_truth if c in present][:1] if spec else []
        trained += [c for c in schema.names("trained", axis) if c in present and c not in trained]
        if spec is None and axis not in {a for c in schema for a in c.directions}:
            continue
        out.append(AxisColumns(
            axis=axis,
            topology=groups,
            cost=tuple(c for c in schema.names("cost", axis) if c in present),
            theory=tuple(c for c in schema.names("theory", axis) if c in present),
            init=tuple(c for c in schema.names("init", axis) if c in present),
            trained=tuple(trained),
        ))
    return tuple(out)


def published_columns() -> list[str]:
    """Names of the published-value columns of :func:`agreement_table`: ``paper:<figure dataset>``
    (e.g. ``"paper:Fig. 3 Tiny-ImageNet"``), one per published figure and dataset."""
    seen: list[str] = []
    for p in PUBLISHED_CORRELATIONS:
        name = f"paper:{p.dataset_label}"
        if name not in seen:
            seen.append(name)
    return seen


#: Producers whose columns are the papers' quantities: the DAG space's topology (also the
#: ensemble space's, whose single cells are the DAG cells: its report covers those rows), the
#: training task's ground truth and the measures (published values are attached only to those).
_PAPER_SOURCES = {"topology": ("space:dag", "space:ensemble"), "trained": ("train",), "init": ("measures",)}


def _is_papers(column: str, kind: str, schema: ResultSchema | None) -> bool:
    if schema is None:
        return True
    col = schema.find(column)
    return col is not None and col.source in _PAPER_SOURCES.get(kind, ())


def _published_for(axis: str, x: str, x_kind: str, y: str, y_kind: str, ground_truth: str | None,
                   schema: ResultSchema | None = None) -> list[PublishedCorrelation]:
    """The published values of the pair ``(x, y)``: only where both columns are the papers'
    quantities (a NAS-Bench-201 accuracy against its own P is not the papers' Figure 3)."""
    if not (_is_papers(x, x_kind, schema) and _is_papers(y, y_kind, schema)):
        return []
    out = []
    for p in PUBLISHED_CORRELATIONS:
        if p.versus != x or p.axis != axis:
            continue
        if x_kind == "topology" and p.kind == "trained" and y_kind == "trained" and y == ground_truth:
            out.append(p)
        elif x_kind == "topology" and p.kind == "init" and y_kind == "init" and y == p.quantity:
            out.append(p)
        elif x_kind == "init" and p.kind == "init_trained" and y_kind == "trained" and y == ground_truth:
            out.append(p)
    return out


def _safe_direction(column: str, axis: str, overrides: Mapping[str, bool] | None,
                    schema: ResultSchema | None = None) -> bool | None:
    try:
        return direction(column, axis, overrides, schema)
    except UnknownNameError:
        return None


def agreement_table(
    df: pd.DataFrame,
    columns: Sequence[AxisColumns] | None = None,
    *,
    methods: Sequence[str] = ("kendall",),
    levels: Sequence[str] = LEVELS,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    group_by: Sequence[str] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
) -> pd.DataFrame:
    """Rank correlations between every pair of columns of different kinds, per axis.

    Args:
        df: Results, one row per architecture.
        columns: Per-axis column sets (default :func:`default_axis_columns`).
        methods: Subset of ``("kendall", "spearman")``.
        levels: Subset of ``("architecture", "group")``.
        n_boot: Bootstrap resamples per correlation.
        confidence: Coverage of the intervals.
        seed: Seed of every bootstrap (each correlation uses the same seed).
        group_by: Topology-group keys for the group level.
        higher_is_better: ``{column: bool}`` direction overrides (applied on every axis).

    Returns:
        One row per (axis, pair, method, level) with :data:`AGREEMENT_COLUMNS`: ``x`` is the
        upstream column (topology < theory < init < trained), ``value`` the raw correlation,
        ``sign`` the orientation the theory implies (None when a direction is unknown),
        ``oriented = sign · value``, ``agrees = oriented > 0``, ``note`` the reason when a
        correlation is undefined (then ``value`` is NaN), ``n_boot_valid`` the bootstrap
        resamples that gave a defined value (few architectures make some constant). Then one ``paper:<dataset>`` column
        per published dataset (see :func:`published_columns`), holding the published Kendall τ
        where the paper reports this pair (Kendall rows only), NaN where it does not.

    Raises:
        InvalidArgumentError: an option is out of range or a listed column is missing.
    """
    check_frame(df)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise InvalidArgumentError(f"methods must be a non-empty subset of {METHODS}, got {tuple(methods)}")
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise InvalidArgumentError(f"levels must be a non-empty subset of {LEVELS}, got {tuple(levels)}")
    schema = schema_of(df)
    specs = default_axis_columns(df, schema=schema) if columns is None else tuple(columns)
    if group_by is None and not schema.group_keys():
        levels = tuple(lv for lv in levels if lv != "group")  # no topology groups in this space
        if not levels:
            raise InvalidArgumentError("the table's schema declares no topology groups; use levels=('architecture',)")
    for spec in specs:
        check_frame(df, [c for _, c in spec.by_kind()])
    paper_cols = published_columns()
    rows: list[dict[str, object]] = []
    for spec in specs:
        entries = spec.by_kind()
        for i, (kx, cx) in enumerate(entries):
            for ky, cy in entries[i + 1:]:
                if kx == ky or cx == cy:
                    continue
                hx = _safe_direction(cx, spec.axis, higher_is_better, schema)
                hy = _safe_direction(cy, spec.axis, higher_is_better, schema)
                published = _published_for(spec.axis, cx, kx, cy, ky, spec.ground_truth, schema)
                for method in methods:
                    for level in levels:
                        row: dict[str, object] = {"axis": spec.axis, "x": cx, "x_kind": kx, "y": cy, "y_kind": ky,
                                                  "method": method, "level": level}
                        try:
                            c = rank_correlation(
                                df, cx, cy, method=method, level=level,  # type: ignore[arg-type]  # checked above group_by=group_by, n_boot=n_boot,
                                confidence=confidence, seed=seed, x_higher_is_better=hx, y_higher_is_better=hy,
                            )
                        except TrilemmaError as exc:  # undefined (constant column, too few points)
                            logger.info("agreement %s: %s vs %s (%s, %s) undefined: %s",
                                        spec.axis, cx, cy, method, level, exc)
                            row.update(n=0, value=np.nan, ci_low=np.nan, ci_high=np.nan, p_value=np.nan,
                                       sign=None, oriented=np.nan, agrees=None, ci_excludes_zero=None,
                                       note=str(exc), n_boot_valid=0)
                        else:
                            oriented = c.oriented
                            row.update(
                                n=c.n, value=c.value,
                                ci_low=np.nan if c.ci_low is None else c.ci_low,
                                ci_high=np.nan if c.ci_high is None else c.ci_high,
                                p_value=c.p_value, sign=c.sign,
                                oriented=np.nan if oriented is None else oriented,
                                agrees=None if oriented is None else bool(oriented > 0),
                                ci_excludes_zero=c.ci_excludes_zero, note="", n_boot_valid=c.n_boot_valid,
                            )
                        for name in paper_cols:
                            row[name] = np.nan
                        if method == "kendall":
                            for p in published:
                                row[f"paper:{p.dataset_label}"] = p.value
                        rows.append(row)
    out = pd.DataFrame(rows, columns=[*AGREEMENT_COLUMNS, *paper_cols])
    for name in paper_cols:
        out[name] = out[name].astype(float)
    order = {a: i for i, a in enumerate(AXES)}
    return out.sort_values("axis", key=lambda s: s.map(order), kind="stable", ignore_index=True)

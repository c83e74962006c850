"""Ranks, the Pareto front and the no-free-lunch verdict over the three axes.

An *objective* is an axis with the column that measures it and its direction. Ranks follow
the paper's Table 1 (Chen, Huang & Wang, AutoML-Conf 2023): each architecture's rank on each
axis (1 = best) and the rank sum. Ties share a rank; the default ``"min"`` method gives tied
architectures the best rank of their block and skips the following ones (1, 2, 2, 4), like a
competition; ``"average"`` gives them the mean rank (1, 2.5, 2.5, 4).

The verdict answers the papers' question: is one architecture optimal on all three axes?
If not ("no free lunch"), it names each axis's winner and how far that winner is from the
best on the other axes (its rank there, and its gap in the metric's units, relative to the
best value and as a fraction of the axis's observed range).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from trilemma._checks import is_int
from trilemma._schema import AXES
from trilemma.analysis._metrics import AxisSpec, check_axis, default_axes, direction, get_metric, schema_of
from trilemma.analysis._table import check_frame, numeric_column
from trilemma.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError

__all__ = [
    "RANK_METHODS",
    "Objective",
    "resolve_objectives",
    "available_objectives",
    "NOT_MEASURED",
    "NO_VALUES",
    "rank_table",
    "best_per_axis",
    "pareto_front",
    "pareto_layers",
    "AxisResult",
    "Standing",
    "Verdict",
    "verdict",
]

logger = logging.getLogger(__name__)

RANK_METHODS: tuple[str, ...] = ("min", "average", "dense", "max")
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class Objective:
    """One axis as measured in a results table.

    Attributes:
        axis: The axis (one of ``AXES``).
        column: The column that measures it.
        higher_is_better: Direction of the column on this axis.
    """

    axis: str
    column: str
    higher_is_better: bool

    @property
    def label(self) -> str:
        """Display label of the column (from the metric table when registered)."""
        try:
            return get_metric(self.column).label
        except UnknownNameError:
            return self.column


def resolve_objectives(
    df: pd.DataFrame,
    objectives: Mapping[str, str] | Sequence[Objective] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    axes: Sequence[AxisSpec] | None = None,
) -> tuple[Objective, ...]:
    """Turn an ``{axis: column}`` mapping (or the defaults) into :class:`Objective` s.

    Args:
        df: The results table (to check columns and pick default ground truths).
        objectives: ``{axis: column}``, a sequence of :class:`Objective`, or ``None`` for
            each axis's ground truth (see :func:`~trilemma.analysis.default_axes`).
        higher_is_better: ``{column: bool}`` overriding the metric table's direction.
        axes: Axis specs used when ``objectives`` is None.

    Returns:
        Objectives in the given (or axis) order.

    Raises:
        InvalidArgumentError: a column is missing or an axis appears twice.
        UnknownNameError: an axis name is unknown, or a column has no known direction.
    """
    check_frame(df)
    schema = schema_of(df)
    if objectives is None:
        axes = default_axes(schema=schema) if axes is None else axes
        out = tuple(
            Objective(a.name, col, direction(col, a.name, higher_is_better, schema))
            for a in axes
            for col in [a.resolve(list(df.columns))]
        )
    elif isinstance(objectives, Mapping):
        out = tuple(
            Objective(check_axis(axis), col, direction(col, axis, higher_is_better, schema))
            for axis, col in objectives.items()
        )
    else:
        out = tuple(objectives)
        for o in out:
            if not isinstance(o, Objective):
                raise InvalidTypeError(f"objectives must be Objective instances, got {type(o).__name__}")
    if not out:
        raise InvalidArgumentError("at least one objective is needed, got none")
    seen = [o.axis for o in out]
    if len(set(seen)) != len(seen):
        raise InvalidArgumentError(f"each axis may appear once in objectives, got {seen}")
    check_frame(df, [o.column for o in out])
    for o in out:
        numeric_column(df, o.column)
    return out


#: Why an axis has no objective in a table (see :func:`available_objectives`).
NOT_MEASURED = "not measured in this study (add a [training] section)"
NO_VALUES = "measured, but no architecture has a value (e.g. none converged)"


def available_objectives(
    df: pd.DataFrame,
    higher_is_better: Mapping[str, bool] | None = None,
    axes: Sequence[AxisSpec] | None = None,
) -> tuple[tuple[Objective, ...], dict[str, str]]:
    """The objectives a table supports, and why the others are missing.

    Unlike :func:`resolve_objectives`, a missing ground truth is not an error: the axis is
    reported as missing so that a report can still show everything else.

    Returns:
        ``(objectives, missing)`` with ``missing = {axis: reason}`` (:data:`NOT_MEASURED` when
        no ground-truth column is present, :data:`NO_VALUES` when it is present but empty).
    """
    check_frame(df)
    schema = schema_of(df)
    axes = default_axes(schema=schema) if axes is None else axes
    out: list[Objective] = []
    missing: dict[str, str] = {a: NOT_MEASURED for a in AXES if a not in {s.name for s in axes}}
    for a in axes:
        present = [c for c in a.ground_truth if c in df.columns]
        if not present:
            missing[a.name] = NOT_MEASURED
            continue
        col = present[0]
        if not np.isfinite(numeric_column(df, col)).any():
            missing[a.name] = NO_VALUES
            continue
        out.append(Objective(a.name, col, direction(col, a.name, higher_is_better, schema)))
    return tuple(out), {a: missing[a] for a in AXES if a in missing}


def _check_arch(df: pd.DataFrame, arch_col: str) -> None:
    check_frame(df, [arch_col])
    dup = df[arch_col][df[arch_col].duplicated()]
    if len(dup):
        raise InvalidArgumentError(
            f"column {arch_col!r} must name each architecture once, but {len(dup)} repeat "
            f"(e.g. {dup.iloc[0]!r}); average the seeds first with aggregate_seeds()"
        )


def _complete_rows(df: pd.DataFrame, objectives: Sequence[Objective]) -> tuple[pd.DataFrame, int]:
    values = np.column_stack([numeric_column(df, o.column) for o in objectives])
    mask = np.isfinite(values).all(axis=1)
    n_excluded = int((~mask).sum())
    if n_excluded:
        logger.info("%d architecture(s) lack a finite value for %s and are left out",
                    n_excluded, ", ".join(o.column for o in objectives))
    return df.loc[mask], n_excluded


def rank_table(
    df: pd.DataFrame,
    objectives: Mapping[str, str] | Sequence[Objective] | None = None,
    *,
    higher_is_better: Mapping[str, bool] | None = None,
    method: str = "min",
    arch_col: str = "arch",
) -> pd.DataFrame:
    """Each architecture's rank on each axis and the rank sum (the paper's Table 1).

    Args:
        df: Results, one row per architecture.
        objectives: ``{axis: column}`` (default: each axis's ground truth, see
            :func:`resolve_objectives`).
        higher_is_better: ``{column: bool}`` direction overrides.
        method: Tie handling, one of ``"min"`` (default; ties share the best rank of their
            block: 1, 2, 2, 4), ``"average"`` (1, 2.5, 2.5, 4), ``"dense"`` (1, 2, 2, 3),
            ``"max"`` (1, 3, 3, 4).
        arch_col: The architecture column (values must be unique).

    Returns:
        One row per architecture with a finite value on every axis: ``arch_col``, the
        objective columns, ``rank_<axis>`` for each axis (1 = best), ``rank_sum``; sorted by
        rank sum, then by name. Rows with a missing value are left out (logged).

    Raises:
        InvalidArgumentError: bad ``method``, a missing column, or repeated architectures.
    """
    if method not in RANK_METHODS:
        raise InvalidArgumentError(f"method must be one of {', '.join(RANK_METHODS)}, got {method!r}")
    objs = resolve_objectives(df, objectives, higher_is_better)
    _check_arch(df, arch_col)
    data, _ = _complete_rows(df, objs)
    out = pd.DataFrame({arch_col: data[arch_col].to_numpy()})
    for o in objs:
        if o.column != arch_col:
            out[o.column] = numeric_column(data, o.column)
    for o in objs:
        values = pd.Series(numeric_column(data, o.column))
        out[f"rank_{o.axis}"] = values.rank(method=method, ascending=not o.higher_is_better).to_numpy()
    out["rank_sum"] = out[[f"rank_{o.axis}" for o in objs]].sum(axis=1)
    return out.sort_values(["rank_sum", arch_col], kind="stable", ignore_index=True)


def best_per_axis(
    df: pd.DataFrame,
    objectives: Mapping[str, str] | Sequence[Objective] | None = None,
    *,
    k: int = 5,
    higher_is_better: Mapping[str, bool] | None = None,
    arch_col: str = "arch",
) -> pd.DataFrame:
    """The ``k`` best architectures of each axis.

    Returns:
        Long table ``axis, column, rank, arch_col, value`` (``rank`` with the "min" tie
        method, so more than ``k`` rows per axis when the k-th place is tied).
    """
    if not is_int(k) or k < 1:
        raise InvalidArgumentError(f"k must be an int >= 1, got {k!r}")
    objs = resolve_objectives(df, objectives, higher_is_better)
    _check_arch(df, arch_col)
    rows = []
    for o in objs:
        values = pd.Series(numeric_column(df, o.column), index=df.index)
        ok = values.notna()
        ranks = values[ok].rank(method="min", ascending=not o.higher_is_better)
        top = ranks[ranks <= k].sort_values(kind="stable")
        for i, r in top.items():
            rows.append({"axis": o.axis, "column": o.column, "rank": float(r),
                         arch_col: df.at[i, arch_col], "value": float(values[i])})
    return pd.DataFrame(rows, columns=["axis", "column", "rank", arch_col, "value"])


def _minimization_matrix(df: pd.DataFrame, columns: Sequence[str], higher_is_better: object) -> np.ndarray:
    if isinstance(columns, str) or not columns:
        raise InvalidArgumentError(f"columns must be a non-empty sequence of column names, got {columns!r}")
    if isinstance(higher_is_better, Mapping):
        missing = [c for c in columns if c not in higher_is_better]
        if missing:
            raise InvalidArgumentError(f"higher_is_better has no direction for {missing}")
        dirs = [higher_is_better[c] for c in columns]
    else:
        dirs = list(higher_is_better)  # type: ignore[call-overload]
    if len(dirs) != len(columns) or not all(isinstance(d, (bool, np.bool_)) for d in dirs):
        raise InvalidArgumentError(
            f"higher_is_better must give one bool per column ({len(columns)}), got {higher_is_better!r}"
        )
    check_frame(df, columns)
    m = np.column_stack([numeric_column(df, c) * (-1.0 if d else 1.0) for c, d in zip(columns, dirs)])
    if m.size and not np.isfinite(m).all():
        bad = [c for j, c in enumerate(columns) if not np.isfinite(m[:, j]).all()]
        raise InvalidArgumentError(
            f"Pareto dominance needs finite values; column(s) {bad} have missing or infinite values "
            "(drop those rows first)"
        )
    return m


def _dominated(m: np.ndarray) -> np.ndarray:
    """``out[i]``: some row is <= row i everywhere and < somewhere (minimisation), O(n²) vectorised."""
    n, k = m.shape
    out = np.zeros(n, dtype=bool)
    step = max(1, _CHUNK_ELEMENTS // max(1, n * k))
    for start in range(0, n, step):
        block = m[start:start + step]  # rows i
        le = (m[None, :, :] <= block[:, None, :]).all(axis=2)  # [i, j]: j <= i everywhere
        lt = (m[None, :, :] < block[:, None, :]).any(axis=2)
        out[start:start + step] = np.any(le & lt, axis=1)
    return out


def _pareto_front_reference(m: np.ndarray) -> np.ndarray:
    """Brute force: a row is on the front if no other row dominates it (minimisation)."""
    n = len(m)
    front = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if j != i and all(m[j] <= m[i]) and any(m[j] < m[i]):
                front[i] = False
                break
    return front


def pareto_front(
    df: pd.DataFrame, columns: Sequence[str], higher_is_better: Sequence[bool] | Mapping[str, bool]
) -> pd.Series:
    """Which rows are Pareto-optimal (not dominated) over ``columns``.

    Row j dominates row i when j is at least as good on every column and strictly better on
    one, "good" following ``higher_is_better``. Rows with equal values do not dominate each
    other, so duplicates of a front point are all on the front.

    Args:
        df: Results table.
        columns: The objective columns.
        higher_is_better: One bool per column (sequence in column order, or a mapping).

    Returns:
        Boolean Series aligned with ``df.index``, named ``"pareto"``.

    Raises:
        InvalidArgumentError: a column is missing, the directions don't match, or a value
            is missing / infinite.
    """
    m = _minimization_matrix(df, columns, higher_is_better)
    return pd.Series(~_dominated(m), index=df.index, name="pareto")


def pareto_layers(
    df: pd.DataFrame, columns: Sequence[str], higher_is_better: Sequence[bool] | Mapping[str, bool]
) -> pd.Series:
    """Non-dominated sorting: 1 for the Pareto front, 2 for the front of the rest, and so on.

    Returns:
        Integer Series aligned with ``df.index``, named ``"pareto_layer"``.
    """
    m = _minimization_matrix(df, columns, higher_is_better)
    layer = np.zeros(len(m), dtype=int)
    remaining = np.arange(len(m))
    current = 1
    while len(remaining):
        front = ~_dominated(m[remaining])
        layer[remaining[front]] = current
        remaining = remaining[~front]
        current += 1
    return pd.Series(layer, index=df.index, name="pareto_layer")


@dataclass(frozen=True)
class AxisResult:
    """The best value on one axis.

    Attributes:
        axis: The axis.
        column: The column measuring it.
        higher_is_better: Its direction.
        best_value: The best value over the architectures.
        worst_value: The worst value.
        winners: Every architecture with the best value (sorted by rank sum over the other
            axes, then name).
        champion: ``winners[0]``: the tied-best architecture that ranks best on the others.
    """

    axis: str
    column: str
    higher_is_better: bool
    best_value: float
    worst_value: float
    winners: tuple[str, ...]

    @property
    def champion(self) -> str:
        return self.winners[0]


@dataclass(frozen=True)
class Standing:
    """Where one architecture stands on one axis.

    Attributes:
        arch: The architecture.
        axis: The axis.
        value: Its value on the axis's column.
        rank: Its rank (1 = best, ties share the best rank).
        n: Number of ranked architectures.
        gap: Distance to the best value, in the column's units (>= 0).
        relative_gap: ``gap / |best|`` (``None`` when the best value is 0).
        range_fraction: ``gap / |worst − best|`` in [0, 1] (0 when all values are equal).
    """

    arch: str
    axis: str
    value: float
    rank: float
    n: int
    gap: float
    relative_gap: float | None
    range_fraction: float


@dataclass(frozen=True)
class Verdict:
    """The answer to "is there an architecture that wins all three axes?".

    Attributes:
        axes: One :class:`AxisResult` per objective.
        standings: For each axis's champion, its :class:`Standing` on every axis.
        all_axis_winners: Architectures with the best value on every axis (empty: no free lunch).
        pareto_front: Architectures on the Pareto front, by rank sum.
        n_architectures: Architectures compared (finite on every axis).
        n_excluded: Architectures left out for a missing value.
        rank_method: Tie method of the ranks.
    """

    axes: tuple[AxisResult, ...]
    standings: tuple[Standing, ...]
    all_axis_winners: tuple[str, ...]
    pareto_front: tuple[str, ...]
    n_architectures: int
    n_excluded: int
    rank_method: str = "min"
    objectives: tuple[Objective, ...] = field(default=())

    @property
    def one_wins_all(self) -> bool:
        """True when some architecture is optimal on every axis."""
        return bool(self.all_axis_winners)

    @property
    def no_free_lunch(self) -> bool:
        """True when no architecture is optimal on every axis (the papers' finding)."""
        return not self.all_axis_winners

    def axis(self, name: str) -> AxisResult:
        """The :class:`AxisResult` of axis ``name``."""
        for a in self.axes:
            if a.axis == name:
                return a
        raise UnknownNameError(f"axis {name!r} is not in this verdict; it has: {', '.join(a.axis for a in self.axes)}")

    def standing(self, arch: str, axis: str) -> Standing:
        """The :class:`Standing` of a champion ``arch`` on ``axis``."""
        for s in self.standings:
            if s.arch == arch and s.axis == axis:
                return s
        raise UnknownNameError(f"no standing for architecture {arch!r} on axis {axis!r} (only champions have one)")

    @property
    def judged(self) -> bool:
        """True when at least two axes are ranked, so that a trade-off can be judged at all.

        With a single ranked axis (e.g. a benchmark that only gives accuracy) its best
        architecture trivially "wins all axes"; :meth:`headline` then says so instead of
        announcing a free lunch.
        """
        return len(self.axes) >= 2

    def headline(self) -> str:
        """One sentence stating the verdict."""
        if not self.judged:  # one axis: ``verdict`` refuses none
            a = self.axes[0]
            tied = f" ({len(a.winners)} tied)" if len(a.winners) > 1 else ""
            return (
                f"Only one axis is ranked ({a.axis}): its best architecture is {a.champion}{tied} "
                f"of {self.n_architectures}; a trade-off needs a ground truth on at least two axes."
            )
        if self.one_wins_all:
            names = ", ".join(self.all_axis_winners)
            return f"One architecture wins all {len(self.axes)} axes: {names}."
        parts = ", ".join(f"{a.axis}: {a.champion}" for a in self.axes)
        return (
            f"No free lunch: no architecture is best on all {len(self.axes)} axes "
            f"({self.n_architectures} compared). Winners — {parts}."
        )

    def as_dict(self) -> dict[str, object]:
        """Plain-data form (for JSON)."""
        return asdict(self) | {"one_wins_all": self.one_wins_all, "headline": self.headline()}


def verdict(
    df: pd.DataFrame,
    objectives: Mapping[str, str] | Sequence[Objective] | None = None,
    *,
    higher_is_better: Mapping[str, bool] | None = None,
    rank_method: str = "min",
    arch_col: str = "arch",
) -> Verdict:
    """Decide whether one architecture is optimal on every axis; if not, quantify the trade-off.

    Args:
        df: Results, one row per architecture (see ``aggregate_seeds``).
        objectives: ``{axis: column}`` (default: each axis's ground truth).
        higher_is_better: ``{column: bool}`` direction overrides.
        rank_method: Tie method for the standings' ranks (see :func:`rank_table`).
        arch_col: The architecture column.

    Returns:
        A :class:`Verdict`.

    Raises:
        InvalidArgumentError: no architecture has a finite value on every axis, a column is
            missing, or architectures repeat.
    """
    objs = resolve_objectives(df, objectives, higher_is_better)
    ranks = rank_table(df, objs, method=rank_method, arch_col=arch_col)
    n_excluded = len(df) - len(ranks)
    if ranks.empty:
        raise InvalidArgumentError(
            f"no architecture has a finite value on every axis ({', '.join(o.column for o in objs)}); "
            "nothing to compare"
        )
    names = ranks[arch_col].astype(str).to_numpy()
    axes: list[AxisResult] = []
    best_mask = np.ones(len(ranks), dtype=bool)
    for o in objs:
        values = ranks[o.column].to_numpy(float)
        best = values.max() if o.higher_is_better else values.min()
        worst = values.min() if o.higher_is_better else values.max()
        tied = values == best
        best_mask &= tied
        others = ranks[[f"rank_{p.axis}" for p in objs if p.axis != o.axis]].sum(axis=1).to_numpy()
        order = sorted(np.flatnonzero(tied), key=lambda i: (others[i], names[i]))
        axes.append(AxisResult(o.axis, o.column, o.higher_is_better, float(best), float(worst),
                               tuple(names[i] for i in order)))
    standings: list[Standing] = []
    for a in axes:
        row = int(np.flatnonzero(names == a.champion)[0])
        for o, b in zip(objs, axes):
            value = float(ranks[o.column].iloc[row])
            gap = abs(value - b.best_value)
            span = abs(b.worst_value - b.best_value)
            standings.append(Standing(
                arch=a.champion, axis=o.axis, value=value, rank=float(ranks[f"rank_{o.axis}"].iloc[row]),
                n=len(ranks), gap=gap,
                relative_gap=gap / abs(b.best_value) if b.best_value != 0 else None,
                range_fraction=gap / span if span > 0 else 0.0,
            ))
    front = pareto_front(ranks, [o.column for o in objs], [o.higher_is_better for o in objs])
    return Verdict(
        axes=tuple(axes),
        standings=tuple(standings),
        all_axis_winners=tuple(sorted(names[best_mask])),
        pareto_front=tuple(names[front.to_numpy()]),
        n_architectures=len(ranks),
        n_excluded=n_excluded,
        rank_method=rank_method,
        objectives=objs,
    )

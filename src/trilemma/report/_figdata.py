"""The numbers behind each figure, as data objects (renderers live in ``_plots``).

Like Optuna's visualization module, every figure is built in two steps: a function that
computes a small dataclass of plain numbers from the results table (testable without
pixels), then a renderer that draws it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trilemma._schema import ResultSchema
from trilemma.analysis import (
    Correlation,
    Objective,
    Verdict,
    direction,
    get_metric,
    group_means,
    pareto_layers,
    rank_correlation,
    schema_of,
)
from trilemma.analysis._table import check_frame, numeric_column
from trilemma.errors import InvalidArgumentError, UnknownNameError

__all__ = [
    "TopologyMapData",
    "IndicatorScatterData",
    "CurvesData",
    "ParetoData",
    "metric_label",
    "topology_map_data",
    "indicator_scatter_data",
    "curves_data",
    "pareto_data",
]


def metric_label(column: str, schema: ResultSchema | None = None) -> str:
    """Display label of a column: its label in ``schema`` (default: the default schema), or its name."""
    try:
        return get_metric(column, schema).label
    except UnknownNameError:
        return column


def _direction_or_none(column: str, axis: str | None, schema: ResultSchema | None = None) -> bool | None:
    if axis is None:
        return None
    try:
        return direction(column, axis, schema=schema)
    except UnknownNameError:
        return None


@dataclass(frozen=True)
class TopologyMapData:
    """One quantity over the plane of the two topology-group keys (the DAG space: d̄ and P).

    Attributes:
        column: The quantity's column.
        label: Its display label.
        axis: The axis it belongs to (None if none).
        higher_is_better: Its direction on ``axis`` (None if unknown).
        points: ``arch, row, col, value`` for every architecture with a value (``row`` is the
            first group key, e.g. P; ``col`` the second, e.g. d̄).
        groups: ``row, col, count, mean, std`` per topology group (std: population).
        row_key, col_key: The group-key columns; ``row_label``, ``col_label`` their labels.
    """

    column: str
    label: str
    axis: str | None
    higher_is_better: bool | None
    points: pd.DataFrame
    groups: pd.DataFrame
    row_key: str = ""
    col_key: str = ""
    row_label: str = ""
    col_label: str = ""

    @property
    def direction_text(self) -> str:
        """``"higher is better"`` / ``"lower is better"`` / ``""``."""
        if self.higher_is_better is None:
            return ""
        return "higher is better" if self.higher_is_better else "lower is better"


def topology_map_data(
    df: pd.DataFrame, column: str, *, axis: str | None = None, arch_col: str = "arch",
    group_by: Sequence[str] | None = None,
) -> TopologyMapData:
    """Collect ``column`` over the plane of the two topology-group keys (the papers' Figures 3–5).

    Args:
        df: One row per architecture.
        column: The quantity.
        axis: The axis it belongs to (for its direction).
        arch_col: The architecture column.
        group_by: The two group keys ``(row, col)`` (default: the schema's, P and d̄ in the DAG space).

    Raises:
        InvalidArgumentError: not two group keys, a column is missing or no architecture has a value.
    """
    schema = schema_of(df)
    keys = tuple(schema.group_keys() if group_by is None else group_by)
    if len(keys) != 2:
        raise InvalidArgumentError(f"a topology map needs two group keys (rows, columns); got {keys}")
    row_key, col_key = keys
    check_frame(df, [arch_col, row_key, col_key, column])
    values = numeric_column(df, column)
    rows, cols = numeric_column(df, row_key), numeric_column(df, col_key)
    ok = np.isfinite(values) & np.isfinite(rows) & np.isfinite(cols)
    if not ok.any():
        raise InvalidArgumentError(f"column {column!r} has no finite value to map")
    points = pd.DataFrame({"arch": df[arch_col].to_numpy()[ok], "row": rows[ok], "col": cols[ok], "value": values[ok]})
    g = group_means(points, ["value"], group_by=("row", "col"))
    groups = pd.DataFrame({"row": g["row"], "col": g["col"], "count": g["count"], "mean": g["value"],
                           "std": g["value_std"]})
    return TopologyMapData(column, metric_label(column, schema), axis, _direction_or_none(column, axis, schema),
                           points, groups, row_key, col_key, metric_label(row_key, schema),
                           metric_label(col_key, schema))


@dataclass(frozen=True)
class IndicatorScatterData:
    """A cheap indicator against a trained ground truth, with their rank correlation.

    Attributes:
        axis: The axis.
        x: Indicator column; ``y``: ground-truth column.
        x_label, y_label: Display labels.
        points: ``arch, x, y, colour`` for rows with both values (``colour``: the first topology-group
            key, e.g. P, or NaN).
        colour_label: What ``colour`` is.
        correlation: Kendall τ over architectures with its bootstrap interval.
    """

    axis: str
    x: str
    y: str
    x_label: str
    y_label: str
    points: pd.DataFrame
    correlation: Correlation
    colour_label: str = ""

    @property
    def legend(self) -> str:
        """``"τ = −0.85 [−0.87, −0.83], n = 541"``."""
        c = self.correlation
        text = f"τ = {c.value:+.2f}"
        if c.ci_low is not None and c.ci_high is not None:
            text += f" [{c.ci_low:+.2f}, {c.ci_high:+.2f}]"
        return f"{text}, n = {c.n}"


def indicator_scatter_data(
    df: pd.DataFrame, x: str, y: str, axis: str, *, n_boot: int = 1000, seed: int = 0,
    confidence: float = 0.95, arch_col: str = "arch",
) -> IndicatorScatterData:
    """Pair an indicator with a ground truth and compute their Kendall τ (architecture level).

    Raises:
        InvalidArgumentError: a column is missing or the correlation is undefined.
    """
    check_frame(df, [arch_col, x, y])
    schema = schema_of(df)
    corr = rank_correlation(df, x, y, method="kendall", level="architecture", n_boot=n_boot, seed=seed,
                            confidence=confidence, x_higher_is_better=_direction_or_none(x, axis, schema),
                            y_higher_is_better=_direction_or_none(y, axis, schema))
    xv, yv = numeric_column(df, x), numeric_column(df, y)
    ok = np.isfinite(xv) & np.isfinite(yv)
    keys = [k for k in schema.group_keys() if k in df.columns]
    colour = numeric_column(df, keys[0])[ok] if keys else np.full(int(ok.sum()), np.nan)
    points = pd.DataFrame({"arch": df[arch_col].to_numpy()[ok], "x": xv[ok], "y": yv[ok], "colour": colour})
    return IndicatorScatterData(axis, x, y, metric_label(x, schema), metric_label(y, schema), points, corr,
                                metric_label(keys[0], schema) if keys else "")


@dataclass(frozen=True)
class CurvesData:
    """Training curves of the per-axis winners.

    Attributes:
        curves: Long table ``arch, epoch`` and the metric columns, winners only.
        roles: ``{arch: (axis, ...)}``: which axes each plotted architecture wins.
        loss_columns: Loss columns present (``train_loss``, ``test_loss``).
        acc_columns: Accuracy columns present (``train_acc``, ``test_acc``).
    """

    curves: pd.DataFrame
    roles: Mapping[str, tuple[str, ...]]
    loss_columns: tuple[str, ...]
    acc_columns: tuple[str, ...]


_LOSS = ("train_loss", "test_loss")
_ACC = ("train_acc", "test_acc")


def curves_data(curves: pd.DataFrame, verdict: Verdict, *, arch_col: str = "arch") -> CurvesData:
    """Select the curves of each axis's champion from a long curves table (seeds averaged).

    Args:
        curves: Long table with ``arch_col``, ``epoch`` and some of ``train_loss,
            test_loss, train_acc, test_acc``.
        verdict: The verdict naming the champions.

    Raises:
        InvalidArgumentError: ``epoch`` / ``arch`` or every metric column is missing, or no
            champion has a curve.
    """
    check_frame(curves, [arch_col, "epoch"], what="curves")
    loss = tuple(c for c in _LOSS if c in curves.columns)
    acc = tuple(c for c in _ACC if c in curves.columns)
    if not loss and not acc:
        raise InvalidArgumentError(
            f"curves need at least one of {', '.join(_LOSS + _ACC)}; got columns {', '.join(map(str, curves.columns))}"
        )
    roles: dict[str, list[str]] = {}
    for a in verdict.axes:
        roles.setdefault(a.champion, []).append(a.axis)
    present = set(curves[arch_col].astype(str))
    missing = [a for a in roles if a not in present]
    roles = {a: r for a, r in roles.items() if a in present}
    if not roles:
        raise InvalidArgumentError(f"the curves hold none of the winners {', '.join(missing)}")
    sel = curves[curves[arch_col].astype(str).isin(roles)]
    sel = sel.rename(columns={arch_col: "arch"})[["arch", "epoch", *loss, *acc]]
    sel = sel.assign(arch=sel["arch"].astype(str))
    for c in (*loss, *acc):
        sel[c] = pd.to_numeric(sel[c], errors="coerce")
    # several seeds per architecture: their mean curve
    sel = sel.groupby(["arch", "epoch"], as_index=False, sort=True)[[*loss, *acc]].mean()
    return CurvesData(sel, {a: tuple(r) for a, r in roles.items()}, loss, acc)


@dataclass(frozen=True)
class ParetoData:
    """The three-axis Pareto front and its 2-D projections.

    Attributes:
        objectives: The axes with their columns and directions.
        points: ``arch``, one column per objective, ``pareto_layer`` (1 = front).
        champions: ``{axis: arch}``.
        pairs: The 2-D projections drawn, as pairs of objective indices.
    """

    objectives: tuple[Objective, ...]
    points: pd.DataFrame
    champions: Mapping[str, str]
    pairs: tuple[tuple[int, int], ...] = field(default=())

    @property
    def front(self) -> pd.DataFrame:
        """The rows on the Pareto front."""
        return self.points[self.points["pareto_layer"] == 1]


def pareto_data(df: pd.DataFrame, verdict: Verdict, *, arch_col: str = "arch") -> ParetoData:
    """Collect the points of the Pareto figure for the verdict's objectives."""
    objs = verdict.objectives
    if not objs:
        raise InvalidArgumentError("the verdict carries no objectives")
    cols = [o.column for o in objs]
    check_frame(df, [arch_col, *cols])
    values = np.column_stack([numeric_column(df, c) for c in cols])
    ok = np.isfinite(values).all(axis=1)
    points = pd.DataFrame({"arch": df[arch_col].astype(str).to_numpy()[ok]})
    for j, c in enumerate(cols):
        points[c] = values[ok, j]
    points["pareto_layer"] = pareto_layers(points, cols, [o.higher_is_better for o in objs]).to_numpy()
    pairs = tuple((i, j) for i in range(len(objs)) for j in range(i + 1, len(objs)))
    return ParetoData(objs, points, {a.axis: a.champion for a in verdict.axes}, pairs)

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

from trilemma.analysis import (
    DEFAULT_GROUP_BY,
    Correlation,
    Objective,
    Verdict,
    direction,
    get_metric,
    group_means,
    pareto_layers,
    rank_correlation,
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


def metric_label(column: str) -> str:
    """Display label of a column: the metric table's label, or the column name."""
    try:
        return get_metric(column).label
    except UnknownNameError:
        return column


def _direction_or_none(column: str, axis: str | None) -> bool | None:
    if axis is None:
        return None
    try:
        return direction(column, axis)
    except UnknownNameError:
        return None


@dataclass(frozen=True)
class TopologyMapData:
    """One quantity over the (d̄, P) plane, per architecture and per topology group.

    Attributes:
        column: The quantity's column.
        label: Its display label.
        axis: The axis it belongs to (None if none).
        higher_is_better: Its direction on ``axis`` (None if unknown).
        points: ``arch, P, mean_depth, value`` for every architecture with a value.
        groups: ``P, mean_depth, count, mean, std`` per (P, d̄) group (std: population).
    """

    column: str
    label: str
    axis: str | None
    higher_is_better: bool | None
    points: pd.DataFrame
    groups: pd.DataFrame

    @property
    def direction_text(self) -> str:
        """``"higher is better"`` / ``"lower is better"`` / ``""``."""
        if self.higher_is_better is None:
            return ""
        return "higher is better" if self.higher_is_better else "lower is better"


def topology_map_data(
    df: pd.DataFrame, column: str, *, axis: str | None = None, arch_col: str = "arch",
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
) -> TopologyMapData:
    """Collect ``column`` over the (d̄, P) plane (the papers' Figures 3–5).

    Raises:
        InvalidArgumentError: a column is missing or no architecture has a value.
    """
    if tuple(group_by) != ("P", "mean_depth"):
        raise InvalidArgumentError(f"topology maps are drawn over (P, mean_depth); got group_by={tuple(group_by)}")
    check_frame(df, [arch_col, "P", "mean_depth", column])
    values = numeric_column(df, column)
    ok = np.isfinite(values) & np.isfinite(numeric_column(df, "P")) & np.isfinite(numeric_column(df, "mean_depth"))
    if not ok.any():
        raise InvalidArgumentError(f"column {column!r} has no finite value to map")
    points = pd.DataFrame({
        "arch": df[arch_col].to_numpy()[ok],
        "P": numeric_column(df, "P")[ok],
        "mean_depth": numeric_column(df, "mean_depth")[ok],
        "value": values[ok],
    })
    g = group_means(points, ["value"])
    groups = pd.DataFrame({"P": g["P"], "mean_depth": g["mean_depth"], "count": g["count"],
                           "mean": g["value"], "std": g["value_std"]})
    return TopologyMapData(column, metric_label(column), axis, _direction_or_none(column, axis), points, groups)


@dataclass(frozen=True)
class IndicatorScatterData:
    """A cheap indicator against a trained ground truth, with their rank correlation.

    Attributes:
        axis: The axis.
        x: Indicator column; ``y``: ground-truth column.
        x_label, y_label: Display labels.
        points: ``arch, x, y, P`` for rows with both values.
        correlation: Kendall τ over architectures with its bootstrap interval.
    """

    axis: str
    x: str
    y: str
    x_label: str
    y_label: str
    points: pd.DataFrame
    correlation: Correlation

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
    corr = rank_correlation(df, x, y, method="kendall", level="architecture", n_boot=n_boot, seed=seed,
                            confidence=confidence, x_higher_is_better=_direction_or_none(x, axis),
                            y_higher_is_better=_direction_or_none(y, axis))
    xv, yv = numeric_column(df, x), numeric_column(df, y)
    ok = np.isfinite(xv) & np.isfinite(yv)
    p = numeric_column(df, "P")[ok] if "P" in df.columns else np.full(int(ok.sum()), np.nan)
    points = pd.DataFrame({"arch": df[arch_col].to_numpy()[ok], "x": xv[ok], "y": yv[ok], "P": p})
    return IndicatorScatterData(axis, x, y, metric_label(x), metric_label(y), points, corr)


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

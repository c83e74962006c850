"""What each results column measures and which way is better: read from the result schema.

Every correlation, rank and Pareto computation in :mod:`trilemma.analysis` orients its
columns with the table's :class:`~trilemma._schema.ResultSchema` (``df.attrs["schema"]``, which
``trilemma.study.load_results`` attaches: each column as its producer declared it, with a
*kind* — ``topology``, ``theory``, ``init``, ``trained``, ``cost``, ``info`` — and its direction
on each axis it speaks about) and never with ``abs()``. A table without a schema (built by
hand, or read from a CSV) is described by :func:`default_schema`: the declarations of the
papers' DAG-cell space, its closed-form theory and the training task, the measures'
registered axes and directions, and whatever :func:`register_metric` added.

The analysis itself names no study column: ground truths, topology groups and labels all
come from the schema.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trilemma._registry import Registry
from trilemma._schema import AXES, COLUMN_KINDS, Column, ResultSchema
from trilemma.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError

__all__ = [
    "AXES",
    "KINDS",
    "AxisSpec",
    "DEFAULT_AXES",
    "accuracy_metric",
    "check_axis",
    "default_axes",
    "default_schema",
    "direction",
    "get_metric",
    "list_metrics",
    "register_metric",
    "schema_of",
    "unregister_metric",
]

#: Where a number comes from, upstream to downstream (the schema's column kinds).
KINDS: tuple[str, ...] = COLUMN_KINDS


def check_axis(axis: object) -> str:
    """Return ``axis`` if it is one of :data:`AXES`.

    Raises:
        UnknownNameError: ``axis`` is not an axis name.
    """
    if axis not in AXES:
        raise UnknownNameError(f"unknown axis {axis!r}; valid axes: {', '.join(AXES)}")
    return str(axis)


_USER: Registry[Column] = Registry("metric")


def register_metric(column: Column) -> Column:
    """Describe a column that no producer declares (for tables built by hand).

    Raises:
        InvalidTypeError: ``column`` is not a :class:`~trilemma._schema.Column`.
        DuplicateNameError: a metric of that name is already registered.
    """
    if not isinstance(column, Column):
        raise InvalidTypeError(f"register_metric expects a Column, got {type(column).__name__}")
    return _USER.register(column.name, column)


def unregister_metric(name: str) -> None:
    """Remove a metric added with :func:`register_metric`."""
    _USER.unregister(name)


@functools.cache
def _producers_schema() -> ResultSchema:
    from trilemma.spaces import DAG_TOPOLOGY_COLUMNS
    from trilemma.study.tasks.train import train_columns
    from trilemma.theory import THEORY_COLUMNS

    schema = ResultSchema(DAG_TOPOLOGY_COLUMNS)
    schema.extend(THEORY_COLUMNS)
    schema.add(Column("params", "cost", "int", label="#params", description="trainable parameters", source="study"))
    schema.extend(train_columns(0.5))
    return schema


def default_schema() -> ResultSchema:
    """The schema of a table that carries none: the papers' DAG-cell study as its producers
    declare it (space topology, closed-form theory, training at the 50% threshold) plus the
    metrics added with :func:`register_metric`."""
    schema = ResultSchema(_producers_schema())
    schema.extend(c for c in (_USER.get(n) for n in _USER.names()) if c.name not in schema)
    return schema


def _pattern_column(name: str) -> Column | None:
    """``epochs_to_<p>`` / ``steps_to_<p>`` for any threshold ``p`` (the train task's columns)."""
    from trilemma.study.tasks.train import train_columns
    from trilemma.training import parse_accuracy_metric

    parsed = parse_accuracy_metric(name)
    if parsed is None:
        return None
    return next((c for c in train_columns(parsed[1]) if c.name == name), None)


def _measure_column(name: str) -> Column | None:
    """The column of a registered measure called ``name`` (imports the measures, and torch)."""
    try:
        from trilemma.measures import list_measures
        from trilemma.study.tasks.measures import measure_columns
    except ImportError:  # pragma: no cover - measures need torch
        return None
    base = name.removesuffix("_time")
    if base not in list_measures():
        return None
    return next((c for c in measure_columns([base]) if c.name == name), None)


def schema_of(df: Any) -> ResultSchema:
    """The schema describing ``df``: its ``attrs["schema"]`` (from ``load_results``), else
    :func:`default_schema`. Columns registered with :func:`register_metric` are added, and so
    are columns of ``df`` the schema lacks that name an accuracy-threshold metric
    (``epochs_to_<p>``) or a registered measure (recognised by its ``<name>_time`` sibling)."""
    stored = getattr(df, "attrs", {}).get("schema") if df is not None else None
    if isinstance(stored, ResultSchema):
        schema = ResultSchema(stored)
        schema.extend(c for c in (_USER.get(n) for n in _USER.names()) if c.name not in schema)
    else:
        schema = default_schema()
    columns = [c for c in getattr(df, "columns", ()) if isinstance(c, str)]
    present = set(columns)
    for name in columns:
        if name in schema:
            continue
        col = _pattern_column(name)
        if col is None and f"{name}_time" in present:
            col = _measure_column(name)
        if col is not None:
            schema.add(col)
    return schema


def get_metric(name: str, schema: ResultSchema | None = None) -> Column:
    """The column called ``name``: from ``schema`` (default :func:`default_schema`), then the
    accuracy-threshold metrics ``epochs_to_<p>`` / ``steps_to_<p>``, then registered measures.

    Raises:
        UnknownNameError: no producer describes ``name``.
    """
    found = (schema if schema is not None else default_schema()).find(name)
    if found is None and name in _USER:
        found = _USER.get(name)
    if found is None and isinstance(name, str):
        found = _pattern_column(name) or _measure_column(name)
    if found is None:
        raise UnknownNameError(f"no producer describes column {name!r}: it is not in the table's result schema, "
                               f"not a registered measure, and not registered with register_metric()")
    return found


def list_metrics(kind: str | None = None, axis: str | None = None, schema: ResultSchema | None = None) -> list[str]:
    """Names of the known columns, optionally only of one ``kind`` / with a direction on ``axis``."""
    return (schema if schema is not None else default_schema()).names(kind, axis)


def direction(name: str, axis: str, overrides: Mapping[str, bool] | None = None,
              schema: ResultSchema | None = None) -> bool:
    """Whether higher ``name`` is better on ``axis``: ``overrides[name]`` first, else its column.

    Raises:
        UnknownNameError: ``name`` is neither in ``overrides`` nor described with a direction on ``axis``.
    """
    if overrides and name in overrides:
        value = overrides[name]
        if not isinstance(value, bool):
            raise InvalidTypeError(f"direction override for {name!r} must be a bool, got {value!r}")
        return value
    return get_metric(name, schema).higher_is_better(axis)


@dataclass(frozen=True)
class AxisSpec:
    """Which columns stand for one axis in a results table.

    Attributes:
        name: One of :data:`AXES`.
        ground_truth: Candidate trained columns, in order of preference; the first one present
            in a table is the axis's ground truth (ranks, Pareto front, verdict).
    """

    name: str
    ground_truth: tuple[str, ...]

    def __post_init__(self) -> None:
        check_axis(self.name)
        if isinstance(self.ground_truth, str) or not self.ground_truth:
            raise InvalidArgumentError(
                f"axis {self.name!r}: ground_truth must be a non-empty tuple of column names, "
                f"got {self.ground_truth!r}"
            )
        object.__setattr__(self, "ground_truth", tuple(self.ground_truth))

    def resolve(self, columns: Sequence[str]) -> str:
        """The first ground-truth candidate present in ``columns``.

        Raises:
            InvalidArgumentError: none of the candidates is present.
        """
        for name in self.ground_truth:
            if name in columns:
                return name
        raise InvalidArgumentError(
            f"no ground-truth column for axis {self.name!r}: expected one of "
            f"{', '.join(self.ground_truth)}; the table has: {', '.join(map(str, columns))}"
        )


def accuracy_metric(threshold: float = 0.5, resolution: str = "epochs") -> str:
    """The column name of the convergence-speed metric at an accuracy threshold.

    ``accuracy_metric(0.5)`` is ``"epochs_to_50"`` (the papers' ground truth: epochs to 50%
    training accuracy); ``resolution="steps"`` names the sub-epoch crossing ``"steps_to_50"``
    (the training layer's :func:`~trilemma.training.accuracy_metric_name`).

    Raises:
        InvalidArgumentError: ``threshold`` outside [0, 1] or an unknown resolution.
    """
    from trilemma.training import accuracy_metric_name

    if resolution not in ("epochs", "steps"):
        raise InvalidArgumentError(f"resolution must be 'epochs' or 'steps', got {resolution!r}")
    return accuracy_metric_name(threshold, "epoch" if resolution == "epochs" else "step")


def default_axes(
    accuracy_threshold: float = 0.5, overrides: Mapping[str, str] | None = None,
    schema: ResultSchema | None = None,
) -> tuple[AxisSpec, ...]:
    """Each axis's ground truth: the schema's ``role="truth"`` column with a direction on it,
    any axis overridable.

    Args:
        accuracy_threshold: Used when ``schema`` is ``None``: the default schema's convergence
            ground truth is then ``epochs_to_<threshold·100>``.
        overrides: ``{axis: column}`` replacing an axis's ground truth (a study's
            ``[analysis] axes``), e.g. ``{"convergence": "convergence_epoch"}``.
        schema: The table's schema (default: :func:`default_schema`).

    Returns:
        One :class:`AxisSpec` per axis that has a ground truth (an axis without one is left out).

    Raises:
        UnknownNameError: an override names an unknown axis.
    """
    if schema is None:
        schema = default_schema()
        if accuracy_threshold != 0.5:
            from trilemma.study.tasks.train import train_columns

            schema = ResultSchema(c for c in schema if c.source != "train")
            schema.extend(train_columns(accuracy_threshold))
    truth = {a: schema.ground_truth(a) for a in AXES}
    for axis, column in (overrides or {}).items():
        check_axis(axis)
        if not isinstance(column, str) or not column:
            raise InvalidArgumentError(f"the ground truth of axis {axis!r} must be a column name, got {column!r}")
        truth[axis] = column
    return tuple(AxisSpec(a, (col,)) for a, col in truth.items() if col)


#: The papers' ground truth (Chen, Huang & Wang, AutoML-Conf 2023, appendix A), as the training
#: task declares it: expressivity = training loss at convergence; convergence = epochs to 50%
#: training accuracy (the loss-plateau epoch only decides *when* the loss has converged);
#: generalization = test − train loss at convergence. All three: lower is better.
DEFAULT_AXES: tuple[AxisSpec, ...] = default_axes()

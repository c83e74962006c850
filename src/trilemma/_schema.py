"""The result schema: what every column of a study's results table is, declared by its producer.

Every producer of columns declares them as :class:`Column` s — an architecture space its
descriptive columns (topology), each task kind its results (closed-form theory, measures at
initialization, trained ground truth, costs) — and a study's :class:`ResultSchema` is their
union, checked at planning time (two producers of one name are an error, never a silent
rename) and stored with the study. Analysis and report read names, labels, units and each
column's direction on the three axes from it, so they never name a study-specific column.

A column's *kind* says where its number comes from, upstream to downstream: ``topology``
(the architecture itself), ``theory`` (closed form), ``init`` (measured at initialization),
``trained`` (ground truth after training) and ``cost`` (parameters, FLOPs, seconds);
``info`` columns (width, status, seeds …) describe the run. ``directions`` gives, for each axis
the column speaks about, whether a higher value means a better network on that axis (for a
prediction: what the theory predicts). ``role="group"`` marks the columns whose value pairs
form the topology groups of the papers' figures (``P`` and ``d̄`` in the DAG space).

No torch, no pandas: this module sits at the bottom of the package.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from trilemma.errors import InvalidArgumentError, InvalidTypeError, SchemaError, UnknownNameError

__all__ = ["AXES", "COLUMN_KINDS", "DTYPES", "ROLES", "Column", "ResultSchema"]

#: The three axes of the trilemma, in the papers' order.
AXES: tuple[str, ...] = ("expressivity", "convergence", "generalization")
#: Where a column's number comes from, upstream to downstream.
COLUMN_KINDS: tuple[str, ...] = ("topology", "theory", "init", "trained", "cost", "info")
#: Value types of a column.
DTYPES: tuple[str, ...] = ("float", "int", "bool", "str")
#: Special roles of a column: ``"group"`` (a key of the topology groups of the papers'
#: figures), ``"filter"`` (a boolean pre-filter of a search space, e.g. the NeurIPS 2022 (d̄, m̄)
#: centre filter, compared with and without in the search simulation).
#: ``"truth"`` marks a trained column its producer proposes as the ground truth of the axes it
#: has directions on (the analysis takes the first such column per axis unless told otherwise).
#: ``"reference"`` marks a boolean column selecting the rows that form the reference population
#: (the ensemble space: the plain single cells); analyses correlate and rank over those rows and
#: place the other rows (ensembles, pruned cells) among them.
ROLES: tuple[str, ...] = ("", "group", "filter", "truth", "reference")


@dataclass(frozen=True)
class Column:
    """One column of a results table.

    Attributes:
        name: The column name.
        kind: One of :data:`COLUMN_KINDS`.
        dtype: One of :data:`DTYPES`.
        label: Short display name (default: ``name``).
        unit: Unit, if any (``"epochs"``, ``"s"`` …).
        directions: ``{axis: higher_is_better}`` for each axis the column measures (trained)
            or predicts (topology, theory, init); empty when it has no direction.
        description: One sentence: what it is and where it comes from.
        source: The producer (``"space"``, a task kind name …).
        role: One of :data:`ROLES`.
    """

    name: str
    kind: str
    dtype: str = "float"
    label: str = ""
    unit: str = ""
    directions: Mapping[str, bool] = field(default_factory=dict, hash=False)
    description: str = ""
    source: str = ""
    role: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidArgumentError(f"a column name must be a non-empty string, got {self.name!r}")
        if self.kind not in COLUMN_KINDS:
            raise InvalidArgumentError(
                f"column {self.name!r}: kind must be one of {', '.join(COLUMN_KINDS)}, got {self.kind!r}")
        if self.dtype not in DTYPES:
            raise InvalidArgumentError(f"column {self.name!r}: dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.role not in ROLES:
            raise InvalidArgumentError(f"column {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        if not isinstance(self.directions, Mapping):
            raise InvalidTypeError(
                f"column {self.name!r}: directions must be a mapping axis -> bool, got {type(self.directions).__name__}")
        for axis, hib in self.directions.items():
            if axis not in AXES:
                raise UnknownNameError(f"column {self.name!r}: unknown axis {axis!r}; valid axes: {', '.join(AXES)}")
            if not isinstance(hib, bool):
                raise InvalidTypeError(
                    f"column {self.name!r}: directions[{axis!r}] must be a bool (higher is better), got {hib!r}")
        object.__setattr__(self, "directions", dict(self.directions))  # a copy: callers' dicts stay theirs
        if not self.label:
            object.__setattr__(self, "label", self.name)

    @property
    def axes(self) -> tuple[str, ...]:
        """The axes this column has a direction on, in :data:`AXES` order."""
        return tuple(a for a in AXES if a in self.directions)

    def higher_is_better(self, axis: str) -> bool:
        """Whether a higher value means a better network on ``axis``.

        Raises:
            UnknownNameError: ``axis`` is not an axis, or the column has no direction on it.
        """
        if axis not in AXES:
            raise UnknownNameError(f"unknown axis {axis!r}; valid axes: {', '.join(AXES)}")
        try:
            return self.directions[axis]
        except KeyError:
            raise UnknownNameError(
                f"column {self.name!r} has no direction on axis {axis!r}; it has directions on: "
                f"{', '.join(self.axes) or 'no axis'}. Pass the direction explicitly."
            ) from None

    def with_name(self, name: str) -> Column:
        """The same column under another name."""
        return replace(self, name=name)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype, "label": self.label, "unit": self.unit,
                "directions": dict(self.directions), "description": self.description, "source": self.source,
                "role": self.role}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Column:
        """Inverse of :meth:`as_dict`.

        Raises:
            SchemaError: ``data`` is not a column description.
        """
        try:
            optional = ("dtype", "label", "unit", "directions", "description", "source", "role")
            return cls(name=data["name"], kind=data["kind"], **{k: data[k] for k in optional if k in data})
        except (KeyError, TypeError) as err:
            raise SchemaError(f"not a column description: {dict(data)!r} ({err})") from None


class ResultSchema:
    """An ordered set of :class:`Column` s with unique names.

    Args:
        columns: The columns, in table order.

    Raises:
        SchemaError: two columns share a name (with the producers of both).
    """

    def __init__(self, columns: Iterable[Column] = ()) -> None:
        self._columns: dict[str, Column] = {}
        for col in columns:
            self.add(col)

    def add(self, column: Column) -> ResultSchema:
        """Append ``column``.

        Raises:
            InvalidTypeError: not a :class:`Column`.
            SchemaError: a column of that name exists already; the message names both producers.
        """
        if not isinstance(column, Column):
            raise InvalidTypeError(f"a schema holds Column objects, got {type(column).__name__}")
        old = self._columns.get(column.name)
        if old is not None:
            raise SchemaError(
                f"column {column.name!r} is produced twice: by {old.source or 'an unnamed producer'} ({old.kind}) "
                f"and by {column.source or 'an unnamed producer'} ({column.kind}); rename one of them"
            )
        self._columns[column.name] = column
        return self

    def extend(self, columns: Iterable[Column]) -> ResultSchema:
        """Append every column of ``columns`` (see :meth:`add`)."""
        for col in columns:
            self.add(col)
        return self

    def merged(self, other: ResultSchema | Iterable[Column]) -> ResultSchema:
        """A new schema with this one's columns, then ``other`` 's (a clash is an error)."""
        return ResultSchema([*self, *other])

    # ------------------------------------------------------------------ lookup
    def __contains__(self, name: object) -> bool:
        return name in self._columns

    def __iter__(self) -> Iterator[Column]:
        return iter(self._columns.values())

    def __len__(self) -> int:
        return len(self._columns)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ResultSchema) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"ResultSchema({len(self)} columns: {', '.join(self.names()[:8])}{' …' if len(self) > 8 else ''})"

    def get(self, name: str) -> Column:
        """The column called ``name``.

        Raises:
            UnknownNameError: no such column (the message lists the known ones).
        """
        try:
            return self._columns[name]
        except KeyError:
            raise UnknownNameError(
                f"the result schema has no column {name!r}; it has: {', '.join(self._columns) or 'none'}"
            ) from None

    def find(self, name: str) -> Column | None:
        """The column called ``name``, or ``None``."""
        return self._columns.get(name)

    def names(self, kind: str | None = None, axis: str | None = None) -> list[str]:
        """Column names in order, optionally only of ``kind`` / with a direction on ``axis``."""
        if kind is not None and kind not in COLUMN_KINDS:
            raise InvalidArgumentError(f"kind must be one of {', '.join(COLUMN_KINDS)} or None, got {kind!r}")
        if axis is not None and axis not in AXES:
            raise UnknownNameError(f"unknown axis {axis!r}; valid axes: {', '.join(AXES)}")
        return [c.name for c in self if (kind is None or c.kind == kind) and (axis is None or axis in c.directions)]

    def filters(self) -> tuple[str, ...]:
        """The boolean pre-filter columns (``role="filter"``)."""
        return tuple(c.name for c in self if c.role == "filter")

    def ground_truth(self, axis: str) -> str | None:
        """The first ``role="truth"`` column with a direction on ``axis`` (``None``: none)."""
        for c in self:
            if c.role == "truth" and axis in c.directions:
                return c.name
        return None

    def reference(self) -> str | None:
        """The first ``role="reference"`` column (``None``: every row is a reference row)."""
        return next((c.name for c in self if c.role == "reference"), None)

    def group_keys(self) -> tuple[str, ...]:
        """The columns whose value pairs form the topology groups (``role="group"``)."""
        return tuple(c.name for c in self if c.role == "group")

    def restricted(self, names: Sequence[str]) -> ResultSchema:
        """The columns among ``names`` (those the schema knows), in the schema's order."""
        keep = set(names)
        return ResultSchema(c for c in self if c.name in keep)

    # ------------------------------------------------------------------ storage
    def to_json(self) -> str:
        """Canonical JSON (stored in a study's store)."""
        return json.dumps([c.as_dict() for c in self], sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ResultSchema:
        """Inverse of :meth:`to_json`.

        Raises:
            SchemaError: not a stored schema.
        """
        try:
            data = json.loads(text)
        except ValueError as err:
            raise SchemaError(f"not a stored result schema: {err}") from None
        if not isinstance(data, list):
            raise SchemaError(f"a stored result schema is a list of columns, got {type(data).__name__}")
        return cls(Column.from_dict(d) for d in data)

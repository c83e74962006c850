"""The papers' DAG-cell space: immutable cell specs, parsing, indexing, enumeration, sampling.

A cell is a DAG on nodes ``0..H`` (0 = input features, H = output). Every pair ``s < t``
has one edge whose operation is ``0`` (zero: no edge), ``1`` (skip: identity) or ``2``
(linear + ReLU). Node ``t`` is the sum of its incoming edges. The string form lists, for
each node ``t = 1..H``, the ops of its edges from nodes ``0..t-1``, groups separated by
``_``: ``2_02_002`` is the three-layer chain MLP (Chen, Huang & Wang, AutoML-Conf 2023).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from trilemma._checks import is_int
from trilemma.errors import InvalidArgumentError, InvalidSpecError, InvalidTypeError

if TYPE_CHECKING:
    from trilemma.spaces._topology import Topology

__all__ = ["CellSpec", "OPS", "ZERO", "SKIP", "LINEAR", "num_cells", "enumerate_cells", "sample_cells"]

ZERO, SKIP, LINEAR = 0, 1, 2
OPS: dict[int, str] = {ZERO: "zero", SKIP: "skip", LINEAR: "linear"}
MAX_NODES = 64


def _num_edges(nodes: int) -> int:
    return nodes * (nodes + 1) // 2


def num_cells(nodes: int) -> int:
    """Number of cells with ``nodes`` = H non-input nodes: ``3 ** (H (H + 1) / 2)``."""
    _check_nodes(nodes)
    return 3 ** _num_edges(nodes)


def _check_nodes(nodes: object) -> int:
    if not is_int(nodes):
        raise InvalidTypeError(f"nodes (H) must be an int >= 1, got {type(nodes).__name__} {nodes!r}")
    if not 1 <= nodes <= MAX_NODES:
        raise InvalidArgumentError(f"nodes (H) must be between 1 and {MAX_NODES}, got {nodes}")
    return nodes


@dataclass(frozen=True)
class CellSpec:
    """An immutable DAG cell.

    Attributes:
        ops: ``ops[t - 1][s]`` is the operation of edge ``s -> t`` (0 zero, 1 skip,
            2 linear + ReLU), for ``t = 1..H`` and ``s = 0..t-1``.

    Example:
        >>> spec = CellSpec.parse("2_02_002")
        >>> spec.nodes, spec.index, str(spec)
        (3, 542, '2_02_002')
    """

    ops: tuple[tuple[int, ...], ...]
    space: ClassVar[str] = "dag"

    def __post_init__(self) -> None:
        ops = self.ops
        if not isinstance(ops, tuple) or not all(isinstance(g, tuple) for g in ops):
            raise InvalidTypeError(f"CellSpec.ops must be a tuple of tuples of ints, got {ops!r}")
        if not ops:
            raise InvalidSpecError("a cell needs at least one node (H >= 1), got no groups")
        _check_nodes(len(ops))
        for t, group in enumerate(ops, start=1):
            if len(group) != t:
                raise InvalidSpecError(
                    f"node {t} must list {t} edge op(s) (one per node 0..{t - 1}), got {len(group)}: {group!r}"
                )
            for op in group:
                if not is_int(op) or op not in OPS:
                    raise InvalidSpecError(
                        f"edge ops must be 0 (zero), 1 (skip) or 2 (linear), got {op!r} at node {t}"
                    )

    # ------------------------------------------------------------------ parsing
    @classmethod
    def parse(cls, text: str, nodes: int | None = None) -> CellSpec:
        """Parse the papers' string form, e.g. ``"2_02_002"``.

        Args:
            text: Groups of digits separated by ``_``; group ``t`` has ``t`` digits in {0,1,2}.
            nodes: Optional expected H; a string with another number of groups is rejected.

        Raises:
            InvalidTypeError: ``text`` is not a string.
            InvalidSpecError: the string is malformed; the message says what and what is allowed.
        """
        if isinstance(text, CellSpec):
            return text
        if not isinstance(text, str):
            raise InvalidTypeError(
                f"a cell string must be a str like '2_02_002', got {type(text).__name__} {text!r}"
            )
        s = text.strip()
        if not s:
            raise InvalidSpecError("empty cell string; expected groups of digits 0/1/2 separated by '_', e.g. '2_02_002'")
        groups = s.split("_")
        for t, group in enumerate(groups, start=1):
            if group == "":
                raise InvalidSpecError(
                    f"cell string {text!r} has an empty group at position {t}; groups are separated by a single '_'"
                )
            bad = [c for c in group if c not in "012"]
            if bad:
                raise InvalidSpecError(
                    f"cell string {text!r}: group {t} ({group!r}) contains {bad[0]!r}; "
                    f"allowed digits are 0 (zero), 1 (skip), 2 (linear)"
                )
        if nodes is not None:
            _check_nodes(nodes)
            if len(groups) != nodes:
                raise InvalidSpecError(
                    f"cell string {text!r} has {len(groups)} group(s); H={nodes} needs {nodes} "
                    f"groups separated by '_'"
                )
        for t, group in enumerate(groups, start=1):
            if len(group) != t:
                raise InvalidSpecError(
                    f"cell string {text!r}: group {t} ({group!r}) has {len(group)} digit(s); "
                    f"group t must have exactly t digits (one op per edge from nodes 0..t-1)"
                )
        if len(groups) > MAX_NODES:
            raise InvalidSpecError(f"cell string {text!r} has {len(groups)} groups; at most {MAX_NODES} are supported")
        return cls(tuple(tuple(int(c) for c in g) for g in groups))

    @classmethod
    def from_index(cls, index: int, nodes: int) -> CellSpec:
        """The cell whose digits, read in string order, form ``index`` in base 3."""
        _check_nodes(nodes)
        total = num_cells(nodes)
        if not is_int(index):
            raise InvalidTypeError(f"index must be an int, got {type(index).__name__} {index!r}")
        if not 0 <= index < total:
            raise InvalidArgumentError(f"index must be in [0, {total}) for H={nodes}, got {index}")
        n_edges = _num_edges(nodes)
        digits = [0] * n_edges
        for k in range(n_edges - 1, -1, -1):
            index, digits[k] = divmod(index, 3)
        out, pos = [], 0
        for t in range(1, nodes + 1):
            out.append(tuple(digits[pos : pos + t]))
            pos += t
        return cls(tuple(out))

    # ------------------------------------------------------------------ views
    @property
    def nodes(self) -> int:
        """H, the number of non-input nodes."""
        return len(self.ops)

    @property
    def digits(self) -> tuple[int, ...]:
        """All edge ops in string order."""
        return tuple(op for group in self.ops for op in group)

    @property
    def index(self) -> int:
        """Base-3 index of the cell within its H (``2_02_002`` → 542)."""
        value = 0
        for d in self.digits:
            value = value * 3 + d
        return value

    @property
    def name(self) -> str:
        """Canonical string form."""
        return "_".join("".join(str(op) for op in group) for group in self.ops)

    def __str__(self) -> str:
        return self.name

    def op(self, source: int, target: int) -> int:
        """Operation of edge ``source -> target``."""
        if not 0 <= source < target <= self.nodes:
            raise InvalidArgumentError(
                f"edge ({source}, {target}) does not exist; need 0 <= source < target <= {self.nodes}"
            )
        return self.ops[target - 1][source]

    def edges(self) -> list[tuple[int, int, int]]:
        """All edges as ``(source, target, op)``, zero edges included, in string order."""
        return [(s, t, self.ops[t - 1][s]) for t in range(1, self.nodes + 1) for s in range(t)]

    @property
    def num_linear(self) -> int:
        """Number of linear (parameterized) edges."""
        return sum(1 for d in self.digits if d == LINEAR)

    @property
    def topology(self) -> Topology:
        """Paths and their depths (cached)."""
        from trilemma.spaces._topology import topology

        return topology(self)


@functools.cache
def _all_cells(nodes: int) -> tuple[CellSpec, ...]:
    return tuple(CellSpec.from_index(i, nodes) for i in range(num_cells(nodes)))


def enumerate_cells(nodes: int = 3) -> Iterator[CellSpec]:
    """Every cell with H = ``nodes``, in index order (729 for H = 3)."""
    total = num_cells(nodes)
    if total > 10_000_000:
        raise InvalidArgumentError(
            f"H={nodes} has {total} cells, too many to enumerate (limit 10,000,000); use sample_cells"
        )
    if total <= 100_000:
        yield from _all_cells(nodes)
    else:
        for i in range(total):
            yield CellSpec.from_index(i, nodes)


def sample_cells(n: int, nodes: int = 3, seed: int = 0, replace: bool = False) -> list[CellSpec]:
    """``n`` cells drawn uniformly at random with a seeded generator.

    Raises:
        InvalidArgumentError: ``n`` is negative, or larger than the space without replacement.
    """
    total = num_cells(nodes)
    if not is_int(n) or n < 0:
        raise InvalidArgumentError(f"n must be a non-negative int, got {n!r}")
    if not replace and n > total:
        raise InvalidArgumentError(f"cannot draw {n} distinct cells from a space of {total} (H={nodes})")
    rng = random.Random(seed)
    if replace:
        idx = [rng.randrange(total) for _ in range(n)]
    else:
        idx = rng.sample(range(total), n)
    return [CellSpec.from_index(i, nodes) for i in idx]


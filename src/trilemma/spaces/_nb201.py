"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020): specs, strings, indices, paths, isomorphism.

A NAS-Bench-201 cell is a DAG on nodes ``0..3`` (0 = cell input, 3 = cell output) with one
edge per pair ``j < i`` (six edges). Each edge carries one of five operations, in the
benchmark's canonical order::

    none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3

Node ``i`` is the sum of its incoming edges, so there are ``5 ** 6 = 15,625`` cells. The
standard string lists, for each node ``i = 1..3``, the ops of its edges from ``j = 0..i-1``::

    |op~0|+|op~0|op~1|+|op~0|op~1|op~2|

so the *edge order* is ``0→1, 0→2, 1→2, 0→3, 1→3, 2→3``. This module's index is the six op
codes (0..4, op order above) read in edge order as a base-5 number: the all-``none`` cell is
0, the all-``avg_pool_3x3`` cell 15,624. **This is not the NAS-Bench-201 / NATS-Bench API
index** (the position of a cell in the released benchmark file, which follows the authors'
generation order); map between the two through the cell string.

Topology (Chen et al., "Deep Architecture Connectivity Matters for Its Convergence",
NeurIPS 2022): the end-to-end paths ``0 → 3`` that contain no ``none`` edge; ``d_p`` is the
number of convolutions (``nor_conv_1x1`` or ``nor_conv_3x3``) on path ``p``. The returned
:class:`~trilemma.spaces.Topology` is the same object the DAG-MLP space uses, with
``num_linear`` = number of convolution edges.

Isomorphism (our definition, see :func:`nb201_canonical_key`): two cells are equivalent when
the symbolic expression of their output node is the same, where ``none`` edges and
operations applied to an identically-zero node vanish, ``skip_connect`` is the identity,
node sums are commutative and associative (multisets, so ``conv(x) + conv(x)`` keeps both
terms: they carry different weights), and every other operation is an opaque function of its
input's expression. Edges that lie on no input→output path therefore drop out, and so do
cells that differ only by swapping the two intermediate nodes. Of the 15,625 cells,
:func:`unique_nb201_cells` keeps 5,425 classes. (The NAS-Bench-201 paper reports 6,466 unique
topologies for its own, weaker rule, which keeps ``none`` edges as symbols and does not track
which convolution instances are shared.)
"""

from __future__ import annotations

import difflib
import functools
import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from trilemma._checks import is_int
from trilemma.errors import InvalidArgumentError, InvalidSpecError, InvalidTypeError

if TYPE_CHECKING:
    from trilemma.spaces._dag import CellSpec
    from trilemma.spaces._topology import Topology

__all__ = [
    "NB201_OPS",
    "NB201_EDGES",
    "NB201_PATHS",
    "NB201_CONV_OPS",
    "NUM_NB201_CELLS",
    "NB201Spec",
    "enumerate_nb201",
    "sample_nb201",
    "nb201_canonical_key",
    "unique_nb201_cells",
    "nb201_isomorphism_classes",
]

NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""The five operations in the benchmark's canonical order (their codes are 0..4)."""

NB201_CONV_OPS: frozenset[str] = frozenset({"nor_conv_1x1", "nor_conv_3x3"})

NB201_EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
"""``(source, target)`` of the six edges in string order."""

NB201_PATHS: tuple[tuple[int, ...], ...] = ((0, 2, 5), (0, 4), (1, 5), (3,))
"""The four possible input→output paths as tuples of edge positions, in depth-first order
(successors in increasing order): ``0→1→2→3, 0→1→3, 0→2→3, 0→3``."""

NUM_NB201_CELLS = len(NB201_OPS) ** len(NB201_EDGES)
NUM_NODES = 3  # non-input nodes
_EDGE_POS = {edge: k for k, edge in enumerate(NB201_EDGES)}
_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _op_code(op: str) -> int:
    return NB201_OPS.index(op)


@dataclass(frozen=True)
class NB201Spec:
    """An immutable NAS-Bench-201 cell.

    Attributes:
        ops: The six operation names in edge order ``0→1, 0→2, 1→2, 0→3, 1→3, 2→3``.

    Example:
        >>> spec = NB201Spec.parse("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|")
        >>> spec.index, spec.topology.num_paths, spec.topology.depths
        (9554, 2, (1, 1))
    """

    ops: tuple[str, ...]
    space: ClassVar[str] = "nb201"

    def __post_init__(self) -> None:
        ops = self.ops
        if not isinstance(ops, tuple):
            raise InvalidTypeError(
                f"NB201Spec.ops must be a tuple of {len(NB201_EDGES)} op names, got {type(ops).__name__} {ops!r}"
            )
        if len(ops) != len(NB201_EDGES):
            raise InvalidSpecError(
                f"a NAS-Bench-201 cell has {len(NB201_EDGES)} edges (0→1, 0→2, 1→2, 0→3, 1→3, 2→3), "
                f"got {len(ops)} op(s): {ops!r}"
            )
        for k, op in enumerate(ops):
            if op not in NB201_OPS:
                s, t = NB201_EDGES[k]
                raise InvalidSpecError(_unknown_op_message(op, f"edge {s}→{t}"))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def parse(cls, text: str | NB201Spec) -> NB201Spec:
        """Parse the standard string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.

        Surrounding whitespace is ignored; everything else must match exactly (node groups
        separated by ``+``, each edge written ``|op~source|`` with sources ``0..i-1`` in
        increasing order).

        Args:
            text: The cell string (an :class:`NB201Spec` is returned unchanged).

        Returns:
            The cell.

        Raises:
            InvalidTypeError: ``text`` is not a string.
            InvalidSpecError: the string is malformed; the message names the offending part,
                what is allowed and what was received.
        """
        if isinstance(text, NB201Spec):
            return text
        if not isinstance(text, str):
            raise InvalidTypeError(
                f"a NAS-Bench-201 cell string must be a str like {_EXAMPLE!r}, got {type(text).__name__} {text!r}"
            )
        s = text.strip()
        if not s:
            raise InvalidSpecError(
                f"empty NAS-Bench-201 cell string; expected 3 node groups '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|', "
                f"e.g. {_EXAMPLE!r}"
            )
        groups = s.split("+")
        if len(groups) != NUM_NODES:
            raise InvalidSpecError(
                f"NAS-Bench-201 cell string {text!r} has {len(groups)} node group(s) separated by '+'; "
                f"expected {NUM_NODES} (nodes 1, 2, 3), e.g. {_EXAMPLE!r}"
            )
        ops: list[str] = []
        for node, group in enumerate(groups, start=1):
            if len(group) < 2 or not group.startswith("|") or not group.endswith("|"):
                raise InvalidSpecError(
                    f"NAS-Bench-201 cell string {text!r}: node {node} group {group!r} must start and end "
                    f"with '|' and list its edges as '|op~source|'"
                )
            tokens = group[1:-1].split("|")
            if len(tokens) != node:
                raise InvalidSpecError(
                    f"NAS-Bench-201 cell string {text!r}: node {node} group {group!r} has {len(tokens)} edge(s); "
                    f"node {node} needs exactly {node} (one from each of nodes 0..{node - 1})"
                )
            for source, token in enumerate(tokens):
                where = f"node {node}, edge {source + 1} of {node} ({token!r})"
                if token.count("~") != 1:
                    raise InvalidSpecError(
                        f"NAS-Bench-201 cell string {text!r}: {where} must be written 'op~source' with exactly "
                        f"one '~', e.g. 'nor_conv_3x3~{source}'"
                    )
                op, src = token.split("~")
                if op not in NB201_OPS:
                    raise InvalidSpecError(f"NAS-Bench-201 cell string {text!r}: " + _unknown_op_message(op, where))
                if not src.isdigit():
                    raise InvalidSpecError(
                        f"NAS-Bench-201 cell string {text!r}: {where} has source {src!r}; the source must be "
                        f"a node number, here {source} (sources 0..{node - 1} in increasing order)"
                    )
                if int(src) != source:
                    raise InvalidSpecError(
                        f"NAS-Bench-201 cell string {text!r}: {where} has source {int(src)}; node {node} must "
                        f"list sources 0..{node - 1} in increasing order, so this edge's source must be {source}"
                    )
                ops.append(op)
        return cls(tuple(ops))

    @classmethod
    def from_index(cls, index: int) -> NB201Spec:
        """The cell whose op codes, read in edge order, form ``index`` in base 5.

        Raises:
            InvalidTypeError: ``index`` is not an int.
            InvalidArgumentError: ``index`` is outside ``[0, 15625)``.
        """
        if not is_int(index):
            raise InvalidTypeError(f"index must be an int, got {type(index).__name__} {index!r}")
        if not 0 <= index < NUM_NB201_CELLS:
            raise InvalidArgumentError(f"index must be in [0, {NUM_NB201_CELLS}) for NAS-Bench-201, got {index}")
        return _from_index_cached(index)

    @classmethod
    def from_codes(cls, codes: Sequence[int]) -> NB201Spec:
        """The cell with op codes ``codes`` (six ints in 0..4, edge order).

        Raises:
            InvalidSpecError: wrong length or a code outside 0..4.
        """
        codes = tuple(codes)
        if len(codes) != len(NB201_EDGES):
            raise InvalidSpecError(f"a NAS-Bench-201 cell needs {len(NB201_EDGES)} op codes, got {len(codes)}: {codes!r}")
        for k, c in enumerate(codes):
            if not is_int(c) or not 0 <= c < len(NB201_OPS):
                raise InvalidSpecError(
                    f"op code at edge position {k} must be an int in 0..{len(NB201_OPS) - 1} "
                    f"({', '.join(f'{i}={o}' for i, o in enumerate(NB201_OPS))}), got {c!r}"
                )
        return cls(tuple(NB201_OPS[c] for c in codes))

    # ------------------------------------------------------------------ views
    @property
    def codes(self) -> tuple[int, ...]:
        """Op codes 0..4 in edge order."""
        return tuple(_op_code(op) for op in self.ops)

    @property
    def index(self) -> int:
        """Base-5 index in ``[0, 15625)`` (not the NATS-Bench API index; see module docs)."""
        value = 0
        for c in self.codes:
            value = value * len(NB201_OPS) + c
        return value

    @property
    def name(self) -> str:
        """The standard string form."""
        parts = []
        for node in range(1, NUM_NODES + 1):
            parts.append(
                "|" + "|".join(f"{self.ops[_EDGE_POS[(j, node)]]}~{j}" for j in range(node)) + "|"
            )
        return "+".join(parts)

    def __str__(self) -> str:
        return self.name

    def op(self, source: int, target: int) -> str:
        """Operation of edge ``source → target``.

        Raises:
            InvalidArgumentError: there is no such edge.
        """
        if (source, target) not in _EDGE_POS:
            raise InvalidArgumentError(
                f"edge ({source}, {target}) does not exist; NAS-Bench-201 edges are {list(NB201_EDGES)}"
            )
        return self.ops[_EDGE_POS[(source, target)]]

    def edges(self) -> list[tuple[int, int, str]]:
        """All six edges as ``(source, target, op)`` in edge order, ``none`` included."""
        return [(s, t, op) for (s, t), op in zip(NB201_EDGES, self.ops)]

    @property
    def num_convs(self) -> int:
        """Number of convolution edges (on a path or not)."""
        return sum(op in NB201_CONV_OPS for op in self.ops)

    def paths(self) -> list[tuple[tuple[int, ...], tuple[str, ...]]]:
        """Input→output paths with no ``none`` edge, as ``(node sequence, ops)``, depth-first order."""
        out = []
        for path in NB201_PATHS:
            ops = tuple(self.ops[k] for k in path)
            if "none" not in ops:
                nodes = (0,) + tuple(NB201_EDGES[k][1] for k in path)
                out.append((nodes, ops))
        return out

    @property
    def live_edges(self) -> tuple[bool, ...]:
        """For each edge (edge order): does it lie on an input→output path with no ``none``?"""
        live = [False] * len(NB201_EDGES)
        for path in NB201_PATHS:
            if all(self.ops[k] != "none" for k in path):
                for k in path:
                    live[k] = True
        return tuple(live)

    def pruned(self) -> NB201Spec:
        """The same cell with every edge that lies on no input→output path set to ``none``.

        The output of the pruned cell equals the original's at initialization; an edge whose
        source is disconnected from the input computes on a zero tensor and only contributes
        its BatchNorm bias (zero at initialization, a learnable constant after training).
        """
        return NB201Spec(tuple(op if live else "none" for op, live in zip(self.ops, self.live_edges)))

    def dag_skeleton(self) -> CellSpec:
        """The DAG-cell skeleton (the papers' DAG-cell space) with the same paths and path depths.

        ``none`` → 0 (zero), ``skip_connect`` and ``avg_pool_3x3`` → 1 (parameter-free),
        convolutions → 2 (a parameterized layer), edge for edge. The skeleton's topology equals
        this cell's, so the DAG-cell theory (:mod:`trilemma.theory`) applies to it unchanged.
        """
        from trilemma.spaces._dag import CellSpec

        code = {"none": 0, "skip_connect": 1, "avg_pool_3x3": 1, "nor_conv_1x1": 2, "nor_conv_3x3": 2}
        digits = [code[op] for op in self.ops]
        return CellSpec((tuple(digits[0:1]), tuple(digits[1:3]), tuple(digits[3:6])))

    @property
    def topology(self) -> Topology:
        """Paths and conv depths as a :class:`~trilemma.spaces.Topology` (cached)."""
        return _topology(self)

    @property
    def canonical_key(self) -> str:
        """Symbolic expression of the output node (see :func:`nb201_canonical_key`)."""
        return nb201_canonical_key(self)

    def canonical(self) -> NB201Spec:
        """The representative of this cell's isomorphism class (its smallest-index member)."""
        reps, _ = _classes()
        return NB201Spec.from_index(reps[self.index])

    def is_isomorphic(self, other: NB201Spec | str) -> bool:
        """Whether ``other`` computes the same output expression (see :func:`nb201_canonical_key`)."""
        return self.canonical_key == nb201_canonical_key(NB201Spec.parse(other))


def _unknown_op_message(op: str, where: str) -> str:
    close = difflib.get_close_matches(op, NB201_OPS, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where}: unknown operation {op!r}{hint}; allowed operations are {', '.join(NB201_OPS)}"


@functools.lru_cache(maxsize=NUM_NB201_CELLS)
def _from_index_cached(index: int) -> NB201Spec:
    codes = [0] * len(NB201_EDGES)
    for k in range(len(NB201_EDGES) - 1, -1, -1):
        index, codes[k] = divmod(index, len(NB201_OPS))
    return NB201Spec(tuple(NB201_OPS[c] for c in codes))


@functools.lru_cache(maxsize=NUM_NB201_CELLS)
def _topology(spec: NB201Spec) -> Topology:
    from trilemma.spaces._topology import Topology

    depths = tuple(sum(op in NB201_CONV_OPS for op in ops) for _, ops in spec.paths())
    counts: dict[int, int] = {}
    for d in depths:
        counts[d] = counts.get(d, 0) + 1
    return Topology(
        num_paths=len(depths),
        depth_counts=tuple(sorted(counts.items())),
        depths=depths,
        num_linear=spec.num_convs,
    )


# ---------------------------------------------------------------------- isomorphism
_ABBR = {"nor_conv_1x1": "c1", "nor_conv_3x3": "c3", "avg_pool_3x3": "ap"}


def nb201_canonical_key(spec: NB201Spec | str) -> str:
    """Canonical form of the computation graph of the cell's output; equal keys = isomorphic cells.

    The cell is rewritten as a graph of *operation instances*: every ``nor_conv_1x1``,
    ``nor_conv_3x3`` or ``avg_pool_3x3`` edge whose source is not identically zero is one
    instance (abbreviated ``c1``, ``c3``, ``ap``) whose input is its source node; ``none``
    edges and instances applied to a zero node vanish; ``skip_connect`` is the identity, so a
    node is the multiset of instances (and copies of the input ``x``) reaching it through
    skips. Only instances the output depends on are kept (edges on no input→output path drop
    out). Two cells are isomorphic when these labelled graphs are: same instances up to
    relabelling, same inputs, same output multiset. Sums are commutative and associative and
    multiplicities are kept (``x + x = 2x``; two convolutions of the same input have different
    weights and stay two instances, while one instance feeding two places stays one).

    The key lists each kept instance as ``label:op(inputs)`` followed by ``->`` and the output
    multiset, with labels chosen to give the lexicographically smallest string.

    Args:
        spec: The cell or its string.

    Returns:
        The key, e.g. ``"a:c3(x)->a+x"`` (``"->x"`` for a pure skip cell); ``"0"`` when the
        output is identically zero.
    """
    spec = NB201Spec.parse(spec)
    inputs: dict[int, tuple[str | int, ...]] = {}  # instance (edge position) -> input multiset
    kind: dict[int, str] = {}
    values: list[tuple[str | int, ...]] = [("x",)]
    for i in range(1, NUM_NODES + 1):
        terms: list[str | int] = []
        for j in range(i):
            k = _EDGE_POS[(j, i)]
            op, src = spec.ops[k], values[j]
            if op == "none" or not src:
                continue
            if op == "skip_connect":
                terms.extend(src)
            else:
                inputs[k], kind[k] = src, _ABBR[op]
                terms.append(k)
        values.append(tuple(terms))
    out = values[-1]
    if not out:
        return "0"
    keep: set[int] = set()
    stack = [t for t in out if isinstance(t, int)]
    while stack:
        k = stack.pop()
        if k not in keep:
            keep.add(k)
            stack.extend(t for t in inputs[k] if isinstance(t, int))

    @functools.cache
    def tree(k: int) -> str:
        return f"{kind[k]}({'+'.join(sorted('x' if isinstance(t, str) else tree(t) for t in inputs[k]))})"

    groups: dict[str, list[int]] = {}
    for k in keep:
        groups.setdefault(tree(k), []).append(k)
    ordered = sorted(groups)
    best = ""
    for perm in itertools.product(*(itertools.permutations(groups[g]) for g in ordered)):
        order = [k for grp in perm for k in grp]
        label = {k: chr(ord("a") + n) for n, k in enumerate(order)}

        def ref(t: str | int, label: dict[int, str] = label) -> str:
            return "x" if isinstance(t, str) else label[t]

        body = ",".join(f"{label[k]}:{kind[k]}({'+'.join(sorted(ref(t) for t in inputs[k]))})" for k in order)
        key = f"{body}->{'+'.join(sorted(ref(t) for t in out))}"
        if not best or key < best:
            best = key
    return best


@functools.lru_cache(maxsize=1)
def _classes() -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Representative index (smallest member) and key of every cell, by index."""
    keys = tuple(nb201_canonical_key(NB201Spec.from_index(i)) for i in range(NUM_NB201_CELLS))
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    return tuple(first[k] for k in keys), keys


def nb201_isomorphism_classes() -> dict[str, list[int]]:
    """Every isomorphism class: canonical key → sorted member indices (5,425 classes)."""
    _, keys = _classes()
    out: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return out


def unique_nb201_cells() -> list[NB201Spec]:
    """One representative (the smallest-index member) per isomorphism class, in index order."""
    reps, _ = _classes()
    return [NB201Spec.from_index(i) for i in sorted(set(reps))]


# ---------------------------------------------------------------------- enumeration, sampling
def enumerate_nb201(unique: bool = False) -> Iterator[NB201Spec]:
    """Every NAS-Bench-201 cell in index order (15,625), or one per isomorphism class.

    Args:
        unique: Yield only class representatives (:func:`unique_nb201_cells`).
    """
    if unique:
        yield from unique_nb201_cells()
        return
    for i in range(NUM_NB201_CELLS):
        yield _from_index_cached(i)


def sample_nb201(n: int, seed: int = 0, replace: bool = False, unique: bool = False) -> list[NB201Spec]:
    """``n`` cells drawn uniformly at random with a seeded generator.

    Args:
        n: Number of cells.
        seed: Seed of the private :class:`random.Random` generator (global RNGs untouched).
        replace: Draw with replacement.
        unique: Draw from the isomorphism-class representatives only.

    Returns:
        The cells, in draw order.

    Raises:
        InvalidArgumentError: ``n`` is negative, or larger than the pool without replacement.
    """
    if not is_int(n) or n < 0:
        raise InvalidArgumentError(f"n must be a non-negative int, got {n!r}")
    pool = [s.index for s in unique_nb201_cells()] if unique else range(NUM_NB201_CELLS)
    if not replace and n > len(pool):
        raise InvalidArgumentError(
            f"cannot draw {n} distinct cells from {len(pool)} NAS-Bench-201 cells"
            + (" (unique=True)" if unique else "")
        )
    rng = random.Random(seed)
    idx = [rng.choice(pool) for _ in range(n)] if replace else rng.sample(pool, n)
    return [NB201Spec.from_index(i) for i in idx]

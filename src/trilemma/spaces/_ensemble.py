"""Ensembles of DAG cells and randomly pruned cells: specs, string form, multigraph topology, counts.

The remedy of Chen, Huang & Wang (AutoML-Conf 2023, Table 1 and Figure 7): several cells of
the same H share their nodes — node ``t`` is the sum of the incoming edges of *every* member
(the DARTS super-network idea) — but keep separate edge weights; one stem, one readout. Each
member's weight matrices may be pruned: a fixed random binary mask ``M`` at the member's ratio,
applied as ``M ⊙ W`` and kept through training (unstructured random pruning). The stem and
the readout are not pruned unless asked (the paper prunes the cells only).

String form (round-trips through :meth:`EnsembleSpec.parse` / :attr:`EnsembleSpec.name`)::

    1_22_221+2_02_002                 two members, unpruned (the paper's row IV)
    1_22_221@0.2+2_02_002@0.5         the same, members pruned at 20 % and 50 % (row V)
    2_02_002@0.3                      one pruned cell
    1_22_221+2_02_002+stem@0.1        the stem pruned too (``readout@r`` likewise)

Members are separated by ``+`` and keep the written order (it fixes the order in which their
weights are drawn); ``@r`` is the fraction of each of the member's weight matrices that is
pruned, ``0 <= r < 1`` with at most four decimals; ``@0`` is dropped from the canonical name,
so an unpruned one-member ensemble *is* its cell (``"2_22_221"``).

Topology of an ensemble is that of the union **multigraph**: between nodes ``s < t`` there is
one edge per member whose op is not zero, so two members can join the same nodes by parallel
edges. ``P`` counts the paths ``0 → H`` of the multigraph (a path picks one parallel edge per
hop), ``d_p`` the linear edges on path ``p`` and ``d̄ = Σ_p d_p / P`` (Chen et al., NeurIPS 2022).
Pruning does not change the topology (a pruned edge still carries signal).
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from trilemma._checks import is_int, is_real
from trilemma._schema import Column
from trilemma.errors import InvalidArgumentError, InvalidSpecError, InvalidTypeError
from trilemma.spaces._dag import LINEAR, ZERO, CellSpec
from trilemma.spaces._topology import MAX_ENUMERATED_PATHS, Topology

__all__ = [
    "ENSEMBLE_COLUMNS",
    "MAX_RATIO_DECIMALS",
    "EnsembleSpec",
    "Member",
    "ensemble_count_params",
    "format_ratio",
    "multigraph_topology",
    "pruned_count",
]

#: Pruning ratios are written with at most this many decimals (so that names round-trip).
MAX_RATIO_DECIMALS = 4
_RATIO_RE = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)$")
_SPECIAL = ("stem", "readout")


def format_ratio(ratio: float) -> str:
    """The canonical text of a pruning ratio: ``0.2`` → ``"0.2"``, ``0.125`` → ``"0.125"``."""
    text = f"{ratio:.{MAX_RATIO_DECIMALS}f}".rstrip("0").rstrip(".")
    return text or "0"


def _check_ratio(value: object, what: str) -> float:
    """A pruning ratio in ``[0, 1)`` with at most :data:`MAX_RATIO_DECIMALS` decimals."""
    if not is_real(value):
        raise InvalidTypeError(f"{what}: a pruning ratio must be a number in [0, 1), got {type(value).__name__} {value!r}")
    r = float(value)
    if not math.isfinite(r) or not 0.0 <= r < 1.0:
        raise InvalidSpecError(
            f"{what}: a pruning ratio must be in [0, 1) (1 would remove every weight; use op 0 for a missing edge), "
            f"got {value!r}")
    if abs(round(r, MAX_RATIO_DECIMALS) - r) > 1e-12:
        raise InvalidSpecError(f"{what}: a pruning ratio has at most {MAX_RATIO_DECIMALS} decimals, got {value!r}")
    return round(r, MAX_RATIO_DECIMALS)


def pruned_count(numel: int, ratio: float) -> int:
    """Number of weights a mask at ``ratio`` removes from a matrix of ``numel`` entries:
    ``round(ratio · numel)`` (halves round up), as ``torch.nn.utils.prune.random_unstructured``."""
    return int(math.floor(ratio * numel + 0.5))


@dataclass(frozen=True)
class Member:
    """One member of an ensemble: a cell and the pruning ratio of its weight matrices.

    Attributes:
        cell: The member's cell.
        ratio: Fraction of every weight matrix of its linear edges that is pruned (biases
            are never pruned).
    """

    cell: CellSpec
    ratio: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.cell, CellSpec):
            raise InvalidTypeError(f"Member.cell must be a CellSpec, got {type(self.cell).__name__}")
        object.__setattr__(self, "ratio", _check_ratio(self.ratio, f"member {self.cell.name}"))
        if self.ratio > 0 and self.cell.num_linear == 0:
            raise InvalidSpecError(
                f"member {self.cell.name} has no linear edge, so there is no weight to prune at ratio {self.ratio:g}; "
                f"drop '@{format_ratio(self.ratio)}'")

    @property
    def name(self) -> str:
        """``"cell"`` or ``"cell@ratio"``."""
        return self.cell.name if self.ratio == 0 else f"{self.cell.name}@{format_ratio(self.ratio)}"


@dataclass(frozen=True)
class EnsembleSpec:
    """An immutable ensemble of DAG cells sharing their nodes, optionally randomly pruned.

    Attributes:
        members: The member cells (all with the same H) and their pruning ratios, in order.
        stem_ratio: Pruning ratio of the stem's weight matrix (default 0: not pruned).
        readout_ratio: Pruning ratio of the readout's weight matrix (default 0).

    Example:
        >>> spec = EnsembleSpec.parse("1_22_221@0.2+2_02_002@0.5")
        >>> spec.name, spec.topology.num_paths, spec.num_members
        ('1_22_221@0.2+2_02_002@0.5', 13, 2)
        >>> EnsembleSpec.parse("2_22_221@0").name
        '2_22_221'
    """

    members: tuple[Member, ...]
    stem_ratio: float = 0.0
    readout_ratio: float = 0.0
    space: ClassVar[str] = "ensemble"

    def __post_init__(self) -> None:
        if not isinstance(self.members, tuple) or not all(isinstance(m, Member) for m in self.members):
            raise InvalidTypeError(f"EnsembleSpec.members must be a tuple of Member, got {self.members!r}")
        if not self.members:
            raise InvalidSpecError("an ensemble needs at least one member cell, got none")
        heights = sorted({m.cell.nodes for m in self.members})
        if len(heights) > 1:
            raise InvalidSpecError(
                f"every member of an ensemble must have the same number of nodes H (they share their nodes), got H in "
                f"{heights}: {', '.join(m.cell.name for m in self.members)}")
        object.__setattr__(self, "stem_ratio", _check_ratio(self.stem_ratio, "stem"))
        object.__setattr__(self, "readout_ratio", _check_ratio(self.readout_ratio, "readout"))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_cell(cls, cell: CellSpec | str, ratio: float = 0.0) -> EnsembleSpec:
        """The one-member ensemble of ``cell`` (pruned at ``ratio``)."""
        spec = cell if isinstance(cell, CellSpec) else CellSpec.parse(cell)
        return cls((Member(spec, ratio),))

    @classmethod
    def of(cls, members: Sequence[CellSpec | str | tuple[CellSpec | str, float]], *, stem_ratio: float = 0.0,
           readout_ratio: float = 0.0) -> EnsembleSpec:
        """An ensemble from cells or ``(cell, ratio)`` pairs."""
        out = []
        for item in members:
            cell, ratio = item if isinstance(item, tuple) else (item, 0.0)
            out.append(Member(cell if isinstance(cell, CellSpec) else CellSpec.parse(cell), ratio))
        return cls(tuple(out), stem_ratio=stem_ratio, readout_ratio=readout_ratio)

    @classmethod
    def parse(cls, text: str | EnsembleSpec | CellSpec, nodes: int | None = None) -> EnsembleSpec:
        """Parse the string form (module docstring), e.g. ``"1_22_221@0.2+2_02_002@0.5"``.

        Args:
            text: The string (an :class:`EnsembleSpec` is returned as is, a
                :class:`~trilemma.spaces.CellSpec` becomes its one-member ensemble).
            nodes: Optional expected H of every member.

        Raises:
            InvalidTypeError: ``text`` is not a string.
            InvalidSpecError: the string is malformed; the message names the part that is
                wrong, what is allowed and what was given.
        """
        if isinstance(text, EnsembleSpec):
            spec = text
        elif isinstance(text, CellSpec):
            spec = cls.from_cell(text)
        elif not isinstance(text, str):
            raise InvalidTypeError(
                f"an ensemble string must be a str like '1_22_221@0.2+2_02_002@0.5', got {type(text).__name__} {text!r}")
        else:
            spec = cls._parse_text(text)
        if nodes is not None and spec.nodes != nodes:
            raise InvalidSpecError(f"ensemble {spec.name!r} has members with H={spec.nodes}; this space needs H={nodes}")
        return spec

    @classmethod
    def _parse_text(cls, text: str) -> EnsembleSpec:
        s = text.strip()
        if not s:
            raise InvalidSpecError(
                "empty ensemble string; expected member cells separated by '+', each optionally '@ratio', "
                "e.g. '1_22_221@0.2+2_02_002@0.5'")
        parts = s.split("+")
        members: list[Member] = []
        special: dict[str, float] = {}
        for i, raw in enumerate(parts, start=1):
            part = raw.strip()
            if not part:
                raise InvalidSpecError(
                    f"ensemble string {text!r}: member {i} is empty; members are separated by a single '+'")
            pieces = part.split("@")
            if len(pieces) > 2:
                raise InvalidSpecError(
                    f"ensemble string {text!r}: member {i} ({part!r}) has {len(pieces) - 1} '@'; write at most one "
                    f"pruning ratio per member, as 'cell@ratio'")
            head = pieces[0].strip()
            ratio = 0.0
            if len(pieces) == 2:
                rtext = pieces[1].strip()
                if not rtext:
                    raise InvalidSpecError(
                        f"ensemble string {text!r}: member {i} ({part!r}) has '@' but no ratio; write e.g. "
                        f"'{head or '2_02_002'}@0.5'")
                if not _RATIO_RE.match(rtext):
                    raise InvalidSpecError(
                        f"ensemble string {text!r}: the pruning ratio of member {i} must be a decimal number in "
                        f"[0, 1) such as 0.25, got {rtext!r}")
                ratio = _check_ratio(float(rtext), f"ensemble string {text!r}, member {i}")
            if not head:
                raise InvalidSpecError(
                    f"ensemble string {text!r}: member {i} ({part!r}) has a ratio but no cell; write 'cell@ratio'")
            if head in _SPECIAL:
                if head in special:
                    raise InvalidSpecError(f"ensemble string {text!r}: {head!r} is pruned twice; give it once")
                if len(pieces) != 2 or ratio == 0:
                    raise InvalidSpecError(
                        f"ensemble string {text!r}: {head!r} is not a cell; it names the {head} to prune and needs a "
                        f"ratio > 0, e.g. '{head}@0.2'")
                special[head] = ratio
                continue
            try:
                cell = CellSpec.parse(head)
            except InvalidSpecError as err:
                raise InvalidSpecError(f"ensemble string {text!r}, member {i}: {err}") from None
            try:
                members.append(Member(cell, ratio))
            except InvalidSpecError as err:
                raise InvalidSpecError(f"ensemble string {text!r}: {err}") from None
        if not members:
            raise InvalidSpecError(
                f"ensemble string {text!r} names no member cell (only {', '.join(special)}); add at least one cell, "
                f"e.g. '2_02_002+{s}'")
        try:
            return cls(tuple(members), stem_ratio=special.get("stem", 0.0), readout_ratio=special.get("readout", 0.0))
        except InvalidSpecError as err:
            raise InvalidSpecError(f"ensemble string {text!r}: {err}") from None

    # ------------------------------------------------------------------ views
    @property
    def name(self) -> str:
        """Canonical string form (members in order, ``@0`` dropped, ``stem``/``readout`` last)."""
        parts = [m.name for m in self.members]
        if self.stem_ratio:
            parts.append(f"stem@{format_ratio(self.stem_ratio)}")
        if self.readout_ratio:
            parts.append(f"readout@{format_ratio(self.readout_ratio)}")
        return "+".join(parts)

    def __str__(self) -> str:
        return self.name

    @property
    def nodes(self) -> int:
        """H, shared by every member."""
        return self.members[0].cell.nodes

    @property
    def num_members(self) -> int:
        return len(self.members)

    @property
    def cells(self) -> tuple[CellSpec, ...]:
        return tuple(m.cell for m in self.members)

    @property
    def ratios(self) -> tuple[float, ...]:
        return tuple(m.ratio for m in self.members)

    @property
    def pruned(self) -> bool:
        """Some weight matrix is pruned."""
        return any(self.ratios) or bool(self.stem_ratio) or bool(self.readout_ratio)

    @property
    def is_cell(self) -> bool:
        """One unpruned member: the plain cell of the papers' space."""
        return self.num_members == 1 and not self.pruned

    @property
    def num_linear(self) -> int:
        """Linear edges over all members."""
        return sum(m.cell.num_linear for m in self.members)

    def edges(self) -> list[tuple[int, int, int, int]]:
        """Every edge of the multigraph as ``(source, target, op, member)``, zero edges included,
        member by member, each in string order."""
        return [(s, t, op, k) for k, m in enumerate(self.members) for s, t, op in m.cell.edges()]

    @property
    def digits(self) -> tuple[int, ...]:
        """All members' edge ops, member by member in string order."""
        return tuple(d for m in self.members for d in m.cell.digits)

    @property
    def topology(self) -> Topology:
        """Paths of the union multigraph and their depths (cached)."""
        return _ensemble_topology(self)


def multigraph_topology(nodes: int, edges: Sequence[tuple[int, int, int]],
                        limit: int = MAX_ENUMERATED_PATHS) -> Topology:
    """The :class:`~trilemma.spaces.Topology` of a DAG multigraph on nodes ``0..nodes``.

    Args:
        nodes: H.
        edges: ``(source, target, op)`` with ``0 <= source < target <= H`` and op 0 (zero,
            ignored), 1 (skip) or 2 (linear); parallel edges are allowed and each is its own
            choice on a path.
        limit: Enumerate the paths' depths one by one only up to this many paths.

    Returns:
        ``P`` and the depth histogram by dynamic programming (no enumeration), the depths in
        depth-first order (successor nodes increasing, parallel edges in the given order).

    Raises:
        InvalidArgumentError: an edge is out of range or has an unknown op.
    """
    if not is_int(nodes) or nodes < 1:
        raise InvalidArgumentError(f"nodes must be an int >= 1, got {nodes!r}")
    out_edges: dict[int, list[tuple[int, int]]] = {}
    counts: list[Counter[int]] = [Counter() for _ in range(nodes + 1)]
    counts[0][0] = 1
    for s, t, op in edges:
        if not (0 <= s < t <= nodes) or op not in (0, 1, 2):
            raise InvalidArgumentError(f"edge ({s}, {t}, op {op}) is not an edge of a DAG cell with H={nodes}")
    ordered = sorted(((s, t, op) for s, t, op in edges if op != ZERO), key=lambda e: e[1])
    for s, t, op in ordered:
        out_edges.setdefault(s, []).append((t, op))
        for d, c in counts[s].items():
            counts[t][d + (op == LINEAR)] += c
    P = sum(counts[nodes].values())
    depths: list[int] = []
    if P <= limit:
        def walk(node: int, depth: int) -> None:
            if node == nodes:
                depths.append(depth)
                return
            for t, op in sorted(out_edges.get(node, []), key=lambda e: e[0]):
                walk(t, depth + (op == LINEAR))

        walk(0, 0)
    return Topology(num_paths=P, depth_counts=tuple(sorted(counts[nodes].items())), depths=tuple(depths),
                    num_linear=sum(op == LINEAR for _, _, op in edges))


@functools.lru_cache(maxsize=65536)
def _ensemble_topology(spec: EnsembleSpec) -> Topology:
    return multigraph_topology(spec.nodes, [(s, t, op) for s, t, op, _ in spec.edges()])


def ensemble_count_params(spec: EnsembleSpec | str, width: int, in_features: int, num_classes: int,
                          bias: bool = True, batchnorm: bool = False, *, effective: bool = False) -> int:
    """Parameters of the ensemble network (one stem, every member's linear edges, one readout).

    Dense: ``in·m + L·m² + m·c + bias·(m + L·m + c) + batchnorm·2m·(1 + L)`` with ``L`` the
    linear edges of all members (the trainable parameters of the built module, pruned weights
    included). Effective: the dense count minus the pruned weights (``round(r·m²)`` per linear
    edge of a member pruned at ``r``; the stem and readout likewise when pruned); biases are
    never pruned. The paper's Table 1 reports effective counts.

    Raises:
        InvalidArgumentError: a non-positive width, input or output size.
    """
    spec = EnsembleSpec.parse(spec)
    for what, value in (("width", width), ("in_features", in_features), ("num_classes", num_classes)):
        if not is_int(value) or value < 1:
            raise InvalidArgumentError(f"{what} must be a positive int, got {value!r}")
    m, L = width, spec.num_linear
    total = in_features * m + L * m * m + m * num_classes
    if bias:
        total += m + L * m + num_classes
    if batchnorm:
        total += 2 * m * (1 + L)
    if effective:
        total -= sum(pruned_count(m * m, mem.ratio) * mem.cell.num_linear for mem in spec.members)
        total -= pruned_count(in_features * m, spec.stem_ratio) + pruned_count(m * num_classes, spec.readout_ratio)
    return total


_E, _C, _G = "expressivity", "convergence", "generalization"
_SRC = "space:ensemble"

#: Descriptive columns of the ensemble space (the DAG space's topology columns over the union
#: multigraph, plus the ensemble's own).
ENSEMBLE_COLUMNS: tuple[Column, ...] = (
    Column("P", "topology", "int", label="P", directions={_E: False, _C: True, _G: True}, role="group",
           description="paths of the union multigraph (topological width)", source=_SRC),
    Column("mean_depth", "topology", label="d̄", directions={_E: True, _C: False, _G: False}, role="group",
           description="effective depth over the union's paths", source=_SRC),
    Column("eff_width", "topology", label="m̄", directions={_E: False, _C: True, _G: True},
           description="effective width #{p: d_p > 0} / d̄ (NeurIPS 2022)", source=_SRC),
    Column("sum_depth", "topology", "int", label="Σd_p", directions={_E: True}, description="Σ_p d_p",
           source=_SRC),
    Column("num_param_paths", "topology", "int", label="#{p: d_p > 0}", description="paths with a linear edge",
           source=_SRC),
    Column("num_linear", "topology", "int", label="linear edges", description="linear edges of all members",
           source=_SRC),
    Column("max_depth", "topology", "int", label="max d_p", description="depth of the deepest path", source=_SRC),
    Column("depths", "topology", "str", description="sorted path depths (a depth×count histogram for large P)",
           source=_SRC),
    Column("has_path", "topology", "bool", description="some path joins input and output", source=_SRC),
    Column("has_param_path", "topology", "bool", description="some path has a linear edge", source=_SRC),
    Column("trainable", "topology", "bool", description="a path with a linear edge (the papers' trainable cells)",
           source=_SRC),
    Column("group", "topology", "str", description="the (P, d̄) group, e.g. P4_d1.25", source=_SRC),
    Column("members", "info", "int", description="member cells of the ensemble (1: a single cell)", source=_SRC),
    Column("member_cells", "info", "str", description="the member cells, '+'-separated", source=_SRC),
    Column("member_ratios", "info", "str", description="pruning ratio of each member, '/'-separated ('0.2/0.5')",
           source=_SRC),
    Column("stem_ratio", "info", "float", description="pruning ratio of the stem (0: not pruned)", source=_SRC),
    Column("readout_ratio", "info", "float", description="pruning ratio of the readout (0: not pruned)", source=_SRC),
    Column("max_ratio", "info", "float", description="the largest pruning ratio of any weight matrix", source=_SRC),
    Column("single_cell", "info", "bool", role="reference",
           description="a plain, unpruned cell of the papers' space: the population ensembles are ranked among",
           source=_SRC),
)

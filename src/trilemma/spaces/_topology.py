"""Topology of a DAG cell: end-to-end paths over non-zero edges and their depths.

Definitions (Chen et al., NeurIPS 2022; Chen, Huang & Wang, AutoML-Conf 2023):
``P`` = number of paths 0 → H over non-zero edges ("topological width"), ``d_p`` = number
of linear edges on path ``p`` ("topological depth"), ``d̄ = (1/P) Σ_p d_p`` (effective
depth), ``m̄ = #{p : d_p > 0} / d̄`` (effective width).
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from trilemma._schema import Column


class CellOps(Protocol):
    """What the topology of a cell needs: H and the ops of node ``t`` from nodes ``0..t-1``
    (``0`` zero, ``1`` skip, ``2`` linear; :class:`~trilemma.spaces.CellSpec` has both)."""

    @property
    def nodes(self) -> int: ...

    @property
    def ops(self) -> tuple[tuple[int, ...], ...]: ...

__all__ = ["DAG_TOPOLOGY_COLUMNS", "Topology", "topology", "path_depth_counts", "enumerate_paths"]

MAX_ENUMERATED_PATHS = 100_000
#: Largest P whose sorted path depths are written out one by one in :attr:`Topology.depths_text`.
MAX_LISTED_DEPTHS = 1000


@dataclass(frozen=True)
class Topology:
    """Path statistics of a cell.

    Attributes:
        num_paths: P.
        depth_counts: ``{d: number of paths with d linear edges}``.
        depths: every path's depth, in depth-first order from node 0 taking successors in
            increasing order (``2_21_112`` → ``(2, 1, 2, 0)``); empty when P is too large
            to list (see :data:`MAX_ENUMERATED_PATHS`).
        num_linear: number of linear edges in the cell (on a path or not).
    """

    num_paths: int
    depth_counts: tuple[tuple[int, int], ...]
    depths: tuple[int, ...]
    num_linear: int

    @property
    def P(self) -> int:  # noqa: N802 - paper notation
        return self.num_paths

    @property
    def sum_depth(self) -> int:
        """Σ_p d_p."""
        return sum(d * c for d, c in self.depth_counts)

    @property
    def num_param_paths(self) -> int:
        """#{p : d_p > 0}."""
        return sum(c for d, c in self.depth_counts if d > 0)

    @property
    def mean_depth(self) -> float | None:
        """d̄; ``None`` when there is no path."""
        return self.sum_depth / self.num_paths if self.num_paths else None

    @property
    def eff_width(self) -> float | None:
        """m̄ = #{p : d_p > 0} / d̄; ``None`` when there is no parameterized path."""
        d = self.mean_depth
        return self.num_param_paths / d if d else None

    @property
    def max_depth(self) -> int:
        return max((d for d, _ in self.depth_counts), default=0)

    @property
    def has_path(self) -> bool:
        return self.num_paths > 0

    @property
    def has_param_path(self) -> bool:
        """True when some path has a linear edge (the output depends on trainable cell weights)."""
        return self.num_param_paths > 0

    @property
    def trainable(self) -> bool:
        """The papers' "trainable" cells: at least one path with a linear edge."""
        return self.has_param_path

    @property
    def sorted_depths(self) -> tuple[int, ...]:
        """Every path's depth, sorted (P entries: use :attr:`depth_counts` for large P)."""
        return tuple(sorted(d for d, c in self.depth_counts for _ in range(c)))

    @property
    def depths_text(self) -> str:
        """The path depths as text: sorted and space-separated (``"0 1 2 2"``) when P is at most
        :data:`MAX_LISTED_DEPTHS`, else the depth histogram as ``depth×count`` items
        (``"1×1 2×23 3×253 …"``), so that a cell with millions of paths stays one short value."""
        if self.num_paths <= MAX_LISTED_DEPTHS:
            return " ".join(str(d) for d in self.sorted_depths)
        return " ".join(f"{d}×{c}" for d, c in self.depth_counts)

    @property
    def group(self) -> tuple[int, float] | None:
        """The papers' (P, d̄) topology group, d̄ rounded to 6 decimals; None without a path."""
        d = self.mean_depth
        return None if d is None else (self.num_paths, round(d, 6))

    def as_dict(self) -> dict[str, object]:
        return {
            "P": self.num_paths,
            "mean_depth": self.mean_depth,
            "eff_width": self.eff_width,
            "sum_depth": self.sum_depth,
            "num_param_paths": self.num_param_paths,
            "num_linear": self.num_linear,
            "max_depth": self.max_depth,
            "depths": self.depths_text,
            "has_path": self.has_path,
            "has_param_path": self.has_param_path,
        }


def path_depth_counts(spec: CellOps) -> dict[int, int]:
    """``{d: number of paths 0→H with d linear edges}`` by dynamic programming (no enumeration)."""
    H = spec.nodes
    counts: list[Counter[int]] = [Counter() for _ in range(H + 1)]
    counts[0][0] = 1
    for t in range(1, H + 1):
        for s in range(t):
            op = spec.ops[t - 1][s]
            if op == 0 or not counts[s]:
                continue
            shift = 1 if op == 2 else 0
            for d, c in counts[s].items():
                counts[t][d + shift] += c
    return dict(sorted(counts[H].items()))


def enumerate_paths(spec: CellOps, limit: int = MAX_ENUMERATED_PATHS) -> list[tuple[tuple[int, ...], int]]:
    """Every path 0→H as ``(node sequence, depth)``, depth-first with successors in increasing order."""
    H = spec.nodes
    out: list[tuple[tuple[int, ...], int]] = []

    def walk(node: int, trail: tuple[int, ...], depth: int) -> None:
        if len(out) >= limit:
            return
        if node == H:
            out.append((trail, depth))
            return
        for t in range(node + 1, H + 1):
            op = spec.ops[t - 1][node]
            if op:
                walk(t, trail + (t,), depth + (op == 2))

    walk(0, (0,), 0)
    return out


@functools.lru_cache(maxsize=65536)
def topology(spec: CellOps) -> Topology:
    """The :class:`Topology` of ``spec`` (cached)."""
    counts = path_depth_counts(spec)
    P = sum(counts.values())
    depths = tuple(d for _, d in enumerate_paths(spec)) if P <= MAX_ENUMERATED_PATHS else ()
    return Topology(
        num_paths=P,
        depth_counts=tuple(counts.items()),
        depths=depths,
        num_linear=sum(op == 2 for row in spec.ops for op in row),
    )


_E, _C, _G = "expressivity", "convergence", "generalization"

#: The DAG space's descriptive columns (Chen et al., NeurIPS 2022; Chen, Huang & Wang, AutoML-Conf
#: 2023). Directions are the papers' predictions: deep & narrow (large d̄, few paths P) is more
#: expressive, wide & shallow converges faster and generalizes better.
DAG_TOPOLOGY_COLUMNS: tuple[Column, ...] = (
    Column("index", "info", "int", description="index of the cell: its digits read as a base-3 number",
           source="space:dag"),
    Column("P", "topology", "int", label="P", directions={_E: False, _C: True, _G: True}, role="group",
           description="number of input-output paths (topological width)", source="space:dag"),
    Column("mean_depth", "topology", label="d̄", directions={_E: True, _C: False, _G: False}, role="group",
           description="effective depth: mean number of linear layers per path", source="space:dag"),
    Column("eff_width", "topology", label="m̄", directions={_E: False, _C: True, _G: True},
           description="effective width #{p: d_p > 0} / d̄ (NeurIPS 2022)", source="space:dag"),
    Column("sum_depth", "topology", "int", label="Σd_p", directions={_E: True},
           description="total depth over paths Σ_p d_p", source="space:dag"),
    Column("num_param_paths", "topology", "int", label="#{p: d_p > 0}",
           description="paths with at least one linear edge", source="space:dag"),
    Column("num_linear", "topology", "int", label="linear edges", description="linear edges in the cell",
           source="space:dag"),
    Column("max_depth", "topology", "int", label="max d_p", description="depth of the deepest path", source="space:dag"),
    Column("depths", "topology", "str", description="sorted path depths (a depth×count histogram for large P)",
           source="space:dag"),
    Column("has_path", "topology", "bool", description="some path joins input and output", source="space:dag"),
    Column("has_param_path", "topology", "bool", description="some path has a linear edge", source="space:dag"),
    Column("trainable", "topology", "bool", description="the papers' trainable cells (a path with a linear edge)",
           source="space:dag"),
    Column("group", "topology", "str", description="the papers' (P, d̄) group, e.g. P4_d1.25", source="space:dag"),
)

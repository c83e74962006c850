"""Cell ensembles and randomly pruned cells as an :class:`~trilemma.spaces.ArchSpace` (``"ensemble"``).

The space of Chen, Huang & Wang's remedy (AutoML-Conf 2023, Table 1 and Figure 7): every
DAG cell of H nodes (a one-member ensemble, so a study ranks ensembles among the very cells it
trained), plus listed ensembles and a grid of pruning ratios over a fixed set of members.
Architectures are ensemble strings (:class:`~trilemma.spaces.EnsembleSpec`), e.g.
``1_22_221@0.2+2_02_002@0.5``; ``canonical`` accepts any ensemble of H-node cells, listed or not.

Networks are :class:`~trilemma.models.EnsembleMLP` (flatten → stem → the members on shared
nodes → readout). Descriptive columns are the union multigraph's topology and the
``single_cell`` flag (``role="reference"``: analyses correlate over the plain cells and rank
every other row among them); closed-form columns are
:func:`~trilemma.theory.ensemble_theory_row` (the paper's bounds over the union's paths, the
pruning-aware exact kernels, effective parameter counts). Everything of one H trains as one
batched computation.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from trilemma._checks import is_int, is_real
from trilemma._schema import Column
from trilemma.errors import InvalidArgumentError, InvalidSpecError, InvalidTypeError
from trilemma.models._ensemble import build_ensemble
from trilemma.spaces import (
    ENSEMBLE_COLUMNS,
    ArchSpace,
    EnsembleSpec,
    Member,
    ModelRecipe,
    ensemble_count_params,
    enumerate_cells,
    format_ratio,
    num_cells,
)
from trilemma.theory import ENSEMBLE_THEORY_COLUMNS, ensemble_theory_row

__all__ = ["EnsembleSpace", "pruning_grid"]


def pruning_grid(members: Sequence[str], ratios: Sequence[Sequence[float]], *, nodes: int | None = None) -> list[str]:
    """Every ensemble of ``members`` with one ratio per member from ``ratios`` (row-major).

    Example:
        >>> pruning_grid(["1_22_221", "2_02_002"], [[0, 0.2], [0, 0.5]])
        ['1_22_221+2_02_002', '1_22_221+2_02_002@0.5', '1_22_221@0.2+2_02_002', '1_22_221@0.2+2_02_002@0.5']

    Raises:
        InvalidArgumentError: ``ratios`` does not give one non-empty list per member.
        InvalidSpecError: a bad member or ratio.
    """
    if isinstance(members, str) or not isinstance(members, Sequence) or not members:
        raise InvalidArgumentError(f"grid members must be a non-empty list of cells, got {members!r}")
    if not isinstance(ratios, Sequence) or len(ratios) != len(members) or not all(
            isinstance(r, Sequence) and not isinstance(r, str) and len(r) for r in ratios):
        raise InvalidArgumentError(
            f"grid ratios must give one non-empty list of ratios per member ({len(members)}), got {ratios!r}")
    cells = [EnsembleSpec.parse(m, nodes=nodes) for m in members]
    for c in cells:
        if not c.is_cell:
            raise InvalidSpecError(f"a grid member is a plain cell, got {c.name!r}")
    out = []
    for combo in itertools.product(*ratios):
        out.append(EnsembleSpec(tuple(Member(c.members[0].cell, r) for c, r in zip(cells, combo))).name)
    return out


class EnsembleSpace(ArchSpace):
    """Cells, ensembles of cells on shared nodes and randomly pruned cells, all with H = ``nodes``.

    Args:
        nodes: H of every cell (at most 4).
        cells: List every cell of H among :meth:`names` (default: the whole DAG space, so a
            study ranks its ensembles among all single cells).
        ensembles: Ensemble strings to list (e.g. the paper's rows IV and V).
        grid: ``{"members": [cells], "ratios": [[ratios of member 1], [ratios of member 2], …]}``:
            every combination is listed (the paper's Figure 7: wide-shallow 0–0.4 × deep-narrow 0–0.5).

    Raises:
        InvalidArgumentError: bad options (the message names the option).
        InvalidSpecError: a listed ensemble or grid member is malformed.
    """

    capabilities = frozenset({"closed_form_theory", "batched_training", "budget", "enumerable"})
    width_knob = "m"

    def __init__(self, nodes: int = 3, cells: bool = True, ensembles: Sequence[str] = (),
                 grid: Mapping[str, Any] | None = None) -> None:
        if not is_int(nodes) or not 1 <= nodes <= 4:
            raise InvalidArgumentError(f"nodes must be an int in [1, 4] (H = 4 has {num_cells(4):,} cells), got {nodes!r}")
        if not isinstance(cells, bool):
            raise InvalidTypeError(f"cells must be a bool, got {cells!r}")
        if isinstance(ensembles, str) or not isinstance(ensembles, Sequence):
            raise InvalidTypeError(f"ensembles must be a list of ensemble strings, got {ensembles!r}")
        self.name = "ensemble"
        self.nodes = nodes
        self.cells = cells
        self.ensembles = tuple(self.canonical(a) for a in ensembles)
        self.grid: tuple[str, ...] = ()
        if grid is not None:
            if not isinstance(grid, Mapping) or set(grid) != {"members", "ratios"}:
                raise InvalidArgumentError(
                    f"grid must be a table with keys members and ratios, got {dict(grid) if isinstance(grid, Mapping) else grid!r}")
            for row in grid["ratios"]:
                if not all(is_real(r) for r in row):
                    raise InvalidArgumentError(f"grid ratios must be numbers, got {row!r}")
            self.grid = tuple(pruning_grid(list(grid["members"]), grid["ratios"], nodes=nodes))
        if not cells and not self.ensembles and not self.grid:
            raise InvalidArgumentError("the ensemble space is empty: set cells = true or list ensembles / a grid")

    # ------------------------------------------------------------------ names
    def names(self) -> list[str]:
        listed = [c.name for c in enumerate_cells(self.nodes)] if self.cells else []
        return list(dict.fromkeys([*listed, *self.ensembles, *self.grid]))

    def canonical(self, arch: str) -> str:
        return self.spec(arch).name

    def spec(self, arch: str) -> EnsembleSpec:
        if not isinstance(arch, (str, EnsembleSpec)):
            raise InvalidSpecError(f"an architecture of space 'ensemble' is an ensemble string, got {arch!r}")
        return EnsembleSpec.parse(arch, nodes=self.nodes)

    # ------------------------------------------------------------------ columns
    def describe_columns(self) -> tuple[Column, ...]:
        return ENSEMBLE_COLUMNS

    def describe(self, arch: str) -> dict[str, Any]:
        spec = self.spec(arch)
        topo = spec.topology
        cols: dict[str, Any] = dict(topo.as_dict())
        cols["trainable"] = topo.trainable
        g = topo.group
        cols["group"] = None if g is None else f"P{g[0]}_d{g[1]:.4g}"
        cols["members"] = spec.num_members
        cols["member_cells"] = "+".join(c.name for c in spec.cells)
        cols["member_ratios"] = "/".join(format_ratio(r) for r in spec.ratios)
        cols["stem_ratio"], cols["readout_ratio"] = spec.stem_ratio, spec.readout_ratio
        cols["max_ratio"] = max(*spec.ratios, spec.stem_ratio, spec.readout_ratio)
        cols["single_cell"] = spec.is_cell
        return {c.name: cols[c.name] for c in ENSEMBLE_COLUMNS}

    # ------------------------------------------------------------------ models
    def build(self, arch: str, *, recipe: ModelRecipe, in_features: int, num_classes: int, width: int,
              seed: int | None = None, device: Any = None, input_shape: Sequence[int] | None = None,
              dtype: Any = None) -> Any:
        return build_ensemble(self.spec(arch), in_features, num_classes, width, bias=recipe.bias,
                              batchnorm=recipe.batchnorm, init=recipe.init,  # type: ignore[arg-type]
                              seed=seed, device=device, dtype=dtype)

    def count_params(self, arch: str, *, recipe: ModelRecipe, in_features: int, num_classes: int, width: int,
                     input_shape: Sequence[int] | None = None) -> int:
        """Trainable parameters of the built module (pruned weights included; see ``effective_params``)."""
        return ensemble_count_params(self.spec(arch), width, in_features, num_classes, recipe.bias, recipe.batchnorm)

    def theory(self, arch: str, **options: Any) -> dict[str, Any]:
        """:func:`~trilemma.theory.ensemble_theory_row`; options ``C``, ``width``, ``in_features``,
        ``num_classes``, ``bias``."""
        return ensemble_theory_row(self.spec(arch), **options)

    def theory_columns(self) -> tuple[Column, ...]:
        return ENSEMBLE_THEORY_COLUMNS

    def theory_options(self) -> tuple[str, ...]:
        return ("C",)

    def batch_key(self, arch: str) -> Any:
        return ("ensemble", self.nodes)

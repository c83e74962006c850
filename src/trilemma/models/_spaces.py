"""The papers' DAG-cell space as an :class:`~trilemma.spaces.ArchSpace`.

Registered as ``"dag"`` by :mod:`trilemma.models` (the layer that builds its networks).
Architectures are the cell strings of Chen, Huang & Wang (AutoML-Conf 2023), e.g. ``2_02_002``;
the network is flatten → stem → cell → readout (:func:`~trilemma.models.build_model`). The
space has closed-form theory (Theorems 4.1/4.4/4.6, :func:`~trilemma.theory.theory_row`), an
exact parameter count and budget solve, and trains many cells of one width as one batched
computation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trilemma._checks import is_int
from trilemma._schema import Column
from trilemma.errors import InvalidArgumentError
from trilemma.models._dagmlp import build_model
from trilemma.spaces import (
    DAG_TOPOLOGY_COLUMNS,
    ArchSpace,
    CellSpec,
    ModelRecipe,
    count_params,
    enumerate_cells,
    num_cells,
    solve_width,
)
from trilemma.theory import THEORY_COLUMNS, theory_row

__all__ = ["DagSpace"]

#: ``theory_row`` keys that are not closed-form theory (topology, already described, and the count).
_NOT_THEORY = ("arch", "index", "P", "depths", "mean_depth", "eff_width", "sum_depth", "num_linear", "trainable",
               "group", "params")
#: ``theory_row`` arguments the study sets itself.
_THEORY_SET = ("spec", "width", "in_features", "num_classes", "bias")


class DagSpace(ArchSpace):
    """The DAG cells with ``nodes`` = H non-input nodes (3^(H(H+1)/2) cells; H = 3: 729).

    Args:
        nodes: H (at most 4 for a study: larger spaces are not enumerated).

    Raises:
        InvalidArgumentError: ``nodes`` is not an int in [1, 4].
    """

    capabilities = frozenset({"closed_form_theory", "batched_training", "budget", "enumerable"})
    width_knob = "m"

    def __init__(self, nodes: int = 3) -> None:
        if not is_int(nodes) or not 1 <= nodes <= 4:
            raise InvalidArgumentError(
                f"nodes must be an int in [1, 4] (H = 4 has {num_cells(4):,} cells), got {nodes!r}"
            )
        self.nodes = nodes
        self.name = "dag"

    def names(self) -> list[str]:
        return [c.name for c in enumerate_cells(self.nodes)]

    def canonical(self, arch: str) -> str:
        return CellSpec.parse(arch, nodes=self.nodes).name

    def spec(self, arch: str) -> CellSpec:
        return CellSpec.parse(arch, nodes=self.nodes)

    def describe_columns(self) -> tuple[Column, ...]:
        return DAG_TOPOLOGY_COLUMNS

    def describe(self, arch: str) -> dict[str, Any]:
        spec = self.spec(arch)
        topo = spec.topology
        cols: dict[str, Any] = {"index": spec.index}
        cols.update(topo.as_dict())
        cols["trainable"] = topo.trainable
        g = topo.group
        cols["group"] = None if g is None else f"P{g[0]}_d{g[1]:.4g}"
        return cols

    def build(self, arch: str, *, recipe: ModelRecipe, in_features: int, num_classes: int, width: int,
              seed: int | None = None, device: Any = None, input_shape: Sequence[int] | None = None,
              dtype: Any = None) -> Any:
        return build_model(self.spec(arch), in_features, num_classes, width, bias=recipe.bias,
                           batchnorm=recipe.batchnorm, init=recipe.init, seed=seed, device=device,  # type: ignore[arg-type]
                           dtype=dtype)

    def count_params(self, arch: str, *, recipe: ModelRecipe, in_features: int, num_classes: int, width: int,
                     input_shape: Sequence[int] | None = None) -> int:
        return count_params(self.spec(arch), width, in_features, num_classes, recipe.bias, recipe.batchnorm)

    def solve_width(self, arch: str, *, target: int, tolerance: float, recipe: ModelRecipe, in_features: int,
                    num_classes: int, input_shape: Sequence[int] | None = None) -> int:
        return solve_width(self.spec(arch), target, in_features, num_classes, bias=recipe.bias,
                           batchnorm=recipe.batchnorm, tolerance=tolerance).width

    def theory(self, arch: str, **options: Any) -> dict[str, Any]:
        """Theorems 4.1/4.4/4.6 of one cell (:func:`~trilemma.theory.theory_row`); options: ``C``,
        ``width``, ``in_features``, ``num_classes``, ``bias``."""
        row = theory_row(self.spec(arch), **options)
        return {k: v for k, v in row.items() if k not in _NOT_THEORY}

    def theory_columns(self) -> tuple[Column, ...]:
        return THEORY_COLUMNS

    def theory_options(self) -> tuple[str, ...]:
        return ("C",)

    def batch_key(self, arch: str) -> Any:
        return ("dag", self.nodes)

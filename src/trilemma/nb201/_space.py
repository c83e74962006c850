"""NAS-Bench-201 as an :class:`~trilemma.spaces.ArchSpace` (registered as ``"nb201"``).

Architectures are the benchmark's cell strings (``|nor_conv_3x3~0|+|…~0|…~1|+|…~0|…~1|…~2|``);
the network is the benchmark's macro network (:func:`~trilemma.models.build_nb201`) with ``C``
first-stage channels (the space's width knob: ``model.width``) and ``N`` cells per stage.
Descriptive columns are the cell's topology (Chen et al., NeurIPS 2022: paths without ``none``,
d_p = convolutions on the path, d̄, m̄) and ``in_centre``, the (d̄, m̄) centre filter of the
NeurIPS 2022 paper over the whole space. Closed-form columns are the indicators of
:func:`~trilemma.nb201.closed_form_table`.

NAS-Bench-201's ground truth is one number per cell, the trained accuracy (a ``lookup`` study
task reads it from the benchmark's table). It stands for the *generalization* axis; each
indicator's direction on that axis is its a-priori direction (from the theory or the design,
never fitted on the benchmark).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import pandas as pd

from trilemma._checks import is_int
from trilemma._schema import Column
from trilemma.errors import InvalidArgumentError
from trilemma.nb201._cost import MacroConfig, nb201_params
from trilemma.nb201._indicators import INDICATORS, closed_form_table
from trilemma.nb201._search import centre_filter
from trilemma.spaces import NUM_NB201_CELLS, ArchSpace, ModelRecipe, NB201Spec, enumerate_nb201

__all__ = ["NB201Space", "NB201_TOPOLOGY", "NB201_THEORY"]

_G = "generalization"
#: Topology and filter columns of :meth:`NB201Space.describe`.
NB201_TOPOLOGY = ("P", "mean_depth", "eff_width", "sum_depth", "num_param_paths", "max_depth", "has_path")
#: Closed-form columns of :meth:`NB201Space.theory` (costs included).
NB201_THEORY = ("conv_score", "nngp_bound", "ntk_bound", "jacobian_path_sum", "generalization_bound", "live_convs",
                "live_conv3", "live_pools", "params", "flops", "live_params")
_COSTS = ("params", "flops", "live_params")


def _column(name: str, kind: str, dtype: str = "float", role: str = "") -> Column:
    ind = INDICATORS[name]
    dirs = {_G: ind.direction > 0} if ind.axis != "combined" else {}
    return Column(name, kind, dtype, label=name, directions=dirs, description=ind.description, source="space:nb201",
                  role=role)


class NB201Space(ArchSpace):
    """The 15,625 NAS-Bench-201 cells in the macro network with ``N`` cells per stage.

    Args:
        N: Cells per stage (benchmark: 5). The first-stage channels ``C`` are the width.
        corr: Input correlation used by the closed-form NNGP / NTK bounds.
        filter_fraction: Half-width of the (d̄, m̄) centre window as a fraction of each
            half-range (NeurIPS 2022: 0.5).
    """

    capabilities = frozenset({"closed_form_theory", "budget", "enumerable"})
    width_knob = "C"

    def __init__(self, N: int = 5, corr: float = 0.5, filter_fraction: float = 0.5) -> None:
        if not is_int(N) or N < 1:
            raise InvalidArgumentError(f"N must be a positive int, got {N!r}")
        self.name = "nb201"
        self.N = N
        self.corr = corr
        self.filter_fraction = filter_fraction
        centre_filter(pd.DataFrame({"mean_depth": [0.0], "eff_width": [0.0]}), fraction=filter_fraction)  # validates

    def names(self) -> list[str]:
        return [s.name for s in enumerate_nb201()]

    def canonical(self, arch: str) -> str:
        return NB201Spec.parse(arch).name

    def representative(self, arch: str) -> str:
        """The smallest-index cell computing the same function (:meth:`NB201Spec.canonical`): every
        edge on no input→output path is ``none`` there, so its network holds only live operations."""
        return NB201Spec.parse(arch).canonical().name

    def spec(self, arch: str) -> NB201Spec:
        return NB201Spec.parse(arch)

    @functools.cached_property
    def _table(self) -> pd.DataFrame:
        """Every closed-form column of all 15,625 cells (0.2 s), with the centre filter."""
        table = closed_form_table(None, config=MacroConfig(C=16, N=self.N), corr=self.corr, combined=False)
        table["in_centre"] = centre_filter(table, fraction=self.filter_fraction).keep
        return table.set_index("index")

    def describe_columns(self) -> tuple[Column, ...]:
        return (
            Column("index", "info", "int", description="index of the cell in NAS-Bench-201", source="space:nb201"),
            _column("P", "topology", "int", role="group"),
            _column("mean_depth", "topology", role="group"),
            _column("eff_width", "topology"),
            _column("sum_depth", "topology", "int"),
            _column("num_param_paths", "topology", "int"),
            _column("max_depth", "topology", "int"),
            Column("has_path", "topology", "bool", description="some path joins input and output", source="space:nb201"),
            Column("in_centre", "topology", "bool", role="filter",
                   description=f"the cell lies in the centre of the (d̄, m̄) ranges of the whole space (NeurIPS 2022 "
                               f"filter, half-width {self.filter_fraction:g} of each half-range)", source="space:nb201"),
        )

    def describe(self, arch: str) -> dict[str, Any]:
        spec = self.spec(arch)
        row = self._table.loc[spec.index]
        out: dict[str, Any] = {"index": spec.index}
        for name in (*NB201_TOPOLOGY, "in_centre"):
            value = row[name]
            out[name] = value.item() if hasattr(value, "item") else value
        return out

    def build(self, arch: str, *, recipe: ModelRecipe, in_features: int, num_classes: int, width: int,
              seed: int | None = None, device: Any = None, input_shape: Sequence[int] | None = None,
              dtype: Any = None) -> Any:
        from trilemma.models import build_nb201  # torch only when a network is built

        channels = int(input_shape[0]) if input_shape else 3
        return build_nb201(self.spec(arch), C=width, N=self.N, num_classes=num_classes, in_channels=channels,
                           seed=seed, device=device, dtype=dtype)

    def count_params(self, arch: str, *, recipe: ModelRecipe, in_features: int, num_classes: int, width: int,
                     input_shape: Sequence[int] | None = None) -> int:
        channels = int(input_shape[0]) if input_shape else 3
        return int(nb201_params(self.spec(arch), MacroConfig(C=width, N=self.N, num_classes=num_classes,
                                                              in_channels=channels)))

    def theory(self, arch: str, **options: Any) -> dict[str, Any]:
        """The closed-form indicators of one cell (at the study's ``C``: ``width``)."""
        width = int(options.get("width", 16))
        corr = float(options.get("C", self.corr))
        num_classes = int(options.get("num_classes", 10))
        row = closed_form_table([self.spec(arch)], config=MacroConfig(C=width, N=self.N, num_classes=num_classes),
                                corr=corr, combined=False).iloc[0]
        return {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in NB201_THEORY}

    def theory_columns(self) -> tuple[Column, ...]:
        counts = ("live_convs", "live_conv3", "live_pools")
        return tuple(_column(n, "cost" if n in _COSTS else "theory", "int" if n in counts else "float")
                     for n in NB201_THEORY)

    def theory_options(self) -> tuple[str, ...]:
        return ("C",)

    def __len__(self) -> int:
        return NUM_NB201_CELLS

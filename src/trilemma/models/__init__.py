"""Networks of the architecture spaces: the papers' DAG-MLP and the NAS-Bench-201 macro network.

The DAG-cell space is registered here as ``"dag"`` (:class:`DagSpace`) and the space of cell
ensembles and pruned cells as ``"ensemble"`` (:class:`EnsembleSpace`), the layer that builds their
networks; NAS-Bench-201's space is registered by :mod:`trilemma.nb201`.
"""

from trilemma.models._dagmlp import DAGMLP, INITS, Scale, build_model
from trilemma.models._ensemble import (
    EnsembleMLP,
    MaskedLinear,
    build_ensemble,
    edge_name,
    ensemble_masks,
    layer_shapes,
)
from trilemma.models._ensemble_space import EnsembleSpace, pruning_grid
from trilemma.models._nb201 import NB201Cell, NB201Network, build_nb201, count_flops
from trilemma.models._spaces import DagSpace
from trilemma.spaces import register_space

__all__ = [
    "DAGMLP",
    "INITS",
    "DagSpace",
    "EnsembleMLP",
    "EnsembleSpace",
    "MaskedLinear",
    "build_ensemble",
    "edge_name",
    "ensemble_masks",
    "layer_shapes",
    "pruning_grid",
    "NB201Cell",
    "NB201Network",
    "Scale",
    "build_model",
    "build_nb201",
    "count_flops",
]

register_space("dag", DagSpace)
register_space("ensemble", EnsembleSpace)

"""Networks of the architecture spaces: the papers' DAG-MLP and the NAS-Bench-201 macro network.

The DAG-cell space is registered here as ``"dag"`` (:class:`DagSpace`), the layer that builds its
networks; NAS-Bench-201's space is registered by :mod:`trilemma.nb201`.
"""

from trilemma.models._dagmlp import DAGMLP, INITS, Scale, build_model
from trilemma.models._nb201 import NB201Cell, NB201Network, build_nb201, count_flops
from trilemma.models._spaces import DagSpace
from trilemma.spaces import register_space

__all__ = [
    "DAGMLP",
    "INITS",
    "DagSpace",
    "NB201Cell",
    "NB201Network",
    "Scale",
    "build_model",
    "build_nb201",
    "count_flops",
]

register_space("dag", DagSpace)

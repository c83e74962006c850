"""Model builders: the papers' DAG-MLP (and, in later modules, other spaces' networks)."""

from trilemma.models._dagmlp import DAGMLP, INITS, Scale, build_model

__all__ = ["DAGMLP", "INITS", "Scale", "build_model"]

# NAS-Bench-201 macro network (issue 7).
from trilemma.models._nb201 import NB201Cell, NB201Network, build_nb201, count_flops  # noqa: E402

__all__ += ["NB201Cell", "NB201Network", "build_nb201", "count_flops"]

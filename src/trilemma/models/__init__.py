"""Model builders: the papers' DAG-MLP (and, in later modules, other spaces' networks)."""

from trilemma.models._dagmlp import DAGMLP, INITS, Scale, build_model

__all__ = ["DAGMLP", "INITS", "Scale", "build_model"]

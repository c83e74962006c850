"""Architecture spaces: immutable cell specs, enumeration, sampling, topology and budgets.

Example:
    >>> from trilemma.spaces import CellSpec
    >>> CellSpec.parse("2_21_112").topology.depths
    (2, 1, 2, 0)
"""

from trilemma.spaces._budget import WidthSolution, count_params, solve_width
from trilemma.spaces._dag import (
    LINEAR,
    OPS,
    SKIP,
    ZERO,
    CellSpec,
    enumerate_cells,
    num_cells,
    sample_cells,
)
from trilemma.spaces._protocol import (
    CAPABILITIES,
    ArchSpace,
    ModelRecipe,
    get_space,
    list_spaces,
    register_space,
    solve_width_by_bisection,
    unknown_arch_error,
)
from trilemma.spaces._topology import DAG_TOPOLOGY_COLUMNS, Topology, enumerate_paths, path_depth_counts, topology

__all__ = [
    "CAPABILITIES",
    "DAG_TOPOLOGY_COLUMNS",
    "ArchSpace",
    "ModelRecipe",
    "get_space",
    "list_spaces",
    "register_space",
    "solve_width_by_bisection",
    "unknown_arch_error",
    "CellSpec",
    "Topology",
    "WidthSolution",
    "OPS",
    "ZERO",
    "SKIP",
    "LINEAR",
    "count_params",
    "enumerate_cells",
    "enumerate_paths",
    "num_cells",
    "path_depth_counts",
    "sample_cells",
    "solve_width",
    "topology",
]

# NAS-Bench-201 cell space (issue 7).
from trilemma.spaces._nb201 import (  # noqa: E402
    NB201_CONV_OPS,
    NB201_EDGES,
    NB201_OPS,
    NB201_PATHS,
    NUM_NB201_CELLS,
    NB201Spec,
    enumerate_nb201,
    nb201_canonical_key,
    nb201_isomorphism_classes,
    sample_nb201,
    unique_nb201_cells,
)

__all__ += [
    "NB201_CONV_OPS",
    "NB201_EDGES",
    "NB201_OPS",
    "NB201_PATHS",
    "NUM_NB201_CELLS",
    "NB201Spec",
    "enumerate_nb201",
    "nb201_canonical_key",
    "nb201_isomorphism_classes",
    "sample_nb201",
    "unique_nb201_cells",
]

# Ensembles of cells and randomly pruned cells (Table 1 / Figure 7 of Chen, Huang & Wang 2023).
from trilemma.spaces._ensemble import (  # noqa: E402
    ENSEMBLE_COLUMNS,
    MAX_RATIO_DECIMALS,
    EnsembleSpec,
    Member,
    ensemble_count_params,
    format_ratio,
    multigraph_topology,
    pruned_count,
)

__all__ += [
    "ENSEMBLE_COLUMNS",
    "MAX_RATIO_DECIMALS",
    "EnsembleSpec",
    "Member",
    "ensemble_count_params",
    "format_ratio",
    "multigraph_topology",
    "pruned_count",
]

"""Closed-form theory of the DAG-cell space (numpy/scipy/pandas only; importing it never imports torch).

* ReLU NNGP correlation maps ``f``, ``ḟ`` and ``f^d`` (Cho & Saul 2009 arc-cosine kernel;
  Poole et al. 2016, "Exponential expressivity in deep neural networks through transient chaos").
* The bounds of Chen, Huang & Wang, "'No Free Lunch' in Neural Architectures?" (AutoML-Conf 2023):
  Theorem 4.1 Jacobian path sum (expressivity), Theorem 4.4 NNGP ``λ_min`` bound (convergence),
  Theorem 4.6 NTK ``λ_min`` bound and the generalization indicator ``Σ_p d_p / sqrt(bound)``.
* :func:`theory_table`: all of the above for a whole space, vectorized (729 cells in milliseconds).
* Exact infinite-width NNGP and NTK of any DAG cell on a given input Gram, keeping the ReLU-mean
  cross terms the paper drops (Jacot et al. 2018; Yang 2020 gradient independence), and a numpy
  Monte-Carlo estimator at finite width that validates them.

Convention: ``C`` in the bounds is the correlation **at the cell input** (node 0 = stem output);
use :func:`stem_correlation` to push a raw-input correlation through the stem.

Example:
    >>> from trilemma.theory import f, f_power, nngp_bound
    >>> round(f(0.0), 6), round(f(1.0), 6)
    (0.31831, 1.0)
    >>> nngp_bound("2_02_002", 0.5) == 1 - f_power(0.5, 3)
    True
"""

from trilemma.theory._bounds import (
    generalization_indicator,
    jacobian_constant,
    jacobian_path_sum,
    nngp_bound,
    ntk_bound,
    worst_correlation,
)
from trilemma.theory._exact import (
    ExactKernels,
    exact_kernels,
    exact_length_element,
    input_gram,
    skip_path_counts,
)
from trilemma.theory._maps import f, f_power, fdot, gram_to_correlation, stem_correlation
from trilemma.theory._montecarlo import MonteCarloResult, great_circle, monte_carlo
from trilemma.theory._table import COLUMNS, THEORY_COLUMNS, theory_row, theory_table

__all__ = [
    "THEORY_COLUMNS",
    # maps
    "f",
    "fdot",
    "f_power",
    "stem_correlation",
    "gram_to_correlation",
    # paper bounds
    "jacobian_constant",
    "jacobian_path_sum",
    "nngp_bound",
    "ntk_bound",
    "generalization_indicator",
    "worst_correlation",
    # table
    "COLUMNS",
    "theory_row",
    "theory_table",
    # exact kernels and Monte Carlo
    "ExactKernels",
    "exact_kernels",
    "exact_length_element",
    "input_gram",
    "skip_path_counts",
    "MonteCarloResult",
    "monte_carlo",
    "great_circle",
]

# Ensembles of cells and pruned cells: the multigraph kernels (Table 1 / Figure 7 of the paper).
from trilemma.theory._multigraph import (  # noqa: E402
    ENSEMBLE_THEORY_COLUMNS,
    MultigraphKernels,
    NetWeights,
    draw_weights,
    ensemble_edges,
    ensemble_kernels,
    ensemble_theory_row,
    multigraph_kernels,
    multigraph_monte_carlo,
    net_kernels,
)

__all__ += [
    "ENSEMBLE_THEORY_COLUMNS",
    "MultigraphKernels",
    "NetWeights",
    "draw_weights",
    "ensemble_edges",
    "ensemble_kernels",
    "ensemble_theory_row",
    "multigraph_kernels",
    "multigraph_monte_carlo",
    "net_kernels",
]

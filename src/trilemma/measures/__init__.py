"""Measures of a network at initialization (and, via plug-ins, after training).

Every measure is a function of ``(model, x, y=None, **options)`` registered by name
(:func:`register_measure`, :func:`get_measure`, :func:`list_measures`); calls go through one
checked path that seeds the RNG, restores the model's state, times the call and rejects
NaN/inf (:class:`~trilemma.errors.MeasureFailedError`). Families (one module each):

* expressivity: ``curvature``, ``length_distortion``, ``jacobian_norm``,
  ``trajectory_growth``, ``linear_regions_batch``, ``linear_regions_exact``;
* convergence: ``ntk_lambda_min``, ``ntk_lambda_robust``, ``ntk_condition``, ``ntk_trace``,
  ``nngp_lambda_min``, ``nngp_condition``;
* generalization: ``ntk_gen_bound`` (needs labels: the NTK generalization bound sqrt(yᵀΘ⁻¹y/N));
* baselines: ``naswot``, ``synflow``, ``snip``, ``grasp``, ``grad_norm``, ``fisher``,
  ``jacob_cov``; cost: ``num_params``, ``flops``;
* capacity of trained networks: ``lipschitz_upper_bound``, ``spectral_complexity``, ... .

Measures at initialization use BatchNorm batch statistics by default (``batchnorm="batch"``,
as the reference implementations of the proxies run a freshly built network);
``batchnorm="eval"`` is an option. Where a reference implementation computes a proxy
differently, ``convention=`` reproduces it (``"zero-cost-nas"``, ``"naswot"``, ``"te-nas"``).
:func:`proxy_suite` computes the whole zero-cost suite with shared passes.

Every family module is imported below (:data:`FAMILY_MODULES`); a new module that
registers measures must be added to that list (a test checks it).

Example:
    >>> import torch
    >>> from trilemma.models import build_model
    >>> from trilemma.measures import get_measure
    >>> net = build_model("2_02_002", 16, 4, width=32, seed=0)
    >>> res = get_measure("ntk_lambda_min")(net, torch.randn(8, 16))
    >>> res.value > 0
    True
"""

from __future__ import annotations

from trilemma.measures import (  # the family modules register their measures on import
    _capacity,
    _convergence,
    _cost,
    _expressivity,
    _generalization,
    _regions,
    _zero_cost,
)
from trilemma.measures._base import (
    INPUT_KINDS,
    REQUIREMENTS,
    Measure,
    MeasureResult,
    RegisteredMeasure,
    check_requirements,
    describe_model,
    get_measure,
    list_measures,
    measure_all,
    model_device,
    preserved_state,
    register_measure,
    unregister_measure,
)
from trilemma.measures._convergence import NTK_CONVENTIONS, nngp_gram, nngp_spectrum
from trilemma.measures._cost import count_macs, num_parameters
from trilemma.measures._expressivity import (
    CircleImage,
    circle,
    curvature,
    jacobian_norm,
    trajectory_lengths,
)
from trilemma.measures._forward import BATCHNORM_MODES, FunctionalView, couples_samples, functional_view
from trilemma.measures._generalization import (
    kernel_quadratic_form,
    ntk_generalization_bound,
)
from trilemma.measures._kernel import (
    as_matrix,
    chunked,
    kernel_eigenvalues,
    spectrum_stats,
)
from trilemma.measures._ntk import (
    NTK_MODES,
    NTKImplementation,
    empirical_ntk,
    ntk_spectrum,
    weight_parameter_names,
)
from trilemma.measures._regions import (
    ACTIVATION_CONVENTIONS,
    CurveRegions,
    activation_patterns,
    count_linear_regions_exact,
    count_linear_regions_sampled,
    distinct_codes,
    hamming_similarity,
)
from trilemma.measures._suite import SUITE, proxy_suite
from trilemma.measures._zero_cost import PROXY_CONVENTIONS, weight_names

#: The modules that register measures, imported above (in this order).
FAMILY_MODULES: tuple[str, ...] = tuple(
    m.__name__.rsplit(".", 1)[1]
    for m in (_capacity, _convergence, _cost, _expressivity, _generalization, _regions, _zero_cost)
)

__all__ = [
    "ACTIVATION_CONVENTIONS",
    "BATCHNORM_MODES",
    "FAMILY_MODULES",
    "CircleImage",
    "CurveRegions",
    "FunctionalView",
    "INPUT_KINDS",
    "Measure",
    "MeasureResult",
    "NTKImplementation",
    "NTK_CONVENTIONS",
    "NTK_MODES",
    "PROXY_CONVENTIONS",
    "REQUIREMENTS",
    "RegisteredMeasure",
    "SUITE",
    "activation_patterns",
    "as_matrix",
    "check_requirements",
    "chunked",
    "circle",
    "count_linear_regions_exact",
    "count_linear_regions_sampled",
    "count_macs",
    "couples_samples",
    "curvature",
    "describe_model",
    "distinct_codes",
    "empirical_ntk",
    "functional_view",
    "get_measure",
    "hamming_similarity",
    "jacobian_norm",
    "kernel_eigenvalues",
    "kernel_quadratic_form",
    "list_measures",
    "measure_all",
    "model_device",
    "nngp_gram",
    "nngp_spectrum",
    "ntk_generalization_bound",
    "ntk_spectrum",
    "num_parameters",
    "preserved_state",
    "proxy_suite",
    "register_measure",
    "spectrum_stats",
    "trajectory_lengths",
    "unregister_measure",
    "weight_names",
    "weight_parameter_names",
]

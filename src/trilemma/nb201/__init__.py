"""NAS-Bench-201 (Dong & Yang, ICLR 2020): closed-form indicators, ground truth, filter and search.

The cell space itself is :class:`trilemma.spaces.NB201Spec`; the network is
:func:`trilemma.models.build_nb201`. This sub-package adds

* exact parameter / FLOP counts of the macro network without building it
  (:func:`nb201_params`, :func:`nb201_flops`, :func:`nb201_live_params`);
* every closed-form indicator for all 15,625 cells at once (:func:`closed_form_table`) and
  its per-cell reference (:func:`closed_form_indicators`), plus the combined three-axis
  indicator (:func:`combined_indicator`);
* loaders for the reference ground truth and NATS-Bench files;
* the NeurIPS 2022 (d̄, m̄) centre filter and training-free search: :func:`simulate_search`
  for precomputed scores, :func:`run_search` with the indicators of training-free NAS that
  rank the evaluated cells against each other (NASWOT, TE-NAS's rank sum, the combined
  indicator), one row per search seed.

Example:
    >>> from trilemma.nb201 import closed_form_table
    >>> table = closed_form_table()          # doctest: +SKIP
    >>> len(table), table["conv_score"].max()  # doctest: +SKIP
    (15625, 12)
"""

from trilemma.nb201._cost import MacroConfig, nb201_flops, nb201_live_params, nb201_params, op_costs
from trilemma.nb201._data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    ENV_SHARED_DATA,
    NBSZ_PROXIES,
    load_cifar10_images,
    load_nats_bench,
    load_nb201_accuracy,
    load_nbsz_proxies,
    shared_data_dir,
)
from trilemma.nb201._indicators import (
    CLOSED_FORM_COMBINED,
    COMBINED_AXES,
    COMBINED_VARIANTS,
    CONV_SCORE_WEIGHTS,
    DEFAULT_COMBINED,
    DISCONNECTED_SCORE,
    INDICATORS,
    SECONDARY_WEIGHT,
    Indicator,
    cells_to_codes,
    closed_form_indicators,
    closed_form_table,
    combined_indicator,
)
from trilemma.nb201._search import (
    REFERENCE_WINDOW,
    CentreFilter,
    SearchIndicator,
    SearchResult,
    centre_filter,
    run_search,
    score_pool,
    search_draw,
    search_indicator,
    search_table,
    simulate_search,
    summarise_search,
)
from trilemma.nb201._space import NB201Space
from trilemma.spaces import register_space

__all__ = [
    "NB201Space",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CLOSED_FORM_COMBINED",
    "COMBINED_AXES",
    "COMBINED_VARIANTS",
    "DEFAULT_COMBINED",
    "SECONDARY_WEIGHT",
    "CONV_SCORE_WEIGHTS",
    "CentreFilter",
    "DISCONNECTED_SCORE",
    "ENV_SHARED_DATA",
    "INDICATORS",
    "Indicator",
    "MacroConfig",
    "NBSZ_PROXIES",
    "REFERENCE_WINDOW",
    "SearchIndicator",
    "SearchResult",
    "cells_to_codes",
    "centre_filter",
    "closed_form_indicators",
    "closed_form_table",
    "combined_indicator",
    "load_cifar10_images",
    "load_nats_bench",
    "load_nb201_accuracy",
    "load_nbsz_proxies",
    "nb201_flops",
    "nb201_live_params",
    "nb201_params",
    "op_costs",
    "run_search",
    "score_pool",
    "search_draw",
    "search_indicator",
    "search_table",
    "shared_data_dir",
    "simulate_search",
    "summarise_search",
]

register_space("nb201", NB201Space)

"""Analysis of a results table: rank correlations, ranks, Pareto front, the verdict.

Pure functions from a :class:`pandas.DataFrame` (one row per architecture, as returned by
``trilemma.study.load_results`` after :func:`aggregate_seeds`) to numbers and data frames; no
I/O. Every direction ("is higher better?") comes from the metric table
(:func:`get_metric`, :func:`register_metric`) or from an explicit override — correlations are
reported raw and *oriented*, never as absolute values.

Example:
    >>> from trilemma.analysis import synthetic_results, rank_correlation, verdict
    >>> df = synthetic_results(noise=0.0)
    >>> rank_correlation(df, "mean_depth", "expressivity", n_boot=0).value < 0
    True
    >>> verdict(df).no_free_lunch
    True
"""

from trilemma.analysis._agreement import (
    AGREEMENT_COLUMNS,
    AxisColumns,
    agreement_table,
    default_axis_columns,
    published_columns,
)
from trilemma.analysis._correlation import LEVELS, METHODS, Correlation, correlation_sign, rank_correlation
from trilemma.analysis._metrics import (
    AXES,
    DEFAULT_AXES,
    KINDS,
    AxisSpec,
    MetricInfo,
    accuracy_metric,
    default_axes,
    direction,
    get_metric,
    list_metrics,
    metrics_from_measures,
    register_metric,
    unregister_metric,
)
from trilemma.analysis._published import (
    PUBLISHED_CORRELATIONS,
    PUBLISHED_FIG7_TAU,
    PUBLISHED_TABLE1,
    PublishedCorrelation,
    PublishedRank,
    published_correlations,
)
from trilemma.analysis._ranking import (
    NO_VALUES,
    NOT_MEASURED,
    RANK_METHODS,
    AxisResult,
    Objective,
    Standing,
    Verdict,
    available_objectives,
    best_per_axis,
    pareto_front,
    pareto_layers,
    rank_table,
    resolve_objectives,
    verdict,
)
from trilemma.analysis._synthetic import synthetic_curves, synthetic_results
from trilemma.analysis._table import DEFAULT_GROUP_BY, aggregate_seeds, group_means

__all__ = [
    "AGREEMENT_COLUMNS",
    "AXES",
    "AxisColumns",
    "AxisResult",
    "AxisSpec",
    "Correlation",
    "DEFAULT_AXES",
    "accuracy_metric",
    "default_axes",
    "PUBLISHED_FIG7_TAU",
    "PUBLISHED_TABLE1",
    "PublishedRank",
    "DEFAULT_GROUP_BY",
    "KINDS",
    "LEVELS",
    "METHODS",
    "MetricInfo",
    "Objective",
    "PUBLISHED_CORRELATIONS",
    "PublishedCorrelation",
    "RANK_METHODS",
    "Standing",
    "Verdict",
    "aggregate_seeds",
    "agreement_table",
    "best_per_axis",
    "correlation_sign",
    "default_axis_columns",
    "direction",
    "get_metric",
    "group_means",
    "list_metrics",
    "metrics_from_measures",
    "pareto_front",
    "pareto_layers",
    "published_columns",
    "published_correlations",
    "rank_correlation",
    "rank_table",
    "register_metric",
    "resolve_objectives",
    "available_objectives",
    "NOT_MEASURED",
    "NO_VALUES",
    "synthetic_curves",
    "synthetic_results",
    "unregister_metric",
    "verdict",
]

"""Analysis of a results table: rank correlations, ranks, Pareto front, the verdict.

Pure functions from a :class:`pandas.DataFrame` (one row per architecture, as returned by
``trilemma.study.load_results`` after :func:`aggregate_seeds`) to numbers and data frames; no
I/O. Every name, label and direction ("is higher better?") comes from the table's result
schema (``df.attrs["schema"]``, :func:`schema_of`; :func:`default_schema` for a table without
one) or from an explicit override: correlations are reported raw and *oriented*, never as
absolute values.

Example:
    >>> from trilemma.analysis import synthetic_results, rank_correlation, verdict
    >>> df = synthetic_results(noise=0.0)
    >>> rank_correlation(df, "mean_depth", "expressivity", n_boot=0).value < 0
    True
    >>> verdict(df).no_free_lunch
    True
"""

from trilemma._schema import Column, ResultSchema
from trilemma.analysis._agreement import (
    AGREEMENT_COLUMNS,
    AGREEMENT_KINDS,
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
    accuracy_metric,
    default_axes,
    default_schema,
    direction,
    get_metric,
    list_metrics,
    register_metric,
    schema_of,
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
from trilemma.analysis._remedy import (
    ConvergenceRateSummary,
    PruningGrid,
    Table1,
    best_lr_correlations,
    convergence_rate_summary,
    lr_table,
    placed_ranks,
    pruning_grids,
    reference_mask,
    table1,
)
from trilemma.analysis._synthetic import synthetic_curves, synthetic_results
from trilemma.analysis._table import aggregate_seeds, group_means, resolve_group_by

__all__ = [
    "ConvergenceRateSummary",
    "PruningGrid",
    "Table1",
    "best_lr_correlations",
    "convergence_rate_summary",
    "lr_table",
    "placed_ranks",
    "pruning_grids",
    "reference_mask",
    "table1",
    "AGREEMENT_COLUMNS",
    "AGREEMENT_KINDS",
    "AXES",
    "AxisColumns",
    "AxisResult",
    "AxisSpec",
    "Column",
    "Correlation",
    "DEFAULT_AXES",
    "KINDS",
    "LEVELS",
    "METHODS",
    "NOT_MEASURED",
    "NO_VALUES",
    "Objective",
    "PUBLISHED_CORRELATIONS",
    "PUBLISHED_FIG7_TAU",
    "PUBLISHED_TABLE1",
    "PublishedCorrelation",
    "PublishedRank",
    "RANK_METHODS",
    "ResultSchema",
    "Standing",
    "Verdict",
    "accuracy_metric",
    "aggregate_seeds",
    "agreement_table",
    "available_objectives",
    "best_per_axis",
    "correlation_sign",
    "default_axes",
    "default_axis_columns",
    "default_schema",
    "direction",
    "get_metric",
    "group_means",
    "list_metrics",
    "pareto_front",
    "pareto_layers",
    "published_columns",
    "published_correlations",
    "rank_correlation",
    "rank_table",
    "register_metric",
    "resolve_group_by",
    "resolve_objectives",
    "schema_of",
    "synthetic_curves",
    "synthetic_results",
    "unregister_metric",
    "verdict",
]

"""The report: the verdict, theory vs ground truth, figures, and every architecture.

Data objects first (:func:`report_data` and the ``*_data`` figure builders return plain
numbers you can test or re-plot), renderers second (``plot_*`` for matplotlib figures,
:func:`write_report` for files). :func:`build_report` does both and writes one
self-contained HTML page (opens offline), a Markdown summary, a JSON summary and the
figures as PNG and SVG.

Example:
    >>> from trilemma.analysis import synthetic_results
    >>> from trilemma.report import build_report
    >>> paths = build_report(synthetic_results(), "out/report", metadata={"study": "demo"})  # doctest: +SKIP
    >>> paths.html  # doctest: +SKIP
    PosixPath('out/report/report.html')
"""

from trilemma.report._build import FIGURE_KINDS, ReportPaths, build_report, build_report_for_study, write_report
from trilemma.report._data import ReportData, headline_table, report_data
from trilemma.report._figdata import (
    CurvesData,
    IndicatorScatterData,
    ParetoData,
    TopologyMapData,
    curves_data,
    indicator_scatter_data,
    pareto_data,
    topology_map_data,
)
from trilemma.report._html import render_html
from trilemma.report._markdown import render_markdown
from trilemma.report._plots import (
    FigureFiles,
    figure_bytes,
    plot_curves,
    plot_indicator_scatter,
    plot_pareto,
    plot_topology_map,
)

__all__ = [
    "FIGURE_KINDS",
    "CurvesData",
    "FigureFiles",
    "IndicatorScatterData",
    "ParetoData",
    "ReportData",
    "ReportPaths",
    "TopologyMapData",
    "build_report",
    "build_report_for_study",
    "curves_data",
    "figure_bytes",
    "headline_table",
    "indicator_scatter_data",
    "pareto_data",
    "plot_curves",
    "plot_indicator_scatter",
    "plot_pareto",
    "plot_topology_map",
    "render_html",
    "render_markdown",
    "report_data",
    "topology_map_data",
    "write_report",
]

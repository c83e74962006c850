"""Build a report on disk: figures (PNG + SVG), one self-contained HTML page, a Markdown summary."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trilemma._outputs import check_output_dir
from trilemma._schema import ResultSchema
from trilemma.analysis import AxisSpec, Objective, default_axes
from trilemma.errors import InvalidArgumentError
from trilemma.report._data import ReportData, report_data
from trilemma.report._html import EmbeddedFigure, render_html
from trilemma.report._markdown import render_markdown
from trilemma.report._plots import (
    FigureFiles,
    plot_curves,
    plot_indicator_scatter,
    plot_pareto,
    plot_topology_map,
    save_figure,
)
from trilemma.report._remedy import lrs_text, remedy_figures

__all__ = ["FIGURE_KINDS", "ReportPaths", "build_report", "build_report_for_study", "write_report"]

logger = logging.getLogger(__name__)

_EMBED = {"svg": "image/svg+xml", "png": "image/png"}
#: Figure families a report can draw (``figures=`` of :func:`write_report`).
FIGURE_KINDS: tuple[str, ...] = ("axes", "quantities", "indicators", "curves", "pareto", "remedy")


@dataclass(frozen=True)
class ReportPaths:
    """Where a report was written.

    Attributes:
        out_dir: The report folder.
        html: The self-contained page (``report.html``).
        markdown: The summary (``summary.md``).
        json: The numbers (verdict, headline and agreement tables) as JSON (``summary.json``).
        figures: Every figure's PNG and SVG (under ``figures/``).
    """

    out_dir: Path
    html: Path
    markdown: Path
    json: Path
    figures: tuple[FigureFiles, ...]

    def __str__(self) -> str:
        return str(self.html)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)


def _render_figures(
    data: ReportData, fig_dir: Path, kinds: Sequence[str]
) -> list[tuple[FigureFiles, dict[str, bytes], str]]:
    out = []

    def add(fig, name: str, title: str, caption: str) -> None:  # noqa: ANN001 - matplotlib Figure
        files, blobs = save_figure(fig, fig_dir, name, title)
        out.append((files, blobs, caption))

    gt = {o.column for o in data.objectives}
    for m in data.maps:
        if ("axes" if m.column in gt else "quantities") not in kinds:
            continue
        what = "ground truth" if m.column in gt else "quantity"
        add(plot_topology_map(m), f"topology_{_slug(m.column)}", f"{m.label} over the topology",
            f"The {what} {m.column}" + (f" ({m.direction_text} on {m.axis})" if m.axis and m.direction_text else "")
            + " for each (P, d̄) group: left, group means over the (d̄, P) plane; right, against d̄ per P "
            "with ± one standard deviation (cf. the papers' Figures 3–5).")
    for axis, items in data.scatters.items() if "indicators" in kinds else ():
        gt_label = items[0].y_label
        add(plot_indicator_scatter(items, f"indicators of {axis} vs the trained {gt_label}"),
            f"indicators_{axis}", f"Indicators of {axis} vs ground truth",
            f"Each cheap indicator (topology, theory, at-init measure) against the trained {items[0].y}; the legend "
            "gives Kendall τ over architectures with its 95% bootstrap interval (cf. the papers' Figures 4 and 6).")
    if data.curves is not None and "curves" in kinds:
        add(plot_curves(data.curves), "curves", "Training curves of the per-axis winners",
            "Loss and accuracy per epoch of each axis's best architecture (train solid, test dashed).")
    if data.remedy is not None and "remedy" in kinds:
        for fig, name, title, caption in remedy_figures(data.remedy):
            add(fig, name, title, caption)
    if "pareto" not in kinds or data.pareto is None:
        return out
    add(plot_pareto(data.pareto), "pareto", "Pareto front",
        f"{len(data.pareto.front)} architectures are not dominated on all three axes at once (red); stars mark "
        "each axis's winner. Each panel is a 2-D projection, so front points can look dominated in it.")
    return out


def _jsonable(obj: object) -> object:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if obj is None or isinstance(obj, (int, str)):
        return obj
    return str(obj)


def _remedy_json(data: ReportData) -> object:
    r = data.remedy
    if r is None:
        return None
    return {
        "table1": r.table1.rows.to_dict(orient="records") if r.table1 is not None else None,
        "v_beats_i": r.table1.v_beats_i if r.table1 is not None else None,
        "grids": [{"members": list(g.members), "taus": {k: v[0] for k, v in g.taus.items()},
                   "published": dict(g.published), "points": g.points.to_dict(orient="records")} for g in r.grids],
        "search": r.search, "search_error": r.search_error,
        "best_lr": r.best_lr.to_dict(orient="records") if r.best_lr is not None else None,
        "convergence_rate": None if r.convergence is None else {"n": r.convergence.n, "within": r.convergence.within,
                                                                "tau_rate_bound": r.convergence.tau_rate_bound},
    }


def write_report(
    data: ReportData, out_dir: str | os.PathLike[str], *, embed: str = "svg", figures: Sequence[str] = FIGURE_KINDS,
    html_name: str = "report.html",
) -> ReportPaths:
    """Write figures, ``report.html``, ``summary.md`` and ``summary.json`` for ``data``.

    Args:
        data: From :func:`trilemma.report.report_data`.
        out_dir: Folder to write into (created). It must be new, empty, or hold an earlier
            report (its page is overwritten); a study store or another folder is refused.
        embed: Figure format embedded in the HTML: ``"svg"`` (sharp at any zoom) or ``"png"``.
        figures: Figure families to draw, a subset of :data:`FIGURE_KINDS`: ``"axes"`` (each
            axis's ground truth over the topology), ``"quantities"`` (each theory / at-init
            quantity over the topology), ``"indicators"`` (indicator vs ground-truth scatters),
            ``"curves"`` (training curves of the winners, when given), ``"pareto"``, ``"remedy"``
            (the pruning grid, the chosen learning rates, Theorem 4.3's check).
        html_name: File name of the page inside ``out_dir``.

    Returns:
        The :class:`ReportPaths`.

    Raises:
        InvalidArgumentError: unknown ``embed`` or figure kind.
        OutputPathError: ``out_dir`` is a file, a store, or a folder holding something else.
    """
    if embed not in _EMBED:
        raise InvalidArgumentError(f"embed must be one of {', '.join(_EMBED)}, got {embed!r}")
    bad = [k for k in figures if k not in FIGURE_KINDS]
    if bad or isinstance(figures, str):
        raise InvalidArgumentError(f"figures must be a subset of {FIGURE_KINDS}, got {figures!r}")
    if not html_name or Path(html_name).name != html_name:
        raise InvalidArgumentError(f"html_name must be a plain file name, got {html_name!r}")
    out = check_output_dir(out_dir, marker=html_name, what="report --out")
    rendered = _render_figures(data, out / "figures", tuple(figures))
    embedded = [EmbeddedFigure(f.name, f.title, caption, _EMBED[embed], blobs[embed]) for f, blobs, caption in rendered]
    html_path = out / html_name
    html_path.write_text(render_html(data, embedded), encoding="utf-8")
    md_path = out / "summary.md"
    md_path.write_text(
        render_markdown(data, {f.title: f.png.relative_to(out).as_posix() for f, _, _ in rendered}), encoding="utf-8"
    )
    lrs = lrs_text(data.remedy) if data.remedy is not None else None
    if lrs is not None:
        (out / "lrs.txt").write_text(lrs, encoding="utf-8")
    json_path = out / "summary.json"
    payload = {
        "title": data.title, "verdict": data.verdict.as_dict() if data.verdict else None,
        "missing_axes": dict(data.missing_axes), "headline": data.headline.to_dict(orient="records"),
        "agreement": data.agreement.to_dict(orient="records"), "notes": list(data.notes),
        "settings": data.settings, "metadata": data.metadata,
        "remedy": _remedy_json(data),
    }
    json_path.write_text(json.dumps(_jsonable(payload), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    logger.info("report written to %s", html_path)
    return ReportPaths(out, html_path, md_path, json_path, tuple(f for f, _, _ in rendered))


def build_report(
    results: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    curves: pd.DataFrame | None = None,
    metadata: Mapping[str, object] | None = None,
    objectives: Mapping[str, str] | Sequence[Objective] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    rank_method: str = "min",
    methods: Sequence[str] = ("kendall",),
    embed: str = "svg",
    figures: Sequence[str] = FIGURE_KINDS,
    title: str | None = None,
    arch_col: str = "arch",
    dataset: str | None = None,
    html_name: str = "report.html",
    axes: Sequence[AxisSpec] | None = None,
    exclude_unconverged: bool = False,
    outputs: Sequence[Mapping[str, object]] = (),
) -> ReportPaths:
    """Analyse a results table and write the report.

    Args:
        results: One row per architecture (and seed): topology, theory, at-init and trained
            columns (see ``trilemma.analysis`` for the names it knows).
        out_dir: Folder for ``report.html`` (self-contained), ``summary.md``,
            ``summary.json`` and ``figures/``.
        curves: Optional long table ``arch, epoch, train_loss, test_loss, train_acc, test_acc``.
        metadata: What was run (config, versions, data, seeds, wall time ...), shown as given.
        objectives: ``{axis: column}`` ground truths (default: ``DEFAULT_AXES``).
        higher_is_better: ``{column: bool}`` direction overrides.
        n_boot: Bootstrap resamples per correlation.
        confidence: Coverage of the intervals.
        seed: Bootstrap seed.
        rank_method: Tie method of ranks.
        methods: Correlation methods of the agreement table.
        embed: Figure format embedded in the page (``"svg"`` or ``"png"``).
        figures: Figure families to draw (see :func:`write_report`).
        title: Page title.
        arch_col: The architecture column.
        dataset: The dataset to report when the table holds several (see :func:`report_data`).
        html_name: File name of the page.
        axes: Each axis's ground truth when ``objectives`` is not given (see :func:`report_data`).
        exclude_unconverged: Leave out runs that never reached the loss plateau.
        outputs: Study-level outputs (``trilemma.study.load_outputs``).

    Returns:
        :class:`ReportPaths`.

    Raises:
        InvalidArgumentError: the table cannot be analysed (see :func:`report_data`).
    """
    data = report_data(
        results, curves=curves, metadata=metadata, objectives=objectives, higher_is_better=higher_is_better,
        n_boot=n_boot, confidence=confidence, seed=seed, rank_method=rank_method, methods=methods,
        arch_col=arch_col, title=title, dataset=dataset, axes=axes, exclude_unconverged=exclude_unconverged,
        outputs=outputs,
    )
    return write_report(data, out_dir, embed=embed, figures=figures, html_name=html_name)


def study_axes(config: Mapping[str, object], schema: ResultSchema | None = None) -> tuple[AxisSpec, ...]:
    """Each axis's ground truth for a study: the schema's (the training task declares
    ``epochs_to_<p>`` at its ``accuracy_threshold``), with the study's ``[analysis] axes`` overrides.

    Args:
        config: The study's stored config (a plain dict).
        schema: The results' schema (default: the default schema at the config's threshold).
    """
    raw_analysis = config.get("analysis")
    analysis: Mapping[str, Any] = raw_analysis if isinstance(raw_analysis, Mapping) else {}
    overrides = analysis.get("axes") if isinstance(analysis, Mapping) else None
    overrides = overrides if isinstance(overrides, Mapping) else None
    if schema is not None:
        return default_axes(overrides=overrides, schema=schema)
    training = config.get("training") if isinstance(config.get("training"), Mapping) else {}
    metrics = training.get("metrics") if isinstance(training, Mapping) else None
    threshold = metrics.get("accuracy_threshold", 0.5) if isinstance(metrics, Mapping) else 0.5
    return default_axes(float(threshold or 0.5), overrides)


def build_report_for_study(
    study: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None, **options: object
) -> ReportPaths:
    """Build the report of a study run by ``trilemma run``.

    Reads the study's store through ``trilemma.study`` (``load_results``, ``load_curves``,
    ``load_metadata``); no code named by the store is run.

    Args:
        study: The study's TOML config, its store, or its name in ``runs/``.
        out_dir: Report folder (default ``runs/<study name>_report``), or the page's path
            when it ends in ``.html`` (figures and summaries go beside it).
        **options: Passed to :func:`build_report`.

    Raises:
        StoreError: no store, or an unreadable one.
        OutputPathError: ``out_dir`` is a store, a file, or a folder of something else.
    """
    from trilemma import study as study_api

    source = Path(study)
    results = study_api.load_results(source)
    curves = study_api.load_curves(source)
    metadata = dict(study_api.load_metadata(source))
    options.setdefault("outputs", study_api.load_outputs(source))
    if not metadata.get("study"):
        metadata["study"] = Path(study).stem
    raw_config = metadata.get("config")
    config: Mapping[str, Any] = raw_config if isinstance(raw_config, Mapping) else {}
    if "axes" not in options and "objectives" not in options:
        schema = results.attrs.get("schema")
        options["axes"] = study_axes(config, schema if isinstance(schema, ResultSchema) else None)
    raw_analysis = config.get("analysis")
    analysis: Mapping[str, Any] = raw_analysis if isinstance(raw_analysis, Mapping) else {}
    options.setdefault("exclude_unconverged", bool(analysis.get("exclude_unconverged", False)))
    if out_dir is None:
        out_dir = Path("runs") / f"{Path(study).stem}_report"
    out = Path(out_dir)
    if out.suffix.lower() in (".html", ".htm"):
        options.setdefault("html_name", out.name)
        out = out.parent
    return build_report(results, out, curves=curves, metadata=metadata, **options)  # type: ignore[arg-type]

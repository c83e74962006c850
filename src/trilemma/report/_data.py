"""Everything a report shows, computed once as plain data (:class:`ReportData`)."""

from __future__ import annotations

import logging
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trilemma._schema import ResultSchema
from trilemma.analysis import (
    AXES,
    AxisColumns,
    AxisSpec,
    Objective,
    Verdict,
    aggregate_seeds,
    agreement_table,
    available_objectives,
    default_axis_columns,
    direction,
    published_columns,
    rank_table,
    reference_mask,
    resolve_objectives,
    schema_of,
    verdict,
)
from trilemma.analysis._table import check_frame, numeric_column
from trilemma.errors import InvalidArgumentError, TrilemmaError, UnknownNameError
from trilemma.report._figdata import (
    CurvesData,
    IndicatorScatterData,
    ParetoData,
    TopologyMapData,
    curves_data,
    indicator_scatter_data,
    metric_label,
    pareto_data,
    topology_map_data,
)
from trilemma.report._remedy import RemedyData, remedy_data

__all__ = ["ReportData", "report_data", "headline_table", "sign_summary", "SignSummary", "sign_agreement", "SIGN_THRESHOLD"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportData:
    """The numbers of a report, before any rendering.

    Attributes:
        title: Report title.
        results: One row per architecture (seeds averaged) with ``rank_<axis>``,
            ``rank_sum`` and ``pareto`` added; the table shown in full.
        n_input_rows: Rows of the table given (before averaging seeds).
        verdict: The no-free-lunch verdict over the axes that have a trained ground truth
            (``None`` when none has).
        ranks: The rank table (paper's Table 1 style).
        agreement: The agreement table (see ``trilemma.analysis.agreement_table``).
        headline: Each axis's ground truth (and the papers' at-init quantities) against
            d̄ and P, Kendall τ over architectures and groups, beside the published values.
        axis_columns: The columns used per axis.
        maps: Topology maps: each axis's ground truth, then each theory / at-init quantity.
        scatters: ``{axis: indicator-vs-ground-truth scatters}``.
        curves: Training curves of the winners (None without curves).
        pareto: The Pareto figure's data (``None`` without a verdict).
        metadata: What was run (as given).
        settings: Analysis settings and library versions (added by the report).
        notes: Things the reader should know (rows left out, missing curves, ...).
        missing_axes: ``{axis: why it has no ground truth}`` for the axes the study did not
            measure (e.g. no ``[training]`` section) or where no architecture has a value.
        signs: How many of the paper's Fig. 3/4 pairs our signs reproduce.
        schema: The results' column schema (labels, kinds, directions).
        remedy: The remedy sections (Table 1, pruning grids, the ensemble search, the best
            learning rate, Theorem 4.3), when the study has their data. With a reference
            column (the ensemble space's single cells), every other section covers the
            reference rows only and the other rows are ranked among them here.
    """

    title: str
    results: pd.DataFrame
    n_input_rows: int
    verdict: Verdict | None
    ranks: pd.DataFrame
    agreement: pd.DataFrame
    headline: pd.DataFrame
    axis_columns: tuple[AxisColumns, ...]
    maps: tuple[TopologyMapData, ...]
    scatters: Mapping[str, tuple[IndicatorScatterData, ...]]
    curves: CurvesData | None
    pareto: ParetoData | None
    metadata: Mapping[str, object]
    settings: Mapping[str, object]
    notes: tuple[str, ...] = field(default=())
    missing_axes: Mapping[str, str] = field(default_factory=dict)
    signs: SignSummary | None = None
    schema: ResultSchema = field(default_factory=ResultSchema)
    remedy: RemedyData | None = None

    def label(self, column: str) -> str:
        """The display label of ``column`` (from the results' schema)."""
        return metric_label(column, self.schema)

    def kind_text(self, column: str, kind: str) -> str:
        """The displayed kind of ``column``: ``kind``, except a ground truth read from a
        benchmark's table (the ``lookup`` task), shown as ``"trained, looked up"``."""
        if kind == "trained" and column in self.schema and self.schema.get(column).source == "lookup":
            return "trained, looked up"
        return kind

    @property
    def objectives(self) -> tuple[Objective, ...]:
        """The axes with a ground truth (those the verdict ranks)."""
        return self.verdict.objectives if self.verdict is not None else ()


_HEADLINE_BASE = ["axis", "quantity", "kind", "versus", "tau_arch", "tau_arch_low", "tau_arch_high",
                  "n_arch", "tau_group", "tau_group_low", "tau_group_high", "n_group"]


def headline_table(agreement: pd.DataFrame, ground_truth: Mapping[str, str]) -> pd.DataFrame:
    """The correlations the papers headline, one row per (axis, quantity, topology column).

    Rows: each axis's ground truth against d̄ and against P, plus every pair with a published
    value (the at-init quantities against P). Kendall τ only.

    Returns:
        Columns ``axis, quantity, kind, versus, tau_arch, tau_arch_low, tau_arch_high, n_arch,
        tau_group, tau_group_low, tau_group_high, n_group`` and the ``paper:*`` columns.
    """
    papers = [c for c in published_columns() if c in agreement.columns]
    ken = agreement[(agreement["method"] == "kendall") & (agreement["x_kind"] == "topology")]
    has_paper = ken[papers].notna().any(axis=1) if papers else pd.Series(False, index=ken.index)
    is_gt = ken.apply(lambda r: ground_truth.get(r["axis"]) == r["y"], axis=1) if len(ken) else has_paper
    sel = ken[has_paper | is_gt]
    rows = []
    for (axis, y, x), g in sel.groupby(["axis", "y", "x"], sort=False):
        row: dict[str, Any] = {"axis": axis, "quantity": y, "kind": g["y_kind"].iloc[0], "versus": x}
        for level, key in (("architecture", "arch"), ("group", "group")):
            r = g[g["level"] == level]
            if len(r):
                row[f"tau_{key}"] = float(r["value"].iloc[0])
                row[f"tau_{key}_low"] = float(r["ci_low"].iloc[0])
                row[f"tau_{key}_high"] = float(r["ci_high"].iloc[0])
                row[f"n_{key}"] = int(r["n"].iloc[0])
            else:
                row.update({f"tau_{key}": np.nan, f"tau_{key}_low": np.nan, f"tau_{key}_high": np.nan, f"n_{key}": 0})
        for p in papers:
            row[p] = float(g[p].iloc[0])
            value = float(g[p].iloc[0])
            row[f"sign{p[len('paper'):]}"] = sign_agreement(float(row.get("tau_group", np.nan)), value)
            row[f"sign_arch{p[len('paper'):]}"] = sign_agreement(float(row.get("tau_arch", np.nan)), value)
        rows.append(row)
    signs = [f"sign{p[len('paper'):]}" for p in papers] + [f"sign_arch{p[len('paper'):]}" for p in papers]
    out = pd.DataFrame(rows, columns=[*_HEADLINE_BASE, *papers, *signs])
    order = {a: i for i, a in enumerate(AXES)}
    kind_order = {"trained": 0, "theory": 1, "init": 2}
    return out.sort_values(["axis", "kind", "versus"], key=lambda s: s.map(order) if s.name == "axis"
                           else s.map(kind_order) if s.name == "kind" else s, kind="stable", ignore_index=True)


#: Published |τ| below this is too close to zero for its sign to count (shown, not counted).
SIGN_THRESHOLD = 0.3


def sign_agreement(ours: float, published: float) -> str:
    """``"agree"`` / ``"disagree"`` when the published |τ| ≥ :data:`SIGN_THRESHOLD`, ``"near zero"``
    below it, ``""`` when either value is missing."""
    if not (isinstance(published, float) and np.isfinite(published)) or not np.isfinite(ours):
        return ""
    if abs(published) < SIGN_THRESHOLD:
        return "near zero"
    return "agree" if np.sign(ours) == np.sign(published) else "disagree"


#: The published columns of the paper's main trends (Figs. 3 and 4: the twelve pairs).
MAIN_FIGURES = ("paper:Fig. 3 Tiny-ImageNet", "paper:Fig. 4")


@dataclass(frozen=True)
class SignSummary:
    """How many of the paper's Fig. 3/4 pairs (:data:`MAIN_FIGURES`) our signs reproduce.

    Attributes:
        pairs: Pairs with a Fig. 3/4 value in the headline table.
        counted: Of those, pairs whose published |τ| ≥ :data:`SIGN_THRESHOLD`.
        agree_group: Counted pairs whose τ over (P, d̄) groups has the published sign.
        agree_arch: Counted pairs whose τ over architectures has the published sign.
        disagree_group: ``"quantity vs topology"`` of the counted pairs that disagree (groups).
        disagree_arch: The same over architectures.
    """

    pairs: int = 0
    counted: int = 0
    agree_group: int = 0
    agree_arch: int = 0
    disagree_group: tuple[str, ...] = ()
    disagree_arch: tuple[str, ...] = ()

    def sentence(self) -> str:
        """One sentence for the report."""
        if not self.counted:
            return "No pair of the paper's Figures 3/4 with |τ| ≥ 0.3 can be compared in this study."
        text = (f"Signs agree with the paper's Figures 3/4 on {self.agree_group} of {self.counted} pairs over "
                f"(P, d̄) groups and {self.agree_arch} of {self.counted} over architectures (pairs whose published "
                f"|τ| ≥ {SIGN_THRESHOLD}; {self.pairs - self.counted} near-zero published values are shown, not counted).")
        if self.disagree_group:
            text += f" Disagreeing over groups: {', '.join(self.disagree_group)}."
        if self.disagree_arch:
            text += f" Disagreeing over architectures: {', '.join(self.disagree_arch)}."
        return text


def sign_summary(headline: pd.DataFrame) -> SignSummary:
    """Count the Fig. 3/4 pairs of ``headline`` (from :func:`headline_table`) whose signs agree."""
    pairs = counted = 0
    agree = {"group": 0, "arch": 0}
    disagree: dict[str, list[str]] = {"group": [], "arch": []}
    for _, r in headline.iterrows():
        for p in MAIN_FIGURES:
            if p not in headline.columns or not np.isfinite(r[p]):
                continue
            pairs += 1
            suffix = p[len("paper"):]
            marks = {"group": r[f"sign{suffix}"], "arch": r[f"sign_arch{suffix}"]}
            if marks["group"] in ("near zero", ""):
                continue
            counted += 1
            for level, mark in marks.items():
                if mark == "agree":
                    agree[level] += 1
                else:
                    disagree[level].append(f"{r['quantity']} vs {r['versus']}")
    return SignSummary(pairs, counted, agree["group"], agree["arch"], tuple(disagree["group"]),
                       tuple(disagree["arch"]))


def _versions() -> dict[str, str]:
    import matplotlib
    import scipy

    import trilemma

    return {"trilemma": trilemma.__version__, "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "pandas": pd.__version__, "matplotlib": matplotlib.__version__}


def _axis_columns(df: pd.DataFrame, objectives: Sequence[Objective],
                  axes: Sequence[AxisSpec] | None = None) -> tuple[AxisColumns, ...]:
    """The columns of every axis, the objective's ground truth first; axes without a ground
    truth keep their topology / theory / at-init columns (their agreement is still shown)."""
    defaults = {c.axis: c for c in default_axis_columns(df, axes)}
    by_axis = {o.axis: o for o in objectives}
    out = []
    for axis in AXES:
        d = defaults.get(axis) or AxisColumns(axis)
        o = by_axis.get(axis)
        trained = (o.column, *[c for c in d.trained if c != o.column]) if o else d.trained
        if o is None and not (d.cost or d.theory or d.init or trained):
            continue
        out.append(AxisColumns(axis, d.topology, d.theory, d.init, trained, d.cost))
    return tuple(out)


def _one_dataset(
    results: pd.DataFrame, curves: pd.DataFrame | None, dataset: str | None, notes: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame | None, str | None]:
    """Keep one dataset's rows when the table holds several (``dataset`` column)."""
    if "dataset" not in results.columns:
        if dataset is not None:
            raise InvalidArgumentError(f"dataset={dataset!r} was given but the results have no 'dataset' column")
        return results, curves, None
    names = sorted({str(d) for d in results["dataset"].dropna().unique()})
    if dataset is None:
        if len(names) <= 1:
            return results, curves, names[0] if names else None
        dataset = names[0]
        notes.append(f"this report covers dataset {dataset!r}; the results also hold {', '.join(names[1:])} "
                     "(pass dataset=... for those)")
    elif dataset not in names:
        raise InvalidArgumentError(f"dataset {dataset!r} is not in the results; they hold: {', '.join(names) or 'none'}")
    results = results[results["dataset"].astype(str) == dataset].reset_index(drop=True)
    if curves is not None and "dataset" in curves.columns:
        curves = curves[curves["dataset"].isna() | (curves["dataset"].astype(str) == dataset)]
    return results, curves, dataset


def _budget_note(df: pd.DataFrame, metadata: Mapping[str, object]) -> list[str]:
    """How closely the architectures met a study's parameter budget (when it had one)."""
    config = metadata.get("config")
    model = config.get("model") if isinstance(config, Mapping) else None
    budget = model.get("param_budget") if isinstance(model, Mapping) else None
    if not budget or "params" not in df.columns:
        return []
    params = numeric_column(df, "params")
    ok = np.isfinite(params)
    if not ok.any():
        return [f"parameter budget {budget:,}: no architecture reports its parameter count"]
    err = np.abs(params[ok] - float(budget)) / float(budget)
    tol = model.get("budget_tolerance") if isinstance(model, Mapping) else None
    within = f"; all within the tolerance {float(tol):.1%}" if tol is not None and (err <= float(tol) + 1e-12).all() \
        else ""
    return [f"parameter budget {budget:,}: {int(ok.sum())} architectures have {int(params[ok].min()):,}–"
            f"{int(params[ok].max()):,} parameters (largest deviation {err.max():.2%}){within}"]


def _first_axis(column: str, schema: ResultSchema | None = None) -> str | None:
    for axis in AXES:
        try:
            direction(column, axis, schema=schema)
        except UnknownNameError:
            continue
        return axis
    return None


def report_data(
    results: pd.DataFrame,
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
    arch_col: str = "arch",
    title: str | None = None,
    dataset: str | None = None,
    axes: Sequence[AxisSpec] | None = None,
    exclude_unconverged: bool = False,
    outputs: Sequence[Mapping[str, object]] = (),
) -> ReportData:
    """Compute everything a report shows.

    Args:
        results: The results table (one row per architecture, or per architecture and
            seed: seeds are averaged).
        curves: Optional long table ``arch, epoch, train_loss, test_loss, train_acc, test_acc``.
        metadata: What was run (config, versions, data, seeds, wall time), shown as given.
        objectives: ``{axis: column}`` ground truths (default: see ``DEFAULT_AXES``).
        higher_is_better: ``{column: bool}`` direction overrides.
        n_boot: Bootstrap resamples per correlation.
        confidence: Coverage of the intervals.
        seed: Bootstrap seed.
        rank_method: Tie method of ranks (``"min"``, ``"average"``, ...).
        methods: Correlation methods of the agreement table.
        arch_col: The architecture column.
        title: Report title (default from ``metadata["study"]`` or "trilemma report").
        dataset: With a ``dataset`` column holding several datasets, the one to report
            (default: the first in sorted order; a note names the others).
        axes: Each axis's ground truth when ``objectives`` is not given (default: the
            papers', :data:`~trilemma.analysis.DEFAULT_AXES`); an axis whose column is absent
            or empty is reported as missing instead of failing.
        exclude_unconverged: Leave out runs whose training loss never met the plateau rule
            (``converged`` false). By default they are kept (their expressivity and gap come
            from the last epochs): dropping them removes the slowest, deep-narrow cells.
        outputs: Study-level outputs (``trilemma.study.load_outputs``; the ensemble search).

    Returns:
        A :class:`ReportData`.

    Raises:
        InvalidArgumentError: the table lacks the architecture column or every axis's
            ground truth, or no architecture has all three.
    """
    check_frame(results, [arch_col])
    if results.empty:
        raise InvalidArgumentError("the results table is empty; nothing to report")
    metadata = dict(metadata or {})
    notes: list[str] = []
    schema = schema_of(results)
    results, curves, dataset = _one_dataset(results, curves, dataset, notes)
    if "status" in results.columns:
        counts = results["status"].astype(str).value_counts()
        bad = {k: int(v) for k, v in counts.items() if k != "complete"}
        if bad:
            notes.append("rows not complete: " + ", ".join(f"{v} {k}" for k, v in bad.items()))
    if "converged" in results.columns:
        flags = results["converged"].map(lambda v: None if v is None or v != v else bool(v))
        unconverged = int((flags == False).sum())  # noqa: E712 - None stays out of both counts
        plateaued = int((flags == True).sum())  # noqa: E712
        if exclude_unconverged and unconverged:
            results = results[flags != False].reset_index(drop=True)  # noqa: E712
            notes.append(f"{unconverged} run(s) whose training loss never reached the plateau are excluded "
                         "(exclude_unconverged)")
        elif unconverged:
            notes.append(f"{plateaued} of {plateaued + unconverged} training runs reached the loss plateau; the other "
                         f"{unconverged} are kept (converged = false): their expressivity and generalization gap come "
                         "from the last epochs")
        else:
            notes.append(f"all {plateaued} training runs reached the loss plateau")
    df = aggregate_seeds(results, arch_col)
    df.attrs["schema"] = schema
    full = df
    reference = reference_mask(df)
    if not reference.all():
        df = df[reference].reset_index(drop=True)
        df.attrs["schema"] = schema
        notes.append(f"{int((~reference).sum())} ensembles / pruned cells are ranked among the {int(reference.sum())} "
                     "single cells in the remedy section; every other section covers the single cells")
    notes.extend(_budget_note(df, metadata))
    if (df["n_seeds"] > 1).any():
        notes.append(f"{len(results)} rows averaged over seeds into {len(df)} architectures")
    missing: dict[str, str] = {}
    if objectives is None:
        objs, missing = available_objectives(df, higher_is_better, axes)
    else:
        objs = resolve_objectives(df, objectives, higher_is_better)
    for axis, why in missing.items():
        notes.append(f"{axis}: {why}")
    for o in objs:
        counts = pd.Series(numeric_column(df, o.column)).dropna().value_counts()
        if len(counts) and counts.iloc[0] > 1:
            notes.append(f"{o.axis} ground truth {o.column}: {len(counts)} distinct values over {int(counts.sum())} "
                         f"architectures; the largest tie holds {int(counts.iloc[0])} (value {counts.index[0]:.4g})")
    v: Verdict | None = None
    ranks = pd.DataFrame(columns=[arch_col])
    if objs:
        v = verdict(df, objs, rank_method=rank_method, arch_col=arch_col)
        if v.n_excluded:
            notes.append(f"{v.n_excluded} architecture(s) lack a trained value on some axis and are not ranked")
        ranks = rank_table(df, objs, method=rank_method, arch_col=arch_col)
    columns = _axis_columns(df, objs, axes)
    agreement = agreement_table(df, columns, methods=methods, n_boot=n_boot, confidence=confidence, seed=seed,
                                higher_is_better=higher_is_better)
    undefined = agreement[agreement["note"] != ""]
    if len(undefined):
        notes.append(f"{len(undefined)} correlation(s) undefined (see the note column), e.g. {undefined['note'].iloc[0]}")
    thin = agreement[(agreement["note"] == "") & (agreement["n_boot_valid"] < 0.9 * n_boot)]
    if len(thin):
        notes.append(f"{len(thin)} correlation(s) have fewer than 90% defined bootstrap resamples (too few "
                     "architectures or groups for some resamples to vary); their intervals use the defined ones")
    headline = headline_table(agreement, {o.axis: o.column for o in objs})
    keys = [k for k in schema.group_keys() if k in df.columns]
    maps: list[TopologyMapData] = []
    if len(keys) == 2:
        for o in objs:
            maps.append(topology_map_data(df, o.column, axis=o.axis, arch_col=arch_col))
        seen = {o.column for o in objs}
        for c in columns:
            for col in (*c.theory, *c.init):
                if col not in seen:
                    seen.add(col)
                    try:
                        maps.append(topology_map_data(df, col, axis=_first_axis(col, schema), arch_col=arch_col))
                    except TrilemmaError as exc:
                        notes.append(f"no topology map for {col}: {exc}")
    else:
        notes.append("the space declares no two topology-group columns: topology maps and group correlations "
                     "are skipped")
    scatters: dict[str, tuple[IndicatorScatterData, ...]] = {}
    by_axis = {c.axis: c for c in columns}
    for o in objs:
        c = by_axis[o.axis]
        items = []
        for col in (*c.topology, *c.cost, *c.theory, *c.init):
            try:
                items.append(indicator_scatter_data(df, col, o.column, o.axis, n_boot=n_boot, seed=seed,
                                                    confidence=confidence, arch_col=arch_col))
            except TrilemmaError as exc:
                notes.append(f"no scatter of {col} vs {o.column}: {exc}")
        if items:
            scatters[o.axis] = tuple(items)
    cd = None
    if curves is not None and v is not None:
        try:
            cd = curves_data(curves, v, arch_col=arch_col)
        except TrilemmaError as exc:
            notes.append(f"training curves not shown: {exc}")
        else:
            no_curve = [a.champion for a in v.axes if a.champion not in cd.roles]
            if no_curve:
                notes.append(f"no training curve for winner(s) {', '.join(no_curve)}")
    pareto = pareto_data(ranks, v, arch_col=arch_col) if v is not None and len(objs) >= 2 else None
    remedy = remedy_data(full, objs, outputs=outputs, arch_col=arch_col, n_boot=min(n_boot, 200), seed=seed,
                         dataset=dataset)
    notes.extend(remedy.notes)
    if v is not None:
        table = df.merge(ranks[[arch_col, *[f"rank_{o.axis}" for o in objs], "rank_sum"]], on=arch_col, how="left")
        table["pareto"] = table[arch_col].astype(str).isin(set(v.pareto_front))
    else:
        table = df.copy()
    settings = {"n_boot": n_boot, "confidence": confidence, "bootstrap_seed": seed, "rank_method": rank_method,
                "correlation_methods": ", ".join(methods),
                "ground_truth": ", ".join(f"{o.axis}={o.column} ({'higher' if o.higher_is_better else 'lower'} is better)"
                                          for o in objs),
                "versions": _versions()}
    if dataset is not None:
        settings["dataset"] = dataset
    if title is None:
        title = f"trilemma report: {metadata['study']}" if metadata.get("study") else "trilemma report"
        if dataset is not None:
            title += f" ({dataset})"
    for note in notes:
        logger.info("report: %s", note)
    return ReportData(
        title=title, results=table, n_input_rows=len(results), verdict=v, ranks=ranks, agreement=agreement,
        headline=headline, axis_columns=columns, maps=tuple(maps), scatters=scatters, curves=cd, pareto=pareto,
        metadata=metadata, settings=settings, notes=tuple(notes), missing_axes=missing, signs=sign_summary(headline),
        schema=schema, remedy=None if remedy.empty else remedy,
    )

"""The report's remedy sections, data first: Table 1, the pruning grid (Fig. 7), the ensemble
search, the per-architecture learning rate (Fig. 8) and Theorem 4.3's rate — then their figures
and their HTML / Markdown.

Chen, Huang & Wang (AutoML-Conf 2023): Table 1 and Figure 7 (ensembles of a wide-shallow and a
deep-narrow cell with random pruning), appendix C.3 / Figure 8 (a learning rate per
architecture), Theorem 4.3 (linear convergence of gradient descent). Every section appears only
when the study has its data: a reference column (the ensemble space's ``single_cell``) for Table 1
and the grids, the ``lr_sweep`` / ``convergence_rate`` columns, an ``ensemble_search`` output.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from trilemma.analysis import (
    AXES,
    ConvergenceRateSummary,
    Objective,
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
from trilemma.analysis._published import PUBLISHED_TABLE1
from trilemma.errors import TrilemmaError

__all__ = ["RemedyData", "remedy_data", "remedy_figures", "remedy_html", "remedy_markdown", "lrs_text"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemedyData:
    """The numbers of the remedy sections.

    Attributes:
        n_reference: Single cells every other row is ranked among.
        placed: The non-reference rows (ensembles, pruned cells) with their ranks among the
            single cells, by rank sum.
        table1: Our Table 1 beside the paper's (``None`` without a reference column).
        grids: The pruning grids (Fig. 7).
        search: The ``ensemble_search`` output (``None``: not run), and ``search_error``.
        best_lr: Fig. 8's τ table (``None`` without ``lr_sweep`` columns); ``lr_choices``:
            architecture → chosen rate; ``lr_rule``: the selection rule.
        convergence: Theorem 4.3's check (``None`` without ``convergence_rate`` columns).
        notes: What the reader should know.
    """

    n_reference: int
    placed: pd.DataFrame
    table1: Table1 | None
    grids: tuple[PruningGrid, ...]
    search: Mapping[str, Any] | None = None
    search_error: str | None = None
    best_lr: pd.DataFrame | None = None
    lr_choices: pd.DataFrame | None = None
    lr_rule: str | None = None
    convergence: ConvergenceRateSummary | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return (self.table1 is None and not self.grids and self.search is None and self.search_error is None
                and self.best_lr is None and self.convergence is None)


def remedy_data(df: pd.DataFrame, objectives: Sequence[Objective], *, outputs: Sequence[Mapping[str, Any]] = (),
                arch_col: str = "arch", n_boot: int = 200, seed: int = 0, dataset: str | None = None) -> RemedyData:
    """Compute the remedy sections from a results table (one row per architecture, all rows).

    Args:
        df: Results (seeds averaged), reference rows and the others.
        objectives: The ranked axes (each axis's ground truth).
        outputs: Study-level outputs (``trilemma.study.load_outputs``).
        arch_col: The architecture column.
        n_boot: Bootstrap resamples of Fig. 8's intervals.
        seed: Bootstrap seed.
        dataset: The reported dataset (picks the search output).
    """
    notes: list[str] = []
    ref = reference_mask(df)
    has_reference = bool((~ref).any()) or df.attrs.get("schema") is not None and df.attrs["schema"].reference()
    placed = pd.DataFrame()
    t1: Table1 | None = None
    grids: tuple[PruningGrid, ...] = ()
    objectives = tuple(objectives)
    if objectives and has_reference and ref.any():
        try:
            all_placed = placed_ranks(df, objectives, reference=ref, arch_col=arch_col)
            keep = [c for c in ("member_cells", "member_ratios", "P", "mean_depth", "effective_params", "params")
                    if c in df.columns]
            placed = pd.concat([all_placed, df[keep].reset_index(drop=True)], axis=1)[~ref]
            placed = placed.sort_values(["rank_sum", arch_col], kind="stable").reset_index(drop=True)
            t1 = table1(df, objectives, reference=ref, arch_col=arch_col)
            grids = pruning_grids(df, all_placed, arch_col=arch_col)
        except TrilemmaError as err:
            notes.append(f"Table 1 not computed: {err}")
    search, search_error = None, None
    for out in outputs:
        if out.get("kind") != "ensemble_search" or (dataset is not None and out.get("dataset") not in (dataset, "")):
            continue
        if out.get("status") == "complete":
            search = out.get("payload")
        else:
            search_error = str(out.get("error") or "failed").strip().splitlines()[-1]
        break
    best, choices, rule = None, None, None
    if "best_lr" in df.columns and objectives:
        sel = df[ref].reset_index(drop=True)
        sel.attrs = df.attrs
        pairs = []
        for o in objectives:
            col = f"lr_{o.column}"
            if col in sel.columns:
                pairs.append((o.axis, col, o.column))
        if pairs:
            best = best_lr_correlations(sel, pairs, n_boot=n_boot, seed=seed)
            choices = lr_table(sel, arch_col=arch_col)
            rules = {"train_loss": "lowest final training loss",
                     "val_loss": "lowest final validation loss on a held-out part of the training set"}
            found = df["lr_rule"].dropna() if "lr_rule" in df.columns else pd.Series([], dtype=object)
            rule = rules.get(str(found.iloc[0]), str(found.iloc[0])) if len(found) else rules["train_loss"]
    conv = convergence_rate_summary(df[ref].reset_index(drop=True) if has_reference else df, arch_col=arch_col)
    return RemedyData(int(ref.sum()), placed, t1, grids, search, search_error, best, choices, rule, conv, tuple(notes))


def lrs_text(data: RemedyData) -> str | None:
    """The chosen learning rates as the authors' ``lrs.txt``: one ``arch lr`` line per architecture."""
    if data.lr_choices is None or data.lr_choices.empty:
        return None
    cols = list(data.lr_choices.columns)
    return "".join(f"{a} {lr:g}\n" for a, lr in zip(data.lr_choices[cols[0]], data.lr_choices[cols[1]]))


# --------------------------------------------------------------------------- figures
_RC: Any = {"svg.hashsalt": "trilemma", "svg.fonttype": "path", "font.size": 9, "axes.titlesize": 10}


def plot_pruning_grid(grid: PruningGrid) -> Figure:
    """Fig. 7: rank sum over the pruning ratios of two members; marker size = effective parameters."""
    pts = grid.points
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(6.2, 4.6), layout="constrained")
        ax = fig.subplots()
        p = pts["params"].to_numpy(float)
        size = 160 + 440 * (p - np.nanmin(p)) / max(np.nanmax(p) - np.nanmin(p), 1) if np.isfinite(p).any() else 300
        sc = ax.scatter(pts["ratio_1"], pts["ratio_2"], c=pts["rank_sum"], s=size, cmap="viridis_r",
                        edgecolors="black", linewidths=0.4)
        for _, r in pts.iterrows():
            ax.annotate(f"{r['rank_sum']:.0f}", (r["ratio_1"], r["ratio_2"]), fontsize=7, ha="center", va="center",
                        color="black" if r["rank_sum"] < pts["rank_sum"].median() else "white")  # viridis_r: low is light
        fig.colorbar(sc, ax=ax, label="rank sum among the single cells (lower is better)")
        m1, m2 = grid.members[0], grid.members[1]
        keys = list(grid.taus)
        t1, t2 = grid.taus[keys[0]][0], grid.taus[keys[1]][0]
        p1, p2 = grid.published.get(m1), grid.published.get(m2)
        ax.set_xlabel(f"pruning ratio of {m1}  (τ with rank sum {t1:+.2f}" + (f"; paper {p1:+.2f})" if p1 is not None else ")"))
        ax.set_ylabel(f"pruning ratio of {m2}  (τ {t2:+.2f}" + (f"; paper {p2:+.2f})" if p2 is not None else ")"))
        ax.set_title(f"Ensemble {m1} + {m2}: rank sum over the pruning grid\n(marker size: effective parameters)")
    return fig


def plot_lr_choices(choices: pd.DataFrame) -> Figure:
    """Fig. 8's choice: how many architectures chose each learning rate."""
    counts = choices.iloc[:, 1].value_counts().sort_index()
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(5.0, 3.2), layout="constrained")
        ax = fig.subplots()
        ax.bar([f"{v:g}" for v in counts.index], counts.to_numpy(), color="tab:blue")
        ax.set_xlabel("chosen learning rate")
        ax.set_ylabel("architectures")
        ax.set_title("Best learning rate per architecture")
    return fig


def plot_convergence_rate(summary: ConvergenceRateSummary) -> Figure:
    """Theorem 4.3: measured per-step contraction against the theorem's rate, per architecture."""
    c = summary.cells
    ok = c["gd_within_bound"].map(lambda v: bool(v) if v is not None and v == v else False).to_numpy()
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(5.4, 4.4), layout="constrained")
        ax = fig.subplots()
        x, y = 1 - c["gd_bound_rate"].to_numpy(float), 1 - c["gd_rate"].to_numpy(float)
        ax.scatter(x[ok], y[ok], s=12, color="tab:green", label=f"within the bound ({int(ok.sum())})")
        ax.scatter(x[~ok], y[~ok], s=16, color="tab:red", marker="x", label=f"above it at some step ({int((~ok).sum())})")
        lo = max(min(np.nanmin(x[x > 0]) if (x > 0).any() else 1e-8, np.nanmin(y[y > 0]) if (y > 0).any() else 1e-8), 1e-12)
        hi = max(np.nanmax(x), np.nanmax(y))
        ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, ls="--", label="measured = bound")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("1 − bound rate = ηλ_min(K)/2")
        ax.set_ylabel("1 − measured per-step contraction")
        ax.set_title("Theorem 4.3: full-batch GD on ½‖y − u‖²")
        ax.legend(fontsize=8)
    return fig


def remedy_figures(data: RemedyData) -> list[tuple[Figure, str, str, str]]:
    """``(figure, file name, title, caption)`` of every remedy figure."""
    out = []
    for k, g in enumerate(data.grids):
        if len(g.members) != 2:
            continue
        out.append((plot_pruning_grid(g), f"pruning_grid_{k + 1}", f"Pruning grid of {' + '.join(g.members)}",
                    "Each point is the ensemble at one pair of pruning ratios, coloured (and labelled) by its rank sum "
                    "among the single cells, marker area growing with its effective parameter count (cf. the paper's "
                    "Figure 7)."))
    if data.lr_choices is not None and len(data.lr_choices):
        out.append((plot_lr_choices(data.lr_choices), "best_lr", "Best learning rate per architecture",
                    f"The rate each single cell was trained at in the Fig. 8 re-check (rule: {data.lr_rule})."))
    if data.convergence is not None:
        out.append((plot_convergence_rate(data.convergence), "convergence_rate", "Theorem 4.3 checked",
                    summary_caption(data.convergence)))
    return out


def summary_caption(summary: ConvergenceRateSummary) -> str:
    return (summary.sentence() + " Points above the dashed line contract faster than the bound promises "
            "(log axes: one minus each rate).")


# --------------------------------------------------------------------------- rendering helpers
def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            return "–"
        return str(int(v)) if float(v).is_integer() and abs(float(v)) < 1e9 else f"{float(v):.{digits}g}"
    return str(v)


def _params(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{int(v):,}"


def _table1_rows(t: Table1) -> tuple[list[str], list[list[str]]]:
    axes = [o.axis for o in t.objectives]
    head = ["row", "architecture", "P", "d̄", "params (effective)", "pruning", *[f"{a[:4]}." for a in axes],
            "rank sum", "paper: arch", "params", *[f"{a[:4]}." for a in axes], "rank sum"]
    rows = []
    for _, r in t.rows.iterrows():
        pruning = r["pruning"] if isinstance(r["pruning"], str) and any(x not in "0/" for x in r["pruning"]) else "–"
        rows.append([r["row"], r["arch"] + ("" if r["in_study"] else " (not run)"), _fmt(r["P"]),
                     _fmt(r["mean_depth"], 3), _params(r["params"]), pruning,
                     *[_fmt(r[f"rank_{a}"]) for a in axes], _fmt(r["rank_sum"]), r["paper_arch"],
                     f"{r['paper_params_m']:.2f}M", *[_fmt(r[f"paper_rank_{a}"]) for a in axes],
                     _fmt(r["paper_rank_sum"])])
    return head, rows


def _finding(t: Table1) -> str:
    v, i = t.rank_sum("V"), t.rank_sum("I")
    paper = {r.row: r.rank_sum for r in PUBLISHED_TABLE1}
    if v is None or i is None:
        return "Row V or row I is missing from this study, so the remedy cannot be judged."
    verdict = "beats" if v < i else "does not beat"
    return (f"On our data the pruned ensemble (row V, rank sum {v:.0f}) {verdict} our best single cell (row I, "
            f"{i:.0f}); in the paper row V beats row I, {paper.get('V')} vs {paper.get('I')}. Ranks are among "
            f"{t.n_reference} single cells (ties: min rank).")


def _search_sentence(s: Mapping[str, Any]) -> str:
    best, row_i = s.get("best"), s.get("row_I") or {}
    cv = s.get("cv") or {}
    text = (f"Members: the top cells of each axis ({', '.join(s.get('members', []))}); {s.get('n_candidates')} of "
            f"{s.get('n_combinations')} ensembles are within the budget of {_params(s.get('budget'))} parameters "
            f"({s.get('budget_rule')}"
            + (f"; {s['n_dead_edge_duplicates']} more differ from one of them only in dead edges and were dropped"
               if s.get("n_dead_edge_duplicates") else "")
            + (f"; {s['n_measured']} measured at initialization" if s.get("n_measured") else "")
            + f"); {len(s.get('trained') or [])} trained.")
    if cv.get("tau_rank_sum") is not None:
        text += (f" 5-fold cross-validation of the predictor over the study's {cv['n']} ensembles: Kendall τ between "
                 f"predicted and trained rank sum {cv['tau_rank_sum']:+.2f}.")
    if s.get("tau_trained") is not None:
        text += f" Over the trained candidates: τ {s['tau_trained']:+.2f}."
    if best:
        better = "better than" if best["rank_sum"] < row_i.get("rank_sum", math.inf) else "not better than"
        text += (f" Best found: {best['arch']} with rank sum {best['rank_sum']:.0f} and {_params(best['params'])} "
                 f"parameters, {better} row I ({row_i.get('arch')}, {row_i.get('rank_sum', math.nan):.0f}, "
                 f"{_params(row_i.get('params'))} parameters).")
    study_best = s.get("study_best") or s.get("best_study_ensemble")
    if study_best:
        text += (f" Best ensemble the study itself trained: {study_best['arch']} (rank sum "
                 f"{study_best['rank_sum']:.0f}, {_params(study_best['params'])} parameters).")
    return text


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]], table_id: str, left: int = 2) -> str:
    h = "".join(f"<th class='{'t' if i < left else ''}'>{_e(c)}</th>" for i, c in enumerate(head))
    b = "".join("<tr>" + "".join(f"<td class='{'t' if i < left else ''}'>{_e(c)}</td>" for i, c in enumerate(r))
                + "</tr>" for r in rows)
    return f"<table id='{_e(table_id)}'><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


def _grid_rows(data: RemedyData) -> tuple[list[str], list[list[str]]]:
    head = ["members", "points", "τ(ratio, rank sum) ours", "paper", "p", "best point", "rank sum", "params"]
    rows = []
    for g in data.grids:
        best = g.best
        for k, (member, (tau, p)) in enumerate(g.taus.items()):
            rows.append([" + ".join(g.members) if k == 0 else "", str(len(g.points)) if k == 0 else "",
                         f"{member}: {tau:+.2f}" if math.isfinite(tau) else f"{member}: –",
                         f"{g.published[member]:+.2f}" if member in g.published else "–", _fmt(p, 2),
                         best["arch"] if k == 0 else "", _fmt(best["rank_sum"]) if k == 0 else "",
                         _params(best["params"]) if k == 0 else ""])
    return head, rows


def _search_rows(s: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["ensemble", "params", "predicted expr.", "conv.", "gen.", "predicted sum", "trained expr.", "conv.",
            "gen.", "rank sum"]
    rows = []
    for r in s.get("trained") or []:
        rows.append([r["arch"], _params(r.get("params")), *[_fmt(r.get(f"pred_rank_{a}"), 3) for a in AXES],
                     _fmt(r.get("pred_rank_sum"), 3), *[_fmt(r.get(f"rank_{a}")) for a in AXES], _fmt(r.get("rank_sum"))])
    return head, rows


def _fig8_rows(t: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    head = ["axis", "versus", "τ best LR (archs) [95% CI]", "τ best LR (groups)", "τ default LR (archs)",
            "τ default LR (groups)", "paper Fig. 8"]
    rows = []
    for _, r in t.iterrows():
        ci = (f" [{r['tau_arch_low']:+.2f}, {r['tau_arch_high']:+.2f}]"
              if r["tau_arch_low"] is not None and math.isfinite(_f(r["tau_arch_low"])) else "")
        rows.append([r["axis"], r["versus"], f"{_f(r['tau_arch']):+.2f}{ci}", f"{_f(r['tau_group']):+.2f}",
                     f"{_f(r['default_tau_arch']):+.2f}", f"{_f(r['default_tau_group']):+.2f}",
                     f"{_f(r['paper']):+.2f}" if math.isfinite(_f(r["paper"])) else "–"])
    return head, rows


def _f(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def remedy_html(data: RemedyData) -> str:
    """The remedy sections as HTML (empty string when there is nothing to show)."""
    if data.empty:
        return ""
    parts = ["<section id='remedy'><h2>The remedy: ensembles and random pruning (Table 1, Fig. 7)</h2>"]
    if data.table1 is not None:
        head, rows = _table1_rows(data.table1)
        parts.append(f"<p id='remedy-finding'><b>{_e(_finding(data.table1))}</b></p>")
        parts.append(_html_table(head, rows, "table1"))
        parts.append("<p class='muted'>Left: our ranks (1 = best) among the single cells on each axis's ground truth; "
                     "params are effective counts (pruned weights removed). Right: the paper's Table 1 (Tiny-ImageNet, "
                     "m = 256, ranks out of the trainable cells).</p>")
        parts += [f"<p class='muted'>{_e(n)}</p>" for n in data.table1.notes]
    if data.grids:
        head, rows = _grid_rows(data)
        parts.append("<h3>Pruning grid (Fig. 7)</h3>" + _html_table(head, rows, "grid-table", left=1))
    if len(data.placed):
        cols = [c for c in ("arch", "rank_sum", *[f"rank_{a}" for a in AXES], "effective_params") if c in data.placed]
        rows = [[_fmt(r[c]) if c != "effective_params" else _params(r[c]) for c in cols]
                for _, r in data.placed.head(40).iterrows()]
        parts.append(f"<details><summary>All {len(data.placed)} ensembles and pruned cells, ranked among the "
                     f"{data.n_reference} single cells</summary>" + _html_table(cols, rows, "placed-table", left=1)
                     + "</details>")
    parts.append("</section>")
    if data.search is not None or data.search_error is not None:
        parts.append("<section id='search'><h2>Beyond the paper: a search for the remedy</h2>")
        if data.search is None:
            parts.append(f"<p class='bad'>The ensemble search failed: {_e(data.search_error)}</p>")
        else:
            parts.append(f"<p id='search-summary'>{_e(_search_sentence(data.search))}</p>")
            head, rows = _search_rows(data.search)
            parts.append(_html_table(head, rows, "search-table", left=1))
        parts.append("</section>")
    if data.best_lr is not None:
        head, rows = _fig8_rows(data.best_lr)
        parts.append("<section id='best-lr'><h2>Each architecture at its best learning rate (Fig. 8)</h2>"
                     f"<p class='muted'>Rule: {_e(data.lr_rule)}. The chosen rates are in <code>lrs.txt</code> beside "
                     "this page.</p>" + _html_table(head, rows, "fig8-table") + "</section>")
    if data.convergence is not None:
        parts.append(f"<section id='convergence-rate'><h2>Theorem 4.3, checked</h2><p>{_e(data.convergence.sentence())}"
                     "</p></section>")
    return "".join(parts)


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cell(x: str) -> str:
        return str(x).replace("|", "\\|")

    return ["| " + " | ".join(map(cell, head)) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(map(cell, r)) + " |" for r in rows], ""]


def remedy_markdown(data: RemedyData) -> list[str]:
    """The remedy sections as Markdown lines."""
    if data.empty:
        return []
    out: list[str] = []
    if data.table1 is not None:
        out += ["## Table 1: ensembles and random pruning (ours | the paper's)", "", _finding(data.table1), ""]
        out += _md_table(*_table1_rows(data.table1))
        out += [f"- {n}" for n in data.table1.notes] + ([""] if data.table1.notes else [])
    if data.grids:
        out += ["## Pruning grid (Fig. 7)", ""] + _md_table(*_grid_rows(data))
    if data.search is not None:
        out += ["## Ensemble search", "", _search_sentence(data.search), ""] + _md_table(*_search_rows(data.search))
    elif data.search_error is not None:
        out += ["## Ensemble search", "", f"failed: {data.search_error}", ""]
    if data.best_lr is not None:
        out += ["## Best learning rate per architecture (Fig. 8)", "", f"Rule: {data.lr_rule}; rates in lrs.txt.", ""]
        out += _md_table(*_fig8_rows(data.best_lr))
    if data.convergence is not None:
        out += ["## Theorem 4.3, checked", "", data.convergence.sentence(), ""]
    return out

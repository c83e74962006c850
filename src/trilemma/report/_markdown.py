"""Render :class:`ReportData` as a short Markdown summary (terminals, READMEs)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

from trilemma.analysis import published_columns
from trilemma.report._data import ReportData
from trilemma.report._figdata import metric_label
from trilemma.report._html import format_value

__all__ = ["render_markdown"]


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    align = align or "l" * len(header)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _tau(value: float, low: float, high: float) -> str:
    if not math.isfinite(value):
        return "–"
    if math.isfinite(low) and math.isfinite(high):
        return f"{value:+.2f} [{low:+.2f}, {high:+.2f}]"
    return f"{value:+.2f}"


def _paper(value: float) -> str:
    return f"{value:+.2f}" if math.isfinite(value) else "–"


def _flat(mapping: Mapping[str, object], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and len(v) <= 30:
            out += _flat(v, key + ".")
        elif isinstance(v, (list, tuple)):
            out.append((key, ", ".join(map(str, v)) if len(v) <= 40 else json.dumps(list(v), default=str)[:200] + " …"))
        else:
            text = format_value(v)
            out.append((key, text if len(text) <= 200 else text[:200] + " …"))
    return out


def render_markdown(data: ReportData, figure_files: Mapping[str, str] | None = None, top: int = 10) -> str:
    """The summary: verdict, winners, τ against topology beside the paper, top ranks, what was run.

    Args:
        data: The report data.
        figure_files: ``{title: relative path}`` of figures to list (PNG).
        top: Rows of the rank table to show.
    """
    v = data.verdict
    axes = [a.axis for a in v.axes]
    out = [f"# {data.title}", "", f"**Verdict.** {v.headline()}", ""]
    rows = []
    for a in v.axes:
        cells = []
        for b in axes:
            s = v.standing(a.champion, b)
            gap = "" if s.rank == 1 or s.relative_gap is None else f" (+{s.relative_gap:.0%})"
            cells.append(f"{format_value(s.rank)}/{s.n}{gap}")
        tied = f" (+{len(a.winners) - 1} tied)" if len(a.winners) > 1 else ""
        rows.append([a.axis, f"{metric_label(a.column)} ({'higher' if a.higher_is_better else 'lower'} is better)",
                     f"`{a.champion}`{tied}", format_value(a.best_value), *cells])
    out += [_table(["axis", "ground truth", "winner", "best", *[f"rank on {b}" for b in axes]], rows,
                   "lllr" + "r" * len(axes)), ""]
    out += [f"Pareto front: {len(v.pareto_front)} of {v.n_architectures} architectures"
            + (f" ({', '.join(v.pareto_front[:12])}{' …' if len(v.pareto_front) > 12 else ''})." if v.pareto_front else "."),
            ""]
    h = data.headline
    papers = [c for c in published_columns() if c in h.columns]
    if len(h):
        out += ["## Each axis against topology (Kendall τ, 95% bootstrap CI)", ""]
        rows = []
        for _, r in h.iterrows():
            rows.append([r["axis"], f"{metric_label(r['quantity'])} ({r['kind']})", metric_label(r["versus"]),
                         _tau(r["tau_arch"], r["tau_arch_low"], r["tau_arch_high"]),
                         _tau(r["tau_group"], r["tau_group_low"], r["tau_group_high"]),
                         *[_paper(r[p]) for p in papers]])
        out += [_table(["axis", "quantity", "versus", "τ architectures", "τ groups", *papers], rows,
                       "lllrr" + "r" * len(papers)), ""]
    ranks = data.ranks.head(top)
    if len(ranks):
        out += [f"## Best {len(ranks)} rank sums (rank 1 = best, ties: {v.rank_method})", ""]
        cols = list(ranks.columns)
        out += [_table([metric_label(c) for c in cols], [[format_value(r[c]) for c in cols] for _, r in ranks.iterrows()],
                       "l" + "r" * (len(cols) - 1)), ""]
    if data.notes:
        out += ["## Notes", "", *[f"- {n}" for n in data.notes], ""]
    if figure_files:
        out += ["## Figures", "", *[f"- [{t}]({p})" for t, p in figure_files.items()], ""]
    out += ["## What was run", ""]
    pairs = _flat(data.metadata) if data.metadata else [("metadata", "none given")]
    pairs += _flat({k: v for k, v in data.settings.items()}, "analysis.")
    out += [_table(["key", "value"], pairs), ""]
    return "\n".join(out)

"""Render :class:`ReportData` as a short Markdown summary (terminals, READMEs)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence

from trilemma.analysis import Verdict, published_columns
from trilemma.report._data import ReportData
from trilemma.report._html import format_value
from trilemma.report._remedy import remedy_markdown

__all__ = ["render_markdown"]


#: Characters that can start markup inside a line: emphasis, code, links/images, tables, strike.
#: (``<``/``>``/``&`` become HTML entities; ``#``, ``-``, ``+`` only matter at a line start, where
#: the renderer never puts user text.)
_MD_SPECIAL = set("\\`*_[]|~")


def _md(text: object) -> str:
    """``text`` as literal Markdown: HTML (``<``, ``&``) as entities and every character that
    can start inline markup backslash-escaped, newlines as spaces. Names and config text come
    from a study's store, which may come from anyone."""
    plain = html.escape(" ".join(str(text).split()), quote=False)
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in plain)


def _cell(text: object) -> str:
    return _md(text)


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
    out = [f"# {_md(data.title)}", ""]
    out += _trends(data)
    if v is None:
        out += ["**Verdict.** No verdict: no axis has a trained ground truth in this study.", ""]
    else:
        out += [f"**Verdict.** {_md(v.headline())}", ""]
        out += _winners(data, v)
    if data.missing_axes:
        out += ["Axes without a trained ground truth:", "",
                *[f"- {_md(axis)}: {_md(why)}" for axis, why in data.missing_axes.items()], ""]
    if data.remedy is not None:
        out += remedy_markdown(data.remedy)
    out += _rest(data, figure_files, top)
    return "\n".join(out)


def _winners(data: ReportData, v: Verdict) -> list[str]:
    axes = [a.axis for a in v.axes]
    out: list[str] = []
    rows = []
    for a in v.axes:
        cells = []
        for b in axes:
            s = v.standing(a.champion, b)
            gap = "" if s.rank == 1 or s.relative_gap is None else f" (+{s.relative_gap:.0%})"
            cells.append(f"{format_value(s.rank)}/{s.n}{gap}")
        tied = f" (+{len(a.winners) - 1} tied)" if len(a.winners) > 1 else ""
        rows.append([a.axis, f"{data.label(a.column)} ({'higher' if a.higher_is_better else 'lower'} is better)",
                     a.champion + tied, format_value(a.best_value), *cells])
    out += [_table(["axis", "ground truth", "winner", "best", *[f"rank on {b}" for b in axes]], rows,
                   "lllr" + "r" * len(axes)), ""]
    out += [f"Pareto front: {len(v.pareto_front)} of {v.n_architectures} architectures"
            + (f" ({', '.join(_md(a) for a in v.pareto_front[:12])}{' …' if len(v.pareto_front) > 12 else ''})."
               if v.pareto_front else "."),
            ""]
    return out


_SIGN_MARKS = {"agree": "✓", "disagree": "✗", "near zero": "·"}


def _paper_mark(r: Mapping[str, object], p: str) -> str:
    value = r[p]
    if not isinstance(value, float) or not math.isfinite(value):
        return "–"
    suffix = p[len("paper"):]
    marks = "".join(_SIGN_MARKS.get(str(r.get(k, "")), "") for k in (f"sign{suffix}", f"sign_arch{suffix}"))
    return f"{value:+.2f} {marks}".strip()


def _trends(data: ReportData) -> list[str]:
    """The first section: each axis against topology beside every published value, signs marked."""
    h = data.headline
    if not len(h):
        return []
    papers = [c for c in published_columns() if c in h.columns]
    out = ["## The paper's trends: each axis against topology (Kendall τ, 95% bootstrap CI)", ""]
    if data.signs is not None:
        out += [_md(data.signs.sentence()), ""]
    seeds = data.metadata.get("seeds")
    if isinstance(seeds, (list, tuple)) and seeds:
        out += [f"Trained metrics are means over {len(seeds)} seed(s) per architecture. Marks after a published "
                "value: our τ over groups, then over architectures: ✓ same sign, ✗ opposite sign, · published "
                "|τ| < 0.3 (not counted).", ""]
    rows = []
    for _, r in h.iterrows():
        rows.append([r["axis"], f"{data.label(r['quantity'])} ({data.kind_text(r['quantity'], r['kind'])})", data.label(r["versus"]),
                     _tau(r["tau_arch"], r["tau_arch_low"], r["tau_arch_high"]),
                     _tau(r["tau_group"], r["tau_group_low"], r["tau_group_high"]),
                     *[_paper_mark(r, p) for p in papers]])
    out += [_table(["axis", "quantity", "versus", "τ architectures", "τ groups",
                    *[p.replace("paper:", "paper ") for p in papers]], rows, "lllrr" + "r" * len(papers)), ""]
    return out


def _rest(data: ReportData, figure_files: Mapping[str, str] | None, top: int) -> list[str]:
    out: list[str] = []
    ranks = data.ranks.head(top)
    if len(ranks) and data.verdict is not None:
        out += [f"## Best {len(ranks)} rank sums (rank 1 = best, ties: {data.verdict.rank_method})", ""]
        cols = list(ranks.columns)
        out += [_table([data.label(c) for c in cols], [[format_value(r[c]) for c in cols] for _, r in ranks.iterrows()],
                       "l" + "r" * (len(cols) - 1)), ""]
    if data.notes:
        out += ["## Notes", "", *[f"- {_md(n)}" for n in data.notes], ""]
    if figure_files:
        out += ["## Figures", "", *[f"- [{_md(t)}](<{_md(p)}>)" for t, p in figure_files.items()], ""]
    out += ["## What was run", ""]
    pairs = _flat(data.metadata) if data.metadata else [("metadata", "none given")]
    pairs += _flat({k: v for k, v in data.settings.items()}, "analysis.")
    out += [_table(["key", "value"], pairs), ""]
    return out

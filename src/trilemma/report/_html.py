"""Render :class:`ReportData` as one self-contained HTML page.

Everything is inline: figures as ``data:`` URIs, the style sheet and a small vanilla-JS
script (sorting and filtering of the architecture table). A Content-Security-Policy forbids
any network load, so the page behaves the same offline.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trilemma._outputs import GENERATOR_MARK
from trilemma.analysis import AXES, published_columns
from trilemma.report._data import ReportData
from trilemma.report._remedy import remedy_html

__all__ = ["EmbeddedFigure", "render_html", "format_value"]


@dataclass(frozen=True)
class EmbeddedFigure:
    """A figure to embed: its id, title, caption, MIME type and bytes."""

    name: str
    title: str
    caption: str
    mime: str
    payload: bytes

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.payload).decode('ascii')}"


def format_value(value: object, digits: int = 4) -> str:
    """Human formatting of a table cell: 4 significant digits, ``–`` for missing."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            return "–"
        if float(value).is_integer() and abs(float(value)) < 1e9:
            return str(int(value))
        return f"{float(value):.{digits}g}"
    return str(value)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _sort_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value)) if math.isfinite(float(value)) else ""
    return str(value)


def _tau(value: float, low: float, high: float) -> str:
    if not math.isfinite(value):
        return "–"
    text = f"{value:+.2f}"
    if math.isfinite(low) and math.isfinite(high):
        text += f" <span class='ci'>[{low:+.2f}, {high:+.2f}]</span>"
    return text


def _paper(value: float) -> str:
    return f"{value:+.2f}" if math.isfinite(value) else "–"


_MARKS = {"agree": ("✓", "good", "same sign as published"), "disagree": ("✗", "bad", "opposite sign"),
          "near zero": ("·", "ci", "published |τ| < 0.3: not counted")}


def _paper_cell(value: float, group_mark: str, arch_mark: str) -> str:
    if not math.isfinite(value):
        return "<td>–</td>"
    marks = ""
    for level, mark in (("groups", group_mark), ("architectures", arch_mark)):
        if mark in _MARKS:
            sym, cls, title = _MARKS[mark]
            marks += f" <span class='{cls}' title='{_e(title)} (our τ over {level})'>{sym}</span>"
    return f"<td>{value:+.2f}{marks}</td>"


_CSS = """
:root { --fg:#1d2430; --muted:#5b6575; --line:#d8dde6; --bg:#ffffff; --panel:#f5f7fa; --good:#1a7f37; --bad:#b42318; --accent:#2456a6; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; color:var(--fg); background:var(--bg); }
header, main, footer { max-width: 1280px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 20px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 32px 0 10px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
.sub, .muted, figcaption, .ci { color: var(--muted); }
.ci { font-size: 12px; }
nav { margin: 10px 0 0; display:flex; flex-wrap:wrap; gap: 4px 14px; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; }
.verdict { border-radius: 10px; padding: 14px 18px; margin-top: 18px; border: 1px solid var(--line); background: var(--panel); }
.verdict.nfl { border-left: 6px solid var(--bad); }
.verdict.win { border-left: 6px solid var(--good); }
.verdict.single { border-left: 6px solid var(--muted); }
.verdict h2 { margin-top: 0; }
.verdict .headline { font-size: 19px; font-weight: 600; margin: 4px 0 10px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: var(--panel); font-weight: 600; position: sticky; top: 0; white-space: normal; vertical-align: bottom; }
section > table { display: block; overflow-x: auto; max-width: 100%; }
td.t, th.t { text-align: left; }
td.good { color: var(--good); } td.bad { color: var(--bad); }
.notes li { color: var(--muted); }
.figs { display: grid; grid-template-columns: 1fr; gap: 22px; }
figure { margin: 0; padding: 10px; border: 1px solid var(--line); border-radius: 8px; background: #fff; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: 13px; margin-top: 6px; }
.controls { display:flex; gap: 16px; align-items:center; margin: 8px 0; flex-wrap: wrap; }
.controls input[type=search] { width: 360px; max-width: 100%; padding: 5px 8px; border: 1px solid var(--line); border-radius: 6px; font-size: 14px; }
.scroll { max-height: 640px; overflow: auto; border: 1px solid var(--line); border-radius: 6px; }
#arch-table th { cursor: pointer; user-select: none; }
#arch-table th[aria-sort=ascending]::after { content: " ▲"; }
#arch-table th[aria-sort=descending]::after { content: " ▼"; }
#arch-table tr.pareto td:first-child { font-weight: 600; }
pre { background: var(--panel); padding: 8px 10px; border-radius: 6px; overflow:auto; font-size: 12px; }
dl.kv { display:grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; }
dl.kv dt { font-weight: 600; } dl.kv dd { margin: 0; }
footer { color: var(--muted); font-size: 12px; padding: 30px 24px; }
"""

_JS = r"""
(function () {
  "use strict";
  var table = document.getElementById("arch-table");
  if (!table) { return; }
  var tbody = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var rows = Array.prototype.slice.call(tbody.rows);
  var filter = document.getElementById("arch-filter");
  var paretoOnly = document.getElementById("pareto-only");
  var count = document.getElementById("row-count");
  var state = { col: -1, asc: true };
  var names = headers.map(function (th) { return th.getAttribute("data-col"); });

  function cellValue(row, i) {
    var v = row.cells[i].getAttribute("data-value");
    return v === null ? row.cells[i].textContent : v;
  }
  function compare(a, b) {
    if (a === "" && b === "") { return 0; }
    if (a === "") { return 1; }          // missing values always last
    if (b === "") { return -1; }
    var x = Number(a), y = Number(b);
    if (!isNaN(x) && !isNaN(y)) { return state.asc ? x - y : y - x; }
    return state.asc ? a.localeCompare(b) : b.localeCompare(a);
  }
  function sortBy(i) {
    state.asc = state.col === i ? !state.asc : true;
    state.col = i;
    var keyed = rows.map(function (r, k) { return [cellValue(r, i), k, r]; });
    keyed.sort(function (p, q) { return compare(p[0], q[0]) || p[1] - q[1]; });
    rows = keyed.map(function (p) { return p[2]; });
    rows.forEach(function (r) { tbody.appendChild(r); });
    headers.forEach(function (th, k) {
      if (k === i) { th.setAttribute("aria-sort", state.asc ? "ascending" : "descending"); }
      else { th.removeAttribute("aria-sort"); }
    });
  }
  var OPS = /^([A-Za-z_][\w:.]*)(<=|>=|!=|=|<|>)(.+)$/;
  function test(row, token) {
    var m = OPS.exec(token);
    if (m) {
      var i = names.indexOf(m[1]);
      if (i < 0) { return false; }
      var v = cellValue(row, i), w = m[3];
      var x = Number(v), y = Number(w), num = v !== "" && !isNaN(x) && !isNaN(y);
      switch (m[2]) {
        case "=": return num ? x === y : v === w;
        case "!=": return num ? x !== y : v !== w;
        case "<": return num && x < y;
        case ">": return num && x > y;
        case "<=": return num && x <= y;
        case ">=": return num && x >= y;
      }
    }
    return row.textContent.toLowerCase().indexOf(token.toLowerCase()) >= 0;
  }
  function applyFilter() {
    var tokens = filter.value.trim().split(/\s+/).filter(function (t) { return t.length > 0; });
    var shown = 0;
    rows.forEach(function (r) {
      var ok = (!paretoOnly.checked || r.classList.contains("pareto")) &&
               tokens.every(function (t) { return test(r, t); });
      r.hidden = !ok;
      if (ok) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + " architectures";
  }
  headers.forEach(function (th, i) {
    th.addEventListener("click", function () { sortBy(i); });
    th.title = "click to sort";
  });
  filter.addEventListener("input", applyFilter);
  paretoOnly.addEventListener("change", applyFilter);
  applyFilter();
})();
"""


def _direction_text(hib: bool) -> str:
    return "higher is better" if hib else "lower is better"


def _missing_axes(data: ReportData) -> str:
    if not data.missing_axes:
        return ""
    items = "".join(f"<li><b>{_e(axis)}</b>: {_e(why)}</li>" for axis, why in data.missing_axes.items())
    return f"<p><b>Axes without a trained ground truth:</b></p><ul id='missing-axes'>{items}</ul>"


def _verdict_section(data: ReportData) -> str:
    v = data.verdict
    notes = "".join(f"<li>{_e(n)}</li>" for n in data.notes)
    if v is None:
        return (
            "<section id='verdict' class='verdict'><h2>Verdict</h2>"
            "<p class='headline' id='verdict-headline'>No verdict: the verdict ranks architectures on their trained "
            "ground truth, and this study has none on any axis. Everything else below (theory and measures at "
            "initialization against the topology) is shown.</p>"
            + _missing_axes(data) + (f"<ul class='notes'>{notes}</ul>" if notes else "") + "</section>"
        )
    cls = ("win" if v.one_wins_all else "nfl") if v.judged else "single"
    axes = [a.axis for a in v.axes]
    head = "".join(f"<th>{_e(a)} rank <span class='ci'>(gap)</span></th>" for a in axes)
    rows = []
    for a in v.axes:
        cells = []
        for b in axes:
            s = v.standing(a.champion, b)
            gap = "" if s.rank == 1 else (
                f" <span class='ci'>(+{s.relative_gap:.0%})</span>" if s.relative_gap is not None
                else f" <span class='ci'>({s.range_fraction:.0%} of range)</span>")
            cells.append(f"<td>{format_value(s.rank)}/{s.n}{gap}</td>")
        tied = f" <span class='ci'>(+{len(a.winners) - 1} tied)</span>" if len(a.winners) > 1 else ""
        rows.append(
            f"<tr><td class='t'>{_e(a.axis)}</td><td class='t'>{_e(data.label(a.column))} "
            f"<span class='ci'>({_e(_direction_text(a.higher_is_better))})</span></td>"
            f"<td class='t'><code>{_e(a.champion)}</code>{tied}</td><td>{format_value(a.best_value)}</td>"
            + "".join(cells) + "</tr>"
        )
    front = v.pareto_front
    shown = ", ".join(f"<code>{_e(a)}</code>" for a in front[:24]) + (" …" if len(front) > 24 else "")
    return (
        f"<section id='verdict' class='verdict {cls}'><h2>Verdict</h2>"
        f"<p class='headline' id='verdict-headline'>{_e(v.headline())}</p>"
        "<table id='winners-table'><thead><tr><th class='t'>axis</th><th class='t'>ground truth</th>"
        f"<th class='t'>winner</th><th>best value</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "<p class='muted'>Each row: the best architecture on one axis (ties broken by the rank sum on the others) "
        "and its rank on every axis; in brackets its gap to that axis's best value, relative to the best value.</p>"
        f"<p><b>Pareto front</b> over the {len(v.axes)} ranked axes: {len(front)} of {v.n_architectures} "
        f"architectures: {shown}</p>"
        + _missing_axes(data)
        + (f"<ul class='notes'>{notes}</ul>" if notes else "")
        + "</section>"
    )


def _headline_section(data: ReportData) -> str:
    h = data.headline
    papers = [c for c in published_columns() if c in h.columns]
    head = ("<tr><th class='t'>axis</th><th class='t'>quantity</th><th class='t'>versus</th>"
            "<th>τ over architectures [95% CI]</th><th>τ over (P, d̄) groups [95% CI]</th>"
            + "".join(f"<th>{_e(_paper_head(p))}</th>" for p in papers) + "</tr>")
    rows = []
    for _, rd in h.iterrows():
        rows.append(
            f"<tr><td class='t'>{_e(rd['axis'])}</td><td class='t'>{_e(data.label(rd['quantity']))} "
            f"<span class='ci'>({_e(data.kind_text(rd['quantity'], rd['kind']))})</span></td><td class='t'>{_e(data.label(rd['versus']))}</td>"
            f"<td>{_tau(rd['tau_arch'], rd['tau_arch_low'], rd['tau_arch_high'])} <span class='ci'>n={rd['n_arch']}</span></td>"
            f"<td>{_tau(rd['tau_group'], rd['tau_group_low'], rd['tau_group_high'])} <span class='ci'>n={rd['n_group']}</span></td>"
            + "".join(_paper_cell(rd[p], rd.get(f"sign{p[len('paper'):]}", ""),
                                  rd.get(f"sign_arch{p[len('paper'):]}", "")) for p in papers)
            + "</tr>"
        )
    seeds = data.metadata.get("seeds")
    seeds_text = f" Trained metrics are means over {len(seeds)} seed(s) per architecture." \
        if isinstance(seeds, (list, tuple)) and seeds else ""
    summary = f"<p id='sign-summary'><b>{_e(data.signs.sentence())}</b></p>" if data.signs is not None else ""
    return (
        "<section id='topology'><h2>The paper's trends: each axis against topology (Kendall τ)</h2>"
        + summary +
        "<p class='muted'>Raw τ between the columns (no re-orientation; the trained metrics are losses, epochs "
        "and gaps where lower is better). Published values: Chen, Huang &amp; Wang, AutoML-Conf 2023 "
        "(729 cells, m = 256; Fig. 3 Tiny-ImageNet, Fig. 4 at initialization, Fig. 5 CIFAR-10/100, Fig. 8 at "
        "each architecture's best learning rate), shown beside both of our levels (the paper plots group means). "
        "✓ / ✗: our τ over groups and over architectures has the published sign or not; · : the published "
        f"|τ| is below 0.3, too close to zero for its sign to count.{_e(seeds_text)}</p>"
        f"<table id='headline-table'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _oriented_cell(r: pd.Series | None) -> str:
    if r is None:
        return "<td>–</td><td>–</td>"
    if r["note"]:
        return f"<td class='t' colspan='2'><span class='ci'>undefined: {_e(r['note'])}</span></td>"
    value = _tau(r["value"], r["ci_low"], r["ci_high"])
    if not math.isfinite(r["oriented"]):
        return f"<td>{value}</td><td>–</td>"
    cls = "good" if r["oriented"] > 0 else "bad"
    return f"<td>{value}</td><td class='{cls}'>{r['oriented']:+.2f}</td>"


def _agreement_section(data: ReportData) -> str:
    ag = data.agreement
    papers = [c for c in published_columns() if c in ag.columns]
    levels = [lv for lv in ("architecture", "group") if (ag["level"] == lv).any()]
    parts = ["<section id='agreement'><h2>Agreement: topology, theory, measures at init, trained</h2>"
             "<p class='muted'>Every pair of columns of different kinds, per axis: τ with its 95% bootstrap interval, "
             "over architectures and over (P, d̄) group means. <b>oriented</b> = τ × sign, where sign is +1 when both "
             "columns have the same direction (higher-is-better) on the axis: positive (green) means the cheaper "
             "quantity ranks networks the way the other one does, negative (red) that it contradicts it.</p>"]
    for axis in AXES:
        sub = ag[ag["axis"] == axis]
        if sub.empty:
            continue
        rows = []
        for (x, y, method), g in sub.groupby(["x", "y", "method"], sort=False):
            first = g.iloc[0]
            cells = "".join(_oriented_cell(g[g["level"] == lv].iloc[0] if (g["level"] == lv).any() else None)
                            for lv in levels)
            rows.append(
                f"<tr><td class='t'>{_e(data.label(x))} <span class='ci'>({_e(data.kind_text(x, first['x_kind']))})</span></td>"
                f"<td class='t'>{_e(data.label(y))} <span class='ci'>({_e(data.kind_text(y, first['y_kind']))})</span></td>"
                f"<td class='t'>{_e(method)}</td>{cells}"
                + "".join(f"<td>{_paper(first[p])}</td>" for p in papers) + "</tr>"
            )
        level_heads = "".join(f"<th>τ {_e(lv)}s [95% CI]</th><th>oriented</th>" for lv in levels)
        parts.append(
            f"<h3>{_e(axis)}</h3><table class='agreement' data-axis='{_e(axis)}'><thead><tr>"
            f"<th class='t'>x</th><th class='t'>y</th><th class='t'>method</th>{level_heads}"
            + "".join(f"<th>{_e(_paper_head(p))}</th>" for p in papers)
            + f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    parts.append("</section>")
    return "".join(parts)


def _paper_head(column: str) -> str:
    return "paper (dataset not stated)" if column == "paper" else column.replace("paper:", "paper, ")


def _ranks_section(data: ReportData, top: int = 15) -> str:
    if data.verdict is None:
        return ("<section id='ranks'><h2>Ranks on the three axes (Table 1 style)</h2>"
                "<p class='muted'>No ranks: no axis has a trained ground truth in this study.</p></section>")
    ranks = data.ranks
    champions = {a.champion for a in data.verdict.axes}
    sel = ranks[(ranks.index < top) | ranks["arch"].astype(str).isin(champions)] if "arch" in ranks else ranks.head(top)
    cols = list(ranks.columns)
    head = "".join(f"<th class='{'t' if c == cols[0] else ''}'>{_e(data.label(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(
            f"<td class='{'t' if c == cols[0] else ''}'>{_e(format_value(r[c]))}</td>" for c in cols) + "</tr>"
        for _, r in sel.iterrows()
    )
    return (
        "<section id='ranks'><h2>Ranks on the three axes (Table 1 style)</h2>"
        f"<p class='muted'>Rank 1 = best; ties share the best rank of their block (method "
        f"“{_e(data.verdict.rank_method)}”). The {top} best rank sums, plus the per-axis winners.</p>"
        f"<table id='rank-table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"
    )


def _figures_section(figures: Sequence[EmbeddedFigure]) -> str:
    items = "".join(
        f"<figure class='fig' id='fig-{_e(f.name)}' data-name='{_e(f.name)}'>"
        f"<img alt='{_e(f.title)}' src='{f.data_uri()}'><figcaption><b>{_e(f.title)}.</b> {_e(f.caption)}"
        "</figcaption></figure>"
        for f in figures
    )
    return f"<section id='figures'><h2>Figures</h2><div class='figs'>{items}</div></section>"


def _arch_section(data: ReportData) -> str:
    df = data.results
    cols = list(df.columns)
    head = "".join(f"<th data-col='{_e(c)}' class='{'t' if not pd.api.types.is_numeric_dtype(df[c]) else ''}'>"
                   f"{_e(c)}</th>" for c in cols)
    numeric = {c: pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in cols}
    lines = []
    for row in df.itertuples(index=False, name=None):
        cells = []
        for c, v in zip(cols, row):
            cls = "" if numeric[c] else " class='t'"
            cells.append(f"<td{cls} data-value='{_e(_sort_value(v))}'>{_e(format_value(v))}</td>")
        pareto = " class='pareto'" if "pareto" in df.columns and bool(row[cols.index("pareto")]) else ""
        lines.append(f"<tr{pareto}>{''.join(cells)}</tr>")
    return (
        "<section id='architectures'><h2>All architectures</h2>"
        "<div class='controls'><input id='arch-filter' type='search' placeholder='filter: text, or column&gt;value "
        "(e.g. 2_02  P&gt;=3  rank_sum&lt;200)' aria-label='filter rows'>"
        "<label><input type='checkbox' id='pareto-only'> Pareto front only</label><span id='row-count' class='muted'></span></div>"
        "<p class='muted'>Click a column header to sort (again to reverse). Seeds are averaged.</p>"
        f"<div class='scroll'><table id='arch-table'><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody>"
        "</table></div></section>"
    )


def _kv(mapping: Mapping[str, object]) -> str:
    items = []
    for k, v in mapping.items():
        if isinstance(v, Mapping):
            flat = all(not isinstance(x, (Mapping, list, tuple)) for x in v.values())
            inner = _kv(v) if flat and len(v) <= 30 else _collapsible(json.dumps(v, indent=1, default=str))
        elif isinstance(v, (list, tuple)):
            inner = _e(", ".join(map(str, v))) if len(v) <= 40 else f"<pre>{_e(json.dumps(list(v), default=str))}</pre>"
        elif isinstance(v, str) and "\n" in v:
            inner = _collapsible(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and (
                k.endswith(("_s", "seconds")) or "time" in k):
            inner = _e(_duration(float(v)))
        else:
            inner = _e(format_value(v))
        items.append(f"<dt>{_e(k)}</dt><dd>{inner}</dd>")
    return f"<dl class='kv'>{''.join(items)}</dl>"


def _collapsible(text: str, lines: int = 12) -> str:
    """``<pre>`` text, folded into a ``<details>`` element when longer than ``lines`` lines."""
    n = text.count("\n") + 1
    if n <= lines:
        return f"<pre>{_e(text)}</pre>"
    return f"<details><summary>show ({n} lines)</summary><pre>{_e(text)}</pre></details>"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {sec:.0f} s ({seconds:.0f} s)"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min ({seconds:.0f} s)"


def _run_section(data: ReportData) -> str:
    meta = _kv(data.metadata) if data.metadata else "<p class='muted'>No metadata was given to the report.</p>"
    settings = {k: v for k, v in data.settings.items()}
    settings["rows in"] = data.n_input_rows
    settings["architectures"] = len(data.results)
    return (
        "<section id='run'><h2>What was run</h2>"
        f"<h3>Study</h3>{meta}<h3>Analysis</h3>{_kv(settings)}</section>"
    )


def _trilemma_version(settings: Mapping[str, object]) -> str:
    versions = settings.get("versions")
    return str(versions.get("trilemma", "")) if isinstance(versions, Mapping) else ""


def render_html(data: ReportData, figures: Sequence[EmbeddedFigure]) -> str:
    """The report page (a complete HTML document as a string)."""
    v = data.verdict
    ranked = f"{v.n_architectures} architectures ranked on {', '.join(a.axis for a in v.axes)}" if v else \
        "no trained ground truth: not ranked"
    nav = "".join(f"<a href='#{i}'>{t}</a>" for i, t in (
        ("topology", "The paper's trends"), ("verdict", "Verdict"),
        *((("remedy", "Remedy (Table 1)"),) if data.remedy is not None and data.remedy.table1 is not None else ()),
        ("agreement", "Agreement"), ("ranks", "Ranks"),
        ("figures", "Figures"), ("architectures", "All architectures"), ("run", "What was run")))
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
    sub = f"{ranked}; {len(figures)} figures"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>" + GENERATOR_MARK
        + f"<meta http-equiv='Content-Security-Policy' content=\"{csp}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(data.title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(data.title)}</h1><p class='sub'>{_e(sub)}</p><nav>{nav}</nav></header><main>"
        + _headline_section(data) + _verdict_section(data)
        + (remedy_html(data.remedy) if data.remedy is not None else "")
        + _agreement_section(data) + _ranks_section(data)
        + _figures_section(figures) + _arch_section(data) + _run_section(data)
        + "</main><footer>Generated by trilemma "
        + _e(_trilemma_version(data.settings))
        + ". Theory and protocol: Chen, Huang &amp; Wang, AutoML-Conf 2023; Chen et al., NeurIPS 2022.</footer>"
        f"<script>{_JS}</script></body></html>\n"
    )

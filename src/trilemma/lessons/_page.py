"""``index.html`` of a set of lessons: one self-contained page, readable offline.

Every figure is inline (a ``data:`` URI of its PNG), the style sheet is inline and the page
has no script; a Content-Security-Policy forbids any network load, so the page looks the
same without a network (the same approach as the study report). For each lesson the page
shows its claim, whether this run's numbers support it, every check with pass/fail and the
numbers behind it, the headline numbers, the figures, the notes, the parameters and the
command that re-runs it.
"""

from __future__ import annotations

import base64
import html
import math
import platform
from collections.abc import Mapping, Sequence
from typing import Any

from trilemma._outputs import GENERATOR_MARK
from trilemma.lessons._results import LessonResult

__all__ = ["render_index"]

_CSS = """
:root { --fg:#1d2430; --muted:#5b6575; --line:#d8dde6; --bg:#ffffff; --panel:#f5f7fa; --good:#1a7f37; --bad:#b42318; --accent:#2456a6; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; color:var(--fg); background:var(--bg); }
header, main, footer { max-width: 1280px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 20px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 0 0 6px; }
h3 { font-size: 16px; margin: 16px 0 6px; }
.sub, .muted, figcaption { color: var(--muted); }
a { color: var(--accent); }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
td.num { text-align: right; white-space: nowrap; }
.badge { display: inline-block; border-radius: 10px; padding: 0 9px; font-size: 12px; font-weight: 600; color: #fff; white-space: nowrap; }
.badge.pass { background: var(--good); } .badge.fail { background: var(--bad); }
tr.fail td { background: #fdf1f0; }
section.lesson { border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px; margin: 22px 0; background: #fff; }
section.lesson.pass { border-left: 6px solid var(--good); }
section.lesson.fail { border-left: 6px solid var(--bad); }
.claim { font-size: 15px; margin: 6px 0 10px; }
table.checks td.detail { font-family: ui-monospace,"DejaVu Sans Mono",monospace; font-size: 12px; }
.figs { display: grid; grid-template-columns: 1fr; gap: 16px; }
figure { margin: 0; padding: 8px; border: 1px solid var(--line); border-radius: 8px; background: #fff; }
figure img { max-width: min(100%, 1100px); height: auto; display: block; margin: 0 auto; }
figcaption { font-size: 12px; margin-top: 4px; }
pre { background: var(--panel); padding: 8px 10px; border-radius: 6px; overflow: auto; font-size: 12px; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; font-size: 13px; }
dl.kv dt { font-weight: 600; } dl.kv dd { margin: 0; font-family: ui-monospace,"DejaVu Sans Mono",monospace; }
ul.notes li, ul.refs li { color: var(--muted); font-size: 13px; }
footer { color: var(--muted); font-size: 12px; padding: 30px 24px; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_value(v) for v in value) + ")"
    return str(value)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes)} min {sec:.0f} s ({seconds:.0f} s)"


def _badge(passed: bool, yes: str = "pass", no: str = "fail") -> str:
    return f"<span class='badge {'pass' if passed else 'fail'}'>{yes if passed else no}</span>"


def _kv(mapping: Mapping[str, Any]) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(_value(v))}</dd>" for k, v in mapping.items())
    return f"<dl class='kv'>{items}</dl>"


def _figure(name: str, stem: str, png: bytes) -> str:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (f"<figure class='fig' data-name='{_e(name)}_{_e(stem)}'><img alt='{_e(name)}: {_e(stem)}' src='{uri}'>"
            f"<figcaption>{_e(stem)} (<a href='{_e(name)}_{_e(stem)}.svg'>SVG</a>)</figcaption></figure>")


def _lesson_section(r: LessonResult) -> str:
    status = "pass" if r.supported else "fail"
    passed = sum(c.passed for c in r.checks)
    rows = "".join(
        f"<tr class='{'pass' if c.passed else 'fail'}' data-passed='{str(c.passed).lower()}'>"
        f"<td>{_badge(c.passed)}</td><td>{_e(c.name)}</td><td class='detail'>{_e(c.detail)}</td></tr>"
        for c in r.checks
    )
    parts = [
        f"<section class='lesson {status}' id='lesson-{_e(r.name)}' data-name='{_e(r.name)}' "
        f"data-supported='{str(r.supported).lower()}'>",
        f"<h2>{_e(r.title)} <code>{_e(r.name)}</code></h2>",
        f"<p class='claim'><b>Claim.</b> {_e(r.claim)}</p>",
        f"<p class='verdict'>{_badge(r.supported, 'supported', 'NOT supported')} by this run's numbers: "
        f"{passed} of {len(r.checks)} checks pass; wall time {_e(_duration(r.seconds))}"
        f"{' (quick settings)' if r.quick else ''}.</p>",
        "<table class='checks'><thead><tr><th>result</th><th>check</th><th>the numbers behind it</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>",
    ]
    if r.numbers:
        parts.append(f"<h3>Headline numbers</h3>{_kv(r.numbers)}")
    if r.figures:
        parts.append("<h3>Figures</h3><div class='figs'>"
                     + "".join(_figure(r.name, stem, png) for stem, png in r.figures.items()) + "</div>")
    if r.notes:
        parts.append("<h3>Notes</h3><ul class='notes'>" + "".join(f"<li>{_e(n)}</li>" for n in r.notes) + "</ul>")
    parts.append(f"<details><summary>Parameters</summary>{_kv(r.params)}</details>")
    if r.references:
        parts.append("<h3>References</h3><ul class='refs'>" + "".join(f"<li>{_e(x)}</li>" for x in r.references)
                     + "</ul>")
    parts.append(
        f"<h3>Re-run</h3><pre class='rerun'>{_e(r.command)}</pre>"
        f"<p class='muted'>Files: <a href='{_e(r.csv_path.name)}'>{_e(r.csv_path.name)}</a> (numbers), "
        f"<a href='{_e(r.summary_path.name)}'>{_e(r.summary_path.name)}</a> (summary).</p>"
    )
    parts.append("</section>")
    return "".join(parts)


def _summary_table(results: Sequence[LessonResult]) -> str:
    rows = "".join(
        f"<tr class='{'pass' if r.supported else 'fail'}' data-name='{_e(r.name)}'>"
        f"<td><a href='#lesson-{_e(r.name)}'>{_e(r.name)}</a></td><td>{_e(r.title)}</td>"
        f"<td>{_badge(r.supported, 'supported', 'NOT supported')}</td>"
        f"<td class='num'>{sum(c.passed for c in r.checks)}/{len(r.checks)}</td>"
        f"<td class='num'>{_e(_duration(r.seconds))}</td></tr>"
        for r in results
    )
    return ("<table id='summary-table'><thead><tr><th>lesson</th><th>title</th><th>claim</th><th>checks passed</th>"
            f"<th>wall time</th></tr></thead><tbody>{rows}</tbody></table>")


def _versions() -> str:
    from trilemma import __version__

    parts = [f"trilemma {__version__}", f"Python {platform.python_version()}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return ", ".join(parts)


def render_index(results: Sequence[LessonResult], *, seconds: float, quick: bool, command: str = "") -> str:
    """The ``index.html`` page of a set of lesson results (a complete HTML document).

    Args:
        results: The lessons' results, in the order shown.
        seconds: Total wall time of the run.
        quick: Whether the reduced settings were used.
        command: The command that re-runs the whole set (empty: none is shown; each
            lesson's own command always is).

    Returns:
        The page as a string.
    """
    n_ok = sum(r.supported for r in results)
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    sub = (f"{len(results)} lessons; {n_ok} of {len(results)} claims supported by their own numbers; "
           f"{'quick' if quick else 'full'} settings; total wall time {_duration(seconds)}")
    rerun = (f"<p>Re-run the whole set: <code id='rerun-all'>{_e(command)}</code></p>" if command else "")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"{GENERATOR_MARK}<meta http-equiv='Content-Security-Policy' content=\"{csp}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>trilemma lessons</title>"
        f"<style>{_CSS}</style></head><body>"
        "<header><h1>trilemma lessons: the lecture's experiments, checked on their own numbers</h1>"
        f"<p class='sub' id='run-summary' data-seconds='{seconds:.3f}' data-quick='{str(quick).lower()}'>{_e(sub)}</p>"
        f"{rerun}</header><main>"
        "<section id='summary'><h3>Claims at a glance</h3>" + _summary_table(results) + "</section>"
        + "".join(_lesson_section(r) for r in results)
        + f"</main><footer>Generated by {_e(_versions())}. Each lesson's Markdown summary and CSV lie next to this "
        "page.</footer></body></html>\n"
    )

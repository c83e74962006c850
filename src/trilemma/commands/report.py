"""CLI command ``trilemma report STUDY [--out DIR]``: the HTML/Markdown report of a study."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_commands"]


def _cmd_report(args: argparse.Namespace) -> int:
    from trilemma.report import build_report_for_study

    result = build_report_for_study(args.study, args.out)
    print(f"report: {result}")
    _print_table1(result.json)
    return 0


def _print_table1(summary: Path) -> None:
    """Our Table 1 beside the paper's, when the study has one (the ensemble space)."""
    import json
    import math

    remedy = json.loads(summary.read_text(encoding="utf-8")).get("remedy") or {}
    rows = remedy.get("table1")
    if not rows:
        return

    def num(v: object) -> str:
        return "–" if not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:g}"

    print("Table 1 (ranks among the single cells; ties: min rank)   | the paper's (Tiny-ImageNet)")
    print(f"{'row':<17}{'architecture':<28}{'params':>9}{'expr':>6}{'conv':>6}{'gen':>6}{'sum':>6}   | "
          f"{'params':>7}{'expr':>6}{'conv':>6}{'gen':>6}{'sum':>6}")
    for r in rows:
        params = f"{int(r['params']):,}" if isinstance(r.get("params"), (int, float)) else "–"
        print(f"{r['row']:<17}{r['arch'] + ('' if r['in_study'] else ' (not run)'):<28}{params:>9}"
              f"{num(r.get('rank_expressivity')):>6}{num(r.get('rank_convergence')):>6}"
              f"{num(r.get('rank_generalization')):>6}{num(r.get('rank_sum')):>6}   | {r['paper_params_m']:>6.2f}M"
              f"{num(r.get('paper_rank_expressivity')):>6}{num(r.get('paper_rank_convergence')):>6}"
              f"{num(r.get('paper_rank_generalization')):>6}{num(r.get('paper_rank_sum')):>6}")
    verdict = remedy.get("v_beats_i")
    if verdict is not None:
        print(f"row V {'beats' if verdict else 'does not beat'} row I on this study's data (the paper: 109 vs 152)")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report`` to the ``trilemma`` command line."""
    report = subparsers.add_parser(
        "report", help="build the HTML/Markdown report of a study",
        description="Build the report of a study from its store alone (no code named by the store is run). "
                    "The output folder must be new, empty, or hold an earlier report, which is overwritten; "
                    "a study store is never written.",
    )
    report.add_argument("study", metavar="STUDY", help="a study .toml, a store .sqlite, or a study name in runs/")
    report.add_argument("--out", type=Path,
                        help="output folder (default runs/<study>_report), or the page's path ending in .html")
    report.set_defaults(func=_cmd_report)

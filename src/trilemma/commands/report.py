"""CLI command ``trilemma report STUDY [--out DIR]``: the HTML/Markdown report of a study."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_commands"]


def _cmd_report(args: argparse.Namespace) -> int:
    from trilemma.report import build_report_for_study

    result = build_report_for_study(args.study, args.out)
    print(f"report: {result}")
    return 0


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

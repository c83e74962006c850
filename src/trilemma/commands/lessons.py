"""CLI: ``trilemma lesson list`` and ``trilemma lesson run NAME|all [--out DIR] [--quick] [--set KEY=VALUE ...]``.

Nothing heavy is imported here at module level or while the parser is built (the lessons
need torch, which takes seconds to import); the command functions import the lessons.
"""

from __future__ import annotations

import argparse
import ast
from typing import Any

__all__ = ["add_commands"]


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` → ``{k: literal(v)}`` (strings may be given without quotes)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def _list(args: argparse.Namespace) -> int:
    from trilemma.lessons import get_lesson, list_lessons

    names = list_lessons(args.pattern)
    if not names:
        print(f"no lesson matches {args.pattern!r}")
        return 1
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name.ljust(width)}  {get_lesson(name).title}")
    return 0


def _print_result(res: Any) -> None:
    verdict = "supported" if res.supported else "NOT supported"
    print(f"{res.name}: claim {verdict} by its numbers ({sum(c.passed for c in res.checks)}/{len(res.checks)} "
          f"checks) in {res.seconds:.1f} s")
    for check in res.checks:
        print(f"  [{'x' if check.passed else ' '}] {check.name}: {check.detail}")
    print(f"  summary: {res.summary_path}")


def _run(args: argparse.Namespace) -> int:
    from trilemma.lessons import run_lesson, run_lessons

    try:
        overrides = _parse_sets(args.set or [])
    except argparse.ArgumentTypeError as err:
        print(f"error: {err}")
        return 2
    if args.name == "all":
        if overrides:
            print("error: --set applies to one lesson; name a lesson instead of 'all'")
            return 2
        suite = run_lessons(args.out, quick=args.quick, progress=_print_result)
        passed = sum(r.supported for r in suite.results)
        print(f"{passed} of {len(suite.results)} lessons supported by their numbers; "
              f"{'quick' if suite.quick else 'full'} settings, total wall time {suite.seconds:.1f} s")
        print(f"page: {suite.index_path}")
        return 0 if suite.supported else 1
    res = run_lesson(args.name, args.out, quick=args.quick, **overrides)
    _print_result(res)
    return 0 if res.supported else 1


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lesson list`` and ``lesson run`` to the ``trilemma`` CLI.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.
    """
    p = subparsers.add_parser(
        "lesson", help="run the self-checking lessons (the lecture's experiments)",
        description="Small experiments that demonstrate a claim and check it on their own numbers.",
    )
    sub = p.add_subparsers(dest="lesson_command", required=True)
    ls = sub.add_parser("list", help="list the lessons")
    ls.add_argument("pattern", nargs="?", default=None, help="shell-style name filter")
    ls.set_defaults(func=_list)
    run = sub.add_parser(
        "run", help="run a lesson and write its CSV, figures and Markdown summary",
        description="Run one lesson, or 'all' of them (which also writes DIR/index.html, one self-contained page "
                    "with every lesson's figures, checks and re-run command).",
    )
    run.add_argument("name", help="lesson name (see 'trilemma lesson list'), or 'all'")
    run.add_argument("--out", default="lessons", help="output folder (default: ./lessons)")
    run.add_argument("--quick", action="store_true", help="reduced settings: seconds instead of minutes")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a lesson parameter, e.g. --set seeds=1 --set 'widths=(4, 64)'")
    run.set_defaults(func=_run)

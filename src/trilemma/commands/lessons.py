"""CLI: ``trilemma lesson list`` and ``trilemma lesson run NAME [--out DIR] [--quick] [--set KEY=VALUE ...]``."""

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


def _run(args: argparse.Namespace) -> int:
    from trilemma.lessons import list_lessons, run_lesson

    try:
        overrides = _parse_sets(args.set or [])
    except argparse.ArgumentTypeError as err:
        print(f"error: {err}")
        return 2
    names = list_lessons() if args.name == "all" else [args.name]
    if args.name == "all" and overrides:
        print("error: --set applies to one lesson; name a lesson instead of 'all'")
        return 2
    failed = 0
    for name in names:
        res = run_lesson(name, args.out, quick=args.quick, **overrides)
        verdict = "supported" if res.supported else "NOT supported"
        print(f"{name}: claim {verdict} by its numbers ({sum(c.passed for c in res.checks)}/{len(res.checks)} "
              f"checks) in {res.seconds:.1f} s")
        for check in res.checks:
            print(f"  [{'x' if check.passed else ' '}] {check.name}: {check.detail}")
        print(f"  summary: {res.summary_path}")
        failed += not res.supported
    return 1 if failed else 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``lesson list`` and ``lesson run`` to the ``trilemma`` CLI.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.
    """
    p = subparsers.add_parser(
        "lesson", help="run the self-checking lessons (lecture material, SPEC §5)",
        description="Small experiments that demonstrate a claim and check it on their own numbers.",
    )
    sub = p.add_subparsers(dest="lesson_command", required=True)
    ls = sub.add_parser("list", help="list the lessons")
    ls.add_argument("pattern", nargs="?", default=None, help="shell-style name filter")
    ls.set_defaults(func=_list)
    run = sub.add_parser("run", help="run a lesson and write its CSV, figures and Markdown summary")
    run.add_argument("name", help="lesson name (see 'trilemma lesson list'), or 'all'")
    run.add_argument("--out", default="lessons", help="output folder (default: ./lessons)")
    run.add_argument("--quick", action="store_true", help="reduced settings: seconds instead of minutes")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a lesson parameter, e.g. --set seeds=1 --set 'widths=(4, 64)'")
    run.set_defaults(func=_run)

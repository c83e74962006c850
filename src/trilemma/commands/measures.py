"""CLI: ``trilemma measures`` lists the registered measures."""

from __future__ import annotations

import argparse

__all__ = ["add_commands"]


def _list(args: argparse.Namespace) -> int:
    from trilemma.measures import get_measure, list_measures

    names = list_measures(args.pattern, axis=args.axis)
    if not names:
        print(f"no measure matches pattern={args.pattern!r} axis={args.axis!r}")
        return 1
    rows = []
    for n in names:
        m = get_measure(n)
        direction = {True: "higher", False: "lower", None: "-"}[m.higher_is_better]
        rows.append((n, m.axis or "-", "yes" if m.needs_labels else "no", m.input_kind, direction, m.description))
    header = ("name", "axis", "labels", "input", "better", "description")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``measures`` command to the ``trilemma`` CLI.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.
    """
    p = subparsers.add_parser("measures", help="list the registered measures",
                              description="List registered measures with axis, label need and description.")
    p.add_argument("pattern", nargs="?", default=None, help="shell-style name filter, e.g. 'ntk*'")
    p.add_argument("--axis", default=None, help="only measures of this axis (expressivity, convergence, ...)")
    p.set_defaults(func=_list)

"""CLI: ``trilemma measures`` and ``trilemma executors`` list what is registered (plug-ins included)."""

from __future__ import annotations

import argparse

__all__ = ["add_commands"]


def _import_plugins(refs: list[str] | None) -> None:
    from trilemma.study._plugins import import_plugin

    for ref in refs or ():
        import_plugin(ref)


def _list(args: argparse.Namespace) -> int:
    from trilemma.measures import get_measure, list_measures

    _import_plugins(args.plugin)
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
    p.add_argument("--plugin", action="append", metavar="MODULE_OR_FILE",
                   help="import a plug-in first (as a study's plugins are), to list what it registers")
    p.set_defaults(func=_list)
    e = subparsers.add_parser("executors", help="list the registered executors",
                              description="List the executors a study can run on (executor.kind / --executor).")
    e.add_argument("--plugin", action="append", metavar="MODULE_OR_FILE",
                   help="import a plug-in first, to list what it registers")
    e.set_defaults(func=_executors)


def _executors(args: argparse.Namespace) -> int:
    from trilemma.study import get_executor, list_executors

    _import_plugins(args.plugin)
    for name in list_executors():
        doc = (get_executor(name).__doc__ or "").strip().splitlines()
        print(f"{name:10s}  {doc[0] if doc else ''}")
    return 0

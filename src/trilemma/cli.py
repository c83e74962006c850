"""The ``trilemma`` command line. Thin: every command calls the public Python API.

Each command group lives in :mod:`trilemma.commands` and is imported only when one of its
commands runs, so ``trilemma --help`` and ``trilemma COMMAND --help`` answer without
importing torch. Errors a user can cause (bad input, a missing store, an unwritable output,
an exception inside a plug-in) end as one line on standard error and exit code 2; ``-v`` or
``--traceback`` (before or after the command) also prints the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from trilemma import __version__
from trilemma.errors import TrilemmaError

__all__ = ["main", "build_parser", "COMMAND_MODULES"]

#: Modules of :mod:`trilemma.commands` with the commands each adds and their one-line help.
COMMAND_MODULES: dict[str, dict[str, str]] = {
    "trilemma.commands.space": {"space": "the DAG-cell space: show one cell or list them all"},
    "trilemma.commands.study": {
        "run": "run (or resume) a study from its TOML config",
        "status": "counts by status and failures of a study",
        "export": "write a study's results as csv, parquet or json",
    },
    "trilemma.commands.report": {"report": "build the HTML/Markdown report of a study"},
    "trilemma.commands.measures": {"measures": "list the registered measures",
                                   "executors": "list the registered executors"},
    "trilemma.commands.data": {"datasets": "list the registered datasets"},
    "trilemma.commands.nb201": {"nb201": "NAS-Bench-201: closed-form indicators, filter, search simulation"},
    "trilemma.commands.lessons": {"lesson": "the lecture's experiments: list them or run one"},
}


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``-v`` and ``--traceback``; below the top level they default to "not given" so that a
    flag after the command does not reset one given before it."""
    parser.add_argument("-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
                        help="more log output (-v info, -vv debug); also prints tracebacks")
    parser.add_argument("--traceback", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="print the full traceback of an error")


def _add_globals_everywhere(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:  # noqa: SLF001 - argparse keeps sub-parsers here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                if not any("--traceback" in a.option_strings for a in sub._actions):  # noqa: SLF001
                    _global_options(sub, top=False)
                _add_globals_everywhere(sub)


def _requested_command(argv: Sequence[str] | None) -> str | None:
    """The first positional argument (the command), without parsing the rest."""
    for arg in sys.argv[1:] if argv is None else argv:
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the command module of the command in ``argv`` is imported."""
    parser = argparse.ArgumentParser(
        prog="trilemma",
        description="Expressivity, convergence and generalization of neural architectures. "
                    "Outputs (--out) are overwritten; study stores never are.",
    )
    parser.add_argument("--version", action="version", version=f"trilemma {__version__}")
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _requested_command(argv)
    for name, commands in COMMAND_MODULES.items():
        if wanted in commands:
            importlib.import_module(name).add_commands(sub)
        else:
            for command, help_text in commands.items():
                stub = sub.add_parser(command, help=help_text, add_help=False)
                stub.set_defaults(func=None)
    _add_globals_everywhere(parser)
    return parser


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, TrilemmaError) and exc.strerror:
        where = f": {exc.filename!r}" if exc.filename else ""
        return f"{exc.strerror}{where}" + (f" -> {exc.filename2!r}" if exc.filename2 else "")
    return str(exc).strip() or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    verbose = int(getattr(args, "verbose", 0) or 0)
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `trilemma space list | head`
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (TrilemmaError, OSError) as exc:
        if verbose or getattr(args, "traceback", False):
            traceback.print_exception(exc, file=sys.stderr)
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

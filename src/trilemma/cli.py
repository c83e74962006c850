"""The ``trilemma`` command line. Thin: every command calls the public Python API."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence

from trilemma import __version__
from trilemma.errors import TrilemmaError

__all__ = ["main", "build_parser"]

# Sub-packages that contribute commands through ``_cli.add_commands(subparsers)``, with the
# commands each one adds and their one-line help. A module is imported only when one of its
# commands is run (importing torch for ``trilemma --help`` would cost seconds).
_COMMAND_MODULES: dict[str, dict[str, str]] = {
    "trilemma.study._cli": {
        "run": "run (or resume) a study from its TOML config",
        "status": "counts by status and failures of a study",
        "export": "write a study's results as csv, parquet or json",
        "report": "build the HTML/Markdown report of a study",
    },
    "trilemma.measures._cli": {"measures": "list the registered measures"},
    "trilemma.data._cli": {"datasets": "list the registered datasets"},
    "trilemma.nb201._cli": {"nb201": "NAS-Bench-201: closed-form indicators, filter, search simulation"},
    "trilemma.lessons._cli": {"lesson": "the lecture's experiments: list them or run one"},
}


def _theory_table(args: argparse.Namespace):  # -> pandas.DataFrame
    from trilemma.spaces import CellSpec, enumerate_cells
    from trilemma.theory import theory_table

    specs = [CellSpec.parse(a) for a in args.archs] if getattr(args, "archs", None) else list(enumerate_cells(args.nodes))
    return theory_table(
        specs,
        C=args.correlation,
        width=args.width,
        in_features=args.in_features,
        num_classes=args.num_classes,
    )


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=int, default=256, help="width m of the DAG-MLP (default 256, the papers')")
    p.add_argument("--in-features", type=int, default=784, help="input dimension (default 784)")
    p.add_argument("--num-classes", type=int, default=10, help="number of outputs (default 10)")
    p.add_argument(
        "--correlation", type=float, default=0.5,
        help="input correlation C at the cell input used by the closed-form bounds (default 0.5)",
    )


def _cmd_space_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from trilemma.spaces import CellSpec, enumerate_paths

    spec = CellSpec.parse(args.arch)
    row = _theory_table(argparse.Namespace(**{**vars(args), "archs": [spec.name]})).iloc[0].to_dict()
    console = Console()
    table = Table(title=f"cell {spec.name} (H={spec.nodes}, index {spec.index})", show_header=False)
    table.add_column("quantity", style="bold")
    table.add_column("value")
    for key, value in row.items():
        if key in ("arch",):
            continue
        table.add_row(str(key), _fmt(value))
    console.print(table)
    paths = enumerate_paths(spec)
    console.print(f"paths 0→{spec.nodes} ({len(paths)}):")
    for nodes, depth in paths:
        console.print(f"  {'→'.join(map(str, nodes))}  depth {depth}")
    return 0


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def _cmd_space_list(args: argparse.Namespace) -> int:
    df = _theory_table(args)
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        if args.format == "csv":
            df.to_csv(out, index=False, lineterminator="\n")
        elif args.format == "json":
            json.dump(df.to_dict(orient="records"), out, indent=1, default=str)
            out.write("\n")
        else:
            out.write(df.to_string(index=False, float_format=lambda v: f"{v:.4g}") + "\n")
    finally:
        if args.out:
            out.close()
    return 0


def _requested_command(argv: Sequence[str] | None) -> str | None:
    """The first positional argument (the command), without parsing the rest."""
    for arg in sys.argv[1:] if argv is None else argv:
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the sub-package that provides the command in ``argv`` is imported."""
    parser = argparse.ArgumentParser(
        prog="trilemma",
        description="Expressivity, convergence and generalization of neural architectures.",
    )
    parser.add_argument("--version", action="version", version=f"trilemma {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    space = sub.add_parser("space", help="the DAG-cell space: show one cell or list them all")
    space_sub = space.add_subparsers(dest="space_command", metavar="SUBCOMMAND")
    show = space_sub.add_parser("show", help="topology, parameter count and theory values of one cell")
    show.add_argument("arch", help="cell string, e.g. 2_02_002")
    _add_model_options(show)
    show.set_defaults(func=_cmd_space_show)
    lst = space_sub.add_parser("list", help="one row per cell with topology and theory values")
    lst.add_argument("--nodes", type=int, default=3, help="H, the number of non-input nodes (default 3)")
    lst.add_argument("--format", choices=("csv", "json", "table"), default="table")
    lst.add_argument("--out", help="write to this file instead of standard output")
    _add_model_options(lst)
    lst.set_defaults(func=_cmd_space_list, archs=None)
    space.set_defaults(func=lambda a: (space.print_help(), 2)[1])

    wanted = _requested_command(argv)
    for name, commands in _COMMAND_MODULES.items():
        if wanted in commands:
            importlib.import_module(name).add_commands(sub)
        else:
            for command, help_text in commands.items():
                stub = sub.add_parser(command, help=help_text, add_help=False)
                stub.set_defaults(func=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TrilemmaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `trilemma space list | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""CLI commands ``trilemma space show ARCH`` and ``trilemma space list``: the papers' DAG-cell space."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_commands"]

#: Individual paths ``space show`` lists by default.
DEFAULT_SHOWN_PATHS = 32


def _theory_table(args: argparse.Namespace, archs: list[str] | None = None) -> Any:  # pandas.DataFrame
    from trilemma.spaces import CellSpec, enumerate_cells
    from trilemma.theory import theory_table

    specs = [CellSpec.parse(a) for a in archs] if archs else list(enumerate_cells(args.nodes))
    return theory_table(specs, C=args.correlation, width=args.width, in_features=args.in_features,
                        num_classes=args.num_classes)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=int, default=256, help="width m of the DAG-MLP (default 256, the papers')")
    p.add_argument("--in-features", type=int, default=784, help="input dimension (default 784)")
    p.add_argument("--num-classes", type=int, default=10, help="number of outputs (default 10)")
    p.add_argument(
        "--correlation", type=float, default=0.5,
        help="input correlation C at the cell input used by the closed-form bounds (default 0.5)",
    )


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def _cmd_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from trilemma.errors import InvalidArgumentError
    from trilemma.spaces import CellSpec, enumerate_paths

    if args.paths < 0:
        raise InvalidArgumentError(f"--paths must be >= 0, got {args.paths}")
    spec = CellSpec.parse(args.arch)
    row = _theory_table(args, [spec.name]).iloc[0].to_dict()
    topo = spec.topology
    console = Console(highlight=False)
    table = Table(title=f"cell {spec.name} (H={spec.nodes}, index {spec.index})", show_header=False)
    table.add_column("quantity", style="bold")
    table.add_column("value")
    for key, value in row.items():
        if key != "arch":
            table.add_row(str(key), _fmt(value))
    console.print(table)
    hist = ", ".join(f"{c:,} of depth {d}" for d, c in topo.depth_counts) or "none"
    console.print(f"P = {topo.num_paths:,} paths 0→{spec.nodes} (counted by dynamic programming): {hist}",
                  markup=False)
    shown = enumerate_paths(spec, limit=args.paths) if args.paths else []
    for nodes, depth in shown:
        console.print(f"  {'→'.join(map(str, nodes))}  depth {depth}", markup=False)
    if len(shown) < topo.num_paths:
        console.print(f"  (listed {len(shown):,} of {topo.num_paths:,} paths; --paths N lists more)", markup=False)
    return 0


#: Largest space ``space list`` enumerates.
MAX_LISTED_CELLS = 1_000_000


def _cmd_list(args: argparse.Namespace) -> int:
    from trilemma._outputs import check_output_file
    from trilemma.errors import InvalidArgumentError
    from trilemma.spaces import num_cells

    if not 1 <= args.nodes or num_cells(args.nodes) > MAX_LISTED_CELLS:
        raise InvalidArgumentError(
            f"--nodes must be >= 1 and give at most {MAX_LISTED_CELLS:,} cells (H <= 4); got --nodes {args.nodes}"
            + (f" ({num_cells(args.nodes):,} cells)" if args.nodes >= 1 else "")
        )
    df = _theory_table(args)
    if args.out:
        check_output_file(args.out, args.format, header=None if args.format == "json" else "arch",
                          what="space list --out")
    out = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout
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


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``space show`` and ``space list`` to the ``trilemma`` command line."""
    space = subparsers.add_parser("space", help="the DAG-cell space: show one cell or list them all")
    space_sub = space.add_subparsers(dest="space_command", metavar="SUBCOMMAND")
    show = space_sub.add_parser("show", help="topology, parameter count and theory values of one cell")
    show.add_argument("arch", help="cell string, e.g. 2_02_002")
    show.add_argument("--paths", type=int, default=DEFAULT_SHOWN_PATHS,
                      help=f"list at most this many individual paths (default {DEFAULT_SHOWN_PATHS}; "
                           "P and the depth histogram are always exact)")
    _add_model_options(show)
    show.set_defaults(func=_cmd_show)
    lst = space_sub.add_parser(
        "list", help="one row per cell with topology and theory values",
        description="One row per cell. --out overwrites an earlier output of the same format, never a "
                    "study store or a file of another kind.",
    )
    lst.add_argument("--nodes", type=int, default=3, help="H, the number of non-input nodes (default 3)")
    lst.add_argument("--format", choices=("csv", "json", "table"), default="table")
    lst.add_argument("--out", help="write to this file instead of standard output")
    _add_model_options(lst)
    lst.set_defaults(func=_cmd_list)
    space.set_defaults(func=lambda a: (space.print_help(), 2)[1])

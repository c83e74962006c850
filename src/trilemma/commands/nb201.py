"""``trilemma nb201 …`` commands: closed-form scores, one cell, search simulation.

Thin: every command calls :mod:`trilemma.nb201`'s public API.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from trilemma._outputs import check_output_file
from trilemma.errors import InvalidArgumentError

__all__ = ["add_commands"]

logger = logging.getLogger(__name__)


def _parse_axes(text: str) -> list[tuple[str, int]]:
    """``"conv_score:+1,ntk_bound:+1"`` → ``[("conv_score", 1), ("ntk_bound", 1)]``."""
    axes = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        col, sep, sign = part.rpartition(":")
        if not sep or sign not in ("+1", "1", "-1"):
            raise InvalidArgumentError(
                f"--combined expects 'column:+1' or 'column:-1' items separated by commas, got {part!r}"
            )
        axes.append((col, -1 if sign == "-1" else 1))
    if not axes:
        raise InvalidArgumentError("--combined needs at least one 'column:±1' item")
    return axes


def _check_table_options(args: argparse.Namespace, columns: set[str] | None = None) -> None:
    """Validate ``--filter-fraction`` and ``--combined`` (every command, even those that do not use them).

    Raises:
        InvalidArgumentError: a fraction outside (0, 1], an unknown variant or column, or a
            malformed ``col:±1`` list.
    """
    from trilemma.nb201 import COMBINED_VARIANTS

    if not 0 < args.filter_fraction <= 1:
        raise InvalidArgumentError(f"--filter-fraction must be in (0, 1], got {args.filter_fraction}")
    if args.combined in ("default", "none") or args.combined in COMBINED_VARIANTS:
        return
    if ":" not in args.combined:
        raise InvalidArgumentError(
            f"--combined must be 'default', 'none', a variant ({', '.join(COMBINED_VARIANTS)}) or "
            f"'column:+1,column:-1,...'; got {args.combined!r}"
        )
    axes = _parse_axes(args.combined)
    if columns is not None:
        unknown = [c for c, _ in axes if c not in columns]
        if unknown:
            raise InvalidArgumentError(
                f"--combined names unknown column(s) {unknown}; closed-form columns: {', '.join(sorted(columns))}"
            )


def _table(args: argparse.Namespace):  # -> pandas.DataFrame
    from trilemma.nb201 import (
        CLOSED_FORM_COMBINED,
        COMBINED_VARIANTS,
        MacroConfig,
        centre_filter,
        closed_form_table,
        combined_indicator,
    )
    from trilemma.spaces import unique_nb201_cells

    _check_table_options(args)
    config = MacroConfig(C=args.C, N=args.N, num_classes=args.num_classes, resolution=args.resolution)
    full = closed_form_table(None, config=config, corr=args.corr, width=args.width, combined=False)
    _check_table_options(args, set(full.columns))
    if args.combined != "none":
        axes: Any
        if args.combined == "default":
            axes = CLOSED_FORM_COMBINED
        elif args.combined in COMBINED_VARIANTS:
            axes = args.combined
        else:
            axes = _parse_axes(args.combined)
        full["trilemma_score"] = combined_indicator(full, axes)
    filt = centre_filter(full, fraction=args.filter_fraction)
    full["in_centre"] = filt.keep
    table = full
    if args.unique:
        reps = {s.index for s in unique_nb201_cells()}
        table = table[table["index"].isin(reps)]
    return table, filt


def _add_table_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--C", type=int, default=16, help="first-stage channels of the macro network (default 16)")
    p.add_argument("--N", type=int, default=5, help="cells per stage (default 5)")
    p.add_argument("--num-classes", type=int, default=10, help="classifier outputs (default 10)")
    p.add_argument("--resolution", type=int, default=32, help="input height = width for FLOPs (default 32)")
    p.add_argument("--corr", type=float, default=0.5, help="input correlation C for the NNGP/NTK bounds (default 0.5)")
    p.add_argument("--width", type=int, default=None, help="width m of the Jacobian path sum (default: --C)")
    p.add_argument(
        "--combined", default="default",
        help="combined indicator (trilemma_score column): 'default' (the closed-form variant 'closed_form' of the "
        "default design: conv_score, then ntk_bound and live_params at weight 0.03), a variant name of "
        "trilemma.nb201.COMBINED_VARIANTS whose columns are closed-form (e.g. 'closed_form_equal'), 'none', "
        "or 'col:+1,col:-1,...' (equal weights) (default: default)",
    )
    p.add_argument(
        "--filter-fraction", type=float, default=0.5,
        help="centre filter: kept half-width as a fraction of the (d̄, m̄) half-range (default 0.5, NeurIPS 2022)",
    )
    p.add_argument("--unique", action="store_true", help="only one representative per isomorphism class")


def _cmd_score(args: argparse.Namespace) -> int:
    table, filt = _table(args)
    if args.study:
        table = _measured(args.study, table)
    n_before = len(table)
    if args.filter == "centre":
        table = table[table["in_centre"]]
    if args.accuracy:
        from trilemma.nb201 import load_nb201_accuracy

        acc = load_nb201_accuracy(None if args.accuracy == "default" else args.accuracy)
        table = table.merge(acc[["index", "val_acc"]], on="index", how="left")
    out = check_output_file(args.out, "csv", header=str(table.columns[0]), what="nb201 score --out")
    table.to_csv(out, index=False)
    print(f"wrote {len(table)} cells x {table.shape[1]} columns to {out}")
    print(
        f"centre filter: d̄ in [{filt.depth_range[0]:.3g}, {filt.depth_range[1]:.3g}], "
        f"m̄ in [{filt.width_range[0]:.3g}, {filt.width_range[1]:.3g}]; removes {filt.removed_fraction:.1%} of "
        f"all 15,625 cells" + (f" ({n_before - len(table)} of {n_before} rows dropped)" if args.filter == "centre" else "")
    )
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from trilemma.nb201 import MacroConfig, closed_form_indicators
    from trilemma.spaces import NB201Spec

    _check_table_options(args)
    spec = NB201Spec.parse(args.arch)
    config = MacroConfig(C=args.C, N=args.N, num_classes=args.num_classes, resolution=args.resolution)
    values = closed_form_indicators(spec, config=config, corr=args.corr, width=args.width)
    _check_table_options(args, set(values))
    print(f"{spec.name}  (index {spec.index})")
    for key, value in values.items():
        if key in ("arch", "index"):
            continue
        print(f"  {key:22s} {value:.6g}" if isinstance(value, float) else f"  {key:22s} {value}")
    print(f"  {'canonical':22s} {spec.canonical().name}  [{spec.canonical_key}]")
    for nodes, ops in spec.paths():
        print(f"  path {'→'.join(map(str, nodes))}: {', '.join(ops)}")
    return 0


_FILTERS = ("none", "centre", "reference")


def _measured(study: str, table: Any) -> Any:
    """``table`` with the study's at-init columns (and their ``*_error``), matched by cell."""
    from trilemma.spaces import NB201Spec
    from trilemma.study import load_results

    res = load_results(study)
    schema = res.attrs.get("schema")
    cols = [c for c in res.columns
            if schema is not None and c in schema and schema.get(c).kind in ("init", "cost") and c not in table.columns]
    cols += [c for c in res.columns if (c.endswith("_error") or c == "measured_as") and c not in table.columns]
    res = res[["arch", *cols]].copy()
    res["index"] = [NB201Spec.parse(a).index for a in res["arch"]]
    return table.merge(res.drop(columns="arch").drop_duplicates("index"), on="index", how="left")


def _measure_draws(study: str, archs: list[str], args: argparse.Namespace) -> bool:
    """Run ``study`` on the drawn cells (resumable: cells already in its store are not measured again).

    Returns False when the run was interrupted (Ctrl-C): the search must not run on a half-measured table.
    """
    import sys

    from trilemma.commands.study import RESUME_HINT, _PlainProgress
    from trilemma.study import load_config, run_study

    cfg = load_config(study)
    tasks = dict(cfg.tasks)
    if "proxy_suite" in tasks:
        tasks["proxy_suite"] = {k: v for k, v in tasks["proxy_suite"].items() if k != "sample"}
    cfg = cfg.model_copy(update={"space": cfg.space.model_copy(update={"archs": tuple(archs), "sample": None}),
                                 "tasks": tasks})
    reporter = _PlainProgress(sys.stdout, every=30.0)
    try:
        summary = run_study(cfg, executor=args.executor, n_workers=args.workers, address=args.address,
                            progress=reporter)
    finally:
        reporter.close()
    print(summary)
    if summary.interrupted:
        print(f"{RESUME_HINT} (cells already measured are kept)", file=sys.stderr)
        return False
    return True


def _cmd_search(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from trilemma.nb201 import (
        REFERENCE_WINDOW,
        centre_filter,
        load_nb201_accuracy,
        run_search,
        search_draw,
        search_indicator,
        summarise_search,
    )

    table, _ = _table(args)
    acc = load_nb201_accuracy(None if args.accuracy == "default" else args.accuracy)
    table = table.merge(acc[["index", "val_acc"]], on="index", how="inner").sort_values("index").reset_index(drop=True)
    default = "naswot,tenas,trilemma" if args.study else "conv_score,live_params,params,trilemma_score"
    names = [n.strip() for n in (args.indicators or default).split(",") if n.strip()]
    indicators = [search_indicator(n) for n in names]  # unknown names fail before anything runs
    filters = [f.strip() for f in args.filter.split(",") if f.strip()]
    bad = [f for f in filters if f not in _FILTERS]
    if bad or not filters:
        raise InvalidArgumentError(f"--filter takes a comma-separated list of {', '.join(_FILTERS)}; got {args.filter!r}")
    if args.seeds < 1:
        raise InvalidArgumentError(f"--seeds must be a positive int, got {args.seeds}")
    out = None
    if args.out:
        out = check_output_file(args.out, "csv", header="seed", what="nb201 search --out")
    needed = {c for ind in indicators for c, _ in ind.columns} - set(table.columns)
    if needed and not args.study:
        raise InvalidArgumentError(
            f"indicator column(s) {sorted(needed)} are measured at initialization: give --study STUDY (a study "
            f"whose proxy_suite measures them, e.g. examples/nb201_search.toml) and --measure to measure the drawn cells"
        )
    if args.study and args.measure:
        drawn = sorted({int(i) for s in range(args.seeds) for i in search_draw(s, args.sample_size, len(table))})
        if not _measure_draws(args.study, [str(table["arch"].iloc[i]) for i in drawn], args):
            return 130
    if args.study:
        table = _measured(args.study, table)
    masks = {"none": None, "centre": table["in_centre"].to_numpy(),
             "reference": centre_filter(table, window=REFERENCE_WINDOW).keep}
    rows = [run_search(table, table["val_acc"].to_numpy(), ind, seeds=args.seeds, sample_size=args.sample_size,
                       keep=masks[f], filter_name=f) for ind in indicators for f in filters]
    result = pd.concat(rows, ignore_index=True)
    summary = summarise_search(result)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"CIFAR-10 validation accuracy (%) of the chosen cell over {args.seeds} seeds, {args.sample_size} cells drawn "
          f"per seed; cost_saving = share of the drawn cells the filter spared from measuring "
          f"(centre filter removes {1 - float(np.mean(masks['centre'])):.1%} of the space)")
    if out is not None:
        result.to_csv(out, index=False)
        print(f"wrote {len(result)} rows (one per seed, indicator and filter) to {out}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``trilemma nb201 {score,show,search}``."""
    nb = subparsers.add_parser("nb201", help="NAS-Bench-201: closed-form indicators, filter, search simulation")
    sub = nb.add_subparsers(dest="nb201_command")

    score = sub.add_parser(
        "score", help="write every closed-form (and, with --study, every measured) indicator of every cell to a CSV")
    score.add_argument("--out", required=True,
                       help="output CSV path (an earlier score CSV is overwritten; a study store or another file never is)")
    score.add_argument(
        "--filter", choices=("none", "centre"), default="none",
        help="'centre': keep only cells in the (d̄, m̄) centre (NeurIPS 2022); default none (column in_centre marks them)",
    )
    score.add_argument(
        "--accuracy", nargs="?", const="default", default=None,
        help="add the CIFAR-10 validation accuracy (optional path to nb201_cifar10_val.csv)",
    )
    score.add_argument(
        "--study", default=None,
        help="add the at-init indicators a study measured (TOML, store or name, e.g. examples/nb201_cifar10.toml); "
             "cells it did not measure get empty values, a recorded failure its reason in <name>_error")
    _add_table_options(score)
    score.set_defaults(func=_cmd_score)

    show = sub.add_parser("show", help="closed-form indicators, paths and canonical form of one cell")
    show.add_argument("arch", help="cell string |op~0|+|op~0|op~1|+|op~0|op~1|op~2|")
    _add_table_options(show)
    show.set_defaults(func=_cmd_show)

    search = sub.add_parser(
        "search", help="training-free search: draw cells, filter, pick the best by an indicator (one row per seed)")
    search.add_argument(
        "--indicator", "--indicators", dest="indicators", default=None,
        help="comma-separated indicators: closed-form columns, measured ones (naswot, jacob_cov, ntk_condition, ...; "
             "need --study), 'tenas' (rank sum of the NTK condition number and the linear regions) or 'trilemma' "
             "(the combined indicator); default: naswot,tenas,trilemma with --study, else "
             "conv_score,live_params,params,trilemma_score")
    search.add_argument("--filter", default="none,centre",
                        help="comma-separated: none, centre (the (d̄, m̄) centre filter, --filter-fraction), reference "
                             "(the NeurIPS 2022 code's fixed window d̄ in [0.99, 2.51], m̄ in [0.99, 3.01]); "
                             "default none,centre")
    search.add_argument("--seeds", "--repeats", dest="seeds", type=int, default=20,
                        help="search seeds 0..SEEDS-1 (default 20)")
    search.add_argument("--sample-size", type=int, default=100, help="cells drawn per seed (default 100, NeurIPS 2022)")
    search.add_argument("--study", default=None,
                        help="study (TOML, store or name) holding measured indicators, e.g. examples/nb201_search.toml")
    search.add_argument("--measure", action="store_true",
                        help="first run --study on the drawn cells (resumable; cells already measured are kept)")
    search.add_argument("--executor", default=None, help="executor of --measure (serial, local, ray)")
    search.add_argument("--workers", type=int, default=None, help="workers of --measure")
    search.add_argument("--address", default=None, help="Ray cluster address of --measure")
    search.add_argument("--out", default=None,
                        help="CSV of the chosen cells: one row per seed, indicator and filter (arch string, index, "
                             "accuracy, cells drawn and evaluated)")
    search.add_argument("--accuracy", default="default", help="path to nb201_cifar10_val.csv (default: shared data)")
    _add_table_options(search)
    search.set_defaults(func=_cmd_search)

    nb.set_defaults(func=lambda a: (nb.print_help(), 2)[1])

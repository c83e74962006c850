"""Fused proxy suite vs the separate measures on NAS-Bench-201 (one run, ratio of times).

For each cell of a seeded sample, the standard NB201 network (C = 16, N = 5 by default) is fed
a batch of real CIFAR-10 images (``cifar10_unlabeled_1000.npz``; seeded random labels for the
label-needing proxies, the images have none) and timed twice, in alternating order:

* fused: ``trilemma.measures.proxy_suite(model, x, y, options=...)``;
* separate: every measure of ``trilemma.measures.SUITE`` called alone through the registry,
  with the same options (the sum of their wall times).

Both arms use identical options: every measure at its defaults (BatchNorm batch statistics),
except the NTK measures, which use ``--ntk-batchnorm`` (default ``eval``: the per-sample
structured NTK; with ``batch``, the default of the NTK measures, the kernel needs one backward
pass per input — 64 here — which at C = 16, N = 5 takes minutes per kernel on a 2-core CPU) and
``--ntk-dtype`` (default float32). Values of the two arms are compared too.

Writes ``benchmarks/results/proxy_suite_C{C}_N{N}_b{batch}_ntk-{mode}.json`` (per-cell times,
per-measure times, ratio) and prints the summary. Example::

    .venv/bin/python benchmarks/proxy_suite.py --cells 50
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trilemma.errors import TrilemmaError
from trilemma.measures import SUITE, get_measure, proxy_suite
from trilemma.models import build_nb201
from trilemma.nb201 import load_cifar10_images
from trilemma.spaces import NUM_NB201_CELLS, sample_nb201

logger = logging.getLogger("benchmarks.proxy_suite")
RESULTS = Path(__file__).resolve().parent / "results"
NTK = ("ntk_lambda_min", "ntk_lambda_max", "ntk_condition", "ntk_trace", "ntk_lambda_robust")


def random_labels(n: int, seed: int) -> torch.Tensor:
    """Seeded uniformly random CIFAR-10 labels (the shared images carry none)."""
    return torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(10_000 + seed))


def separate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, options: dict[str, dict[str, Any]]
             ) -> tuple[dict[str, float], dict[str, float]]:
    """Every suite measure alone: ``({name: seconds}, {name: value or NaN when it failed})``."""
    seconds, values = {}, {}
    for name in SUITE:
        m = get_measure(name)
        t0 = time.perf_counter()
        try:
            values[name] = m(model, x, y if m.needs_labels else None, **options.get(name, {})).value
        except TrilemmaError:
            values[name] = math.nan
        seconds[name] = time.perf_counter() - t0
    return seconds, values


def fused(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, options: dict[str, dict[str, Any]]
          ) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    res = proxy_suite(model, x, y, options=options, on_error="skip")
    return time.perf_counter() - t0, {n: res[n].value if n in res else math.nan for n in SUITE}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=50)
    p.add_argument("--C", type=int, default=16)
    p.add_argument("--N", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ntk-batchnorm", choices=("eval", "batch"), default="eval")
    p.add_argument("--ntk-dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    x = torch.from_numpy(load_cifar10_images(args.batch))
    y = random_labels(args.batch, args.seed)
    options = {n: {"batchnorm": args.ntk_batchnorm, "dtype": getattr(torch, args.ntk_dtype)} for n in NTK}
    cells = sample_nb201(NUM_NB201_CELLS, seed=args.seed)[: args.cells]
    warm = build_nb201(cells[0], C=args.C, N=1, seed=args.seed)  # untimed: first-call costs of both arms
    fused(warm, x[:8], y[:8], options)
    separate(warm, x[:8], y[:8], options)
    rows = []
    for k, spec in enumerate(cells):
        model = build_nb201(spec, C=args.C, N=args.N, seed=args.seed)
        order = ("fused", "separate") if k % 2 == 0 else ("separate", "fused")
        for arm in order:
            if arm == "fused":
                t_fused, v_fused = fused(model, x, y, options)
            else:
                per_measure, v_sep = separate(model, x, y, options)
        diffs = [abs(v_fused[n] - v_sep[n]) / max(abs(v_sep[n]), 1e-300) for n in SUITE
                 if math.isfinite(v_fused[n]) and math.isfinite(v_sep[n])]
        failed_f = sorted(n for n in SUITE if not math.isfinite(v_fused[n]))
        failed_s = sorted(n for n in SUITE if not math.isfinite(v_sep[n]))
        rows.append({"index": spec.index, "arch": spec.name, "fused_s": t_fused, "separate_s": sum(per_measure.values()),
                     "separate_by_measure_s": per_measure, "max_rel_diff": max(diffs, default=0.0),
                     "failed_fused": failed_f, "failed_separate": failed_s})
        logger.info("cell %d/%d (%d): fused %.2f s, separate %.2f s, ratio %.3f", k + 1, len(cells), spec.index,
                    t_fused, rows[-1]["separate_s"], t_fused / rows[-1]["separate_s"])
    fused_t = np.array([r["fused_s"] for r in rows])
    sep_t = np.array([r["separate_s"] for r in rows])
    by_measure = {n: float(np.mean([r["separate_by_measure_s"][n] for r in rows])) for n in SUITE}
    ntk_sep = sum(by_measure[n] for n in NTK)
    summary = {
        "cells": len(rows), "C": args.C, "N": args.N, "batch": args.batch, "seed": args.seed, "threads": args.threads,
        "ntk_options": {"batchnorm": args.ntk_batchnorm, "dtype": args.ntk_dtype},
        "fused_mean_s": float(fused_t.mean()), "separate_mean_s": float(sep_t.mean()),
        "ratio_of_totals": float(fused_t.sum() / sep_t.sum()),
        "ratio_median_per_cell": float(np.median(fused_t / sep_t)),
        "ratio_range_per_cell": [float((fused_t / sep_t).min()), float((fused_t / sep_t).max())],
        "separate_mean_s_by_measure": by_measure,
        "separate_ntk_share": ntk_sep / float(sep_t.mean()),
        "max_rel_diff_fused_vs_separate": float(max(r["max_rel_diff"] for r in rows)),
        "same_failures": all(r["failed_fused"] == r["failed_separate"] for r in rows),
        "python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
        "command": " ".join(["benchmarks/proxy_suite.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"proxy_suite_C{args.C}_N{args.N}_b{args.batch}_ntk-{args.ntk_batchnorm}.json"
    path.write_text(json.dumps({"summary": summary, "cells": rows}, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"fused / separate = {summary['ratio_of_totals']:.3f} (sum over {len(rows)} cells; "
          f"median per cell {summary['ratio_median_per_cell']:.3f}); wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

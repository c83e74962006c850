"""Throughput of the NAS-Bench-201 study: cells per hour with local workers and on Ray.

Runs the ``proxy_suite`` task of ``examples/nb201_cifar10.toml`` (the fused zero-cost suite,
C = 16, N = 5, 64 CIFAR-10 images, each distinct network once) on one seeded sample of cells
(``--cells``, the same cells for every executor) once per executor setting, each into its own
fresh store, and reports wall time, cells per hour and distinct networks per hour, and the
extrapolated time for all 5,425 distinct networks of the 15,625 cells on N workers.
Example::

    .venv/bin/python benchmarks/nb201_scale.py --cells 80 --runs local:1,local:2
    ray start --head --num-cpus 2 --port 6390
    .venv/bin/python benchmarks/nb201_scale.py --cells 80 --runs ray:2 --ray-address 127.0.0.1:6390

Writes ``benchmarks/results/nb201_scale.json`` (one entry per run, merged with earlier runs).
Rates are absolute and depend on what else the machine runs: the load average at the start
and end of each run is recorded beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from trilemma.spaces import NUM_NB201_CELLS, unique_nb201_cells
from trilemma.study import Store, run_study

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EXAMPLE = ROOT / "examples" / "nb201_cifar10.toml"


def study(cells: int, seed: int, store: Path, kind: str, workers: int, address: str | None) -> dict[str, Any]:
    """The example study's proxy_suite task alone, on a seeded space sample of ``cells`` cells."""
    cfg = tomllib.loads(EXAMPLE.read_text())
    cfg.pop("theory", None)
    suite = dict(cfg["tasks"]["proxy_suite"])
    suite.pop("sample", None)
    cfg["tasks"] = {"proxy_suite": suite}
    cfg["name"] = f"nb201_scale_{kind}{workers}"
    cfg["store"] = str(store)
    cfg["space"]["sample"] = {"n": cells, "seed": seed}
    cfg["executor"] = {"kind": kind, "n_workers": workers, "threads_per_worker": 1,
                       **({"address": address} if address else {})}
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=80)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", default="local:1,local:2", help="comma-separated kind:workers (local, serial, ray)")
    p.add_argument("--ray-address", default=None, help="address of a running Ray cluster (ray runs)")
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args(argv)
    distinct_total = len(unique_nb201_cells())
    out_path = Path(args.results) / "nb201_scale.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for run in args.runs.split(","):
        kind, workers = run.split(":")
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "scale.sqlite"
            cfg = study(args.cells, args.seed, store, kind, int(workers), args.ray_address if kind == "ray" else None)
            load0 = os.getloadavg()
            t0 = time.perf_counter()
            summary = run_study(cfg)
            wall = time.perf_counter() - t0
            load1 = os.getloadavg()
            with Store(store, readonly=True) as st:
                measured = {r.result().get("measured_as") for r in st.rows(task="proxy_suite") if r.payload}
        distinct = len(measured - {None})
        entry = {
            "executor": summary.executor, "cells": summary.ran, "distinct_networks": distinct,
            "complete": summary.complete, "failed": summary.failed, "wall_s": wall,
            "cells_per_hour": 3600 * summary.ran / wall, "distinct_per_hour": 3600 * distinct / wall,
            "hours_all_distinct": distinct_total / (3600 * distinct / wall),
            "load_before": load0, "load_after": load1, "sample_seed": args.seed,
        }
        report[run] = entry
        print(f"{run}: {summary.ran} cells ({distinct} distinct networks) in {wall:.0f} s = "
              f"{entry['cells_per_hour']:.0f} cells/h, {entry['distinct_per_hour']:.0f} networks/h; all "
              f"{distinct_total} distinct networks of the {NUM_NB201_CELLS} cells: {entry['hours_all_distinct']:.1f} h "
              f"(load {load0[0]:.1f} → {load1[0]:.1f})", flush=True)
        out_path.write_text(json.dumps(report, indent=2))
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

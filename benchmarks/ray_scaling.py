"""Ray executor: one vs two workers on a local Ray cluster, one study, one run.

A training study (a seeded subset of the DAG cells, several seeds) is split by the planner into
batched training jobs (groups of same-shape cells: the unit of distribution) and run through the
Ray executor on a local Ray instance: with 1 worker and with 2 workers (one torch thread each).
The driver alone writes the store. A warm-up run first starts both worker processes (their
torch import and first jobs would otherwise be charged to whichever setting runs first); then
the two settings alternate for ``--rounds`` rounds, each into a fresh store, and the figure is
the ratio of their median wall times, measured in one process.

    python benchmarks/ray_scaling.py [--cells 64] [--seeds 2] [--epochs 60] [--rounds 2]

Writes ``benchmarks/results/ray_scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from trilemma.study import run_study


def _config(store: Path, cells: int, seeds: int, epochs: int, workers: int) -> dict:
    return {
        "name": f"ray{workers}", "store": str(store), "seeds": list(range(seeds)),
        "space": {"name": "dag", "nodes": 3, "filter": {"trainable": True}, "sample": {"n": cells, "seed": 0}},
        "model": {"width": 64}, "data": {"names": ["digits"], "options": {"normalize": "l2"}},
        "training": {"epochs": epochs, "lr": 0.2, "batch_size": 128, "group_size": max(1, cells // 4)},
        "executor": {"kind": "ray", "n_workers": workers, "threads_per_worker": 1},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import ray

    runs: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            run_study(_config(Path(tmp) / "warmup.sqlite", args.cells, 1, 1, 2))
            for r in range(args.rounds):
                for workers in (1, 2):
                    store = Path(tmp) / f"ray{workers}_{r}.sqlite"
                    t0 = time.perf_counter()
                    summary = run_study(_config(store, args.cells, args.seeds, args.epochs, workers))
                    runs[workers].append(time.perf_counter() - t0)
                    print(f"round {r}, {workers} worker(s): {summary.complete} tasks complete in "
                          f"{runs[workers][-1]:.1f} s ({summary.executor})")
        finally:
            ray.shutdown()
    times = {w: statistics.median(t) for w, t in runs.items()}
    ratio = times[1] / times[2]
    load = os.getloadavg()[0]
    print(f"speed-up of 2 workers over 1: {ratio:.2f}x (load average {load:.1f})")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "ray_scaling.json").write_text(json.dumps(
        {"cells": args.cells, "seeds": args.seeds, "epochs": args.epochs, "rounds": args.rounds, "seconds": times,
         "runs": runs, "speedup": ratio,
         "load_average": load}, indent=1) + "\n")


if __name__ == "__main__":
    main()

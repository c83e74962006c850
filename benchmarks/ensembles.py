"""Benchmark: the Figure 7 pruning grid (30 pruned ensembles) trained batched vs one by one.

Chen, Huang & Wang (AutoML-Conf 2023, Figure 7) prune the wide-shallow member ``1_22_221`` at
0–0.4 and the deep-narrow member ``2_02_002`` at 0–0.5 in steps of 0.1: 30 ensembles of one
shape that differ only in their masks. ``train_batched`` trains them as one batched computation
(masked weights included); the reference trains each :class:`~trilemma.models.EnsembleMLP` alone
with :func:`trilemma.training.train`. Both sides use the same protocol as
``examples/nfl_table1.toml`` (plain SGD, lr 0.2, batch 128, width 64, digits) and are measured
in one process, interleaved (batched, one by one, batched, one by one …, ``--rounds`` times;
the ratio of the medians is reported), so a load change on the shared machine hits both.
The final training losses of the two sides are compared as a sanity check (float32: equal up
to reduction order).

Usage:
    python benchmarks/ensembles.py                     # 30 ensembles, 10 epochs, 3 rounds
    python benchmarks/ensembles.py --epochs 3 --rounds 1   # quick check

Writes ``benchmarks/results/ensembles_grid.json`` (``speedup`` = one-by-one time / batched time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trilemma.data import load_dataset
from trilemma.models import build_ensemble, pruning_grid
from trilemma.training import TrainConfig, train, train_batched

RESULTS = Path(__file__).resolve().parent / "results"
MEMBERS = ["1_22_221", "2_02_002"]
RATIOS = [[0.0, 0.1, 0.2, 0.3, 0.4], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]]


def load() -> dict[str, Any]:
    """Load averages and the ``uptime`` line (other users share the machine)."""
    try:
        line = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        line = ""
    return {"loadavg": list(os.getloadavg()), "uptime": line}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "ensembles_grid.json")
    args = parser.parse_args()

    ds = load_dataset("digits", normalize="l2")
    specs = pruning_grid(MEMBERS, RATIOS, nodes=3)
    config = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.2, optimizer="sgd", seed=args.seed)
    in_features, num_classes = ds.in_features, ds.num_classes
    before = load()
    batched_s, single_s = [], []
    losses_b: list[float] = []
    losses_1: list[float] = []
    for _ in range(args.rounds):
        t = time.perf_counter()
        rb = train_batched(specs, ds, config, width=args.width, seeds=args.seed)
        batched_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        r1 = [train(build_ensemble(s, in_features, num_classes, args.width, seed=args.seed), ds, config)
              for s in specs]
        single_s.append(time.perf_counter() - t)
        losses_b = [r.train_loss[-1] for r in rb]
        losses_1 = [r.train_loss[-1] for r in r1]
    diff = float(np.max(np.abs(np.array(losses_b) - np.array(losses_1)) / np.maximum(np.abs(losses_1), 1e-12)))
    result = {
        "benchmark": "Fig. 7 pruning grid: train_batched vs train one by one",
        "ensembles": len(specs), "members": MEMBERS, "ratios": RATIOS, "epochs": args.epochs, "width": args.width,
        "data": "digits", "rounds": args.rounds, "torch_threads": torch.get_num_threads(),
        "batched_s": batched_s, "one_by_one_s": single_s,
        "speedup": statistics.median(single_s) / statistics.median(batched_s),
        "max_rel_final_loss_diff": diff,
        "load_before": before, "load_after": load(), "python": platform.python_version(),
        "torch": torch.__version__, "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"{len(specs)} ensembles, {args.epochs} epochs, width {args.width}: batched {statistics.median(batched_s):.2f} s, "
          f"one by one {statistics.median(single_s):.2f} s (medians of {args.rounds}), speed-up "
          f"{result['speedup']:.1f}x; max relative final-loss difference {diff:.1e}; load {before['loadavg'][0]:.2f}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

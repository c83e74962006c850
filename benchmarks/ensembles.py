"""Benchmark: the Figure 7 pruning grid (30 pruned ensembles) trained batched vs one by one.

Chen, Huang & Wang (AutoML-Conf 2023, Figure 7) prune the wide-shallow member ``1_22_221`` at
0–0.4 and the deep-narrow member ``2_02_002`` at 0–0.5 in steps of 0.1: 30 ensembles of one
shape that differ only in their masks. ``train_batched`` trains them as one batched computation
(masked weights included); the reference trains each :class:`~trilemma.models.EnsembleMLP` alone
with :func:`trilemma.training.train`. Both sides use the same protocol as
``examples/nfl_table1.toml`` (plain SGD, lr 0.2, batch 128, width 64, digits) and are measured
in one process, interleaved (batched, one by one, batched, one by one …, ``--rounds`` times;
the ratio of the medians is reported), so a load change on the shared machine hits both.
Agreement is checked where it is defined: both sides in float64 for 2 epochs (relative
difference of every epoch's training loss). The float32 runs agree to rounding at first and then
drift apart (SGD at this rate amplifies reduction-order differences); their final-loss
difference is recorded too.

Both sides run with ``--threads`` torch threads (default 1).

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
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for both sides (1: OpenMP barriers stall on a loaded machine)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ensembles_grid.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

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
    rel = np.abs(np.array(losses_b) - np.array(losses_1)) / np.maximum(np.abs(losses_1), 1e-12)
    # agreement where it is defined: float64, 2 epochs (float32 runs agree to rounding at first, then
    # drift apart: SGD at this rate amplifies reduction-order differences over the epochs)
    check = config.replace(epochs=2, dtype="float64")
    rb64 = train_batched(specs, ds, check, width=args.width, seeds=args.seed)
    r164 = [train(build_ensemble(s, in_features, num_classes, args.width, seed=args.seed, dtype=torch.float64), ds,
                  check) for s in specs]
    diff64 = max(float(np.max(np.abs(np.array(a.train_loss) - np.array(b.train_loss)) / np.abs(np.array(b.train_loss))))
                 for a, b in zip(rb64, r164))
    result = {
        "benchmark": "Fig. 7 pruning grid: train_batched vs train one by one",
        "ensembles": len(specs), "members": MEMBERS, "ratios": RATIOS, "epochs": args.epochs, "width": args.width,
        "data": "digits", "rounds": args.rounds, "torch_threads": torch.get_num_threads(),
        "batched_s": batched_s, "one_by_one_s": single_s,
        "speedup": statistics.median(single_s) / statistics.median(batched_s),
        "float32_final_loss_rel_diff": {"median": float(np.median(rel)), "max": float(np.max(rel))},
        "float64_2_epochs_max_rel_loss_diff": diff64,
        "load_before": before, "load_after": load(), "python": platform.python_version(),
        "torch": torch.__version__, "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"{len(specs)} ensembles, {args.epochs} epochs, width {args.width}: batched {statistics.median(batched_s):.2f} s, "
          f"one by one {statistics.median(single_s):.2f} s (medians of {args.rounds}), speed-up "
          f"{result['speedup']:.1f}x; batched = one by one in float64 (2 epochs) to {diff64:.1e}; float32 final losses "
          f"differ by {np.median(rel):.1e} (median) / {np.max(rel):.1e} (max); load {before['loadavg'][0]:.2f}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

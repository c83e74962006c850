"""Benchmark the three empirical-NTK implementations against one forward+backward pass.

For each model, in one process: the floor (one batched forward + backward of the summed
logits, as in a training step), LOOP, CONTRACTION and STRUCTURED (``mode="sum"``, float32).
The contenders run interleaved (round-robin over repeats) so that load from other processes
affects them alike; wall-clock and process-CPU times are both recorded. Prints the minimum
times, the ratios (STRUCTURED / floor, CONTRACTION / STRUCTURED, LOOP / STRUCTURED) and the
largest relative difference of each Gram matrix from LOOP's; writes everything to
``benchmarks/results/ntk.json``.

Usage:
    python benchmarks/ntk.py               # full run (DAG-MLPs m = 256 and 1024, CNN)
    python benchmarks/ntk.py --quick       # m = 256 only, fewer repeats
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trilemma.measures import NTKImplementation, empirical_ntk
from trilemma.models import build_model

RESULTS = Path(__file__).resolve().parent / "results" / "ntk.json"


def small_cnn(seed: int = 0) -> nn.Module:
    """A small CIFAR-like CNN with BatchNorm (evaluated in eval mode)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()


def _clock(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def bench_model(name: str, model: nn.Module, x: torch.Tensor, repeats: int, loop_repeats: int) -> dict[str, Any]:
    """Time all contenders on one model, interleaved round-robin so load changes hit all alike."""
    model.eval()

    def floor() -> None:
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    contenders: dict[str, Callable[[], Any]] = {"forward_backward": floor}
    for impl in (NTKImplementation.STRUCTURED, NTKImplementation.CONTRACTION, NTKImplementation.LOOP):
        contenders[impl.value] = lambda impl=impl: empirical_ntk(model, x, implementation=impl)
    for key, fn in contenders.items():  # warm-up (LOOP is too slow to warm up and needs none)
        if key != "loop":
            fn()
    wall: dict[str, list[float]] = {k: [] for k in contenders}
    cpu: dict[str, list[float]] = {k: [] for k in contenders}
    grams: dict[str, torch.Tensor] = {}
    for r in range(repeats):
        for key, fn in contenders.items():
            if key == "loop" and r >= loop_repeats:
                continue
            w, c, out = _clock(fn)
            wall[key].append(w)
            cpu[key].append(c)
            if key != "forward_backward":
                grams[key] = out.double()
    model.zero_grad(set_to_none=True)
    ref = grams["loop"]
    best = {k: min(v) for k, v in wall.items()}
    best_cpu = {k: min(v) for k, v in cpu.items()}

    def ratios(t: dict[str, float]) -> dict[str, float]:
        return {
            "structured_over_forward_backward": t["structured"] / t["forward_backward"],
            "contraction_over_structured": t["contraction"] / t["structured"],
            "loop_over_structured": t["loop"] / t["structured"],
        }

    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "n": x.shape[0],
        "input_shape": list(x.shape[1:]),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "min_seconds": best,
        "median_seconds": {k: statistics.median(v) for k, v in wall.items()},
        "min_cpu_seconds": best_cpu,
        "ratios": ratios(best),
        "cpu_ratios": ratios(best_cpu),
        "max_rel_diff_vs_loop": {
            k: float((g - ref).abs().max() / ref.abs().max()) for k, g in grams.items() if k != "loop"
        },
        "frobenius_rel_diff_vs_loop": {
            k: float((g - ref).norm() / ref.norm()) for k, g in grams.items() if k != "loop"
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="m = 256 only and fewer repeats")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the fast timings (min is reported)")
    parser.add_argument("--loop-repeats", type=int, default=2, help="repeats of the LOOP timing")
    parser.add_argument("--n", type=int, default=128, help="batch size")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output path")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    widths = (256,) if args.quick else (256, 1024)

    torch.manual_seed(0)
    cases: list[tuple[str, nn.Module, torch.Tensor]] = []
    x_mlp = torch.nn.functional.normalize(torch.randn(args.n, 784), dim=1)
    for m in widths:
        for cell in ("2_22_221", "2_02_002"):
            cases.append((f"dagmlp_{cell}_m{m}", build_model(cell, 784, 10, width=m, seed=0), x_mlp))
    cases.append(("cnn_bn_eval_3x16x16", small_cnn(), torch.randn(args.n, 3, 16, 16)))

    results = []
    header = f"{'model':28s} {'clock':4s} {'params':>9s} {'fwd+bwd':>9s} {'struct':>9s} {'contr':>9s} {'loop':>9s} " \
             f"{'S/FB':>6s} {'C/S':>7s} {'L/S':>7s} {'maxrel C':>9s} {'maxrel S':>9s}"
    print(header)
    for name, model, x in cases:
        e = bench_model(name, model, x, repeats, args.loop_repeats)
        results.append(e)
        d = e["max_rel_diff_vs_loop"]
        for clock, b, r in (("wall", e["min_seconds"], e["ratios"]), ("cpu", e["min_cpu_seconds"], e["cpu_ratios"])):
            print(f"{name:28s} {clock:4s} {e['params']:9d} {b['forward_backward']:9.4f} {b['structured']:9.4f} "
                  f"{b['contraction']:9.4f} {b['loop']:9.4f} {r['structured_over_forward_backward']:6.2f} "
                  f"{r['contraction_over_structured']:7.1f} {r['loop_over_structured']:7.1f} "
                  f"{d['contraction']:9.2e} {d['structured']:9.2e}", flush=True)
    meta = {
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "mode": "sum",
        "timing": "seconds per call (wall and process CPU); contenders interleaved round-robin; "
                  "min over repeats (median also stored); LOOP not warmed up",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

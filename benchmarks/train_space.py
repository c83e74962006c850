"""Benchmark: train the H=3 DAG-cell space at once (``train_batched``) vs one model at a time.

Defaults: the 541 trainable cells (at least one path with a linear edge), width 64,
scikit-learn's digits (1,437 training images), 100 epochs. ``--width 256 --data mnist5k``
(the papers' width, 784 inputs) trains a seeded subset of 64 cells for 5 epochs unless
told otherwise; every figure is then a rate or a ratio measured on that subset, and the
full-space time is extrapolated (and labelled so). The papers' protocol throughout: plain
SGD, lr 0.1, batch 128, cross-entropy, test evaluation every epoch, float32.

What is measured, interleaved so that both sides of every ratio are measured seconds apart
on a machine whose load varies (the benchmark runs its reference measurements between
two epochs of the batched run, from the epoch callback, and subtracts their time):

* **training loop**: the batched run's epochs (SGD steps and the test evaluation). Its
  work is the GEMM FLOPs the trainer actually issues (``metadata["batched"]``: forward,
  input and weight gradients, evaluation forwards; the stem's input gradient is never
  computed and not counted).
* **2048² matmul peak**: ``torch.matmul`` of two 2048 x 2048 float32 matrices with all
  threads (best of 3), after every epoch. ``peak_fraction`` = median over epochs of
  (epoch's GEMM FLOP rate) / (peak measured right after it).
* **shape-matched peak**: a plain ``torch.bmm`` into preallocated outputs (contiguous
  operands) with the same (batch, rows, inner, cols) shapes and the same call mix as the
  trainer's GEMMs, run the way the trainer runs (as many worker threads, one intra-op
  thread each; one caller on a GPU). A quarter of an epoch's calls is replayed after
  every epoch. ``shape_peak_fraction`` = median over epochs of (epoch's GEMM rate) /
  (shape-matched rate right after it). (One caller with all intra-op threads was not
  faster on the 2-core machine, and on a loaded machine OpenMP's barriers made it up to
  tens of times slower, so it is not used.)
* **one by one**: ``train_cell`` on a seeded subset of the cells (whole runs, spread over
  the batched run's epoch boundaries), with the faster of torch's thread count and one
  thread (a short pilot decides); extrapolated to all benchmarked cells by the mean time
  per cell. ``speedup`` = extrapolated one-by-one time / batched time (both end to end).

Usage:
    python benchmarks/train_space.py                                  # m = 64, digits
    python benchmarks/train_space.py --width 256 --data mnist5k       # m = 256, MNIST-5k
    python benchmarks/train_space.py --device cuda                    # on a GPU
    python benchmarks/train_space.py --autocast bfloat16              # bfloat16 vs float32 accuracy
    python benchmarks/train_space.py --cells 60 --epochs 3 --one-by-one 4   # quick check

The result goes to ``benchmarks/results/train_space_m<width>_<data>[_<device>][_c<cells>]
[_e<epochs>][_bfloat16].json`` (the suffixes only when they differ from the defaults).

At m = 256 one model's GEMMs are large enough that training it alone already runs near
the CPU's matmul rate, so batching can gain little more than the extra cores; the
benchmark prints that bound (``speedup_upper_bound``: the 2048² peak over the one-by-one
GEMM rate) beside the measured speed-up. On a GPU, where one small model cannot fill the
device, batching gains far more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trilemma.data import load_dataset
from trilemma.spaces import count_params, enumerate_cells
from trilemma.training import (
    EpochRecord,
    TrainConfig,
    bf16_matmul_is_native,
    curve_metrics,
    resolve_device,
    synchronize,
    train_batched,
    train_cell,
)

RESULTS = Path(__file__).resolve().parent / "results"
SMALL = {"cells": None, "epochs": 100, "one_by_one": 30}  # m <= 64 on digits: the whole space
LARGE = {"cells": 64, "epochs": 5, "one_by_one": 6}  # anything bigger: a seeded subset
AUTOCAST_CELLS = 48  # --autocast: a seeded subset (bfloat16 is emulated, hence slow, on CPUs without it)


def load() -> dict[str, Any]:
    """Load averages and the ``uptime`` line (other users share the machine)."""
    try:
        line = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        line = ""
    return {"loadavg": list(os.getloadavg()), "uptime": line}


class MatmulPeak:
    """``torch.matmul`` of two n x n float32 matrices (all threads), best of ``repeats``."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.n, self.device = n, device
        self.a = torch.randn(n, n, device=device)
        self.b = torch.randn(n, n, device=device)
        self.out = torch.empty(n, n, device=device)
        torch.matmul(self.a, self.b, out=self.out)

    def __call__(self, repeats: int = 3) -> float:
        best = float("inf")
        for _ in range(repeats):
            synchronize(self.device)
            t = time.perf_counter()
            torch.matmul(self.a, self.b, out=self.out)
            synchronize(self.device)
            best = min(best, time.perf_counter() - t)
        return 2 * self.n**3 / best / 1e9


class ShapeMatched:
    """Plain ``torch.bmm`` calls with the trainer's GEMM shapes and call mix.

    Args:
        shapes: ``[batch, rows, inner, cols, calls]`` per shape (per epoch).
        fraction: Fraction of the calls replayed per measurement (at least one per shape).
        workers: Worker threads of the trainer (one intra-op thread each).
        device: Where to run.
    """

    def __init__(self, shapes: list[list[int]], fraction: float, workers: int, device: torch.device) -> None:
        self.device, self.workers = device, workers
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = []
        self.flop = 0.0
        for b, r, k, c, n in shapes:
            reps = max(1, round(n * fraction))
            a = torch.randn(b, r, k, device=device)
            w = torch.randn(b, k, c, device=device)
            out = torch.empty(b, r, c, device=device)
            self.calls.append((a, w, out, reps))
            self.flop += 2.0 * b * r * k * c * reps
        # split the calls over the workers, balancing FLOPs (largest first)
        load = [0.0] * workers
        self.parts: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]] = [[] for _ in range(workers)]
        for call in sorted(self.calls, key=lambda x: -x[0].shape[0] * x[0].shape[1] * x[0].shape[2] * x[1].shape[2]
                           * x[3]):
            w_ = min(range(workers), key=load.__getitem__)
            self.parts[w_].append(call)
            a, w, _, reps = call
            load[w_] += a.shape[0] * a.shape[1] * a.shape[2] * w.shape[2] * reps
        self.pool = ThreadPoolExecutor(workers) if workers > 1 else None
        self.run_workers()  # warm up

    @staticmethod
    def _run(calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]], threads: int | None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        for a, w, out, reps in calls:
            for _ in range(reps):
                torch.bmm(a, w, out=out)

    def run_workers(self) -> float:
        synchronize(self.device)
        t = time.perf_counter()
        if self.pool is None:
            self._run(self.calls, None)
        else:
            for f in [self.pool.submit(self._run, part, 1) for part in self.parts]:
                f.result()
        synchronize(self.device)
        return self.flop / (time.perf_counter() - t) / 1e9

    __call__ = run_workers


def autocast_check(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """float32 vs bfloat16 autocast, both batched, on the same seeded cells: accuracy and time.

    The study ranks cells, so besides the per-cell differences the rank agreement of the
    two precisions (Kendall tau over cells) is what decides whether bfloat16 is usable.
    """
    from scipy.stats import kendalltau

    ds = load_dataset(args.data)
    all_cells = [c for c in enumerate_cells(3) if c.topology.trainable]
    cells = sorted(random.Random(args.seed).sample(all_cells, args.cells), key=lambda c: c.index)
    config = TrainConfig(epochs=args.epochs, device=str(device))
    runs, times = {}, {}
    for name, cfg in (("float32", config), ("bfloat16", config.replace(autocast="bfloat16"))):
        t0 = time.perf_counter()
        runs[name] = train_batched(cells, ds, cfg, width=args.width, seeds=args.seed, workers=args.workers)
        times[name] = time.perf_counter() - t0
    f32, b16 = runs["float32"], runs["bfloat16"]
    ok = [i for i in range(len(cells)) if not (f32[i].diverged or b16[i].diverged)]
    m32 = [curve_metrics(f32[i]) for i in ok]
    m16 = [curve_metrics(b16[i]) for i in ok]
    loss_rel = [abs(b.final_train_loss - a.final_train_loss) / abs(a.final_train_loss)  # type: ignore[operator]
                for a, b in zip(m32, m16)]
    acc_diff = [abs(b.final_test_acc - a.final_test_acc) for a, b in zip(m32, m16)]  # type: ignore[operator]
    e50 = [(a.epochs_to_accuracy, b.epochs_to_accuracy) for a, b in zip(m32, m16)]

    def tau(key: str) -> float | None:
        pairs = [(getattr(a, key), getattr(b, key)) for a, b in zip(m32, m16)
                 if getattr(a, key) is not None and getattr(b, key) is not None]
        return float(kendalltau(*zip(*pairs)).statistic) if len(pairs) > 2 else None

    return {
        "command": " ".join(["python", "benchmarks/train_space.py", *sys.argv[1:]]),
        "cells": len(cells), "compared": len(ok), "epochs": args.epochs, "width": args.width, "data": args.data,
        "bf16_native": bf16_matmul_is_native(device),
        "time_s": times, "time_ratio_bf16_over_f32": times["bfloat16"] / times["float32"],
        "final_train_loss_rel_diff": {"median": float(np.median(loss_rel)), "max": float(max(loss_rel))},
        "final_test_acc_abs_diff": {"median": float(np.median(acc_diff)), "max": float(max(acc_diff))},
        "epochs_to_50_equal": sum(a == b for a, b in e50), "epochs_to_50_compared": len(e50),
        "kendall_tau_f32_vs_bf16": {key: tau(key) for key in ("expressivity", "epochs_to_accuracy",
                                                                "steps_to_accuracy", "generalization_gap",
                                                                "final_test_acc")},
    }


def output_path(args: argparse.Namespace, defaults: dict[str, Any]) -> Path:
    name = f"train_space_m{args.width}_{args.data}"
    if args.device != "cpu":
        name += f"_{args.device.replace(':', '')}"
    if args.cells != defaults["cells"]:
        name += f"_c{args.cells}"
    if args.epochs != defaults["epochs"]:
        name += f"_e{args.epochs}"
    if args.autocast:
        name += f"_{args.autocast}"
    return RESULTS / f"{name}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--data", "--dataset", dest="data", default="digits")
    parser.add_argument("--cells", type=int, default=-1, help="seeded subset of this many cells (default: see doc)")
    parser.add_argument("--epochs", type=int, default=-1)
    parser.add_argument("--one-by-one", type=int, default=-1, help="cells trained one by one (extrapolated)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--seed", type=int, default=0, help="model/data-order seed and subset seed")
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--replay-fraction", type=float, default=0.25, help="share of an epoch's GEMMs replayed")
    parser.add_argument("--autocast", choices=["bfloat16"], default=None,
                        help="instead of the speed benchmark: accuracy and time of bfloat16 autocast vs float32 "
                             f"(batched, on a seeded subset of --cells, default {AUTOCAST_CELLS}, for --epochs)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    defaults = SMALL if (args.width <= 64 and args.data == "digits") else LARGE
    if args.autocast and args.cells == -1:
        args.cells = AUTOCAST_CELLS
    args.cells = defaults["cells"] if args.cells == -1 else args.cells
    args.epochs = defaults["epochs"] if args.epochs == -1 else args.epochs
    args.one_by_one = defaults["one_by_one"] if args.one_by_one == -1 else args.one_by_one
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    load_before = load()
    if args.autocast:
        result = autocast_check(args, device)
        result["load"] = {"before": load_before, "after": load()}
        print(json.dumps(result, indent=1))
        path = Path(args.out) if args.out else output_path(args, {**defaults, "cells": AUTOCAST_CELLS})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")
        return 0

    ds = load_dataset(args.data)
    all_cells = [c for c in enumerate_cells(3) if c.topology.trainable]
    rng = random.Random(args.seed)
    cells = all_cells if args.cells is None else sorted(rng.sample(all_cells, args.cells), key=lambda c: c.index)
    config = TrainConfig(epochs=args.epochs, device=str(device))
    E = args.epochs
    params = sum(count_params(c, args.width, ds.in_features, ds.num_outputs) for c in cells)
    print(f"{len(cells)} of {len(all_cells)} cells, width {args.width}, {args.data} ({ds.num_train} train / "
          f"{ds.num_test} test, {ds.in_features} inputs), {E} epochs, {device}, {threads} thread(s); "
          f"load {load_before['loadavg']}")
    peak = MatmulPeak(2048, device)

    # ---------------------------------------------------------------- one by one: thread pilot
    k = min(args.one_by_one, len(cells))
    subset = sorted(random.Random(args.seed + 1).sample(range(len(cells)), k))
    pilot_config = config.replace(epochs=min(2, E))
    pilot: dict[int, float] = {}
    for n_threads in ([threads, 1] if device.type == "cpu" and threads > 1 else [threads]) * 2:  # interleaved twice
        torch.set_num_threads(n_threads)
        t0 = time.perf_counter()
        for i in subset[:2]:
            train_cell(cells[i], ds, pilot_config, width=args.width, seed=args.seed)
        pilot[n_threads] = min(pilot.get(n_threads, float("inf")), time.perf_counter() - t0)
    obo_threads = min(pilot, key=pilot.__getitem__)
    torch.set_num_threads(threads)
    timings = ", ".join(f"{t} thread(s) {v:.2f} s" for t, v in pilot.items())
    print(f"one by one, pilot (2 cells, {pilot_config.epochs} epochs): {timings} -> {obo_threads} thread(s)")

    # ---------------------------------------------------------------- the trainer's GEMM shapes
    probe = train_batched(cells, ds, config.replace(epochs=1), width=args.width, seeds=args.seed,
                          chunk_size=args.chunk_size, workers=args.workers)
    facts0 = probe[0].metadata["batched"]
    del probe
    shapes = facts0["gemm_train_epoch"]["shapes"] + facts0["gemm_evaluation"]["shapes"]
    replay = ShapeMatched(shapes, args.replay_fraction, facts0["workers"], device)
    flop_epoch = facts0["gemm_train_epoch"]["flop"] + facts0["gemm_evaluation"]["flop"]  # eval every epoch

    # ---------------------------------------------------------------- batched, with interleaved references
    schedule: dict[int, list[int]] = {}  # epoch boundary -> one-by-one cells run there
    for j, i in enumerate(subset):
        schedule.setdefault(1 + (j * E) // k if E > 1 else 1, []).append(i)
    state: dict[str, Any] = {"epoch": 0, "t_end": None, "cb": 0.0, "epochs": [], "peaks": [], "shape": [],
                             "singles": {}, "single_time": 0.0}

    def run_singles(epoch: int) -> None:
        torch.set_num_threads(obo_threads)
        for i in schedule.get(epoch, []):
            t0 = time.perf_counter()
            state["singles"][i] = train_cell(cells[i], ds, config, width=args.width, seed=args.seed)
            state["single_time"] += time.perf_counter() - t0
        torch.set_num_threads(threads)

    def callback(rec: EpochRecord) -> None:
        if rec.epoch == state["epoch"]:
            return
        synchronize(device)
        t_in = time.perf_counter()
        if state["t_end"] is not None:
            state["epochs"].append(t_in - state["t_end"])
        state["epoch"] = rec.epoch
        state["peaks"].append(peak())
        state["shape"].append(replay())
        run_singles(rec.epoch)
        state["t_end"] = time.perf_counter()
        state["cb"] += state["t_end"] - t_in
        if rec.epoch % max(1, E // 10) == 0 or rec.epoch == E:
            last = state["epochs"][-1] if state["epochs"] else float("nan")
            print(f"  epoch {rec.epoch}/{E}: epoch {last:.2f} s, 2048^2 peak {state['peaks'][-1]:.1f} GFLOP/s, "
                  f"shape-matched {state['shape'][-1]:.1f} GFLOP/s, references {state['t_end'] - t_in:.2f} s, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)

    t0 = time.perf_counter()
    batched = train_batched(cells, ds, config, width=args.width, seeds=args.seed, chunk_size=args.chunk_size,
                            workers=args.workers, callback=callback)
    total = time.perf_counter() - t0
    for epoch in sorted(e for e in schedule if e > state["epoch"]):  # (not reached if every model diverged)
        run_singles(epoch)
    facts = batched[0].metadata["batched"]
    batched_wall = total - state["cb"]
    loop = facts["train_time"] - state["cb"]
    load_after = load()

    # ---------------------------------------------------------------- figures
    # per epoch (from epoch 2: epoch 1's time includes nothing else, but its start is not
    # marked): the epoch's GEMM rate against the references measured right after it
    rates = [flop_epoch / t / 1e9 for t in state["epochs"]]
    peak_ratios = [r / p for r, p in zip(rates, state["peaks"][1:])]
    shape_ratios = [r / s for r, s in zip(rates, state["shape"][1:])]
    flop_total = facts["gemm_train_epoch"]["flop"] * E + facts["gemm_evaluation"]["flop"] * facts["evaluations"]
    loop_rate = flop_total / loop / 1e9
    useful = 6.0 * params * ds.num_train * E
    med = statistics.median
    singles = state["singles"]
    per_cell = state["single_time"] / len(singles)
    extrapolated = per_cell * len(cells)
    speedup = extrapolated / batched_wall
    # the one-by-one runs' GEMM work (forward, weight and input gradients, but no input
    # gradient of the stem, as autograd skips it; test forwards every epoch), and the
    # speed-up that batching could reach at most: one by one at that rate vs the matmul peak
    obo_flop = 0.0
    for i in singles:
        P = count_params(cells[i], args.width, ds.in_features, ds.num_outputs)
        stem = (ds.in_features + 1) * args.width
        obo_flop += ((6.0 * P - 2.0 * stem) * ds.num_train + 2.0 * P * ds.num_test) * E
    obo_rate = obo_flop / state["single_time"] / 1e9
    speedup_bound = med(state["peaks"]) / obo_rate
    diffs = [abs(r.train_loss[-1] - batched[i].train_loss[-1]) / abs(r.train_loss[-1])
             for i, r in singles.items() if r.status == "completed" and batched[i].status == "completed"]
    peak_fraction = med(peak_ratios) if peak_ratios else loop_rate / med(state["peaks"])
    shape_fraction = med(shape_ratios) if shape_ratios else loop_rate / med(state["shape"])
    full_space_s = loop / len(cells) * len(all_cells) if args.cells is not None else None  # the space, E epochs

    print(f"batched: {batched_wall:.1f} s end to end (setup {facts['setup_time']:.1f} s, training loop {loop:.1f} s "
          f"of which test evaluation {facts['eval_time']:.1f} s; {facts['chunks']} chunks of <= {facts['chunk_size']}, "
          f"{facts['workers']} worker(s))")
    print(f"training loop: {loop_rate:.1f} GFLOP/s of GEMMs issued ({flop_total / 1e9:.0f} GFLOP; useful 6 x params "
          f"x samples: {useful / loop / 1e9:.1f} GFLOP/s)")
    print(f"2048^2 matmul peak (after each epoch): median {med(state['peaks']):.1f} GFLOP/s "
          f"[{min(state['peaks']):.1f} .. {max(state['peaks']):.1f}]")
    print(f"shape-matched bmm peak (after each epoch): median {med(state['shape']):.1f} GFLOP/s "
          f"[{min(state['shape']):.1f} .. {max(state['shape']):.1f}]")
    print(f"peak_fraction (epoch rate / 2048^2 peak, median over {len(peak_ratios)} epochs): {peak_fraction:.2f}"
          + (f" [{min(peak_ratios):.2f} .. {max(peak_ratios):.2f}]" if peak_ratios else ""))
    print(f"shape_peak_fraction (epoch rate / shape-matched peak): {shape_fraction:.2f}"
          + (f" [{min(shape_ratios):.2f} .. {max(shape_ratios):.2f}]" if shape_ratios else ""))
    print(f"one by one ({obo_threads} thread(s)): {len(singles)} cells in {state['single_time']:.1f} s "
          f"({per_cell:.2f} s/cell), extrapolated to {len(cells)} cells: {extrapolated:.0f} s "
          f"(EXTRAPOLATED from a seeded subset of {len(singles)})")
    print(f"speedup batched vs one by one: {speedup:.1f}x (one by one runs its GEMMs at {obo_rate:.1f} GFLOP/s = "
          f"{obo_rate / med(state['peaks']):.2f} of the 2048^2 peak, so no trainer could exceed "
          f"{speedup_bound:.1f}x here)")
    if full_space_s is not None:
        print(f"full space ({len(all_cells)} cells) at this width and data: {full_space_s:.0f} s per {E} epochs = "
              f"{full_space_s / E:.1f} s per epoch (EXTRAPOLATED from {len(cells)} cells)")
    print(f"agreement (float32): median relative difference of the final training loss {np.median(diffs):.2e}, "
          f"max {max(diffs):.2e}" if diffs else "agreement: no completed runs to compare")
    print(f"load before / after: {load_before['loadavg']} / {load_after['loadavg']}")

    out = {
        "settings": {"cells": len(cells), "cells_in_space": len(all_cells), "subset": args.cells is not None,
                     "epochs": E, "width": args.width, "data": args.data, "device": str(device), "threads": threads,
                     "seed": args.seed, "replay_fraction": args.replay_fraction,
                     "command": " ".join(["python", "benchmarks/train_space.py", *(argv or sys.argv[1:])])},
        "peak_fraction": peak_fraction,
        "shape_peak_fraction": shape_fraction,
        "speedup": speedup,
        "matmul_peak_gflops": {"median": med(state["peaks"]), "min": min(state["peaks"]), "max": max(state["peaks"]),
                               "per_epoch": state["peaks"]},
        "shape_peak_gflops": {"median": med(state["shape"]), "min": min(state["shape"]), "max": max(state["shape"]),
                              "per_epoch": state["shape"]},
        "epoch_gemm_gflops": rates,
        "peak_fraction_per_epoch": peak_ratios,
        "shape_peak_fraction_per_epoch": shape_ratios,
        "train_loop_gemm_gflops": loop_rate,
        "train_loop_peak_fraction_overall": loop_rate / med(state["peaks"]),
        "useful_gflops": useful / loop / 1e9,
        "gemm_gflop": flop_total / 1e9,
        "batched_wall_s": batched_wall,
        "batched_setup_s": facts["setup_time"],
        "batched_train_loop_s": loop,
        "batched_eval_s": facts["eval_time"],
        "interleaved_reference_s": state["cb"],
        "chunks": facts["chunks"],
        "chunk_size": facts["chunk_size"],
        "workers": facts["workers"],
        "one_by_one_cells": len(singles),
        "one_by_one_s": state["single_time"],
        "one_by_one_threads": obo_threads,
        "one_by_one_pilot_s_by_threads": {str(t): v for t, v in pilot.items()},
        "one_by_one_extrapolated_s": extrapolated,
        "one_by_one_gemm_gflops": obo_rate,
        "speedup_upper_bound": speedup_bound,
        "full_space_extrapolated_s": full_space_s,
        "diverged": sum(r.diverged for r in batched),
        "final_loss_rel_diff_median": float(np.median(diffs)) if diffs else None,
        "final_loss_rel_diff_max": float(max(diffs)) if diffs else None,
        "load": {"before": load_before, "after": load_after},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
                    "python": sys.version.split()[0],
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "targets": {"shape_peak_fraction>=0.6 (m=64)": shape_fraction >= 0.6,
                    "peak_fraction>=0.5 (m=256)": peak_fraction >= 0.5, "speedup>=4": speedup >= 4},
    }
    path = Path(args.out) if args.out else output_path(args, defaults)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

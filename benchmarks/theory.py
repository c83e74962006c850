"""Benchmarks of ``trilemma.theory``: table speed, exact-vs-Monte-Carlo validation, closing-note figures.

Usage (from the repository root)::

    .venv/bin/python benchmarks/theory.py                 # timing of theory_table on the 729 H=3 cells
    .venv/bin/python benchmarks/theory.py --validate      # + exact kernels vs Monte Carlo at m=2048 (3%)
    .venv/bin/python benchmarks/theory.py --mc            # + Kendall τ of closed forms vs Monte Carlo, 541 cells

Every run prints its figures and merges them into ``benchmarks/results/theory.json`` (one key per
section: ``timing``, ``validation``, ``mc``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "theory.json"
VALIDATION_CELLS = ("2_21_112", "1_01_222", "2_22_221", "2_02_002", "2_00_122", "2_22_222")


def timing(repeats: int = 20) -> dict[str, Any]:
    """Seconds for theory_table on all 729 H=3 cells: first call (cold caches) and the median warm call."""
    t0 = time.perf_counter()
    from trilemma.theory import theory_table

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    df = theory_table(nodes=3, C=0.5, width=256)
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        theory_table(nodes=3, C=0.5, width=256)
        warm.append(time.perf_counter() - t0)
    C = np.full((16, 16), 0.3) + 0.7 * np.eye(16)
    t0 = time.perf_counter()
    theory_table(nodes=3, C=C, width=256)
    matrix_s = time.perf_counter() - t0
    out = {
        "cells": len(df),
        "trainable": int(df["trainable"].sum()),
        "import_s": import_s,
        "first_call_s": cold,
        "warm_median_s": statistics.median(warm),
        "warm_min_s": min(warm),
        "matrix_C_16x16_s": matrix_s,
        "torch_imported": "torch" in sys.modules,
    }
    print(
        f"theory_table, {out['cells']} cells: first call {cold * 1e3:.1f} ms, warm median "
        f"{out['warm_median_s'] * 1e3:.1f} ms (min {out['warm_min_s'] * 1e3:.1f} ms); 16x16 C matrix "
        f"{matrix_s * 1e3:.1f} ms; import {import_s * 1e3:.0f} ms; torch imported: {out['torch_imported']}"
    )
    return out


def unit_gaussian(n: int, dim: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((n, dim))
    return X * math.sqrt(dim) / np.linalg.norm(X, axis=1, keepdims=True)


def digits_inputs(n: int) -> np.ndarray:
    """The first ``n`` scikit-learn digits (8x8 = 64 pixels, bundled, no download), ``‖x‖² = 64``."""
    from sklearn.datasets import load_digits

    X = load_digits().data[:n].astype(np.float64)
    return X * math.sqrt(X.shape[1]) / np.linalg.norm(X, axis=1, keepdims=True)


def validation(width: int, seeds: int, n: int, dim: int, tol: float) -> dict[str, Any]:
    """Relative Frobenius error of the Monte-Carlo NNGP/NTK against the exact kernels."""
    from trilemma.theory import exact_kernels, exact_length_element, input_gram, monte_carlo

    X = unit_gaussian(n, dim, seed=0)
    K = input_gram(X)
    rows = []
    print(f"\nexact vs Monte Carlo: width {width}, {seeds} seeds, n={n} Gaussian inputs in N0={dim}, tolerance {tol:.0%}")
    for arch in VALIDATION_CELLS:
        t0 = time.perf_counter()
        ex = exact_kernels(arch, K)
        mc = monte_carlo(arch, X, width, seeds=seeds, thetas=16)
        nngp_err = float(np.linalg.norm(mc.nngp - ex.nngp) / np.linalg.norm(ex.nngp))
        ntk_err = float(np.linalg.norm(mc.ntk - ex.ntk) / np.linalg.norm(ex.ntk))
        se = float(np.linalg.norm(mc.nngp_std_error) / np.linalg.norm(ex.nngp))
        row = {
            "arch": arch,
            "nngp_rel_err": nngp_err,
            "ntk_rel_err": ntk_err,
            "nngp_rel_stderr": se,
            "ntk_rel_stderr": float(np.linalg.norm(mc.ntk_std_error) / np.linalg.norm(ex.ntk)),
            "nngp_lambda_min": {"exact": ex.nngp_lambda_min, "mc": mc.nngp_lambda_min},
            "ntk_lambda_min": {"exact": ex.ntk_lambda_min, "mc": mc.ntk_lambda_min},
            "length_element": {"exact": exact_length_element(arch), "mc": mc.length_element},
            "passed": nngp_err < tol and ntk_err < tol,
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(
            f"  {arch}: NNGP {nngp_err:.2%} (stderr {se:.2%})  NTK {ntk_err:.2%}  "
            f"length {mc.length_element:.4f} vs {exact_length_element(arch):.4f}  "
            f"{'ok' if row['passed'] else 'FAIL'}  ({row['seconds']:.1f}s)"
        )
    return {"width": width, "seeds": seeds, "n": n, "N0": dim, "tolerance": tol, "cells": rows,
            "all_passed": all(r["passed"] for r in rows)}


def _tau(a: list[float], b: list[float]) -> dict[str, float]:
    from scipy.stats import kendalltau

    res = kendalltau(a, b)
    return {"tau": float(res.statistic), "p": float(res.pvalue)}


def closing_figures(X: np.ndarray, inputs: str, width: int, seeds: int, thetas: int) -> dict[str, Any]:
    """Kendall τ between closed forms and Monte Carlo over the 541 trainable H=3 cells."""
    from trilemma.spaces import enumerate_cells
    from trilemma.theory import (
        exact_kernels,
        exact_length_element,
        gram_to_correlation,
        input_gram,
        jacobian_path_sum,
        monte_carlo,
        nngp_bound,
        ntk_bound,
        stem_correlation,
    )

    K = input_gram(X)
    C = stem_correlation(gram_to_correlation(K))  # correlation at the cell input (node 0)
    iu = np.triu_indices(len(C), 1)
    cells = [c for c in enumerate_cells(3) if c.topology.trainable]
    rec: dict[str, list[Any]] = {k: [] for k in (
        "arch", "P", "mean_depth", "jacobian_path_sum", "nngp_bound", "ntk_bound", "ntk_bound_recursion",
        "exact_nngp_lmin", "exact_ntk_lmin", "exact_ntk_cell_lmin", "exact_length",
        "mc_nngp_lmin", "mc_ntk_lmin", "mc_ntk_cell_lmin", "mc_nngp_lmin_of_mean", "mc_ntk_lmin_of_mean",
        "mc_length")}
    t0 = time.perf_counter()
    for spec in cells:
        ex = exact_kernels(spec, K)
        mc = monte_carlo(spec, X, width, seeds=seeds, thetas=thetas)
        # NTK w.r.t. cell + readout weights only: the paper's G⁽ᴴ⁾ (exact for a chain)
        ex_cell = exact_kernels(spec, K, trainable_stem=False)
        mc_cell = monte_carlo(spec, X, width, seeds=seeds, thetas=0, trainable_stem=False)
        rec["arch"].append(spec.name)
        rec["P"].append(spec.topology.num_paths)
        rec["mean_depth"].append(spec.topology.mean_depth)
        rec["jacobian_path_sum"].append(jacobian_path_sum(spec, width))
        rec["nngp_bound"].append(nngp_bound(spec, C))
        rec["ntk_bound"].append(ntk_bound(spec, C))
        rec["ntk_bound_recursion"].append(ntk_bound(spec, C, form="recursion"))
        rec["exact_ntk_cell_lmin"].append(ex_cell.ntk_lambda_min)
        rec["mc_ntk_cell_lmin"].append(float(np.mean(mc_cell.ntk_lambda_min_per_seed)))
        rec["exact_nngp_lmin"].append(ex.nngp_lambda_min)
        rec["exact_ntk_lmin"].append(ex.ntk_lambda_min)
        rec["exact_length"].append(exact_length_element(spec))
        rec["mc_nngp_lmin"].append(float(np.mean(mc.nngp_lambda_min_per_seed)))
        rec["mc_ntk_lmin"].append(float(np.mean(mc.ntk_lambda_min_per_seed)))
        rec["mc_nngp_lmin_of_mean"].append(mc.nngp_lambda_min)
        rec["mc_ntk_lmin_of_mean"].append(mc.ntk_lambda_min)
        rec["mc_length"].append(mc.length_element)
    seconds = time.perf_counter() - t0

    taus = {
        "jacobian_path_sum~mc_length": _tau(rec["jacobian_path_sum"], rec["mc_length"]),
        "exact_length~mc_length": _tau(rec["exact_length"], rec["mc_length"]),
        "nngp_bound~mc_nngp_lmin": _tau(rec["nngp_bound"], rec["mc_nngp_lmin"]),
        "ntk_bound~mc_ntk_lmin": _tau(rec["ntk_bound"], rec["mc_ntk_lmin"]),
        "exact_nngp_lmin~mc_nngp_lmin": _tau(rec["exact_nngp_lmin"], rec["mc_nngp_lmin"]),
        "exact_ntk_lmin~mc_ntk_lmin": _tau(rec["exact_ntk_lmin"], rec["mc_ntk_lmin"]),
        "exact_nngp_lmin~mc_nngp_lmin_of_mean": _tau(rec["exact_nngp_lmin"], rec["mc_nngp_lmin_of_mean"]),
        "exact_ntk_lmin~mc_ntk_lmin_of_mean": _tau(rec["exact_ntk_lmin"], rec["mc_ntk_lmin_of_mean"]),
        "nngp_bound~exact_nngp_lmin": _tau(rec["nngp_bound"], rec["exact_nngp_lmin"]),
        "ntk_bound~exact_ntk_lmin": _tau(rec["ntk_bound"], rec["exact_ntk_lmin"]),
        # frozen stem (NTK of cell + readout weights, the paper's G) and the recursion form of Theorem 4.6
        "ntk_bound~mc_ntk_cell_lmin": _tau(rec["ntk_bound"], rec["mc_ntk_cell_lmin"]),
        "ntk_bound_recursion~mc_ntk_cell_lmin": _tau(rec["ntk_bound_recursion"], rec["mc_ntk_cell_lmin"]),
        "exact_ntk_cell_lmin~mc_ntk_cell_lmin": _tau(rec["exact_ntk_cell_lmin"], rec["mc_ntk_cell_lmin"]),
        # context: the papers' published theory-vs-topology τ (curvature vs P −0.79, NNGP λ_min vs P +0.79, NTK +0.86)
        "mc_length~P": _tau(rec["mc_length"], rec["P"]),
        "mc_nngp_lmin~P": _tau(rec["mc_nngp_lmin"], rec["P"]),
        "mc_ntk_lmin~P": _tau(rec["mc_ntk_lmin"], rec["P"]),
        "nngp_bound~P": _tau(rec["nngp_bound"], rec["P"]),
        "ntk_bound~P": _tau(rec["ntk_bound"], rec["P"]),
    }

    def below(bound: str, truth: str) -> list[str]:
        """Cells where the "upper bound" is below the kernel's λ_min (beyond round-off)."""
        return [a for a, b, t in zip(rec["arch"], rec[bound], rec[truth]) if b < t - 1e-9 * max(1.0, abs(t))]

    violations = {
        "nngp_bound<mc_nngp_lmin": below("nngp_bound", "mc_nngp_lmin"),
        "ntk_bound<mc_ntk_lmin": below("ntk_bound", "mc_ntk_lmin"),
        "nngp_bound<exact_nngp_lmin": below("nngp_bound", "exact_nngp_lmin"),
        "ntk_bound<exact_ntk_lmin": below("ntk_bound", "exact_ntk_lmin"),
        "ntk_bound<mc_ntk_cell_lmin": below("ntk_bound", "mc_ntk_cell_lmin"),
        "ntk_bound<exact_ntk_cell_lmin": below("ntk_bound", "exact_ntk_cell_lmin"),
        "ntk_bound_recursion<mc_ntk_cell_lmin": below("ntk_bound_recursion", "mc_ntk_cell_lmin"),
        "ntk_bound_recursion<exact_ntk_cell_lmin": below("ntk_bound_recursion", "exact_ntk_cell_lmin"),
    }
    out = {
        "inputs": inputs,
        "n": int(X.shape[0]),
        "N0": int(X.shape[1]),
        "input_correlation_max_offdiag": float(gram_to_correlation(K)[iu].max()),
        "cell_input_correlation_max_offdiag": float(C[iu].max()),
        "width": width,
        "seeds": seeds,
        "thetas": thetas,
        "cells": len(cells),
        "seconds": seconds,
        "kendall_tau": taus,
        "violations": {k: {"count": len(v), "cells": v} for k, v in violations.items()},
        "records": rec,
    }
    print(f"\nclosed forms vs Monte Carlo over {len(cells)} trainable cells: {inputs} inputs "
          f"(n={X.shape[0]}, N0={X.shape[1]}), width {width}, {seeds} seeds, {thetas} θ; {seconds:.1f}s")
    print(f"  max off-diagonal correlation: input {out['input_correlation_max_offdiag']:.3f}, "
          f"cell input {out['cell_input_correlation_max_offdiag']:.3f}")
    for k, v in taus.items():
        print(f"  τ({k}) = {v['tau']:+.3f}  (p = {v['p']:.1e})")
    for k, v in violations.items():
        shown = ", ".join(v[:12]) + (" …" if len(v) > 12 else "")
        print(f"  {k}: {len(v)} cells{': ' + shown if v else ''}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--validate", action="store_true", help="exact kernels vs Monte Carlo at large width")
    p.add_argument("--val-width", type=int, default=2048)
    p.add_argument("--val-seeds", type=int, default=32)
    p.add_argument("--val-tol", type=float, default=0.03)
    p.add_argument("--mc", action="store_true", help="Kendall τ of closed forms vs Monte Carlo (541 cells)")
    p.add_argument("--inputs", choices=("gaussian", "digits", "both"), default="both")
    p.add_argument("--n", type=int, default=16, help="number of inputs for --mc (default 16)")
    p.add_argument("--width", type=int, default=256, help="Monte-Carlo width for --mc (default 256)")
    p.add_argument("--seeds", type=int, default=8, help="Monte-Carlo seeds for --mc (default 8)")
    p.add_argument("--thetas", type=int, default=32, help="θ values on the great circle (default 32)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    results: dict[str, Any] = {}
    if args.out.exists():
        try:
            results = json.loads(args.out.read_text())
        except json.JSONDecodeError:
            results = {}
    results["machine"] = {"python": platform.python_version(), "platform": platform.platform(),
                          "numpy": np.__version__}
    results["timing"] = timing()
    if args.validate:
        results["validation"] = validation(args.val_width, args.val_seeds, n=6, dim=64, tol=args.val_tol)
    if args.mc:
        sets = ("gaussian", "digits") if args.inputs == "both" else (args.inputs,)
        results["mc"] = {}
        for name in sets:
            X = unit_gaussian(args.n, 64, seed=0) if name == "gaussian" else digits_inputs(args.n)
            results["mc"][name] = closing_figures(X, name, args.width, args.seeds, args.thetas)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

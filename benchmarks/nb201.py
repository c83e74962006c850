"""NAS-Bench-201 benchmark tables from the study stores: Kendall τ, split-half fits, search.

The numbers come from two studies (run them first; both resume where they stopped)::

    trilemma run examples/nb201_cifar10.toml --workers 2       # closed form (all cells), fused suite (sample), accuracy
    trilemma nb201 search --study examples/nb201_search.toml --measure --workers 2 --seeds 20 \\
        --indicator naswot,tenas,trilemma,jacob_cov,ntk_condition,linear_regions_batch,conv_score,live_params,params \\
        --filter none,centre,reference --out benchmarks/results/nb201_search.csv

This script reads them and writes ``benchmarks/results/nb201.md`` and ``nb201.json``:

1. Kendall τ-b and Spearman ρ (:mod:`trilemma._stats`) of every indicator with CIFAR-10
   validation accuracy: closed-form columns on all 15,625 cells and on the 5,425 distinct
   networks, at-init columns on the measured sample (connected cells; and all cells with the
   disconnected ones ranked last, by the measure's a-priori direction).
2. Weights fitted on a seeded half, τ on the other half (``--splits`` halves): ``conv_score``'s
   op weights (a grid of small integers, on half A of all cells) and the combined indicator's
   convergence / generalization representatives and weights (on the measured cells of half
   A, with the ``conv_score`` fitted on A); beside them the label-free designs (no weight
   fitted on any accuracy), on the same halves.
3. The search table (:func:`trilemma.nb201.summarise_search` of the search rows) next to the
   published NeurIPS 2022 numbers.

Example::

    .venv/bin/python benchmarks/nb201.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trilemma._stats import kendall_tau, spearman_rho
from trilemma.measures import get_measure
from trilemma.nb201 import INDICATORS, NBSZ_PROXIES, combined_indicator, load_nbsz_proxies, summarise_search
from trilemma.spaces import NB201Spec, unique_nb201_cells
from trilemma.study import load_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TRUTH = "cifar10_val_acc"

#: Published NAS-Bench-201 search results (Chen et al., NeurIPS 2022, Table 4): CIFAR-10 / CIFAR-100 /
#: ImageNet16-120 *test* accuracy (%) and the filter's saving of search cost.
PUBLISHED_SEARCH = [
    ("WOT (NASWOT, N = 100)", "92.81 / 69.48 / 43.10", ""), ("WOT + DAG", "92.98 / 69.86 / 43.44", "40 %"),
    ("TE-NAS (pruning)", "93.9 / 71.24 / 42.38", ""), ("TE-NAS + DAG", "93.6 / 71.26 / 44.38", "31 %"),
    ("optimum", "94.37 / 73.51 / 47.31", ""),
]
#: Published Kendall τ on all 15,625 cells, CIFAR-10 (NeurIPS 2022 and the papers it cites).
PUBLISHED_TAU = {"#params": 0.58, "synflow": 0.57, "NASWOT": 0.56, "TE-NAS": 0.54, "GradSign": 0.62, "ZiCo": 0.59,
                 "AZ-NAS": 0.74}

#: conv_score's op weights: the grid searched on half A (skip, 1x1 conv, 3x3 conv, pool) and the shipped ones.
CONV_GRID = list(itertools.product((-1, 0, 1), (0, 1, 2, 3), (0, 1, 2, 3, 4, 6, 9), (-2, -1, 0)))
CONV_SHIPPED = (0, 1, 2, -1)
#: Combined design on half A: expressivity = conv_score fitted on A; these representatives and weights.
FIT_CONVERGENCE = {"jacob_cov": 1, "naswot": 1, "ntk_condition": -1, "ntk_lambda_min": 1, "ntk_bound": 1}
FIT_GENERALIZATION = {"live_params": 1, "params": 1, "synflow": 1}
FIT_WEIGHTS = (0.01, 0.03, 0.1, 0.3, 1.0)
#: Label-free designs: a-priori directions, equal weights (AZ-NAS log-rank aggregation), nothing fitted.
LABEL_FREE: dict[str, list[tuple[str, int]]] = {
    "live_params": [("live_params", 1)],
    "three axes, closed form (d̄, ntk_bound, live_params)": [("mean_depth", 1), ("ntk_bound", 1), ("live_params", 1)],
    "live_params + live_pools (−)": [("live_params", 1), ("live_pools", -1)],
    "three axes, measured (linear regions, NTK cond. (−), live_params)":
        [("linear_regions_batch", 1), ("ntk_condition", -1), ("live_params", 1)],
    "zero-cost ensemble (naswot, synflow, jacob_cov, live_params)":
        [("naswot", 1), ("synflow", 1), ("jacob_cov", 1), ("live_params", 1)],
    "TE-NAS (NTK cond. (−), linear regions)": [("ntk_condition", -1), ("linear_regions_batch", 1)],
}


def direction(col: str) -> int:
    """A column's a-priori direction (+1: larger is better): the closed-form table's, else the measure's."""
    if col in INDICATORS:
        return INDICATORS[col].direction
    hib = get_measure(col).higher_is_better
    return 0 if hib is None else (1 if hib else -1)


def last_if_disconnected(df: pd.DataFrame, col: str) -> np.ndarray:
    """``df[col]`` with the cells without an input→output path below every other cell."""
    d = direction(col) or 1
    v = df[col].to_numpy(dtype=float).copy()
    conn = df["has_path"].to_numpy(dtype=bool)
    good = v[conn & np.isfinite(v)]
    v[~conn] = good.min() - 1 if d > 0 else good.max() + 1
    return v


def design_score(df: pd.DataFrame, axes: list[tuple[str, int]], weights: list[float] | None = None) -> np.ndarray:
    """Log-rank combination (``combined_indicator``), disconnected cells last; NaN where a measure is missing."""
    cols = [c for c, _ in axes]
    ok = df[cols].notna().all(axis=1).to_numpy() | ~df["has_path"].to_numpy(dtype=bool)
    out = np.full(len(df), np.nan)
    items = [(c, d, w) for (c, d), w in zip(axes, weights or [1.0] * len(axes))]
    out[ok] = combined_indicator(df[ok], items).to_numpy()
    return out


def conv_scores(df: pd.DataFrame, grid: list[tuple[int, ...]]) -> dict[tuple[int, ...], np.ndarray]:
    """``conv_score`` of every cell for each op-weight tuple ``(skip, 1x1 conv, 3x3 conv, pool)``,
    disconnected cells last."""
    codes = np.stack([np.array(NB201Spec.from_index(int(i)).codes) for i in df["index"]])
    live = np.stack([np.array(NB201Spec.from_index(int(i)).live_edges) for i in df["index"]])
    conn = df["has_path"].to_numpy(dtype=bool)
    out = {}
    for w in grid:
        s = (np.array((0, *w))[codes] * live).sum(1).astype(float)
        out[w] = np.where(conn, s, s.min() - 1)
    return out


# ---------------------------------------------------------------------------- 1. τ tables
def tau_table(df: pd.DataFrame, schema: Any, sample: pd.Series) -> pd.DataFrame:
    y = df[TRUTH].to_numpy(dtype=float)
    reps = df["index"].isin({s.index for s in unique_nb201_cells()}).to_numpy()
    conn = df["has_path"].to_numpy(dtype=bool)
    rows = []
    for col in schema:
        if col.name == TRUTH or col.dtype not in ("float", "int") or col.name not in df.columns:
            continue
        if col.kind in ("topology", "theory", "cost") and col.source.startswith("space"):
            v = df[col.name].to_numpy(dtype=float)
            rows.append({"indicator": col.name, "kind": "closed form", "cells": len(df),
                         "tau": kendall_tau(v, y), "rho": spearman_rho(v, y),
                         "tau distinct networks": kendall_tau(v[reps], y[reps]),
                         "tau sample": kendall_tau(v[sample], y[sample])})
        elif col.source == "proxy_suite" and not col.name.endswith(("_error", "_seconds")):
            v = df[col.name].to_numpy(dtype=float)
            m = sample & conn
            last = last_if_disconnected(df[sample], col.name) if direction(col.name) else None
            rows.append({"indicator": col.name, "kind": "at init", "cells": int(np.isfinite(v[m]).sum()),
                         "tau": kendall_tau(v[m], y[m]), "rho": spearman_rho(v[m], y[m]),
                         "tau sample": np.nan if last is None else kendall_tau(last, y[sample])})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- 2. split halves
def split_half(df: pd.DataFrame, sample: np.ndarray, splits: int) -> pd.DataFrame:
    y = df[TRUTH].to_numpy(dtype=float)
    grid_scores = conv_scores(df, CONV_GRID)
    samp = df[sample].reset_index(drop=True)
    ys = samp[TRUTH].to_numpy(dtype=float)
    rows = []
    for k in range(splits):
        half = np.random.default_rng(k).permutation(len(df)) < len(df) // 2
        best_w = max(CONV_GRID, key=lambda w: kendall_tau(grid_scores[w][half], y[half]))
        row: dict[str, Any] = {"split": k, "conv_score weights on A (skip, 1x1, 3x3, pool)": str(best_w),
                               "conv_score fitted: tau B": kendall_tau(grid_scores[best_w][~half], y[~half]),
                               "conv_score shipped: tau B": kendall_tau(grid_scores[CONV_SHIPPED][~half], y[~half])}
        for name, axes in LABEL_FREE.items():
            if all(c in df.columns for c, _ in axes) and all(c in INDICATORS for c, _ in axes):
                row[f"{name}: tau B"] = kendall_tau(design_score(df, axes)[~half], y[~half])
        # the combined indicator on the measured cells of half A, conv_score fitted on A
        sa = half[sample]
        samp["conv_fit"] = grid_scores[best_w][sample]
        grid = [(c, g, wc, wg) for c in FIT_CONVERGENCE if c in samp for g in FIT_GENERALIZATION if g in samp
                for wc in FIT_WEIGHTS for wg in FIT_WEIGHTS]
        scores = {key: design_score(samp, [("conv_fit", 1), (key[0], FIT_CONVERGENCE[key[0]]),
                                           (key[1], FIT_GENERALIZATION[key[1]])], [1.0, key[2], key[3]])
                  for key in grid}
        best = max(grid, key=lambda key: kendall_tau(scores[key][sa], ys[sa]))
        row["combined chosen on A"] = str(best)
        row["combined fitted: tau B (sample)"] = kendall_tau(scores[best][~sa], ys[~sa])
        row["conv_score fitted: tau B (sample)"] = kendall_tau(samp["conv_fit"].to_numpy()[~sa], ys[~sa])
        for name, axes in LABEL_FREE.items():
            if all(c in samp.columns for c, _ in axes):
                row[f"{name}: tau B (sample)"] = kendall_tau(design_score(samp, axes)[~sa], ys[~sa])
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- helpers
def md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(("—" if np.isnan(v) else f"{v:.3f}") if isinstance(v, float) else str(v)
                                       for v in r) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--study", default=str(ROOT / "examples" / "nb201_cifar10.toml"))
    p.add_argument("--search", default=str(RESULTS / "nb201_search.csv"))
    p.add_argument("--splits", type=int, default=10)
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args(argv)
    df = load_results(args.study)
    schema = df.attrs["schema"]
    df = df.sort_values("index").reset_index(drop=True)
    sample = (df["proxy_suite_status"] == "complete").to_numpy() if "proxy_suite_status" in df else np.zeros(len(df), bool)
    report: dict[str, Any] = {"study": args.study, "cells": len(df), "measured": int(sample.sum()),
                              "distinct_measured": int(df.loc[sample, "measured_as"].nunique()) if sample.any() else 0}
    taus = tau_table(df, schema, sample)
    lf = pd.DataFrame([{"label-free design": n, "tau all cells" if all(c in INDICATORS for c, _ in a) else "tau sample":
                        kendall_tau(design_score(df if all(c in INDICATORS for c, _ in a) else df[sample], a),
                                    df[TRUTH].to_numpy(float) if all(c in INDICATORS for c, _ in a)
                                    else df.loc[sample, TRUTH].to_numpy(float))}
                       for n, a in LABEL_FREE.items() if all(c in df.columns for c, _ in a)])
    split = split_half(df, sample, args.splits) if sample.any() else pd.DataFrame()
    nbsz = load_nbsz_proxies()
    pub = pd.DataFrame([{"proxy (NAS-Bench-Suite-Zero, 724 cells, published scores)": c,
                         "tau": kendall_tau(nbsz[c], nbsz["val_accuracy"])} for c in NBSZ_PROXIES])
    text = ["# NAS-Bench-201 benchmark", "",
            f"Study `{args.study}`: {len(df)} cells, {report['measured']} measured at init "
            f"({report['distinct_measured']} distinct networks). Ground truth: CIFAR-10 validation accuracy (%), "
            "NAS-Bench-201 200-epoch schedule. Kendall τ-b (`trilemma._stats.kendall_tau`).", "",
            "## 1. Kendall τ of every indicator", "",
            "Closed form: over all cells, the distinct networks and the measured sample. At init: `tau`/`rho` over "
            "the measured cells with an input→output path; `tau sample` over every sampled cell with the "
            "path-less cells ranked last (— where the measure has no a-priori direction, or where it is constant, "
            "as `linear_regions_batch` at 64 images: 64 patterns on every connected cell).", "",
            md(taus), "",
            "Published τ on all cells: " + ", ".join(f"{k} {v:.2f}" for k, v in PUBLISHED_TAU.items()) + ".", "",
            md(pub), "", "## 2. Label-free designs and weights fitted on half the cells", "", md(lf), ""]
    if not split.empty:
        means = split.drop(columns=[c for c in split.columns if not c.startswith(("conv", "combined fitted")) and
                                    "tau" not in c]).select_dtypes("number").drop(columns="split", errors="ignore")
        summary = pd.DataFrame({"tau B mean": means.mean(), "std": means.std(ddof=1)}).reset_index(names="quantity")
        text += [f"Over {args.splits} seeded halves (A: fit, B: evaluate):", "", md(summary), "", md(split), ""]
        report["split_half"] = split.to_dict("records")
    if Path(args.search).is_file():
        rows = pd.read_csv(args.search)
        s = summarise_search(rows)
        s["mean ± std"] = [f"{m:.2f} ± {sd:.2f}" for m, sd in zip(s["mean"], s["std"])]
        text += ["## 3. Training-free search", "",
                 f"`{args.search}`: {rows['seed'].nunique()} seeds, {int(rows['drawn'].iloc[0])} cells drawn per "
                 "seed; accuracy = CIFAR-10 **validation** accuracy (%) of the chosen cell from the reference table "
                 f"(the published numbers are test accuracies; the best validation accuracy in the table is "
                 f"{df[TRUTH].max():.2f}).", "",
                 md(s[["indicator", "filter", "seeds", "mean ± std", "evaluated", "cost_saving", "optimum"]]), "",
                 "Published (Chen et al., NeurIPS 2022), CIFAR-10 / CIFAR-100 / ImageNet16-120 test accuracy:", "",
                 md(pd.DataFrame(PUBLISHED_SEARCH, columns=["method", "accuracy", "search cost saved"])), ""]
        report["search"] = s.to_dict("records")
    report["tau"] = taus.to_dict("records")
    report["label_free"] = lf.to_dict("records")
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "nb201.md").write_text("\n".join(text))
    (out / "nb201.json").write_text(json.dumps(report, indent=2, default=float))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""NAS-Bench-201 benchmark: closed-form indicators, measures at init, published proxies, search.

Parts (``--parts``, default all):

1. Kendall τ / Spearman ρ of every closed-form indicator vs CIFAR-10 validation accuracy on all
   15,625 cells (and on one representative per isomorphism class), the time to compute the
   whole table, and a split-half check of ``conv_score``'s hand-picked weights.
2. Measures at initialization (trilemma.measures registry) on a fixed seeded sample of cells
   (``--cells``, default 1,000) of a network (``--net proxy``: C=8, N=1; ``--net standard``:
   C=16, N=5) fed ``--batch`` real CIFAR-10 images; correlations, seconds per cell, and the
   combined indicator (default design ``trilemma``, every named design, and a split-half check
   of its selection). Every measure runs with its defaults (BatchNorm batch statistics); a few
   runs repeat a measure under a reference convention or with ``batchnorm="eval"`` for
   comparison (labels ``*_zcn``, ``*_ref``, ``*_eval``). The 1,000 CIFAR-10 images
   carry no labels: the label-needing proxies (snip, grad_norm, grasp, fisher) get seeded
   uniformly random labels (:func:`random_labels`), not the true labels of the published
   protocol. Resumable: every (cell, run) result is appended to a cache CSV and skipped on the
   next run (``--max-minutes`` stops early; run again to continue).
3. The 724 NAS-Bench-Suite-Zero cells: trilemma's indicators and the published proxies side
   by side against the same accuracies, and rank agreement of ours with the published score
   for proxies both implement (params, FLOPs, and measured ones when part 2 measured them;
   ``--nbsz-measures`` adds the 724 cells to part 2's work list).
4. Training-free search: 100 random cells, pick the best by an indicator, 500 repeats; mean ±
   std accuracy of the picks with and without the (d̄, m̄) centre filter, and the fraction
   removed / cells evaluated.

Writes ``benchmarks/results/nb201.md``, ``nb201.json`` and ``nb201_scores.csv`` (every score of
every cell: closed-form columns for all 15,625, measured columns where measured, published
proxies where published). Example::

    .venv/bin/python benchmarks/nb201.py --parts 1,3,4
    .venv/bin/python benchmarks/nb201.py --parts 2 --cells 200 --max-minutes 30
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, spearmanr

from trilemma.nb201 import (
    COMBINED_VARIANTS,
    DEFAULT_COMBINED,
    INDICATORS,
    SECONDARY_WEIGHT,
    centre_filter,
    closed_form_table,
    combined_indicator,
    load_cifar10_images,
    load_nb201_accuracy,
    load_nbsz_proxies,
)
from trilemma.spaces import NUM_NB201_CELLS, NB201Spec, sample_nb201, unique_nb201_cells

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("benchmarks.nb201")

RESULTS = Path(__file__).resolve().parent / "results"

#: Published Kendall τ on all 15,625 cells, CIFAR-10 (Chen et al., NeurIPS 2022 and the papers it cites).
PUBLISHED_TAU = {"#params": 0.58, "synflow": 0.57, "NASWOT": 0.56, "TE-NAS": 0.54, "GradSign": 0.62, "ZiCo": 0.59, "AZ-NAS": 0.74}

@dataclass(frozen=True)
class Run:
    """One registry call per cell in part 2 and the labels read from its result.

    Attributes:
        measure: Registered measure name (trilemma.measures).
        options: Keyword options of the call.
        n_inputs: Use only the first ``n_inputs`` images (None = the whole batch).
        labels: ``{our label: "value" or a key of the result's extras}``.
        key: Cache key of the run (default: the measure name; distinct per option set).
    """

    measure: str
    options: dict
    n_inputs: int | None
    labels: dict
    key: str = ""

    @property
    def id(self) -> str:
        return self.key or self.measure


#: Part 2's registry calls, every measure with its defaults (BatchNorm batch statistics). One NTK
#: call yields all its spectrum statistics (extras); the NNGP Gram of the 4C pooled features is
#: rank-deficient for more than 4C inputs, so it uses 16. The ``*_zcn`` / ``*_ref`` runs use a
#: reference implementation's convention, ``*_eval`` runs BatchNorm's running statistics. (TE-NAS's
#: NTK convention, ``ntk_condition(convention="te-nas")``, costs another batch-mode NTK per cell and
#: is left out.)
RUNS: tuple[Run, ...] = (
    Run("ntk_lambda_min", {"dtype": "float32"}, None,
        {"ntk_lambda_min": "lambda_min", "ntk_cond": "condition", "ntk_robust": "lambda_robust", "ntk_trace": "trace"}),
    Run("ntk_lambda_min", {"dtype": "float32", "batchnorm": "eval"}, None,
        {"ntk_lambda_min_eval": "lambda_min", "ntk_cond_eval": "condition"}, key="ntk_lambda_min@eval"),
    Run("nngp_lambda_min", {}, 16, {"nngp_lambda_min": "lambda_min", "nngp_cond": "condition"}),
    Run("curvature", {"num_points": 32, "dtype": "float32"}, None,
        {"curvature": "value", "length_distortion": "length_distortion"}),
    Run("linear_regions_batch", {}, None, {"linear_regions": "value"}),
    Run("naswot", {}, None, {"naswot": "value"}),
    Run("naswot", {"convention": "naswot"}, None, {"naswot_ref": "value"}, key="naswot@naswot"),
    Run("synflow", {}, None, {"synflow": "value"}),
    Run("jacob_cov", {}, None, {"jacob_cov": "value"}),
    Run("snip", {}, None, {"snip": "value"}),
    Run("grad_norm", {}, None, {"grad_norm": "value"}),
    Run("grasp", {}, None, {"grasp": "value"}),
    Run("fisher", {}, None, {"fisher": "value"}),
    Run("fisher", {"convention": "zero-cost-nas"}, None, {"fisher_zcn": "value"}, key="fisher@zero-cost-nas"),
    Run("snip", {"batchnorm": "eval"}, None, {"snip_eval": "value"}, key="snip@eval"),
    Run("grad_norm", {"batchnorm": "eval"}, None, {"grad_norm_eval": "value"}, key="grad_norm@eval"),
    Run("fisher", {"batchnorm": "eval"}, None, {"fisher_eval": "value"}, key="fisher@eval"),
)
WANTED_MEASURES: tuple[str, ...] = tuple(lab for r in RUNS for lab in r.labels)

#: Our measure label → the NAS-Bench-Suite-Zero proxy computing the same thing (the label whose
#: convention matches the reference code used by NAS-Bench-Suite-Zero where they differ).
SAME_PROXY = {"naswot_ref": "nwot", "synflow": "synflow", "jacob_cov": "jacov", "grad_norm": "grad_norm",
              "snip": "snip", "fisher_zcn": "fisher", "grasp": "grasp"}


def random_labels(n: int, seed: int, num_classes: int = 10) -> torch.Tensor:
    """Seeded uniformly random class labels for the label-needing proxies.

    The shared CIFAR-10 images have no labels. At initialization a network knows nothing of the
    classes, so random labels give loss gradients of the same kind as true ones, but the numbers
    are not those of the published protocol (true labels); the same labels are used for every cell.
    """
    import torch

    return torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(10_000 + seed))

NETS = {"proxy": (8, 1), "standard": (16, 5)}


# ---------------------------------------------------------------------------- helpers
def corr(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(Kendall τ-b, Spearman ρ); NaN-free inputs only."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if np.ptp(x) == 0:
        return 0.0, 0.0
    return float(kendalltau(x, y)[0]), float(spearmanr(x, y)[0])


def corr_rows(table: pd.DataFrame, columns: list[str], target: np.ndarray, **extra: object) -> list[dict]:
    rows = []
    for col in columns:
        values = table[col].to_numpy(dtype=float)
        ok = np.isfinite(values)
        tau, rho = corr(values[ok], target[ok])
        rows.append({"indicator": col, "n": int(ok.sum()), "kendall_tau": tau, "spearman_rho": rho, **extra})
    return rows


def md_table(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        cells = [floatfmt.format(v) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- part 1
def conv_score_grid(table: pd.DataFrame, acc: np.ndarray, seed: int, splits: int = 5) -> list[dict]:
    """Split-half check: choose conv_score weights on half A, score them on half B."""
    codes = np.stack([np.array(NB201Spec.from_index(int(i)).codes) for i in table["index"]])
    live = np.stack([np.array(NB201Spec.from_index(int(i)).live_edges) for i in table["index"]])
    has_path = table["has_path"].to_numpy()
    grid = list(itertools.product((-1, 0, 1), (0, 1, 2, 3), (0, 1, 2, 3, 4, 6, 9), (-2, -1, 0)))  # skip, c1, c3, pool
    scores = {}
    for w in grid:
        weights = np.array((0, *w))
        s = (weights[codes] * live).sum(1)
        scores[w] = np.where(has_path, s, s.min() - 1)
    rng = np.random.default_rng(seed)
    out = []
    for k in range(splits):
        half = rng.permutation(len(table)) < len(table) // 2
        best = max(grid, key=lambda w: kendalltau(scores[w][half], acc[half])[0])
        ours = (0, 1, 2, -1)
        out.append(
            {
                "split": k,
                "chosen_weights(skip,c1,c3,pool)": str(best),
                "tau_A_chosen": float(kendalltau(scores[best][half], acc[half])[0]),
                "tau_B_chosen": float(kendalltau(scores[best][~half], acc[~half])[0]),
                "tau_B_ours(0,1,2,-1)": float(kendalltau(scores[ours][~half], acc[~half])[0]),
            }
        )
    return out


def part1(table: pd.DataFrame, acc: np.ndarray, args: argparse.Namespace, report: dict) -> str:
    cols = [c for c in INDICATORS if c in table.columns]
    t0 = time.perf_counter()
    closed_form_table(corr=args.corr)
    t_table = time.perf_counter() - t0
    rows = corr_rows(table, cols, acc, cells="all 15,625")
    reps = {s.index for s in unique_nb201_cells()}
    mask = table["index"].isin(reps).to_numpy()
    rows += corr_rows(table[mask], cols, acc[mask], cells=f"unique ({int(mask.sum())})")
    df = pd.DataFrame(rows)
    grid = conv_score_grid(table, acc, args.seed)
    report["part1"] = {"seconds_all_cells": t_table, "correlations": rows, "conv_score_split_half": grid}
    wide = df.pivot_table(index="indicator", columns="cells", values=["kendall_tau", "spearman_rho"], sort=False)
    wide.columns = [f"{a} ({b})" for a, b in wide.columns]
    wide = wide.reindex(cols).reset_index()
    best = df[df["cells"] == "all 15,625"].sort_values("kendall_tau", ascending=False).iloc[0]
    text = [
        "## 1. Closed-form indicators vs CIFAR-10 validation accuracy",
        "",
        f"All 15,625 cells computed in **{t_table:.3f} s** (`closed_form_table()`, corr={args.corr}). "
        f"Best: **{best['indicator']}** τ = {best['kendall_tau']:.3f}, ρ = {best['spearman_rho']:.3f}. "
        f"Published τ (all cells): {', '.join(f'{k} {v:.2f}' for k, v in PUBLISHED_TAU.items())}.",
        "",
        md_table(wide),
        "",
        "`conv_score` weights were hand-picked after looking at this data. Split-half check (weights "
        "chosen by τ on a random half A from a grid of 336 integer tuples, scored on half B):",
        "",
        md_table(pd.DataFrame(grid)),
        "",
    ]
    return "\n".join(text)


# ---------------------------------------------------------------------------- part 2
def resolve_runs(wanted: list[str] | None) -> tuple[list[Run], list[str]]:
    """The runs whose measure is registered (restricted to runs giving a ``wanted`` label)."""
    try:
        from trilemma.measures import list_measures
    except ImportError as exc:  # pragma: no cover - measures not installed
        logger.warning("trilemma.measures unavailable: %s", exc)
        return [], [r.measure for r in RUNS]
    registered = set(list_measures())
    runs, missing = [], []
    for r in RUNS:
        if wanted is not None and not set(r.labels) & set(wanted):
            continue
        if r.measure in registered:
            runs.append(r)
        else:
            missing.append(r.measure)
    return runs, missing


CACHE_COLUMNS = ["index", "net", "batch", "seed", "run", "label", "value", "seconds", "error"]


def read_cache(path: Path) -> pd.DataFrame:
    if path.is_file():
        return pd.read_csv(path)
    return pd.DataFrame(columns=CACHE_COLUMNS)


def _scalar(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def run_measures(cells: list[int], runs: list[Run], args: argparse.Namespace, cache_path: Path) -> None:
    import torch

    from trilemma.measures import get_measure
    from trilemma.models import build_nb201

    torch.set_num_threads(max(1, args.threads))
    C, N = NETS[args.net]
    x = torch.from_numpy(load_cifar10_images(args.batch))
    y = random_labels(args.batch, args.seed)
    cache = read_cache(cache_path)
    mine = cache[(cache["net"] == args.net) & (cache["batch"] == args.batch) & (cache["seed"] == args.seed)]
    done = set(zip(mine["index"].astype(int), mine["run"]))
    deadline = time.time() + 60 * args.max_minutes if args.max_minutes else None
    new_file = not cache_path.is_file()
    t_start, n_new = time.time(), 0
    with cache_path.open("a", newline="") as fh:
        writer = csv.writer(fh)
        if new_file:
            writer.writerow(CACHE_COLUMNS)
        for k, idx in enumerate(cells):
            todo = [r for r in runs if (idx, r.id) not in done]
            if not todo:
                continue
            if deadline and time.time() > deadline:
                logger.warning("time budget reached at cell %d of %d; run again to resume", k, len(cells))
                break
            key = [idx, args.net, args.batch, args.seed]
            t0 = time.perf_counter()
            model = build_nb201(NB201Spec.from_index(int(idx)), C=C, N=N, seed=args.seed)
            writer.writerow([*key, "_build", "", "", time.perf_counter() - t0, ""])
            for r in todo:
                opts = {k2: (getattr(torch, v) if k2 == "dtype" else v) for k2, v in r.options.items()}
                measure = get_measure(r.measure)
                n_in = r.n_inputs or args.batch
                labels = y[:n_in] if measure.needs_labels else None
                t0 = time.perf_counter()
                try:
                    res = measure(model, x[:n_in], labels, **opts)
                    sec = time.perf_counter() - t0
                    for lab, src in r.labels.items():
                        v = res.value if src == "value" else _scalar(res.extras.get(src))
                        err = "" if v is not None else f"no finite extras[{src!r}]"
                        writer.writerow([*key, r.id, lab, "" if v is None else v, sec, err])
                except Exception as exc:  # recorded and reported as a failure count, never a silent NaN
                    sec = time.perf_counter() - t0
                    for lab in r.labels:
                        writer.writerow([*key, r.id, lab, "", sec, f"{type(exc).__name__}: {exc}"[:300]])
            fh.flush()
            n_new += 1
            if n_new % 25 == 0:
                logger.info("part 2: %d new cells (%d/%d), %.1f s/cell", n_new, k + 1, len(cells),
                            (time.time() - t_start) / n_new)


def measured_table(cache_path: Path, args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame]:
    cache = read_cache(cache_path)
    cache = cache[(cache["net"] == args.net) & (cache["batch"] == args.batch) & (cache["seed"] == args.seed)]
    cache = cache[cache["run"].isin({"_build", *(r.id for r in RUNS)})]  # runs no longer in RUNS are ignored
    vals = cache[cache["run"] != "_build"]
    ok = vals[vals["error"].isna()]
    wide = ok.pivot_table(index="index", columns="label", values="value", aggfunc="last")
    # seconds per cell: build + every run once (a run's time is repeated on each of its labels)
    per_run = cache.drop_duplicates(subset=["index", "run"])
    wide["seconds_per_cell"] = per_run.groupby("index")["seconds"].sum().reindex(wide.index)
    timing = per_run.groupby("run")["seconds"].agg(["mean", "median", "count"])
    fails = vals[vals["error"].notna()].drop_duplicates(subset=["index", "run"]).groupby("run").size()
    timing["failed_cells"] = fails.reindex(timing.index).fillna(0).astype(int)
    return wide.reset_index(), timing.reset_index()


#: Part 2's column of each combined-indicator design (trilemma.nb201.COMBINED_VARIANTS).
COMBINED_COLUMNS: dict[str, str] = {f"combined_{name}": name for name in COMBINED_VARIANTS}
DEFAULT_COLUMN = f"combined_{DEFAULT_COMBINED}"


def measured_combined(df: pd.DataFrame) -> dict[str, pd.Series]:
    """Every combined design of :data:`COMBINED_COLUMNS` whose axis columns ``df`` holds."""
    out = {}
    for col, name in COMBINED_COLUMNS.items():
        if all(c in df.columns for c, *_ in COMBINED_VARIANTS[name]):
            out[col] = combined_indicator(df, name)
    return out


#: Split-half selection of the combined design: the expressivity axis is ``conv_score``
#: (weight 1); a convergence and a generalization representative and their weights are chosen
#: by τ on half A from this grid, then scored on half B.
SELECTION_CONVERGENCE = {"jacob_cov": 1, "naswot": 1, "ntk_cond": -1, "nngp_cond": -1, "ntk_lambda_min": 1,
                         "curvature": 1, "ntk_bound": 1}
SELECTION_GENERALIZATION = {"live_params": 1, "params": 1, "synflow": 1}
SELECTION_WEIGHTS = (0.01, 0.03, 0.1, 0.3, 1.0)


def within_level_tau(samp: pd.DataFrame, col: str, direction: int, y: np.ndarray, level: str = "conv_score") -> float:
    """Kendall τ-a of ``direction * samp[col]`` vs ``y`` over pairs of connected cells tied in ``level``."""
    conc, pairs = 0.0, 0
    conn = samp["has_path"].to_numpy(dtype=bool)
    for idx in samp[conn].groupby(level).indices.values():
        if len(idx) < 2:
            continue
        rows = np.flatnonzero(conn)[idx]
        x = direction * samp[col].to_numpy(dtype=float)[rows]
        iu = np.triu_indices(len(rows), 1)
        conc += float((np.sign(x[:, None] - x[None, :]) * np.sign(y[rows][:, None] - y[rows][None, :]))[iu].sum())
        pairs += len(iu[0])
    return conc / pairs if pairs else 0.0


def combined_split_half(samp: pd.DataFrame, y: np.ndarray, seeds: int = 10) -> list[dict]:
    """Choose (convergence axis, generalization axis, their weights) on a random half A of the
    sample, score the choice and the fixed default design on both halves; ``seeds`` splits.

    ``samp`` holds every sample cell (disconnected ones ranked last, as ``combined_indicator``
    does); ``y`` their accuracies.
    """
    grid = [
        (c, g, wc, wg)
        for c in SELECTION_CONVERGENCE if c in samp.columns
        for g in SELECTION_GENERALIZATION if g in samp.columns
        for wc in SELECTION_WEIGHTS for wg in SELECTION_WEIGHTS
    ]
    scores = {
        key: combined_indicator(
            samp, [("conv_score", 1, 1.0), (key[0], SELECTION_CONVERGENCE[key[0]], key[2]),
                   (key[1], SELECTION_GENERALIZATION[key[1]], key[3])]
        ).to_numpy()
        for key in grid
    }
    default = combined_indicator(samp, DEFAULT_COMBINED).to_numpy()
    conv = disconnected_worst(samp, "conv_score", 1)
    out = []
    for k in range(seeds):
        half = np.random.default_rng(k).permutation(len(samp)) < len(samp) // 2
        best = max(grid, key=lambda key: kendalltau(scores[key][half], y[half])[0])
        out.append(
            {
                "seed": k,
                "chosen on A (conv., gen., w_conv, w_gen)": str(best),
                "tau_A chosen": float(kendalltau(scores[best][half], y[half])[0]),
                "tau_B chosen": float(kendalltau(scores[best][~half], y[~half])[0]),
                f"tau_A {DEFAULT_COMBINED}": float(kendalltau(default[half], y[half])[0]),
                f"tau_B {DEFAULT_COMBINED}": float(kendalltau(default[~half], y[~half])[0]),
                "tau_B conv_score": float(kendalltau(conv[~half], y[~half])[0]),
            }
        )
    return out


#: A priori directions (+1: larger should be better) used to rank disconnected cells last.
DIRECTIONS: dict[str, int] = {
    **{k: v.direction for k, v in INDICATORS.items()},
    "naswot": 1, "naswot_ref": 1, "synflow": 1, "jacob_cov": 1, "curvature": 1, "length_distortion": 1,
    "snip": 1, "grad_norm": 1, "grasp": 1, "fisher": 1, "fisher_zcn": 1,
    "snip_eval": 1, "grad_norm_eval": 1, "fisher_eval": 1,
    "ntk_lambda_min": 1, "ntk_robust": 1, "nngp_lambda_min": 1, "ntk_cond": -1, "nngp_cond": -1,
    "ntk_cond_tenas": -1, "ntk_cond_eval": -1, "ntk_lambda_min_eval": 1,
    **{c: 1 for c in COMBINED_COLUMNS},
}


def disconnected_worst(df: pd.DataFrame, col: str, direction: int) -> np.ndarray:
    """``df[col]`` with cells without an input→output path set below (direction-wise) every other cell."""
    v = df[col].to_numpy(dtype=float).copy()
    conn = df["has_path"].to_numpy(dtype=bool)
    if conn.all():
        return v
    good = v[conn]
    v[~conn] = good.min() - 1.0 if direction > 0 else good.max() + 1.0
    return v


def part2_sample(n: int, seed: int) -> list[int]:
    """The first ``n`` cells of a seeded permutation of the space (a smaller ``--cells`` is a prefix)."""
    return [s.index for s in sample_nb201(NUM_NB201_CELLS, seed=seed)[:n]]


def part2(
    table: pd.DataFrame, acc_by_index: pd.Series, args: argparse.Namespace, report: dict, extra_cells: list[int]
) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """Returns the report text, every measured cell (with closed-form columns) and the evaluated sample."""
    cache_path = Path(args.cache)
    wanted = args.measures.split(",") if args.measures else None
    runs, missing = resolve_runs(wanted)
    sample = part2_sample(args.cells, args.seed)
    if runs and not args.no_run:
        run_measures(sample, runs, args, cache_path)
        if extra_cells:  # NBSZ cells: only the runs with a published counterpart
            same = [r for r in runs if set(r.labels) & set(SAME_PROXY)]
            run_measures([i for i in extra_cells if i not in set(sample)], same, args, cache_path)
    measures = {lab: r.id for r in runs for lab in r.labels}
    wide, timing = measured_table(cache_path, args)
    text = ["## 2. Measures at initialization", ""]
    C, N = NETS[args.net]
    text.append(
        f"Network `{args.net}` (C={C}, N={N}), batch of the first {args.batch} images of "
        f"`cifar10_unlabeled_1000.npz` (NAS-Bench-201 normalization), init seed {args.seed}; "
        f"sample: the first {args.cells} cells of `sample_nb201(15625, seed={args.seed})`. Every measure with its "
        "defaults (BatchNorm batch statistics) unless the run says otherwise; snip, grad_norm, grasp and fisher use "
        f"seeded uniformly random labels (`random_labels(n, {args.seed})`; the images have none), not the true labels "
        "of the published protocol. Registry runs used: "
        + (", ".join(f"{k}→`{v}`" for k, v in measures.items()) or "none")
        + ". Not registered (not run): " + (", ".join(missing) or "none") + ". Options: "
        + "; ".join(f"`{r.measure}` {r.options or ''} on {r.n_inputs or args.batch} images" for r in runs) + "."
    )
    text.append("")
    if wide.empty:
        text.append("_No measured cells yet._")
        report["part2"] = {"measures": measures, "missing": missing, "cells_measured": 0}
        return "\n".join(text), wide, wide
    merged = wide.merge(table, on="index", how="left")
    labels = [lab for lab in measures if lab in merged.columns]
    # every sample cell; unexpected failures (a connected cell missing a measure) are dropped
    samp = table[table["index"].isin(sample)].merge(wide, on="index", how="left")
    broken = samp["has_path"].to_numpy() & samp[labels].isna().any(axis=1).to_numpy()
    samp = samp[~broken].reset_index(drop=True)
    for name, series in measured_combined(samp).items():
        samp[name] = series
    connected = samp[samp["has_path"]].reset_index(drop=True)
    cols = labels + [c for c in (*COMBINED_COLUMNS, "trilemma_score") if c in samp.columns]
    cols += [c for c in INDICATORS if c in samp.columns and c not in cols]
    y_conn = acc_by_index.reindex(connected["index"]).to_numpy()
    y_all = acc_by_index.reindex(samp["index"]).to_numpy()
    rows = []
    for col in cols:
        tau_c, rho_c = corr(connected[col].to_numpy(dtype=float), y_conn)
        row = {"indicator": col, "tau (connected)": tau_c, "rho (connected)": rho_c}
        d = DIRECTIONS.get(col)
        if d is not None:
            tau_a, rho_a = corr(disconnected_worst(samp, col, d), y_all)
            row.update({"tau (all, disconnected last)": tau_a, "rho (all, disconnected last)": rho_a})
        rows.append(row)
    df = pd.DataFrame(rows).sort_values("tau (connected)", ascending=False, key=abs)
    n_disc = int((~samp["has_path"]).sum())
    text.append(
        f"{len(connected)} connected cells of the {len(sample)}-cell sample measured with every measure "
        f"(median {connected['seconds_per_cell'].median():.2f} s per cell incl. build); {n_disc} cells have no "
        f"input→output path (their output ignores the input, every input-dependent measure fails on them); "
        f"{int(broken.sum())} connected cells had a failed measure and are dropped. Columns 'all, disconnected "
        "last' rank the disconnected cells below every other cell for indicators with an a priori direction "
        "(as `combined_indicator` does)."
    )
    text += ["", md_table(df), "", "Time per measure (s):", "", md_table(timing), ""]
    combined_report = {}
    if DEFAULT_COLUMN in samp.columns:
        split = combined_split_half(samp, y_all)
        sdf = pd.DataFrame(split)
        default_row = df[df["indicator"] == DEFAULT_COLUMN].iloc[0]
        designs = "; ".join(
            f"`{name}`: " + ", ".join(f"{c} ({'+' if d > 0 else '−'}, w={w:g})" for c, d, w in axes)
            for name, axes in COMBINED_VARIANTS.items()
        )
        text += [
            "### Combined three-axis indicator",
            "",
            f"Default design `{DEFAULT_COMBINED}` (`combined_indicator(table)`): weighted sum of log normalized ranks "
            f"(AZ-NAS aggregation), expressivity `conv_score` (weight 1), convergence `jacob_cov` (weight "
            f"{SECONDARY_WEIGHT:g}), generalization `live_params` (weight {SECONDARY_WEIGHT:g}). On the "
            f"{len(samp)}-cell sample: **Kendall τ = {default_row['tau (all, disconnected last)']:.3f}** "
            f"(ρ = {default_row['rho (all, disconnected last)']:.3f}; connected cells only τ = "
            f"{default_row['tau (connected)']:.3f}).",
            "",
            "**These weights and representatives were selected on this benchmark** (this sample's CIFAR-10 "
            "accuracies; `conv_score`'s own op weights were picked on all 15,625 cells, which include the sample). "
            "The combination scores below `conv_score` alone: `conv_score` has 15 levels, τ-b ignores pairs tied "
            "in the indicator, and no measured axis orders cells within a level well enough (within-level τ: "
            + ", ".join(f"`{c}` {within_level_tau(samp, c, d, y_all):.3f}" for c, d in SELECTION_CONVERGENCE.items()
                        if c in samp.columns)
            + ") to pay for the pairs it unties; equal weights lower τ further. "
            "Split-half check (expressivity fixed to `conv_score`; convergence representative, generalization "
            f"representative and their weights in {SELECTION_WEIGHTS} chosen by τ on random half A, scored on "
            f"half B; the default design scored on both halves):",
            "",
            md_table(sdf),
            "",
            f"Mean over {len(sdf)} splits: τ_A chosen {sdf['tau_A chosen'].mean():.3f}, τ_B chosen "
            f"{sdf['tau_B chosen'].mean():.3f}; `{DEFAULT_COMBINED}` τ_A {sdf[f'tau_A {DEFAULT_COMBINED}'].mean():.3f}, "
            f"τ_B {sdf[f'tau_B {DEFAULT_COMBINED}'].mean():.3f}. Designs (`combined_<name>` rows above): {designs}.",
            "",
        ]
        combined_report = {
            "default": DEFAULT_COMBINED, "weights_selected_on_this_benchmark": True,
            "tau_all": float(default_row["tau (all, disconnected last)"]),
            "tau_connected": float(default_row["tau (connected)"]), "split_half": split,
        }
    report["part2"] = {
        "measures": measures, "missing": missing, "net": args.net, "batch": args.batch,
        "cells_connected": int(len(connected)), "cells_disconnected": n_disc, "sample_size": args.cells,
        "combined_variants": {k: [list(a) for a in v] for k, v in COMBINED_VARIANTS.items()},
        "combined": combined_report,
        "correlations": rows, "timing": timing.to_dict("records"),
    }
    return "\n".join(text), merged, samp


# ---------------------------------------------------------------------------- part 3
def part3(table: pd.DataFrame, measured: pd.DataFrame, args: argparse.Namespace, report: dict) -> str:
    from trilemma.nb201 import NBSZ_PROXIES

    nbsz = load_nbsz_proxies().rename(columns={p: f"nbsz_{p}" for p in NBSZ_PROXIES})
    merged = nbsz.merge(table, on=["index", "arch"], how="left")
    if not measured.empty:
        mcols = [c for c in measured.columns if c in WANTED_MEASURES]
        merged = merged.merge(measured[["index", *mcols]], on="index", how="left")
    y = merged["val_accuracy"].to_numpy()
    ours = [c for c in INDICATORS if c in merged.columns]
    ours_measured = [c for c in WANTED_MEASURES if c in merged.columns and merged[c].notna().any()]
    rows = [r for r in corr_rows(merged, ours + ours_measured, y, source="trilemma") if r["n"] >= 100]
    rows += corr_rows(merged, [f"nbsz_{p}" for p in NBSZ_PROXIES], y, source="NAS-Bench-Suite-Zero")
    df = pd.DataFrame(rows)
    agree = []
    pairs = [("params", "nbsz_params"), ("flops", "nbsz_flops")] + [
        (ours_name, f"nbsz_{theirs}") for ours_name, theirs in SAME_PROXY.items() if ours_name in ours_measured
    ]
    for a, b in pairs:
        ok = merged[a].notna() & merged[b].notna()
        tau, rho = corr(merged.loc[ok, a].to_numpy(), merged.loc[ok, b].to_numpy())
        agree.append({"trilemma": a, "published": b, "n": int(ok.sum()), "kendall_tau": tau, "spearman_rho": rho})
    side = side_by_side(merged, y, report.get("part2", {}).get("correlations", []))
    report["part3"] = {"correlations": rows, "agreement": agree, "side_by_side": side}
    return "\n".join(
        [
            "## 3. Side by side with NAS-Bench-Suite-Zero (724 cells)",
            "",
            "Each score vs the file's `val_accuracy`. Published FLOPs use NASLib's counter (pooling, BN "
            "and ReLU included); ours are NAS-Bench-201's (conv + linear MACs). Published proxies were computed "
            "on the full C=16, N=5 network; our measured ones on part 2's network and batch (only scores "
            "available for ≥ 100 of the 724 cells are listed).",
            "",
            md_table(df.sort_values(["source", "kendall_tau"], ascending=[True, False])),
            "",
            "Rank agreement, trilemma vs published, same quantity:",
            "",
            md_table(pd.DataFrame(agree)),
            "",
            "Kendall τ with CIFAR-10 accuracy, ours (part 2's network and batch, BatchNorm batch statistics, "
            "random labels for snip/grad_norm/grasp/fisher) next to the published NAS-Bench-Suite-Zero value of the "
            "same proxy (full network, true labels): on part 2's sample (connected cells), on the NAS-Bench-Suite-Zero "
            "cells we measured, and the published proxy on all its cells and on those same cells.",
            "",
            md_table(pd.DataFrame(side)) if side else "_Nothing measured yet._",
            "",
        ]
    )


def side_by_side(merged: pd.DataFrame, y: np.ndarray, part2_rows: list[dict]) -> list[dict]:
    """τ of each of our proxies next to the published proxy computing the same quantity."""
    sample_tau = {r["indicator"]: r for r in part2_rows}
    out = []
    for ours, theirs in SAME_PROXY.items():
        pub = f"nbsz_{theirs}"
        row: dict = {"ours": ours, "published": theirs}
        if ours in sample_tau:
            row["tau ours, part-2 sample (connected)"] = sample_tau[ours]["tau (connected)"]
        if pub in merged.columns:
            ok_pub = merged[pub].notna().to_numpy() & np.isfinite(merged[pub].to_numpy(dtype=float))
            row["tau published, all NBSZ cells"] = corr(merged.loc[ok_pub, pub].to_numpy(dtype=float), y[ok_pub])[0]
            row["n NBSZ"] = int(ok_pub.sum())
            if ours in merged.columns:
                both = ok_pub & np.isfinite(merged[ours].to_numpy(dtype=float))
                if both.sum() >= 100:
                    row["n same cells"] = int(both.sum())
                    row["tau ours, same cells"] = corr(merged.loc[both, ours].to_numpy(dtype=float), y[both])[0]
                    row["tau published, same cells"] = corr(merged.loc[both, pub].to_numpy(dtype=float), y[both])[0]
        out.append(row)
    return out


# ---------------------------------------------------------------------------- part 4
def part4(
    table: pd.DataFrame, acc: np.ndarray, sample: pd.DataFrame, acc_by_index: pd.Series, args: argparse.Namespace, report: dict
) -> str:
    from trilemma.nb201 import search_table

    filt = centre_filter(table)
    cols = {c: INDICATORS[c].direction for c in ("params", "live_params", "conv_score", "trilemma_score", "mean_depth", "eff_width", "P", "ntk_bound", "nngp_bound", "jacobian_path_sum") if c in table.columns}
    res = search_table(table, acc, cols, keep=filt.keep, sample_size=args.sample_size, repeats=args.repeats, seed=args.seed)
    res.insert(0, "pool", "all 15,625")
    rng_scores = pd.DataFrame({"random": np.random.default_rng(args.seed + 1).random(len(table))})
    rnd = search_table(rng_scores, acc, {"random": 1}, keep=filt.keep, sample_size=args.sample_size, repeats=args.repeats, seed=args.seed)
    rnd.insert(0, "pool", "all 15,625")
    frames = [res, rnd]
    if not sample.empty and len(sample) >= args.sample_size:
        fsub = centre_filter(sample, reference=table)
        cols2 = [c for c in (*WANTED_MEASURES, *COMBINED_COLUMNS, "conv_score", "params", "trilemma_score")
                 if c in sample.columns and c in DIRECTIONS and c != "linear_regions"]
        scored = pd.DataFrame({c: disconnected_worst(sample, c, DIRECTIONS[c]) for c in cols2})
        r2 = search_table(scored, acc_by_index.reindex(sample["index"]).to_numpy(), {c: DIRECTIONS[c] for c in cols2},
                          keep=fsub.keep, sample_size=args.sample_size, repeats=args.repeats, seed=args.seed)
        r2.insert(0, "pool", f"measured sample ({len(sample)})")
        frames.append(r2)
    out = pd.concat(frames, ignore_index=True)
    report["part4"] = {"removed_fraction": filt.removed_fraction, "depth_range": filt.depth_range,
                       "width_range": filt.width_range, "results": out.to_dict("records")}
    return "\n".join(
        [
            "## 4. Training-free search (100 random cells, best by indicator, 500 repeats)",
            "",
            f"Centre filter keeps d̄ ∈ [{filt.depth_range[0]:.2f}, {filt.depth_range[1]:.2f}] and "
            f"m̄ ∈ [{filt.width_range[0]:.2f}, {filt.width_range[1]:.2f}] and removes "
            f"**{filt.removed_fraction:.1%}** of the space (`evaluated` = cells scored per repeat). "
            "Accuracy = CIFAR-10 validation accuracy of the pick; `optimum` = best in the sample.",
            "",
            md_table(out),
            "",
        ]
    )


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="1,2,3,4")
    p.add_argument("--cells", type=int, default=1000, help="part 2 sample size (default 1000)")
    p.add_argument("--net", choices=sorted(NETS), default="proxy")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--measures", default=None, help="comma-separated labels (default all; see RUNS)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop part 2 after this long (resumable)")
    p.add_argument("--no-run", action="store_true", help="part 2: only report what the cache holds")
    p.add_argument("--nbsz-measures", action="store_true", help="part 2 also measures the 724 NBSZ cells")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--corr", type=float, default=0.5)
    p.add_argument("--sample-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=500)
    p.add_argument("--results", default=str(RESULTS))
    # v2: measures at their batch-statistics defaults (the v1 cache held eval-mode BatchNorm values)
    p.add_argument("--cache", default=str(RESULTS / "nb201_measures_v2_cache.csv"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parts = {int(x) for x in args.parts.split(",") if x}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)

    acc_df = load_nb201_accuracy()
    table = closed_form_table(acc_df["index"], corr=args.corr)
    acc = acc_df["val_acc"].to_numpy()
    acc_by_index = acc_df.set_index("index")["val_acc"]
    report: dict = {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "command": " ".join(["benchmarks/nb201.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    sections = [
        "# NAS-Bench-201 benchmark",
        "",
        f"Command: `{report['command']}`. Ground truth: `nb201_cifar10_val.csv` (CIFAR-10 validation "
        "accuracy, 200 epochs). Kendall τ is τ-b (ties averaged).",
        "",
    ]
    measured = pd.DataFrame()
    sample = pd.DataFrame()
    if 1 in parts:
        sections.append(part1(table, acc, args, report))
    if 2 in parts:
        extra = load_nbsz_proxies()["index"].tolist() if args.nbsz_measures else []
        text, measured, sample = part2(table, acc_by_index, args, report, extra)
        sections.append(text)
    elif Path(args.cache).is_file():  # parts 3/4 reuse what the cache holds
        _, measured, sample = part2(table, acc_by_index, argparse.Namespace(**{**vars(args), "no_run": True}), {}, [])
    if 3 in parts:
        sections.append(part3(table, measured, args, report))
    if 4 in parts:
        sections.append(part4(table, acc, sample, acc_by_index, args, report))

    scores = table.merge(acc_df[["index", "val_acc"]], on="index")
    if not measured.empty:
        mcols = [c for c in measured.columns if c in WANTED_MEASURES or c == "seconds_per_cell"]
        scores = scores.merge(measured[["index", *mcols]], on="index", how="left")
    nbsz = load_nbsz_proxies().drop(columns=["arch"]).rename(columns=lambda c: c if c == "index" else f"nbsz_{c}")
    scores = scores.merge(nbsz, on="index", how="left")
    combo = [c for c in COMBINED_COLUMNS if c in sample.columns]
    if combo:
        scores = scores.merge(sample[["index", *combo]], on="index", how="left")
    scores.to_csv(out / "nb201_scores.csv", index=False)
    (out / "nb201.md").write_text("\n".join(sections))
    (out / "nb201.json").write_text(json.dumps(report, indent=2, default=float))
    logger.info("wrote %s, %s, %s", out / "nb201.md", out / "nb201.json", out / "nb201_scores.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

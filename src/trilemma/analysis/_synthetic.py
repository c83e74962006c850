"""Synthetic results tables with planted trends, for tests, examples and trying the report.

The numbers are *planted*, not measured: the topology columns are the real ones of the H=3
DAG cells, the other columns are noisy monotone functions of (P, d̄) that follow the trends
the papers report (deep & narrow → lower training loss; many paths → fewer epochs; deep →
larger generalization gap). They have the column names and kinds of a real study's table, so
every analysis and report path can run without training anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from trilemma.errors import InvalidArgumentError

__all__ = ["synthetic_results", "synthetic_curves"]


def synthetic_results(nodes: int = 3, *, seed: int = 0, noise: float = 1.0, n_seeds: int = 1,
                      limit: int | None = None) -> pd.DataFrame:
    """A results table for the trainable cells of the H=``nodes`` space, with planted trends.

    Args:
        nodes: H of the DAG-cell space (3: the papers' 541 trainable cells).
        seed: Seed of the noise.
        noise: Noise scale (0: exact monotone functions of P and d̄).
        n_seeds: Rows per architecture (a ``seed`` column tells them apart).
        limit: Keep only the first ``limit`` trainable cells (by index).

    Returns:
        Columns ``arch, P, mean_depth, eff_width, sum_depth, group`` (topology),
        ``jacobian_path_sum, nngp_bound, ntk_bound, gen_indicator`` (theory stand-ins),
        ``curvature, nngp_lambda_min, ntk_lambda_min, naswot`` and ``*_time`` (at-init stand-ins),
        ``expressivity, convergence_epoch, epochs_to_50, generalization_gap,
        final_train_acc, final_test_acc, status`` (trained stand-ins), and ``seed`` when
        ``n_seeds > 1``.
    """
    from trilemma.spaces import enumerate_cells

    if noise < 0:
        raise InvalidArgumentError(f"noise must be >= 0, got {noise}")
    if n_seeds < 1:
        raise InvalidArgumentError(f"n_seeds must be >= 1, got {n_seeds}")
    cells = [c for c in enumerate_cells(nodes) if c.topology.trainable]
    if limit is not None:
        cells = cells[:limit]
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_seeds):
        for cell in cells:
            topo = cell.topology
            P, d = topo.num_paths, float(topo.mean_depth or 0.0)
            depths = np.array(topo.sorted_depths, dtype=float)
            z = rng.normal(size=12) * noise
            row: dict[str, Any] = {
                "arch": cell.name, "P": P, "mean_depth": d, "eff_width": float(topo.eff_width or 0.0),
                "sum_depth": topo.sum_depth, "group": f"({P}, {d:.3g})",
                "jacobian_path_sum": float(np.exp(-5 * depths / (8 * 64)).sum()),
                "nngp_bound": float(P - np.sum(0.5 ** (1.0 / (1.0 + depths)))),
                "ntk_bound": float(P - np.sum(0.5 ** (1.0 / (1.0 + depths))) + 0.5 * topo.sum_depth),
                "gen_indicator": float(topo.sum_depth / np.sqrt(P + 0.5 * topo.sum_depth)),
                "curvature": float(d / np.sqrt(P) * np.exp(0.15 * z[0]) + 0.05),
                "nngp_lambda_min": float(P / (1.0 + d) * np.exp(0.15 * z[1])),
                "ntk_lambda_min": float(P * (1.0 + 0.3 * d) * np.exp(0.15 * z[2])),
                "naswot": float(200 + 10 * topo.num_linear + 3 * z[3]),
                "curvature_time": 0.01, "nngp_lambda_min_time": 0.002, "ntk_lambda_min_time": 0.02,
                "expressivity": float(0.05 + 0.9 * np.exp(-1.2 * d) * np.exp(0.1 * z[4])),
                "convergence_epoch": int(max(1, round(8 + 30 / P + 6 * d + 2 * z[5]))),
                "epochs_to_50": int(max(1, round(2 + 10 / P + 2 * d + z[6]))),
                "generalization_gap": float(0.05 + 0.12 * d + 0.03 * z[7]),
                "status": "complete",
            }
            row["final_train_acc"] = float(np.clip(1.0 - row["expressivity"] / 2, 0, 1))
            row["final_test_acc"] = float(np.clip(row["final_train_acc"] - row["generalization_gap"] / 2, 0, 1))
            if n_seeds > 1:
                row["seed"] = s
            rows.append(row)
    return pd.DataFrame(rows)


def synthetic_curves(results: pd.DataFrame, archs: Sequence[str], *, epochs: int = 40, seed: int = 0) -> pd.DataFrame:
    """Training curves consistent with ``results`` for ``archs`` (long format).

    Returns:
        Columns ``arch, epoch, train_loss, test_loss, train_acc, test_acc``; the training loss
        decays to the architecture's ``expressivity`` with a time constant from its
        ``convergence_epoch``, the test loss adds its ``generalization_gap``.
    """
    if epochs < 1:
        raise InvalidArgumentError(f"epochs must be >= 1, got {epochs}")
    rng = np.random.default_rng(seed)
    by_arch = results.drop_duplicates("arch").set_index("arch")
    rows = []
    for arch in archs:
        if arch not in by_arch.index:
            raise InvalidArgumentError(f"architecture {arch!r} is not in the results")
        r = by_arch.loc[arch]
        floor, tau, gap = float(r["expressivity"]), max(1.0, float(r["convergence_epoch"]) / 3), float(r["generalization_gap"])
        for e in range(1, epochs + 1):
            decay = np.exp(-e / tau)
            train = floor + (2.3 - floor) * decay + 0.01 * rng.normal()
            test = train + gap * (1 - decay)
            rows.append({"arch": arch, "epoch": e, "train_loss": train, "test_loss": test,
                         "train_acc": float(np.clip(1 - train / 2.3, 0, 1)),
                         "test_acc": float(np.clip(1 - test / 2.3, 0, 1))})
    return pd.DataFrame(rows)

"""One row of closed-form quantities per cell (topology, parameter count, Theorems 4.1/4.4/4.6).

:func:`theory_row` is the slow, obvious path (one cell, the scalar functions of
:mod:`trilemma.theory._bounds`); :func:`theory_table` is the fast path for a whole space: it
precomputes ``f^d(C)`` and the Theorem 4.6 sums for ``d = 0..max depth`` once and forms every
path sum as a product of the ``(cells, depths)`` count matrix with those tables. The two agree
(``tests/test_theory.py``).

Undefined values are ``None`` in :func:`theory_row` and ``<NA>`` (pandas nullable ``Float64``) in
:func:`theory_table`, never a silent NaN:

* ``mean_depth``: undefined without a path (P = 0);
* ``eff_width``: undefined without a parameterized path (``d̄ = 0``);
* ``group``: ``None`` without a path;
* ``ntk_bound`` is Theorem 4.6 in its corrected (recursion) form, the valid bound;
  ``ntk_bound_printed`` is the theorem as printed in the paper, kept to reproduce its figures
  (see :func:`~trilemma.theory.ntk_bound`); ``gen_indicator`` / ``gen_indicator_printed``
  use the one or the other;
* ``gen_indicator``: undefined when the cell is not trainable (no path, or only depth-0 paths:
  the indicator would be a trivial 0 and rank untrainable cells best) or when the NTK bound is
  ``≤ 0`` (e.g. ``C = 1``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from trilemma._schema import Column
from trilemma.errors import MeasureFailedError
from trilemma.spaces import CellSpec, count_params, enumerate_cells
from trilemma.theory._bounds import (
    _pair_correlations,
    depth_tables,
    generalization_indicator,
    jacobian_constant,
    jacobian_path_sum,
    nngp_bound,
    ntk_bound,
    worst_correlation,
)
from trilemma.theory._validate import as_spec, as_width

__all__ = ["theory_row", "theory_table", "COLUMNS", "THEORY_COLUMNS"]

logger = logging.getLogger(__name__)

#: Columns of :func:`theory_table`, in order.
COLUMNS = (
    "arch", "index", "P", "depths", "mean_depth", "eff_width", "sum_depth", "num_linear", "trainable",
    "group", "params", "jacobian_path_sum", "nngp_bound", "ntk_bound", "gen_indicator",
    "ntk_bound_printed", "gen_indicator_printed",
)
_E, _C, _G = "expressivity", "convergence", "generalization"

#: The closed-form columns of :func:`theory_row` (beyond topology and parameter count), with
#: the directions the papers' theorems give them (Chen, Huang & Wang, AutoML-Conf 2023).
THEORY_COLUMNS: tuple[Column, ...] = (
    Column("jacobian_path_sum", "theory", label="Σ_p e^(−5d_p/8m)", directions={_E: False},
           description="Theorem 4.1 path sum, proportional to the expected Jacobian norm on the circle; larger "
                       "Jacobian -> smaller curvature -> less expressive", source="theory"),
    Column("nngp_bound", "theory", label="NNGP bound", directions={_C: True},
           description="Theorem 4.4 upper bound on λ_min of the NNGP kernel; larger -> faster GD convergence",
           source="theory"),
    Column("ntk_bound", "theory", label="NTK bound", directions={_C: True, _G: True},
           description="Theorem 4.6 upper bound on λ_min of the NTK Gram, corrected (recursion) form",
           source="theory"),
    Column("gen_indicator", "theory", label="Σd_p/√λ", directions={_G: False},
           description="Theorem 4.5 generalization indicator Σ_p d_p / sqrt(λ_min) with the corrected Theorem "
                       "4.6 bound; lower is better", source="theory"),
    Column("ntk_bound_printed", "theory", label="NTK bound (as printed)", directions={_C: True, _G: True},
           description="Theorem 4.6 as printed in the paper (its last sum mis-indexed: not a valid upper bound); "
                       "kept to reproduce the paper's figures", source="theory"),
    Column("gen_indicator_printed", "theory", label="Σd_p/√λ (as printed)", directions={_G: False},
           description="the generalization indicator with Theorem 4.6 as printed", source="theory"),
)

_NULLABLE = ("mean_depth", "eff_width", "gen_indicator", "gen_indicator_printed")


def _topology_fields(spec: CellSpec, width: int, in_features: int, num_classes: int, bias: bool) -> dict[str, Any]:
    topo = spec.topology
    return {
        "arch": spec.name,
        "index": spec.index,
        "P": topo.num_paths,
        "depths": topo.depths_text,
        "mean_depth": topo.mean_depth,
        "eff_width": topo.eff_width,
        "sum_depth": topo.sum_depth,
        "num_linear": spec.num_linear,
        "trainable": topo.trainable,
        "group": topo.group,
        "params": count_params(spec, width, in_features, num_classes, bias=bias),
    }


def theory_row(
    spec: CellSpec | str,
    C: float | np.ndarray = 0.5,
    width: int = 256,
    *,
    in_features: int = 784,
    num_classes: int = 10,
    bias: bool = True,
) -> dict[str, Any]:
    """Closed-form quantities of one cell (Chen, Huang & Wang, AutoML-Conf 2023).

    Args:
        spec: The cell.
        C: Correlation at the cell input (node 0), scalar or ``(n, n)`` correlation matrix.
        width: m, used by Theorem 4.1 and the parameter count.
        in_features: Input dimension for the parameter count (default 784, MNIST).
        num_classes: Number of outputs for the parameter count (default 10).
        bias: Whether the parameter count includes biases (the papers' PyTorch layers).

    Returns:
        A dict with the keys of :data:`COLUMNS`; undefined values are ``None`` (module docstring).

    Raises:
        InvalidArgumentError: bad ``C``, ``width``, ``in_features`` or ``num_classes``.
    """
    spec = as_spec(spec)
    m = as_width(width)
    row = _topology_fields(spec, m, in_features, num_classes, bias)
    row["jacobian_path_sum"] = jacobian_path_sum(spec, m)
    row["nngp_bound"] = nngp_bound(spec, C)
    for suffix, form in (("", "recursion"), ("_printed", "paper")):
        row[f"ntk_bound{suffix}"] = ntk_bound(spec, C, form=form)
        gen: float | None = None
        if spec.topology.trainable:
            try:
                gen = generalization_indicator(spec, C, form=form)
            except MeasureFailedError:
                gen = None
        row[f"gen_indicator{suffix}"] = gen
    return {k: row[k] for k in COLUMNS}


def theory_table(
    specs: Iterable[CellSpec | str] | None = None,
    nodes: int = 3,
    C: float | np.ndarray = 0.5,
    width: int = 256,
    *,
    in_features: int = 784,
    num_classes: int = 10,
    bias: bool = True,
) -> pd.DataFrame:
    """One row per cell with topology, parameter count and Theorems 4.1/4.4/4.6 values.

    Vectorized over cells: ``f^d(C)`` is computed once per depth, every path sum is a
    count-matrix product (the 729 cells of H = 3 take a few milliseconds; see
    ``benchmarks/theory.py``).

    Args:
        specs: Cells (specs or strings); ``None`` means every cell with H = ``nodes``.
        nodes: H when ``specs`` is None (default 3, 729 cells).
        C: Correlation at the cell input, scalar or ``(n, n)`` correlation matrix.
        width: m.
        in_features: Input dimension for ``params`` (default 784).
        num_classes: Outputs for ``params`` (default 10).
        bias: Whether ``params`` counts biases.

    Returns:
        DataFrame with columns :data:`COLUMNS`: ``arch`` (str), ``index``, ``P``, ``sum_depth``,
        ``num_linear``, ``params`` (int), ``depths`` (sorted path depths, space-separated str),
        ``trainable`` (bool), ``group`` (``(P, d̄)`` tuple or None), ``jacobian_path_sum``,
        ``nngp_bound``, ``ntk_bound`` (float), ``mean_depth``, ``eff_width``, ``gen_indicator``
        (nullable ``Float64``, ``<NA>`` where undefined; see the module docstring).

    Raises:
        InvalidArgumentError: bad ``C``, ``width``, ``nodes`` or parameter-count arguments.
    """
    m = as_width(width)
    cells = list(enumerate_cells(nodes)) if specs is None else [as_spec(s) for s in specs]
    c = worst_correlation(C)
    pairs = np.unique(_pair_correlations(C))  # the recursion form is not monotone in C: every pair
    rows = [_topology_fields(spec, m, in_features, num_classes, bias) for spec in cells]
    max_depth = max((spec.topology.max_depth for spec in cells), default=0)
    counts = np.zeros((len(cells), max_depth + 1))
    for i, spec in enumerate(cells):
        for d, k in spec.topology.depth_counts:
            counts[i, d] = k
    depth = np.arange(max_depth + 1)
    F, B, _ = depth_tables(c, max_depth)
    Fp, _, Rp = depth_tables(pairs, max_depth)  # (max_depth + 1, n_pairs)
    P = counts.sum(axis=1)
    sum_depth = counts @ depth
    jac = jacobian_constant(m) * (counts @ np.exp(-5.0 * depth / (8.0 * m)))
    nngp = P - counts @ F
    printed = nngp + sum_depth - counts @ B
    ntk = np.min(P[:, None] - counts @ Fp + sum_depth[:, None] - counts @ Rp, axis=1) if len(cells) else P
    trainable = np.array([row["trainable"] for row in rows], dtype=bool)

    df = pd.DataFrame(rows, columns=list(COLUMNS[:11]))
    df["jacobian_path_sum"] = jac
    df["nngp_bound"] = nngp
    for suffix, bound in (("", ntk), ("_printed", printed)):
        ok = trainable & (bound > 0)
        gen = np.divide(sum_depth, np.sqrt(np.where(ok, bound, 1.0)))
        df[f"ntk_bound{suffix}"] = bound
        df[f"gen_indicator{suffix}"] = pd.array([float(g) if k else None for g, k in zip(gen, ok)], dtype="Float64")
    for col in ("mean_depth", "eff_width"):
        df[col] = pd.array([row[col] for row in rows], dtype="Float64")
    df["group"] = pd.Series([row["group"] for row in rows], dtype=object)
    logger.debug("theory table: %d cells, C=%g, m=%d", len(cells), c, m)
    return df[list(COLUMNS)]


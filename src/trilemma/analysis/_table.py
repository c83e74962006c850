"""Checks and reshaping of a results table shared by the analysis functions."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from trilemma.errors import InvalidArgumentError, InvalidTypeError

__all__ = ["DEFAULT_GROUP_BY", "check_frame", "numeric_column", "aggregate_seeds", "group_keys", "group_means"]

logger = logging.getLogger(__name__)

#: The papers' topology groups: architectures with the same number of paths P and the
#: same effective depth d̄ (AutoML-Conf 2023, Figures 3–5).
DEFAULT_GROUP_BY: tuple[str, ...] = ("P", "mean_depth")
_GROUP_DECIMALS = 6


def check_frame(df: object, columns: Sequence[str] = (), *, what: str = "results") -> pd.DataFrame:
    """Return ``df`` if it is a DataFrame holding ``columns``.

    Raises:
        InvalidTypeError: ``df`` is not a DataFrame.
        InvalidArgumentError: a column is missing.
    """
    if not isinstance(df, pd.DataFrame):
        raise InvalidTypeError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InvalidArgumentError(
            f"{what} has no column(s) {', '.join(map(repr, missing))}; it has: "
            f"{', '.join(map(str, df.columns))}"
        )
    return df


def numeric_column(df: pd.DataFrame, name: str) -> np.ndarray:
    """``df[name]`` as float64 (NaN where missing).

    Raises:
        InvalidTypeError: the column is not numeric (or boolean).
    """
    col = df[name]
    if pd.api.types.is_bool_dtype(col):
        col = col.astype(float)
    if col.dtype == object:
        # a column of numbers and missing values (e.g. every value None: no cell converged)
        values = [v for v in col if v is not None and not (isinstance(v, float) and np.isnan(v))]
        if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
            return np.array([np.nan if v is None else float(v) for v in col], dtype=float)
    if not pd.api.types.is_numeric_dtype(col):
        raise InvalidTypeError(f"column {name!r} must be numeric, got dtype {col.dtype}")
    return col.to_numpy(dtype=float, na_value=np.nan)


def group_keys(df: pd.DataFrame, group_by: Sequence[str]) -> pd.DataFrame:
    """The group-key columns, floats rounded to 6 decimals so equal d̄ values group together."""
    check_frame(df, group_by)
    keys = {}
    for name in group_by:
        col = df[name]
        if pd.api.types.is_float_dtype(col):
            col = col.round(_GROUP_DECIMALS)
        keys[name] = col
    return pd.DataFrame(keys, index=df.index)


def group_means(df: pd.DataFrame, columns: Sequence[str], group_by: Sequence[str] = DEFAULT_GROUP_BY) -> pd.DataFrame:
    """Mean and spread of ``columns`` within each topology group.

    Args:
        df: Results, one row per architecture.
        columns: Numeric columns to summarise.
        group_by: Group-key columns (default the papers' (P, d̄)).

    Returns:
        One row per group, sorted by the keys: the key columns, ``count`` (rows in the
        group), and for each column ``c``: ``c`` (mean over the group's non-missing values),
        ``c_std`` (population standard deviation, 0 for a single value) and ``c_count``.

    Raises:
        InvalidArgumentError: a column is missing; InvalidTypeError: a column is not numeric.
    """
    check_frame(df, [*group_by, *columns])
    keys = group_keys(df, group_by)
    data = pd.DataFrame({c: numeric_column(df, c) for c in columns}, index=df.index)
    frame = pd.concat([keys, data.add_prefix("__v_")], axis=1)
    grouped = frame.groupby(list(group_by), sort=True, dropna=True)
    out = grouped.size().rename("count").to_frame()
    for c in columns:
        g = grouped[f"__v_{c}"]
        out[c] = g.mean()
        out[f"{c}_std"] = g.std(ddof=0)
        out[f"{c}_count"] = g.count()
    return out.reset_index()


def aggregate_seeds(df: pd.DataFrame, arch_col: str = "arch", seed_col: str = "seed") -> pd.DataFrame:
    """One row per architecture: numeric columns averaged over its rows (seeds), others the first value.

    A table that already has one row per architecture comes back unchanged (plus ``n_seeds``).

    Args:
        df: Results, possibly several rows (seeds) per architecture, of one dataset.
        arch_col: The architecture column.
        seed_col: The seed column, dropped when rows are averaged (its mean means nothing).

    Returns:
        A new DataFrame in first-appearance order of the architectures with an ``n_seeds``
        column (rows per architecture).
    """
    check_frame(df, [arch_col])
    grouped = df.groupby(arch_col, sort=False)
    counts = grouped.size()
    if (counts == 1).all():
        out = df.copy()
        out["n_seeds"] = 1
        return out.reset_index(drop=True)
    df = df.drop(columns=[seed_col]) if seed_col in df.columns else df
    grouped = df.groupby(arch_col, sort=False)
    logger.debug("averaging %d rows over %d architectures", len(df), len(counts))
    parts = {}
    for name in df.columns:
        if name == arch_col:
            continue
        col = df[name]
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        if not numeric:
            parts[name] = grouped[name].first()
            continue
        mean = grouped[name].mean()
        if pd.api.types.is_integer_dtype(col) and np.allclose(mean.dropna(), mean.dropna().round()):
            mean = mean.round().astype(col.dtype) if not mean.isna().any() else mean
        parts[name] = mean
    out = pd.DataFrame(parts)
    out["n_seeds"] = counts
    out = out.reset_index()
    return out[[arch_col, *[c for c in df.columns if c != arch_col], "n_seeds"]]

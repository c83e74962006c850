"""Rank correlations with bootstrap confidence intervals, over architectures or topology groups.

Kendall τ (τ-b, which handles ties) and Spearman ρ come from :mod:`scipy.stats`; the
bootstrap re-draws rows with replacement and reports the percentile interval (Efron &
Tibshirani 1993, §13.3). Two levels, as in Chen, Huang & Wang (AutoML-Conf 2023):

- ``"architecture"``: one point per row; rows are resampled with replacement.
- ``"group"``: one point per (P, d̄) topology group (the group mean of x and of y); rows are
  resampled *within* each group (stratified bootstrap), so every group keeps its size and
  only its mean varies.

Sign convention: :attr:`Correlation.value` is the correlation of the raw columns. When the
directions are known (``x_higher_is_better``, ``y_higher_is_better``), :attr:`Correlation.sign`
is ``+1`` if both or neither are higher-is-better and ``−1`` otherwise, and
:attr:`Correlation.oriented` = sign · value is the correlation between "x is better" and "y is
better": positive means x ranks networks the same way as y. Nothing is ever ``abs()``-ed.

The bootstrap has fast vectorised paths (Kendall over architectures through a weighted pair
count, group means through a one-hot product, Spearman by ranking all resamples at once) and
slow, obvious references (:func:`_bootstrap_reference`) that loop over resamples with scipy;
tests check they agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from trilemma._checks import is_int, is_real
from trilemma._stats import rank_correlation_value
from trilemma.analysis._table import check_frame, group_keys, numeric_column, resolve_group_by
from trilemma.errors import InvalidArgumentError, InvalidTypeError

__all__ = ["METHODS", "LEVELS", "Correlation", "rank_correlation", "correlation_sign"]

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("kendall", "spearman")
LEVELS: tuple[str, ...] = ("architecture", "group")

Method = Literal["kendall", "spearman"]
Level = Literal["architecture", "group"]

_MATMUL_MAX_N = 4096  # weighted-pair Kendall: float32 sums exact below 2^24 = 4096²
_CHUNK_ELEMENTS = 4_000_000
_MEAN_DIGITS = 10  # group means equal to this many significant digits are ties


@dataclass(frozen=True)
class Correlation:
    """A rank correlation with its bootstrap interval.

    Attributes:
        x: First column.
        y: Second column.
        method: ``"kendall"`` (τ-b) or ``"spearman"``.
        level: ``"architecture"`` or ``"group"``.
        value: The correlation of the raw columns, in [−1, 1].
        ci_low: Lower end of the percentile bootstrap interval (``None`` when ``n_boot=0``).
        ci_high: Upper end (``None`` when ``n_boot=0``).
        p_value: scipy's two-sided p-value for no association (at the group level: over
            the group means, ignoring that they are means).
        n: Points correlated (architectures, or groups).
        n_rows: Architectures (rows) used, after dropping rows with a missing value.
        n_dropped: Rows dropped because x, y or a group key was missing.
        n_boot: Bootstrap resamples drawn.
        n_boot_valid: Resamples where the correlation was defined (not all tied).
        confidence: Coverage of the interval, e.g. 0.95.
        seed: Seed of the resampling.
        sign: Orientation (+1 / −1, see module docstring); ``None`` if directions unknown.
        group_by: Group-key columns (group level only).
    """

    x: str
    y: str
    method: str
    level: str
    value: float
    ci_low: float | None
    ci_high: float | None
    p_value: float
    n: int
    n_rows: int
    n_dropped: int
    n_boot: int
    n_boot_valid: int
    confidence: float
    seed: int
    sign: int | None = None
    group_by: tuple[str, ...] = ()

    @property
    def oriented(self) -> float | None:
        """``sign · value``: > 0 when x and y agree on which networks are better."""
        return None if self.sign is None else self.sign * self.value

    @property
    def oriented_ci(self) -> tuple[float, float] | None:
        """The interval of :attr:`oriented` (ends swapped when ``sign`` is −1)."""
        if self.sign is None or self.ci_low is None or self.ci_high is None:
            return None
        lo, hi = self.sign * self.ci_low, self.sign * self.ci_high
        return (min(lo, hi), max(lo, hi))

    @property
    def ci_excludes_zero(self) -> bool | None:
        """Whether the interval lies strictly on one side of 0 (``None`` without an interval)."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return self.ci_low > 0 or self.ci_high < 0

    def as_dict(self) -> dict[str, object]:
        """Plain dict of the fields plus ``oriented`` and ``ci_excludes_zero``."""
        return asdict(self) | {"oriented": self.oriented, "ci_excludes_zero": self.ci_excludes_zero}

    def format(self, digits: int = 2) -> str:
        """``"-0.81 [-0.85, -0.77]"`` (or just the value without an interval)."""
        text = f"{self.value:+.{digits}f}"
        if self.ci_low is not None and self.ci_high is not None:
            text += f" [{self.ci_low:+.{digits}f}, {self.ci_high:+.{digits}f}]"
        return text


def correlation_sign(x_higher_is_better: bool | None, y_higher_is_better: bool | None) -> int | None:
    """+1 if the two directions agree, −1 if they differ, ``None`` if either is unknown."""
    if x_higher_is_better is None or y_higher_is_better is None:
        return None
    return 1 if bool(x_higher_is_better) == bool(y_higher_is_better) else -1


def _point(x: np.ndarray, y: np.ndarray, method: str) -> tuple[float, float]:
    return rank_correlation_value(x, y, method)


# ----------------------------------------------------------------------------- fast paths


def _tied_pairs_weighted(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``Σ_{i≠j} w_i w_j [v_i == v_j]`` per row of ``weights`` (ordered pairs), in O(B·n)."""
    uniq, codes = np.unique(values, return_inverse=True)
    if len(uniq) == len(values):
        return np.zeros(len(weights))
    onehot = np.zeros((len(values), len(uniq)), dtype=np.float32)
    onehot[np.arange(len(values)), codes] = 1.0
    sums = (weights.astype(np.float32) @ onehot).astype(float)  # sums[b, g] = Σ_{i in g} w_bi (exact)
    return (sums**2).sum(axis=1) - (weights**2).sum(axis=1)


def _kendall_weighted(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """τ-b of the data ``x, y`` repeated ``weights[b, i]`` times, for every row ``b``.

    A pair of distinct rows (i, j) occurs ``w_i w_j`` times in a resample and copies of the
    same row are tied in both x and y. Over ordered pairs: ``S = wᵀ(Sx∘Sy)w`` with the sign
    matrices ``Sx, Sy`` (n × n), and the untied-in-x count ``Tx = (Σw)² − Σ_g (Σ_{i∈g} w_i)²``
    over the groups g of equal x (likewise ``Ty``); ``τ_b = S / sqrt(Tx Ty)``. The product
    runs in float32, exact while every partial sum stays below 2^24 (n ≤ 4096).

    Args:
        x, y: shape (n,).
        weights: shape (B, n), non-negative integer multiplicities summing to n per row.

    Returns:
        shape (B,), NaN where x or y is constant within the resample.
    """
    # Dense ranks fit int16 (n <= 4096), which makes the n × n sign products cheap.
    rx = np.unique(x, return_inverse=True)[1].ravel().astype(np.int16)
    ry = np.unique(y, return_inverse=True)[1].ravel().astype(np.int16)
    sx = np.subtract.outer(rx, rx)
    np.sign(sx, out=sx)
    sy = np.subtract.outer(ry, ry)
    np.sign(sy, out=sy)
    sx *= sy
    m = sx.astype(np.float32)
    w32 = weights.astype(np.float32)
    s = np.einsum("bi,bi->b", w32 @ m, w32).astype(float)
    w = weights.astype(float)
    total = w.sum(axis=1) ** 2
    tx = total - (_tied_pairs_weighted(x, w) + (w**2).sum(axis=1))
    ty = total - (_tied_pairs_weighted(y, w) + (w**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = s / np.sqrt(tx * ty)
    tau[(tx <= 0) | (ty <= 0)] = np.nan
    return np.clip(tau, -1.0, 1.0)


def _kendall_rows(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """τ-b of each row pair ``(xs[b], ys[b])`` by counting all pairs (shape (B, k) -> (B,))."""
    b, k = xs.shape
    iu, ju = np.triu_indices(k, 1)
    out = np.empty(b)
    step = max(1, _CHUNK_ELEMENTS // max(1, len(iu)))
    for start in range(0, b, step):
        sl = slice(start, start + step)
        sx = np.sign(xs[sl][:, iu] - xs[sl][:, ju])
        sy = np.sign(ys[sl][:, iu] - ys[sl][:, ju])
        s = (sx * sy).sum(axis=1)
        tx = np.abs(sx).sum(axis=1)
        ty = np.abs(sy).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = s / np.sqrt(tx * ty)
        tau[(tx == 0) | (ty == 0)] = np.nan
        out[sl] = tau
    return np.clip(out, -1.0, 1.0)


def _spearman_rows(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Spearman ρ of each row pair: Pearson correlation of the mid-ranks (shape (B, k) -> (B,))."""
    b, k = xs.shape
    out = np.empty(b)
    step = max(1, _CHUNK_ELEMENTS // max(1, k))
    for start in range(0, b, step):
        sl = slice(start, start + step)
        rx = stats.rankdata(xs[sl], axis=1)
        ry = stats.rankdata(ys[sl], axis=1)
        rx -= rx.mean(axis=1, keepdims=True)
        ry -= ry.mean(axis=1, keepdims=True)
        vx = (rx * rx).sum(axis=1)
        vy = (ry * ry).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = (rx * ry).sum(axis=1) / np.sqrt(vx * vy)
        rho[(vx == 0) | (vy == 0)] = np.nan
        out[sl] = rho
    return np.clip(out, -1.0, 1.0)


def _loop_rows(xs: np.ndarray, ys: np.ndarray, method: str) -> np.ndarray:
    out = np.empty(len(xs))
    for b in range(len(xs)):
        if np.ptp(xs[b]) == 0 or np.ptp(ys[b]) == 0:
            out[b] = np.nan
        else:
            out[b] = _point(xs[b], ys[b], method)[0]
    return out


def _stat_rows(xs: np.ndarray, ys: np.ndarray, method: str) -> np.ndarray:
    if method == "spearman":
        return _spearman_rows(xs, ys)
    if xs.shape[1] <= 1000:
        return _kendall_rows(xs, ys)
    return _loop_rows(xs, ys, method)


def _resample_indices(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Plain bootstrap: shape (n_boot, n) row positions drawn with replacement."""
    return rng.integers(0, n, size=(n_boot, n))


def _stratified_indices(codes: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified bootstrap: position ``i`` of every resample is drawn from ``i``'s own group.

    Args:
        codes: shape (n,), integer group code of each row.

    Returns:
        shape (n_boot, n); ``codes[idx[b]] == codes`` for every b.
    """
    n = len(codes)
    idx = np.empty((n_boot, n), dtype=np.int64)
    for g in np.unique(codes):
        members = np.flatnonzero(codes == g)
        draws = rng.integers(0, len(members), size=(n_boot, len(members)))
        idx[:, members] = members[draws]
    return idx


def _bootstrap_architecture(x: np.ndarray, y: np.ndarray, idx: np.ndarray, method: str) -> np.ndarray:
    n = len(x)
    if method == "kendall" and n <= _MATMUL_MAX_N:
        offsets = (idx + n * np.arange(len(idx))[:, None]).ravel()
        weights = np.bincount(offsets, minlength=len(idx) * n).reshape(len(idx), n).astype(float)
        return _kendall_weighted(x, y, weights)
    if method == "kendall":
        return _loop_rows(x[idx], y[idx], method)
    out = np.empty(len(idx))
    step = max(1, _CHUNK_ELEMENTS // max(1, n))
    for start in range(0, len(idx), step):
        sl = slice(start, start + step)
        out[sl] = _spearman_rows(x[idx[sl]], y[idx[sl]])
    return out


def _round_sig(values: np.ndarray, digits: int = _MEAN_DIGITS) -> np.ndarray:
    """Round to ``digits`` significant digits, so that group means equal up to summation
    round-off (e.g. the mean of a key column that is constant within each group) tie exactly."""
    values = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore"):
        mag = np.floor(np.log10(np.abs(values)))
    mag[~np.isfinite(mag)] = 0.0
    scale = 10.0 ** (digits - 1 - mag)
    return np.round(values * scale) / scale


def _group_mean_rows(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Group means of each row of ``values`` (shape (B, n) -> (B, G)), rounded by :func:`_round_sig`."""
    n_groups = int(codes.max()) + 1
    onehot = np.zeros((len(codes), n_groups))
    onehot[np.arange(len(codes)), codes] = 1.0
    counts = onehot.sum(axis=0)
    return _round_sig((values @ onehot) / counts)


def _bootstrap_group(x: np.ndarray, y: np.ndarray, codes: np.ndarray, idx: np.ndarray, method: str) -> np.ndarray:
    return _stat_rows(_group_mean_rows(x[idx], codes), _group_mean_rows(y[idx], codes), method)


def _bootstrap_reference(clean: pd.DataFrame, idx: np.ndarray, method: str, level: str) -> np.ndarray:
    """Slow, obvious bootstrap: for each resample, rebuild the table, group it, call scipy.

    Args:
        clean: The table from :func:`_prepare` (columns ``__x``, ``__y``, ``__k*``).
        idx: shape (B, n) row positions of each resample.
    """
    keys = [c for c in clean.columns if c.startswith("__k")]
    out = np.empty(len(idx))
    for b, rows in enumerate(idx):
        sample = clean.iloc[rows]
        if level == "group":
            sample = sample.groupby(keys)[["__x", "__y"]].mean()
        xs, ys = sample["__x"].to_numpy(float), sample["__y"].to_numpy(float)
        if level == "group":
            xs, ys = _round_sig(xs), _round_sig(ys)
        if np.ptp(xs) == 0 or np.ptp(ys) == 0:
            out[b] = np.nan
            continue
        out[b] = _point(xs, ys, method)[0]
    return out


# ------------------------------------------------------------------------------ public API


def _check_options(method: object, level: object, n_boot: object, confidence: object, seed: object) -> None:
    if method not in METHODS:
        raise InvalidArgumentError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if level not in LEVELS:
        raise InvalidArgumentError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    if not is_int(n_boot) or n_boot < 0:
        raise InvalidArgumentError(f"n_boot must be an int >= 0 (0: no interval), got {n_boot!r}")
    if not is_real(confidence) or not 0 < confidence < 1:
        raise InvalidArgumentError(f"confidence must be a number strictly between 0 and 1, got {confidence!r}")
    if not is_int(seed):
        raise InvalidTypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")


def _prepare(
    df: pd.DataFrame, x: str, y: str, level: str, group_by: Sequence[str]
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Drop rows with a missing value.

    Returns:
        ``(clean, x, y, codes, n_dropped)``: ``clean`` has columns ``__x``, ``__y`` and, at
        the group level, ``__k0, __k1, ...`` (the rounded group keys; used by the reference
        bootstrap); ``codes`` are the group codes in sorted key order (None at the
        architecture level).
    """
    keys = list(group_by) if level == "group" else []
    check_frame(df, [x, y, *keys])
    xv, yv = numeric_column(df, x), numeric_column(df, y)
    mask = np.isfinite(xv) & np.isfinite(yv)
    key_frame = group_keys(df, keys) if keys else None
    if key_frame is not None:
        mask &= key_frame.notna().all(axis=1).to_numpy()
    n_dropped = int((~mask).sum())
    if n_dropped:
        logger.debug("correlation %s vs %s: dropped %d row(s) with a missing value", x, y, n_dropped)
    xv, yv = xv[mask], yv[mask]
    clean = pd.DataFrame({"__x": xv, "__y": yv})
    codes = None
    if key_frame is not None:
        kept = key_frame.loc[mask]
        per_key = np.column_stack([pd.factorize(kept[k], sort=True)[0] for k in keys]) if len(kept) else \
            np.empty((0, len(keys)), dtype=np.int64)
        codes = np.unique(per_key, axis=0, return_inverse=True)[1].ravel() if len(kept) else np.empty(0, np.int64)
        for i, k in enumerate(keys):
            clean[f"__k{i}"] = kept[k].to_numpy()
    return clean, xv, yv, codes, n_dropped


def rank_correlation(
    df: pd.DataFrame,
    x: str,
    y: str,
    *,
    method: Method = "kendall",
    level: Level = "architecture",
    group_by: Sequence[str] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    x_higher_is_better: bool | None = None,
    y_higher_is_better: bool | None = None,
) -> Correlation:
    """Kendall τ or Spearman ρ between two columns, with a seeded percentile bootstrap interval.

    Args:
        df: Results table, one row per architecture.
        x: First column (numeric).
        y: Second column (numeric).
        method: ``"kendall"`` (τ-b, ties handled) or ``"spearman"``.
        level: ``"architecture"`` (one point per row) or ``"group"`` (one point per group
            mean; rows resampled within their group).
        group_by: Group-key columns for ``level="group"`` (default: the schema's topology
            groups, the DAG space's (P, d̄)).
        n_boot: Bootstrap resamples; 0 gives no interval.
        confidence: Coverage of the percentile interval.
        seed: Seed of the resampling (same seed, same interval).
        x_higher_is_better: Direction of x, to orient the result (see module docstring).
        y_higher_is_better: Direction of y.

    Returns:
        A :class:`Correlation`.

    Raises:
        InvalidArgumentError: a column is missing, an option is out of range, fewer than 3
            points remain, or x or y is constant (the correlation is undefined).
        InvalidTypeError: a column is not numeric.
    """
    _check_options(method, level, n_boot, confidence, seed)
    check_frame(df)
    group_by = resolve_group_by(df, group_by) if level == "group" else tuple(group_by or ())
    clean, xv, yv, codes, n_dropped = _prepare(df, x, y, level, group_by)
    if level == "group":
        assert codes is not None
        if len(codes):
            px, py = _group_mean_rows(xv[None, :], codes)[0], _group_mean_rows(yv[None, :], codes)[0]
        else:
            px = py = np.empty(0)
        n_points = len(px)
    else:
        px, py = xv, yv
        n_points = len(xv)
    where = f"{n_points} {'groups' if level == 'group' else 'architectures'}"
    if n_points < 3:
        raise InvalidArgumentError(
            f"a rank correlation of {x!r} and {y!r} needs at least 3 points, got {where} "
            f"({n_dropped} row(s) dropped for missing values)"
        )
    for name, values in ((x, px), (y, py)):
        if np.ptp(values) == 0:
            raise InvalidArgumentError(
                f"column {name!r} is constant ({values[0]:g}) over the {where}; a rank correlation is undefined"
            )
    value, p_value = _point(px, py, method)
    ci_low = ci_high = None
    n_valid = 0
    if n_boot:
        rng = np.random.default_rng(seed)
        if level == "group":
            assert codes is not None
            idx = _stratified_indices(codes, n_boot, rng)
            boot = _bootstrap_group(xv, yv, codes, idx, method)
        else:
            idx = _resample_indices(len(xv), n_boot, rng)
            boot = _bootstrap_architecture(xv, yv, idx, method)
        valid = boot[np.isfinite(boot)]
        n_valid = len(valid)
        if n_valid == 0:
            raise InvalidArgumentError(
                f"every bootstrap resample of {x!r} vs {y!r} was constant; no interval can be given "
                f"(too few distinct values over the {where})"
            )
        if n_valid < 0.9 * n_boot:  # reported once per table by its callers (e.g. the report's notes)
            logger.debug(
                "%s vs %s: only %d of %d bootstrap resamples were defined; the interval uses those",
                x, y, n_valid, n_boot,
            )
        alpha = (1.0 - confidence) / 2.0
        ci_low, ci_high = (float(v) for v in np.quantile(valid, [alpha, 1.0 - alpha]))
    return Correlation(
        x=x, y=y, method=method, level=level, value=value, ci_low=ci_low, ci_high=ci_high,
        p_value=p_value, n=n_points, n_rows=len(xv), n_dropped=n_dropped, n_boot=int(n_boot),
        n_boot_valid=n_valid, confidence=float(confidence), seed=int(seed),
        sign=correlation_sign(x_higher_is_better, y_higher_is_better),
        group_by=tuple(group_by) if level == "group" else (),
    )

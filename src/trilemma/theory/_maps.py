"""The ReLU NNGP correlation map and its derivative (c_σ = 2).

For ``z ~ N(0, Σ)`` with unit variances and correlation ``C``,
``2·E[ReLU(z₁) ReLU(z₂)] = f(C)`` and ``2·E[ReLU'(z₁) ReLU'(z₂)] = ḟ(C)`` with

    f(C) = (sqrt(1 − C²) + (π − arccos C)·C) / π,        ḟ(C) = (π − arccos C) / π,

the degree-1 arc-cosine kernel of Cho & Saul (2009, "Kernel methods for deep learning") in the
correlation form used by Poole et al. (2016, "Exponential expressivity in deep neural networks
through transient chaos") and by Chen, Huang & Wang (AutoML-Conf 2023, Section 4). ``f(1) = 1`` (a
ReLU layer with c_σ = 2 keeps the variance), ``f(0) = 1/π``, ``f(−1) = 0``, ``ḟ = df/dC``.
"""

from __future__ import annotations

import numpy as np

from trilemma._checks import is_int
from trilemma.errors import InvalidArgumentError
from trilemma.theory._validate import as_correlation, as_gram

__all__ = ["f", "fdot", "f_power", "stem_correlation", "gram_to_correlation"]


def _f(c: np.ndarray) -> np.ndarray:
    """f on already-clipped correlations (no validation)."""
    return (np.sqrt(np.maximum(1.0 - c * c, 0.0)) + (np.pi - np.arccos(c)) * c) / np.pi


def _fdot(c: np.ndarray) -> np.ndarray:
    """ḟ on already-clipped correlations (no validation)."""
    return (np.pi - np.arccos(c)) / np.pi


def _out(arr: np.ndarray) -> float | np.ndarray:
    return float(arr) if arr.ndim == 0 else arr


def f(C: float | np.ndarray) -> float | np.ndarray:
    """The ReLU NNGP correlation map ``f(C) = (sqrt(1−C²) + (π − arccos C)·C)/π``.

    Cho & Saul (2009) arc-cosine kernel of degree 1, normalized for c_σ = 2 (Poole et al. 2016;
    Chen, Huang & Wang, AutoML-Conf 2023).

    Args:
        C: Correlation(s), a number or an array of any shape, in [-1, 1].

    Returns:
        ``f(C)``, a float for scalar input, else an array of the same shape.

    Raises:
        InvalidArgumentError: some ``|C| > 1 + 1e-9`` or a non-finite value.
        InvalidTypeError: ``C`` is not numeric.
    """
    return _out(_f(as_correlation(C)))


def fdot(C: float | np.ndarray) -> float | np.ndarray:
    """``ḟ(C) = (π − arccos C)/π = df/dC``, the ReLU derivative kernel (c_σ = 2).

    Args:
        C: Correlation(s) in [-1, 1], any shape.

    Returns:
        ``ḟ(C)``, a float for scalar input, else an array of the same shape.

    Raises:
        InvalidArgumentError: some ``|C| > 1 + 1e-9`` or a non-finite value.
    """
    return _out(_fdot(as_correlation(C)))


def _check_depth(d: object) -> int:
    if not is_int(d) or int(d) < 0:
        raise InvalidArgumentError(f"d (the number of compositions) must be an int >= 0, got {d!r}")
    return int(d)


def f_power(C: float | np.ndarray, d: int) -> float | np.ndarray:
    """The d-fold composition ``f^d(C)`` (``f^0`` is the identity).

    ``f^d(C)`` is the correlation after ``d`` linear + ReLU layers of a chain, starting from
    correlation ``C`` (Poole et al. 2016; Theorem 4.4 of Chen, Huang & Wang, AutoML-Conf 2023).

    Args:
        C: Correlation(s) in [-1, 1], any shape.
        d: Number of compositions, ``d >= 0``.

    Returns:
        ``f^d(C)``, a float for scalar input, else an array of the same shape.

    Raises:
        InvalidArgumentError: bad ``C`` (see :func:`f`) or ``d`` not an int >= 0.
    """
    d = _check_depth(d)
    c = as_correlation(C)
    for _ in range(d):
        c = _f(c)
    return _out(c)


def stem_correlation(C_input: float | np.ndarray) -> float | np.ndarray:
    """Correlation at the cell input (node 0) given the correlation of the raw inputs.

    The stem is one linear + ReLU layer, so node 0 carries ``f(C_input)``. All bounds of
    :mod:`trilemma.theory` take ``C`` at the **cell input** (node 0 = stem output); pass raw
    input correlations through this function first.

    Args:
        C_input: Correlation(s) of the raw inputs, any shape (a correlation matrix is mapped
            entry-wise; its unit diagonal stays 1).

    Returns:
        ``f(C_input)``.
    """
    return f(C_input)


def gram_to_correlation(K: np.ndarray) -> np.ndarray:
    """``K_ij / sqrt(K_ii K_jj)``: the correlation matrix of a Gram matrix.

    Args:
        K: ``(n, n)`` symmetric Gram matrix with a positive diagonal.

    Returns:
        ``(n, n)`` correlation matrix with unit diagonal (entries clipped to [-1, 1]).

    Raises:
        InvalidArgumentError: ``K`` is not a Gram matrix or has a zero diagonal entry.
    """
    arr = as_gram(K, "K")
    diag = np.diag(arr)
    if np.any(diag <= 0):
        raise InvalidArgumentError(
            f"K must have a positive diagonal to define correlations; entry {int(np.argmin(diag))} is {float(diag.min())!r}"
        )
    s = np.sqrt(diag)
    out = np.clip(arr / np.outer(s, s), -1.0, 1.0)
    np.fill_diagonal(out, 1.0)
    return out

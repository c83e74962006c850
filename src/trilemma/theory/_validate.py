"""Input checks shared by the theory modules (specs, correlations, Gram matrices, widths)."""

from __future__ import annotations

import numpy as np

from trilemma._checks import is_int
from trilemma.errors import InvalidArgumentError, InvalidTypeError
from trilemma.spaces import CellSpec

__all__ = [
    "ROUNDOFF",
    "as_spec",
    "as_correlation",
    "as_correlation_matrix",
    "as_gram",
    "as_width",
]

#: Correlations up to this far outside [-1, 1] are treated as round-off and clipped.
ROUNDOFF = 1e-9
_SYMMETRY_ATOL = 1e-8
_DIAGONAL_ATOL = 1e-6


def as_spec(spec: object) -> CellSpec:
    """A :class:`CellSpec` from a spec or its string form."""
    if isinstance(spec, CellSpec):
        return spec
    if isinstance(spec, str):
        return CellSpec.parse(spec)
    raise InvalidTypeError(
        f"spec must be a CellSpec or a cell string like '2_02_002', got {type(spec).__name__} {spec!r}"
    )


def as_width(width: object, name: str = "width") -> int:
    """A positive int width."""
    if not is_int(width) or int(width) < 1:
        raise InvalidArgumentError(f"{name} must be a positive int, got {width!r}")
    return int(width)


def _as_float_array(value: object, name: str) -> np.ndarray:
    if isinstance(value, (bool, np.bool_)):
        raise InvalidTypeError(f"{name} must be a number or an array of numbers, got bool {value!r}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(
            f"{name} must be a number or an array of numbers, got {type(value).__name__} {value!r}"
        ) from exc
    if arr.dtype == object:  # pragma: no cover - np.asarray(dtype=float) raises first
        raise InvalidTypeError(f"{name} must be numeric, got {value!r}")
    if not np.all(np.isfinite(arr)):
        raise InvalidArgumentError(f"{name} must be finite; got NaN or inf in {value!r}")
    return arr


def as_correlation(C: object, name: str = "C") -> np.ndarray:
    """Correlations as a float64 array, clipped to [-1, 1] for round-off only.

    Raises:
        InvalidTypeError: ``C`` is not numeric.
        InvalidArgumentError: ``C`` is not finite or some ``|C| > 1 + 1e-9``.
    """
    arr = _as_float_array(C, name)
    if arr.size:
        worst = float(np.max(np.abs(arr)))
        if worst > 1.0 + ROUNDOFF:
            raise InvalidArgumentError(
                f"{name} must hold correlations in [-1, 1] (values up to {ROUNDOFF:g} outside are "
                f"treated as round-off and clipped); got a value with |{name}| = {worst!r}"
            )
    return np.clip(arr, -1.0, 1.0)


def _square(arr: np.ndarray, name: str, min_size: int) -> int:
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise InvalidArgumentError(f"{name} must be a square (n, n) matrix, got shape {arr.shape}")
    n = arr.shape[0]
    if n < min_size:
        raise InvalidArgumentError(f"{name} must be at least {min_size}x{min_size}, got shape {arr.shape}")
    asym = float(np.max(np.abs(arr - arr.T))) if n else 0.0
    if asym > _SYMMETRY_ATOL * max(1.0, float(np.max(np.abs(arr)))):
        raise InvalidArgumentError(
            f"{name} must be symmetric; largest |{name}[i, j] - {name}[j, i]| is {asym:.3g}"
        )
    return n


def as_correlation_matrix(C: object, name: str = "C") -> np.ndarray:
    """A validated (n, n) correlation matrix, n >= 2: symmetric, unit diagonal, entries in [-1, 1].

    Raises:
        InvalidArgumentError: wrong shape, not symmetric, diagonal not 1 (use
            :func:`~trilemma.theory.gram_to_correlation` on a Gram matrix), or entries outside [-1, 1].
    """
    arr = _as_float_array(C, name)
    _square(arr, name, 2)
    diag = np.diag(arr)
    bad = float(np.max(np.abs(diag - 1.0)))
    if bad > _DIAGONAL_ATOL:
        raise InvalidArgumentError(
            f"{name} must be a correlation matrix with unit diagonal (|diag - 1| <= {_DIAGONAL_ATOL:g}); "
            f"largest deviation is {bad:.3g}; normalize a Gram matrix with gram_to_correlation(K)"
        )
    return as_correlation(arr, name)


def as_gram(K: object, name: str = "K_in") -> np.ndarray:
    """A validated (n, n) Gram matrix, n >= 1: symmetric, finite, non-negative diagonal,
    ``|K_ij| <= sqrt(K_ii K_jj)`` up to round-off.

    Raises:
        InvalidArgumentError: any of the above fails; the message names the violated condition.
    """
    arr = _as_float_array(K, name)
    _square(arr, name, 1)
    arr = 0.5 * (arr + arr.T)
    diag = np.diag(arr)
    if np.any(diag < 0):
        raise InvalidArgumentError(
            f"{name} must have a non-negative diagonal (it is a Gram matrix); smallest entry is {float(diag.min())!r}"
        )
    bound = np.sqrt(np.outer(diag, diag))
    excess = np.abs(arr) - bound
    worst = float(np.max(excess))
    if worst > 1e-9 * max(1.0, float(diag.max(initial=0.0))):
        raise InvalidArgumentError(
            f"{name} is not a Gram matrix: |{name}[i, j]| exceeds sqrt({name}[i, i] {name}[j, j]) by {worst:.3g}"
        )
    return arr

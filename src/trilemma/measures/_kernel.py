"""Kernel matrices: spectra, robust eigenvalue statistics and block-wise (chunked) evaluation."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from trilemma._checks import is_int
from trilemma.errors import InvalidArgumentError, InvalidTypeError, MeasureFailedError
from trilemma.measures._forward import couples_samples

__all__ = ["as_matrix", "chunked", "kernel_eigenvalues", "spectrum_stats"]


def as_matrix(kernel: torch.Tensor) -> torch.Tensor:
    """A kernel as a square matrix.

    Args:
        kernel: ``(n, n)`` or a per-output kernel ``(n, n, k, k)`` with
            ``kernel[i, j, a, b] = <∂f_a(x_i), ∂f_b(x_j)>``.

    Returns:
        ``(n, n)`` unchanged, or ``(n·k, n·k)`` indexed by ``(i, a)`` pairs (sample-major).

    Raises:
        InvalidArgumentError: Any other shape.
    """
    if kernel.ndim == 2 and kernel.shape[0] == kernel.shape[1]:
        return kernel
    if kernel.ndim == 4 and kernel.shape[0] == kernel.shape[1] and kernel.shape[2] == kernel.shape[3]:
        n, _, k, _ = kernel.shape
        return kernel.permute(0, 2, 1, 3).reshape(n * k, n * k)
    raise InvalidArgumentError(f"a kernel must have shape (n, n) or (n, n, k, k), got {tuple(kernel.shape)}")


def kernel_eigenvalues(
    kernel: torch.Tensor, *, name: str = "kernel", dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Ascending eigenvalues of a symmetric kernel, computed in ``dtype`` (float64 by default).

    Args:
        kernel: ``(n, n)`` or ``(n, n, k, k)`` (see :func:`as_matrix`).
        name: Used in error messages.
        dtype: Precision of the eigendecomposition.

    Returns:
        ``(n,)`` (or ``(n·k,)``) float64 eigenvalues, ascending (rounded to ``dtype`` first).

    Raises:
        MeasureFailedError: The kernel has non-finite entries.
    """
    mat = as_matrix(kernel).detach().to(dtype)
    if not torch.isfinite(mat).all():
        raise MeasureFailedError(f"the {name} has non-finite entries (NaN/inf); its spectrum is undefined")
    mat = 0.5 * (mat + mat.T)
    return torch.linalg.eigvalsh(mat).to(torch.float64)


def spectrum_stats(eigs: torch.Tensor, *, fraction: float = 0.9) -> dict[str, float]:
    """Summary statistics of a kernel spectrum.

    Args:
        eigs: ``(n,)`` eigenvalues in any order (cast to float64).
        fraction: Trace fraction of the robust minimum eigenvalue.

    Returns:
        ``lambda_min``, ``lambda_max``, ``condition`` (``λ_max / λ_min``; ``inf`` when
        ``λ_min <= 0``), ``trace`` and ``lambda_robust``: walking the spectrum from the top
        down, the eigenvalue at which the cumulative sum first reaches ``fraction`` of the
        trace (Chen, Huang & Wang 2023's robust ``λ_min`` for fraction 0.9).

    Raises:
        InvalidArgumentError: Empty or non-1-D ``eigs``, or ``fraction`` outside (0, 1].
        MeasureFailedError: Non-finite eigenvalues.

    Example:
        >>> s = spectrum_stats(torch.tensor([1.0, 2.0, 7.0]))
        >>> s["lambda_min"], s["condition"], s["lambda_robust"]
        (1.0, 7.0, 2.0)
    """
    if not isinstance(eigs, torch.Tensor):
        raise InvalidTypeError(f"eigs must be a torch.Tensor, got {type(eigs).__name__}")
    if eigs.ndim != 1 or eigs.numel() == 0:
        raise InvalidArgumentError(f"eigs must be a non-empty 1-D tensor, got shape {tuple(eigs.shape)}")
    if not 0.0 < fraction <= 1.0:
        raise InvalidArgumentError(f"fraction must be in (0, 1], got {fraction}")
    e = eigs.detach().to(torch.float64).cpu()
    if not torch.isfinite(e).all():
        raise MeasureFailedError("the spectrum has non-finite eigenvalues")
    desc = torch.sort(e, descending=True).values
    trace = float(desc.sum())
    cum = torch.cumsum(desc, 0)
    idx = int(torch.searchsorted(cum, torch.tensor([fraction * trace], dtype=torch.float64)).clamp(max=len(desc) - 1))
    lmin, lmax = float(desc[-1]), float(desc[0])
    return {
        "lambda_min": lmin,
        "lambda_max": lmax,
        "condition": lmax / lmin if lmin > 0 else math.inf,
        "trace": trace,
        "lambda_robust": float(desc[idx]),
    }


def chunked(kernel_fn: Callable[..., torch.Tensor], chunk_size: int) -> Callable[..., torch.Tensor]:
    """Evaluate a kernel function block by block to bound memory.

    ``kernel_fn(model, x1, x2, **kw)`` must return the cross-kernel ``(n1, n2)`` or
    ``(n1, n2, k, k)`` of two batches of *independent* samples. The wrapped function
    computes the kernel of ``(x1, x2)`` (or of ``x1`` with itself) in
    ``chunk_size × chunk_size`` blocks; for a symmetric kernel only blocks on and above the
    diagonal are computed and the rest mirrored.

    Args:
        kernel_fn: e.g. :func:`~trilemma.measures.empirical_ntk` or
            :func:`~trilemma.measures.nngp_gram`.
        chunk_size: Rows per block (>= 1).

    Returns:
        A function with the same signature as ``kernel_fn``.

    Raises:
        InvalidArgumentError: ``chunk_size < 1``; at call time, ``batchnorm="batch"`` (the
            default) on a model with BatchNorm (batch statistics couple all samples, so
            blocks would change the kernel).

    Example:
        >>> from trilemma.measures import empirical_ntk  # doctest: +SKIP
        >>> ntk = chunked(empirical_ntk, 32)(model, x)  # doctest: +SKIP
    """
    if not is_int(chunk_size) or chunk_size < 1:
        raise InvalidArgumentError(f"chunk_size must be an int >= 1, got {chunk_size!r}")

    @functools.wraps(kernel_fn)
    def wrapper(model: Any, x1: torch.Tensor, x2: torch.Tensor | None = None, **kw: Any) -> torch.Tensor:
        if couples_samples(model, kw.get("batchnorm", "batch")):
            raise InvalidArgumentError(
                "chunked kernels need independent samples; batchnorm='batch' couples the batch of a model "
                "with BatchNorm (pass batchnorm='eval')"
            )
        symmetric = x2 is None
        other = x1 if x2 is None else x2
        n1, n2 = x1.shape[0], other.shape[0]
        if n1 == 0 or n2 == 0:
            raise InvalidArgumentError(f"kernel batches must be non-empty, got {n1} and {n2} rows")
        out: torch.Tensor | None = None
        for i0 in range(0, n1, chunk_size):
            for j0 in range(i0 if symmetric else 0, n2, chunk_size):
                xa, xb = x1[i0:i0 + chunk_size], other[j0:j0 + chunk_size]
                block = kernel_fn(model, xa, None if symmetric and i0 == j0 else xb, **kw)
                if out is None:
                    out = block.new_zeros((n1, n2, *block.shape[2:]))
                out[i0:i0 + xa.shape[0], j0:j0 + xb.shape[0]] = block
                if symmetric and j0 != i0:
                    mirror = block.transpose(0, 1)
                    if mirror.ndim == 4:
                        mirror = mirror.transpose(2, 3)
                    out[j0:j0 + xb.shape[0], i0:i0 + xa.shape[0]] = mirror
        return out  # type: ignore[return-value]

    return wrapper

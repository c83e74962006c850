"""Generalization at initialization: the NTK bound ``sqrt(yᵀ Θ⁻¹ y / N)``.

Cao & Gu (NeurIPS 2019, Theorem 3.3) bound the population risk of a wide network trained by
SGD by ``Õ(L · sqrt(yᵀ Θ⁻¹ y / N))``; Chen, Huang & Wang (2023, Theorem 4.5) replace the
depth factor by ``Σ_p d_p`` for a DAG cell. Smaller is better.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trilemma.errors import InvalidArgumentError, InvalidTypeError, MeasureFailedError
from trilemma.measures._base import MeasureResult, register_measure
from trilemma.measures._forward import output_width
from trilemma.measures._kernel import as_matrix
from trilemma.measures._ntk import NTKImplementation, empirical_ntk

__all__ = ["kernel_quadratic_form", "ntk_generalization_bound"]

#: Jitter schedule for a singular kernel, relative to the mean diagonal.
_JITTER_START, _JITTER_STOP = 1e-12, 1e-2


def kernel_quadratic_form(kernel: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """``tr(Yᵀ K⁻¹ Y)`` by a Cholesky solve, with a jitter for a singular ``K``.

    If the Cholesky factorization of ``K`` fails, ``ε · mean(diag K) · I`` is added with
    ``ε = 1e-12, 1e-11, …, 1e-2`` until it succeeds; ``ε · mean(diag K)`` is returned.

    Args:
        kernel: ``(N, N)`` symmetric positive semi-definite matrix.
        targets: ``(N,)`` or ``(N, k)``.

    Returns:
        ``(quadratic form, absolute jitter added)`` (jitter 0.0 when none was needed).

    Raises:
        MeasureFailedError: Non-finite kernel, or not factorizable even with the largest jitter.
    """
    k = kernel.detach().to(torch.float64)
    y = targets.detach().to(device=k.device, dtype=torch.float64)
    if y.ndim == 1:
        y = y.unsqueeze(1)
    if not torch.isfinite(k).all():
        raise MeasureFailedError("the kernel has non-finite entries (NaN/inf)")
    k = 0.5 * (k + k.T)
    scale = float(k.diagonal().mean())
    if not scale > 0:
        raise MeasureFailedError(f"the kernel has a non-positive mean diagonal ({scale}); it cannot be inverted")
    jitter = 0.0
    eps = _JITTER_START
    eye = torch.eye(k.shape[0], dtype=k.dtype, device=k.device)
    while True:
        chol, info = torch.linalg.cholesky_ex(k + jitter * eye)
        if int(info) == 0:
            break
        if eps > _JITTER_STOP:
            raise MeasureFailedError(
                f"the kernel is not positive definite even with jitter {jitter:.3g} "
                f"({_JITTER_STOP:g} of its mean diagonal {scale:.3g})"
            )
        jitter = eps * scale
        eps *= 10
    sol = torch.cholesky_solve(y, chol)
    return float((y * sol).sum()), jitter


def _targets(y: torch.Tensor, num_outputs: int) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise InvalidTypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if not y.is_floating_point():
        if y.ndim != 1:
            raise InvalidArgumentError(f"integer labels must be class indices of shape (n,), got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_outputs):
            raise InvalidArgumentError(
                f"class indices must be in [0, {num_outputs}) (the model has {num_outputs} outputs), "
                f"got range [{int(y.min())}, {int(y.max())}]"
            )
        return torch.nn.functional.one_hot(y.long(), num_outputs).to(torch.float64)
    if y.ndim not in (1, 2):
        raise InvalidArgumentError(f"float targets must have shape (n,) or (n, k), got {tuple(y.shape)}")
    return y.to(torch.float64)


def ntk_generalization_bound(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    implementation: NTKImplementation | str = NTKImplementation.STRUCTURED,
    mode: str = "sum",
    batchnorm: str = "batch",
    dtype: torch.dtype | None = torch.float64,
) -> tuple[float, dict[str, float]]:
    """``sqrt(yᵀ Θ⁻¹ y / N)`` with ``Θ`` the empirical NTK on ``x`` (Cao & Gu 2019).

    Args:
        model: Any ``nn.Module`` (never modified).
        x: Inputs ``(N, *)``.
        y: Class indices ``(N,)`` (one-hot encoded over the model's outputs), scalar
            targets ``(N,)`` float, or targets ``(N, k)`` float. Multi-column targets use
            ``tr(Yᵀ Θ⁻¹ Y)`` with the ``"sum"``/``"trace"`` kernel, and the vectorized
            ``vec(Y)ᵀ Θ⁻¹ vec(Y)`` with the ``"full"`` ``(N·k, N·k)`` kernel.
        implementation, mode, batchnorm, dtype: As in :func:`empirical_ntk`.

    Returns:
        ``(value, extras)``; extras: ``jitter`` (absolute diagonal jitter added, 0.0 if
        none), ``quadratic_form`` and, for a DAG-MLP, ``sum_depth`` (``Σ_p d_p``) and
        ``bound = sum_depth · value`` (Chen, Huang & Wang 2023, Theorem 4.5).

    Raises:
        InvalidArgumentError: Labels of the wrong shape or range.
        MeasureFailedError: The kernel cannot be inverted even with jitter.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise InvalidTypeError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
    if y.shape[0] != x.shape[0]:
        raise InvalidArgumentError(f"y must have one row per input ({x.shape[0]}), got shape {tuple(y.shape)}")
    theta = empirical_ntk(model, x, implementation=implementation, mode=mode, batchnorm=batchnorm, dtype=dtype)
    n = x.shape[0]
    if mode == "full":
        k = theta.shape[2]
        targets = _targets(y, k)
        if targets.ndim == 1 or targets.shape[1] != k:
            raise InvalidArgumentError(
                f"mode='full' needs (N, {k}) targets or class indices, got shape {tuple(y.shape)}"
            )
        q, jitter = kernel_quadratic_form(as_matrix(theta), targets.reshape(-1))
    else:
        q, jitter = kernel_quadratic_form(theta, _targets(y, output_width(model, x, batchnorm=batchnorm)))
    value = math.sqrt(max(q, 0.0) / n)
    extras: dict[str, float] = {"jitter": jitter, "quadratic_form": q}
    spec = getattr(model, "spec", None)
    topo = getattr(spec, "topology", None)
    if topo is not None and hasattr(topo, "sum_depth"):
        extras["sum_depth"] = float(topo.sum_depth)
        extras["bound"] = float(topo.sum_depth) * value
    return value, extras


@register_measure(name="ntk_gen_bound", needs_labels=True, axis="generalization", higher_is_better=False)
def _ntk_bound(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    implementation: str = "structured",
    mode: str = "sum",
    batchnorm: str = "batch",
    dtype: torch.dtype | None = torch.float64,
) -> MeasureResult:
    """NTK generalization bound sqrt(yᵀ Θ⁻¹ y / N) with labels (Cao & Gu 2019; Chen, Huang & Wang 2023).

    Float64 STRUCTURED empirical NTK of the summed logits, BatchNorm with batch statistics;
    class labels one-hot encoded.
    Extras: the jitter added to a singular kernel, and ``Σ_p d_p · value`` for DAG-MLPs.
    """
    if y is None:
        raise InvalidArgumentError("ntk_gen_bound needs labels y")
    value, extras = ntk_generalization_bound(model, x, y, implementation=implementation, mode=mode,
                                             batchnorm=batchnorm, dtype=dtype)
    return MeasureResult(value=value, extras=extras)

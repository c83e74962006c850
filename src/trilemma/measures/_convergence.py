"""Convergence at initialization: NNGP and NTK spectra.

A larger least eigenvalue of the NNGP Gram ``K⁽ᴴ⁾`` or of the NTK Gram means faster linear
convergence of gradient descent on the squared loss (Du et al. 2019; Chen, Huang & Wang
2023, Theorems 4.3-4.4); TE-NAS (Chen, Gong & Wang, ICLR 2021) uses the NTK condition
number (smaller is better).

BatchNorm: batch statistics by default (``batchnorm="batch"``; see
:mod:`trilemma.measures._forward`). ``convention="te-nas"`` reproduces TE-NAS's NTK: only
the parameters whose name contains ``"weight"`` (:func:`~trilemma.measures.weight_parameter_names`),
kernel and eigenvalues in float32; the default (``"trilemma"``) differentiates every
parameter and computes in float64.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trilemma.errors import InvalidArgumentError, InvalidTypeError
from trilemma.measures._base import MeasureResult, register_measure
from trilemma.measures._forward import Feature, couples_samples, functional_view
from trilemma.measures._kernel import kernel_eigenvalues, spectrum_stats
from trilemma.measures._ntk import ntk_spectrum, weight_parameter_names

__all__ = ["NTK_CONVENTIONS", "nngp_gram", "nngp_spectrum", "ntk_convention"]


def nngp_gram(
    model: nn.Module,
    x: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    feature: Feature = "auto",
    batchnorm: str = "batch",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Empirical NNGP Gram ``K = Φ(x) Φ(x2)ᵀ / d`` of a feature node at initialization.

    ``Φ`` is the chosen feature map flattened to ``(n, d)``; dividing by the width ``d``
    makes ``K`` the finite-width estimate of the infinite-width NNGP kernel (Lee et al.,
    ICLR 2018; Chen, Huang & Wang 2023 use the output node of the cell before the readout).

    Args:
        model: Any ``nn.Module`` (never modified).
        x: Inputs ``(n1, *)``.
        x2: Optional second batch ``(n2, *)`` (default ``x``).
        feature: The feature node: ``"auto"`` (``model.features`` for a DAG-MLP, else the
            input of the last ``nn.Linear``), ``"output"``, ``"penultimate"``, a submodule
            name or a callable ``feature(model, x)``.
        batchnorm: ``"batch"`` (default; with BatchNorm it does not allow ``x2``),
            ``"eval"`` or ``"remove"``.
        dtype: Computation dtype (``None``: the model's).

    Returns:
        ``(n1, n2)`` Gram matrix in ``dtype`` on the model's device.

    Raises:
        InvalidTypeError: ``x``/``x2`` not tensors.
        InvalidArgumentError: Empty batch, ``x2`` with ``batchnorm="batch"``, bad options.

    Example:
        >>> from trilemma.models import build_model
        >>> net = build_model("2_02_002", 8, 3, width=512, seed=0)
        >>> x = torch.nn.functional.normalize(torch.randn(4, 8), dim=1) * 8 ** 0.5
        >>> k = nngp_gram(net, x)
        >>> tuple(k.shape)
        (4, 4)
    """
    for nm, t in (("x", x), ("x2", x2)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise InvalidTypeError(f"{nm} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim < 1 or t.shape[0] < 1:
            raise InvalidArgumentError(f"{nm} must be a non-empty batch (n, *), got shape {tuple(t.shape)}")
    if x2 is not None and couples_samples(model, batchnorm):
        raise InvalidArgumentError(
            "batchnorm='batch' couples the samples of one batch (the model has BatchNorm); x2 is not supported"
        )
    with functional_view(model, feature=feature, dtype=dtype, batchnorm=batchnorm) as view, torch.no_grad():
        phi1 = view.forward(view.input(x)).reshape(x.shape[0], -1)
        phi2 = phi1 if x2 is None else view.forward(view.input(x2)).reshape(x2.shape[0], -1)
        return phi1 @ phi2.T / phi1.shape[1]


def nngp_spectrum(
    model: nn.Module,
    x: torch.Tensor,
    *,
    feature: Feature = "auto",
    batchnorm: str = "batch",
    dtype: torch.dtype | None = None,
    fraction: float = 0.9,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eigenvalues (float64, ascending, CPU) and :func:`spectrum_stats` of :func:`nngp_gram`."""
    eigs = kernel_eigenvalues(nngp_gram(model, x, feature=feature, batchnorm=batchnorm, dtype=dtype),
                              name="NNGP Gram").cpu()
    return eigs, spectrum_stats(eigs, fraction=fraction)


# --------------------------------------------------------------------------- registered


def spectrum_result(stat: str, eigs: torch.Tensor, stats: dict[str, float], **extra: Any) -> MeasureResult:
    return MeasureResult(value=stats[stat], extras={**stats, "eigenvalues": eigs, **extra})


#: Conventions of the NTK measures (the first is the default).
NTK_CONVENTIONS: tuple[str, ...] = ("trilemma", "te-nas")


def ntk_convention(
    model: nn.Module, convention: str, dtype: torch.dtype | None
) -> tuple[list[str] | None, torch.dtype, torch.dtype]:
    """``(parameter names, kernel dtype, eigen dtype)`` of an NTK convention.

    ``"trilemma"``: every parameter, float64 (unless ``dtype``); ``"te-nas"``: parameters
    whose name contains ``"weight"``, float32 kernel (unless ``dtype``) and float32
    eigenvalues, as TE-NAS (Chen, Gong & Wang 2021).

    Raises:
        InvalidArgumentError: Unknown convention.
    """
    if convention == "trilemma":
        return None, dtype or torch.float64, torch.float64
    if convention == "te-nas":
        return weight_parameter_names(model), dtype or torch.float32, torch.float32
    raise InvalidArgumentError(f"convention must be one of {NTK_CONVENTIONS}, got {convention!r}")


def _ntk_stat(stat: str) -> Any:
    def fn(
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        implementation: str = "structured",
        mode: str = "sum",
        batchnorm: str = "batch",
        dtype: torch.dtype | None = None,
        fraction: float = 0.9,
        convention: str = "trilemma",
    ) -> MeasureResult:
        names, kernel_dtype, eigen_dtype = ntk_convention(model, convention, dtype)
        eigs, stats = ntk_spectrum(model, x, implementation=implementation, mode=mode, batchnorm=batchnorm,
                                   dtype=kernel_dtype, fraction=fraction, params=names, eigen_dtype=eigen_dtype)
        return spectrum_result(stat, eigs, stats)

    return fn


def _nngp_stat(stat: str) -> Any:
    def fn(
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        feature: Feature = "auto",
        batchnorm: str = "batch",
        dtype: torch.dtype | None = torch.float64,
        fraction: float = 0.9,
    ) -> MeasureResult:
        eigs, stats = nngp_spectrum(model, x, feature=feature, batchnorm=batchnorm, dtype=dtype, fraction=fraction)
        return spectrum_result(stat, eigs, stats)

    return fn


_NTK_DOC = (
    "Computed in float64 by the STRUCTURED empirical NTK of the summed logits (Jacot et al. 2018; "
    "Chen, Huang & Wang 2023), BatchNorm with batch statistics (the Jacobian rows of the batch "
    "function, as TE-NAS); convention='te-nas' differentiates only parameters named 'weight' and "
    "computes in float32 (TE-NAS, Chen, Gong & Wang 2021); dtype=None means the convention's dtype. "
    "Extras hold every spectrum statistic and the eigenvalues."
)
for _name, _stat, _hib, _desc in (
    ("ntk_lambda_min", "lambda_min", True, "Least eigenvalue of the empirical NTK (Chen, Huang & Wang 2023, Thm 4.6)."),
    ("ntk_lambda_robust", "lambda_robust", True,
     "Eigenvalue where the top-down cumulative NTK spectrum reaches 90% of the trace (robust λ_min)."),
    ("ntk_condition", "condition", False,
     "Condition number λ_max/λ_min of the empirical NTK (TE-NAS, Chen et al. 2021)."),
    ("ntk_trace", "trace", None, "Trace of the empirical NTK."),
    ("ntk_lambda_max", "lambda_max", None, "Largest eigenvalue of the empirical NTK (Jacot et al. 2018)."),
):
    _fn = _ntk_stat(_stat)
    _fn.__doc__ = f"{_desc}\n\n{_NTK_DOC}"
    # λ_min of the NTK bounds generalization too (Theorems 4.5/4.6): the papers' Fig. 4 and 6 use it there
    register_measure(_fn, name=_name, axis="convergence", higher_is_better=_hib, description=_desc,
                     also={"generalization": True} if _stat in ("lambda_min", "lambda_robust") else None)

for _name, _stat, _hib, _desc in (
    ("nngp_lambda_min", "lambda_min", True,
     "Least eigenvalue of the NNGP Gram of the output node before the readout (Chen, Huang & Wang 2023, Thm 4.4)."),
    ("nngp_condition", "condition", False, "Condition number of the NNGP Gram of the feature node."),
):
    _fn = _nngp_stat(_stat)
    _fn.__doc__ = f"{_desc}\n\nNNGP Gram Φ Φᵀ / d in float64 (Lee et al. 2018); extras hold the spectrum."
    register_measure(_fn, name=_name, axis="convergence", higher_is_better=_hib, description=_desc)

"""Baseline zero-cost proxies (training-free architecture scores).

Each proxy follows its paper and the common re-implementation of Abdelfattah et al.
("Zero-cost proxies for lightweight NAS", ICLR 2021; code: zero-cost-nas, reused by
NASLib for NAS-Bench-Suite-Zero): the per-weight scores are summed over the weights of every
``nn.Linear`` and convolution layer. Gradients are taken with respect to detached copies
of the parameters (``torch.func.functional_call``), so the model and its ``.grad`` fields
are untouched. Loss-based proxies use the cross-entropy for class indices (or probability
targets ``(n, k)``) and the mean squared error for scalar float targets. All are "higher is
better" in their papers' convention.

BatchNorm: batch statistics by default (``batchnorm="batch"``), as the reference code runs
a freshly built network in train mode; ``"eval"`` (running statistics) is an option.
synflow is the exception: its input is a single all-ones sample, and zero-cost-nas removes
the BatchNorm layers (``batchnorm="remove"``, the default here).

Conventions (``convention=...``; :data:`PROXY_CONVENTIONS` lists what each proxy accepts):

* ``"trilemma"`` (default) — the papers' definitions as written in the docstrings.
* ``"zero-cost-nas"`` — the reference code of Abdelfattah et al. Identical to the default
  for snip, grasp, grad_norm, jacob_cov and synflow. For fisher the reference broadcasts
  each output channel's value over that channel's fan-in (``weight.shape[1:]``) before
  summing (an artifact of its per-weight pruning interface), i.e. every channel's value
  is multiplied by ``C_in/groups · k_h · k_w`` (``in_features`` for a linear layer).
* ``"naswot"`` (naswot) — the hook rule of NASWOT's reference code, see
  :data:`~trilemma.measures._regions.ACTIVATION_CONVENTIONS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from trilemma.errors import InvalidArgumentError, MeasureFailedError
from trilemma.measures._base import MeasureResult, register_measure
from trilemma.measures._forward import FunctionalView, functional_view
from trilemma.measures._regions import activation_patterns, distinct_codes, hamming_similarity

__all__ = ["PROXY_CONVENTIONS", "check_convention", "naswot_score", "jacob_cov_score", "weight_names"]

#: The conventions each proxy accepts (the first is its default).
PROXY_CONVENTIONS: dict[str, tuple[str, ...]] = {
    "snip": ("trilemma", "zero-cost-nas"),
    "grasp": ("trilemma", "zero-cost-nas"),
    "grad_norm": ("trilemma", "zero-cost-nas"),
    "fisher": ("trilemma", "zero-cost-nas"),
    "synflow": ("trilemma", "zero-cost-nas"),
    "jacob_cov": ("trilemma", "zero-cost-nas"),
    "naswot": ("trilemma", "naswot"),
}


def check_convention(measure: str, convention: str, allowed: tuple[str, ...]) -> None:
    """Raise :class:`~trilemma.errors.InvalidArgumentError` unless ``convention`` is in ``allowed``."""
    if convention not in allowed:
        raise InvalidArgumentError(f"{measure}: convention must be one of {allowed}, got {convention!r}")


def weight_names(model: nn.Module) -> list[str]:
    """Names of the weight tensors of every ``nn.Linear`` and convolution layer."""
    out = []
    for mname, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and m.weight is not None:
            out.append(f"{mname}.weight" if mname else "weight")
    return out


def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


def loss_of(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The proxies' training loss: cross-entropy for class indices / probabilities, MSE for scalars.

    Args:
        out: Model output ``(n, *)`` (flattened to ``(n, k)``).
        y: Class indices ``(n,)``, probabilities ``(n, k)`` or, for ``k = 1``, floats ``(n,)``.

    Raises:
        InvalidArgumentError: Labels of another shape or type.
    """
    out = out.reshape(out.shape[0], -1)
    if not y.is_floating_point():
        return F.cross_entropy(out, y.long().reshape(-1))
    if y.ndim == 2 and y.shape[1] == out.shape[1]:
        return F.cross_entropy(out, y.to(out.dtype))
    if y.ndim == 1 and out.shape[1] == 1:
        return F.mse_loss(out[:, 0], y.to(out.dtype))
    raise InvalidArgumentError(
        f"labels must be class indices (n,), probabilities (n, {out.shape[1]}) or, for a single-output "
        f"model, scalar targets (n,); got {y.dtype} of shape {tuple(y.shape)}"
    )


def _labels(y: torch.Tensor | None, proxy: str) -> torch.Tensor:
    if y is None:
        raise InvalidArgumentError(f"{proxy} needs labels y; got y=None")
    return y


def _weight_grads(
    view: FunctionalView, x: torch.Tensor, y: torch.Tensor, names: list[str], *, create_graph: bool = False
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    params = view.trainable()
    loss = loss_of(view(params, view.input(x)), y)
    grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph, allow_unused=True)
    grads_l = [torch.zeros_like(params[k]) if g is None else g for k, g in zip(names, grads)]
    return params, grads_l


def _require_weights(model: nn.Module, proxy: str) -> list[str]:
    names = weight_names(model)
    if not names:
        raise InvalidArgumentError(
            f"{proxy} scores the weights of nn.Linear/conv layers; {type(model).__name__} has none"
        )
    return names


# --------------------------------------------------------------------------- scores from gradients
# Shared by the registered measures and the fused proxy suite (one formula, two callers).


def snip_score(params: list[torch.Tensor], grads: list[torch.Tensor]) -> float:
    """Σ |θ ⊙ g| over the given weights."""
    return float(sum((p.detach() * g.detach()).abs().sum() for p, g in zip(params, grads)))


def grad_norm_score(grads: list[torch.Tensor]) -> float:
    """Σ_layers ‖g‖₂."""
    return float(sum(g.detach().norm() for g in grads))


def fisher_score(
    acts: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None], fan_in: Sequence[int], convention: str
) -> float:
    """Σ over layer calls and output channels of ½ mean_n (Σ_spatial a ⊙ ∂L/∂a)².

    ``convention="zero-cost-nas"`` multiplies each channel's value by its layer's fan-in.
    """
    total = 0.0
    for a, g, fan in zip(acts, grads, fan_in):
        if g is None:
            continue
        prod = a.detach() * g.detach()
        per_channel = prod.sum(dim=tuple(range(2, prod.ndim))) if prod.ndim > 2 else prod
        value = float(0.5 * per_channel.pow(2).mean(0).sum())
        total += value * fan if convention == "zero-cost-nas" else value
    return total


def fan_in(layer: nn.Module) -> int:
    """Entries of one output channel's weights: ``prod(weight.shape[1:])``."""
    weight = cast(torch.Tensor, layer.weight)
    return math.prod(weight.shape[1:])


def jacob_cov_score(jac: torch.Tensor) -> float:
    """−Σ (log(λ + k) + 1/(λ + k)), k = 1e-5, λ the eigenvalues of the correlation of the rows.

    Args:
        jac: ``(n, *)`` per-sample input gradients.

    Raises:
        MeasureFailedError: A constant gradient (its correlation is undefined).
    """
    j = jac.reshape(jac.shape[0], -1).detach().to(torch.float64)
    flat = j.std(dim=1) == 0
    if bool(flat.any()):
        raise MeasureFailedError(
            f"jacob_cov: {int(flat.sum())} input gradient(s) are constant (e.g. the output does not depend on "
            "the input), so their correlation is undefined"
        )
    eig = torch.linalg.eigvalsh(torch.corrcoef(j))
    k = 1e-5
    return float(-(torch.log(eig + k) + 1.0 / (eig + k)).sum())


def naswot_score(codes: torch.Tensor, similarity: torch.Tensor | None = None) -> float:
    """log|det K_H| with ``K_H = N_A − Hamming distance`` of the binary codes ``(n, U)``.

    Args:
        codes: ``(n, U)`` bool activation codes.
        similarity: ``K_H`` if already computed (:func:`~trilemma.measures.hamming_similarity`).

    Raises:
        MeasureFailedError: ``K_H`` is singular (two inputs share an activation pattern).
    """
    k = hamming_similarity(codes) if similarity is None else similarity
    sign, logdet = torch.linalg.slogdet(k)
    if float(sign) <= 0:
        dup = codes.shape[0] - distinct_codes(k, codes.shape[1])
        raise MeasureFailedError(
            f"naswot: the binary-code kernel is singular ({dup} input(s) share another input's activation "
            "pattern), so log|det K_H| = -inf"
        )
    return float(logdet)


# --------------------------------------------------------------------------- registered


@register_measure(name="snip", needs_labels=True, axis="baseline", higher_is_better=True)
def _snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, batchnorm: str = "batch",
          dtype: torch.dtype | None = None, convention: str = "trilemma") -> MeasureResult:
    """SNIP connection sensitivity Σ |θ ⊙ ∂L/∂θ| (Lee, Ajanthan & Torr, ICLR 2019).

    Over the weights of every Linear/conv layer; zero-cost-nas computes the same number.
    """
    check_convention("snip", convention, PROXY_CONVENTIONS["snip"])
    names = _require_weights(model, "snip")
    with functional_view(model, dtype=dtype, batchnorm=batchnorm) as view:
        params, grads = _weight_grads(view, x, _labels(y, "snip"), names)
        return MeasureResult(snip_score([params[k] for k in names], grads))


@register_measure(name="grasp", needs_labels=True, axis="baseline", higher_is_better=True)
def _grasp(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, batchnorm: str = "batch",
           dtype: torch.dtype | None = None, convention: str = "trilemma") -> MeasureResult:
    """GraSP Σ −θ ⊙ (H g) with g = ∂L/∂θ and H the Hessian of the loss (Wang, Zhang & Grosse, ICLR 2020).

    Computed with a Hessian-vector product (double backward) on the batch; zero-cost-nas
    computes the same number (with two forward passes).
    """
    check_convention("grasp", convention, PROXY_CONVENTIONS["grasp"])
    names = _require_weights(model, "grasp")
    with functional_view(model, dtype=dtype, batchnorm=batchnorm) as view:
        params, grads = _weight_grads(view, x, _labels(y, "grasp"), names, create_graph=True)
        return MeasureResult(grasp_score([params[k] for k in names], grads))


def grasp_score(params: list[torch.Tensor], grads: list[torch.Tensor]) -> float:
    """Σ −θ ⊙ (H g) from first-order gradients ``grads`` built with ``create_graph=True``."""
    z = sum((g * g.detach()).sum() for g in grads)
    if not isinstance(z, torch.Tensor) or not z.requires_grad:
        return 0.0
    hg = torch.autograd.grad(z, params, allow_unused=True)
    return float(sum((-p.detach() * h).sum() for p, h in zip(params, hg) if h is not None))


@register_measure(name="grad_norm", needs_labels=True, axis="baseline", higher_is_better=True)
def _grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, batchnorm: str = "batch",
               dtype: torch.dtype | None = None, convention: str = "trilemma") -> MeasureResult:
    """Sum over layers of the Euclidean norm of the loss gradient of each weight (Abdelfattah et al. 2021)."""
    check_convention("grad_norm", convention, PROXY_CONVENTIONS["grad_norm"])
    names = _require_weights(model, "grad_norm")
    with functional_view(model, dtype=dtype, batchnorm=batchnorm) as view:
        _, grads = _weight_grads(view, x, _labels(y, "grad_norm"), names)
        return MeasureResult(grad_norm_score(grads))


@register_measure(name="fisher", needs_labels=True, axis="baseline", higher_is_better=True)
def _fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, batchnorm: str = "batch",
            dtype: torch.dtype | None = None, convention: str = "trilemma") -> MeasureResult:
    """Fisher potential Σ_c ½ mean_n (Σ_spatial a ⊙ ∂L/∂a)² over layer-output channels.

    Theis et al. 2018 / Turner et al., ICLR 2020 (BlockSwap), as a proxy in Abdelfattah et
    al. 2021; ``a`` is the output of every ``nn.Linear``/convolution layer.
    ``convention="zero-cost-nas"`` weights each channel by its fan-in, as the reference code.
    """
    check_convention("fisher", convention, PROXY_CONVENTIONS["fisher"])
    _require_weights(model, "fisher")
    labels = _labels(y, "fisher")
    acts: list[torch.Tensor] = []
    fans: list[int] = []

    def hook(m: nn.Module, _a: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        acts.append(out)
        fans.append(fan_in(m))
        return out.clone()

    with functional_view(model, dtype=dtype, batchnorm=batchnorm) as view:
        handles = [m.register_forward_hook(hook) for m in _layers(model)]
        try:
            out = view(view.trainable(), view.input(x))
        finally:
            for h in handles:
                h.remove()
        loss = loss_of(out, labels)
        grads = torch.autograd.grad(loss, acts, allow_unused=True) if acts else ()
        return MeasureResult(fisher_score(acts, list(grads), fans, convention))


@register_measure(name="synflow", axis="baseline", higher_is_better=True)
def _synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, double: bool = True,
             batchnorm: str = "remove", convention: str = "trilemma") -> MeasureResult:
    """Synaptic flow Σ |θ ⊙ ∂R/∂θ| with |θ| and an all-ones input (Tanaka et al., NeurIPS 2020).

    ``R = Σ f(1; |θ|)``: every parameter and floating buffer replaced by its absolute value
    (a copy), the input one all-ones sample of the batch's shape. BatchNorm: ``"remove"``
    (default, zero-cost-nas: the layers are the identity) or ``"eval"`` (Tanaka et al.'s
    code: running statistics, made absolute); batch statistics of a single constant input
    are not meaningful and not offered. ``double=True`` computes in float64 (the proxy
    overflows float32 for deep networks). Data- and label-free.
    """
    check_convention("synflow", convention, PROXY_CONVENTIONS["synflow"])
    if batchnorm not in ("remove", "eval"):
        raise InvalidArgumentError(
            f"synflow: batchnorm must be 'remove' (zero-cost-nas) or 'eval' (running statistics); got {batchnorm!r} "
            "(batch statistics of one all-ones input are degenerate)"
        )
    names = _require_weights(model, "synflow")
    with functional_view(model, dtype=torch.float64 if double else None, batchnorm=batchnorm) as view:
        return MeasureResult(synflow_score(view, x, names))


def synflow_score(view: FunctionalView, x: torch.Tensor, names: list[str]) -> float:
    """The synflow sum on a view (absolute parameters and buffers, one all-ones input like ``x[0]``)."""
    params = {k: v.abs().requires_grad_(True) if v.is_floating_point() else v for k, v in view.params.items()}
    saved = view.buffers
    view.buffers = {k: v.abs() if v.is_floating_point() else v for k, v in saved.items()}
    try:
        ones = torch.ones((1, *x.shape[1:]), dtype=view.dtype, device=view.device)
        r = view(params, ones).sum()
    finally:
        view.buffers = saved
    if not r.requires_grad:
        return 0.0
    grads = torch.autograd.grad(r, [params[k] for k in names], allow_unused=True)
    return float(sum((params[k].detach() * g).abs().sum() for k, g in zip(names, grads) if g is not None))


@register_measure(name="jacob_cov", axis="baseline", higher_is_better=True)
def _jacob_cov(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, batchnorm: str = "batch",
               dtype: torch.dtype | None = None, convention: str = "trilemma") -> MeasureResult:
    """Jacobian covariance score −Σ (log(λ + k) + 1/(λ + k)), k = 1e-5 (Mellor et al. 2020, arXiv v1).

    ``λ`` are the eigenvalues of the correlation matrix of the per-sample input gradients of
    the summed output (with batch statistics, the gradient of the summed batch output, as
    the reference code). Needs at least two floating inputs; an output that does not depend
    on the input raises :class:`~trilemma.errors.MeasureFailedError`.
    """
    check_convention("jacob_cov", convention, PROXY_CONVENTIONS["jacob_cov"])
    if x.shape[0] < 2 or not x.is_floating_point():
        raise InvalidArgumentError(f"jacob_cov needs >= 2 floating inputs, got {x.shape[0]} of dtype {x.dtype}")
    with functional_view(model, dtype=dtype, batchnorm=batchnorm) as view:
        xs = view.input(x).detach().requires_grad_(True)
        out = view.forward(xs)
        jac = input_gradient(out, xs)
    return MeasureResult(jacob_cov_score(jac))


def input_gradient(out: torch.Tensor, xs: torch.Tensor, *, retain_graph: bool = False) -> torch.Tensor:
    """``∂(Σ out)/∂xs``; an output that does not depend on ``xs`` raises MeasureFailedError."""
    if not out.requires_grad:
        raise MeasureFailedError("jacob_cov: the output does not depend on the input (no gradient path)")
    (jac,) = torch.autograd.grad(out.sum(), xs, allow_unused=True, retain_graph=retain_graph)
    if jac is None:
        raise MeasureFailedError("jacob_cov: the output does not depend on the input (no gradient path)")
    return jac


@register_measure(name="naswot", axis="baseline", higher_is_better=True, requires=("relu",))
def _naswot(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, batchnorm: str = "batch",
    convention: str = "trilemma",
) -> MeasureResult:
    """NASWOT log|det K_H|, K_H = N_A − Hamming distance of binary ReLU codes (Mellor et al., ICML 2021).

    Each ``nn.ReLU`` unit counted once; ``convention="naswot"`` hooks every module whose
    type contains "ReLU" as the reference code (NAS-Bench-201's conv ops counted twice).
    """
    check_convention("naswot", convention, PROXY_CONVENTIONS["naswot"])
    codes = activation_patterns(model, x, batchnorm=batchnorm, convention=convention)
    return MeasureResult(naswot_score(codes))

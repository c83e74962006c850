"""Baseline zero-cost proxies (training-free architecture scores).

Each proxy follows its paper and the common re-implementation of Abdelfattah et al.
("Zero-cost proxies for lightweight NAS", ICLR 2021): the per-weight scores are summed over
the weights of every ``nn.Linear`` and convolution layer. Gradients are taken with respect to
detached copies of the parameters (``torch.func.functional_call``), so the model and its
``.grad`` fields are untouched. Loss-based proxies use the cross-entropy for class indices
(or probability targets ``(n, k)``) and the mean squared error for scalar float targets.
All are "higher is better" in their papers' convention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trilemma.errors import InvalidArgumentError, MeasureFailedError
from trilemma.measures._base import MeasureResult, register_measure
from trilemma.measures._forward import FunctionalView, functional_view
from trilemma.measures._regions import activation_patterns

__all__ = ["weight_names"]


def weight_names(model: nn.Module) -> list[str]:
    """Names of the weight tensors of every ``nn.Linear`` and convolution layer."""
    out = []
    for mname, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and m.weight is not None:
            out.append(f"{mname}.weight" if mname else "weight")
    return out


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
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


def _weight_grads(
    view: FunctionalView, x: torch.Tensor, y: torch.Tensor, names: list[str], *, create_graph: bool = False
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    params = view.trainable()
    loss = _loss(view(params, view.input(x)), y)
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


@register_measure(name="snip", needs_labels=True, axis="baseline", higher_is_better=True)
def _snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, batchnorm: str = "eval",
          dtype: torch.dtype | None = None) -> MeasureResult:
    """SNIP connection sensitivity Σ |θ ⊙ ∂L/∂θ| (Lee, Ajanthan & Torr, ICLR 2019)."""
    names = _require_weights(model, "snip")
    with functional_view(model, dtype=dtype, batchnorm=batchnorm) as view:
        params, grads = _weight_grads(view, x, y, names)  # type: ignore[arg-type]
        return MeasureResult(float(sum((params[k].detach() * g).abs().sum() for k, g in zip(names, grads))))


@register_measure(name="grasp", needs_labels=True, axis="baseline", higher_is_better=True)
def _grasp(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, batchnorm: str = "eval",
           dtype: torch.dtype | None = None) -> MeasureResult:
    """GraSP Σ −θ ⊙ (H g) with g = ∂L/∂θ and H the Hessian of the loss (Wang, Zhang & Grosse, ICLR 2020).

    Computed with a Hessian-vector product (double backward) on the batch.
    """
    names = _require_weights(model, "grasp")
    with functional_view(model, dtype=dtype, batchnorm=batchnorm) as view:
        params, grads = _weight_grads(view, x, y, names, create_graph=True)  # type: ignore[arg-type]
        z = sum((g * g.detach()).sum() for g in grads)
        if not isinstance(z, torch.Tensor) or not z.requires_grad:
            return MeasureResult(0.0)
        hg = torch.autograd.grad(z, [params[k] for k in names], allow_unused=True)
        score = sum((-params[k].detach() * h).sum() for k, h in zip(names, hg) if h is not None)
        return MeasureResult(float(score))


@register_measure(name="grad_norm", needs_labels=True, axis="baseline", higher_is_better=True)
def _grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, batchnorm: str = "eval",
               dtype: torch.dtype | None = None) -> MeasureResult:
    """Sum over layers of the Euclidean norm of the loss gradient of each weight (Abdelfattah et al. 2021)."""
    names = _require_weights(model, "grad_norm")
    with functional_view(model, dtype=dtype, batchnorm=batchnorm) as view:
        _, grads = _weight_grads(view, x, y, names)  # type: ignore[arg-type]
        return MeasureResult(float(sum(g.norm() for g in grads)))


@register_measure(name="fisher", needs_labels=True, axis="baseline", higher_is_better=True)
def _fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, batchnorm: str = "eval",
            dtype: torch.dtype | None = None) -> MeasureResult:
    """Fisher potential Σ_c ½ mean_n (Σ_spatial a ⊙ ∂L/∂a)² over layer-output channels.

    Theis et al. 2018 / Turner et al., ICLR 2020 (BlockSwap), as a proxy in Abdelfattah et
    al. 2021; ``a`` is the output of every ``nn.Linear``/convolution layer.
    """
    _require_weights(model, "fisher")
    acts: list[torch.Tensor] = []

    def hook(_m: nn.Module, _a: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        acts.append(out)
        return out.clone()

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    with functional_view(model, dtype=dtype, batchnorm=batchnorm) as view:
        handles = [m.register_forward_hook(hook) for m in layers]
        try:
            out = view(view.trainable(), view.input(x))
        finally:
            for h in handles:
                h.remove()
        loss = _loss(out, y)  # type: ignore[arg-type]
        grads = torch.autograd.grad(loss, acts, allow_unused=True)
        total = 0.0
        for a, g in zip(acts, grads):
            if g is None:
                continue
            prod = a.detach() * g
            per_channel = prod.sum(dim=tuple(range(2, prod.ndim))) if prod.ndim > 2 else prod
            total += float(0.5 * per_channel.pow(2).mean(0).sum())
        return MeasureResult(total)


@register_measure(name="synflow", axis="baseline", higher_is_better=True)
def _synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, double: bool = True) -> MeasureResult:
    """Synaptic flow Σ θ ⊙ ∂R/∂θ with |θ| and an all-ones input (Tanaka et al., NeurIPS 2020).

    ``R = Σ f(1; |θ|)``: every parameter replaced by its absolute value (a copy), the
    input an all-ones sample of the batch's shape, BatchNorm with its running statistics
    (eval mode). ``double=True`` computes in float64 (the proxy overflows float32 for deep
    networks). Data- and label-free.
    """
    names = _require_weights(model, "synflow")
    with functional_view(model, dtype=torch.float64 if double else None, batchnorm="eval") as view:
        params = {k: v.abs().requires_grad_(True) if v.is_floating_point() else v for k, v in view.params.items()}
        ones = torch.ones((1, *x.shape[1:]), dtype=view.dtype, device=view.device)
        r = view(params, ones).sum()
        grads = torch.autograd.grad(r, [params[k] for k in names], allow_unused=True)
        score = sum((params[k].detach() * g).sum() for k, g in zip(names, grads) if g is not None)
        return MeasureResult(float(score))


@register_measure(name="jacob_cov", axis="baseline", higher_is_better=True)
def _jacob_cov(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, batchnorm: str = "eval",
               dtype: torch.dtype | None = None) -> MeasureResult:
    """Jacobian covariance score −Σ (log(λ + k) + 1/(λ + k)), k = 1e-5 (Mellor et al. 2020, arXiv v1).

    ``λ`` are the eigenvalues of the correlation matrix of the per-sample input gradients of
    the summed output. Needs at least two inputs and floating inputs.
    """
    if x.shape[0] < 2 or not x.is_floating_point():
        raise InvalidArgumentError(f"jacob_cov needs >= 2 floating inputs, got {x.shape[0]} of dtype {x.dtype}")
    with functional_view(model, dtype=dtype, batchnorm=batchnorm) as view:
        xs = view.input(x).detach().requires_grad_(True)
        out = view.forward(xs)
        (jac,) = torch.autograd.grad(out.sum(), xs)
    j = jac.reshape(jac.shape[0], -1).detach().to(torch.float64)
    flat = j.std(dim=1) == 0
    if bool(flat.any()):
        raise MeasureFailedError(
            f"jacob_cov: {int(flat.sum())} input gradient(s) are constant, so their correlation is undefined"
        )
    eig = torch.linalg.eigvalsh(torch.corrcoef(j))
    k = 1e-5
    return MeasureResult(float(-(torch.log(eig + k) + 1.0 / (eig + k)).sum()))


@register_measure(name="naswot", axis="baseline", higher_is_better=True, requires=("relu",))
def _naswot(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, batchnorm: str = "eval"
) -> MeasureResult:
    """NASWOT log|det K_H|, K_H = N_A − Hamming distance of binary ReLU codes (Mellor et al., ICML 2021)."""
    codes = activation_patterns(model, x, batchnorm=batchnorm).to(torch.float64)
    k = codes @ codes.T + (1 - codes) @ (1 - codes).T
    sign, logdet = torch.linalg.slogdet(k)
    if float(sign) <= 0:
        dup = codes.shape[0] - torch.unique(codes, dim=0).shape[0]
        raise MeasureFailedError(
            f"naswot: the binary-code kernel is singular ({dup} input(s) share another input's activation "
            "pattern), so log|det K_H| = -inf"
        )
    return MeasureResult(float(logdet))

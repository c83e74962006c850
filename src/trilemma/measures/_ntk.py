"""The empirical neural tangent kernel Θ = J Jᵀ of any PyTorch model (Jacot et al. 2018).

``J`` is the per-sample Jacobian of the model output with respect to *all* parameters.
Three interchangeable implementations (pick with :class:`NTKImplementation`), in the
spirit of neural-tangents' ``empirical_ntk_fn(..., implementation=...)``:

* ``LOOP`` — one forward pass, then one ``autograd.grad`` per sample (and per logit):
  the slow, obvious reference. Cost ``n·k`` backward passes, memory ``n·k·P``.
* ``CONTRACTION`` — ``torch.func.vmap(jacrev(functional_call))`` gives ``J`` per
  parameter tensor, contracted with itself. Cost about ``k`` batched backward passes plus
  ``n²·P`` for the contraction; memory ``n·k·P``. Works for any differentiable model.
* ``STRUCTURED`` — never materializes ``J``. Forward hooks record each layer's input
  ``A``; the gradients of the output with respect to each layer's *output* ``B`` come from
  one backward pass per cotangent (one in ``"sum"`` mode). For ``nn.Linear`` the
  per-sample weight gradient is ``b_i a_iᵀ``, so its kernel is ``(A Aᵀ) ⊙ (B Bᵀ)`` and the
  bias adds ``B Bᵀ`` (Novak et al. 2022, "Fast finite width neural tangent kernel").
  ``nn.Conv1d``/``nn.Conv2d`` use im2col patches ``U_i`` (``unfold``): the per-sample
  weight gradient is ``G_i = Σ_p b_ip u_ipᵀ``, and the kernel is either
  ``Σ_{p,q} <u_ip, u_jq><b_ip, b_jq>`` (cheap when the number of positions is small)
  or ``<G_i, G_j>`` with ``G`` materialized per layer — whichever costs fewer flops.
  BatchNorm affine parameters (eval mode) have per-sample gradients
  ``Σ_p b ⊙ x̂`` and ``Σ_p b``. Parameters of other layers (and of layers that are
  shared, or never called as modules) are handled by the ``CONTRACTION`` path restricted
  to them. Cost: one forward, ``k_eff`` backward passes (without weight gradients) and
  ``O(n²·(d_in + d_out))`` per linear layer.

Modes: ``"sum"`` (kernel of the summed logits ``Σ_c f_c``, the papers' default),
``"trace"`` (``Σ_c`` of the per-logit kernels) and ``"full"`` (``(n, n, k, k)``).

BatchNorm: by default (``batchnorm="batch"``) BatchNorm uses the statistics of the batch,
as TE-NAS (Chen, Gong & Wang, ICLR 2021) computes the NTK of a freshly initialized network
in train mode. Then ``f_i`` depends on the whole batch and ``J_i = ∂f_i(X)/∂θ`` is the row
of the Jacobian of the *batch function* (no chunking, no cross-kernel). The rank-one
per-sample factorization does not hold for coupled samples, so ``STRUCTURED`` then computes
the rows directly: one forward pass and one vector-Jacobian product per row (``n`` rows in
``"sum"`` mode), batched with ``vmap`` in chunks that bound the memory — the cost of about
``n`` backward passes, the least any method needs for ``n`` independent gradient rows.
With ``batchnorm="eval"`` (running statistics) each output depends only on its own input
and ``Θ`` is the usual per-sample NTK. A model without BatchNorm is the same in both modes
(the fast per-sample path is used).

Parameters: every floating parameter by default; ``params=[names]`` restricts the kernel
to those parameter tensors (TE-NAS differentiates only the parameters whose name contains
``"weight"``, see :func:`weight_parameter_names`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, jacrev, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from trilemma.errors import InvalidArgumentError, InvalidTypeError
from trilemma.measures._forward import FunctionalView, couples_samples, functional_view
from trilemma.measures._kernel import kernel_eigenvalues, spectrum_stats

__all__ = ["NTK_MODES", "NTKImplementation", "empirical_ntk", "ntk_spectrum", "weight_parameter_names"]

logger = logging.getLogger(__name__)

NTK_MODES: tuple[str, ...] = ("sum", "trace", "full")


class NTKImplementation(enum.StrEnum):
    """Algorithm of :func:`empirical_ntk` (see the module docstring for costs)."""

    LOOP = "loop"
    CONTRACTION = "contraction"
    STRUCTURED = "structured"


# --------------------------------------------------------------------------- helpers


def _contract(j1: torch.Tensor, j2: torch.Tensor, mode: str) -> torch.Tensor:
    """Kernel from per-cotangent rows ``j1 (K, n1, P)``, ``j2 (K, n2, P)``."""
    if mode == "full":
        return torch.einsum("aip,bjp->ijab", j1, j2)
    return torch.einsum("aip,ajp->ij", j1, j2)


def _cotangents(out: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """Cotangents for the backward passes: ones (sum) or the logit basis (trace/full)."""
    if mode == "sum":
        return [torch.ones_like(out)]
    cots = []
    for a in range(out.shape[1]):
        c = torch.zeros_like(out)
        c[:, a] = 1
        cots.append(c)
    return cots


def _validate(
    model: Any, x: Any, x2: Any, implementation: Any, mode: str, batchnorm: str
) -> NTKImplementation:
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for nm, t in (("x", x), ("x2", x2)):
        if t is None and nm == "x2":
            continue
        if not isinstance(t, torch.Tensor):
            raise InvalidTypeError(f"{nm} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim < 1 or t.shape[0] < 1:
            raise InvalidArgumentError(f"{nm} must be a non-empty batch (n, *), got shape {tuple(t.shape)}")
    if x2 is not None and x2.shape[1:] != x.shape[1:]:
        raise InvalidArgumentError(
            f"x2 must have the sample shape of x {tuple(x.shape[1:])}, got {tuple(x2.shape[1:])}"
        )
    try:
        impl = NTKImplementation(implementation)
    except ValueError:
        raise InvalidArgumentError(
            f"implementation must be one of {[i.value for i in NTKImplementation]}, got {implementation!r}"
        ) from None
    if mode not in NTK_MODES:
        raise InvalidArgumentError(f"mode must be one of {NTK_MODES}, got {mode!r}")
    if x2 is not None and couples_samples(model, batchnorm):
        raise InvalidArgumentError(
            "batchnorm='batch' couples the samples of one batch (the model has BatchNorm); x2 is not supported"
        )
    return impl


def weight_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters whose name contains ``"weight"`` (TE-NAS's NTK parameter set).

    TE-NAS (Chen, Gong & Wang 2021) stacks the gradients of ``named_parameters()`` entries
    with ``"weight" in name``: convolution, linear and BatchNorm scale weights, no biases.
    """
    return [k for k, p in model.named_parameters() if "weight" in k and p.is_floating_point()]


def _selected(view: FunctionalView, names: list[str] | None) -> list[str]:
    floating = [k for k, v in view.params.items() if v.is_floating_point()]
    if names is None:
        return floating
    unknown = sorted(set(names) - set(floating))
    if unknown:
        raise InvalidArgumentError(
            f"params must name floating parameters of the model; unknown: {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''} (the model has {len(floating)})"
        )
    keep = set(names)
    return [k for k in floating if k in keep]


def _leaves(view: FunctionalView, names: list[str]) -> dict[str, torch.Tensor]:
    """Parameters with ``requires_grad`` only on ``names`` (others are constants)."""
    keep = set(names)
    return {k: v.detach().requires_grad_(k in keep) if v.is_floating_point() else v for k, v in view.params.items()}


def _flat(out: torch.Tensor) -> torch.Tensor:
    return out.reshape(out.shape[0], -1)


# --------------------------------------------------------------------------- LOOP


def _ntk_loop(
    view: FunctionalView, x: torch.Tensor, n1: int, symmetric: bool, mode: str, names: list[str]
) -> torch.Tensor:
    params = _leaves(view, names)
    plist = [params[k] for k in names]
    out = _flat(view(params, x))
    n, k = out.shape
    num_cot = 1 if mode == "sum" else k
    total = sum(p.numel() for p in plist)
    jac = out.new_zeros((num_cot, n, total))
    for a in range(num_cot):
        for i in range(n):
            target = out[i].sum() if mode == "sum" else out[i, a]
            if not target.requires_grad:
                continue
            grads = torch.autograd.grad(target, plist, retain_graph=True, allow_unused=True)
            jac[a, i] = torch.cat([
                (g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, plist)
            ])
    j1 = jac[:, :n1]
    j2 = j1 if symmetric else jac[:, n1:]
    return _contract(j1, j2, mode)


# --------------------------------------------------------------------------- ROWS (coupled samples)

#: Memory budget (tensor elements) of one batched vector-Jacobian product chunk.
_ROWS_BUDGET = 2**26


def jacobian_rows(out: torch.Tensor, plist: list[torch.Tensor], mode: str, *, activations: int = 0) -> torch.Tensor:
    """Rows ``(K, n, P)`` of the Jacobian of a batch output ``out (n, k)`` w.r.t. ``plist``.

    One vector-Jacobian product per row (``K = 1`` row per sample in ``"sum"`` mode, ``k``
    otherwise), batched with ``is_grads_batched`` in chunks of about
    ``_ROWS_BUDGET / activations`` rows; the graph of ``out`` is kept.

    Args:
        out: ``(n, k)`` output with its autograd graph.
        plist: Leaf tensors to differentiate.
        mode: One of :data:`NTK_MODES`.
        activations: Elements of the forward activations (sizes the chunks; 0: one chunk).
    """
    n, k = out.shape
    num_cot = 1 if mode == "sum" else k
    total = sum(p.numel() for p in plist)
    jac = out.new_zeros((num_cot, n, total))
    if not out.requires_grad or not plist:
        return jac
    pairs = [(a, i) for a in range(num_cot) for i in range(n)]
    chunk = max(1, min(len(pairs), _ROWS_BUDGET // max(activations, 1)))
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        cot = out.new_zeros((len(part), n, k))
        for r, (a, i) in enumerate(part):
            if mode == "sum":
                cot[r, i] = 1
            else:
                cot[r, i, a] = 1
        if len(part) == 1:
            grads = [None if g is None else g.unsqueeze(0) for g in
                     torch.autograd.grad(out, plist, cot[0], retain_graph=True, allow_unused=True)]
        else:
            grads = list(torch.autograd.grad(out, plist, cot, retain_graph=True, allow_unused=True,
                                             is_grads_batched=True))
        rows = torch.cat([
            (g if g is not None else p.new_zeros((len(part), *p.shape))).reshape(len(part), -1)
            for g, p in zip(grads, plist)
        ], dim=1)
        for r, (a, i) in enumerate(part):
            jac[a, i] = rows[r]
    return jac


def _activation_elements(model: nn.Module) -> tuple[list[Any], list[int]]:
    """Forward hooks counting the output elements of every leaf module (sizes the row chunks)."""
    count = [0]

    def hook(_m: nn.Module, _a: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            count[0] += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    return handles, count


def _ntk_rows(view: FunctionalView, x: torch.Tensor, mode: str, names: list[str]) -> torch.Tensor:
    params = _leaves(view, names)
    handles, count = _activation_elements(view.model)
    try:
        out = _flat(view(params, x))
    finally:
        for h in handles:
            h.remove()
    jac = jacobian_rows(out, [params[k] for k in names], mode, activations=count[0])
    return _contract(jac, jac, mode)


# --------------------------------------------------------------------------- CONTRACTION


def _jacobians(
    view: FunctionalView, x: torch.Tensor, names: list[str], mode: str, batchnorm: str
) -> dict[str, torch.Tensor]:
    """Per-sample Jacobians ``{name: (K, n, numel)}`` of the output w.r.t. ``params[names]``."""
    fixed = {k: v for k, v in view.params.items() if k not in names}
    sub = {k: view.params[k] for k in names}

    if couples_samples(view.model, batchnorm):
        def batch_fn(p: dict[str, torch.Tensor]) -> torch.Tensor:
            out = _flat(view({**fixed, **p}, x))
            return out.sum(1, keepdim=True) if mode == "sum" else out

        jac = jacrev(batch_fn)(sub)  # name -> (n, K, *shape)
    else:
        def single(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
            out = _flat(view({**fixed, **p}, xi.unsqueeze(0)))[0]
            return out.sum().unsqueeze(0) if mode == "sum" else out

        if mode == "sum":
            def single_sum(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
                return single(p, xi)[0]

            g = vmap(grad(single_sum), in_dims=(None, 0))(sub, x)  # name -> (n, *shape)
            jac = {k: v.unsqueeze(1) for k, v in g.items()}
        else:
            jac = vmap(jacrev(single), in_dims=(None, 0))(sub, x)  # name -> (n, K, *shape)
    return {k: v.reshape(v.shape[0], v.shape[1], -1).transpose(0, 1) for k, v in jac.items()}


def _ntk_contraction(
    view: FunctionalView, x: torch.Tensor, n1: int, symmetric: bool, mode: str, batchnorm: str,
    names: list[str],
) -> torch.Tensor | None:
    if not names:
        return None
    jac = _jacobians(view, x, names, mode, batchnorm)
    total: torch.Tensor | None = None
    for j in jac.values():
        j1 = j[:, :n1]
        j2 = j1 if symmetric else j[:, n1:]
        term = _contract(j1, j2, mode)
        total = term if total is None else total + term
    return total


# --------------------------------------------------------------------------- STRUCTURED


def _bilinear(
    a: torch.Tensor, b: torch.Tensor, n1: int, symmetric: bool, mode: str, method: str | None = None
) -> torch.Tensor:
    """Kernel of per-sample gradients ``G_i = Σ_l b_il ⊗ a_il`` (shared over positions l).

    Two exact formulations: ``"pairwise"`` ``Σ_{l,m} <a_il, a_jm><b_il, b_jm>`` (cost
    ``n²L²(D + K·C)``) and ``"materialize"`` ``<G_i, G_j>`` (cost ``K·n·L·C·D + K²·n²·C·D``);
    the cheaper one is used unless ``method`` forces one.

    Args:
        a: ``(n, L, g, D)`` layer inputs (patches), grouped.
        b: ``(K, n, L, g, C)`` output gradients, one per cotangent.
    """
    num_cot, n, L, groups, c = b.shape
    d = a.shape[-1]
    n2 = n1 if symmetric else n - n1
    pair_cost = n1 * n2 * L * L * groups * (d + num_cot * c)
    mat_cost = num_cot * n * L * groups * c * d + num_cot * num_cot * n1 * n2 * groups * c * d
    a1, b1 = a[:n1], b[:, :n1]
    a2, b2 = (a1, b1) if symmetric else (a[n1:], b[:, n1:])
    if method is None and L == 1 and groups == 1:
        ka = a1[:, 0, 0] @ a2[:, 0, 0].T
        if mode == "full":
            return torch.einsum("ij,aic,bjc->ijab", ka, b1[:, :, 0, 0], b2[:, :, 0, 0])
        kb = torch.einsum("aic,ajc->ij", b1[:, :, 0, 0], b2[:, :, 0, 0])
        return ka * kb
    if method == "pairwise" or (method is None and pair_cost <= mat_cost):
        ka = torch.einsum("ilgd,jmgd->ijlmg", a1, a2)
        if mode == "full":
            return torch.einsum("ijlmg,ailgc,bjmgc->ijab", ka, b1, b2)
        kb = torch.einsum("ailgc,ajmgc->ijlmg", b1, b2)
        return (ka * kb).sum(dim=(2, 3, 4))
    g1 = torch.einsum("ailgc,ilgd->aigcd", b1, a1).reshape(num_cot, n1, -1)
    g2 = g1 if symmetric else torch.einsum("ailgc,ilgd->aigcd", b2, a2).reshape(num_cot, n2, -1)
    return _contract(g1, g2, mode)


def _conv_patches(m: nn.Conv1d | nn.Conv2d, a: torch.Tensor) -> torch.Tensor:
    """im2col patches of a Conv1d/Conv2d input: ``(n, L, groups, C_in/groups · prod(kernel))``."""
    if isinstance(m, nn.Conv1d):
        a = a.unsqueeze(2)
        kernel, stride, dilation = (1, *m.kernel_size), (1, *m.stride), (1, *m.dilation)
        pad_spec: Any = m.padding if isinstance(m.padding, str) else (0, *m.padding)
    else:
        kernel, stride, dilation = m.kernel_size, m.stride, m.dilation
        pad_spec = m.padding
    if isinstance(pad_spec, str):
        if pad_spec == "valid":
            pads = [(0, 0), (0, 0)]
        else:  # "same" (stride 1): total dilation·(k−1), left = total // 2, like torch
            totals = [dl * (k - 1) for dl, k in zip(dilation, kernel)]
            pads = [(t // 2, t - t // 2) for t in totals]
    else:
        pads = [(p, p) for p in pad_spec]
    flat_pads = [pads[1][0], pads[1][1], pads[0][0], pads[0][1]]
    if any(flat_pads):
        if m.padding_mode == "zeros":
            a = F.pad(a, flat_pads)
        else:
            a = F.pad(a, flat_pads, mode=m.padding_mode)
    u = F.unfold(a, kernel_size=kernel, dilation=dilation, stride=stride)  # (n, C_in·k, L)
    n, dk, L = u.shape
    return u.reshape(n, m.groups, dk // m.groups, L).permute(0, 3, 1, 2)


def _is_structured(m: nn.Module, batchnorm: str) -> bool:
    if type(m) is nn.Linear:
        return True
    if type(m) in (nn.Conv1d, nn.Conv2d):
        return True
    if isinstance(m, nn.modules.batchnorm._BatchNorm) and type(m) in (
        nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d
    ):
        return batchnorm == "eval" and m.running_mean is not None and m.affine
    return False


@dataclass
class _Calls:
    inputs: list[torch.Tensor] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)


def _structured_terms(
    m: nn.Module, calls: _Calls, grads: list[list[torch.Tensor]], n1: int, symmetric: bool, mode: str
) -> list[tuple[str, torch.Tensor]]:
    """Kernel contributions ``[(param_name, kernel)]`` of one known module.

    ``grads[c][a]`` is the gradient for call ``c`` and cotangent ``a``.
    """
    terms = []
    if isinstance(m, nn.Linear):
        a = torch.cat([x.reshape(x.shape[0], -1, x.shape[-1]) for x in calls.inputs], dim=1)
        b = torch.stack([
            torch.cat([g[ai].reshape(g[ai].shape[0], -1, g[ai].shape[-1]) for g in grads], dim=1)
            for ai in range(len(grads[0]))
        ])  # (K, n, L, out)
        terms.append(("weight", _bilinear(a.unsqueeze(2), b.unsqueeze(3), n1, symmetric, mode)))
        if m.bias is not None:
            bs = b.sum(2)
            b1 = bs[:, :n1]
            terms.append(("bias", _contract(b1, b1 if symmetric else bs[:, n1:], mode)))
    elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
        a = torch.cat([_conv_patches(m, x) for x in calls.inputs], dim=1)  # (n, L, g, D)
        groups = m.groups
        bl = []
        for ai in range(len(grads[0])):
            parts = []
            for g in grads:
                z = g[ai]
                z = z.reshape(z.shape[0], groups, z.shape[1] // groups, -1)  # (n, g, C/g, L)
                parts.append(z.permute(0, 3, 1, 2))
            bl.append(torch.cat(parts, dim=1))
        b = torch.stack(bl)  # (K, n, L, g, C/g)
        terms.append(("weight", _bilinear(a, b, n1, symmetric, mode)))
        if m.bias is not None:
            bs = b.sum(2).reshape(b.shape[0], b.shape[1], -1)
            b1 = bs[:, :n1]
            terms.append(("bias", _contract(b1, b1 if symmetric else bs[:, n1:], mode)))
    else:  # BatchNorm, eval mode: y = γ x̂ + β with running statistics
        bn = cast(_BatchNorm, m)
        mean, var = bn.running_mean, bn.running_var
        if mean is None or var is None:
            raise InvalidArgumentError("structured NTK: a BatchNorm in eval mode needs running statistics")
        gw, gb = None, None
        for x, g in zip(calls.inputs, grads):
            shape = (1, -1) + (1,) * (x.ndim - 2)
            xhat = (x - mean.view(shape).to(x.dtype)) / torch.sqrt(var.view(shape).to(x.dtype) + bn.eps)
            dims = tuple(range(3, x.ndim + 1))
            b = torch.stack(g)  # (K, n, C, *)
            w_part = (b * xhat).sum(dim=dims) if dims else b * xhat
            b_part = b.sum(dim=dims) if dims else b
            gw = w_part if gw is None else gw + w_part
            gb = b_part if gb is None else gb + b_part
        if gw is not None and gb is not None:
            terms.append(("weight", _contract(gw[:, :n1], gw[:, :n1] if symmetric else gw[:, n1:], mode)))
            terms.append(("bias", _contract(gb[:, :n1], gb[:, :n1] if symmetric else gb[:, n1:], mode)))
    return terms


def _ntk_structured(
    view: FunctionalView, x: torch.Tensor, n1: int, symmetric: bool, mode: str, batchnorm: str,
    names: list[str],
) -> torch.Tensor:
    model = view.model
    wanted = set(names)
    owners: dict[int, list[str]] = {}
    for mname, m in model.named_modules(remove_duplicate=False):
        for pname, p in m.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append(f"{mname}.{pname}" if mname else pname)
    param_names = {id(p): name for name, p in model.named_parameters()}

    known: dict[str, nn.Module] = {}
    for mname, m in model.named_modules():
        own = list(m.parameters(recurse=False))
        if not own or not _is_structured(m, batchnorm):
            continue
        if not any(param_names.get(id(p)) in wanted for p in own):
            continue
        if any(len(owners[id(p)]) > 1 for p in own):
            continue  # a shared parameter: its gradient sums over owners → contraction fallback
        known[mname] = m

    records: dict[str, _Calls] = {k: _Calls() for k in known}
    handles = []

    def make_hook(calls: _Calls) -> Callable[..., torch.Tensor]:
        def hook(_m: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
            calls.inputs.append(args[0].detach())
            calls.outputs.append(out)
            return out.clone()  # downstream in-place ops must not change the recorded output

        return hook

    try:
        for mname, m in known.items():
            handles.append(m.register_forward_hook(make_hook(records[mname])))
        params = _leaves(view, names)
        out = _flat(view(params, x))
    finally:
        for h in handles:
            h.remove()

    called = {k: m for k, m in known.items() if records[k].outputs}
    zs = [z for k in called for z in records[k].outputs]
    per_cot: list[tuple[torch.Tensor, ...]] = []
    cots = _cotangents(out, mode)
    if zs:
        for ai, cot in enumerate(cots):
            gs = torch.autograd.grad(out, zs, grad_outputs=cot, retain_graph=ai < len(cots) - 1,
                                     allow_unused=True) if out.requires_grad else (None,) * len(zs)
            per_cot.append(tuple(torch.zeros_like(z) if g is None else g for z, g in zip(zs, gs)))

    total: torch.Tensor | None = None
    covered: set[str] = set()
    pos = 0
    for mname, m in called.items():
        ncalls = len(records[mname].outputs)
        grads = [[per_cot[ai][pos + c] for ai in range(len(cots))] for c in range(ncalls)]
        pos += ncalls
        for pname, term in _structured_terms(m, records[mname], grads, n1, symmetric, mode):
            full_name = param_names[id(getattr(m, pname))]
            if full_name in wanted:
                total = term if total is None else total + term
                covered.add(full_name)
    rest = [k for k in names if k not in covered]
    if rest:
        logger.debug("structured NTK: contraction fallback for %d parameter tensors: %s", len(rest), rest)
        fallback = _ntk_contraction(view, x, n1, symmetric, mode, batchnorm, names=rest)
        if fallback is not None:
            total = fallback if total is None else total + fallback
    return total if total is not None else _zero_kernel(view, x, n1, symmetric, mode)


def _zero_kernel(view: FunctionalView, x: torch.Tensor, n1: int, symmetric: bool, mode: str) -> torch.Tensor:
    """The NTK of a model without parameters."""
    with torch.no_grad():
        k = _flat(view.forward(x[:1])).shape[1]
    n2 = n1 if symmetric else x.shape[0] - n1
    return x.new_zeros((n1, n2, k, k) if mode == "full" else (n1, n2), dtype=view.dtype)


# --------------------------------------------------------------------------- public API


def empirical_ntk(
    model: nn.Module,
    x: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    implementation: NTKImplementation | str = NTKImplementation.STRUCTURED,
    mode: str = "sum",
    batchnorm: str = "batch",
    dtype: torch.dtype | None = None,
    params: Sequence[str] | None = None,
) -> torch.Tensor:
    """Empirical NTK ``Θ(x, x2) = J(x) J(x2)ᵀ`` (Jacot, Gabriel & Hongler, NeurIPS 2018).

    Args:
        model: Any ``nn.Module``; evaluated on its own device, never modified.
        x: Inputs ``(n1, *)``.
        x2: Optional second batch ``(n2, *)`` for a cross-kernel (default: ``x``; not with
            batch statistics on a model with BatchNorm).
        implementation: :class:`NTKImplementation` or its string value.
        mode: ``"sum"`` (kernel of ``Σ_c f_c``), ``"trace"`` (``Σ_c`` of per-logit
            kernels) or ``"full"`` (all logit pairs).
        batchnorm: ``"batch"`` (default: Jacobian rows of the batch function, see the
            module docstring), ``"eval"`` (per-sample NTK with running statistics) or
            ``"remove"``.
        dtype: Floating dtype of the computation (``None``: the model's). Use
            ``torch.float64`` for reference-quality kernels; the model is not converted.
        params: Names of the parameter tensors to differentiate (default: all floating
            parameters), e.g. :func:`weight_parameter_names` for TE-NAS's kernel.

    Returns:
        ``(n1, n2)`` for ``"sum"``/``"trace"``, ``(n1, n2, k, k)`` for ``"full"``, in ``dtype``,
        on the model's device.

    Raises:
        InvalidTypeError: ``model``/``x`` of the wrong type.
        InvalidArgumentError: Unknown implementation/mode/batchnorm/parameter name, or
            ``x2`` with coupled samples.

    Example:
        >>> from trilemma.models import build_model
        >>> net = build_model("2_02_002", 8, 3, width=16, seed=0)
        >>> x = torch.randn(5, 8)
        >>> a = empirical_ntk(net, x, implementation="structured", dtype=torch.float64)
        >>> b = empirical_ntk(net, x, implementation="loop", dtype=torch.float64)
        >>> bool(torch.allclose(a, b)), tuple(a.shape)
        (True, (5, 5))
    """
    impl = _validate(model, x, x2, implementation, mode, batchnorm)
    with functional_view(model, feature="output", dtype=dtype, batchnorm=batchnorm) as view:
        names = _selected(view, None if params is None else list(params))
        n1 = x.shape[0]
        xs = view.input(x if x2 is None else torch.cat([x, x2.to(x.device)], dim=0))
        symmetric = x2 is None
        if impl is NTKImplementation.LOOP:
            return _ntk_loop(view, xs, n1, symmetric, mode, names).detach()
        if impl is NTKImplementation.CONTRACTION:
            out = _ntk_contraction(view, xs, n1, symmetric, mode, batchnorm, names)
            return out.detach() if out is not None else _zero_kernel(view, xs, n1, symmetric, mode)
        if couples_samples(model, batchnorm):
            return _ntk_rows(view, xs, mode, names).detach()
        return _ntk_structured(view, xs, n1, symmetric, mode, batchnorm, names).detach()


def ntk_spectrum(
    model: nn.Module,
    x: torch.Tensor,
    *,
    implementation: NTKImplementation | str = NTKImplementation.STRUCTURED,
    mode: str = "sum",
    batchnorm: str = "batch",
    dtype: torch.dtype | None = None,
    fraction: float = 0.9,
    params: Sequence[str] | None = None,
    eigen_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eigenvalues and summary statistics of the empirical NTK on ``x``.

    Args:
        model, x, implementation, mode, batchnorm, dtype, params: As in
            :func:`empirical_ntk` (a ``"full"`` kernel is flattened to ``(n·k, n·k)``).
        fraction: Trace fraction of the robust minimum eigenvalue (paper: 0.9).
        eigen_dtype: Precision of the eigendecomposition (float64 by default; TE-NAS's
            reference uses float32).

    Returns:
        ``(eigenvalues, stats)``: float64 eigenvalues ascending on the CPU, and
        :func:`~trilemma.measures.spectrum_stats` of them.

    Raises:
        MeasureFailedError: The kernel has non-finite entries.
    """
    theta = empirical_ntk(model, x, implementation=implementation, mode=mode, batchnorm=batchnorm, dtype=dtype,
                          params=params)
    eigs = kernel_eigenvalues(theta, name="NTK", dtype=eigen_dtype).cpu()
    return eigs, spectrum_stats(eigs, fraction=fraction)

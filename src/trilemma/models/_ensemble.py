"""Networks of cell ensembles with random unstructured pruning (Chen, Huang & Wang, AutoML-Conf 2023, Table 1).

:class:`EnsembleMLP` is flatten → stem → the members' cells on *shared* nodes → readout: node
``t`` is the sum of every member's incoming edges into ``t`` (each member keeps its own edge
weights), one stem, one readout. A member pruned at ratio ``r`` has every weight matrix of its
linear edges multiplied by a fixed random binary mask with exactly ``round(r · numel)`` zeros
(:class:`MaskedLinear`, ``y = x (M ⊙ W)ᵀ + b``): the pruned entries of ``W`` are zero from the
start and their gradient is masked, so they stay exactly zero under SGD (with momentum or
weight decay) and Adam. Biases are not pruned; the stem and the readout only when the spec
says so (``stem@r``, ``readout@r``).

Initialization draws the weights exactly as :class:`~trilemma.models.DAGMLP` does, layer by
layer in construction order (stem, member 1's linear edges in string order, member 2's …,
readout), then draws the masks from their own generators (:func:`ensemble_masks`), so a
one-member unpruned ensemble *is* its cell: same parameter names, same weights for the same
seed, same function.
"""

from __future__ import annotations

import zlib
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from trilemma._checks import is_int
from trilemma.errors import InvalidArgumentError, InvalidTypeError
from trilemma.models._dagmlp import INITS, Init, _layer
from trilemma.spaces import LINEAR, SKIP, CellSpec, EnsembleSpec, pruned_count

__all__ = ["EnsembleMLP", "MaskedLinear", "build_ensemble", "edge_name", "ensemble_masks", "layer_shapes"]


def edge_name(source: int, target: int, member: int) -> str:
    """The module name of a member's linear edge: ``"s_t"`` for the first member (as in
    :class:`~trilemma.models.DAGMLP`), ``"s_t_m<k>"`` for member ``k >= 1`` (0-based)."""
    return f"{source}_{target}" if member == 0 else f"{source}_{target}_m{member}"


class MaskedLinear(nn.Linear):
    """``nn.Linear`` with a fixed binary mask on its weight: ``y = x (M ⊙ W)ᵀ + b``.

    The mask is a buffer (``weight_mask``, same shape as ``weight``); gradients reach only the
    unmasked entries. Measures that treat ``nn.Linear`` by its type see a subclass and use
    their generic (autograd) path, so e.g. an empirical NTK is taken over the free weights.
    """

    weight_mask: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.register_buffer("weight_mask", torch.ones_like(self.weight))

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: torch.Tensor) -> MaskedLinear:
        """A masked layer sharing ``linear``'s parameters (no random numbers are drawn); the
        masked-out weights are set to zero.

        Raises:
            InvalidArgumentError: ``mask`` does not have the weight's shape.
        """
        if tuple(mask.shape) != tuple(linear.weight.shape):
            raise InvalidArgumentError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(linear.weight.shape)}")
        new = torch.nn.utils.skip_init(cls, linear.in_features, linear.out_features, bias=linear.bias is not None,
                                       device=linear.weight.device, dtype=linear.weight.dtype)
        new.weight = linear.weight
        new.bias = linear.bias
        with torch.no_grad():
            new.weight_mask.copy_(mask)
            new.weight.mul_(new.weight_mask)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.weight_mask, self.bias)

    @property
    def pruned(self) -> int:
        """Number of masked-out weights."""
        return int((self.weight_mask == 0).sum())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pruned={self.pruned}/{self.weight_mask.numel()}"


def layer_shapes(spec: EnsembleSpec | CellSpec | str, in_features: int, num_classes: int, width: int) -> list[tuple[str, int, int, float]]:
    """``(name, fan_in, fan_out, ratio)`` of every linear layer in construction order: the stem,
    each member's linear edges (member by member, string order), the readout."""
    spec = EnsembleSpec.parse(spec)
    out = [("stem", in_features, width, spec.stem_ratio)]
    for k, member in enumerate(spec.members):
        out += [(edge_name(s, t, k), width, width, member.ratio) for s, t, op in member.cell.edges() if op == LINEAR]
    out.append(("readout", width, num_classes, spec.readout_ratio))
    return out


def _mask_seed(seed: int, name: str) -> int:
    """A generator seed for the mask of layer ``name`` of the model with init seed ``seed``."""
    return zlib.crc32(f"trilemma-mask:{seed}:{name}".encode())


def ensemble_masks(spec: EnsembleSpec | str, in_features: int, num_classes: int, width: int, seed: int | None,
                   dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The fixed pruning masks of the pruned layers of ``spec``: ``{layer name: (out, in) 0/1 mask}``.

    Each mask has exactly ``round(r · out · in)`` zeros at positions drawn uniformly without
    replacement (a ``randperm``) from a generator seeded by the model seed and the layer name,
    independent of the weights' random stream. ``seed=None`` draws from torch's global generator.

    Returns:
        Masks on the CPU in ``dtype`` (default float32), only for layers with ratio > 0.
    """
    spec = EnsembleSpec.parse(spec)
    out: dict[str, torch.Tensor] = {}
    for name, fan_in, fan_out, ratio in layer_shapes(spec, in_features, num_classes, width):
        if ratio <= 0:
            continue
        numel = fan_in * fan_out
        gen = None if seed is None else torch.Generator(device="cpu").manual_seed(_mask_seed(seed, name))
        drop = torch.randperm(numel, generator=gen)[: pruned_count(numel, ratio)]
        mask = torch.ones(numel, dtype=dtype or torch.float32)
        mask[drop] = 0
        out[name] = mask.view(fan_out, fan_in)
    return out


def _linear_index(seq: nn.Sequential) -> int:
    for i, mod in enumerate(seq):
        if isinstance(mod, nn.Linear):
            return i
    raise InvalidArgumentError("internal: layer without a Linear")  # pragma: no cover


class EnsembleMLP(nn.Module):
    """An ensemble of DAG cells on shared nodes with one stem and one readout (module docstring).

    Args:
        spec: The ensemble (an :class:`~trilemma.spaces.EnsembleSpec`, its string, or a cell).
        in_features: Input dimension after flattening.
        num_classes: Output dimension.
        width: m, the width of the stem and of every node.
        bias: Zero-initialized biases.
        batchnorm: BatchNorm1d after every hidden linear layer.
        init: ``"he"`` or ``"ntk"`` (as :class:`~trilemma.models.DAGMLP`).
        mask_seed: Seed of the pruning masks (``None``: torch's global generator).
        device, dtype: Where and in which precision to create the parameters.

    Shapes:
        input ``(n, *)`` flattened to ``(n, in_features)``; output ``(n, num_classes)``.
    """

    def __init__(self, spec: EnsembleSpec | CellSpec | str, in_features: int, num_classes: int, width: int = 256, *,
                 bias: bool = True, batchnorm: bool = False, init: Init = "he", mask_seed: int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not isinstance(spec, (EnsembleSpec, CellSpec, str)):
            raise InvalidTypeError(f"spec must be an EnsembleSpec, a CellSpec or their string, got {type(spec).__name__}")
        self.spec = EnsembleSpec.parse(spec)
        for name, value in (("in_features", in_features), ("num_classes", num_classes), ("width", width)):
            if not is_int(value) or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
        if init not in INITS:
            raise InvalidArgumentError(f"init must be one of {INITS}, got {init!r}")
        self.in_features, self.num_classes, self.width = in_features, num_classes, width
        self.init, self.bias, self.batchnorm = init, bias, batchnorm
        factory: dict[str, object] = {"device": device, "dtype": dtype}
        kw: dict[str, Any] = {"bias": bias, "batchnorm": batchnorm, "init": init, "factory": factory}
        self.stem = _layer(in_features, width, relu=True, **kw)
        self.edges = nn.ModuleDict()
        # incoming terms of every node t: (source, op, module name or None for a skip)
        self._incoming: list[list[tuple[int, int, str | None]]] = [[] for _ in range(self.spec.nodes + 1)]
        for k, member in enumerate(self.spec.members):
            for s, t, op in member.cell.edges():
                if op == LINEAR:
                    name = edge_name(s, t, k)
                    self.edges[name] = _layer(width, width, relu=True, **kw)
                    self._incoming[t].append((s, op, name))
                elif op == SKIP:
                    self._incoming[t].append((s, op, None))
        for terms in self._incoming:
            terms.sort(key=lambda term: term[0])  # by source node, members in order (stable)
        self.readout = _layer(width, num_classes, relu=False, bias=bias, batchnorm=False, init=init, factory=factory)
        masks = ensemble_masks(self.spec, in_features, num_classes, width, mask_seed, dtype=dtype)
        for name, mask in masks.items():
            seq = cast(nn.Sequential, self.stem if name == "stem" else self.readout if name == "readout"
                       else self.edges[name])
            i = _linear_index(seq)
            linear = cast(nn.Linear, seq[i])
            seq[i] = MaskedLinear.from_linear(linear, mask.to(device=linear.weight.device))

    def nodes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of every node ``0..H`` (node 0 is the stem output), each ``(n, width)``."""
        h = [self.stem(x.flatten(1))]
        for t in range(1, self.spec.nodes + 1):
            acc: torch.Tensor | None = None
            for s, _op, name in self._incoming[t]:
                term = h[s] if name is None else self.edges[name](h[s])
                acc = term if acc is None else acc + term
            h.append(acc if acc is not None else torch.zeros_like(h[0]))
        return h

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Output node H before the readout, ``(n, width)`` (the NNGP feature map)."""
        return self.nodes(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.readout(self.features(x)))

    def masks(self) -> dict[str, torch.Tensor]:
        """The pruning masks by layer name (``"stem"``, edge names, ``"readout"``)."""
        out: dict[str, torch.Tensor] = {}
        for name, seq in [("stem", self.stem), *self.edges.items(), ("readout", self.readout)]:
            for mod in cast(nn.Sequential, seq):
                if isinstance(mod, MaskedLinear):
                    out[name] = mod.weight_mask
        return out

    def effective_params(self) -> int:
        """Trainable parameters minus the masked-out weights."""
        total = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return total - sum(int((m == 0).sum()) for m in self.masks().values())

    def extra_repr(self) -> str:
        return f"spec={self.spec.name}, width={self.width}, init={self.init}"


def build_ensemble(spec: EnsembleSpec | CellSpec | str, in_features: int, num_classes: int, width: int = 256, *,
                   bias: bool = True, batchnorm: bool = False, init: Init = "he", seed: int | None = None,
                   device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> EnsembleMLP:
    """Build an :class:`EnsembleMLP`; ``seed`` fixes the weights (drawn as
    :func:`~trilemma.models.build_model` draws them) and the pruning masks.

    Example:
        >>> model = build_ensemble("1_22_221@0.2+2_02_002@0.5", in_features=64, num_classes=10, width=32, seed=0)
        >>> sum(p.numel() for p in model.parameters()), model.effective_params()
        (9802, 7446)
    """
    if seed is None:
        return EnsembleMLP(spec, in_features, num_classes, width, bias=bias, batchnorm=batchnorm, init=init,
                           device=device, dtype=dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EnsembleMLP(spec, in_features, num_classes, width, bias=bias, batchnorm=batchnorm, init=init,
                            mask_seed=seed, device="cpu", dtype=dtype)
    return model.to(device) if device is not None else model

"""Cost baselines: parameter count and FLOPs.

FLOPs follow the usual NAS convention: ``2 × MACs`` of the ``nn.Linear`` and convolution
layers per input sample; biases, activations, normalization and skip additions are not
counted. MACs are counted by forward hooks, so they follow the layers actually called.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from trilemma.errors import InvalidArgumentError
from trilemma.measures._base import MeasureResult, register_measure
from trilemma.measures._forward import functional_view

__all__ = ["count_macs", "num_parameters"]


def num_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of (distinct) parameter entries of ``model``.

    Args:
        model: Any ``nn.Module``.
        trainable_only: Count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates per sample of every ``nn.Linear``/convolution call on ``x``.

    ``nn.Linear``: ``in_features`` per output entry; convolution: ``C_in / groups ·
    prod(kernel_size)`` per output entry (transposed convolutions: per input entry, times
    ``C_out / groups``).

    Args:
        model: Any ``nn.Module`` (evaluated without its BatchNorm layers, which cost no
            MACs, so one sample suffices; never modified).
        x: Inputs ``(n, *)``.

    Returns:
        MACs per sample (the batch total divided by ``n``, rounded).

    Raises:
        InvalidArgumentError: Empty batch.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] < 1:
        raise InvalidArgumentError(f"x must be a non-empty batch tensor, got {getattr(x, 'shape', x)!r}")
    total = [0]
    handles = mac_hooks(model, total)
    try:
        with functional_view(model, batchnorm="remove") as view, torch.no_grad():
            view.forward(view.input(x))
    finally:
        for h in handles:
            h.remove()
    return round(total[0] / x.shape[0])


def mac_hooks(model: nn.Module, total: list[int]) -> list[torch.utils.hooks.RemovableHandle]:
    """Forward hooks adding the MACs of every Linear/conv call of ``model`` to ``total[0]`` (batch total)."""

    def hook(m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(m, nn.Linear):
            total[0] += out.numel() * m.in_features
        elif isinstance(m, nn.modules.conv._ConvTransposeNd):
            total[0] += args[0].numel() * (m.out_channels // m.groups) * math.prod(m.kernel_size)
        else:
            conv = cast(nn.modules.conv._ConvNd, m)
            total[0] += out.numel() * (conv.in_channels // conv.groups) * math.prod(conv.kernel_size)

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    return [m.register_forward_hook(hook) for m in layers]


@register_measure(name="num_params", axis="cost")
def _num_params(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> MeasureResult:
    """Number of parameters (all distinct parameter entries)."""
    return MeasureResult(float(num_parameters(model)))


@register_measure(name="flops", axis="cost")
def _flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> MeasureResult:
    """FLOPs per sample, 2 × MACs of Linear/conv layers counted by forward hooks; extras: ``macs``."""
    macs = count_macs(model, x[:1])
    return MeasureResult(float(2 * macs), extras={"macs": macs})

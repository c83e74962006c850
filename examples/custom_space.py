"""A user-defined architecture space for trilemma studies: plain MLPs of several depths and widths.

Name it in a study as ``space.name = "custom_space.py:mlp_space"`` (the path is relative to
the study file); ``[space.options]`` are passed to :func:`mlp_space` as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


def _parse(arch: str) -> tuple[int, float]:
    _, d, x = arch.split("_")
    return int(d[1:]), float(x[1:])


def mlp_space(
    depths: Sequence[int] = (1, 2, 3, 4), width_factors: Sequence[float] = (0.5, 1.0, 2.0)
) -> tuple[list[str], Callable[..., nn.Module], Callable[[str], dict[str, Any]]]:
    """Plain ReLU MLPs ``mlp_d<depth>_x<factor>``: ``depth`` hidden layers of ``factor × width`` units.

    Returns:
        ``(archs, build_model, columns)`` as a study expects from a user-defined space.
    """
    archs = [f"mlp_d{d}_x{f:g}" for d in depths for f in width_factors]

    def build_model(arch: str, *, in_features: int, num_classes: int, width: int, seed: int | None = None,
                    device: Any = None, **_: Any) -> nn.Module:
        depth, factor = _parse(arch)
        hidden = max(1, round(width * factor))
        gen = torch.Generator().manual_seed(0 if seed is None else seed)
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_features
        for _ in range(depth):
            layers += [nn.Linear(fan_in, hidden), nn.ReLU()]
            fan_in = hidden
        layers.append(nn.Linear(fan_in, num_classes))
        model = nn.Sequential(*layers)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / m.in_features) ** 0.5)
                    m.bias.zero_()
        return model.to(device) if device is not None else model

    def columns(arch: str) -> dict[str, Any]:
        depth, factor = _parse(arch)
        return {"depth": depth, "width_factor": factor}

    return archs, build_model, columns

"""The papers' DAG-MLP: flatten → stem → DAG cell → readout (Chen, Huang & Wang, AutoML-Conf 2023).

Two initializations:

* ``"he"`` (the papers): PyTorch layers with He-normal (fan-in) weights and zero biases.
* ``"ntk"`` (the theory): ``x ↦ sqrt(c_σ / fan_in) · ReLU(W x)`` with ``W ~ N(0, 1)``,
  ``c_σ = 2`` for ReLU layers and ``1`` for the readout. The scale is a separate
  :class:`Scale` module in front of a plain ``nn.Linear``, so every measure that knows
  ``nn.Linear`` sees the scaled input directly.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from trilemma._checks import is_int
from trilemma.errors import InvalidArgumentError, InvalidTypeError
from trilemma.spaces import CellSpec

__all__ = ["DAGMLP", "Scale", "build_model", "INITS"]

INITS = ("he", "ntk")
Init = Literal["he", "ntk"]


class Scale(nn.Module):
    """Multiplies its input by a constant (the NTK parameterization's ``sqrt(c_σ/fan_in)``)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:.6g}"


def _layer(
    fan_in: int,
    fan_out: int,
    *,
    relu: bool,
    bias: bool,
    batchnorm: bool,
    init: Init,
    factory: dict[str, Any],
) -> nn.Sequential:
    linear = nn.Linear(fan_in, fan_out, bias=bias, **factory)
    gain = 2.0 if relu else 1.0
    parts: list[nn.Module] = []
    with torch.no_grad():
        if init == "he":
            linear.weight.normal_(0.0, math.sqrt(gain / fan_in))
        else:
            linear.weight.normal_(0.0, 1.0)
            parts.append(Scale(math.sqrt(gain / fan_in)))
        if bias:
            linear.bias.zero_()
    parts.append(linear)
    if batchnorm:
        parts.append(nn.BatchNorm1d(fan_out, **factory))
    if relu:
        parts.append(nn.ReLU())
    return nn.Sequential(*parts)


class DAGMLP(nn.Module):
    """A DAG-cell MLP.

    Args:
        spec: The cell (a :class:`~trilemma.spaces.CellSpec` or its string form).
        in_features: Input dimension after flattening.
        num_classes: Output dimension.
        width: m, the width of the stem and of every node.
        bias: Whether linear layers have (zero-initialized) biases.
        batchnorm: Whether a BatchNorm1d follows every hidden linear layer.
        init: ``"he"`` or ``"ntk"`` (see module docstring).
        device, dtype: Where and in which precision to create the parameters.

    Shapes:
        input ``(n, *)`` flattened to ``(n, in_features)``; output ``(n, num_classes)``.
    """

    def __init__(
        self,
        spec: CellSpec | str,
        in_features: int,
        num_classes: int,
        width: int = 256,
        *,
        bias: bool = True,
        batchnorm: bool = False,
        init: Init = "he",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(spec, (CellSpec, str)):
            raise InvalidTypeError(f"spec must be a CellSpec or a cell string, got {type(spec).__name__}")
        self.spec = CellSpec.parse(spec) if isinstance(spec, str) else spec
        for name, value in (("in_features", in_features), ("num_classes", num_classes), ("width", width)):
            if not is_int(value) or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
        if init not in INITS:
            raise InvalidArgumentError(f"init must be one of {INITS}, got {init!r}")
        self.in_features, self.num_classes, self.width = in_features, num_classes, width
        self.init, self.bias, self.batchnorm = init, bias, batchnorm
        factory: dict[str, object] = {"device": device, "dtype": dtype}
        kw = {"bias": bias, "batchnorm": batchnorm, "init": init, "factory": factory}
        self.stem = _layer(in_features, width, relu=True, **kw)  # type: ignore[arg-type]
        self.edges = nn.ModuleDict()
        self._skips: list[tuple[int, int]] = []
        for s, t, op in self.spec.edges():
            if op == 2:
                self.edges[f"{s}_{t}"] = _layer(width, width, relu=True, **kw)  # type: ignore[arg-type]
            elif op == 1:
                self._skips.append((s, t))
        self.readout = _layer(
            width, num_classes, relu=False, bias=bias, batchnorm=False, init=init, factory=factory
        )

    def nodes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of every node ``0..H`` (node 0 is the stem output), each ``(n, width)``."""
        h = [self.stem(x.flatten(1))]
        for t in range(1, self.spec.nodes + 1):
            acc: torch.Tensor | None = None
            for s in range(t):
                op = self.spec.ops[t - 1][s]
                if op == 0:
                    continue
                term = h[s] if op == 1 else self.edges[f"{s}_{t}"](h[s])
                acc = term if acc is None else acc + term
            h.append(acc if acc is not None else torch.zeros_like(h[0]))
        return h

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Output node H before the readout, ``(n, width)`` (the NNGP feature map)."""
        return self.nodes(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x))

    def extra_repr(self) -> str:
        return f"spec={self.spec.name}, width={self.width}, init={self.init}"


def build_model(
    spec: CellSpec | str,
    in_features: int,
    num_classes: int,
    width: int = 256,
    *,
    bias: bool = True,
    batchnorm: bool = False,
    init: Init = "he",
    seed: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> DAGMLP:
    """Build a :class:`DAGMLP`; with ``seed`` the initialization is reproducible.

    Example:
        >>> model = build_model("2_02_002", in_features=64, num_classes=10, width=32, seed=0)
        >>> sum(p.numel() for p in model.parameters())
        5578
    """
    if seed is None:
        return DAGMLP(spec, in_features, num_classes, width, bias=bias, batchnorm=batchnorm,
                      init=init, device=device, dtype=dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # build on CPU for seed-stable values across devices, then move
        model = DAGMLP(spec, in_features, num_classes, width, bias=bias, batchnorm=batchnorm,
                       init=init, device="cpu", dtype=dtype)
    return model.to(device) if device is not None else model

"""The NAS-Bench-201 macro network (Dong & Yang, "NAS-Bench-201: Extending the Scope of
Reproducible Neural Architecture Search", ICLR 2020).

Skeleton (Dong & Yang, ICLR 2020)::

    stem: Conv3×3(in → C, no bias) + BN
    N cells at C channels
    residual reduction block C → 2C (stride 2)
    N cells at 2C channels
    residual reduction block 2C → 4C (stride 2)
    N cells at 4C channels
    BN + ReLU → global average pool → Linear(4C → classes)

Cell operations: ``none`` (edge absent), ``skip_connect`` (identity), ``nor_conv_1x1`` and
``nor_conv_3x3`` (ReLU → Conv (no bias) → BN, stride 1, "same" padding), ``avg_pool_3x3``
(3×3 average pool, stride 1, padding 1, padded zeros not counted). A node is the sum of its
incoming edges; a node without any incoming edge is zero. The reduction block is a residual
basic block: ReLU-Conv3×3(stride 2)-BN → ReLU-Conv3×3-BN, plus a shortcut AvgPool2×2(stride 2)
→ Conv1×1 (no bias, no BN). Every BatchNorm is affine with running statistics.

:func:`count_flops` is a hook-based FLOP counter (the slow reference for
:func:`trilemma.nb201.nb201_flops`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from trilemma._checks import is_int
from trilemma.errors import InvalidArgumentError, InvalidTypeError
from trilemma.spaces._nb201 import NB201_EDGES, NB201Spec

__all__ = ["NB201Network", "NB201Cell", "ReLUConvBN", "ResidualReduction", "build_nb201", "count_flops"]


class ReLUConvBN(nn.Sequential):
    """ReLU → Conv2d (no bias) → BatchNorm2d, the NAS-Bench-201 convolution op.

    Shapes:
        ``(n, c_in, h, w)`` → ``(n, c_out, h', w')`` with ``h' = ⌊(h + 2·padding − k)/stride⌋ + 1``.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False, device=device, dtype=dtype),
            nn.BatchNorm2d(c_out, affine=True, track_running_stats=True, device=device, dtype=dtype),
        )


class ResidualReduction(nn.Module):
    """The NAS-Bench-201 residual reduction block (halves the resolution, ``c_in → c_out``).

    ``out = ReLUConvBN3×3(stride 1)(ReLUConvBN3×3(stride 2)(x)) + Conv1×1(AvgPool2×2(x))``.

    Shapes:
        ``(n, c_in, h, w)`` → ``(n, c_out, h/2, w/2)`` (``h``, ``w`` even).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1, **kw)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, **kw)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=False, **kw),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


def _make_op(op: str, channels: int, factory: dict[str, object]) -> nn.Module | None:
    if op == "none":
        return None
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0, **factory)  # type: ignore[arg-type]
    if op == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1, **factory)  # type: ignore[arg-type]
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise InvalidArgumentError(f"unknown NAS-Bench-201 op {op!r}")  # unreachable: NB201Spec validates


class NB201Cell(nn.Module):
    """One NAS-Bench-201 cell at a fixed channel count (shape-preserving).

    Attributes:
        edges: ``ModuleDict`` ``"j_i"`` → op module for every edge that is not ``none``.

    Shapes:
        ``(n, c, h, w)`` → ``(n, c, h, w)``.
    """

    def __init__(
        self,
        spec: NB201Spec,
        channels: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        factory: dict[str, object] = {"device": device, "dtype": dtype}
        self.edges = nn.ModuleDict()
        for (j, i), op in zip(NB201_EDGES, spec.ops):
            module = _make_op(op, channels, factory)
            if module is not None:
                self.edges[f"{j}_{i}"] = module

    def nodes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of nodes 0..3, each ``(n, c, h, w)``."""
        h = [x]
        for i in range(1, 4):
            acc: torch.Tensor | None = None
            for j in range(i):
                key = f"{j}_{i}"
                if key in self.edges:
                    term = self.edges[key](h[j])
                    acc = term if acc is None else acc + term
            h.append(acc if acc is not None else torch.zeros_like(x))
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nodes(x)[-1]


class NB201Network(nn.Module):
    """The NAS-Bench-201 macro network for one cell.

    Args:
        spec: The cell (an :class:`~trilemma.spaces.NB201Spec` or its string).
        C: Channels of the first stage (16 in the benchmark).
        N: Cells per stage (5 in the benchmark).
        num_classes: Output dimension.
        in_channels: Input image channels.
        device, dtype: Where and in which precision to create the parameters.

    Attributes:
        stem, cells (``ModuleList`` of cells and reduction blocks in order), lastact, gap,
        classifier.

    Shapes:
        input ``(n, in_channels, h, w)`` with ``h``, ``w`` divisible by 4; output
        ``(n, num_classes)``.
    """

    def __init__(
        self,
        spec: NB201Spec | str,
        C: int = 16,
        N: int = 5,
        num_classes: int = 10,
        *,
        in_channels: int = 3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(spec, (NB201Spec, str)):
            raise InvalidTypeError(f"spec must be an NB201Spec or a NAS-Bench-201 cell string, got {type(spec).__name__}")
        self.spec = NB201Spec.parse(spec)
        for name, value in (("C", C), ("N", N), ("num_classes", num_classes), ("in_channels", in_channels)):
            if not is_int(value) or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
        self.C, self.N, self.num_classes, self.in_channels = C, N, num_classes, in_channels
        kw = {"device": device, "dtype": dtype}
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C, kernel_size=3, padding=1, bias=False, **kw),  # type: ignore[arg-type]
            nn.BatchNorm2d(C, **kw),  # type: ignore[arg-type]
        )
        blocks: list[nn.Module] = []
        channels = C
        for stage in range(3):
            if stage > 0:
                blocks.append(ResidualReduction(channels, 2 * channels, **kw))  # type: ignore[arg-type]
                channels *= 2
            blocks.extend(NB201Cell(self.spec, channels, **kw) for _ in range(N))  # type: ignore[arg-type]
        self.cells = nn.ModuleList(blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(channels, **kw), nn.ReLU(inplace=False))  # type: ignore[arg-type]
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes, **kw)  # type: ignore[arg-type]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the classifier, ``(n, 4C)``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % 4 or x.shape[3] % 4:
            raise InvalidArgumentError(
                f"input must be (n, {self.in_channels}, h, w) with h and w divisible by 4, got {tuple(x.shape)}"
            )
        h = self.stem(x)
        for block in self.cells:
            h = block(h)
        return self.gap(self.lastact(h)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def extra_repr(self) -> str:
        return f"spec={self.spec.name}, C={self.C}, N={self.N}"


def build_nb201(
    spec: NB201Spec | str,
    C: int = 16,
    N: int = 5,
    num_classes: int = 10,
    *,
    in_channels: int = 3,
    seed: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> NB201Network:
    """Build the NAS-Bench-201 network of ``spec`` (PyTorch's default initialization).

    With ``seed`` the weights are reproducible: they are drawn on the CPU under a private RNG
    state (the global generator is left untouched) and then moved to ``device``.

    Args:
        spec: The cell or its string.
        C: First-stage channels (benchmark: 16).
        N: Cells per stage (benchmark: 5).
        num_classes: Classifier outputs.
        in_channels: Input channels.
        seed: Optional initialization seed.
        device, dtype: Placement and precision.

    Returns:
        The network (in training mode, like a freshly built ``nn.Module``).

    Raises:
        InvalidSpecError: malformed cell string.
        InvalidArgumentError: non-positive sizes.

    Example:
        >>> net = build_nb201("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", C=8, N=1, seed=0)
        >>> sum(p.numel() for p in net.parameters())
        30946
    """
    if seed is None:
        return NB201Network(spec, C, N, num_classes, in_channels=in_channels, device=device, dtype=dtype)
    if not is_int(seed):
        raise InvalidTypeError(f"seed must be an int or None, got {type(seed).__name__} {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = NB201Network(spec, C, N, num_classes, in_channels=in_channels, device="cpu", dtype=dtype)
    return model.to(device) if device is not None else model


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of ``Conv2d`` and ``Linear`` layers for one input, counted by hooks.

    The NAS-Bench-201 convention: a convolution costs ``h_out·w_out·c_out·(c_in/groups)·k_h·k_w``
    (+ ``h_out·w_out·c_out`` with a bias), a linear layer ``in·out`` (+ ``out`` with a bias);
    pooling, BatchNorm, ReLU and additions are free. This runs the model on a zero batch of
    one, in eval mode, restoring the training flag afterwards.

    Args:
        model: Any module.
        input_shape: Shape of one input without the batch dimension, e.g. ``(3, 32, 32)``.

    Returns:
        The FLOP count (an int).
    """
    total = 0

    def conv_hook(mod: nn.Conv2d, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = mod.kernel_size
        positions = out.shape[2] * out.shape[3]
        total += positions * mod.out_channels * (mod.in_channels // mod.groups) * kh * kw
        if mod.bias is not None:
            total += positions * mod.out_channels

    def linear_hook(mod: nn.Linear, _inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        nonlocal total
        total += mod.in_features * mod.out_features + (mod.out_features if mod.bias is not None else 0)

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        kw: dict[str, Any] = {"device": param.device, "dtype": param.dtype} if param is not None else {}
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, **kw))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total

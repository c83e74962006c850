"""Exact parameter and FLOP counts of the NAS-Bench-201 macro network, without building it.

Network: :func:`trilemma.models.build_nb201` (Dong & Yang, ICLR 2020). With channels
``c_s = C·2^s`` and resolution ``r_s = R/2^s`` in stage ``s = 0, 1, 2``:

* stem ``Conv3×3(in → C) + BN``: ``9·in·C + 2C`` parameters, ``R²·9·in·C`` FLOPs;
* a cell op at ``c`` channels: ``nor_conv_1x1`` ``c² + 2c`` parameters (conv + BN affine),
  ``r²·c²`` FLOPs; ``nor_conv_3x3`` ``9c² + 2c`` parameters, ``9·r²·c²`` FLOPs; the other ops 0;
* reduction ``c → 2c`` at output resolution ``r``: ``9·c·2c + 2·2c + 9·(2c)² + 2·2c + c·2c``
  parameters, ``r²·(9·c·2c + 9·(2c)² + c·2c)`` FLOPs;
* ``BN(4C)``: ``8C`` parameters; classifier ``Linear(4C → K)``: ``4C·K + K`` both.

FLOPs follow the NAS-Bench-201 convention (multiply-accumulates of convolutions and linear
layers; pooling, BN, ReLU and sums are free): with C=16, N=5, R=32, K=10 the counts of the
all-``none`` and all-``nor_conv_3x3`` cells are 7.78305 and 220.11969 MFLOPs and their
parameter counts 0.073306 and 1.531546 MB, the benchmark's published minimum and maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trilemma._checks import is_int
from trilemma.errors import InvalidArgumentError
from trilemma.spaces._nb201 import NB201Spec

__all__ = ["MacroConfig", "nb201_params", "nb201_flops", "nb201_live_params", "op_costs"]


def _positive(name: str, value: object) -> int:
    if not is_int(value) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class MacroConfig:
    """Size of the NAS-Bench-201 macro network.

    Attributes:
        C: First-stage channels (benchmark 16).
        N: Cells per stage (benchmark 5).
        num_classes: Classifier outputs (CIFAR-10: 10).
        in_channels: Input channels (3).
        resolution: Input height = width (CIFAR: 32); must be divisible by 4.
    """

    C: int = 16
    N: int = 5
    num_classes: int = 10
    in_channels: int = 3
    resolution: int = 32

    def __post_init__(self) -> None:
        for name in ("C", "N", "num_classes", "in_channels", "resolution"):
            _positive(name, getattr(self, name))
        if self.resolution % 4:
            raise InvalidArgumentError(
                f"resolution must be divisible by 4 (two stride-2 reductions), got {self.resolution}"
            )


def op_costs(config: MacroConfig = MacroConfig()) -> dict[str, tuple[int, int]]:
    """``(params, flops)`` that one cell op adds to the whole network (all 3N cells), and the base.

    Returns:
        ``{"base": (p, f), "nor_conv_1x1": (p, f), "nor_conv_3x3": (p, f)}``; ``base`` is
        everything outside the cells. The other ops cost nothing.
    """
    C, N, K, cin, R = config.C, config.N, config.num_classes, config.in_channels, config.resolution
    p1 = f1 = p3 = f3 = 0
    for s in range(3):
        c, r = C * 2**s, R // 2**s
        p1 += N * (c * c + 2 * c)
        p3 += N * (9 * c * c + 2 * c)
        f1 += N * r * r * c * c
        f3 += N * 9 * r * r * c * c
    base_p = 9 * cin * C + 2 * C
    base_f = R * R * 9 * cin * C
    for s in (1, 2):
        c_in, c_out, r = C * 2 ** (s - 1), C * 2**s, R // 2**s
        conv = 9 * c_in * c_out + 9 * c_out * c_out + c_in * c_out
        base_p += conv + 2 * 2 * c_out
        base_f += r * r * conv
    base_p += 2 * 4 * C + 4 * C * K + K
    base_f += 4 * C * K + K
    return {"base": (base_p, base_f), "nor_conv_1x1": (p1, f1), "nor_conv_3x3": (p3, f3)}


def _count(spec: NB201Spec, config: MacroConfig, which: int, live_only: bool) -> int:
    costs = op_costs(config)
    live = spec.live_edges
    total = costs["base"][which]
    for op, is_live in zip(spec.ops, live):
        if op in costs and (is_live or not live_only):
            total += costs[op][which]
    return total


def nb201_params(spec: NB201Spec | str, config: MacroConfig = MacroConfig()) -> int:
    """Exact trainable-parameter count of ``build_nb201(spec, C, N, num_classes)``.

    BatchNorm contributes its affine weight and bias; running statistics are buffers.

    Args:
        spec: The cell or its string.
        config: Macro-network size.

    Returns:
        The count (the benchmark reports it in "MB" = count / 1e6).
    """
    return _count(NB201Spec.parse(spec), config, 0, live_only=False)


def nb201_live_params(spec: NB201Spec | str, config: MacroConfig = MacroConfig()) -> int:
    """Parameters of the network when cell ops that lie on no input→output path are removed.

    Such ops (:attr:`NB201Spec.live_edges`) do not influence the output: they are dead weight.
    """
    return _count(NB201Spec.parse(spec), config, 0, live_only=True)


def nb201_flops(spec: NB201Spec | str, config: MacroConfig = MacroConfig()) -> int:
    """Exact FLOPs (multiply-accumulates, NAS-Bench-201 convention) for one input image.

    Every op is counted, dead or not (the network computes it). See the module docstring.
    """
    return _count(NB201Spec.parse(spec), config, 1, live_only=False)


def vector_costs(codes: np.ndarray, live: np.ndarray, config: MacroConfig) -> dict[str, np.ndarray]:
    """Vectorized params / live params / FLOPs for ``codes`` ``(n, 6)`` and ``live`` ``(n, 6)`` bool."""
    costs = op_costs(config)
    c1, c3 = codes == 2, codes == 3
    out = {}
    for name, which in (("params", 0), ("flops", 1)):
        out[name] = costs["base"][which] + c1.sum(1) * costs["nor_conv_1x1"][which] + c3.sum(1) * costs["nor_conv_3x3"][which]
    out["live_params"] = (
        costs["base"][0]
        + (c1 & live).sum(1) * costs["nor_conv_1x1"][0]
        + (c3 & live).sum(1) * costs["nor_conv_3x3"][0]
    )
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}

"""Exact parameter counts of the DAG-MLP and the width that meets a parameter budget.

The network (Chen, Huang & Wang, AutoML-Conf 2023) is flatten → stem ``Linear(in, m)`` [+ BatchNorm] + ReLU → cell (each
linear edge ``Linear(m, m)`` [+ BatchNorm] + ReLU) → readout ``Linear(m, classes)``.
BatchNorm contributes ``2m`` parameters (weight and bias; running statistics are buffers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trilemma._checks import is_int
from trilemma.errors import BudgetError, InvalidArgumentError
from trilemma.spaces._dag import CellSpec

__all__ = ["count_params", "solve_width", "WidthSolution"]


def _positive_int(name: str, value: object) -> int:
    if not is_int(value) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
    return value


def count_params(
    spec: CellSpec | str,
    width: int,
    in_features: int,
    num_classes: int,
    bias: bool = True,
    batchnorm: bool = False,
) -> int:
    """Exact number of trainable parameters of ``build_model(spec, ...)``.

    ``in·m + L·m² + m·c + bias·(m + L·m + c) + batchnorm·2m·(1 + L)`` with ``L`` the number of
    linear edges.
    """
    spec = CellSpec.parse(spec) if isinstance(spec, str) else spec
    m = _positive_int("width", width)
    n_in = _positive_int("in_features", in_features)
    c = _positive_int("num_classes", num_classes)
    L = spec.num_linear
    total = n_in * m + L * m * m + m * c
    if bias:
        total += m + L * m + c
    if batchnorm:
        total += 2 * m * (1 + L)
    return total


@dataclass(frozen=True)
class WidthSolution:
    """Result of :func:`solve_width`."""

    width: int
    params: int
    target: int
    rel_error: float


def solve_width(
    spec: CellSpec | str,
    target_params: int,
    in_features: int,
    num_classes: int,
    bias: bool = True,
    batchnorm: bool = False,
    tolerance: float = 0.01,
    min_width: int = 1,
    max_width: int = 1 << 20,
) -> WidthSolution:
    """The width ``m`` whose parameter count is closest to ``target_params``.

    The count is strictly increasing in ``m``, so the closest width is one of the two integers
    around the real root of ``count(m) = target``.

    Args:
        tolerance: Largest allowed ``|count - target| / target``.

    Raises:
        BudgetError: no width in ``[min_width, max_width]`` is within ``tolerance``; the
            message gives the nearest widths and their counts.
    """
    spec = CellSpec.parse(spec) if isinstance(spec, str) else spec
    target = _positive_int("target_params", target_params)
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
        raise InvalidArgumentError(f"tolerance must be a number in [0, 1), got {tolerance!r}")
    _positive_int("min_width", min_width)
    _positive_int("max_width", max_width)
    if min_width > max_width:
        raise InvalidArgumentError(f"min_width ({min_width}) must not exceed max_width ({max_width})")

    def cnt(m: int) -> int:
        return count_params(spec, m, in_features, num_classes, bias, batchnorm)

    # count(m) = a m^2 + b m  (no constant term beyond bias*c)
    L = spec.num_linear
    a = L + 0.0
    b = in_features + num_classes + (1 + L if bias else 0) + (2 * (1 + L) if batchnorm else 0)
    const = num_classes if bias else 0
    rhs = target - const
    if a > 0:
        root = (-b + math.sqrt(b * b + 4 * a * max(rhs, 0))) / (2 * a)
    else:
        root = max(rhs, 0) / b
    candidates = {min(max(int(math.floor(root)) + k, min_width), max_width) for k in (-1, 0, 1, 2)}
    best = min(candidates, key=lambda m: (abs(cnt(m) - target), m))
    params = cnt(best)
    rel = abs(params - target) / target
    if rel > tolerance:
        lo = max(min(int(math.floor(root)), max_width), min_width)
        hi = min(max(lo + 1, min_width), max_width)
        raise BudgetError(
            f"cell {spec.name} cannot meet {target} parameters within tolerance {tolerance:g}: "
            f"width {lo} gives {cnt(lo)} and width {hi} gives {cnt(hi)} "
            f"(allowed widths {min_width}..{max_width}; closest relative error {rel:.3g})"
        )
    return WidthSolution(width=best, params=params, target=target, rel_error=rel)

"""The scalar-argument checks every public entry point uses (bools are not numbers here).

``isinstance(True, int)`` holds in Python, so a flag passed where a count is expected would
slip through a plain ``isinstance`` test; these predicates reject it, and accept NumPy's
integer and floating scalars.
"""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["is_int", "is_real"]


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (Python or NumPy), and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real number (int or float, Python or NumPy), and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)

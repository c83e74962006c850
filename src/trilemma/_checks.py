"""The scalar-argument checks every public entry point uses (bools are not numbers here).

``isinstance(True, int)`` holds in Python, so a flag passed where a count is expected would
slip through a plain ``isinstance`` test; these predicates reject it, and accept NumPy's
integer and floating scalars.
"""

from __future__ import annotations

import numbers

from typing_extensions import TypeIs

__all__ = ["is_int", "is_real"]

# TypeIs narrows both branches for the type checker: after ``if not is_int(n): raise ...``
# ``n`` is an int.


def is_int(value: object) -> TypeIs[int]:
    """Whether ``value`` is an integer (Python or NumPy), and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> TypeIs[float]:
    """Whether ``value`` is a real number (int or float, Python or NumPy), and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)

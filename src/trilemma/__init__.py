"""trilemma: expressivity, convergence and generalization of neural architectures.

The top-level package imports nothing heavy: ``trilemma.spaces`` and ``trilemma.theory``
work without torch; ``trilemma.models`` and the measures need it.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

"""trilemma: expressivity, convergence and generalization of neural architectures.

The top-level package imports nothing heavy: ``trilemma.spaces`` and ``trilemma.theory``
work without torch; ``trilemma.models`` and the measures need it. The study API is
re-exported lazily::

    import trilemma
    summary = trilemma.run_study("examples/nfl_digits.toml")
    df = trilemma.load_results("nfl_digits")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "run_study": "trilemma.study",
    "load_results": "trilemma.study",
    "load_curves": "trilemma.study",
    "study_status": "trilemma.study",
    "build_report": "trilemma.report",
    "build_report_for_study": "trilemma.report",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trilemma' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)

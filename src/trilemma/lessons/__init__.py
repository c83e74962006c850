"""Lessons: small, self-checking experiments that demonstrate the lecture material.

Each lesson is registered by name; :func:`run_lesson` runs it and writes its numbers (CSV),
its figures (PNG + SVG) and a Markdown summary stating the lesson's claim and whether the
run's own numbers support it; :func:`run_lessons` runs them all and writes one
self-contained ``index.html``.

This package imports nothing heavy until one of its names is used (the command line builds
its parser from :mod:`trilemma.commands.lessons` without importing torch); the lesson modules
listed in :data:`LESSON_MODULES` register themselves on the first look-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trilemma.lessons._base import (
        LESSON_MODULES,
        LESSONS,
        Check,
        Lesson,
        LessonOutput,
        LessonResult,
        LessonSuite,
        get_lesson,
        lecture_order,
        list_lessons,
        register_lesson,
        rerun_command,
        run_lesson,
        run_lessons,
        write_output,
    )

__all__ = [
    "LESSONS",
    "LESSON_MODULES",
    "Check",
    "Lesson",
    "LessonOutput",
    "LessonResult",
    "LessonSuite",
    "get_lesson",
    "lecture_order",
    "list_lessons",
    "register_lesson",
    "rerun_command",
    "run_lesson",
    "run_lessons",
    "write_output",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'trilemma.lessons' has no attribute {name!r}")
    return getattr(importlib.import_module("trilemma.lessons._base"), name)


def __dir__() -> list[str]:
    return sorted(__all__)

"""Lessons: small, self-checking experiments that demonstrate the lecture material (SPEC §5).

Each lesson is registered by name; :func:`run_lesson` runs it and writes its numbers (CSV),
its figures (PNG + SVG) and a Markdown summary stating the lesson's claim and whether the
run's own numbers support it.
"""

from trilemma.lessons import (  # noqa: F401  (importing registers the lessons)
    _approximation,
    _batch,
    _depth,
    _error_decomposition,
    _hetero,
    _normalization,
    _width,
)
from trilemma.lessons._base import (
    LESSONS,
    Check,
    Lesson,
    LessonOutput,
    LessonResult,
    get_lesson,
    list_lessons,
    register_lesson,
    run_lesson,
)

__all__ = [
    "LESSONS",
    "Check",
    "Lesson",
    "LessonOutput",
    "LessonResult",
    "get_lesson",
    "list_lessons",
    "register_lesson",
    "run_lesson",
]

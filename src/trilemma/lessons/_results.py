"""What a lesson run produces: its checks, its result and the result of running them all.

Plain data shared by the runner (:mod:`trilemma.lessons._base`) and the index page
(:mod:`trilemma.lessons._page`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Check", "LessonResult", "LessonSuite"]


@dataclass(frozen=True)
class Check:
    """One test of a lesson's claim against the lesson's own numbers.

    Attributes:
        name: What is checked, in words.
        passed: Whether this run's numbers pass.
        detail: The numbers behind the verdict.
    """

    name: str
    passed: bool
    detail: str


@dataclass
class LessonResult:
    """The outcome of :func:`run_lesson`.

    Attributes:
        name: Lesson name.
        title: Lesson title.
        claim: The lesson's claim.
        supported: Whether every check passed on this run's numbers.
        checks: The checks.
        table: The numbers (also in ``csv_path``).
        numbers: Headline numbers.
        params: Parameters used.
        seconds: Wall time of the computation and of writing the files.
        csv_path: The CSV file.
        summary_path: The Markdown summary.
        figure_paths: Every figure file (PNG and SVG).
        figures: ``{stem: PNG bytes}`` of every figure (what ``index.html`` embeds).
        notes: The lesson's notes (definitions, caveats).
        references: The papers the lesson follows.
        quick: Whether the reduced settings were used.
        command: The shell command that re-runs this lesson with the same parameters.
    """

    name: str
    title: str
    claim: str
    supported: bool
    checks: list[Check]
    table: pd.DataFrame
    numbers: dict[str, float]
    params: dict[str, Any]
    seconds: float
    csv_path: Path
    summary_path: Path
    figure_paths: list[Path]
    figures: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    references: tuple[str, ...] = ()
    quick: bool = False
    command: str = ""


@dataclass
class LessonSuite:
    """The outcome of :func:`run_lessons`.

    Attributes:
        results: One :class:`LessonResult` per lesson, in the order run.
        seconds: Wall time of the whole run (all lessons and the index page).
        quick: Whether the reduced settings were used.
        out_dir: The output folder.
        index_path: The ``index.html`` page (``None`` when not written).
        command: The shell command that re-runs the whole set.
    """

    results: list[LessonResult]
    seconds: float
    quick: bool
    out_dir: Path
    index_path: Path | None
    command: str

    @property
    def supported(self) -> bool:
        """Whether every lesson's claim is supported by its numbers."""
        return bool(self.results) and all(r.supported for r in self.results)

"""The lesson registry, the lesson result and the writer of a lesson's files.

A lesson is data first, pixels second (as in Optuna's visualization module): its
``compute(params)`` returns the numbers (a data frame), the checks of the lesson's claim on
those numbers, and figure-drawing callbacks; :func:`run_lesson` times it and writes the CSV,
the figures (PNG + SVG, matplotlib's Agg canvas, no pyplot state) and a Markdown summary.
Tests call ``compute`` with reduced settings and assert the checks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from trilemma._registry import Registry
from trilemma.errors import InvalidArgumentError, InvalidTypeError

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

logger = logging.getLogger(__name__)

Draw = Callable[[Any], None]  # receives a matplotlib.figure.Figure


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
class LessonOutput:
    """What a lesson's ``compute`` returns.

    Attributes:
        table: The lesson's numbers (written as CSV).
        checks: The checks of the claim.
        figures: ``{stem: draw}``; ``draw(fig)`` fills a matplotlib ``Figure``.
        notes: Extra Markdown lines for the summary (definitions, caveats).
        numbers: Headline numbers (also shown in the summary).
    """

    table: pd.DataFrame
    checks: list[Check]
    figures: dict[str, Draw] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)

    @property
    def supported(self) -> bool:
        """Whether every check passed."""
        return bool(self.checks) and all(c.passed for c in self.checks)


@dataclass(frozen=True)
class Lesson:
    """A registered lesson.

    Attributes:
        name: Registry name (``"depth-separation"``).
        title: Human title.
        claim: The statement the lesson demonstrates; its checks test it.
        references: Papers the lesson follows.
        defaults: Default parameters (≤ 3 minutes on two CPU cores).
        quick: Parameter changes for a fast run (tests, ``--quick``).
        compute: ``compute(params) -> LessonOutput``.
    """

    name: str
    title: str
    claim: str
    references: tuple[str, ...]
    defaults: Mapping[str, Any]
    quick: Mapping[str, Any]
    compute: Callable[[dict[str, Any]], LessonOutput]

    def params(self, *, quick: bool = False, **overrides: Any) -> dict[str, Any]:
        """The parameters of a run: defaults, then the quick settings, then ``overrides``.

        Raises:
            InvalidArgumentError: An override names no parameter of this lesson.
            InvalidTypeError: An override has a different type than the default.
        """
        params = dict(self.defaults)
        if quick:
            params.update(self.quick)
        unknown = sorted(set(overrides) - set(params))
        if unknown:
            allowed = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items())
            raise InvalidArgumentError(
                f"lesson {self.name!r} has no parameter(s) {', '.join(map(repr, unknown))}; "
                f"its parameters are: {allowed}"
            )
        for key, value in overrides.items():
            params[key] = _coerce(self.name, key, value, self.defaults[key])
        return params

    def run(self, params: Mapping[str, Any], *, threads: int | None = 1) -> LessonOutput:
        """Compute the lesson's numbers and checks (no files written).

        Args:
            params: Full parameters (from :meth:`params`).
            threads: Intra-op threads for torch and the BLAS libraries while the lesson runs
                (restored afterwards). The lessons' tensors are tiny, where one thread is
                fastest and, on a shared machine, far faster than several; ``None`` keeps
                the current settings.

        Returns:
            The :class:`LessonOutput`.
        """
        with _limited_threads(threads):
            return self.compute(dict(params))


@contextlib.contextmanager
def _limited_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidArgumentError(f"threads must be a positive int or None, got {threads!r}")
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def _coerce(lesson: str, key: str, value: Any, default: Any) -> Any:
    """``value`` in the type of ``default`` (ints accepted for floats, lists for tuples)."""
    kind = type(default)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, (tuple, list)) and len(value) > 0
        if ok and default:
            item = type(default[0])
            ok = all(isinstance(v, (int, float) if item is float else item) and not isinstance(v, bool) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise InvalidTypeError(
            f"lesson {lesson!r}: parameter {key!r} must be like its default {default!r} ({kind.__name__}), "
            f"got {value!r}"
        )
    return value


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


LESSONS: Registry[Lesson] = Registry("lesson")


def register_lesson(
    name: str,
    *,
    title: str,
    claim: str,
    references: Sequence[str],
    defaults: Mapping[str, Any],
    quick: Mapping[str, Any] | None = None,
) -> Callable[[Callable[[dict[str, Any]], LessonOutput]], Callable[[dict[str, Any]], LessonOutput]]:
    """Decorator registering ``compute(params) -> LessonOutput`` as a lesson.

    Raises:
        DuplicateNameError: ``name`` is already registered.
        InvalidArgumentError: ``quick`` names a parameter that has no default.
    """
    quick = dict(quick or {})
    extra = sorted(set(quick) - set(defaults))
    if extra:
        raise InvalidArgumentError(f"lesson {name!r}: quick settings {extra} have no default")

    def wrap(fn: Callable[[dict[str, Any]], LessonOutput]) -> Callable[[dict[str, Any]], LessonOutput]:
        LESSONS.register(name, Lesson(name, title, claim, tuple(references), dict(defaults), quick, fn))
        return fn

    return wrap


def list_lessons(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered lessons (optionally filtered by a shell pattern)."""
    return LESSONS.names(pattern)


def get_lesson(name: str) -> Lesson:
    """The lesson registered as ``name``.

    Raises:
        UnknownNameError: Unknown name (the message lists the valid ones).
    """
    return LESSONS.get(name)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return str(value)


def _markdown_table(frame: pd.DataFrame, max_rows: int = 60) -> str:
    shown = frame.head(max_rows)
    cols = [str(c) for c in shown.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in shown.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    if len(frame) > max_rows:
        lines.append(f"\n({len(frame) - max_rows} more rows in the CSV)")
    return "\n".join(lines)


def _summary(lesson: Lesson, out: LessonOutput, params: dict[str, Any], seconds: float,
             csv_name: str, figures: list[str]) -> str:
    passed = sum(c.passed for c in out.checks)
    verdict = "**yes**" if out.supported else "**no**"
    lines = [
        f"# {lesson.title} (`{lesson.name}`)",
        "",
        f"**Claim.** {lesson.claim}",
        "",
        f"**Supported by this run's numbers:** {verdict} ({passed} of {len(out.checks)} checks pass).",
        "",
        "## Checks",
        "",
    ]
    lines += [f"- [{'x' if c.passed else ' '}] {c.name}: {c.detail}" for c in out.checks]
    if out.numbers:
        lines += ["", "## Headline numbers", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in out.numbers.items()]
    if out.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in out.notes]
    lines += ["", "## Parameters", ""]
    lines += [f"- `{k}` = {_fmt(v)}" for k, v in params.items()]
    lines += ["", f"## Numbers (`{csv_name}`)", "", _markdown_table(out.table)]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    lines += ["", "## References", ""] + [f"- {r}" for r in lesson.references]
    lines += ["", f"Wall time: {seconds:.1f} s.", ""]
    return "\n".join(lines)


def _save_figures(name: str, out_dir: Path, figures: Mapping[str, Draw]) -> list[Path]:
    from matplotlib.figure import Figure  # Agg canvas; no pyplot global state

    paths: list[Path] = []
    for stem, draw in figures.items():
        fig = Figure(figsize=(6.4, 4.4), layout="constrained")
        draw(fig)
        for ext in ("png", "svg"):
            path = out_dir / f"{name}_{stem}.{ext}"
            fig.savefig(path, dpi=120, metadata={"Date": None} if ext == "svg" else None)
            paths.append(path)
    return paths


def run_lesson(
    name: str, out_dir: str | Path, *, quick: bool = False, threads: int | None = 1, **overrides: Any
) -> LessonResult:
    """Run a lesson and write its CSV, figures (PNG + SVG) and Markdown summary.

    Files are named after the lesson inside ``out_dir`` (created if missing):
    ``<name>.csv``, ``<name>.md``, ``<name>_<figure>.png`` / ``.svg``.

    Args:
        name: A name from :func:`list_lessons`.
        out_dir: Output folder.
        quick: Use the lesson's reduced settings (seconds instead of minutes).
        threads: Threads while the lesson runs (see :meth:`Lesson.run`; ``None``: unchanged).
        **overrides: Lesson parameters to change (see ``get_lesson(name).defaults``).

    Returns:
        The :class:`LessonResult` (including whether the claim is supported by its numbers).

    Raises:
        UnknownNameError: Unknown lesson.
        InvalidArgumentError: Unknown parameter or a value the lesson rejects.
        InvalidTypeError: A parameter of the wrong type.
    """
    lesson = get_lesson(name)
    params = lesson.params(quick=quick, **overrides)
    out_path = Path(out_dir)
    if out_path.exists() and not out_path.is_dir():
        raise InvalidArgumentError(f"out_dir must be a folder, got the file {str(out_path)!r}")
    out_path.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    logger.info("lesson %s: running with %s", name, params)
    out = lesson.run(params, threads=threads)
    csv_path = out_path / f"{name}.csv"
    out.table.to_csv(csv_path, index=False)
    figure_paths = _save_figures(name, out_path, out.figures)
    seconds = time.perf_counter() - start
    summary_path = out_path / f"{name}.md"
    pngs = [p.name for p in figure_paths if p.suffix == ".png"]
    summary_path.write_text(_summary(lesson, out, params, seconds, csv_path.name, pngs), encoding="utf-8")
    logger.info("lesson %s: %s in %.1f s", name, "supported" if out.supported else "NOT supported", seconds)
    return LessonResult(
        name=name,
        title=lesson.title,
        claim=lesson.claim,
        supported=out.supported,
        checks=list(out.checks),
        table=out.table,
        numbers=dict(out.numbers),
        params=params,
        seconds=seconds,
        csv_path=csv_path,
        summary_path=summary_path,
        figure_paths=figure_paths,
    )

"""The lesson registry, the lesson result and the writer of a lesson's files.

A lesson is data first, pixels second (as in Optuna's visualization module): its
``compute(params)`` returns the numbers (a data frame), the checks of the lesson's claim on
those numbers, and figure-drawing callbacks; :func:`run_lesson` times it and writes the CSV,
the figures (PNG + SVG, matplotlib's Agg canvas, no pyplot state) and a Markdown summary;
:func:`run_lessons` runs several and adds one self-contained ``index.html``.
Tests call ``compute`` with reduced settings and assert the checks.

Every file a lesson run writes goes through :func:`write_output`.

The lesson modules are imported (and so registered) on the first call of
:func:`list_lessons` or :func:`get_lesson`, not when this module is imported, so that the
command line can build its parser without importing torch.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import math
import os
import shlex
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trilemma._checks import is_int
from trilemma._outputs import check_output_dir, is_store_path
from trilemma._registry import Registry
from trilemma.errors import InvalidArgumentError, InvalidTypeError, OutputPathError
from trilemma.lessons._results import Check, LessonResult, LessonSuite

if TYPE_CHECKING:
    import pandas as pd

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

#: The modules that define the lessons, imported on first use of the registry (in this order).
LESSON_MODULES = (
    "trilemma.lessons._error_decomposition",
    "trilemma.lessons._approximation",
    "trilemma.lessons._depth",
    "trilemma.lessons._linear_regions",
    "trilemma.lessons._hetero",
    "trilemma.lessons._width",
    "trilemma.lessons._random_labels",
    "trilemma.lessons._compression",
    "trilemma.lessons._batch",
    "trilemma.lessons._landscape",
    "trilemma.lessons._optimizers",
    "trilemma.lessons._residual",
    "trilemma.lessons._normalization",
    "trilemma.lessons._regularization",
)

logger = logging.getLogger(__name__)

Draw = Callable[[Any], None]  # receives a matplotlib.figure.Figure


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
    if not is_int(threads) or threads < 1:
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


LESSONS: Registry[Lesson] = Registry("lesson")
_ORDER: list[str] = []  # registration order (ties within a module, lessons registered elsewhere)
_LOADED = False


def _load_lessons() -> None:
    """Import the lesson modules (registering their lessons) once."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for module in LESSON_MODULES:
        importlib.import_module(module)


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
        _ORDER.append(name)
        return fn

    return wrap


def list_lessons(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered lessons (optionally filtered by a shell pattern)."""
    _load_lessons()
    return LESSONS.names(pattern)


def lecture_order() -> list[str]:
    """The registered lessons in the lecture's order (the order of :data:`LESSON_MODULES`, then any others)."""
    _load_lessons()
    names = [n for n in _ORDER if n in set(LESSONS.names())]
    rank = {module: i for i, module in enumerate(LESSON_MODULES)}
    return sorted(names, key=lambda n: rank.get(LESSONS.get(n).compute.__module__, len(rank)))


def get_lesson(name: str) -> Lesson:
    """The lesson registered as ``name``.

    Raises:
        UnknownNameError: Unknown name (the message lists the valid ones).
    """
    _load_lessons()
    return LESSONS.get(name)


def write_output(path: str | Path, content: str | bytes) -> Path:
    """Write one output file of a lesson run; every file the lessons write goes through here.

    The file is written to a temporary file in the same folder and renamed over ``path``,
    so a reader never sees half a file. Text is written as UTF-8.

    Args:
        path: Destination; its folder must exist.
        content: Text or bytes.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InvalidTypeError: ``content`` is neither ``str`` nor ``bytes``.
        InvalidArgumentError: ``path`` is an existing folder.
    """
    path = Path(path)
    if isinstance(content, str):
        data = content.encode("utf-8")
    elif isinstance(content, (bytes, bytearray)):
        data = bytes(content)
    else:
        raise InvalidTypeError(f"content must be str or bytes, got {type(content).__name__}")
    if path.is_dir():
        raise InvalidArgumentError(f"cannot write the file {str(path)!r}: a folder of that name exists")
    if is_store_path(path):
        raise OutputPathError(f"refusing to write {str(path)!r}: it is a study store or a file of one")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def rerun_command(name: str, out_dir: str | Path, *, quick: bool = False,
                  overrides: Mapping[str, Any] | None = None) -> str:
    """The ``trilemma lesson run`` command line that repeats a run (``name`` may be ``"all"``)."""
    parts = ["trilemma", "lesson", "run", name, "--out", str(out_dir)]
    if quick:
        parts.append("--quick")
    for key, value in (overrides or {}).items():
        parts += ["--set", f"{key}={value!r}"]
    return " ".join(shlex.quote(p) for p in parts)


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
             csv_name: str, figures: list[str], command: str) -> str:
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
    lines += ["", f"Wall time: {seconds:.1f} s. Re-run: `{command}`", ""]
    return "\n".join(lines)


def _render_figures(figures: Mapping[str, Draw]) -> dict[str, dict[str, bytes]]:
    """``{stem: {"png": bytes, "svg": bytes}}`` (matplotlib's Agg canvas; no pyplot state)."""
    from matplotlib.figure import Figure

    rendered: dict[str, dict[str, bytes]] = {}
    for stem, draw in figures.items():
        fig = Figure(figsize=(6.4, 4.4), layout="constrained")
        draw(fig)
        rendered[stem] = {}
        for ext in ("png", "svg"):
            buffer = io.BytesIO()
            fig.savefig(buffer, format=ext, dpi=120, metadata={"Date": None} if ext == "svg" else None)
            rendered[stem][ext] = buffer.getvalue()
    return rendered


#: A file every lesson output folder holds, so that a later run recognises the folder as ours.
OUTPUT_MARKER = ".trilemma-lessons.md"


def _out_folder(out_dir: str | Path) -> Path:
    """The output folder: new, empty, or an earlier lessons folder (never a store or a foreign folder).

    Raises:
        OutputPathError: ``out_dir`` is a file, a store, or a non-empty folder of something else.
        OSError: the folder cannot be created.
    """
    out_path = check_output_dir(out_dir, marker=OUTPUT_MARKER, marker_kind="markdown", what="lesson run --out")
    marker = out_path / OUTPUT_MARKER
    if not marker.exists():
        write_output(marker, "# trilemma lesson outputs\n\nWritten by `trilemma lesson run`; files here are "
                             "overwritten by the next run.\n")
    return out_path


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
    out_path = _out_folder(out_dir)
    start = time.perf_counter()
    logger.info("lesson %s: running with %s", name, params)
    out = lesson.run(params, threads=threads)
    csv_path = write_output(out_path / f"{name}.csv", out.table.to_csv(index=False))
    rendered = _render_figures(out.figures)
    figure_paths = [write_output(out_path / f"{name}_{stem}.{ext}", payload)
                    for stem, files in rendered.items() for ext, payload in files.items()]
    seconds = time.perf_counter() - start
    command = rerun_command(name, out_dir, quick=quick, overrides=overrides)
    pngs = [p.name for p in figure_paths if p.suffix == ".png"]
    summary_path = write_output(out_path / f"{name}.md",
                                _summary(lesson, out, params, seconds, csv_path.name, pngs, command))
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
        figures={stem: files["png"] for stem, files in rendered.items()},
        notes=list(out.notes),
        references=lesson.references,
        quick=quick,
        command=command,
    )


def run_lessons(
    out_dir: str | Path,
    names: Sequence[str] | None = None,
    *,
    quick: bool = False,
    threads: int | None = 1,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    index: bool = True,
    progress: Callable[[LessonResult], None] | None = None,
) -> LessonSuite:
    """Run several lessons (all by default, in the lecture's order) and write ``index.html``.

    Each lesson writes its files as in :func:`run_lesson`; ``out_dir/index.html`` is one
    self-contained page (figures inline, no network) with every lesson's figures, its
    checks with pass/fail and the numbers behind them, and the command that re-runs it.

    Args:
        out_dir: Output folder.
        names: Lessons to run (default: every registered lesson, see :func:`lecture_order`).
        quick: Use every lesson's reduced settings.
        threads: Threads while each lesson runs (see :meth:`Lesson.run`).
        overrides: ``{lesson name: {parameter: value}}`` applied to the named lessons.
        index: Write ``index.html``.
        progress: Called with each :class:`LessonResult` as soon as its lesson is done.

    Returns:
        The :class:`LessonSuite` (results, total wall time, the index page).

    Raises:
        UnknownNameError: An unknown lesson in ``names`` or ``overrides``.
        InvalidArgumentError: ``names`` is empty or repeats a lesson; bad parameters.
    """
    order = lecture_order() if names is None else list(names)
    if not order:
        raise InvalidArgumentError("names must list at least one lesson, got an empty list")
    if len(set(order)) != len(order):
        raise InvalidArgumentError(f"names must not repeat a lesson, got {order!r}")
    overrides = dict(overrides or {})
    for name in [*order, *overrides]:
        get_lesson(name)  # unknown names fail before anything runs
    stray = sorted(set(overrides) - set(order))
    if stray:
        raise InvalidArgumentError(f"overrides name lessons that are not run: {stray}; running {order}")
    out_path = _out_folder(out_dir)
    start = time.perf_counter()
    results = []
    for name in order:
        result = run_lesson(name, out_path, quick=quick, threads=threads, **dict(overrides.get(name, {})))
        results.append(result)
        if progress is not None:
            progress(result)
    command = rerun_command("all", out_dir, quick=quick) if names is None and not overrides else ""
    index_path = None
    if index:
        from trilemma.lessons._page import render_index

        seconds = time.perf_counter() - start
        index_path = write_output(out_path / "index.html",
                                  render_index(results, seconds=seconds, quick=quick, command=command))
    return LessonSuite(results=results, seconds=time.perf_counter() - start, quick=quick, out_dir=out_path,
                       index_path=index_path, command=command)

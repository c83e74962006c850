"""CLI commands of studies: ``run``, ``status``, ``export``.

``STUDY`` is a study ``.toml``, a store ``.sqlite`` path, or the name of a study in ``runs/``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

__all__ = ["add_commands"]


def _fmt_eta(p: Any) -> str:
    """The ETA, with the task kinds whose cost is not known yet."""
    text = _fmt_seconds(p.eta)
    partial = getattr(p, "eta_partial", ())
    return f"{text} + {', '.join(partial)}" if partial and p.eta is not None else text


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


#: What an interrupted run tells the user (the store keeps finished work).
RESUME_HINT = "interrupted; run the same command again to resume"


class _PlainProgress:
    """Periodic one-line progress reports for logs and pipes.

    At most one line per ``every`` seconds; a state held back by that limit is printed by a
    background timer once the interval is over (so the log never lags behind the store), and
    while no job finishes (a batched training job can run for many minutes) the latest state is
    repeated with the elapsed time every ``heartbeat`` seconds.
    """

    def __init__(self, out: TextIO, every: float = 10.0, heartbeat: float | None = None) -> None:
        self.out = out
        self.every = every
        self.heartbeat = max(every, 60.0) if heartbeat is None else heartbeat
        self._last = -1e9  # the first state is always printed
        self._lock = threading.Lock()
        self._latest: Any = None
        self._latest_at = 0.0
        self._held = False
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def __call__(self, p: Any) -> None:
        now = time.monotonic()
        final = p.finished == p.queued
        with self._lock:
            self._latest, self._latest_at = p, now
            if not final and now - self._last < self.every:
                self._held = True
                self._start_timer()
                return
            self._print(p, now)
            if not final:
                self._start_timer()  # the heartbeat, also while the first job runs
        if final:
            self.close()

    def _print(self, p: Any, now: float, waited: float = 0.0, beat: bool = False) -> None:
        self._last = now
        self._held = False
        pct = 100.0 * p.finished / p.queued if p.queued else 100.0
        line = (f"[{_fmt_seconds(p.elapsed + waited)}] {p.finished}/{p.queued} tasks ({pct:.0f}%)"
                f" | {p.complete} complete, {p.diverged} diverged, {p.failed} failed"
                f" | {p.rate:.2f} tasks/s | ETA {_fmt_eta(p)}")
        if p.skipped:
            line += f" | {p.skipped} already done"
        if beat:
            line += f" | no job finished for {_fmt_seconds(waited)}"
        print(line, file=self.out, flush=True)

    def _start_timer(self) -> None:
        if self._timer is None and not self._stop.is_set():
            self._timer = threading.Thread(target=self._tick, name="trilemma-progress", daemon=True)
            self._timer.start()

    def _tick(self) -> None:
        while not self._stop.wait(min(self.every, self.heartbeat)):
            now = time.monotonic()
            with self._lock:
                if self._stop.is_set():
                    continue
                if self._held and now - self._last >= self.every:
                    self._print(self._latest, now, waited=now - self._latest_at)
                elif now - self._last >= self.heartbeat:
                    self._print(self._latest, now, waited=now - self._latest_at, beat=True)

    def close(self) -> None:
        self._stop.set()
        timer, self._timer = self._timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.join(timeout=5)


class _RichProgress:
    """A rich progress bar with counts, rate and ETA (terminals)."""

    def __init__(self, console: Any = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("{task.fields[counts]}"),
            console=console,
            transient=False,
        )
        self._task: Any = None

    def __call__(self, p: Any) -> None:
        counts = f"[green]{p.complete}✓[/] [yellow]{p.diverged}↯[/] [red]{p.failed}✗[/]"
        fields: dict[str, Any] = {"rate": f"{p.rate:.2f}/s", "counts": counts, "eta": _fmt_eta(p)}
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task("tasks", total=max(p.queued, 1), **fields)
            if p.skipped:
                self._bar.console.print(f"{p.skipped} of {p.total} tasks already done; running {p.queued}")
        self._bar.update(self._task, completed=p.finished if p.queued else 1, **fields)

    def close(self) -> None:
        if self._task is not None:
            self._bar.stop()


def _cmd_run(args: argparse.Namespace) -> int:
    from trilemma.study import run_study

    reporter: Any = None
    if not args.quiet:
        reporter = _RichProgress() if sys.stdout.isatty() else _PlainProgress(sys.stdout, every=args.every)
    try:
        summary = run_study(
            args.study, executor=args.executor, n_workers=args.workers, address=args.address, device=args.device,
            store=args.store,
            progress=reporter, rerun_failed=not args.skip_failed, rerun_changed=args.rerun_changed, force=args.force,
        )
    finally:
        if reporter is not None:
            reporter.close()
    print(summary)
    if summary.interrupted:
        print(RESUME_HINT, file=sys.stderr)
        return 130
    print(f"results: trilemma status {summary.store} | trilemma export {summary.store} --format csv"
          f" | trilemma report {args.study if args.store is None else summary.store}")
    return 1 if summary.failed else 0


def _cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from trilemma.study import STATUSES, study_status

    st = study_status(args.study, include_stale=args.include_stale)
    console = Console(highlight=False)
    table = Table(title=f"study {st.name} ({st.store})")
    table.add_column("task")
    for s in STATUSES:
        label = "interrupted (resumable)" if s == "running" and not st.live and st.counts["running"] else s
        table.add_column(label, justify="right")
    table.add_column("total", justify="right")
    for task, counts in sorted(st.by_task.items()):
        table.add_row(task, *(str(counts[s]) for s in STATUSES), str(sum(counts.values())))
    table.add_row("[bold]all", *(f"[bold]{st.counts[s]}" for s in STATUSES), f"[bold]{st.total}")
    console.print(table)
    shown = st.failures if args.all else st.failures[:20]
    if st.failures:
        console.print(f"[red]{len(st.failures)} failed task(s):")
        for key, line in shown:
            console.print(f"  {key}: {line}", markup=False)
        if len(shown) < len(st.failures):
            console.print(f"  … {len(st.failures) - len(shown)} more (--all lists every one)")
    if st.interrupted:
        console.print(f"{st.interrupted} task(s) were running when their run stopped; "
                      f"`trilemma run` resumes them", markup=False)
    if st.stale:
        console.print(f"{st.stale} row(s) of an older config are hidden (--include-stale shows them)", markup=False)
    for meta_key in ("last_run_started", "last_run_finished", "trilemma_version"):
        if meta_key in st.meta:
            console.print(f"{meta_key.replace('_', ' ')}: {st.meta[meta_key]}", markup=False)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from trilemma.study import export_study

    path = export_study(args.study, args.format, args.out, include_stale=args.include_stale)
    print(f"wrote {path}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``run``, ``status`` and ``export`` to the ``trilemma`` command line."""
    study_help = "a study .toml, a store .sqlite, or a study name in runs/"

    run = subparsers.add_parser("run", help="run (or resume) a study from its TOML config")
    run.add_argument("study", metavar="STUDY.toml", help="the study config")
    run.add_argument("--executor", choices=("serial", "local", "ray"), help="override executor.kind")
    run.add_argument("--workers", type=int, help="override executor.n_workers")
    run.add_argument("--address", help="override executor.address (Ray cluster)")
    run.add_argument("--device", help="override the study's device: cpu, cuda, cuda:N or auto")
    run.add_argument("--store", type=Path, help="override the store path (default runs/<name>.sqlite)")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress output, only the summary")
    run.add_argument("--every", type=float, default=10.0,
                     help="seconds between progress lines when not on a terminal (default 10)")
    run.add_argument("--skip-failed", action="store_true", help="do not retry tasks that failed in an earlier run")
    run.add_argument("--force", action="store_true",
                     help="run even when the study's estimated memory exceeds the machine's")
    run.add_argument("--rerun-changed", action="store_true",
                     help="recompute completed tasks whose settings changed since they ran")
    run.set_defaults(func=_cmd_run)

    status = subparsers.add_parser("status", help="counts by status and failures of a study")
    status.add_argument("study", metavar="STUDY", help=study_help)
    status.add_argument("--all", action="store_true", help="list every failure (default: the first 20)")
    status.add_argument("--include-stale", action="store_true",
                        help="also count rows of an older config (hidden by default)")
    status.set_defaults(func=_cmd_status)

    export = subparsers.add_parser("export", help="write a study's results as csv, parquet or json")
    export.add_argument("study", metavar="STUDY", help=study_help)
    export.add_argument("--format", choices=("csv", "parquet", "json"), default="csv",
                        help="csv/parquet: the results table; json: NAS-Bench-Suite-Zero layout")
    export.add_argument("--out", type=Path,
                        help="output file (default: next to the store); an earlier export of the same format is "
                             "overwritten, a study store or a file of another kind never is")
    export.add_argument("--include-stale", action="store_true",
                        help="also export rows of an older config (hidden by default)")
    export.set_defaults(func=_cmd_export)


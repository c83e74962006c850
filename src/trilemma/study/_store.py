"""The persistent, resumable result store: one SQLite file per study (WAL mode).

Schema (version :data:`SCHEMA_VERSION`):

* ``meta(key, value)``: ``schema_version``, ``study`` (name), ``config`` (the config JSON of
  the latest run), ``config_hash``, ``created_at``, ``trilemma_version``.
* ``tasks``: one row per ``(arch, task, dataset, seed)`` with ``status`` (pending, running,
  complete, failed, diverged), ``payload`` (canonical JSON), ``error`` (traceback),
  ``task_hash`` (hash of the settings the result depends on), ``version`` (trilemma version
  that computed it), ``created_at``, ``started_at``, ``finished_at`` (ISO 8601 UTC),
  ``seconds``, ``attempts`` and ``worker``.

Every write is one transaction. Results are written with ``INSERT … ON CONFLICT DO UPDATE
… WHERE status NOT IN ('complete', 'diverged')``: a final row is never rewritten, so
writing the same outcome twice is harmless and a restarted study cannot change (or
duplicate) what an earlier run completed. Rows a killed run left ``running`` are put back to
``pending`` when the next run starts. Only one run may drive a store at a time (an
advisory ``flock`` on ``<store>.lock``, released by the kernel even on SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trilemma import __version__
from trilemma.errors import StoreError
from trilemma.study._tasks import STATUSES, Outcome, TaskKey, now_iso

__all__ = ["Store", "StoredRow", "SCHEMA_VERSION", "FINAL_STATUSES"]

logger = logging.getLogger(__name__)

#: Version of the table layout; a store with another version is refused with a clear message.
SCHEMA_VERSION = 1
#: Statuses that are never recomputed.
FINAL_STATUSES = ("complete", "diverged")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    arch        TEXT    NOT NULL,
    task        TEXT    NOT NULL,
    dataset     TEXT    NOT NULL,
    seed        INTEGER NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
    payload     TEXT,
    error       TEXT,
    task_hash   TEXT    NOT NULL,
    version     TEXT,
    created_at  TEXT    NOT NULL,
    started_at  TEXT,
    finished_at TEXT,
    seconds     REAL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    worker      TEXT,
    PRIMARY KEY (arch, task, dataset, seed)
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status);
"""

_COLUMNS = (
    "arch", "task", "dataset", "seed", "status", "payload", "error", "task_hash", "version",
    "created_at", "started_at", "finished_at", "seconds", "attempts", "worker",
)


@dataclass(frozen=True)
class StoredRow:
    """One row of the ``tasks`` table (see the module docstring for the fields)."""

    arch: str
    task: str
    dataset: str
    seed: int
    status: str
    payload: str | None
    error: str | None
    task_hash: str
    version: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    seconds: float | None
    attempts: int
    worker: str | None

    @property
    def key(self) -> TaskKey:
        return TaskKey(self.arch, self.task, self.dataset, self.seed)

    def result(self) -> dict[str, Any]:
        """The decoded payload (empty when there is none)."""
        return json.loads(self.payload) if self.payload else {}


class Store:
    """A study's SQLite store.

    Args:
        path: The ``.sqlite`` file.
        create: Create the file (and its folder) if missing; otherwise a missing file is an error.
        readonly: Open without writing (no schema creation, no WAL switch).

    Raises:
        StoreError: The file is missing (and ``create`` is false), is not a trilemma store,
            or has another schema version.
    """

    def __init__(self, path: str | Path, *, create: bool = False, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if not self.path.exists():
            if not create or readonly:
                raise StoreError(
                    f"no study store at {str(self.path)!r}; run the study first (trilemma run STUDY.toml)"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if readonly:
                uri = f"file:{self.path.resolve()}?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
            else:
                self._conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._check_schema(create and not readonly)
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{str(self.path)!r} is not a readable trilemma study store: {err}") from None

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on error)."""
        if self.readonly:
            raise StoreError(f"store {self.path} is open read-only")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")

    def _check_schema(self, create: bool) -> None:
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            if not create:
                raise StoreError(f"{str(self.path)!r} is an empty database, not a trilemma study store")
            with self._tx() as c:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                c.execute("INSERT INTO meta VALUES ('created_at', ?)", (now_iso(),))
                c.execute("INSERT INTO meta VALUES ('trilemma_version', ?)", (__version__,))
            return
        if "meta" not in tables or "tasks" not in tables:
            raise StoreError(
                f"{str(self.path)!r} is an SQLite file but not a trilemma study store "
                f"(tables: {', '.join(sorted(tables))})"
            )
        row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        found = row[0] if row else "missing"
        if found != str(SCHEMA_VERSION):
            raise StoreError(
                f"study store {str(self.path)!r} has schema version {found}, but trilemma {__version__} "
                f"reads schema version {SCHEMA_VERSION}. Export it with the trilemma version that wrote it, "
                f"or move the file away to start the study afresh."
            )

    # ------------------------------------------------------------------ locking
    @contextlib.contextmanager
    def run_lock(self) -> Iterator[None]:
        """Exclusive lock for a run (an advisory ``flock`` on ``<store>.lock``).

        Raises:
            StoreError: Another process is running this study right now.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            logger.warning("no fcntl on this platform: concurrent runs of one study are not prevented")
            yield
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(
                    f"study store {str(self.path)!r} is being written by another running study "
                    f"(lock {str(lock_path)!r}); wait for it to finish or stop it first"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)  # closing releases the flock

    # ------------------------------------------------------------------ meta
    def meta(self) -> dict[str, str]:
        """All ``meta`` entries."""
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, **values: str) -> None:
        """Set ``meta`` entries (one transaction)."""
        with self._tx() as c:
            c.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                list(values.items()),
            )

    # ------------------------------------------------------------------ planning
    def requeue_running(self) -> int:
        """Put rows left ``running`` (by a run that died) back to ``pending``; returns how many."""
        with self._tx() as c:
            n = c.execute("UPDATE tasks SET status='pending' WHERE status='running'").rowcount
        if n:
            logger.info("re-queued %d task(s) left running by an interrupted run", n)
        return n

    def sync_plan(
        self,
        planned: Sequence[tuple[TaskKey, str]],
        *,
        rerun_failed: bool = True,
        rerun_changed: bool = False,
    ) -> list[TaskKey]:
        """Insert planned tasks that are new and return those that must (re)run.

        Args:
            planned: ``(key, task_hash)`` of every task of the study.
            rerun_failed: Queue failed tasks again.
            rerun_changed: Queue final rows whose ``task_hash`` differs from the plan's
                (their settings changed); otherwise such rows are an error.

        Returns:
            Keys to run, in plan order.

        Raises:
            StoreError: Final rows were computed under other settings and ``rerun_changed``
                is false; the message says which and how to proceed.
        """
        created = now_iso()
        existing = {
            TaskKey(r[0], r[1], r[2], r[3]): (r[4], r[5])
            for r in self._conn.execute("SELECT arch, task, dataset, seed, status, task_hash FROM tasks")
        }
        changed = [k for k, h in planned if k in existing and existing[k][1] != h]
        stale_final = [k for k in changed if existing[k][0] in FINAL_STATUSES]
        if stale_final and not rerun_changed:
            tasks = sorted({k.task for k in stale_final})
            raise StoreError(
                f"{len(stale_final)} completed result(s) in {str(self.path)!r} (task kind(s) {', '.join(tasks)}; "
                f"e.g. {stale_final[0]}) were computed with other settings than this config. "
                f"Re-run with --rerun-changed (run_study(..., rerun_changed=True)) to recompute them, "
                f"or give the study another name or store."
            )
        todo = []
        with self._tx() as c:
            new = [(k, h) for k, h in planned if k not in existing]
            c.executemany(
                "INSERT INTO tasks(arch, task, dataset, seed, status, task_hash, created_at) "
                "VALUES (?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT DO NOTHING",
                [(k.arch, k.task, k.dataset, k.seed, h, created) for k, h in new],
            )
            for k, h in planned:
                if k in existing:
                    status, old_hash = existing[k]
                    if old_hash != h:
                        c.execute(
                            "UPDATE tasks SET status='pending', payload=NULL, error=NULL, task_hash=?, "
                            "started_at=NULL, finished_at=NULL, seconds=NULL, worker=NULL "
                            "WHERE arch=? AND task=? AND dataset=? AND seed=?",
                            (h, k.arch, k.task, k.dataset, k.seed),
                        )
                        todo.append(k)
                    elif status in FINAL_STATUSES:
                        continue
                    elif status == "failed" and not rerun_failed:
                        continue
                    else:
                        todo.append(k)  # pending, or failed and retried (stays 'failed' until it runs)
                else:
                    todo.append(k)
        return todo

    def mark_running(self, keys: Iterable[TaskKey], worker: str | None = None) -> None:
        """Mark pending rows ``running`` (one transaction); final rows are left alone."""
        started = now_iso()
        with self._tx() as c:
            c.executemany(
                "UPDATE tasks SET status='running', started_at=?, attempts=attempts+1, worker=? "
                "WHERE arch=? AND task=? AND dataset=? AND seed=? AND status NOT IN ('complete', 'diverged')",
                [(started, worker, k.arch, k.task, k.dataset, k.seed) for k in keys],
            )

    def record(self, outcomes: Sequence[Outcome], task_hashes: dict[TaskKey, str] | None = None) -> int:
        """Write outcomes in one transaction (idempotent; final rows are never overwritten).

        Args:
            outcomes: Worker outcomes.
            task_hashes: Hash per key for rows that do not exist yet (else the existing
                row's hash is kept).

        Returns:
            Number of rows written.
        """
        task_hashes = task_hashes or {}
        rows = []
        created = now_iso()
        for o in outcomes:
            if o.status not in ("complete", "diverged", "failed"):
                raise StoreError(f"outcome status must be complete, diverged or failed, got {o.status!r}")
            k = o.key
            rows.append((
                k.arch, k.task, k.dataset, k.seed, o.status, o.payload, o.error,
                task_hashes.get(k, ""), __version__, created, o.started_at, o.finished_at, o.seconds, o.worker,
            ))
        with self._tx() as c:
            before = c.total_changes
            c.executemany(
                "INSERT INTO tasks(arch, task, dataset, seed, status, payload, error, task_hash, version, "
                "created_at, started_at, finished_at, seconds, attempts, worker) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?) "
                "ON CONFLICT(arch, task, dataset, seed) DO UPDATE SET "
                "status=excluded.status, payload=excluded.payload, error=excluded.error, "
                "version=excluded.version, started_at=excluded.started_at, finished_at=excluded.finished_at, "
                "seconds=excluded.seconds, worker=excluded.worker "
                "WHERE tasks.status NOT IN ('complete', 'diverged')",
                rows,
            )
            return c.total_changes - before

    # ------------------------------------------------------------------ reading
    def rows(
        self, *, status: str | Sequence[str] | None = None, task: str | None = None
    ) -> list[StoredRow]:
        """Rows of the ``tasks`` table, ordered by key, optionally filtered."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM tasks"
        where, args = [], []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        if task is not None:
            where.append("task = ?")
            args.append(task)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY task, dataset, seed, arch"
        return [StoredRow(*r) for r in self._conn.execute(sql, args)]

    def counts(self) -> dict[str, int]:
        """``{status: rows}`` for every status (zeros included)."""
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self._conn.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status"):
            out[status] = n
        return out

    def counts_by_task(self) -> dict[str, dict[str, int]]:
        """``{task: {status: rows}}``."""
        out: dict[str, dict[str, int]] = {}
        for task, status, n in self._conn.execute("SELECT task, status, COUNT(*) FROM tasks GROUP BY task, status"):
            out.setdefault(task, dict.fromkeys(STATUSES, 0))[status] = n
        return out

"""The persistent, resumable result store: one SQLite file per study (WAL mode).

Schema (version :data:`SCHEMA_VERSION`):

* ``meta(key, value)``: ``schema_version``, ``study`` (name), ``config`` (the config JSON of
  the latest run), ``config_hash``, ``created_at``, ``trilemma_version``,
  ``last_run_started`` / ``last_run_finished``, and what readers need without running any
  code of the study (``space_name``; ``result_schema`` when the run declared one).
* ``tasks``: one row per ``(arch, task, dataset, seed)`` with ``status`` (pending, running,
  complete, failed, diverged), ``payload`` (canonical JSON), ``error`` (traceback),
  ``task_hash`` (hash of the settings the result depends on), ``version`` (trilemma version
  that computed it), ``created_at``, ``started_at``, ``finished_at`` (ISO 8601 UTC),
  ``seconds``, ``attempts``, ``worker`` and ``current`` (1 when the row belongs to the plan
  of the latest run; rows of an older config keep their results but are hidden from readers
  unless asked for).
* ``archs(arch, position, columns)``: each planned architecture's descriptive columns
  (topology …) as JSON, written at run time so that reading a store never needs the space's
  code (a plug-in space is never imported by ``status``, ``export`` or ``report``).

Every write is one transaction. Results are written with ``INSERT … ON CONFLICT DO UPDATE
… WHERE status NOT IN ('complete', 'diverged')``: a final row is never rewritten, so
writing the same outcome twice is harmless and a restarted study cannot change (or
duplicate) what an earlier run completed. Rows a killed run left ``running`` are put back to
``pending`` when the next run starts. Only one run may drive a store at a time (an
advisory ``flock`` on ``<store>.lock``, released by the kernel even on SIGKILL).

Opening never changes a file that is not a trilemma store (the schema is checked through a
read-only connection before anything is written), and a run that is refused (another
study's store, changed settings without ``--rerun-changed``) changes nothing: the checks
(:meth:`Store.check_owner`, :meth:`Store.plan_changes`) only read, and everything a run
writes before its first task happens in one transaction (:meth:`Store.begin_run`).
Stores of schema version 1 are read as they are and upgraded by the next run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trilemma import __version__
from trilemma.errors import StoreError
from trilemma.study._task_api import STATUSES, Outcome, TaskKey, now_iso

__all__ = ["Store", "StoredRow", "RunPlan", "SCHEMA_VERSION", "FINAL_STATUSES"]

logger = logging.getLogger(__name__)

#: Version of the table layout; older versions are read and upgraded by the next run,
#: newer ones are refused with a clear message.
SCHEMA_VERSION = 2
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
    current     INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (arch, task, dataset, seed)
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status);
CREATE TABLE IF NOT EXISTS archs (
    arch     TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    columns  TEXT NOT NULL
);
"""

#: Upgrades from version ``v`` to ``v + 1``.
_MIGRATIONS = {
    1: (
        "ALTER TABLE tasks ADD COLUMN current INTEGER NOT NULL DEFAULT 1",
        "CREATE TABLE IF NOT EXISTS archs (arch TEXT PRIMARY KEY, position INTEGER NOT NULL, columns TEXT NOT NULL)",
    ),
}

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
    current: bool = True

    @property
    def key(self) -> TaskKey:
        return TaskKey(self.arch, self.task, self.dataset, self.seed)

    def result(self) -> dict[str, Any]:
        """The decoded payload (empty when there is none)."""
        return json.loads(self.payload) if self.payload else {}


@dataclass
class RunPlan:
    """What a run will change in the store, computed without writing (:meth:`Store.plan_changes`).

    Attributes:
        todo: Keys to run, in plan order.
        new: ``(key, hash)`` of planned tasks the store does not hold yet.
        reset: ``(key, hash)`` of rows computed under other settings, to recompute.
        planned: Every planned key.
    """

    todo: list[TaskKey] = field(default_factory=list)
    new: list[tuple[TaskKey, str]] = field(default_factory=list)
    reset: list[tuple[TaskKey, str]] = field(default_factory=list)
    planned: list[TaskKey] = field(default_factory=list)


class Store:
    """A study's SQLite store.

    Args:
        path: The ``.sqlite`` file.
        create: Create the file (and its folder) if missing; otherwise a missing file is an error.
        readonly: Open without writing (no schema creation, no WAL switch, no upgrade).

    Raises:
        StoreError: The file is missing (and ``create`` is false), is not a trilemma store
            (the file is then left untouched), or has a newer schema version.
        OSError: The folder of a new store cannot be created.
    """

    def __init__(self, path: str | Path, *, create: bool = False, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if self.path.is_dir():
            raise StoreError(f"{str(self.path)!r} is a folder, not a study store")
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if not self.path.exists():
            if not create or readonly:
                raise StoreError(
                    f"no study store at {str(self.path)!r}; run the study first (trilemma run STUDY.toml)"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif fresh and (readonly or not create):
            raise StoreError(f"{str(self.path)!r} is an empty file, not a trilemma study store")
        try:
            if not fresh:
                self._version = self._inspect()  # read-only: a foreign file stays byte-identical
            if readonly:
                uri = f"file:{self.path.resolve()}?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
            else:
                self._conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
                if fresh:
                    self._create()
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{str(self.path)!r} is not a readable trilemma study store: {err}") from None
        self._has_current = self._column_exists("tasks", "current")

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

    def _inspect(self) -> int:
        """The schema version of an existing file, checked through a read-only connection.

        Raises:
            StoreError: Not an SQLite file, not a trilemma store, or a newer schema.
        """
        uri = f"file:{self.path.resolve()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                raise StoreError(f"{str(self.path)!r} is an empty database, not a trilemma study store")
            if "meta" not in tables or "tasks" not in tables:
                raise StoreError(
                    f"{str(self.path)!r} is an SQLite file but not a trilemma study store "
                    f"(tables: {', '.join(sorted(tables))}); it was left unchanged"
                )
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        finally:
            conn.close()
        found = row[0] if row else "missing"
        if not str(found).isdigit() or not 1 <= int(found) <= SCHEMA_VERSION:
            raise StoreError(
                f"study store {str(self.path)!r} has schema version {found}, but trilemma {__version__} "
                f"reads schema versions 1 to {SCHEMA_VERSION}. Read it with the trilemma version that wrote it, "
                f"or move the file away to start the study afresh."
            )
        return int(found)

    def _create(self) -> None:
        with self._tx() as c:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            c.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("schema_version", str(SCHEMA_VERSION)), ("created_at", now_iso()), ("trilemma_version", __version__),
            ])
        self._version = SCHEMA_VERSION

    def _column_exists(self, table: str, column: str) -> bool:
        return any(r[1] == column for r in self._conn.execute(f"PRAGMA table_info({table})"))

    def _migrate(self, c: sqlite3.Connection) -> None:
        """Upgrade an older schema in place (inside the caller's transaction)."""
        version = self._version
        while version < SCHEMA_VERSION:
            for statement in _MIGRATIONS[version]:
                c.execute(statement)
            version += 1
        if version != self._version:
            c.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
            logger.info("upgraded study store %s from schema version %d to %d", self.path, self._version, version)
            self._version = version
            self._has_current = True

    @property
    def schema_version(self) -> int:
        """The schema version of the file."""
        return self._version

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

    def is_locked(self) -> bool:
        """Whether a run holds this store's lock right now (a live ``trilemma run``)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return False
        lock_path = self.path.with_name(self.path.name + ".lock")
        if not lock_path.exists():
            return False
        try:
            fd = os.open(lock_path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also releases the shared lock just taken
        return False

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
    def check_owner(self, study: str) -> None:
        """Refuse a store that belongs to another study (reads only).

        Raises:
            StoreError: The store's ``study`` meta names another study.
        """
        owner = self.meta().get("study")
        if owner is not None and owner != study:
            raise StoreError(
                f"store {str(self.path)!r} belongs to study {owner!r}, not {study!r}; give this study its own store"
            )

    def plan_changes(
        self,
        planned: Sequence[tuple[TaskKey, str]],
        *,
        rerun_failed: bool = True,
        rerun_changed: bool = False,
    ) -> RunPlan:
        """What a run of ``planned`` must compute, without writing anything.

        Args:
            planned: ``(key, task_hash)`` of every task of the study.
            rerun_failed: Queue failed tasks again.
            rerun_changed: Queue final rows whose ``task_hash`` differs from the plan's
                (their settings changed); otherwise such rows are an error.

        Returns:
            The :class:`RunPlan` to pass to :meth:`begin_run`.

        Raises:
            StoreError: Final rows were computed under other settings and ``rerun_changed``
                is false; the message says which and how to proceed. The store is unchanged.
        """
        existing = {
            TaskKey(r[0], r[1], r[2], r[3]): (r[4], r[5])
            for r in self._conn.execute("SELECT arch, task, dataset, seed, status, task_hash FROM tasks")
        }
        out = RunPlan(planned=[k for k, _ in planned])
        stale_final = []
        for k, h in planned:
            if k not in existing:
                out.new.append((k, h))
                out.todo.append(k)
                continue
            status, old_hash = existing[k]
            if old_hash != h:
                if status in FINAL_STATUSES:
                    stale_final.append(k)
                out.reset.append((k, h))
                out.todo.append(k)
            elif status in FINAL_STATUSES or (status == "failed" and not rerun_failed):
                continue
            else:
                out.todo.append(k)  # pending, running (a killed run), or failed and retried
        if stale_final and not rerun_changed:
            tasks = sorted({k.task for k in stale_final})
            raise StoreError(
                f"{len(stale_final)} completed result(s) in {str(self.path)!r} (task kind(s) {', '.join(tasks)}; "
                f"e.g. {stale_final[0]}) were computed with other settings than this config. "
                f"Re-run with --rerun-changed (run_study(..., rerun_changed=True)) to recompute them, "
                f"or give the study another name or store. Nothing was changed."
            )
        return out

    def begin_run(
        self,
        plan: RunPlan,
        meta: Mapping[str, str],
        arch_columns: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> int:
        """Everything a run writes before its first task, in one transaction.

        Upgrades an older schema, sets ``meta``, puts rows a killed run left ``running`` back
        to ``pending``, inserts the new tasks, resets rows whose settings changed, marks the
        planned rows current (and every other row not current), and records each planned
        architecture's descriptive columns.

        Returns:
            The number of rows put back from ``running`` to ``pending``.
        """
        created = now_iso()
        with self._tx() as c:
            self._migrate(c)
            c.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                list(meta.items()),
            )
            requeued = c.execute("UPDATE tasks SET status='pending' WHERE status='running'").rowcount
            c.executemany(
                "INSERT INTO tasks(arch, task, dataset, seed, status, task_hash, created_at) "
                "VALUES (?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT DO NOTHING",
                [(k.arch, k.task, k.dataset, k.seed, h, created) for k, h in plan.new],
            )
            c.executemany(
                "UPDATE tasks SET status='pending', payload=NULL, error=NULL, task_hash=?, "
                "started_at=NULL, finished_at=NULL, seconds=NULL, worker=NULL "
                "WHERE arch=? AND task=? AND dataset=? AND seed=?",
                [(h, k.arch, k.task, k.dataset, k.seed) for k, h in plan.reset],
            )
            c.execute("UPDATE tasks SET current=0")
            c.executemany(
                "UPDATE tasks SET current=1 WHERE arch=? AND task=? AND dataset=? AND seed=?",
                [(k.arch, k.task, k.dataset, k.seed) for k in plan.planned],
            )
            if arch_columns is not None:
                c.executemany(
                    "INSERT INTO archs(arch, position, columns) VALUES (?, ?, ?) ON CONFLICT(arch) DO UPDATE "
                    "SET position=excluded.position, columns=excluded.columns",
                    [(a, i, json.dumps(dict(cols), sort_keys=True, allow_nan=False, default=str))
                     for i, (a, cols) in enumerate(arch_columns.items())],
                )
        if requeued:
            logger.info("re-queued %d task(s) left running by an interrupted run", requeued)
        return requeued

    def sync_plan(
        self,
        planned: Sequence[tuple[TaskKey, str]],
        *,
        rerun_failed: bool = True,
        rerun_changed: bool = False,
    ) -> list[TaskKey]:
        """:meth:`plan_changes` then :meth:`begin_run` without meta; returns the keys to run."""
        plan = self.plan_changes(planned, rerun_failed=rerun_failed, rerun_changed=rerun_changed)
        self.begin_run(plan, {})
        return plan.todo

    def requeue_running(self) -> int:
        """Put rows left ``running`` (by a run that died) back to ``pending``; returns how many."""
        with self._tx() as c:
            n = c.execute("UPDATE tasks SET status='pending' WHERE status='running'").rowcount
        if n:
            logger.info("re-queued %d task(s) left running by an interrupted run", n)
        return n

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
    def _where(self, include_stale: bool, status: str | Sequence[str] | None = None,
               task: str | None = None) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if not include_stale and self._has_current:
            where.append("current = 1")
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        if task is not None:
            where.append("task = ?")
            args.append(task)
        return (" WHERE " + " AND ".join(where)) if where else "", args

    def rows(
        self, *, status: str | Sequence[str] | None = None, task: str | None = None, include_stale: bool = False
    ) -> list[StoredRow]:
        """Rows of the ``tasks`` table, ordered by key, optionally filtered.

        Args:
            status: Keep rows of this status (or these statuses).
            task: Keep rows of this task kind.
            include_stale: Also rows that are not in the latest run's plan (an older config's).
        """
        current = "current" if self._has_current else "1"
        where, args = self._where(include_stale, status, task)
        sql = f"SELECT {', '.join(_COLUMNS)}, {current} FROM tasks{where} ORDER BY task, dataset, seed, arch"
        out = []
        for r in self._conn.execute(sql, args):
            row = dict(zip(_COLUMNS, r[:-1], strict=True))
            out.append(StoredRow(**row, current=bool(r[-1])))
        return out

    def counts(self, *, include_stale: bool = False) -> dict[str, int]:
        """``{status: rows}`` for every status (zeros included)."""
        out = dict.fromkeys(STATUSES, 0)
        where, args = self._where(include_stale)
        for status, n in self._conn.execute(f"SELECT status, COUNT(*) FROM tasks{where} GROUP BY status", args):
            out[status] = n
        return out

    def counts_by_task(self, *, include_stale: bool = False) -> dict[str, dict[str, int]]:
        """``{task: {status: rows}}``."""
        out: dict[str, dict[str, int]] = {}
        where, args = self._where(include_stale)
        for task, status, n in self._conn.execute(
            f"SELECT task, status, COUNT(*) FROM tasks{where} GROUP BY task, status", args
        ):
            out.setdefault(task, dict.fromkeys(STATUSES, 0))[status] = n
        return out

    def stale_count(self) -> int:
        """Rows kept from an older config (not in the latest run's plan)."""
        if not self._has_current:
            return 0
        return int(self._conn.execute("SELECT COUNT(*) FROM tasks WHERE current = 0").fetchone()[0])

    def arch_columns(self) -> dict[str, dict[str, Any]] | None:
        """Each architecture's descriptive columns recorded at run time, in plan order.

        Returns:
            ``{arch: {column: value}}``, or ``None`` for a store written before they were
            recorded (schema version 1).
        """
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "archs" not in tables:
            return None
        rows = self._conn.execute("SELECT arch, columns FROM archs ORDER BY position").fetchall()
        return {a: json.loads(cols) for a, cols in rows}

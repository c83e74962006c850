"""The SQLite study store: round trip, idempotent final rows, re-queueing, schema and lock checks."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from trilemma.errors import StoreError
from trilemma.study import SCHEMA_VERSION, Outcome, Store, TaskKey
from trilemma.study._tasks import encode_payload, now_iso


def _outcome(key: TaskKey, status: str = "complete", payload: dict | None = None, error: str | None = None) -> Outcome:
    t = now_iso()
    body = None if status == "failed" else encode_payload(payload or {"v": 1.0})
    return Outcome(key, status, body, error, t, t, 0.25, "host:1")


KEYS = [TaskKey(a, "probe", "digits", s) for a in ("2_02_002", "1_01_222") for s in (0, 1)]


def test_new_store_is_wal_with_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "s.sqlite"
    with Store(path, create=True) as st:
        assert st.meta()["schema_version"] == str(SCHEMA_VERSION)
        mode = st._conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        assert st.counts() == {"pending": 0, "running": 0, "complete": 0, "failed": 0, "diverged": 0}
    with pytest.raises(StoreError, match="no study store"):
        Store(tmp_path / "missing.sqlite")


def test_round_trip_of_payloads_and_fields(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    payload = {"a": 1.5, "n": 3, "s": "x", "none": None, "nan": float("nan"), "curves": {"loss": [1.0, 0.5]},
               "info": {"width": 8}}
    with Store(path, create=True) as st:
        todo = st.sync_plan([(k, "h1") for k in KEYS])
        assert todo == KEYS
        st.mark_running(KEYS[:2])
        assert st.counts()["running"] == 2
        outs = [_outcome(KEYS[0], payload=payload), _outcome(KEYS[1], "failed", error="Traceback\nValueError: bad"),
                _outcome(KEYS[2], "diverged")]
        assert st.record(outs) == 3
    with Store(path, readonly=True) as st:
        rows = {r.key: r for r in st.rows()}
        assert len(rows) == 4
        r0 = rows[KEYS[0]]
        assert r0.status == "complete" and r0.task_hash == "h1" and r0.attempts == 1 and r0.seconds == 0.25
        assert r0.result() == {**payload, "nan": None}  # NaN is stored as null, never silently as a number
        assert json.loads(r0.payload) == r0.result()
        assert rows[KEYS[1]].status == "failed" and rows[KEYS[1]].error.endswith("ValueError: bad")
        assert rows[KEYS[1]].payload is None
        assert rows[KEYS[2]].status == "diverged"
        assert rows[KEYS[3]].status == "pending"
        assert st.counts() == {"pending": 1, "running": 0, "complete": 1, "failed": 1, "diverged": 1}
        with pytest.raises(StoreError, match="read-only"):
            st.set_meta(x="1")


def test_final_rows_are_never_rewritten(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite", create=True) as st:
        st.sync_plan([(k, "h") for k in KEYS])
        first = _outcome(KEYS[0], payload={"v": 1.0})
        st.record([first])
        before = st.rows(status="complete")[0]
        # the same task reported again (e.g. by a run that raced a kill) changes nothing
        assert st.record([_outcome(KEYS[0], payload={"v": 2.0})]) == 0
        st.mark_running([KEYS[0]])
        assert st.rows(status="complete") == [before]
        # a failed row can be overwritten by a later success
        st.record([_outcome(KEYS[1], "failed", error="x")])
        st.record([_outcome(KEYS[1], payload={"v": 3.0})])
        assert {r.key: r.result() for r in st.rows(status="complete")}[KEYS[1]] == {"v": 3.0}


def test_sync_plan_skips_final_requeues_running_and_failed(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite", create=True) as st:
        st.sync_plan([(k, "h") for k in KEYS])
        st.record([_outcome(KEYS[0]), _outcome(KEYS[1], "failed", error="x"), _outcome(KEYS[2], "diverged")])
        st.mark_running([KEYS[3]])
        assert st.requeue_running() == 1
        assert st.sync_plan([(k, "h") for k in KEYS]) == [KEYS[1], KEYS[3]]
        assert st.sync_plan([(k, "h") for k in KEYS], rerun_failed=False) == [KEYS[3]]
        # planned keys are inserted once, however often the plan is synced
        assert len(st.rows()) == 4
        extra = TaskKey("2_22_222", "probe", "digits", 0)
        assert st.sync_plan([(k, "h") for k in [*KEYS, extra]])[-1] == extra
        assert len(st.rows()) == 5


def test_changed_settings_are_refused_unless_asked(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite", create=True) as st:
        st.sync_plan([(k, "h") for k in KEYS])
        st.record([_outcome(KEYS[0])])
        with pytest.raises(StoreError, match=r"other settings.*--rerun-changed"):
            st.sync_plan([(k, "h2") for k in KEYS])
        todo = st.sync_plan([(k, "h2") for k in KEYS], rerun_changed=True)
        assert todo == KEYS
        assert {r.task_hash for r in st.rows()} == {"h2"}
        assert st.counts()["complete"] == 0


def test_schema_mismatch_and_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path, create=True).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match=rf"schema version 999.*reads schema versions 1 to {SCHEMA_VERSION}"):
        Store(path)
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a trilemma study store"):
        Store(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="not a readable trilemma study store"):
        Store(junk)


def test_run_lock_is_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path, create=True) as a, Store(path) as b:
        with a.run_lock():
            with pytest.raises(StoreError, match="another running study"):
                with b.run_lock():
                    pass
        with b.run_lock():  # released when the first run ends
            pass


@pytest.mark.parametrize("create", [False, True])
def test_opening_a_foreign_sqlite_file_leaves_it_byte_identical(tmp_path: Path, create: bool) -> None:
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    con.close()
    before = other.read_bytes()
    with pytest.raises(StoreError, match="not a trilemma study store"):
        Store(other, create=create)
    assert other.read_bytes() == before  # in particular not switched to WAL
    assert not (tmp_path / "other.sqlite-wal").exists()


def _v1_store(path: Path) -> None:
    """A store as schema version 1 wrote it (no ``current`` column, no ``archs`` table)."""
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE tasks (arch TEXT NOT NULL, task TEXT NOT NULL, dataset TEXT NOT NULL, seed INTEGER NOT NULL,
            status TEXT NOT NULL, payload TEXT, error TEXT, task_hash TEXT NOT NULL, version TEXT,
            created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, seconds REAL,
            attempts INTEGER NOT NULL DEFAULT 0, worker TEXT, PRIMARY KEY (arch, task, dataset, seed));
        INSERT INTO meta VALUES ('schema_version', '1'), ('study', 'old');
        INSERT INTO tasks VALUES ('a', 'probe', '', 0, 'complete', '{"probe_0": 0.5}', NULL, 'h', '0.1.0',
            '2026-01-01', NULL, NULL, 1.0, 1, NULL);
    """)
    con.commit()
    con.close()


def test_version_1_stores_are_read_as_they_are_and_upgraded_by_a_run(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    _v1_store(path)
    before = path.read_bytes()
    with Store(path, readonly=True) as st:
        assert st.schema_version == 1 and [r.arch for r in st.rows()] == ["a"]
        assert st.arch_columns() is None
    assert path.read_bytes() == before
    with Store(path, create=True) as st:
        plan = st.plan_changes([(TaskKey("a", "probe", "", 0), "h"), (TaskKey("b", "probe", "", 0), "h")])
        assert plan.todo == [TaskKey("b", "probe", "", 0)]
        st.begin_run(plan, {"study": "old"}, {"a": {"x": 1}, "b": {"x": 2}})
        assert st.schema_version == SCHEMA_VERSION
        assert st.arch_columns() == {"a": {"x": 1}, "b": {"x": 2}}
        assert len(st.rows()) == 2


def test_rows_outside_the_latest_plan_are_hidden_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    a, b = TaskKey("a", "probe", "", 0), TaskKey("b", "probe", "", 0)
    with Store(path, create=True) as st:
        st.begin_run(st.plan_changes([(a, "h"), (b, "h")]), {})
        st.begin_run(st.plan_changes([(a, "h")]), {})  # the next config drops b
        assert [r.arch for r in st.rows()] == ["a"]
        assert [r.arch for r in st.rows(include_stale=True)] == ["a", "b"]
        assert st.counts()["pending"] == 1 and st.counts(include_stale=True)["pending"] == 2
        assert st.stale_count() == 1


def test_a_refused_plan_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    key = TaskKey("a", "probe", "", 0)
    with Store(path, create=True) as st:
        st.begin_run(st.plan_changes([(key, "h1")]), {"config": "first"})
        st.record([Outcome(key, "complete", "{}", None, "t", "t", 1.0, "w")])
        meta, rows = st.meta(), st.rows()
        with pytest.raises(StoreError, match="other settings.*Nothing was changed"):
            st.plan_changes([(key, "h2")])
        assert st.meta() == meta and st.rows() == rows

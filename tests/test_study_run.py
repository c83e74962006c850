"""Running studies with the torch-free ``probe`` task kind: executors, failures, resume, exports, CLI."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from trilemma.commands.study import add_commands
from trilemma.errors import StoreError
from trilemma.study import (
    Store,
    TaskKey,
    export_study,
    load_results,
    plan_study,
    run_study,
    study_status,
    to_nb_suite_zero,
)
from trilemma.study.tasks import ProbeTask

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _config(tmp_path: Path, name: str = "p", **probe: object) -> dict:
    return {
        "name": name,
        "store": str(tmp_path / f"{name}.sqlite"),
        "seeds": [0, 1],
        "space": {"nodes": 2},  # 27 cells
        "tasks": {"probe": {"values": 3, **probe}},
        "executor": {"kind": "serial"},
    }


def _payloads(path: Path) -> dict[TaskKey, dict]:
    with Store(path, readonly=True) as st:
        return {r.key: {k: v for k, v in r.result().items() if k != "extras"} for r in st.rows()}


def test_serial_run_matches_reference_values(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    summary = run_study(cfg)
    assert (summary.total, summary.ran, summary.complete, summary.failed) == (54, 54, 54, 0)
    assert summary.counts["complete"] == 54
    for key, payload in _payloads(Path(cfg["store"])).items():
        assert payload == ProbeTask.expected(key.arch, key.dataset, key.seed, 3)
    # a second run finds everything done and changes nothing
    with Store(cfg["store"], readonly=True) as st:
        before = st.rows()
    again = run_study(cfg)
    assert (again.skipped, again.ran) == (54, 0)
    with Store(cfg["store"], readonly=True) as st:
        assert st.rows() == before


def test_failed_task_is_recorded_while_others_complete(tmp_path: Path) -> None:
    cfg = _config(tmp_path, fail=["2_02"], diverge=["1_11"])
    summary = run_study(cfg)
    assert summary.failed == 2 and summary.diverged == 2 and summary.complete == 50
    assert [str(k) for k, _ in summary.failures] == ["probe 2_02 seed 0", "probe 2_02 seed 1"]
    assert all(line == "RuntimeError: probe: planted failure for 2_02" for _, line in summary.failures)
    with Store(cfg["store"], readonly=True) as st:
        failed = st.rows(status="failed")
        assert {r.arch for r in failed} == {"2_02"}
        assert all("Traceback" in r.error and "planted failure" in r.error for r in failed)
        assert all(r.payload is None for r in failed)
        complete_before = st.rows(status=("complete", "diverged"))
    status = study_status(cfg["store"])
    assert status.counts == {"pending": 0, "running": 0, "complete": 50, "failed": 2, "diverged": 2}
    assert not status.done and len(status.failures) == 2
    # failed tasks are retried on the next run (and fail again); final rows stay as they were
    again = run_study(cfg)
    assert again.ran == 2 and again.failed == 2
    with Store(cfg["store"], readonly=True) as st:
        assert st.rows(status=("complete", "diverged")) == complete_before
        assert {r.attempts for r in st.rows(status="failed")} == {2}
    # fixed: the retry completes them
    fixed = _config(tmp_path, diverge=["1_11"])
    assert run_study(fixed).complete == 2
    assert study_status(cfg["store"]).counts["failed"] == 0


def test_local_processes_and_batched_jobs_match_serial(tmp_path: Path) -> None:
    serial = _config(tmp_path, name="serial")
    run_study(serial)
    local = {**_config(tmp_path, name="local", batched=True, group_size=5),
             "executor": {"kind": "local", "n_workers": 2}}
    summary = run_study(local)
    assert summary.complete == 54 and "local executor, 2 worker(s)" in summary.executor
    assert _payloads(Path(local["store"])) == _payloads(Path(serial["store"]))
    with Store(local["store"], readonly=True) as st:
        pids = {r.result()["extras"]["pid"] for r in st.rows()}
    assert os.getpid() not in pids  # computed in worker processes


def test_jobs_group_batched_tasks() -> None:
    from trilemma.study._runner import make_jobs

    plan = plan_study({"name": "g", "space": {"nodes": 2}, "seeds": [0, 1],
                       "tasks": {"probe": {"batched": True, "group_size": 10}}})
    jobs = make_jobs(plan, [k for k, _ in plan.tasks], n_workers=2, threads=1)
    assert all(j.batched for j in jobs)
    assert sorted(len(j.archs) for j in jobs) == [9, 9, 9, 9, 9, 9]  # 27 per seed split evenly into 3
    assert sorted(k for j in jobs for k in j.keys()) == sorted(k for k, _ in plan.tasks)


def test_closed_form_jobs_come_first() -> None:
    """Theory (seconds for a whole space) is submitted before training and measures, so a
    study's closed-form columns are in the store as soon as the run starts."""
    from trilemma.study._runner import make_jobs

    plan = plan_study({"name": "o", "space": {"nodes": 2}, "seeds": [0], "data": {"names": ["digits"]},
                       "measures": {"names": ["naswot"]}, "training": {"epochs": 1}, "theory": {}})
    jobs = make_jobs(plan, [k for k, _ in plan.tasks], n_workers=2, threads=1)
    kinds = [j.task for j in jobs]
    assert set(kinds) == {"theory", "measures", "train"}
    first_other = min(i for i, k in enumerate(kinds) if k != "theory")
    assert all(k == "theory" for k in kinds[:first_other]) and "theory" not in kinds[first_other:]
    assert kinds.index("train") < kinds.index("measures")  # long jobs before short ones


_KILL_STUDY = """
name = "killme"
store = "{store}"
[space]
nodes = 2
[tasks.probe]
sleep = 0.12
values = 2
[executor]
kind = "{kind}"
n_workers = 2
"""


def _complete_rows(path: Path) -> dict[tuple, tuple]:
    if not path.exists():
        return {}
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if not con.execute("SELECT 1 FROM sqlite_master WHERE name='tasks'").fetchone():
            return {}  # the store is being created
        rows = con.execute(
            "SELECT arch, task, dataset, seed, payload, created_at, started_at, finished_at, seconds, worker "
            "FROM tasks WHERE status='complete'"
        ).fetchall()
    finally:
        con.close()
    return {r[:4]: r[4:] for r in rows}


_RUN = "import sys; from trilemma.study import run_study; print(run_study(sys.argv[1]))"


def test_resume_after_sigkill(tmp_path: Path) -> None:
    store = tmp_path / "killme.sqlite"
    toml = tmp_path / "killme.toml"
    toml.write_text(_KILL_STUDY.format(store=store, kind="local"))
    cmd = [sys.executable, "-c", _RUN, str(toml)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if store.exists() and len(_complete_rows(store)) >= 8:
                break
            if proc.poll() is not None:
                pytest.fail(f"study ended before it could be killed: {proc.stderr.read().decode()}")
            time.sleep(0.05)
        else:
            pytest.fail("study made no progress")
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-run
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    before = _complete_rows(store)
    assert 8 <= len(before) < 27, "the kill should land mid-run"
    with Store(store, readonly=True) as st:
        unfinished = st.counts()
    assert unfinished["pending"] + unfinished["running"] == 27 - len(before)

    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "study 'killme': 27 tasks;" in done.stdout
    after = _complete_rows(store)
    assert len(after) == 27  # exactly one complete row per task (the key is the primary key)
    for key, row in before.items():
        assert after[key] == row  # byte-identical payload and timestamps
    with Store(store, readonly=True) as st:
        rows = st.rows()
    assert len(rows) == 27 and {r.status for r in rows} == {"complete"}
    for r in rows:
        assert {k: v for k, v in r.result().items() if k != "extras"} == ProbeTask.expected(r.arch, "", 0, 2)


def test_interrupt_while_the_driver_records_does_not_wait_for_queued_jobs() -> None:
    """Ctrl-C can land while the driver writes a finished job (outside the executor's wait):
    leaving the executor with an exception stops the workers at once (``Executor.abort``)."""
    from trilemma.study._config import ExecutorConfig
    from trilemma.study._executors import get_executor
    from trilemma.study._runner import make_jobs

    plan = plan_study({"name": "q", "space": {"nodes": 2}, "tasks": {"probe": {"sleep": 3.0}}})
    ex = get_executor("local")(ExecutorConfig(kind="local", n_workers=2, threads_per_worker=1))
    jobs = make_jobs(plan, [k for k, _ in plan.tasks], n_workers=2, threads=1)
    assert len(jobs) >= 20  # about 40 s of work for two workers, each job 3 s
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with ex:
            for _ in ex.run(jobs):
                raise KeyboardInterrupt  # as if the signal arrived in the driver's own code
    # workers start (seconds) and the first job takes 3 s; running the queue dry takes 40 s more
    assert time.monotonic() - t0 < 25, "leaving the executor on an interrupt ran the queued jobs"


def test_ctrl_c_stops_promptly_and_requeues(tmp_path: Path) -> None:
    store = tmp_path / "killme.sqlite"
    toml = tmp_path / "killme.toml"
    toml.write_text(_KILL_STUDY.format(store=store, kind="local").replace("sleep = 0.12", "sleep = 2.0"))
    # a shell without job control starts background commands with SIGINT ignored, and Python keeps
    # an inherited SIG_IGN: give the driver the default disposition, as a terminal would
    proc = subprocess.Popen([sys.executable, "-c", _RUN, str(toml)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_complete_rows(store)) < 2:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=30)
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert stopped_in < 10, "Ctrl-C must not wait for running jobs"
    with Store(store, readonly=True) as st:
        counts = st.counts()
    assert counts["running"] == 0 and counts["pending"] > 0 and counts["complete"] >= 2


def test_load_results_table(tmp_path: Path) -> None:
    cfg = _config(tmp_path, fail=["2_02"])
    run_study(cfg)
    df = load_results(cfg["store"])
    assert len(df) == 54
    assert list(df.columns[:3]) == ["arch", "dataset", "seed"]
    for col in ("index", "P", "mean_depth", "eff_width", "sum_depth", "trainable", "group",
                "probe_0", "probe_1", "probe_2", "probe_status", "probe_seconds", "status"):
        assert col in df.columns, col
    row = df[(df.arch == "2_12") & (df.seed == 1)].iloc[0]
    assert row["P"] == 2 and row["probe_1"] == ProbeTask.expected("2_12", "", 1, 3)["probe_1"]
    failed = df[df.arch == "2_02"]
    assert set(failed["status"]) == {"failed"} and failed["probe_0"].isna().all()
    assert (df[df.arch != "2_02"]["status"] == "complete").all()


def test_export_json_loads_back_and_matches_store(tmp_path: Path) -> None:
    cfg = {**_config(tmp_path), "seeds": [0]}
    run_study(cfg)
    out = export_study(cfg["store"], "json", tmp_path / "nbsz.json")
    data = json.loads(out.read_text())
    assert data == to_nb_suite_zero(cfg["store"])
    assert list(data) == ["none"] and len(data["none"]) == 27
    with Store(cfg["store"], readonly=True) as st:
        for r in st.rows():
            entry = data["none"][r.arch]
            payload = r.result()
            for k in ("probe_0", "probe_1", "probe_2"):
                assert entry[k]["score"] == payload[k]
                assert entry[k]["time"] == pytest.approx(r.seconds)
            assert entry["id"] == int(r.arch.replace("_", ""), 3)
    csv = export_study(cfg["store"], "csv", tmp_path / "r.csv")
    import pandas as pd

    back = pd.read_csv(csv)
    assert len(back) == 27 and back["probe_0"].tolist() == pytest.approx(load_results(cfg["store"])["probe_0"].tolist())
    pq = export_study(cfg["store"], "parquet", tmp_path / "r.parquet")
    assert pd.read_parquet(pq)["arch"].tolist() == back["arch"].tolist()


def test_store_of_another_study_is_refused(tmp_path: Path) -> None:
    cfg = _config(tmp_path, name="a")
    run_study({**cfg, "space": {"nodes": 1}})
    with pytest.raises(StoreError, match="belongs to study 'a'"):
        run_study({**cfg, "name": "b", "space": {"nodes": 1}})
    with pytest.raises(StoreError, match="other settings"):
        run_study({**cfg, "space": {"nodes": 1}, "tasks": {"probe": {"values": 2}}})
    assert run_study({**cfg, "space": {"nodes": 1}, "tasks": {"probe": {"values": 2}}},
                     rerun_changed=True).ran == 6


def _cli(argv: list[str]) -> int:
    """The study commands on a bare parser (``trilemma.cli`` imports every sub-package's CLI)."""
    parser = argparse.ArgumentParser(prog="trilemma")
    add_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_run_status_export(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    toml = tmp_path / "cli.toml"
    toml.write_text(textwrap.dedent("""
        name = "cli"
        [space]
        nodes = 2
        [tasks.probe]
        fail = ["0_00"]
        [executor]
        kind = "serial"
    """))
    assert _cli(["run", str(toml), "--every", "0"]) == 1  # a failure → exit code 1
    out = capsys.readouterr().out
    assert "27/27 tasks (100%)" in out and "tasks/s" in out and "ETA" in out
    assert "store: runs/cli.sqlite" in out and "failed: probe 0_00 seed 0" in out
    assert (tmp_path / "runs" / "cli.sqlite").exists()
    assert _cli(["status", "cli"]) == 0  # by name, found in runs/
    out = capsys.readouterr().out
    assert "probe" in out and "26" in out and "RuntimeError: probe: planted failure for 0_00" in out
    assert _cli(["export", str(toml), "--format", "csv"]) == 0
    assert (tmp_path / "runs" / "cli.csv").exists()
    with pytest.raises(StoreError, match="no study store for 'nothing_here'"):
        _cli(["status", "nothing_here"])
    assert _cli(["run", str(toml), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "26 already done, 1 run now" in out and "tasks/s" not in out
    assert "trilemma report " + str(toml) in out  # the default store: report the study
    # with --store, every hint names that store (reporting the .toml would read the default one)
    assert _cli(["run", str(toml), "--quiet", "--store", "elsewhere.sqlite"]) == 1
    out = capsys.readouterr().out
    assert "trilemma report elsewhere.sqlite" in out and str(toml) not in out.split("results:")[-1]


def test_progress_renderers() -> None:
    import io

    from rich.console import Console

    from trilemma.commands.study import _PlainProgress, _RichProgress
    from trilemma.study import Progress

    events = [Progress(60, 6, 54, k, k - 1 if k else 0, 1 if k else 0, 0, 2.0 * k, jobs_done=k // 9)
              for k in (0, 27, 54)]
    assert events[1].rate == pytest.approx(0.5) and events[1].eta == pytest.approx(54.0)
    assert events[0].eta is None
    # no estimate from a single job, nor before a tenth of the tasks are done
    assert Progress(60, 6, 54, 27, 27, 0, 0, 54.0, jobs_done=1).eta is None
    assert Progress(600, 0, 600, 5, 5, 0, 0, 1.0, jobs_done=5).eta is None
    buf = io.StringIO()
    plain = _PlainProgress(buf, every=3600)
    for e in events:
        plain(e)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2  # the first and the final line; the middle one is within `every`
    assert lines[-1].startswith("[1:48] 54/54 tasks (100%) | 53 complete, 0 diverged, 1 failed | 0.50 tasks/s")
    assert "6 already done" in lines[-1]
    out = io.StringIO()
    bar = _RichProgress(Console(file=out, force_terminal=True, width=160))
    for e in events:
        bar(e)
    bar.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # without the terminal codes
    assert "54/54" in text and "ETA 0:00" in text and "53✓" in text and "0.50/s" in text and "ETA" in text and "6 of 60 tasks already done" in text


def test_plain_progress_prints_held_states_and_a_heartbeat() -> None:
    """A state held back by the rate limit is printed once the interval is over, and while no job
    finishes (a long training job) the latest state is repeated with the elapsed time."""
    import io

    from trilemma.commands.study import _PlainProgress
    from trilemma.study import Progress

    buf = io.StringIO()
    plain = _PlainProgress(buf, every=0.2, heartbeat=0.5)
    try:
        plain(Progress(1623, 0, 1623, 0, 0, 0, 0, 0.0))
        plain(Progress(1623, 0, 1623, 541, 541, 0, 0, 1.0, jobs_done=1))  # within `every`: held back
        assert buf.getvalue().count("\n") == 1
        deadline = time.monotonic() + 10
        while "541/1623" not in buf.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "541/1623 tasks (33%) | 541 complete" in buf.getvalue()
        while "no job finished for" not in buf.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        beat = [ln for ln in buf.getvalue().splitlines() if "no job finished for" in ln]
        assert beat and re.match(r"\[0:0[1-9]\] 541/1623", beat[0])  # elapsed moves on: 1.0 s + the wait
    finally:
        plain.close()
    n = buf.getvalue().count("\n")
    time.sleep(0.7)
    assert buf.getvalue().count("\n") == n  # closed: no more lines
    # the heartbeat also runs while the first job is still running (nothing held back yet)
    first = io.StringIO()
    plain = _PlainProgress(first, every=0.1, heartbeat=0.3)
    try:
        plain(Progress(10, 0, 10, 0, 0, 0, 0, 0.0))
        deadline = time.monotonic() + 10
        while "no job finished for" not in first.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "0/10 tasks (0%)" in first.getvalue().splitlines()[-1] and "no job finished for" in first.getvalue()
    finally:
        plain.close()


def test_user_defined_space_from_file(tmp_path: Path) -> None:
    plan = plan_study(EXAMPLES / "custom_space.toml")
    assert plan.archs == [f"mlp_d{d}_x{f}" for d in (1, 2, 3) for f in ("0.5", "1", "2")]
    assert plan.space.describe("mlp_d2_x0.5") == {"depth": 2, "width_factor": 0.5}
    cfg = {"name": "custom", "store": str(tmp_path / "c.sqlite"),
           "space": {"name": str(EXAMPLES / "custom_space.py") + ":mlp_space", "options": {"depths": [1, 2]}},
           "tasks": {"probe": {}}, "executor": {"kind": "serial"}}
    assert run_study(cfg).complete == 6
    df = load_results(cfg["store"])
    assert set(df["depth"]) == {1, 2} and "width_factor" in df.columns


def test_progress_eta_per_task_kind() -> None:
    import io

    from trilemma.commands.study import _PlainProgress
    from trilemma.study import KindProgress, Progress

    # 10 of 100 slow jobs done (5 worker-seconds each, 20 tasks), 20 fast jobs not started, 2 workers
    kinds = (KindProgress("proxy_suite", 200, 20, 50.0, jobs=100, jobs_done=10),
             KindProgress("theory", 1000, 0, 0.0, jobs=20))
    p = Progress(1200, 0, 1200, 20, 20, 0, 0, 25.0, jobs_done=10, kinds=kinds, workers=2)
    assert p.eta == pytest.approx(90 * 5.0 / 2) and p.eta_partial == ("theory",)
    assert Progress(1200, 0, 1200, 20, 20, 0, 0, 25.0, jobs_done=1, kinds=kinds, workers=2).eta is None
    done = (KindProgress("proxy_suite", 200, 200, 500.0, 100, 100), KindProgress("theory", 1000, 1000, 1.0, 20, 20))
    assert Progress(1200, 0, 1200, 1200, 1200, 0, 0, 251.0, jobs_done=120, kinds=done, workers=2).eta == 0.0
    buf = io.StringIO()
    _PlainProgress(buf)(p)
    assert "ETA 3:45 + theory" in buf.getvalue()

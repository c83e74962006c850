"""The Ray executor gives the same store as the local process executor (skipped without Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trilemma.study import Store, run_study

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'trilemma[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as err:  # noqa: BLE001 - any start-up failure means "cannot test here"
        pytest.skip(f"a local Ray instance cannot start here: {err}")
    yield ray
    ray.shutdown()


def _study(tmp_path: Path, name: str, kind: str) -> dict:
    return {
        "name": name,
        "store": str(tmp_path / f"{name}.sqlite"),
        "seeds": [0, 1],
        "space": {"nodes": 2, "filter": {"has_path": True}},
        "theory": {"options": {"C": 0.3}},
        "tasks": {"probe": {"fail": ["2_22"], "batched": True, "group_size": 4}},
        "executor": {"kind": kind, "n_workers": 2},
    }


def _results(path: str) -> dict:
    with Store(path, readonly=True) as st:
        return {
            r.key: (r.status, {k: v for k, v in r.result().items() if k != "extras" and not k.endswith("_time")},
                    (r.error or "").strip().splitlines()[-1:])
            for r in st.rows()
        }


def test_ray_executor_matches_local(tmp_path: Path, local_ray) -> None:
    ray_summary = run_study(_study(tmp_path, "on_ray", "ray"))
    assert ray_summary.executor.startswith("ray executor")
    local_summary = run_study(_study(tmp_path, "on_local", "local"))
    assert (ray_summary.complete, ray_summary.failed) == (local_summary.complete, local_summary.failed)
    assert ray_summary.failed == 2 and ray_summary.complete > 20
    on_ray, on_local = _results(ray_summary.store), _results(local_summary.store)
    assert on_ray == on_local
    theory = [v for k, v in on_ray.items() if k.task == "theory"]
    assert theory and all("nngp_bound" in payload for _, payload, _ in theory)
    with Store(ray_summary.store, readonly=True) as st:
        workers = {r.worker for r in st.rows(task="probe", status="complete")}
    import os

    assert all(not w.endswith(f":{os.getpid()}") for w in workers)  # ran in Ray workers


def test_ray_executor_runs_at_most_n_workers_jobs_at_once(tmp_path: Path, local_ray) -> None:
    """n_workers = 1 on a 2-CPU instance: one job at a time (queued jobs would otherwise start at once)."""
    from datetime import datetime

    cfg = {
        "name": "one_worker", "store": str(tmp_path / "one.sqlite"), "seeds": [0],
        "space": {"nodes": 2, "filter": {"has_path": True}},
        "tasks": {"probe": {"sleep": 0.2, "batched": True, "group_size": 1}},
        "executor": {"kind": "ray", "n_workers": 1, "threads_per_worker": 1},
    }
    summary = run_study(cfg)
    assert summary.complete >= 6 and not summary.failed
    with Store(summary.store, readonly=True) as st:
        spans = sorted((datetime.fromisoformat(r.started_at), datetime.fromisoformat(r.finished_at))
                       for r in st.rows(task="probe", status="complete") if r.started_at and r.finished_at)
    assert len(spans) == summary.complete
    overlaps = [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]
    assert not overlaps, f"{len(overlaps)} of {len(spans) - 1} consecutive jobs ran at the same time"

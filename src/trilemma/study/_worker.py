"""The worker side: run a :class:`~trilemma.study.Job` in this process and report its outcomes.

Executors call :func:`execute_job` in whatever process runs the job (the driver, a local
worker process, a Ray worker). The worker rebuilds the study's :class:`TaskContext` from the
config carried by the job (once per config and process), imports the config's plug-ins,
and turns every task's result, or its exception, into an :class:`~trilemma.study.Outcome`.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import traceback
from typing import Any

import trilemma.study.tasks  # noqa: F401 - registers the built-in task kinds
from trilemma.errors import StoreError
from trilemma.study._config import StudyConfig
from trilemma.study._context import TaskContext
from trilemma.study._plugins import import_plugin
from trilemma.study._task_api import Job, Outcome, TaskKey, TaskOutput, encode_payload, get_task, now_iso

__all__ = ["execute_job", "load_plugins"]


_CONTEXTS: dict[str, TaskContext] = {}


def _context(job: Job) -> TaskContext:
    digest = hashlib.sha256(job.config_json.encode()).hexdigest()
    ctx = _CONTEXTS.get(digest)
    if ctx is None:
        config = StudyConfig.from_json(job.config_json)
        load_plugins(config)
        ctx = TaskContext(config, threads=job.threads)
        _CONTEXTS.clear()  # one study per worker at a time
        _CONTEXTS[digest] = ctx
    return ctx


def load_plugins(config: StudyConfig) -> None:
    """Import the plug-ins a config names (idempotent).

    Called only where a user *runs* a config (planning, workers); reading a store never
    imports anything the store names. The built-in task kinds are registered by
    :mod:`trilemma.study.tasks`, imported by this module.
    """
    for ref in config.plugins:
        import_plugin(ref, config.base_dir)


def _failure_text(err: BaseException) -> str:
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return text.strip() or f"{type(err).__name__}: {err}"


def _outcome(key: TaskKey, result: Any, started: str, seconds: float, worker: str) -> Outcome:
    finished = now_iso()
    if isinstance(result, BaseException):
        return Outcome(key, "failed", None, _failure_text(result), started, finished, seconds, worker)
    status = "complete"
    if isinstance(result, TaskOutput):
        status, result = result.status, result.payload
        if status not in ("complete", "diverged"):
            err = StoreError(f"task {key}: TaskOutput.status must be 'complete' or 'diverged', got {status!r}")
            return Outcome(key, "failed", None, _failure_text(err), started, finished, seconds, worker)
    try:
        payload = encode_payload(result)
    except TypeError as err:
        return Outcome(key, "failed", None, _failure_text(err), started, finished, seconds, worker)
    return Outcome(key, status, payload, None, started, finished, seconds, worker)


def execute_job(job: Job) -> list[Outcome]:
    """Run a job in this process and report one :class:`Outcome` per task.

    Never raises for a task's own error: a task that raises becomes a ``failed`` outcome
    carrying its traceback (a failing batched job fails each of its tasks).
    """
    worker = f"{socket.gethostname()}:{os.getpid()}"
    keys = job.keys()
    started = now_iso()
    t0 = time.perf_counter()
    try:
        ctx = _context(job)
        kind = get_task(job.task)
        options = kind.options(ctx.config)
    except Exception as err:  # noqa: BLE001 - setup errors fail every task of the job
        secs = time.perf_counter() - t0
        return [_outcome(k, err, started, secs, worker) for k in keys]
    if job.batched:
        try:
            results = list(kind.run_batch(ctx, list(job.archs), job.dataset, job.seed, options))
            if len(results) != len(keys):
                raise StoreError(
                    f"task kind {kind.name!r}: run_batch returned {len(results)} results for {len(keys)} archs"
                )
        except Exception as err:  # noqa: BLE001
            results = [err] * len(keys)
        secs = (time.perf_counter() - t0) / max(len(keys), 1)
        return [_outcome(k, r, started, secs, worker) for k, r in zip(keys, results)]
    out = []
    for key in keys:
        started = now_iso()
        t1 = time.perf_counter()
        try:
            result: Any = kind.run(ctx, key.arch, job.dataset, job.seed, options)
        except Exception as err:  # noqa: BLE001
            result = err
        out.append(_outcome(key, result, started, time.perf_counter() - t1, worker))
    return out

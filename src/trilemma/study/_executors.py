"""Executors: where jobs run. The driver alone writes the store; executors only return outcomes.

* ``serial``: in the driver process, one job after another (debugging, tiny studies).
* ``local``: a pool of worker processes (:class:`concurrent.futures.ProcessPoolExecutor`
  with the ``spawn`` or ``forkserver`` start method, so no torch state is forked). Each
  worker limits torch to ``threads_per_worker`` threads (default: CPUs / workers, so the
  workers together use the machine once), ignores Ctrl-C (the driver handles it) and exits
  if the driver dies.
* ``ray``: Ray tasks on a local Ray instance or the cluster at ``executor.address``
  (``trilemma[ray]``). Outcomes come back to the driver through the object store.

Every executor yields ``(job, outcomes)`` as jobs finish, keeping at most
``n_workers × max_in_flight`` jobs submitted ahead. A worker process that dies (out of
memory, killed) fails the tasks of the job it was running, with a message saying so; the
jobs interrupted beside it are re-run (the local pool is restarted) and the study goes on.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from trilemma._registry import Registry
from trilemma.errors import ConfigError
from trilemma.study._config import ExecutorConfig
from trilemma.study._task_api import Job, Outcome, now_iso
from trilemma.study._worker import execute_job

__all__ = [
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "SerialExecutor",
    "cpu_count",
    "default_threads",
    "get_executor",
    "list_executors",
    "make_executor",
    "register_executor",
    "unregister_executor",
]

logger = logging.getLogger(__name__)


def cpu_count() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_threads(n_workers: int) -> int:
    """torch threads per worker so that ``n_workers`` workers share the CPUs."""
    return max(1, cpu_count() // max(1, n_workers))


def _set_threads(threads: int | None) -> None:
    if not threads:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import sys

    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _init_worker(threads: int | None, parent: int) -> None:
    """Process-pool initializer: thread limits, Ctrl-C left to the driver, die with the driver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="trilemma-parent-watch").start()


def _lost(job: Job, why: str) -> list[Outcome]:
    now = now_iso()
    worker = f"{socket.gethostname()}:?"
    return [Outcome(k, "failed", None, why, now, now, 0.0, worker) for k in job.keys()]


class Executor:
    """Base class: runs jobs and yields their outcomes as they finish.

    A new backend subclasses it, implements :meth:`run` (and :meth:`shutdown` if it holds
    resources) and is registered with :func:`register_executor`. Contract: every job passed
    to :meth:`run` is yielded exactly once with one outcome per task; ``on_submit`` is called
    before a job leaves the driver; a task's own exception is a ``failed`` outcome, never an
    exception out of :meth:`run`.

    Attributes:
        kind: The registered name (``"serial"``, ``"local"``, ``"ray"`` …).
        n_workers: Concurrent jobs.
        threads: torch threads per worker.
    """

    kind = "?"

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self.n_workers = config.n_workers or cpu_count()
        self.threads: int | None = config.threads_per_worker or default_threads(self.n_workers)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # leaving with an exception (Ctrl-C while the driver records a result, a store error):
        # stop now, never wait for the jobs still queued or running
        if exc_type is not None:
            self.abort()
        else:
            self.shutdown()

    def shutdown(self) -> None:
        """Release workers after their running jobs."""

    def abort(self) -> None:
        """Stop at once without waiting for running jobs (their rows are re-queued by the driver);
        by default the same as :meth:`shutdown`."""
        self.shutdown()

    def describe(self) -> str:
        return f"{self.kind} executor, {self.n_workers} worker(s) × {self.threads} thread(s)"

    def run(self, jobs: Iterable[Job], on_submit: Callable[[Job], None] | None = None) -> Iterator[tuple[Job, list[Outcome]]]:
        """Run ``jobs``; yield ``(job, outcomes)`` as each finishes (any order).

        Args:
            jobs: The jobs.
            on_submit: Called with each job just before it is handed to a worker.
        """
        raise NotImplementedError


class SerialExecutor(Executor):
    """Runs every job in the driver process, in order."""

    kind = "serial"

    def __init__(self, config: ExecutorConfig) -> None:
        super().__init__(config)
        self.n_workers = 1
        self.threads = config.threads_per_worker  # None: leave the caller's torch threads alone

    def describe(self) -> str:
        threads = f"{self.threads} thread(s)" if self.threads else "torch's default threads"
        return f"serial executor in the driver process, {threads}"

    def run(self, jobs: Iterable[Job], on_submit: Callable[[Job], None] | None = None) -> Iterator[tuple[Job, list[Outcome]]]:
        if self.threads:
            _set_threads(self.threads)
        for job in jobs:
            if on_submit:
                on_submit(job)
            yield job, execute_job(job)


class LocalExecutor(Executor):
    """A pool of worker processes on this machine."""

    kind = "local"

    def __init__(self, config: ExecutorConfig) -> None:
        super().__init__(config)
        self._pool: cf.ProcessPoolExecutor | None = None
        self._isolated: set[Job] = set()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        ctx = multiprocessing.get_context(self.config.start_method)
        return cf.ProcessPoolExecutor(
            max_workers=self.n_workers, mp_context=ctx, initializer=_init_worker,
            initargs=(self.threads, os.getpid()),
        )

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run(self, jobs: Iterable[Job], on_submit: Callable[[Job], None] | None = None) -> Iterator[tuple[Job, list[Outcome]]]:
        """Run ``jobs`` on the pool (see :meth:`Executor.run`).

        When a worker process dies, the pool breaks and every job in flight is interrupted,
        though only one of them was running in the dead worker. Those jobs are *suspects*:
        they are re-run one at a time on a fresh pool, so the job that kills its worker again
        is the only one failed ("worker process died while running this job") and the jobs
        that were merely queued or running beside it complete normally.
        """
        pending = iter(jobs)
        limit = self.n_workers * self.config.max_in_flight
        futures: dict[cf.Future[list[Outcome]], Job] = {}
        suspects: list[Job] = []
        if self._pool is None:
            self._pool = self._new_pool()
        try:
            while True:
                isolating = bool(suspects) or any(j in self._isolated for j in futures.values())
                while len(futures) < (1 if isolating else limit):
                    if suspects:
                        job = suspects.pop(0)
                        self._isolated.add(job)
                    elif isolating:
                        break
                    else:
                        nxt = next(pending, None)
                        if nxt is None:
                            break
                        job = nxt
                        if on_submit:
                            on_submit(job)
                    futures[self._pool.submit(execute_job, job)] = job
                    isolating = bool(suspects) or job in self._isolated
                if not futures:
                    return
                # a bounded wait: the driver returns to Python code at least twice a second, so a
                # Ctrl-C is acted on at once however long the running jobs take
                done, _ = cf.wait(futures, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                broken: list[Job] = []
                for fut in done:
                    job = futures.pop(fut)
                    try:
                        outcomes = fut.result()
                    except cf.process.BrokenProcessPool as err:
                        if job in self._isolated:  # alone on the pool: this job killed its worker
                            self._isolated.discard(job)
                            broken.append(job)
                            yield job, _lost(job, f"worker process died while running this job ({err}); "
                                                  f"it may have run out of memory")
                        else:
                            broken.append(job)
                            suspects.append(job)
                        continue
                    self._isolated.discard(job)
                    yield job, outcomes
                if broken:
                    suspects.extend(j for j in futures.values() if j not in suspects)
                    futures.clear()
                    logger.warning("a worker process died; re-running the %d job(s) it interrupted one at a time "
                                   "to find the one that killed it", len(suspects))
                    self._pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = self._new_pool()
        except BaseException:  # Ctrl-C, or the consumer stopped: do not wait for running jobs
            self._abort()
            raise

    def abort(self) -> None:
        self._abort()

    def _abort(self) -> None:
        """Terminate the workers now (their jobs' rows are re-queued by the driver)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)


def _ray_job(job: Job, threads: int | None) -> list[Outcome]:
    _set_threads(threads)
    return execute_job(job)


class RayExecutor(Executor):
    """Ray tasks on a local instance or on the cluster at ``executor.address``."""

    kind = "ray"

    def __init__(self, config: ExecutorConfig) -> None:
        try:
            import ray
        except ImportError as err:
            raise ConfigError(
                f"executor.kind = 'ray' needs Ray, which cannot be imported ({err}); "
                f"install it with: pip install 'trilemma[ray]'"
            ) from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if config.address:
                kwargs["address"] = config.address
            elif config.n_workers:
                threads = config.threads_per_worker or default_threads(config.n_workers)
                kwargs["num_cpus"] = max(config.n_workers * threads, cpu_count())
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = f"the Ray cluster at {config.address!r}" if config.address else "a local Ray instance"
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise ConfigError(
                    f"executor: cannot start or reach {where}: {first}. Start a cluster (`ray start --head`), "
                    f"give its address (executor.address / --address), or leave the address out to start a "
                    f"local instance"
                ) from None
            self._started = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        super().__init__(config)
        if config.n_workers is None:
            self.threads = config.threads_per_worker or 1
            self.n_workers = max(1, cpus // self.threads)
            # the cluster's CPUs bound how many run at once; queue max_in_flight per worker
            self._limit = self.n_workers * config.max_in_flight
        else:
            # Ray starts every submitted task for which the cluster has CPUs, so queueing ahead
            # would run more than n_workers jobs at once: submit exactly n_workers
            self._limit = self.n_workers
        self._remote = ray.remote(num_cpus=self.threads or 1, max_retries=2)(_ray_job)  # retried only if a worker dies

    def describe(self) -> str:
        where = self.config.address or "a local Ray instance"
        return f"ray executor on {where}, {self.n_workers} task(s) × {self.threads} thread(s)"

    def shutdown(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False

    def run(self, jobs: Iterable[Job], on_submit: Callable[[Job], None] | None = None) -> Iterator[tuple[Job, list[Outcome]]]:
        ray = self._ray
        pending = iter(jobs)
        limit = self._limit
        refs: dict[Any, Job] = {}
        try:
            while True:
                while len(refs) < limit:
                    job = next(pending, None)
                    if job is None:
                        break
                    if on_submit:
                        on_submit(job)
                    refs[self._remote.remote(job, self.threads)] = job
                if not refs:
                    return
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    job = refs.pop(ref)
                    try:
                        outcomes = ray.get(ref)
                    except Exception as err:  # noqa: BLE001 - a lost worker / node
                        outcomes = _lost(job, f"Ray task failed outside the task code: {err}")
                    yield job, outcomes
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise


_EXECUTORS: Registry[type[Executor]] = Registry("executor")


def register_executor(name: str, cls: type[Executor]) -> type[Executor]:
    """Register an executor class under ``name`` (``executor.kind`` in a study, ``--executor``).

    The class is built as ``cls(config)`` with the study's :class:`ExecutorConfig`; check a
    new one with :func:`trilemma.testing.check_executor`.

    Raises:
        InvalidTypeError: ``cls`` is not an :class:`Executor` subclass.
        DuplicateNameError: ``name`` is taken.
    """
    from trilemma.errors import InvalidTypeError

    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise InvalidTypeError(f"register_executor expects an Executor subclass, got {cls!r}")
    return _EXECUTORS.register(name, cls)


def unregister_executor(name: str) -> None:
    """Remove an executor (tests and plug-ins that re-register)."""
    _EXECUTORS.unregister(name)


def get_executor(name: str) -> type[Executor]:
    """The executor class registered as ``name``.

    Raises:
        UnknownNameError: unknown name (the message lists the registered ones).
    """
    return _EXECUTORS.get(name)


def list_executors() -> list[str]:
    """Names of the registered executors."""
    return _EXECUTORS.names()


def make_executor(config: ExecutorConfig) -> Executor:
    """The executor a config asks for.

    Raises:
        UnknownNameError: ``config.kind`` is not a registered executor.
        ConfigError: ``ray`` requested but Ray is not installed, or its cluster unreachable.
    """
    return _EXECUTORS.get(config.kind)(config)


register_executor("serial", SerialExecutor)
register_executor("local", LocalExecutor)
register_executor("ray", RayExecutor)

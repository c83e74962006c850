"""Planning and running a study: config → tasks → jobs → executor → store.

:func:`plan_study` checks every name in the config (space, architectures, task kinds,
measures, datasets, training fields) and lists the tasks; :func:`run_study` syncs them with
the store (completed work is skipped, interrupted work re-queued), groups them into jobs
(batched where a task kind can batch, e.g. training many cells of one shape at once), hands
the jobs to the executor and writes each outcome as it arrives. A task that raises is
recorded as failed with its traceback and the study goes on.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trilemma import __version__
from trilemma._schema import Column, ResultSchema
from trilemma.errors import ConfigError, SchemaError
from trilemma.spaces import ArchSpace
from trilemma.study._config import StudyConfig, config_error, format_validation_error, load_config
from trilemma.study._context import TaskContext
from trilemma.study._executors import Executor, cpu_count, list_executors, make_executor
from trilemma.study._resources import check_datasets, check_device, check_memory
from trilemma.study._spaces import select_archs
from trilemma.study._store import Store
from trilemma.study._task_api import (
    Job,
    Outcome,
    TaskKey,
    TaskKind,
    check_task_names,
    encode_payload,
    get_task,
    now_iso,
    task_hash,
)
from trilemma.study._worker import load_plugins

__all__ = ["KindProgress", "StudyPlan", "Progress", "StudySummary", "plan_study", "run_study", "make_jobs",
           "result_schema"]

logger = logging.getLogger(__name__)


@dataclass
class StudyPlan:
    """Everything a study will compute.

    Attributes:
        config: The validated config.
        archs: Architectures covered (canonical names).
        kinds: ``{task kind name: (kind, options)}`` of the enabled kinds.
        tasks: ``(key, task_hash)`` per task, in plan order.
        context: A driver-side :class:`TaskContext` (space, dataset shapes for grouping).
        schema: The results table's columns, declared by the space and every task kind.
    """

    config: StudyConfig
    archs: list[str]
    kinds: dict[str, tuple[TaskKind, Any]]
    tasks: list[tuple[TaskKey, str]]
    context: TaskContext
    schema: ResultSchema = field(default_factory=ResultSchema)

    @property
    def space(self) -> ArchSpace:
        return self.context.space

    def hashes(self) -> dict[TaskKey, str]:
        return dict(self.tasks)

    def arch_columns(self) -> dict[str, dict[str, Any]]:
        """Each architecture's descriptive columns, in plan order (stored with the results)."""
        return {a: self.space.describe(a) for a in self.archs}


def plan_study(config: StudyConfig | str | Path | Mapping[str, Any], *, force: bool = False,
               check_resources: bool = True) -> StudyPlan:
    """Validate a config and list the study's tasks, before anything runs.

    Checks every name (space, architectures, task kinds, measures, datasets, training
    fields), that every dataset can be loaded, and that the largest job fits the machine's
    memory (:mod:`trilemma.study._resources`).

    Args:
        config: A :class:`StudyConfig`, a TOML path or a mapping.
        force: Skip the memory check (the other checks still apply).
        check_resources: Check datasets and memory (``False``: names only, no data loaded).

    Returns:
        The :class:`StudyPlan`.

    Raises:
        ConfigError: Any structural or semantic problem, one line per problem with its key path.
        PluginError: A plug-in module or space function raised.
    """
    cfg = load_config(config)
    load_plugins(cfg)
    ctx = TaskContext(cfg)
    lines = check_task_names(cfg)
    try:
        space = ctx.space
        archs = select_archs(space, cfg.space)
    except ConfigError as err:
        lines.extend(str(err).splitlines())
        archs = []
    sections = cfg.task_sections()
    if not sections:
        lines.append("(top level): no task to run; add a [theory], [measures] or [training] section "
                     "(or [tasks.<kind>] for a plug-in kind)")
    if cfg.executor.kind not in list_executors():
        lines.append(f"executor.kind: unknown executor {cfg.executor.kind!r}; registered: {', '.join(list_executors())}")
    caps = space.capabilities if archs else frozenset()
    if archs and cfg.model.param_budget is not None and "budget" not in caps:
        lines.append(f"model.param_budget: space {space.name!r} has no width knob, so it cannot meet a parameter "
                     f"budget; give model.width")
    kinds: dict[str, tuple[TaskKind, Any]] = {}
    for name in sections:
        try:
            kind = get_task(name)
        except KeyError:
            continue  # reported by check_task_names
        missing = sorted(kind.requires - caps) if archs else []
        if missing:
            lines.append(f"{_section_path(name)}: the {name!r} task needs a space with {', '.join(missing)}; "
                         f"space {space.name!r} has {', '.join(sorted(caps)) or 'no capability'}")
            continue
        problems = kind.validate(cfg, archs)
        lines.extend(problems)
        if not problems and not lines:
            kinds[name] = (kind, kind.options(cfg))
    schema = ResultSchema()
    if not lines:
        try:
            schema = result_schema(ctx, kinds)
        except SchemaError as err:
            lines.append(f"(schema): {err}")
    if not lines and check_resources:
        lines.extend(check_device(cfg.device))
        if cfg.datasets and not lines:  # even dataset-free kinds read the input shape from the first one
            lines.extend(check_datasets(ctx))
        if not lines and not force:
            lines.extend(check_memory(ctx, archs, cfg.executor.n_workers or cpu_count()))
    if lines:
        raise config_error(_source(cfg), list(dict.fromkeys(lines)))
    tasks: list[tuple[TaskKey, str]] = []
    for name, (kind, options) in sorted(kinds.items(), key=lambda kv: (kv[1][0].priority, kv[0])):
        datasets = (cfg.datasets or ("",)) if kind.uses_data else ("",)
        seeds = cfg.seed_list if kind.uses_seed else (0,)
        if kind.study_level:
            continue  # runs after the tasks, on the results (_run_study_level)
        mine = kind.select(options, archs, space=ctx.space)
        for dataset in datasets:
            h = task_hash(kind, cfg, options, dataset)
            for seed in seeds:
                tasks.extend((TaskKey(a, name, dataset, seed), h) for a in mine)
    return StudyPlan(cfg, archs, kinds, tasks, ctx, schema)


def _section_path(kind: str) -> str:
    return {"theory": "theory", "measures": "measures", "train": "training"}.get(kind, f"tasks.{kind}")


#: Columns every results table has, whatever the space and task kinds.
_INFO_COLUMNS = (
    Column("width", "info", "int", description="the width the network was built with", source="study"),
    Column("params", "cost", "int", label="#params", description="trainable parameters", source="study"),
)


def result_schema(ctx: TaskContext, kinds: Mapping[str, tuple[TaskKind, Any]]) -> ResultSchema:
    """The study's results columns: the space's descriptive columns, ``width`` and ``params``,
    each task kind's declared columns and its ``<kind>_status`` / ``<kind>_seconds``.

    Raises:
        SchemaError: two producers declare one column.
    """
    produced = ResultSchema()
    kinds = {name: ko for name, ko in kinds.items() if not ko[0].study_level}  # their output is not rows
    for name, (kind, options) in sorted(kinds.items(), key=lambda kv: (kv[1][0].priority, kv[0])):
        produced.extend(c if c.source else Column(**{**c.as_dict(), "source": name}) for c in kind.columns(ctx, options))
    schema = ResultSchema(ctx.space.describe_columns())
    # width and params describe how every model was built; a producer may declare them itself
    schema.extend(c for c in _INFO_COLUMNS if c.name not in schema and c.name not in produced)
    schema.extend(produced)
    for name in kinds:
        schema.add(Column(f"{name}_status", "info", "str", description=f"status of the {name} task", source=name))
        schema.add(Column(f"{name}_seconds", "cost", unit="s", description=f"seconds of the {name} task", source=name))
    return schema


def _source(cfg: StudyConfig) -> str:
    return f"for study {cfg.name!r}"


def make_jobs(plan: StudyPlan, todo: Sequence[TaskKey], n_workers: int, threads: int | None) -> list[Job]:
    """Group tasks into jobs.

    Tasks of one kind, dataset and seed whose kind gives them the same
    :meth:`TaskKind.group_key` run as one batched job; groups larger than the kind's
    :meth:`TaskKind.max_group_size` (``None``: at most 128 per job, at least
    ``2 × n_workers`` jobs, a multiple of ``n_workers``) are split evenly. Other tasks are bundled ``chunk_size`` at a
    time. Jobs of kinds with a lower ``priority`` come first (the closed form and lookups,
    seconds for a whole space, then long batched training jobs; cheap jobs fill the gaps).
    """
    config_json = plan.config.to_json()
    by_run: dict[tuple[str, str, int], list[str]] = defaultdict(list)
    for key in todo:
        by_run[(key.task, key.dataset, key.seed)].append(key.arch)
    jobs: list[tuple[int, int, Job]] = []
    for (task, dataset, seed), archs in by_run.items():
        kind, options = plan.kinds[task]
        priority = kind.priority
        groups: dict[Hashable, list[str]] = defaultdict(list)
        singles: list[str] = []
        for arch in archs:
            gk = kind.group_key(plan.context, arch, dataset, seed, options)
            if gk is None:
                singles.append(arch)
            else:
                groups[gk].append(arch)
        for members in groups.values():
            cap = kind.max_group_size(options)
            if cap is None:  # a multiple of the worker count, so every worker gets an equal share
                n_jobs = max(math.ceil(len(members) / 128), 2 * n_workers)
                n_jobs = math.ceil(n_jobs / n_workers) * n_workers
                cap = max(1, math.ceil(len(members) / n_jobs))
            n_jobs = math.ceil(len(members) / cap)
            size = math.ceil(len(members) / n_jobs)
            for i in range(0, len(members), size):
                part = tuple(members[i : i + size])
                jobs.append((priority, -len(part), Job(task, dataset, seed, part, True, config_json, threads)))
        step = max(1, kind.chunk_size)
        for i in range(0, len(singles), step):
            part = tuple(singles[i : i + step])
            jobs.append((priority, 0, Job(task, dataset, seed, part, False, config_json, threads)))
    jobs.sort(key=lambda t: (t[0], t[1]))
    return [j for _, _, j in jobs]


@dataclass(frozen=True)
class KindProgress:
    """Where one task kind of a running study stands.

    Attributes:
        name: The task kind.
        queued: Its tasks this run computes.
        finished: Of those, how many have finished.
        seconds: Worker seconds its finished jobs took.
        jobs: Its jobs in this run.
        jobs_done: Of those, how many have finished.
    """

    name: str
    queued: int
    finished: int = 0
    seconds: float = 0.0
    jobs: int = 0
    jobs_done: int = 0


@dataclass(frozen=True)
class Progress:
    """Where a running study stands (passed to the progress callback).

    Attributes:
        total: Tasks in the study.
        skipped: Tasks already final before this run started.
        queued: Tasks this run computes.
        finished: Of those, how many have finished.
        complete: Finished complete in this run.
        failed: Finished failed in this run.
        diverged: Finished diverged in this run.
        elapsed: Seconds since the run started.
        last: The last finished job, e.g. ``"train digits seed 0 (109 archs)"``.
        jobs_done: Jobs finished in this run.
        kinds: Per task kind progress (empty: only the totals are known).
        workers: Jobs the executor runs at once.
    """

    total: int
    skipped: int
    queued: int
    finished: int
    complete: int
    failed: int
    diverged: int
    elapsed: float
    last: str = ""
    jobs_done: int = 0
    kinds: tuple[KindProgress, ...] = ()
    workers: int = 1

    @property
    def rate(self) -> float:
        """Tasks per second in this run (0 before the first finishes)."""
        return self.finished / self.elapsed if self.elapsed > 0 and self.finished else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left; ``None`` until the estimate means something.

        Jobs differ in size (a batched training job holds many tasks and runs for minutes,
        a theory job finishes in milliseconds), so the first jobs say little about the
        rest: no estimate is given before two jobs are done. With per-kind progress the
        estimate is each kind's remaining jobs times its mean worker seconds per job, over the
        workers (a job is one computation: a chunk of tasks, a batch trained together, one
        network measured for all the architectures that compute it); kinds not started yet
        are left out (:attr:`eta_partial`). Without it: the remaining tasks at the overall
        rate, once a tenth of them are done.
        """
        if self.jobs_done < 2:
            return None
        if self.kinds:
            known = [k for k in self.kinds if k.jobs_done > 0]
            if not known:
                return None
            work = sum((k.jobs - k.jobs_done) * k.seconds / k.jobs_done for k in known)
            return work / max(1, self.workers)
        if self.finished < max(1, 0.1 * self.queued) or self.rate <= 0:
            return None
        return (self.queued - self.finished) / self.rate

    @property
    def eta_partial(self) -> tuple[str, ...]:
        """Task kinds with work left whose cost is unknown yet (not in :attr:`eta`)."""
        return tuple(k.name for k in self.kinds if k.jobs_done == 0 and k.jobs > 0)


@dataclass
class StudySummary:
    """What a run did.

    Attributes:
        name: Study name.
        store: Path of the store.
        total: Tasks in the study.
        skipped: Tasks already final before the run.
        ran: Tasks run now.
        complete, failed, diverged: Outcomes of the tasks run now.
        counts: ``{status: rows}`` in the whole store after the run.
        seconds: Wall time of the run.
        failures: ``(task, first line of the error)`` for the failures of this run.
        executor: Description of the executor.
        interrupted: The run was stopped (Ctrl-C) before all tasks finished.
    """

    name: str
    store: Path
    total: int
    skipped: int
    ran: int
    complete: int = 0
    failed: int = 0
    diverged: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    failures: list[tuple[TaskKey, str]] = field(default_factory=list)
    executor: str = ""
    interrupted: bool = False

    def __str__(self) -> str:
        lines = [
            f"study {self.name!r}: {self.total} tasks; {self.skipped} already done, {self.ran} run now "
            f"({self.complete} complete, {self.diverged} diverged, {self.failed} failed) in {self.seconds:.1f} s",
            f"store: {self.store}",
        ]
        for key, first in self.failures[:10]:
            lines.append(f"  failed: {key}: {first}")
        if len(self.failures) > 10:
            lines.append(f"  … and {len(self.failures) - 10} more failures (trilemma status {self.store})")
        return "\n".join(lines)


def first_error_line(error: str | None) -> str:
    """The most telling line of a traceback: its last non-empty line."""
    if not error:
        return ""
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _with_executor(cfg: StudyConfig, kind: str | None, n_workers: int | None, address: str | None) -> StudyConfig:
    update: dict[str, Any] = {}
    if kind is not None:
        update["kind"] = kind
    if n_workers is not None:
        update["n_workers"] = n_workers
    if address is not None:
        update["address"] = address
    if not update:
        return cfg
    merged = {**cfg.executor.model_dump(), **update}
    try:
        executor = type(cfg.executor).model_validate(merged)
    except ValidationError as err:
        names = {"kind": "--executor", "n_workers": "--workers", "address": "--address"}
        lines = [line.replace(f"executor.{k}:", f"{flag} (executor.{k}):", 1)
                 for line in format_validation_error(err, type(cfg.executor), prefix=("executor",))
                 for k, flag in names.items() if line.startswith(f"executor.{k}:")]
        raise config_error("override", lines or [str(err).splitlines()[0]]) from None
    return cfg.model_copy(update={"executor": executor})


def run_study(
    config: StudyConfig | str | Path | Mapping[str, Any],
    *,
    executor: str | None = None,
    n_workers: int | None = None,
    address: str | None = None,
    device: str | None = None,
    store: str | Path | None = None,
    progress: Callable[[Progress], None] | None = None,
    rerun_failed: bool = True,
    rerun_changed: bool = False,
    force: bool = False,
) -> StudySummary:
    """Run a study to completion, resuming whatever an earlier run left.

    Args:
        config: A :class:`StudyConfig`, a TOML path or a mapping.
        executor: Override ``executor.kind`` (``"serial"``, ``"local"``, ``"ray"``).
        n_workers: Override ``executor.n_workers``.
        address: Override ``executor.address`` (Ray).
        device: Override ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``).
        store: Override the store path.
        progress: Called with a :class:`Progress` at the start and after every job.
        rerun_failed: Run tasks that failed in an earlier run again (default).
        rerun_changed: Recompute completed tasks whose settings changed since (else an error).
        force: Run even when the estimated memory of the largest model exceeds the machine's.

    Returns:
        A :class:`StudySummary` (counts, failures, store path, wall time).

    Raises:
        ConfigError: The config is invalid.
        StoreError: The store belongs to another study, has another schema version, is
            locked by a running study, or holds results computed under other settings.
            A refused run leaves the store unchanged; a run that fails before its first
            result leaves no new store behind.
    """
    cfg = _with_executor(load_config(config), executor, n_workers, address)
    if device is not None:
        try:
            cfg = StudyConfig.model_validate({**cfg.model_dump(), "device": device, "base_dir": cfg.base_dir})
        except ValidationError as err:
            raise config_error("override", format_validation_error(err, StudyConfig)) from None
    plan = plan_study(cfg, force=force)
    path = Path(store) if store is not None else cfg.store_path()
    created = not path.exists()
    t0 = time.perf_counter()
    recorded = False
    try:
        with Store(path, create=True) as st, st.run_lock():
            # checks first: a refused run changes nothing in the store
            st.check_owner(cfg.name)
            changes = st.plan_changes(plan.tasks, rerun_failed=rerun_failed, rerun_changed=rerun_changed)
            arch_columns = plan.arch_columns()
            todo = changes.todo
            ex: Executor | None = make_executor(cfg.executor) if todo else None
            st.begin_run(changes, {
                "study": cfg.name, "config": cfg.to_json(), "config_hash": cfg.fingerprint(),
                "trilemma_version": __version__, "last_run_started": now_iso(), "space_name": plan.space.name,
                "result_schema": plan.schema.to_json(),
                "task_kinds": json.dumps({n: {"uses_seed": k.uses_seed, "uses_data": k.uses_data}
                                          for n, (k, _) in plan.kinds.items()}, sort_keys=True),
            }, arch_columns)
            summary = StudySummary(cfg.name, path, total=len(plan.tasks), skipped=len(plan.tasks) - len(todo), ran=0)
            logger.info("study %s: %d tasks, %d to run, store %s", cfg.name, len(plan.tasks), len(todo), path)
            jobs_done = 0
            kind_queued: dict[str, int] = defaultdict(int)
            for key in todo:
                kind_queued[key.task] += 1
            kind_done: dict[str, list[float]] = {name: [0, 0.0, 0, 0] for name in kind_queued}  # tasks, s, jobs

            def report(last: str = "") -> None:
                if progress is not None:
                    kinds = tuple(KindProgress(n, q, int(kind_done[n][0]), kind_done[n][1], int(kind_done[n][2]),
                                               int(kind_done[n][3])) for n, q in kind_queued.items())
                    progress(Progress(summary.total, summary.skipped, len(todo), summary.ran, summary.complete,
                                      summary.failed, summary.diverged, time.perf_counter() - t0, last, jobs_done,
                                      kinds, ex.n_workers if ex is not None else 1))

            if ex is None:
                report()
            else:
                summary.executor = ex.describe()
                jobs = make_jobs(plan, todo, ex.n_workers, ex.threads)
                for job in jobs:
                    kind_done[job.task][2] += 1
                logger.info("%d job(s) on the %s", len(jobs), summary.executor)
                report()
                hashes = plan.hashes()
                try:
                    with ex:
                        for job, outcomes in ex.run(jobs, on_submit=lambda j: st.mark_running(j.keys())):
                            st.record(outcomes, hashes)
                            recorded = True
                            jobs_done += 1
                            _count(summary, outcomes)
                            kind_done[job.task][3] += 1
                            kind_done[job.task][1] += _job_seconds(job, outcomes)
                            kind_done[job.task][0] += len(outcomes)
                            report(f"{job.task} {job.dataset + ' ' if job.dataset else ''}seed {job.seed} "
                                   f"({len(job.archs)} arch{'s' if len(job.archs) != 1 else ''})")
                except KeyboardInterrupt:
                    summary.interrupted = True
                    logger.warning("interrupted: tasks in flight go back to pending; run again to resume")
                finally:
                    st.requeue_running()
            if not summary.interrupted:
                _run_study_level(plan, st, summary, ran_now=bool(todo))
            st.set_meta(last_run_finished=now_iso())
            summary.counts = st.counts()
    except BaseException:
        if created and not recorded:
            _remove_store(path)  # a run that failed before any result leaves no empty store behind
        raise
    summary.seconds = time.perf_counter() - t0
    if summary.failed:
        logger.info("%d task(s) failed; see `trilemma status %s`", summary.failed, path)
    return summary


#: Prefix of the ``meta`` keys that hold the outputs of study-level kinds.
OUTPUT_PREFIX = "output:"


def _run_study_level(plan: StudyPlan, st: Store, summary: StudySummary, *, ran_now: bool) -> None:
    """Run every study-level kind once per (dataset, seed) on the study's results and store its
    output in the store's ``meta`` table (skipped when nothing changed since its last output)."""
    import traceback

    from trilemma.study._results import load_results

    cfg = plan.config
    levels = [(n, k, o) for n, (k, o) in sorted(plan.kinds.items()) if k.study_level]
    if not levels:
        return
    meta = st.meta()
    results = None
    for name, kind, options in levels:
        for dataset in ((cfg.datasets or ("",)) if kind.uses_data else ("",)):
            h = task_hash(kind, cfg, options, dataset)
            for seed in (cfg.seed_list if kind.uses_seed else (0,)):
                key = f"{OUTPUT_PREFIX}{name}:{dataset}:{seed}"
                old = json.loads(meta[key]) if key in meta else None
                if old and old.get("hash") == h and old.get("status") == "complete" and not ran_now:
                    continue
                if results is None:
                    results = load_results(st.path)
                rows = results[(results["dataset"].fillna("") == dataset) | (dataset == "")] if "dataset" in results else results
                if "seed" in rows and rows["seed"].notna().any():
                    rows = rows[rows["seed"] == seed]
                rows.attrs["schema"] = results.attrs.get("schema")
                started, t0 = now_iso(), time.perf_counter()
                record: dict[str, Any] = {"hash": h, "started_at": started, "dataset": dataset, "seed": seed}
                try:
                    payload = kind.run_study(plan.context, rows.reset_index(drop=True), dataset, seed, options)
                    record.update(status="complete", payload=json.loads(encode_payload(payload)))
                    summary.complete += 1
                except Exception:  # noqa: BLE001 - recorded like a failed task
                    error = traceback.format_exc()
                    record.update(status="failed", error=error)
                    summary.failed += 1
                    summary.failures.append((TaskKey("*", name, dataset, seed), first_error_line(error)))
                    logger.warning("study-level %s (%s seed %d) failed: %s", name, dataset, seed, first_error_line(error))
                summary.ran += 1
                record.update(finished_at=now_iso(), seconds=time.perf_counter() - t0)
                st.set_meta(**{key: json.dumps(record, sort_keys=True, allow_nan=False)})
                logger.info("study-level %s (%s seed %d): %s in %.1f s", name, dataset, seed, record["status"],
                            record["seconds"])


def _job_seconds(job: Job, outcomes: Sequence[Outcome]) -> float:
    """Worker seconds of a job: the sum over its tasks (a batched job's time is split over them)."""
    return float(sum(o.seconds for o in outcomes))


def _remove_store(path: Path) -> None:
    for p in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal", ".lock"))):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as err:  # pragma: no cover - permissions changed under us
            logger.warning("could not remove %s: %s", p, err)


def _count(summary: StudySummary, outcomes: Sequence[Outcome]) -> None:
    for o in outcomes:
        summary.ran += 1
        if o.status == "complete":
            summary.complete += 1
        elif o.status == "diverged":
            summary.diverged += 1
        else:
            summary.failed += 1
            summary.failures.append((o.key, first_error_line(o.error)))

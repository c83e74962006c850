"""Task kinds: plug-ins turning (architecture, dataset, seed) into a JSON payload of results.

A study is a set of *tasks*, one per ``(architecture, task kind, dataset, seed)``; that
tuple is the store's key. Each task kind is registered by name (:func:`register_task`)
and knows how to compute one payload (:meth:`TaskKind.run`) and, optionally, many at once
(:meth:`TaskKind.run_batch`, used for tasks with the same :meth:`TaskKind.group_key`, e.g.
training many cells of one shape as one batched computation).

A payload is a JSON-serializable dict: scalar results under their column names, timings
under ``<name>_time``, and three reserved keys: ``"info"`` (``{"width": .., "params": ..}``:
how the model was built), ``"curves"`` (``{name: [per-epoch values]}``) and
``"extras"`` (anything else worth keeping). Non-finite floats are stored as ``null``.
A kind may return :class:`TaskOutput` to mark a result ``"diverged"``.

Built-in kinds: ``theory``, ``measures``, ``train`` (:mod:`trilemma.study._builtin`) and the
diagnostic ``probe`` kind defined here (torch-free, deterministic payloads, optional delay
and planted failures) for checking executors, stores and clusters.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import os
import socket
import time
import traceback
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trilemma._registry import Registry
from trilemma.errors import ConfigError, StoreError
from trilemma.study._config import StudyConfig, format_validation_error, stable_hash
from trilemma.study._plugins import import_plugin
from trilemma.study._spaces import StudySpace, make_space

__all__ = [
    "TaskKey",
    "TaskKind",
    "TaskOutput",
    "TaskContext",
    "Job",
    "Outcome",
    "register_task",
    "get_task",
    "list_tasks",
    "encode_payload",
    "execute_job",
    "now_iso",
    "STATUSES",
]

logger = logging.getLogger(__name__)

#: Row statuses in the store. ``complete`` and ``diverged`` are final.
STATUSES = ("pending", "running", "complete", "failed", "diverged")


def now_iso() -> str:
    """The current UTC time as ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, order=True)
class TaskKey:
    """Identity of one task (one store row).

    Attributes:
        arch: Canonical architecture name.
        task: Task kind name.
        dataset: Dataset name, ``""`` for dataset-free kinds (theory).
        seed: Seed, ``0`` for seed-free kinds.
    """

    arch: str
    task: str
    dataset: str
    seed: int

    def __str__(self) -> str:
        parts = [self.task, self.arch] + ([self.dataset] if self.dataset else []) + [f"seed {self.seed}"]
        return " ".join(parts)


@dataclass(frozen=True)
class TaskOutput:
    """A payload with an explicit status (``"complete"`` or ``"diverged"``)."""

    payload: dict[str, Any]
    status: Literal["complete", "diverged"] = "complete"


# --------------------------------------------------------------------------- payloads


def _jsonable(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, torch tensors
        tolist = obj.detach().cpu().tolist() if hasattr(obj, "detach") else obj.tolist()
        return _jsonable(tolist)
    if hasattr(obj, "item"):
        return _jsonable(obj.item())
    raise TypeError(f"payload value of type {type(obj).__name__} is not JSON-serializable: {obj!r}")


def encode_payload(payload: Mapping[str, Any]) -> str:
    """Canonical JSON of a payload (sorted keys; numpy/torch scalars converted; NaN/inf → null).

    Raises:
        TypeError: A value cannot be represented in JSON.
    """
    if not isinstance(payload, Mapping):
        raise TypeError(f"a task payload must be a dict, got {type(payload).__name__}")
    return json.dumps(_jsonable(payload), sort_keys=True, separators=(",", ":"), allow_nan=False)


# --------------------------------------------------------------------------- context


def torch_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """TOML-friendly options with ``dtype = "float64"`` turned into ``torch.float64``.

    Raises:
        ConfigError: ``dtype`` names no torch floating dtype.
    """
    out = dict(options)
    value = out.get("dtype")
    if isinstance(value, str):
        import torch

        dtype = getattr(torch, value.removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ConfigError(f"dtype must name a torch floating dtype such as 'float32' or 'float64', got {value!r}")
        out["dtype"] = dtype
    return out



class TaskContext:
    """What a task needs to run: the config, the space, cached datasets, model building.

    One context exists per worker process and config; it caches datasets so that many tasks
    on one dataset load it once.

    Args:
        config: The study config.
        threads: torch threads to use (``None``: leave torch's default).
    """

    def __init__(self, config: StudyConfig, threads: int | None = None) -> None:
        self.config = config
        self.threads = threads
        self._datasets: dict[str, Any] = {}
        self._widths: dict[tuple[str, str], int] = {}

    @cached_property
    def space(self) -> StudySpace:
        """The study's architecture space."""
        return make_space(self.config.space, self.config.base_dir)

    @cached_property
    def device(self) -> Any:
        """The torch device of the config (``"auto"``: CUDA when available)."""
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        name = self.config.device
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(name)

    def dataset(self, name: str) -> Any:
        """The dataset ``name`` loaded with the config's options (cached).

        The split is fixed by the data options (``seed`` there, default 0), not by the
        task's seed: every seed trains on the same split.
        """
        if name not in self._datasets:
            from trilemma.data import load_dataset

            data = self.config.data
            options = torch_options(data.options_for(name) if data is not None else {})
            self._datasets[name] = load_dataset(name, **options)
            _ = self.device  # sets torch threads
        return self._datasets[name]

    def shape(self, dataset: str) -> tuple[int, int]:
        """``(in_features, num_classes)`` of a dataset."""
        ds = self.dataset(dataset)
        x = ds.x_train
        in_features = int(math.prod(x.shape[1:]))
        return in_features, int(ds.num_classes)

    def width(self, arch: str, dataset: str) -> int:
        """Width of ``arch``: the config's fixed width, or solved from the parameter budget."""
        m = self.config.model
        if m.fixed_width is not None:
            return m.fixed_width
        key = (arch, dataset)
        if key not in self._widths:
            in_features, num_classes = self.shape(dataset)
            self._widths[key] = self.space.solve_width(
                arch, target=int(m.param_budget or 0), tolerance=m.budget_tolerance, in_features=in_features,
                num_classes=num_classes, bias=m.bias, batchnorm=m.batchnorm,
            )
        return self._widths[key]

    def info(self, arch: str, dataset: str) -> dict[str, Any]:
        """How ``arch`` is built on ``dataset``: width and parameter count."""
        m = self.config.model
        width = self.width(arch, dataset)
        in_features, num_classes = self.shape(dataset)
        params = self.space.count_params(arch, width=width, in_features=in_features, num_classes=num_classes,
                                         bias=m.bias, batchnorm=m.batchnorm)
        return {"width": width, "params": params}

    def build_model(self, arch: str, dataset: str, seed: int) -> Any:
        """The initialized model of ``arch`` for ``dataset`` with init seed ``seed``."""
        m = self.config.model
        in_features, num_classes = self.shape(dataset)
        return self.space.build_model(
            arch, in_features=in_features, num_classes=num_classes, width=self.width(arch, dataset),
            init=m.init, bias=m.bias, batchnorm=m.batchnorm, seed=seed, device=self.device,
        )


# --------------------------------------------------------------------------- task kinds


class TaskKind:
    """Base class of task kinds.

    Attributes:
        name: Registered name; also the task column of the store.
        uses_data: One task per dataset (else one dataset-free task, dataset ``""``).
        uses_seed: One task per seed (else one task with seed 0).
        chunk_size: Tasks of this kind bundled into one job when not batched (cheap tasks).
        priority: Jobs of kinds with lower priority are submitted first (long jobs first).
        options_model: Pydantic model validating ``[tasks.<name>]`` (plug-in kinds).
    """

    name: str = "?"
    uses_data: bool = True
    uses_seed: bool = True
    chunk_size: int = 1
    priority: int = 5
    options_model: type[BaseModel] | None = None

    def options(self, config: StudyConfig) -> Any:
        """This kind's validated options from the config (``[tasks.<name>]`` by default)."""
        raw = config.task_sections()[self.name]
        if self.options_model is None or isinstance(raw, BaseModel):
            return raw
        return self.options_model.model_validate(raw)

    def validate(self, config: StudyConfig, archs: Sequence[str]) -> list[str]:
        """Semantic problems with the config for this kind, as ``"path: message"`` lines."""
        if self.options_model is None or self.name not in config.tasks:
            return []
        try:
            self.options_model.model_validate(config.tasks[self.name])
        except ValidationError as err:
            return format_validation_error(err, self.options_model, prefix=("tasks", self.name))
        return []

    def hash_inputs(self, config: StudyConfig, options: Any, dataset: str) -> Any:
        """Everything a result depends on besides (arch, dataset, seed) and the code version."""
        data_opts = config.data.options_for(dataset) if (config.data is not None and dataset) else {}
        opts = options.model_dump(mode="json") if isinstance(options, BaseModel) else options
        return {
            "kind": self.name,
            "options": opts,
            "model": config.model.model_dump(mode="json"),
            "space": config.space.model_dump(mode="json", include={"name", "nodes", "options"}),
            "data": data_opts if self.uses_data else None,
            "device": config.device,
        }

    def group_key(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: Any) -> Hashable | None:
        """Tasks with the same non-None key can run together in :meth:`run_batch`."""
        return None

    def max_group_size(self, options: Any) -> int | None:
        """Largest batch for :meth:`run_batch` (``None``: decided by the planner)."""
        return None

    def run(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: Any) -> dict[str, Any] | TaskOutput:
        """Compute one payload. Exceptions mark the task failed (with the traceback)."""
        raise NotImplementedError

    def run_batch(
        self, ctx: TaskContext, archs: Sequence[str], dataset: str, seed: int, options: Any
    ) -> Sequence[dict[str, Any] | TaskOutput | BaseException]:
        """Compute many payloads at once (default: :meth:`run` in a loop).

        Returns:
            One entry per arch, in order: a payload, a :class:`TaskOutput`, or the
            exception that arch failed with.
        """
        out: list[dict[str, Any] | TaskOutput | BaseException] = []
        for arch in archs:
            try:
                out.append(self.run(ctx, arch, dataset, seed, options))
            except Exception as err:  # noqa: BLE001 - recorded per task
                out.append(err)
        return out


_TASKS: Registry[TaskKind] = Registry("task kind")


def register_task(kind: TaskKind) -> TaskKind:
    """Register a task kind instance under ``kind.name``.

    Raises:
        DuplicateNameError: The name is taken.
    """
    if not isinstance(kind, TaskKind):
        raise TypeError(f"register_task expects a TaskKind instance, got {type(kind).__name__}")
    return _TASKS.register(kind.name, kind)


def get_task(name: str) -> TaskKind:
    """The task kind called ``name``.

    Raises:
        UnknownNameError: Unknown name (lists the valid names and the closest match).
    """
    return _TASKS.get(name)


def list_tasks() -> list[str]:
    """Names of the registered task kinds."""
    return _TASKS.names()


# --------------------------------------------------------------------------- probe


class ProbeOptions(BaseModel):
    """Options of the ``probe`` task kind.

    Attributes:
        values: Number of pseudo-random values in the payload.
        sleep: Seconds each task sleeps (to simulate work).
        fail: Architectures whose task raises ``RuntimeError``.
        diverge: Architectures whose result is marked diverged.
        crash: Architectures whose task kills its worker process (``os._exit``), to test how
            executors survive a dying worker; in the driver process (serial executor) it
            raises instead.
        batched: Run tasks of one (dataset, seed) through :meth:`run_batch` in one job.
        group_size: Most tasks per batched job.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    values: int = Field(2, ge=1, le=100)
    sleep: float = Field(0.0, ge=0, le=60)
    fail: tuple[str, ...] = ()
    diverge: tuple[str, ...] = ()
    crash: tuple[str, ...] = ()
    batched: bool = False
    group_size: int = Field(8, ge=1)


class ProbeTask(TaskKind):
    """Diagnostic task kind: deterministic values from ``sha256(arch, dataset, seed)``.

    Needs no torch and no data, so it checks executors, stores and clusters in seconds.
    """

    name = "probe"
    uses_data = True
    uses_seed = True
    options_model = ProbeOptions

    @staticmethod
    def expected(arch: str, dataset: str, seed: int, values: int) -> dict[str, float]:
        """The payload values a probe task produces (the reference for tests)."""
        out = {}
        for i in range(values):
            digest = hashlib.sha256(f"{arch}|{dataset}|{seed}|{i}".encode()).digest()
            out[f"probe_{i}"] = int.from_bytes(digest[:8], "big") / 2.0**64
        return out

    def _one(self, arch: str, dataset: str, seed: int, options: ProbeOptions) -> dict[str, Any] | TaskOutput:
        if options.sleep:
            time.sleep(options.sleep)
        if arch in options.fail:
            raise RuntimeError(f"probe: planted failure for {arch}")
        if arch in options.crash:
            import multiprocessing

            if multiprocessing.parent_process() is None:
                raise RuntimeError(f"probe: planted crash for {arch} (not a worker process, so not exiting)")
            os._exit(70)
        payload: dict[str, Any] = dict(self.expected(arch, dataset, seed, options.values))
        payload["extras"] = {"pid": os.getpid()}
        if arch in options.diverge:
            return TaskOutput(payload, status="diverged")
        return payload

    def run(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: ProbeOptions) -> Any:
        return self._one(arch, dataset, seed, options)

    def group_key(self, ctx: TaskContext, arch: str, dataset: str, seed: int, options: ProbeOptions) -> Hashable | None:
        return ("probe", dataset, seed) if options.batched else None

    def max_group_size(self, options: ProbeOptions) -> int | None:
        return options.group_size

    def hash_inputs(self, config: StudyConfig, options: Any, dataset: str) -> Any:
        out = super().hash_inputs(config, options, dataset)
        out["options"] = {"values": options.values}  # delays/failures do not change values
        return out


register_task(ProbeTask())


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """A unit of work sent to a worker: tasks of one kind, dataset and seed.

    Attributes:
        task: Task kind name.
        dataset: Dataset name (``""`` for dataset-free kinds).
        seed: Seed.
        archs: Architectures.
        batched: Run through :meth:`TaskKind.run_batch` as one computation.
        config_json: The study config (:meth:`StudyConfig.to_json`).
        threads: torch threads for the worker (``None``: unchanged).
    """

    task: str
    dataset: str
    seed: int
    archs: tuple[str, ...]
    batched: bool
    config_json: str
    threads: int | None = None

    def keys(self) -> list[TaskKey]:
        return [TaskKey(a, self.task, self.dataset, self.seed) for a in self.archs]


@dataclass(frozen=True)
class Outcome:
    """What a worker reports for one task.

    Attributes:
        key: The task.
        status: ``complete``, ``diverged`` or ``failed``.
        payload: Canonical JSON payload (``None`` when failed).
        error: Traceback text when failed.
        started_at: ISO time the computation started.
        finished_at: ISO time it ended.
        seconds: Wall seconds (a batched job's time split evenly over its tasks).
        worker: ``host:pid`` of the worker.
    """

    key: TaskKey
    status: str
    payload: str | None
    error: str | None
    started_at: str
    finished_at: str
    seconds: float
    worker: str


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
    """Import the config's plug-ins and the built-in task kinds (idempotent)."""
    importlib.import_module("trilemma.study._builtin")  # registers theory, measures, train

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


def task_hash(kind: TaskKind, config: StudyConfig, options: Any, dataset: str) -> str:
    """Hash of :meth:`TaskKind.hash_inputs` (rows computed under another hash are stale)."""
    return stable_hash(kind.hash_inputs(config, options, dataset))


def check_task_names(config: StudyConfig) -> list[str]:
    """Problems with ``[tasks.*]`` names (unknown kinds), as ``path: message`` lines."""
    lines = []
    builtin_sections = {"theory": "theory", "measures": "measures", "train": "training"}
    for name in config.tasks:
        if name in builtin_sections:
            lines.append(f"tasks.{name}: configure the built-in {name!r} task in its own [{builtin_sections[name]}] section")
            continue
        try:
            get_task(name)
        except KeyError as err:
            lines.append(f"tasks.{name}: {err}")
    return lines

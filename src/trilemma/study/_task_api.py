"""The task API: what a task kind is, what it returns, and the units of work sent to workers.

A study is a set of *tasks*, one per ``(architecture, task kind, dataset, seed)``; that tuple
(:class:`TaskKey`) is the store's key. Each task kind is a :class:`TaskKind` registered by name
(:func:`register_task`); it declares the columns it produces (:meth:`TaskKind.columns`, the
study's :class:`~trilemma._schema.ResultSchema` is their union), the space capabilities it
needs (:attr:`TaskKind.requires`), and computes one payload (:meth:`TaskKind.run`) or many at
once (:meth:`TaskKind.run_batch`, for tasks with the same :meth:`TaskKind.group_key`, e.g.
training many cells of one shape as one batched computation).

A payload is a JSON-serializable dict: scalar results under their declared column names,
and three reserved keys: ``"info"`` (``{"width": .., "params": ..}``: how the model was
built), ``"curves"`` (``{name: [per-epoch values]}``) and ``"extras"`` (anything else worth
keeping). Non-finite floats are stored as ``null``. A kind may return :class:`TaskOutput` to
mark a result ``"diverged"``. Check a new kind with :func:`trilemma.testing.check_task_kind`.

A *study-level* kind (:attr:`TaskKind.study_level`) has no per-architecture tasks: it runs once
per dataset and seed, in the driver, after every per-architecture task of the run is final,
on the study's results table (:meth:`TaskKind.run_study`), and its JSON output is stored with
the study (:func:`trilemma.study.load_outputs`), e.g. a search that trains a few new
architectures chosen from the trained ones.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from trilemma._registry import Registry
from trilemma._schema import Column
from trilemma.study._config import StudyConfig, format_validation_error, stable_hash

if TYPE_CHECKING:
    from trilemma.study._context import TaskContext

__all__ = [
    "RESERVED_KEYS",
    "STATUSES",
    "Job",
    "Outcome",
    "TaskKey",
    "TaskKind",
    "TaskOutput",
    "check_task_names",
    "encode_payload",
    "get_task",
    "list_tasks",
    "now_iso",
    "register_task",
    "task_hash",
    "unregister_task",
]

#: Row statuses in the store. ``complete`` and ``diverged`` are final.
STATUSES = ("pending", "running", "complete", "failed", "diverged")
#: Payload keys that are not result columns.
RESERVED_KEYS = ("info", "curves", "extras")


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


class TaskKind:
    """Base class of task kinds.

    Attributes:
        name: Registered name; also the task column of the store.
        uses_data: One task per dataset (else one dataset-free task, dataset ``""``).
        uses_seed: One task per seed (else one task with seed 0).
        chunk_size: Tasks of this kind bundled into one job when not batched (cheap tasks).
        priority: Jobs of kinds with lower priority are submitted first: kinds that take seconds
            for a whole space (closed form, lookups) first, so partial results can be reported at
            once; then long jobs before short ones, which fill the gaps.
        options_model: Pydantic model validating ``[tasks.<name>]`` (plug-in kinds).
        requires: Space capabilities (:data:`~trilemma.spaces.CAPABILITIES`) the kind needs;
            planning refuses a study whose space lacks one.
        study_level: The kind runs once per (dataset, seed) on the study's results
            (:meth:`run_study`) instead of once per architecture (module docstring).
    """

    name: str = "?"
    uses_data: bool = True
    uses_seed: bool = True
    chunk_size: int = 1
    priority: int = 5
    options_model: type[BaseModel] | None = None
    requires: frozenset[str] = frozenset()
    study_level: bool = False

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

    def select(self, options: Any, archs: Sequence[str], space: Any = None) -> list[str]:
        """The architectures this kind runs on: all of the study's, those whose descriptive
        columns match its ``only = {column: value}`` option (needs the study's ``space``), then
        the seeded subset its options ask for (``sample = {n, seed}`` in its section)."""
        only = getattr(options, "only", None)
        if only and space is not None:
            archs = [a for a in archs if all(space.describe(a).get(k) == v for k, v in only.items())]
        sample = getattr(options, "sample", None)
        if sample is None:
            return list(archs)
        if sample.n > len(archs):
            from trilemma.errors import ConfigError

            raise ConfigError(f"{self.name}.sample.n: cannot draw {sample.n} of the study's {len(archs)} architectures")
        picked = set(random.Random(sample.seed).sample(range(len(archs)), sample.n))
        return [a for i, a in enumerate(archs) if i in picked]

    def columns(self, ctx: TaskContext, options: Any) -> tuple[Column, ...]:
        """The result columns this kind's payloads hold (their names, kinds and directions).

        Every scalar payload key outside :data:`RESERVED_KEYS` should be declared here; an
        undeclared one is still read back, without a direction.
        """
        return ()

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

    def run_study(self, ctx: TaskContext, results: Any, dataset: str, seed: int, options: Any) -> dict[str, Any]:
        """Compute a study-level kind's output (JSON-serializable) from the study's results
        (a ``load_results`` table); only called when :attr:`study_level` is true."""
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
        InvalidTypeError: ``kind`` is not a :class:`TaskKind`.
        DuplicateNameError: The name is taken.
    """
    from trilemma.errors import InvalidTypeError

    if not isinstance(kind, TaskKind):
        raise InvalidTypeError(f"register_task expects a TaskKind instance, got {type(kind).__name__}")
    return _TASKS.register(kind.name, kind)


def unregister_task(name: str) -> None:
    """Remove a task kind (tests and plug-ins that re-register)."""
    _TASKS.unregister(name)


def get_task(name: str) -> TaskKind:
    """The task kind called ``name``.

    Raises:
        UnknownNameError: Unknown name (lists the valid names and the closest match).
    """
    return _TASKS.get(name)


def list_tasks() -> list[str]:
    """Names of the registered task kinds."""
    return _TASKS.names()


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

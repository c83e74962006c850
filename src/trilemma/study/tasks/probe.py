"""The diagnostic ``probe`` task kind: deterministic values, optional delay, planted failures and crashes.

Torch-free and data-free, so it checks executors, stores and clusters in seconds.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Hashable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trilemma._schema import Column
from trilemma.study._config import StudyConfig
from trilemma.study._context import TaskContext
from trilemma.study._task_api import TaskKind, TaskOutput

__all__ = ["ProbeOptions", "ProbeTask"]


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

    def columns(self, ctx: TaskContext, options: ProbeOptions) -> tuple[Column, ...]:
        return tuple(Column(f"probe_{i}", "info", description="a deterministic pseudo-random value", source="probe")
                     for i in range(options.values))

    def hash_inputs(self, config: StudyConfig, options: Any, dataset: str) -> Any:
        out = super().hash_inputs(config, options, dataset)
        out["options"] = {"values": options.values}  # delays/failures do not change values
        return out




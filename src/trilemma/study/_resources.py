"""What a study needs before it runs: its datasets on disk and enough memory for its largest job.

:func:`plan_study` calls :func:`check_datasets` and :func:`check_memory`, so that a study
that cannot run is refused with one clear message instead of filling its store with failed
rows (a missing ``cifar10``) or trying to allocate terabytes (``width = 10**9``).

The memory estimate of one model is ``itemsize × (params × (2 + optimizer states) +
batch × activations per sample × 2)``: weights and gradients, the optimizer's state
(momentum: 1, Adam: 2), and every module's output kept for the backward pass (counted once
more for its gradient). Parameters and activations are counted on PyTorch's ``meta``
device: the model is built without memory and one sample is pushed through it, so the
count is exact for any space whose builder accepts a ``device`` and costs no allocation.
A batched training job holds many models at once, and each local worker runs one job.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trilemma.errors import TrilemmaError
from trilemma.spaces import ArchSpace

if TYPE_CHECKING:
    from trilemma.study._context import TaskContext

__all__ = ["check_device", "MemoryEstimate", "machine_memory", "model_footprint", "check_datasets", "check_memory", "format_bytes"]

logger = logging.getLogger(__name__)

#: Architectures whose footprint is measured when the space has no closed-form parameter count.
_MAX_PROBED = 32


def format_bytes(n: float) -> str:
    """``1.5 GiB``-style text."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} EiB"  # pragma: no cover


def machine_memory(device: str = "cpu") -> int | None:
    """Total memory of the device studies run on, in bytes (``None`` when unknown).

    CPU: the machine's physical memory (``/proc/meminfo`` or ``sysconf``). CUDA: the GPU's.
    """
    if device.startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                index = int(device.split(":")[1]) if ":" in device else 0
                return int(torch.cuda.get_device_properties(index).total_memory)
        except (ImportError, RuntimeError, ValueError):  # pragma: no cover - no usable GPU
            return None
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


@dataclass(frozen=True)
class ModelFootprint:
    """Sizes of one model, counted on the meta device.

    Attributes:
        params: Trainable parameters.
        activations: Numbers produced by the model's leaf modules for one sample.
    """

    params: int
    activations: int


def model_footprint(ctx: TaskContext, arch: str, dataset: str) -> ModelFootprint:
    """Parameters and per-sample activations of ``arch`` as the study builds it.

    Raises:
        TrilemmaError: The model cannot be built on the meta device (the caller skips the check).
    """
    import torch

    sample_shape = ctx.input_shape(dataset)
    try:
        model = ctx.build_model(arch, dataset, None, device="meta")
        sizes: list[int] = []
        hooks = [mod.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()))
                 for mod in model.modules() if not list(mod.children())]
        try:
            model.eval()
            with torch.no_grad():
                model(torch.empty((1, *sample_shape), device="meta"))
        finally:
            for h in hooks:
                h.remove()
    except TrilemmaError:
        raise
    except Exception as err:  # noqa: BLE001 - any builder that does not support the meta device
        raise TrilemmaError(f"cannot count the model of {arch!r} on the meta device: {err}") from err
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ModelFootprint(int(params), int(sum(sizes)))


@dataclass(frozen=True)
class MemoryEstimate:
    """The memory of the study's largest job.

    Attributes:
        arch: The largest architecture.
        params: Its parameter count.
        per_model: Bytes of one model at the largest batch (weights, gradients, optimizer
            state, activations).
        models_per_job: Models one job holds at once (batched training holds many).
        jobs_at_once: Jobs running at the same time on this machine.
        total: ``per_model × models_per_job × jobs_at_once``.
        limit: The machine's memory.
    """

    arch: str
    params: int
    per_model: int
    models_per_job: int
    jobs_at_once: int
    total: int
    limit: int | None

    def describe(self) -> str:
        return (f"{format_bytes(self.total)} (largest model {self.arch!r}: {self.params:,} parameters, "
                f"{format_bytes(self.per_model)} at the configured batch; {self.models_per_job} model(s) per job, "
                f"{self.jobs_at_once} job(s) at once)")


def _optimizer_states(protocol: dict[str, Any]) -> int:
    name = str(protocol.get("optimizer", "sgd")).lower()
    if name.startswith("adam"):
        return 2
    return 1 if float(protocol.get("momentum", 0.0) or 0.0) > 0 else 0


def estimate_memory(ctx: TaskContext, archs: Sequence[str], n_workers: int) -> MemoryEstimate | None:
    """Estimate the memory of the study's largest job (``None`` when it cannot be estimated)."""
    cfg = ctx.config
    datasets = cfg.datasets
    if not datasets or not archs:
        return None
    dataset = datasets[0]
    itemsize = 8 if "float64" in str((cfg.training.protocol if cfg.training else {}).get("dtype", "")) else 4
    # the largest architecture: by the closed-form parameter count when the space has one
    candidates = list(archs)
    m = cfg.model
    if type(ctx.space).count_params is not ArchSpace.count_params:  # a closed-form count: find the largest
        in_features, num_classes = ctx.shape(dataset)
        sized = [(ctx.space.count_params(a, recipe=ctx.recipe, width=ctx.width(a, dataset), in_features=in_features,
                                         num_classes=num_classes, input_shape=ctx.input_shape(dataset)), a)
                 for a in candidates]
        probe = [max(sized)[1]]
    else:  # counting means building (on the meta device): an even sample of the space
        step = max(1, math.ceil(len(candidates) / _MAX_PROBED))
        probe = candidates[::step]
    best: tuple[int, str, ModelFootprint] | None = None
    states, batch, per_job = 0, 0, 1
    if cfg.training is not None and cfg.training.enabled:
        protocol = dict(cfg.training.protocol)
        states = _optimizer_states(protocol)
        batch = int(protocol.get("batch_size", 128))
        if cfg.training.batched and not m.batchnorm:
            cap = cfg.training.group_size
            per_job = min(len(archs), 128 if cap == "auto" else int(cap))
    if cfg.measures is not None and cfg.measures.enabled:
        batch = max(batch, cfg.measures.batch_size)
    for a in probe:
        try:
            fp = model_footprint(ctx, a, dataset)
        except TrilemmaError as err:
            logger.info("memory check skipped: %s", err)
            return None
        size = itemsize * (fp.params * (2 + states) + max(batch, 1) * fp.activations * 2)
        if best is None or size > best[0]:
            best = (size, a, fp)
    if best is None:
        return None
    size, arch, fp = best
    jobs = 1 if cfg.executor.kind == "serial" else max(1, n_workers)
    total = size * per_job * jobs
    return MemoryEstimate(arch, fp.params, size, per_job, jobs, total, machine_memory(cfg.device))


def check_memory(ctx: TaskContext, archs: Sequence[str], n_workers: int) -> list[str]:
    """Config lines refusing a study whose largest job does not fit the machine's memory."""
    est = estimate_memory(ctx, archs, n_workers)
    if est is None or est.limit is None:
        return []
    logger.info("memory estimate: %s of %s", est.describe(), format_bytes(est.limit))
    if est.total <= est.limit:
        return []
    return [f"model: the study needs about {est.describe()}, more than this machine's "
            f"{format_bytes(est.limit)}; reduce model.width / training.batch_size / executor.n_workers, "
            f"or pass --force (run_study(..., force=True)) to run anyway"]


def check_datasets(ctx: TaskContext) -> list[str]:
    """Config lines for datasets that cannot be loaded (missing files, bad options)."""
    lines = []
    for i, name in enumerate(ctx.config.datasets):
        try:
            ctx.dataset(name)
        except TrilemmaError as err:
            lines.append(f"data.names[{i}]: dataset {name!r} is not available: {err}")
    return lines


def check_device(device: str) -> list[str]:
    """Config lines refusing a device that this machine does not have."""
    if not device.startswith("cuda"):
        return []
    import torch

    if not torch.cuda.is_available():
        return [f"device: {device!r} was asked for, but no CUDA device is available "
                f"(torch.cuda.is_available() is False); use device = 'cpu' or 'auto'"]
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        return [f"device: {device!r} was asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)"]
    return []

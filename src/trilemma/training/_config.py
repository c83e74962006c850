"""Training configuration (the papers' protocol by default) and training results."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from trilemma._checks import is_int, is_real
from trilemma.errors import ConfigError, InvalidArgumentError, InvalidTypeError

__all__ = [
    "TrainConfig",
    "TrainResult",
    "EpochRecord",
    "EpochCallback",
    "lr_at",
    "resolve_device",
    "synchronize",
    "OPTIMIZERS",
    "LOSSES",
    "SCHEDULES",
    "STATUSES",
    "AUTOCAST",
    "bf16_matmul_is_native",
]

OPTIMIZERS = ("sgd", "adam")
LOSSES = ("auto", "cross_entropy", "mse")
SCHEDULES = ("constant", "cosine", "step")
STATUSES = ("completed", "diverged")
AUTOCAST = (None, "bfloat16")
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _check_int(name: str, value: object, minimum: int) -> None:
    if not is_int(value):
        raise InvalidTypeError(f"TrainConfig.{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise InvalidArgumentError(f"TrainConfig.{name} must be >= {minimum}, got {value}")


def _check_float(name: str, value: object, lo: float, hi: float = math.inf, *, lo_open: bool = False,
                 hi_open: bool = False) -> None:
    if not is_real(value):
        raise InvalidTypeError(f"TrainConfig.{name} must be a number, got {type(value).__name__} {value!r}")
    ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        lo_s = f"{'(' if lo_open else '['}{lo}"
        hi_s = f"{hi}{')' if hi_open else ']'}"
        raise InvalidArgumentError(f"TrainConfig.{name} must be a finite number in {lo_s}, {hi_s}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. The defaults are the papers' protocol (Chen, Huang & Wang, AutoML-Conf 2023).

    Plain mini-batch SGD, constant learning rate, batch 128, cross-entropy, no augmentation,
    no weight decay, no momentum. The default learning rate 0.1 is our choice for
    standardized inputs (``load_dataset``'s default for labelled images); the papers do
    not fix one across datasets. Inputs with unit L2 norm per sample train much more
    slowly at this rate.

    Attributes:
        epochs: Number of passes over the training set.
        batch_size: Mini-batch size; the last mini-batch of an epoch is smaller unless
            ``drop_last``.
        lr: Base learning rate.
        optimizer: ``"sgd"`` (``torch.optim.SGD`` semantics) or ``"adam"``.
        momentum: SGD momentum (0 = plain SGD).
        weight_decay: L2 penalty added to the gradient (both optimizers, PyTorch semantics).
        betas: Adam's ``(beta1, beta2)``.
        adam_eps: Adam's epsilon.
        loss: ``"cross_entropy"``, ``"mse"`` (mean over samples and outputs; classification
            targets become one-hot vectors) or ``"auto"`` (cross-entropy for classification,
            MSE for regression).
        schedule: ``"constant"``, ``"cosine"`` (per epoch from ``lr`` to ``min_lr``) or
            ``"step"`` (multiply by ``gamma`` every ``step_size`` epochs). See :func:`lr_at`.
        step_size: Epochs between steps of the ``"step"`` schedule.
        gamma: Factor of the ``"step"`` schedule.
        min_lr: Final learning rate of the ``"cosine"`` schedule.
        seed: Seed of the mini-batch order (a ``torch.Generator`` on the CPU draws one
            ``randperm`` per epoch). Model initialization is seeded where the model is built.
        device: Where to train (``None``: where the model's parameters are).
        dtype: ``"float32"``/``"float64"``/... or a ``torch.dtype`` (``None``: the model's).
        eval_every: Evaluate the test set every this many epochs and after the last one
            (0 = never).
        full_train_eval: Also evaluate the training set by a full pass in eval mode after
            each evaluated epoch (the default training curve is the running mean, below).
        eval_batch_size: Rows per forward pass during evaluation.
        drop_last: Drop the last, smaller mini-batch of every epoch.
        autocast: ``None`` (default: everything in ``dtype``) or ``"bfloat16"``: mixed
            precision as ``torch.autocast`` does it, i.e. float32 master weights, the
            linear layers (forward and both gradients) and the activations between them
            in bfloat16, losses and the weight update in float32. Needs ``dtype`` float32.
            It pays off only where bfloat16 matrix multiplication is native (CPUs with
            AVX512-BF16 or AMX, recent GPUs); elsewhere it is emulated and much slower (a
            warning is logged). Accuracy impact: see ``benchmarks/train_space.py --autocast``.
    """

    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.1
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    loss: Literal["auto", "cross_entropy", "mse"] = "auto"
    schedule: Literal["constant", "cosine", "step"] = "constant"
    step_size: int = 30
    gamma: float = 0.1
    min_lr: float = 0.0
    seed: int = 0
    device: str | None = None
    dtype: str | None = None
    eval_every: int = 1
    full_train_eval: bool = False
    eval_batch_size: int = 4096
    drop_last: bool = False
    autocast: Literal["bfloat16"] | None = None

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_float("lr", self.lr, 0.0, lo_open=True)
        if self.optimizer not in OPTIMIZERS:
            raise InvalidArgumentError(f"TrainConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        _check_float("momentum", self.momentum, 0.0, 1.0, hi_open=True)
        if self.optimizer == "adam" and self.momentum:
            raise InvalidArgumentError("TrainConfig.momentum applies to SGD only; Adam uses betas")
        _check_float("weight_decay", self.weight_decay, 0.0)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise InvalidTypeError(f"TrainConfig.betas must be a pair of numbers, got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        for i, b in enumerate(self.betas):
            _check_float(f"betas[{i}]", b, 0.0, 1.0, hi_open=True)
        _check_float("adam_eps", self.adam_eps, 0.0, lo_open=True)
        if self.loss not in LOSSES:
            raise InvalidArgumentError(f"TrainConfig.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.schedule not in SCHEDULES:
            raise InvalidArgumentError(f"TrainConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _check_int("step_size", self.step_size, 1)
        _check_float("gamma", self.gamma, 0.0, lo_open=True)
        _check_float("min_lr", self.min_lr, 0.0)
        _check_int("seed", self.seed, 0)
        if self.device is not None and not isinstance(self.device, (str, torch.device)):
            raise InvalidTypeError(f"TrainConfig.device must be a str like 'cpu' or 'cuda:0', got {self.device!r}")
        if isinstance(self.device, torch.device):
            object.__setattr__(self, "device", str(self.device))
        if isinstance(self.dtype, torch.dtype):
            names = {v: k for k, v in _DTYPES.items()}
            if self.dtype not in names:
                raise InvalidArgumentError(f"TrainConfig.dtype must be one of {sorted(_DTYPES)}, got {self.dtype}")
            object.__setattr__(self, "dtype", names[self.dtype])
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise InvalidArgumentError(f"TrainConfig.dtype must be one of {sorted(_DTYPES)} or None, got {self.dtype!r}")
        _check_int("eval_every", self.eval_every, 0)
        if not isinstance(self.full_train_eval, bool):
            raise InvalidTypeError(f"TrainConfig.full_train_eval must be a bool, got {self.full_train_eval!r}")
        _check_int("eval_batch_size", self.eval_batch_size, 1)
        if not isinstance(self.drop_last, bool):
            raise InvalidTypeError(f"TrainConfig.drop_last must be a bool, got {self.drop_last!r}")
        if self.autocast not in AUTOCAST:
            raise InvalidArgumentError(f"TrainConfig.autocast must be one of {AUTOCAST}, got {self.autocast!r}")
        if self.autocast is not None and self.dtype not in (None, "float32"):
            raise InvalidArgumentError(
                f"TrainConfig.autocast={self.autocast!r} needs float32 master weights (dtype None or 'float32'), "
                f"got dtype={self.dtype!r}")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """``autocast`` as a ``torch.dtype`` (``None`` when off)."""
        return None if self.autocast is None else _DTYPES[self.autocast]

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """``dtype`` as a ``torch.dtype`` (``None`` when unset)."""
        return None if self.dtype is None else _DTYPES[self.dtype]

    def resolved_loss(self, task: str) -> str:
        """The loss actually used for a dataset ``task``.

        Raises:
            InvalidArgumentError: cross-entropy on a regression task, or an unlabeled task.
        """
        if task == "unlabeled":
            raise InvalidArgumentError("cannot train on an unlabeled dataset (task='unlabeled')")
        if self.loss == "auto":
            return "cross_entropy" if task == "classification" else "mse"
        if self.loss == "cross_entropy" and task != "classification":
            raise InvalidArgumentError(f"loss='cross_entropy' needs a classification dataset, got task={task!r}")
        return self.loss

    def evaluates(self, epoch: int) -> bool:
        """Whether the test set is evaluated after ``epoch`` (1-based)."""
        return self.eval_every > 0 and (epoch % self.eval_every == 0 or epoch == self.epochs)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (round-trips through :meth:`from_dict`)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping, e.g. a TOML table.

        Raises:
            ConfigError: an unknown key (with the closest valid key) or an invalid value.
        """
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in valid:
                close = difflib.get_close_matches(str(key), valid, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown training option {key!r}{hint} Valid options: {', '.join(valid)}")
        values = dict(data)
        if "betas" in values and isinstance(values["betas"], list):
            values["betas"] = tuple(values["betas"])
        try:
            return cls(**values)
        except (InvalidArgumentError, InvalidTypeError) as exc:
            raise ConfigError(str(exc)) from exc


def resolve_device(device: str | torch.device | None, default: torch.device | str = "cpu") -> torch.device:
    """The ``torch.device`` to train on, checked before any tensor is moved there.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... or ``None`` (then ``default``).
        default: Used when ``device`` is ``None``.

    Returns:
        The device (CUDA only when asked for; never chosen silently).

    Raises:
        InvalidArgumentError: the name is not a device, or CUDA/MPS is asked for but not
            available in this torch build or machine, or the CUDA index does not exist.
    """
    name = default if device is None else device
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {name!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"device {str(dev)!r} was requested but CUDA is not available (torch {torch.__version__}, "
                "torch.cuda.is_available() is False); use device='cpu'")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InvalidArgumentError(f"device {str(dev)!r} does not exist: {count} CUDA device(s) visible")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidArgumentError(f"device {str(dev)!r} was requested but MPS is not available; use device='cpu'")
    return dev


def bf16_matmul_is_native(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run natively on ``device`` (else emulated, slow).

    CPU: oneDNN's bfloat16 support (AVX512-BF16 or AMX); CUDA: compute capability >= 8.0.
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def check_autocast(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``config`` on ``device``; warns (once) where it is emulated."""
    dtype = config.autocast_dtype
    if dtype is not None and not bf16_matmul_is_native(device):
        _warn_emulated(str(config.autocast), str(device))
    return dtype


@functools.cache
def _warn_emulated(autocast: str, device: str) -> None:
    logging.getLogger("trilemma.training").warning(
        "autocast=%r on %s: this device has no native bfloat16 matrix multiplication (CPU capability %s); it is "
        "emulated and much slower than float32", autocast, device, torch.backends.cpu.get_cpu_capability())


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (CUDA runs asynchronously); a no-op on the CPU.

    Call it before reading a clock so that timings cover the work, not its launch.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def lr_at(config: TrainConfig, epoch: int) -> float:
    """Learning rate used during ``epoch`` (0-based), constant within an epoch.

    ``constant``: ``lr``; ``step``: ``lr · gamma^⌊epoch / step_size⌋``; ``cosine``:
    ``min_lr + (lr − min_lr)(1 + cos(π · epoch / epochs)) / 2``.
    """
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        return config.lr * config.gamma ** (epoch // config.step_size)
    return config.min_lr + (config.lr - config.min_lr) * (1 + math.cos(math.pi * epoch / config.epochs)) / 2


@dataclass(frozen=True)
class EpochRecord:
    """What a callback receives after every epoch of every model.

    ``test_loss``/``test_acc`` are ``None`` in epochs without evaluation; accuracies are
    ``None`` for regression. ``model_index`` is the position in ``train_batched``'s input
    (0 for :func:`train`).
    """

    epoch: int
    model_index: int
    train_loss: float
    train_acc: float | None
    test_loss: float | None
    test_acc: float | None
    lr: float


EpochCallback = Callable[[EpochRecord], None]


@dataclass
class TrainResult:
    """Learning curves and outcome of one training run.

    Epochs are 1-based: ``train_loss[i]`` belongs to epoch ``i + 1``.

    Attributes:
        status: ``"completed"`` or ``"diverged"`` (a non-finite mini-batch loss occurred;
            training stopped after that epoch, which is not recorded in the curves).
        epochs: Number of completed (recorded) epochs.
        train_loss: Per epoch, the *running* training loss: the mean of the per-sample
            losses of the epoch's mini-batches, each computed before its SGD step (the
            papers' training loss).
        train_acc: Per epoch, running training accuracy likewise (``None`` for regression).
        eval_epochs: Epochs (1-based) after which the test set was evaluated.
        test_loss: Test loss at each of ``eval_epochs`` (full pass, eval mode).
        test_acc: Test accuracy at each of ``eval_epochs`` (``None`` for regression).
        train_loss_full: Full-pass training loss at each of ``eval_epochs`` when
            ``full_train_eval`` (else ``None``).
        train_acc_full: Full-pass training accuracy likewise.
        train_step_correct: Per recorded epoch, the number of correct predictions of each
            SGD step (before its update), ``(epochs, steps)``; the sum of a row divided by
            the epoch's samples is ``train_acc``. Feeds ``steps_to_<pct>``
            (:func:`~trilemma.training.steps_to_accuracy`). ``None`` for regression.
        step_rows: Samples of each SGD step of an epoch (the same every epoch; the last
            step is smaller unless ``drop_last``).
        lr: Learning rate of every epoch run.
        diverged_epoch: The epoch in which the loss became non-finite (``None`` if not).
        num_params: Trainable parameters of the model.
        wall_time: Seconds spent training (for batched runs: the whole batch's time).
        seed: Seed of the run (initialization and data order where the trainer built the model).
        spec: Cell string, when known.
        config: The :class:`TrainConfig` used.
        loss: The loss actually used (``"cross_entropy"`` or ``"mse"``).
        final_state: Trained weights (a ``state_dict`` of the model) when requested.
        metadata: Anything else (dataset name, width, batched-run facts).
    """

    status: str
    epochs: int
    train_loss: list[float]
    train_acc: list[float] | None
    eval_epochs: list[int]
    test_loss: list[float]
    test_acc: list[float] | None
    lr: list[float]
    config: TrainConfig
    loss: str
    num_params: int
    wall_time: float
    diverged_epoch: int | None = None
    train_loss_full: list[float] | None = None
    train_acc_full: list[float] | None = None
    train_step_correct: list[list[int]] | None = None
    step_rows: list[int] | None = None
    seed: int | None = None
    spec: str | None = None
    final_state: dict[str, torch.Tensor] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    def test_loss_at(self, epoch: int) -> float | None:
        """Test loss after ``epoch`` (1-based), ``None`` when it was not evaluated then."""
        try:
            return self.test_loss[self.eval_epochs.index(epoch)]
        except ValueError:
            return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (without ``final_state``)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("final_state", "config")}
        d["config"] = self.config.to_dict()
        return d

"""Train one model with the papers' protocol (plain mini-batch SGD by default).

This is the slow, obvious reference that :func:`~trilemma.training.train_batched` must
reproduce model by model.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from trilemma.errors import InvalidArgumentError, InvalidTypeError
from trilemma.training._config import (
    EpochCallback,
    EpochRecord,
    TrainConfig,
    TrainResult,
    check_autocast,
    lr_at,
    resolve_device,
    synchronize,
)

if TYPE_CHECKING:
    from trilemma.data import Dataset
    from trilemma.spaces import CellSpec

__all__ = ["train", "train_cell", "evaluate"]

logger = logging.getLogger(__name__)


def _check_dataset(dataset: object) -> Dataset:
    from trilemma.data import Dataset

    if not isinstance(dataset, Dataset):
        raise InvalidTypeError(f"dataset must be a trilemma.data.Dataset, got {type(dataset).__name__}")
    if dataset.num_train == 0:
        raise InvalidArgumentError(f"dataset {dataset.name!r} has no training samples")
    return dataset


def _check_batches(config: TrainConfig, n: int) -> int:
    """Number of samples seen per epoch."""
    if config.drop_last:
        if config.batch_size > n:
            raise InvalidArgumentError(
                f"drop_last=True with batch_size={config.batch_size} > {n} training samples leaves no mini-batch"
            )
        return (n // config.batch_size) * config.batch_size
    return n


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def loss_sum(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Sum over samples of the per-sample loss (MSE: mean over outputs per sample).

    Args:
        out: Model outputs ``(n, k)``.
        y: Class indices ``(n,)`` or regression targets ``(n, k)``.
        loss: ``"cross_entropy"`` or ``"mse"`` (classification targets become one-hot).
    """
    if loss == "cross_entropy":
        return F.cross_entropy(out, y, reduction="sum")
    target = F.one_hot(y, out.shape[1]).to(out.dtype) if y.dim() == 1 else y
    return F.mse_loss(out, target, reduction="sum") / out.shape[1]


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str, batch_size: int = 4096,
    autocast: torch.dtype | None = None,
) -> tuple[float, float | None]:
    """Mean loss and accuracy of ``model`` on ``(x, y)`` in eval mode (mode restored after).

    Args:
        model: Any module mapping ``(n, *)`` to ``(n, k)``.
        x: Inputs ``(n, *)``; y: targets (class indices ``(n,)`` or values ``(n, k)``).
        loss: ``"cross_entropy"`` or ``"mse"``.
        batch_size: Rows per forward pass.
        autocast: Run the forward pass under ``torch.autocast`` with this dtype (``None``: off).

    Returns:
        ``(mean loss, accuracy)``; accuracy is ``None`` for regression targets.

    Raises:
        InvalidArgumentError: ``x`` is empty.
    """
    n = x.shape[0]
    if n == 0:
        raise InvalidArgumentError("cannot evaluate on an empty set")
    was_training = model.training
    model.eval()
    try:
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        correct = torch.zeros((), dtype=torch.int64, device=x.device)
        for start in range(0, n, batch_size):
            yb = y[start : start + batch_size]
            with _autocast(x.device, autocast):
                out = model(x[start : start + batch_size])
                batch_loss = loss_sum(out, yb, loss)
            total += batch_loss.double()
            if yb.dim() == 1:
                correct += (out.argmax(1) == yb).sum()
    finally:
        model.train(was_training)
    acc = correct.item() / n if y.dim() == 1 else None
    return total.item() / n, acc


def _optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, betas=config.betas, eps=config.adam_eps,
                            weight_decay=config.weight_decay)


def train(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig | None = None,
    *,
    callback: EpochCallback | None = None,
    keep_weights: bool = False,
) -> TrainResult:
    """Train ``model`` in place on ``dataset`` and record its learning curves.

    Every epoch draws a fresh permutation of the training set from a
    ``torch.Generator`` seeded with ``config.seed`` (one ``randperm`` per epoch, on the
    CPU), then takes mini-batches in that order. The recorded training loss/accuracy of an
    epoch is the running mean over its mini-batches, each computed before its update (the
    papers' curve); ``config.full_train_eval`` adds a full pass. A non-finite mini-batch
    loss marks the run ``"diverged"``: training stops at the end of that epoch, which is
    not recorded; nothing is raised.

    Args:
        model: The network (``(n, *) -> (n, k)``); moved to ``config.device``/``dtype``.
        dataset: A :class:`~trilemma.data.Dataset` (classification or regression).
        config: The protocol (default: the papers', :class:`TrainConfig`).
        callback: Called with an :class:`EpochRecord` after every recorded epoch.
        keep_weights: Store the trained ``state_dict`` (on the CPU) in the result.

    Returns:
        A :class:`TrainResult`.

    Raises:
        InvalidTypeError: ``model`` is not an ``nn.Module`` or ``dataset`` not a Dataset.
        InvalidArgumentError: the dataset cannot be trained on with this loss, or the
            model has no trainable parameters.
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise InvalidTypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    dataset = _check_dataset(dataset)
    loss_name = config.resolved_loss(dataset.task)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InvalidArgumentError("model has no trainable parameters")
    device = resolve_device(config.device, default=params[0].device)
    dtype = config.torch_dtype or params[0].dtype
    model.to(device=device, dtype=dtype)
    data = dataset.to(device=device, dtype=dtype)
    x_tr, y_tr = _flat(data.x_train), data.y_train
    x_te, y_te = _flat(data.x_test), data.y_test
    n = x_tr.shape[0]
    n_seen = _check_batches(config, n)
    B = config.batch_size
    classify = y_tr.dim() == 1
    opt = _optimizer(params, config)
    amp = check_autocast(config, device)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    rec: dict[str, Any] = {k: [] for k in ("train_loss", "train_acc", "eval_epochs", "test_loss", "test_acc",
                                           "train_loss_full", "train_acc_full", "lr", "step_correct")}
    step_rows = [min(B, n_seen - s0) for s0 in range(0, n_seen, B)]
    status, diverged_epoch = "completed", None
    start_time = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        lr = lr_at(config, epoch - 1)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        total = torch.zeros((), dtype=dtype, device=device)
        step_correct = torch.zeros(len(step_rows), dtype=torch.int64, device=device)
        for step, start in enumerate(range(0, n_seen, B)):
            idx = perm[start : start + B]
            yb = y_tr[idx]
            with _autocast(device, amp):
                out = model(x_tr[idx])
                batch_sum = loss_sum(out, yb, loss_name)
            opt.zero_grad(set_to_none=True)
            (batch_sum / idx.numel()).backward()
            opt.step()
            total += batch_sum.detach()
            if classify:
                step_correct[step] = (out.detach().argmax(1) == yb).sum()
        train_loss = total.item() / n_seen
        if not math.isfinite(train_loss):
            status, diverged_epoch = "diverged", epoch
            logger.info("diverged in epoch %d (non-finite training loss)", epoch)
            break
        rec["lr"].append(lr)
        rec["train_loss"].append(train_loss)
        train_acc = None
        if classify:
            counts = step_correct.tolist()
            rec["step_correct"].append(counts)
            train_acc = sum(counts) / n_seen
        rec["train_acc"].append(train_acc)
        test_loss = test_acc = None
        if config.evaluates(epoch) and x_te.shape[0] > 0:
            test_loss, test_acc = evaluate(model, x_te, y_te, loss_name, config.eval_batch_size, amp)
            rec["eval_epochs"].append(epoch)
            rec["test_loss"].append(test_loss)
            rec["test_acc"].append(test_acc)
            if config.full_train_eval:
                full_loss, full_acc = evaluate(model, x_tr, y_tr, loss_name, config.eval_batch_size, amp)
                rec["train_loss_full"].append(full_loss)
                rec["train_acc_full"].append(full_acc)
        logger.debug("epoch %d: lr %.4g train loss %.6g test loss %s", epoch, lr, train_loss, test_loss)
        if callback is not None:
            callback(EpochRecord(epoch, 0, train_loss, train_acc, test_loss, test_acc, lr))
    synchronize(device)
    wall = time.perf_counter() - start_time
    logger.info("trained %d epoch(s) in %.2fs: %s", len(rec["train_loss"]), wall, status)
    return TrainResult(
        status=status,
        epochs=len(rec["train_loss"]),
        train_loss=rec["train_loss"],
        train_acc=rec["train_acc"] if classify else None,
        eval_epochs=rec["eval_epochs"],
        test_loss=rec["test_loss"],
        test_acc=rec["test_acc"] if classify else None,
        lr=rec["lr"],
        config=config,
        loss=loss_name,
        num_params=sum(p.numel() for p in params),
        wall_time=wall,
        diverged_epoch=diverged_epoch,
        train_loss_full=rec["train_loss_full"] if config.full_train_eval else None,
        train_acc_full=(rec["train_acc_full"] if classify else None) if config.full_train_eval else None,
        train_step_correct=rec["step_correct"] if classify else None,
        step_rows=step_rows,
        seed=config.seed,
        final_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()} if keep_weights else None,
        metadata={"dataset": dataset.name},
    )


def train_cell(
    spec: CellSpec | str,
    dataset: Dataset,
    config: TrainConfig | None = None,
    *,
    width: int = 256,
    seed: int = 0,
    init: str = "he",
    bias: bool = True,
    batchnorm: bool = False,
    callback: EpochCallback | None = None,
    keep_weights: bool = False,
) -> TrainResult:
    """Build ``build_model(spec, ..., seed=seed)`` and :func:`train` it with data order ``seed``.

    The model is built on the CPU in ``config.dtype`` (float32 by default) and moved to
    ``config.device``. This is exactly the per-model computation of
    :func:`~trilemma.training.train_batched`.

    Raises:
        InvalidSpecError, InvalidArgumentError: from :func:`~trilemma.models.build_model`.
    """
    from trilemma.models import build_model

    config = TrainConfig() if config is None else config
    dataset = _check_dataset(dataset)
    dtype = config.torch_dtype or torch.float32
    device = resolve_device(config.device)
    model = build_model(spec, dataset.in_features, dataset.num_outputs, width, bias=bias, batchnorm=batchnorm,
                        init=init, seed=seed, device=device, dtype=dtype)  # type: ignore[arg-type]
    result = train(model, dataset, config.replace(seed=seed, dtype=str(dtype).removeprefix("torch.")),
                   callback=callback, keep_weights=keep_weights)
    result.spec = model.spec.name
    result.metadata.update({"width": width, "init": init, "bias": bias, "batchnorm": batchnorm})
    return result

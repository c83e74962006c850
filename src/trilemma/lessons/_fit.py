"""The lessons' small training loop: any ``torch.optim`` optimizer, per-epoch full passes, early stop.

:func:`trilemma.training.train` is the project's trainer (the papers' protocol: SGD or Adam);
several lessons need what it does not offer — RMSProp, AdaGrad, AdamW, a learning rate set
per epoch by any function (cyclic schedules), stopping as soon as the training set is fitted,
a hook after every epoch (snapshots). This loop keeps the trainer's conventions: a fresh
``randperm`` per epoch from a CPU ``torch.Generator`` seeded with ``seed``, the mean loss of
each mini-batch, and full passes in eval mode for the recorded curves. With plain SGD it
takes exactly the trainer's steps (a test checks that the weights agree).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from trilemma.errors import InvalidArgumentError

__all__ = ["OPTIMIZERS", "FitHistory", "fit", "make_optimizer", "evaluate"]

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adam", "adamw")


def make_optimizer(name: str, params: list[nn.Parameter], lr: float, *, weight_decay: float = 0.0,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """A ``torch.optim`` optimizer by name.

    Args:
        name: ``"sgd"`` (plain), ``"momentum"`` (heavy ball, Polyak 1964), ``"nesterov"``,
            ``"rmsprop"`` (Tieleman & Hinton 2012), ``"adagrad"`` (Duchi, Hazan & Singer 2011),
            ``"adam"`` (Kingma & Ba 2015; ``weight_decay`` is an L2 term in the gradient) or
            ``"adamw"`` (Loshchilov & Hutter 2019; decoupled weight decay).
        params: Parameters to optimize.
        lr: Learning rate.
        weight_decay: Weight decay (PyTorch's semantics of each optimizer).
        momentum: Momentum of ``"momentum"`` / ``"nesterov"``.

    Raises:
        InvalidArgumentError: Unknown name or a non-positive learning rate.
    """
    if name not in OPTIMIZERS:
        raise InvalidArgumentError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InvalidArgumentError(f"lr must be a positive finite number, got {lr!r}")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name in ("momentum", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=name == "nesterov",
                               weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)`` in eval mode (mode restored)."""
    was = model.training
    model.eval()
    try:
        out = model(x)
        return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).double().mean())
    finally:
        model.train(was)


@dataclass
class FitHistory:
    """Per-epoch curves of :func:`fit` (epochs are 1-based; full passes in eval mode).

    Attributes:
        epochs: Epochs evaluated.
        train_loss, train_acc: Training-set loss and accuracy after each of ``epochs``.
        test_loss, test_acc: Test-set values (empty without a test set).
        lr: Learning rate of every epoch run.
        diverged: A mini-batch loss became non-finite (training stopped in that epoch).
        stopped_early: Training stopped because ``stop_at_train_acc`` was reached.
        initial_train_loss: Training loss before the first step.
    """

    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    diverged: bool = False
    stopped_early: bool = False
    initial_train_loss: float = math.nan

    def first_epoch(self, values: list[float], threshold: float, *, below: bool = False) -> int | None:
        """The first evaluated epoch whose value is ``≥ threshold`` (``≤`` with ``below``), else ``None``."""
        for epoch, v in zip(self.epochs, values):
            if (v <= threshold) if below else (v >= threshold):
                return epoch
        return None


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    optimizer: str = "sgd",
    lr: float | Callable[[int], float] = 0.1,
    epochs: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    weight_decay: float = 0.0,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    stop_at_train_acc: float | None = None,
    after_epoch: Callable[[int, nn.Module], None] | None = None,
) -> FitHistory:
    """Train a classifier in place with mini-batch cross-entropy and record full-pass curves.

    Args:
        model: Maps ``(n, *)`` inputs to ``(n, k)`` class scores.
        x: Training inputs ``(n, *)``; y: class indices ``(n,)``.
        optimizer: A name from :data:`OPTIMIZERS`.
        lr: Learning rate, or a function ``epoch (0-based) -> learning rate``.
        epochs: Maximum number of epochs.
        batch_size: Mini-batch size (the last one of an epoch may be smaller).
        seed: Seed of the mini-batch order.
        weight_decay: Weight decay of the optimizer.
        x_test, y_test: Optional test set, evaluated after every epoch.
        stop_at_train_acc: Stop after the first epoch whose training accuracy reaches this.
        after_epoch: Called as ``after_epoch(epoch, model)`` after every epoch (1-based).

    Returns:
        The :class:`FitHistory`.

    Raises:
        InvalidArgumentError: Non-positive ``epochs`` / ``batch_size`` or an empty training set.
    """
    if epochs < 1 or batch_size < 1 or x.shape[0] == 0:
        raise InvalidArgumentError(
            f"need epochs ≥ 1, batch_size ≥ 1 and a non-empty training set, got epochs={epochs}, "
            f"batch_size={batch_size}, n={x.shape[0]}")
    schedule = lr if callable(lr) else (lambda _epoch: float(lr))
    opt = make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], schedule(0),
                         weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    hist = FitHistory(initial_train_loss=evaluate(model, x, y)[0])
    n = x.shape[0]
    model.train()
    for epoch in range(1, epochs + 1):
        rate = schedule(epoch - 1)
        for group in opt.param_groups:
            group["lr"] = rate
        hist.lr.append(rate)
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            if not torch.isfinite(loss):
                hist.diverged = True
                return hist
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        train_loss, train_acc = evaluate(model, x, y)
        hist.epochs.append(epoch)
        hist.train_loss.append(train_loss)
        hist.train_acc.append(train_acc)
        if x_test is not None and y_test is not None:
            test_loss, test_acc = evaluate(model, x_test, y_test)
            hist.test_loss.append(test_loss)
            hist.test_acc.append(test_acc)
        if after_epoch is not None:
            after_epoch(epoch, model)
        if not math.isfinite(train_loss):
            hist.diverged = True
            return hist
        if stop_at_train_acc is not None and train_acc >= stop_at_train_acc:
            hist.stopped_early = True
            break
    return hist

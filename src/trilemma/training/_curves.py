"""Ground-truth metrics of learning curves (SPEC §3; Chen, Huang & Wang, AutoML-Conf 2023).

Epochs are 1-based throughout: ``losses[i]`` is the loss of epoch ``i + 1``.

* **convergence epoch**: the first epoch ``e`` at which the moving mean of the training
  loss (over ``window`` epochs) has changed by less than ``eps`` (absolute) from one epoch
  to the next for ``patience`` consecutive epochs ``e, …, e + patience − 1``, with
  ``e >= min_epoch``. The moving mean ``MA_e = mean(L_{e−window+1..e})`` exists from epoch
  ``window`` on, so its change ``Δ_e = |MA_e − MA_{e−1}|`` exists from ``window + 1`` on.
  A run that never converges has convergence epoch ``None`` (never NaN).
* **expressivity**: mean training loss over the ``span`` (10) epochs from the convergence
  epoch on (``e … e + span − 1``, truncated at the end of the run); lower = more expressive.
* **generalization gap**: test loss − training loss at the convergence epoch.
* **convergence speed**: first epoch with training accuracy ≥ ``threshold`` (0.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from trilemma.errors import InvalidArgumentError

if TYPE_CHECKING:
    from trilemma.training._config import TrainResult

__all__ = [
    "CurveMetrics",
    "convergence_epoch",
    "expressivity",
    "generalization_gap",
    "epochs_to_accuracy",
    "curve_metrics",
    "DEFAULT_EPS",
]

DEFAULT_EPS = 1e-3


def _curve(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise InvalidArgumentError(f"{name} must be a 1-D sequence of per-epoch values, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0]) + 1
        raise InvalidArgumentError(f"{name} must be finite; epoch {bad} holds {arr[bad - 1]}")
    return arr


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgumentError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def convergence_epoch(
    train_losses: Sequence[float] | np.ndarray,
    eps: float = DEFAULT_EPS,
    window: int = 10,
    patience: int = 10,
    min_epoch: int = 1,
) -> int | None:
    """First epoch (1-based) from which the moving-mean training loss stays flat.

    Args:
        train_losses: Per-epoch training losses, ``(T,)``.
        eps: Absolute tolerance on the change of the moving mean between epochs.
        window: Length of the moving mean (10 in the papers).
        patience: Number of consecutive changes that must all be ``< eps`` (10).
        min_epoch: Smallest epoch that may be returned (the moving mean's changes start at
            ``window + 1``, so smaller values have no effect).

    Returns:
        The epoch ``e`` (see the module docstring), or ``None`` if no epoch qualifies,
        including when the run is shorter than ``window + patience`` epochs.

    Raises:
        InvalidArgumentError: non-finite losses, or non-positive ``window``/``patience``/
            ``min_epoch``, or ``eps <= 0``.
    """
    losses = _curve("train_losses", train_losses)
    window, patience, min_epoch = _positive("window", window), _positive("patience", patience), _positive(
        "min_epoch", min_epoch
    )
    if not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps > 0):
        raise InvalidArgumentError(f"eps must be a finite number > 0, got {eps!r}")
    T = losses.size
    if T < window + patience:
        return None
    moving = np.convolve(losses, np.ones(window) / window, mode="valid")  # MA for epochs window..T
    small = np.abs(np.diff(moving)) < eps  # small[k] is Δ at epoch window + 1 + k
    # runs[k] = all(small[k : k + patience]) via a sliding-window count
    counts = np.convolve(small.astype(int), np.ones(patience, dtype=int), mode="valid")
    epochs = np.arange(counts.size) + window + 1
    ok = (counts == patience) & (epochs >= min_epoch)
    hits = np.flatnonzero(ok)
    return int(epochs[hits[0]]) if hits.size else None


def expressivity(train_losses: Sequence[float] | np.ndarray, epoch: int | None, span: int = 10) -> float | None:
    """Mean training loss over epochs ``epoch … epoch + span − 1`` (truncated at the end).

    Args:
        train_losses: Per-epoch training losses ``(T,)``.
        epoch: The convergence epoch (1-based) or ``None``.
        span: Number of epochs averaged (10 in the papers).

    Returns:
        The mean, or ``None`` when ``epoch`` is ``None``.

    Raises:
        InvalidArgumentError: ``epoch`` outside ``1..T`` or bad ``span``.
    """
    losses = _curve("train_losses", train_losses)
    span = _positive("span", span)
    if epoch is None:
        return None
    if not 1 <= epoch <= losses.size:
        raise InvalidArgumentError(f"epoch must be in 1..{losses.size}, got {epoch!r}")
    return float(losses[epoch - 1 : epoch - 1 + span].mean())


def generalization_gap(
    train_losses: Sequence[float] | np.ndarray,
    test_losses: Sequence[float] | np.ndarray,
    epoch: int | None,
    eval_epochs: Sequence[int] | None = None,
) -> float | None:
    """Test loss minus training loss at ``epoch`` (the convergence epoch).

    Args:
        train_losses: Per-epoch training losses ``(T,)``.
        test_losses: Test losses, per epoch, or at ``eval_epochs``.
        epoch: 1-based epoch, or ``None``.
        eval_epochs: The epochs of ``test_losses`` when not every epoch was evaluated.

    Returns:
        ``test − train`` at ``epoch``; ``None`` when ``epoch`` is ``None``.

    Raises:
        InvalidArgumentError: the test loss was not evaluated at ``epoch``.
    """
    losses = _curve("train_losses", train_losses)
    tests = _curve("test_losses", test_losses)
    if epoch is None:
        return None
    if not 1 <= epoch <= losses.size:
        raise InvalidArgumentError(f"epoch must be in 1..{losses.size}, got {epoch!r}")
    evals = list(range(1, tests.size + 1)) if eval_epochs is None else [int(e) for e in eval_epochs]
    if len(evals) != tests.size:
        raise InvalidArgumentError(f"eval_epochs has {len(evals)} entries but test_losses has {tests.size}")
    if epoch not in evals:
        raise InvalidArgumentError(
            f"the test loss was not evaluated at epoch {epoch} (evaluated: {evals[:5]}...); train with eval_every=1"
        )
    return float(tests[evals.index(epoch)] - losses[epoch - 1])


def epochs_to_accuracy(train_acc: Sequence[float] | np.ndarray, threshold: float = 0.5) -> int | None:
    """First epoch (1-based) whose training accuracy is ``>= threshold``; ``None`` if never.

    Raises:
        InvalidArgumentError: ``threshold`` outside [0, 1] or non-finite accuracies.
    """
    acc = _curve("train_acc", train_acc)
    if not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        raise InvalidArgumentError(f"threshold must be in [0, 1], got {threshold!r}")
    hits = np.flatnonzero(acc >= threshold)
    return int(hits[0]) + 1 if hits.size else None


@dataclass(frozen=True)
class CurveMetrics:
    """The papers' three ground-truth axes plus convergence speed for one run.

    All are ``None`` when not defined (no convergence, regression without accuracy, a
    diverged run).
    """

    convergence_epoch: int | None
    expressivity: float | None
    generalization_gap: float | None
    epochs_to_accuracy: int | None
    final_train_loss: float | None
    final_test_loss: float | None
    final_test_acc: float | None


def curve_metrics(
    result: TrainResult,
    eps: float = DEFAULT_EPS,
    window: int = 10,
    patience: int = 10,
    min_epoch: int = 1,
    span: int = 10,
    threshold: float = 0.5,
) -> CurveMetrics:
    """All curve metrics of a :class:`~trilemma.training.TrainResult`.

    A diverged run gets ``None`` for every metric that needs convergence; its
    ``epochs_to_accuracy`` is still read from the recorded epochs. The generalization gap
    is ``None`` when the test set was not evaluated at the convergence epoch
    (``eval_every > 1``).
    """
    losses = result.train_loss
    conv = None
    if losses and not result.diverged:
        conv = convergence_epoch(losses, eps=eps, window=window, patience=patience, min_epoch=min_epoch)
    gap = None
    if conv is not None and conv in result.eval_epochs:
        gap = generalization_gap(losses, result.test_loss, conv, result.eval_epochs)
    return CurveMetrics(
        convergence_epoch=conv,
        expressivity=expressivity(losses, conv, span) if losses else None,
        generalization_gap=gap,
        epochs_to_accuracy=epochs_to_accuracy(result.train_acc, threshold) if result.train_acc else None,
        final_train_loss=losses[-1] if losses else None,
        final_test_loss=result.test_loss[-1] if result.test_loss else None,
        final_test_acc=result.test_acc[-1] if result.test_acc else None,
    )

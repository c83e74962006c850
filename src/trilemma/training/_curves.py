"""Ground-truth metrics of learning curves (Chen, Huang & Wang, AutoML-Conf 2023; their convergence is epochs to 50 % training accuracy, App. A).

Epochs are 1-based throughout: ``losses[i]`` is the loss of epoch ``i + 1``.

* **convergence epoch** (loss plateau): the first epoch ``e`` at which the moving mean of
  the training loss (over ``window`` epochs) has changed by less than ``eps`` (absolute)
  from one epoch to the next for ``patience`` consecutive epochs ``e, …, e + patience − 1``,
  with ``e >= min_epoch``. The moving mean ``MA_e = mean(L_{e−window+1..e})`` exists from
  epoch ``window`` on, so its change ``Δ_e = |MA_e − MA_{e−1}|`` exists from ``window + 1``
  on. A run that never meets this rule has convergence epoch ``None`` (never NaN) and
  ``converged = False``. The plateau only decides *when* the loss has converged; it is
  not the papers' convergence axis (below).
* **expressivity** (lower = more expressive): a converged run: the mean training loss over
  the ``span`` (10) epochs from the convergence epoch on (``e … e + span − 1``, truncated
  at the end of the run). A run that never plateaus: the mean training loss over its last
  ``span`` epochs (:func:`last_window_loss`); the slowest cells are flagged, not dropped.
* **generalization gap** (lower = better): a converged run: test loss − training loss at
  the convergence epoch. A run that never plateaus: the mean of ``test − train`` over the
  evaluated epochs among its last ``span`` epochs (:func:`last_window_gap`; the last
  evaluated epoch if none of those was evaluated).
* **convergence speed, the papers' ground truth** ``epochs_to_<pct>``: the first epoch
  whose running training accuracy is ``>= threshold`` (0.5 in the papers, so
  ``epochs_to_50``; :func:`accuracy_metric_name` gives the name for any threshold).
* **sub-epoch convergence speed** ``steps_to_<pct>``, in (fractional) epochs: the running
  training accuracy over a sliding window of exactly one epoch's worth of mini-batches,
  read after every SGD step. With ``S`` steps per epoch, ``c_t`` the number of correct
  predictions of global step ``t`` (computed before its update, like the epoch's running
  accuracy) and ``n`` the samples per epoch, the window accuracy after step ``t >= S`` is
  ``A_t = (c_{t−S+1} + … + c_t) / n``. ``steps_to_<pct>`` is the first ``t`` with
  ``A_t >= threshold``, reported as the samples seen by the end of step ``t`` divided by
  ``n``: ``(e − 1) + (rows of steps 1..s of the epoch) / n`` for step ``s`` of epoch ``e``.
  At the end of epoch ``e`` the window is exactly that epoch, so ``A_{eS}`` is the epoch's
  running accuracy and ``steps_to_<pct> <= epochs_to_<pct>`` whenever the latter exists;
  ties in the epoch count are resolved by where, within the epoch, the window crossed. A
  window needs one full epoch of history, so a crossing during the first epoch reads 1.0.
* :func:`count_ties`: how many runs share a metric's value (the report prints it).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from trilemma._checks import is_int, is_real
from trilemma.errors import InvalidArgumentError

if TYPE_CHECKING:
    from trilemma.training._config import TrainResult

__all__ = [
    "CurveMetrics",
    "Ties",
    "accuracy_metric_name",
    "convergence_epoch",
    "count_ties",
    "curve_metrics",
    "epochs_to_accuracy",
    "expressivity",
    "generalization_gap",
    "last_window_gap",
    "last_window_loss",
    "parse_accuracy_metric",
    "steps_to_accuracy",
    "DEFAULT_EPS",
    "DEFAULT_THRESHOLD",
]

DEFAULT_EPS = 1e-3
DEFAULT_THRESHOLD = 0.5  # the papers' 50 % training accuracy
_RESOLUTIONS = {"epoch": "epochs", "step": "steps"}
_NAME = re.compile(r"^(epochs|steps)_to_(\d+)(?:p(\d+))?$")


def _threshold(value: object) -> float:
    if not is_real(value) or not (
        math.isfinite(value) and 0 <= value <= 1
    ):
        raise InvalidArgumentError(f"threshold must be a number in [0, 1], got {value!r}")
    return float(value)


def accuracy_metric_name(threshold: float = DEFAULT_THRESHOLD, resolution: Literal["epoch", "step"] = "epoch") -> str:
    """The metric name of the convergence speed at training accuracy ``threshold``.

    ``epochs_to_<pct>`` (the papers' epoch count, :func:`epochs_to_accuracy`) or
    ``steps_to_<pct>`` (sub-epoch resolution, :func:`steps_to_accuracy`), with ``pct`` the
    threshold in percent: ``0.5 -> "epochs_to_50"``, ``0.6 -> "epochs_to_60"``; a
    fractional percentage writes its decimal point as ``p`` (``0.555 -> "epochs_to_55p5"``).
    Code that reads these metrics should build the name here rather than spell it.

    Args:
        threshold: Training accuracy in ``[0, 1]``.
        resolution: ``"epoch"`` or ``"step"``.

    Returns:
        The metric name; :func:`parse_accuracy_metric` inverts it.

    Raises:
        InvalidArgumentError: ``threshold`` outside ``[0, 1]`` or an unknown ``resolution``.
    """
    thr = _threshold(threshold)
    if resolution not in _RESOLUTIONS:
        raise InvalidArgumentError(f"resolution must be one of {sorted(_RESOLUTIONS)}, got {resolution!r}")
    pct = f"{thr * 100:.6f}".rstrip("0").rstrip(".").replace(".", "p")
    return f"{_RESOLUTIONS[resolution]}_to_{pct}"


def parse_accuracy_metric(name: str) -> tuple[Literal["epoch", "step"], float] | None:
    """``(resolution, threshold)`` of a name made by :func:`accuracy_metric_name`, else ``None``.

    Example:
        >>> parse_accuracy_metric("steps_to_60")
        ('step', 0.6)
    """
    match = _NAME.match(name) if isinstance(name, str) else None
    if match is None:
        return None
    pct = float(f"{match.group(2)}.{match.group(3) or 0}")
    if pct > 100:
        return None
    resolution: Literal["epoch", "step"] = "epoch" if match.group(1) == "epochs" else "step"
    return resolution, round(pct / 100, 10)


def _curve(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise InvalidArgumentError(f"{name} must be a 1-D sequence of per-epoch values, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0]) + 1
        raise InvalidArgumentError(f"{name} must be finite; epoch {bad} holds {arr[bad - 1]}")
    return arr


def _positive(name: str, value: object) -> int:
    if not is_int(value) or value < 1:
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


def last_window_loss(train_losses: Sequence[float] | np.ndarray, span: int = 10) -> float | None:
    """Mean training loss over the last ``span`` epochs (all of them if fewer).

    The expressivity of a run whose loss never met the plateau rule (see the module
    docstring): dropping such runs would drop exactly the slow deep-and-narrow cells that
    the papers find most expressive.

    Args:
        train_losses: Per-epoch training losses ``(T,)``.
        span: Number of final epochs averaged (10, as the converged definition).

    Returns:
        The mean, or ``None`` for an empty curve.

    Raises:
        InvalidArgumentError: non-finite losses or bad ``span``.
    """
    losses = _curve("train_losses", train_losses)
    span = _positive("span", span)
    return float(losses[-span:].mean()) if losses.size else None


def last_window_gap(
    train_losses: Sequence[float] | np.ndarray,
    test_losses: Sequence[float] | np.ndarray,
    eval_epochs: Sequence[int] | None = None,
    span: int = 10,
) -> float | None:
    """Mean ``test − train`` loss over the evaluated epochs among the last ``span`` epochs.

    The generalization gap of a run that never plateaued. ``train`` is the epoch's
    running training loss, as in :func:`generalization_gap`. If none of the last ``span``
    epochs was evaluated (``eval_every > span``), the last evaluated epoch is used.

    Args:
        train_losses: Per-epoch training losses ``(T,)``.
        test_losses: Test losses at ``eval_epochs`` (every epoch when ``None``).
        eval_epochs: 1-based epochs of ``test_losses``.
        span: Number of final epochs considered.

    Returns:
        The mean gap, or ``None`` when the test set was never evaluated within the curve.

    Raises:
        InvalidArgumentError: non-finite values, mismatched lengths, bad ``span``.
    """
    losses = _curve("train_losses", train_losses)
    tests = _curve("test_losses", test_losses)
    span = _positive("span", span)
    evals = list(range(1, tests.size + 1)) if eval_epochs is None else [int(e) for e in eval_epochs]
    if len(evals) != tests.size:
        raise InvalidArgumentError(f"eval_epochs has {len(evals)} entries but test_losses has {tests.size}")
    T = losses.size
    pairs = [(e, float(t)) for e, t in zip(evals, tests) if 1 <= e <= T]
    if not pairs:
        return None
    window = [(e, t) for e, t in pairs if e > T - span] or [max(pairs)]
    return float(np.mean([t - losses[e - 1] for e, t in window]))


def epochs_to_accuracy(train_acc: Sequence[float] | np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> int | None:
    """First epoch (1-based) whose training accuracy is ``>= threshold``; ``None`` if never.

    The papers' convergence ground truth at ``threshold = 0.5`` (metric
    ``accuracy_metric_name(threshold)``, e.g. ``epochs_to_50``).

    Raises:
        InvalidArgumentError: ``threshold`` outside [0, 1] or non-finite accuracies.
    """
    acc = _curve("train_acc", train_acc)
    threshold = _threshold(threshold)
    hits = np.flatnonzero(acc >= threshold)
    return int(hits[0]) + 1 if hits.size else None


def steps_to_accuracy(
    step_correct: Sequence[Sequence[int]] | np.ndarray,
    step_rows: Sequence[int] | np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
) -> float | None:
    """Sub-epoch crossing of ``threshold`` by the one-epoch sliding-window training accuracy.

    See the module docstring for the definition (metric ``steps_to_<pct>``). The window
    accuracy after the last step of epoch ``e`` is computed exactly as the epoch's running
    accuracy (correct count / samples, in float64), so the result is ``<= e`` whenever
    :func:`epochs_to_accuracy` returns ``e``.

    Args:
        step_correct: Correct predictions per SGD step, ``(E, S)``: ``E`` recorded epochs
            of ``S`` steps each (``TrainResult.train_step_correct``).
        step_rows: Samples of each step of an epoch, ``(S,)`` (the same every epoch;
            ``TrainResult.step_rows``).
        threshold: Training accuracy in ``[0, 1]``.

    Returns:
        The crossing in fractional epochs (``1.0 <= value <= E``), or ``None`` if the
        window accuracy never reaches ``threshold`` (or no epoch was recorded).

    Raises:
        InvalidArgumentError: shapes disagree, counts are negative or exceed their step's
            rows, or ``threshold`` is outside ``[0, 1]``.
    """
    threshold = _threshold(threshold)
    rows = np.asarray(step_rows, dtype=np.int64)
    if rows.ndim != 1 or rows.size == 0 or np.any(rows < 1):
        raise InvalidArgumentError(f"step_rows must be a non-empty 1-D sequence of ints >= 1, got {step_rows!r}")
    try:
        correct = np.asarray(step_correct, dtype=np.int64)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"step_correct must be a rectangular (epochs, steps) array of ints: {exc}") from exc
    if correct.size == 0:
        correct = correct.reshape(0, rows.size)
    if correct.ndim != 2 or correct.shape[1] != rows.size:
        raise InvalidArgumentError(
            f"step_correct must have shape (epochs, {rows.size}) (one column per entry of step_rows), "
            f"got {correct.shape}")
    if np.any(correct < 0) or np.any(correct > rows):
        raise InvalidArgumentError("step_correct must hold counts between 0 and the rows of their step")
    if correct.shape[0] == 0:
        return None
    S, n = rows.size, int(rows.sum())
    cum = np.concatenate([[0], np.cumsum(correct.reshape(-1))])
    window = cum[S:] - cum[:-S]  # window[i]: correct over global steps i + 1 .. i + S
    acc = window / n  # float64, the same division as the epoch's running accuracy
    hits = np.flatnonzero(acc >= threshold)
    if not hits.size:
        return None
    t = int(hits[0]) + S  # 1-based global step
    epoch, step = (t - 1) // S + 1, (t - 1) % S + 1
    return (epoch - 1) + float(rows[:step].sum()) / n


@dataclass(frozen=True)
class Ties:
    """How many runs share a metric's value (see :func:`count_ties`).

    Attributes:
        n: Runs with a value.
        missing: Runs without one (``None``).
        distinct: Distinct values.
        largest: Size of the largest group of runs with one value (0 if ``n == 0``).
        mode: That value (the smallest of equally large groups; ``None`` if ``n == 0``).
        tied: Runs whose value is shared by at least one other run.
    """

    n: int
    missing: int
    distinct: int
    largest: int
    mode: float | None
    tied: int

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {"n": self.n, "missing": self.missing, "distinct": self.distinct, "largest": self.largest,
                "mode": self.mode, "tied": self.tied}


def count_ties(values: Iterable[float | int | None]) -> Ties:
    """Count the ties of a metric over a set of runs (exact equality of values).

    A ground truth with few distinct values (e.g. many cells crossing 50 % training
    accuracy in the same epoch) makes rank correlations coarse; the report prints this.

    Args:
        values: One value per run; ``None`` marks a run without a value.

    Returns:
        A :class:`Ties`.

    Raises:
        InvalidArgumentError: a value is NaN or infinite, or not a number.

    Example:
        >>> count_ties([3, 3, 4, None, 5, 3]).as_dict()
        {'n': 5, 'missing': 1, 'distinct': 3, 'largest': 3, 'mode': 3.0, 'tied': 3}
    """
    present: list[float] = []
    missing = 0
    for v in values:
        if v is None:
            missing += 1
            continue
        if not is_real(v):
            raise InvalidArgumentError(f"values must be numbers or None, got {type(v).__name__} {v!r}")
        if not math.isfinite(v):
            raise InvalidArgumentError(f"values must be finite or None, got {v!r}")
        present.append(float(v))
    counts = Counter(present)
    if not counts:
        return Ties(0, missing, 0, 0, None, 0)
    largest = max(counts.values())
    mode = min(v for v, c in counts.items() if c == largest)
    tied = sum(c for c in counts.values() if c > 1)
    return Ties(len(present), missing, len(counts), largest, mode, tied)


@dataclass(frozen=True)
class CurveMetrics:
    """The papers' three ground-truth axes plus convergence speed for one run.

    Attributes:
        convergence_epoch: Loss-plateau epoch, ``None`` if the rule was never met.
        converged: Whether the plateau rule was met (``convergence_epoch is not None``).
        expressivity: Training loss at convergence, or over the last ``span`` epochs of
            a run that never plateaued (see the module docstring).
        generalization_gap: ``test − train`` loss likewise.
        epochs_to_accuracy: First epoch with running training accuracy ``>= threshold``
            (the papers' convergence, named ``accuracy_metric_name(threshold)``).
        steps_to_accuracy: Sub-epoch crossing in fractional epochs (``steps_to_<pct>``).
        threshold: The accuracy threshold of both speeds.
        final_train_loss, final_test_loss, final_train_acc, final_test_acc: Last values.

    ``None`` only where no value exists: a diverged run (its training ended in a
    non-finite loss, so it has no converged training loss or gap), regression (no
    accuracy), a test set never evaluated, a threshold never reached.
    """

    convergence_epoch: int | None
    expressivity: float | None
    generalization_gap: float | None
    epochs_to_accuracy: int | None
    final_train_loss: float | None
    final_test_loss: float | None
    final_test_acc: float | None
    converged: bool = False
    steps_to_accuracy: float | None = None
    final_train_acc: float | None = None
    threshold: float = DEFAULT_THRESHOLD

    def as_dict(self) -> dict[str, Any]:
        """The metrics under their stored names (the study's payload keys).

        Keys: ``convergence_epoch``, ``converged``, ``expressivity``,
        ``generalization_gap``, ``epochs_to_<pct>``, ``steps_to_<pct>`` (names from
        :func:`accuracy_metric_name` of :attr:`threshold`), ``final_train_loss``,
        ``final_test_loss``, ``final_train_acc``, ``final_test_acc``.
        """
        return {
            "convergence_epoch": self.convergence_epoch,
            "converged": self.converged,
            "expressivity": self.expressivity,
            "generalization_gap": self.generalization_gap,
            accuracy_metric_name(self.threshold, "epoch"): self.epochs_to_accuracy,
            accuracy_metric_name(self.threshold, "step"): self.steps_to_accuracy,
            "final_train_loss": self.final_train_loss,
            "final_test_loss": self.final_test_loss,
            "final_train_acc": self.final_train_acc,
            "final_test_acc": self.final_test_acc,
        }


def curve_metrics(
    result: TrainResult,
    eps: float = DEFAULT_EPS,
    window: int = 10,
    patience: int = 10,
    min_epoch: int = 1,
    span: int = 10,
    threshold: float = DEFAULT_THRESHOLD,
) -> CurveMetrics:
    """All curve metrics of a :class:`~trilemma.training.TrainResult` (module docstring).

    A converged run: expressivity over ``span`` epochs from the convergence epoch, gap at
    the convergence epoch (``None`` if the test set was not evaluated then, e.g.
    ``eval_every > 1``). A completed run that never plateaued: ``converged = False``,
    expressivity and gap over its last ``span`` epochs. A diverged run: ``converged =
    False`` and no expressivity or gap; its accuracy crossings are still read from the
    recorded epochs. ``steps_to_accuracy`` is ``None`` for results without per-step
    counts (regression, or results made before they were recorded).
    """
    threshold = _threshold(threshold)
    losses = result.train_loss
    conv = None
    if losses and not result.diverged:
        conv = convergence_epoch(losses, eps=eps, window=window, patience=patience, min_epoch=min_epoch)
    expr = gap = None
    if conv is not None:
        expr = expressivity(losses, conv, span)
        if conv in result.eval_epochs:
            gap = generalization_gap(losses, result.test_loss, conv, result.eval_epochs)
    elif losses and not result.diverged:
        expr = last_window_loss(losses, span)
        if result.test_loss:
            gap = last_window_gap(losses, result.test_loss, result.eval_epochs, span)
    steps = None
    if result.train_step_correct is not None and result.step_rows:
        steps = steps_to_accuracy(result.train_step_correct, result.step_rows, threshold)
    return CurveMetrics(
        convergence_epoch=conv,
        expressivity=expr,
        generalization_gap=gap,
        epochs_to_accuracy=epochs_to_accuracy(result.train_acc, threshold) if result.train_acc else None,
        final_train_loss=losses[-1] if losses else None,
        final_test_loss=result.test_loss[-1] if result.test_loss else None,
        final_test_acc=result.test_acc[-1] if result.test_acc else None,
        converged=conv is not None,
        steps_to_accuracy=steps,
        final_train_acc=result.train_acc[-1] if result.train_acc else None,
        threshold=threshold,
    )

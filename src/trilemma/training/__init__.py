"""Ground-truth training: the papers' protocol, batched training of many cells, curve metrics.

* :func:`train` / :func:`train_cell`: one model, plain mini-batch SGD by default
  (:class:`TrainConfig` holds the protocol), per-epoch running training loss/accuracy and
  test loss/accuracy, divergence recorded rather than raised.
* :func:`train_batched`: many DAG-MLP cells as one vectorized computation, equal to
  :func:`train_cell` model by model (same initialization, mini-batch order and optimizer).
* :func:`curve_metrics` and its parts (:func:`convergence_epoch`, :func:`expressivity`,
  :func:`generalization_gap`, :func:`last_window_loss`, :func:`last_window_gap`,
  :func:`epochs_to_accuracy`, :func:`steps_to_accuracy`): the papers' ground-truth axes
  (Chen, Huang & Wang, AutoML-Conf 2023). :func:`accuracy_metric_name` names the
  convergence-speed metric of a threshold (``epochs_to_50``, ``steps_to_50``, ...);
  :func:`count_ties` counts runs sharing a metric value.

Example:
    >>> from trilemma.data import load_dataset
    >>> ds = load_dataset("digits", max_train=256, max_test=64)
    >>> results = train_batched(["2_02_002", "1_22_221"], ds, TrainConfig(epochs=2), width=16, seeds=0)
    >>> [(r.spec, r.status, r.epochs) for r in results]
    [('2_02_002', 'completed', 2), ('1_22_221', 'completed', 2)]
"""

from trilemma.training._batched import train_batched
from trilemma.training._config import (
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    EpochCallback,
    EpochRecord,
    TrainConfig,
    TrainResult,
    bf16_matmul_is_native,
    lr_at,
    resolve_device,
    synchronize,
)
from trilemma.training._curves import (
    DEFAULT_THRESHOLD,
    CurveMetrics,
    Ties,
    accuracy_metric_name,
    convergence_epoch,
    count_ties,
    curve_metrics,
    epochs_to_accuracy,
    expressivity,
    generalization_gap,
    last_window_gap,
    last_window_loss,
    parse_accuracy_metric,
    steps_to_accuracy,
)
from trilemma.training._trainer import evaluate, train, train_cell

__all__ = [
    "DEFAULT_THRESHOLD",
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULES",
    "CurveMetrics",
    "EpochCallback",
    "EpochRecord",
    "TrainConfig",
    "TrainResult",
    "Ties",
    "accuracy_metric_name",
    "convergence_epoch",
    "count_ties",
    "curve_metrics",
    "epochs_to_accuracy",
    "evaluate",
    "expressivity",
    "generalization_gap",
    "last_window_gap",
    "last_window_loss",
    "bf16_matmul_is_native",
    "lr_at",
    "parse_accuracy_metric",
    "resolve_device",
    "steps_to_accuracy",
    "synchronize",
    "train",
    "train_batched",
    "train_cell",
]

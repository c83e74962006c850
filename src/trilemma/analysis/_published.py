"""Published rank correlations to compare against (SPEC §3), stored as data.

Source: Chen, Huang & Wang, "'No Free Lunch' in Neural Architectures? A Joint Analysis of
Expressivity, Convergence, and Generalization", AutoML-Conf 2023 (729 H=3 DAG cells, m=256).
All values are Kendall τ of the *raw* columns (no re-orientation): the trained metrics are
losses / epochs / gaps where lower is better, so e.g. expressivity vs d̄ = −0.87 means deeper
cells reach a lower training loss. SPEC §3 does not say whether a value was computed over
the architectures or over the (P, d̄) group means, so each is shown beside both of ours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from trilemma.analysis._metrics import check_axis
from trilemma.errors import InvalidArgumentError

__all__ = ["PublishedCorrelation", "PUBLISHED_CORRELATIONS", "published_correlations"]

_SOURCE = "Chen, Huang & Wang, AutoML-Conf 2023"


@dataclass(frozen=True)
class PublishedCorrelation:
    """One published rank correlation.

    Attributes:
        axis: The axis the quantity belongs to.
        quantity: For ``kind="trained"`` the axis's ground truth (whichever column
            stands for it); otherwise the results column (``"curvature"``, ...).
        kind: ``"trained"`` (ground truth vs topology) or ``"init"`` (at-init measure vs topology).
        versus: The topology column it is correlated with (``"mean_depth"`` or ``"P"``).
        value: Kendall τ as published.
        dataset: The dataset it was measured on (``None``: not stated in SPEC §3).
        method: ``"kendall"``.
        source: Citation.
    """

    axis: str
    quantity: str
    kind: str
    versus: str
    value: float
    dataset: str | None
    method: str = "kendall"
    source: str = _SOURCE

    def __post_init__(self) -> None:
        check_axis(self.axis)
        if not -1.0 <= self.value <= 1.0:
            raise InvalidArgumentError(f"a rank correlation lies in [-1, 1], got {self.value}")

    @property
    def dataset_label(self) -> str:
        """``dataset`` or ``"paper"`` when the dataset is not stated."""
        return self.dataset or "paper"


PUBLISHED_CORRELATIONS: tuple[PublishedCorrelation, ...] = (
    PublishedCorrelation("expressivity", "expressivity", "trained", "mean_depth", -0.87, "Tiny-ImageNet"),
    PublishedCorrelation("convergence", "convergence", "trained", "P", -0.69, "Tiny-ImageNet"),
    PublishedCorrelation("generalization", "generalization", "trained", "mean_depth", +0.39, "Tiny-ImageNet"),
    PublishedCorrelation("expressivity", "expressivity", "trained", "mean_depth", -0.79, "CIFAR-10"),
    PublishedCorrelation("convergence", "convergence", "trained", "P", -0.85, "CIFAR-10"),
    PublishedCorrelation("generalization", "generalization", "trained", "mean_depth", +0.69, "CIFAR-10"),
    # Measured at initialization vs topology (the paper's theory check); dataset not stated.
    PublishedCorrelation("expressivity", "curvature", "init", "P", -0.79, None),
    PublishedCorrelation("convergence", "nngp_lambda_min", "init", "P", +0.79, None),
    PublishedCorrelation("generalization", "ntk_lambda_min", "init", "P", +0.86, None),
)


def published_correlations(
    axis: str | None = None, kind: str | None = None, dataset: str | None = None
) -> pd.DataFrame:
    """The published values as a table (one row per value), optionally filtered.

    Args:
        axis: Keep only this axis.
        kind: Keep only ``"trained"`` or ``"init"`` rows.
        dataset: Keep only this dataset label (``"paper"`` for unstated).

    Returns:
        Columns ``axis, quantity, kind, versus, value, dataset, method, source``, in
        the order of :data:`PUBLISHED_CORRELATIONS`.
    """
    if axis is not None:
        check_axis(axis)
    if kind is not None and kind not in ("trained", "init"):
        raise InvalidArgumentError(f"kind must be 'trained', 'init' or None, got {kind!r}")
    rows = [
        asdict(p) | {"dataset": p.dataset_label}
        for p in PUBLISHED_CORRELATIONS
        if (axis is None or p.axis == axis)
        and (kind is None or p.kind == kind)
        and (dataset is None or p.dataset_label == dataset)
    ]
    return pd.DataFrame(rows, columns=["axis", "quantity", "kind", "versus", "value", "dataset", "method", "source"])

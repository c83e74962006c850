"""Every published number of the papers to compare against, stored as data with its figure.

Source: Chen, Huang & Wang, "'No Free Lunch' in Neural Architectures? A Joint Analysis of
Expressivity, Convergence, and Generalization", AutoML-Conf 2023 (729 H=3 DAG cells, m=256):
Figures 3 (Tiny-ImageNet), 4 (measures at initialization), 5 (CIFAR-10 and CIFAR-100),
6 (trained metric vs at-init measure, Tiny-ImageNet) and 8 (each architecture at its own best
learning rate, Tiny-ImageNet); Table 1 and Figure 7 (the ensemble-and-pruning remedy).

All correlations are Kendall τ of the *raw* columns (no re-orientation): the trained metrics
are losses / epochs / gaps where lower is better, so e.g. expressivity vs d̄ = −0.87 means
deeper cells reach a lower training loss. The paper plots (P, d̄) group means with the
architectures' spread; it does not restate whether τ was taken over architectures or group
means, so each value is shown beside both of ours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from trilemma.analysis._metrics import check_axis
from trilemma.errors import InvalidArgumentError

__all__ = [
    "PUBLISHED_CORRELATIONS",
    "PUBLISHED_FIG7_TAU",
    "PUBLISHED_KINDS",
    "PUBLISHED_TABLE1",
    "PublishedCorrelation",
    "PublishedRank",
    "published_correlations",
]

_SOURCE = "Chen, Huang & Wang, AutoML-Conf 2023"


#: Kinds of published correlations: a trained ground truth vs topology, an at-init measure vs
#: topology, a trained ground truth vs an at-init measure.
PUBLISHED_KINDS: tuple[str, ...] = ("trained", "init", "init_trained")


@dataclass(frozen=True)
class PublishedCorrelation:
    """One published rank correlation.

    Attributes:
        axis: The axis the quantity belongs to.
        quantity: For ``kind`` ``"trained"`` / ``"init_trained"`` the axis (its ground truth,
            whichever column stands for it in a study); for ``"init"`` the results column
            (``"curvature"``, ...).
        kind: One of :data:`PUBLISHED_KINDS`.
        versus: The column it is correlated with: ``"mean_depth"`` or ``"P"`` (topology), or
            an at-init measure for ``"init_trained"``.
        value: Kendall τ as published.
        dataset: The dataset it was measured on (``None``: the figure does not name one).
        figure: Where it is published (``"Fig. 3"`` …).
        setting: A qualifier of the protocol (``"best LR"`` for Fig. 8), empty otherwise.
        method: ``"kendall"``.
        source: Citation.
    """

    axis: str
    quantity: str
    kind: str
    versus: str
    value: float
    dataset: str | None
    figure: str = ""
    setting: str = ""
    method: str = "kendall"
    source: str = _SOURCE

    def __post_init__(self) -> None:
        check_axis(self.axis)
        if self.kind not in PUBLISHED_KINDS:
            raise InvalidArgumentError(f"kind must be one of {PUBLISHED_KINDS}, got {self.kind!r}")
        if not -1.0 <= self.value <= 1.0:
            raise InvalidArgumentError(f"a rank correlation lies in [-1, 1], got {self.value}")

    @property
    def dataset_label(self) -> str:
        """Column label: the figure, the dataset and the setting, e.g. ``"Fig. 5 CIFAR-10"``."""
        parts = [self.figure, self.dataset or "", f"({self.setting})" if self.setting else ""]
        return " ".join(p for p in parts if p) or "paper"


def _trio(figure: str, dataset: str, depth: tuple[float, float, float], paths: tuple[float, float, float],
          setting: str = "") -> tuple[PublishedCorrelation, ...]:
    """The three trained axes against d̄ and P, as one figure publishes them."""
    out = []
    for axis, vd, vp in zip(("expressivity", "convergence", "generalization"), depth, paths):
        out.append(PublishedCorrelation(axis, axis, "trained", "mean_depth", vd, dataset, figure, setting))
        out.append(PublishedCorrelation(axis, axis, "trained", "P", vp, dataset, figure, setting))
    return tuple(out)


PUBLISHED_CORRELATIONS: tuple[PublishedCorrelation, ...] = (
    # Fig. 3 (Tiny-ImageNet): expressivity = train loss, convergence = epochs to 50% train acc,
    # generalization = test − train loss; each vs d̄ and vs P.
    *_trio("Fig. 3", "Tiny-ImageNet", (-0.87, +0.64, +0.39), (+0.11, -0.69, -0.41)),
    # Fig. 4: the at-init quantities vs d̄ and vs P (the theory check).
    PublishedCorrelation("expressivity", "curvature", "init", "mean_depth", +0.47, None, "Fig. 4"),
    PublishedCorrelation("expressivity", "curvature", "init", "P", -0.79, None, "Fig. 4"),
    PublishedCorrelation("convergence", "nngp_lambda_min", "init", "mean_depth", -0.52, None, "Fig. 4"),
    PublishedCorrelation("convergence", "nngp_lambda_min", "init", "P", +0.79, None, "Fig. 4"),
    PublishedCorrelation("generalization", "ntk_lambda_min", "init", "mean_depth", -0.12, None, "Fig. 4"),
    PublishedCorrelation("generalization", "ntk_lambda_min", "init", "P", +0.86, None, "Fig. 4"),
    # Fig. 5: the same trends on CIFAR-10 and CIFAR-100.
    *_trio("Fig. 5", "CIFAR-10", (-0.79, +0.34, +0.69), (+0.04, -0.85, -0.21)),
    *_trio("Fig. 5", "CIFAR-100", (-0.80, +0.33, +0.35), (+0.05, -0.85, -0.26)),
    # Fig. 6 (Tiny-ImageNet): the trained metric vs the at-init measure of its axis.
    PublishedCorrelation("expressivity", "expressivity", "init_trained", "curvature", -0.05, "Tiny-ImageNet", "Fig. 6"),
    PublishedCorrelation("convergence", "convergence", "init_trained", "nngp_lambda_min", -0.77, "Tiny-ImageNet",
                         "Fig. 6"),
    PublishedCorrelation("generalization", "generalization", "init_trained", "ntk_lambda_min", -0.16, "Tiny-ImageNet",
                         "Fig. 6"),
    # Fig. 8 (appendix C.3, Tiny-ImageNet): each architecture at its own best learning rate.
    *_trio("Fig. 8", "Tiny-ImageNet", (-0.57, +0.69, +0.51), (+0.17, -0.50, -0.37), setting="best LR"),
)


@dataclass(frozen=True)
class PublishedRank:
    """One row of the paper's Table 1 (ranks out of the 729 cells, Tiny-ImageNet; 1 = best).

    Attributes:
        row: ``"I"`` … ``"V"``.
        label: What the row is.
        arch: The cell (or ensemble, ``"1_22_221+2_02_002"``).
        P: Number of paths (``None`` for ensembles, not published).
        mean_depth: d̄ (``None`` for ensembles).
        params: Parameters as published (millions).
        pruning: Pruning ratio per member (``{}``: none).
        expressivity, convergence, generalization: Ranks on the three axes.
        rank_sum: Their sum.
    """

    row: str
    label: str
    arch: str
    P: int | None
    mean_depth: float | None
    params_millions: float
    pruning: tuple[tuple[str, float], ...]
    expressivity: int
    convergence: int
    generalization: int

    @property
    def rank_sum(self) -> int:
        return self.expressivity + self.convergence + self.generalization


#: Table 1 of the paper (the remedy: an ensemble of a wide-shallow and a deep-narrow cell,
#: regularised by random unstructured pruning). Ranks out of 729, Tiny-ImageNet.
PUBLISHED_TABLE1: tuple[PublishedRank, ...] = (
    PublishedRank("I", "best single", "2_22_221", 4, 1.5, 3.53, (), 71, 76, 5),
    PublishedRank("II", "wide-shallow", "1_22_221", 4, 1.0, 3.46, (), 217, 39, 1),
    PublishedRank("III", "deep-narrow", "2_02_002", 1, 3.0, 3.40, (), 1, 538, 541),
    PublishedRank("IV", "ensemble (II, III)", "1_22_221+2_02_002", None, None, 3.66, (), 5, 46, 180),
    PublishedRank("V", "ensemble (II, III), pruned", "1_22_221@0.2+2_02_002@0.5", None, None, 3.51,
                  (("1_22_221", 0.2), ("2_02_002", 0.5)), 39, 32, 38),
)

#: Figure 7: τ between each member's pruning ratio and the ensemble's rank sum over the grid
#: (wide-shallow 0–0.4 × deep-narrow 0–0.5): prune the deep-narrow member, not the wide-shallow one.
PUBLISHED_FIG7_TAU: dict[str, float] = {"wide_shallow_ratio": +0.45, "deep_narrow_ratio": -0.06}


def published_correlations(
    axis: str | None = None, kind: str | None = None, dataset: str | None = None
) -> pd.DataFrame:
    """The published values as a table (one row per value), optionally filtered.

    Args:
        axis: Keep only this axis.
        kind: Keep only ``"trained"`` or ``"init"`` rows.
        dataset: Keep only this dataset label (``"paper"`` for unstated).

    Returns:
        Columns ``axis, quantity, kind, versus, value, dataset, figure, setting, method,
        source``, in the order of :data:`PUBLISHED_CORRELATIONS` (``dataset`` holds the column
        label, e.g. ``"Fig. 5 CIFAR-10"``).
    """
    if axis is not None:
        check_axis(axis)
    if kind is not None and kind not in PUBLISHED_KINDS:
        raise InvalidArgumentError(f"kind must be one of {PUBLISHED_KINDS} or None, got {kind!r}")
    rows = [
        asdict(p) | {"dataset": p.dataset_label}
        for p in PUBLISHED_CORRELATIONS
        if (axis is None or p.axis == axis)
        and (kind is None or p.kind == kind)
        and (dataset is None or p.dataset_label == dataset)
    ]
    return pd.DataFrame(rows, columns=["axis", "quantity", "kind", "versus", "value", "dataset", "figure", "setting",
                                       "method", "source"])

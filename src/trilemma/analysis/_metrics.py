"""The metric-direction table: what each results column measures and which way is better.

Every correlation, rank and Pareto computation in :mod:`trilemma.analysis` orients its
columns with this table instead of guessing (and never with ``abs()``). A metric has a
*kind* (where the number comes from: ``topology``, ``theory``, ``init`` measure, ``trained``
ground truth) and, for each of the three axes it says something about, whether a *higher*
value means a *better* network on that axis. Topology columns carry the papers' theoretical
predictions (Chen, Huang & Wang, AutoML-Conf 2023): deeper (larger d̄) is more expressive but
converges more slowly and generalizes worse; more paths (larger P) is the reverse.

Unknown columns can still be analysed: pass their direction explicitly, or register them
with :func:`register_metric`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from trilemma._registry import Registry
from trilemma.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError

__all__ = [
    "AXES",
    "KINDS",
    "AxisSpec",
    "DEFAULT_AXES",
    "accuracy_metric",
    "register_pattern_metrics",
    "default_axes",
    "MetricInfo",
    "get_metric",
    "list_metrics",
    "register_metric",
    "unregister_metric",
    "direction",
    "check_axis",
    "metrics_from_measures",
]

#: The three axes of the trilemma, in the papers' order.
AXES: tuple[str, ...] = ("expressivity", "convergence", "generalization")
#: Where a number comes from, upstream to downstream.
KINDS: tuple[str, ...] = ("topology", "theory", "init", "trained")

Kind = Literal["topology", "theory", "init", "trained"]


def check_axis(axis: object) -> str:
    """Return ``axis`` if it is one of :data:`AXES`.

    Raises:
        UnknownNameError: ``axis`` is not an axis name.
    """
    if axis not in AXES:
        raise UnknownNameError(f"unknown axis {axis!r}; valid axes: {', '.join(AXES)}")
    return str(axis)


@dataclass(frozen=True)
class MetricInfo:
    """What a results column means.

    Attributes:
        name: The column name in the results table.
        kind: ``"topology"``, ``"theory"`` (closed form), ``"init"`` (measured at
            initialization) or ``"trained"`` (ground truth after training).
        directions: ``{axis: higher_is_better}`` for each axis the metric measures (trained)
            or predicts (the others). Empty when the metric is informative but on no axis.
        label: Short display name (plots, tables).
        description: One sentence: what it is and where it comes from.
    """

    name: str
    kind: Kind
    directions: Mapping[str, bool] = field(default_factory=dict)
    label: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidArgumentError(f"a metric name must be a non-empty string, got {self.name!r}")
        if self.kind not in KINDS:
            raise InvalidArgumentError(
                f"metric {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}"
            )
        if not isinstance(self.directions, Mapping):
            raise InvalidTypeError(
                f"metric {self.name!r}: directions must be a mapping axis -> bool, got {type(self.directions).__name__}"
            )
        for axis, hib in self.directions.items():
            check_axis(axis)
            if not isinstance(hib, bool):
                raise InvalidTypeError(
                    f"metric {self.name!r}: directions[{axis!r}] must be a bool (higher is better), got {hib!r}"
                )
        object.__setattr__(self, "directions", MappingProxyType(dict(self.directions)))
        if not self.label:
            object.__setattr__(self, "label", self.name)

    @property
    def axes(self) -> tuple[str, ...]:
        """The axes this metric has a direction on, in :data:`AXES` order."""
        return tuple(a for a in AXES if a in self.directions)

    def higher_is_better(self, axis: str) -> bool:
        """Whether a higher value means a better network on ``axis``.

        Raises:
            UnknownNameError: ``axis`` is not an axis, or the metric has no direction on it.
        """
        check_axis(axis)
        try:
            return self.directions[axis]
        except KeyError:
            raise UnknownNameError(
                f"metric {self.name!r} has no direction on axis {axis!r}; it has directions on: "
                f"{', '.join(self.axes) or 'no axis'}. Pass the direction explicitly."
            ) from None


_METRICS: Registry[MetricInfo] = Registry("metric")


def register_metric(info: MetricInfo) -> MetricInfo:
    """Add a metric to the direction table.

    Raises:
        InvalidTypeError: ``info`` is not a :class:`MetricInfo`.
        DuplicateNameError: A metric of that name is already registered.
    """
    if not isinstance(info, MetricInfo):
        raise InvalidTypeError(f"register_metric expects a MetricInfo, got {type(info).__name__}")
    return _METRICS.register(info.name, info)


def unregister_metric(name: str) -> None:
    """Remove a metric from the table (for tests and plug-ins that re-register)."""
    _METRICS.unregister(name)


_ACCURACY_METRIC = re.compile(r"^(epochs|steps)_to_(\d{1,3})$")


def _accuracy_metric_info(name: str) -> MetricInfo | None:
    """The :class:`MetricInfo` of ``epochs_to_<p>`` / ``steps_to_<p>`` for any threshold ``p``."""
    m = _ACCURACY_METRIC.match(name)
    if m is None or not 0 < int(m.group(2)) <= 100:
        return None
    what, pct = m.group(1), int(m.group(2))
    if what == "epochs":
        return MetricInfo(name, "trained", {"convergence": False}, f"epochs to {pct}%",
                          f"first epoch with training accuracy >= {pct}% (the papers' convergence ground truth "
                          f"at 50%; lower = faster)")
    return MetricInfo(name, "trained", {"convergence": False}, f"epochs to {pct}% (sub-epoch)",
                      f"the crossing of {pct}% running training accuracy, in fractional epochs (lower = faster)")


def get_metric(name: str) -> MetricInfo:
    """The :class:`MetricInfo` registered as ``name``.

    ``epochs_to_<p>`` and ``steps_to_<p>`` are known for every threshold ``p`` (registered
    on first use).

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists valid names).
    """
    if name not in _METRICS:
        info = _accuracy_metric_info(name) if isinstance(name, str) else None
        if info is not None:
            return _METRICS.register(name, info)
    return _METRICS.get(name)


def list_metrics(kind: str | None = None, axis: str | None = None) -> list[str]:
    """Registered metric names, optionally only of one ``kind`` / with a direction on ``axis``."""
    if kind is not None and kind not in KINDS:
        raise InvalidArgumentError(f"kind must be one of {', '.join(KINDS)} or None, got {kind!r}")
    if axis is not None:
        check_axis(axis)
    out = []
    for name in _METRICS.names():
        info = _METRICS.get(name)
        if kind is not None and info.kind != kind:
            continue
        if axis is not None and axis not in info.directions:
            continue
        out.append(name)
    return out


def direction(name: str, axis: str, overrides: Mapping[str, bool] | None = None) -> bool:
    """Whether higher ``name`` is better on ``axis``: ``overrides[name]`` first, else the table.

    Raises:
        UnknownNameError: ``name`` is neither in ``overrides`` nor registered with a
            direction on ``axis``.
    """
    if overrides and name in overrides:
        value = overrides[name]
        if not isinstance(value, bool):
            raise InvalidTypeError(f"direction override for {name!r} must be a bool, got {value!r}")
        return value
    return get_metric(name).higher_is_better(axis)


def metrics_from_measures(columns: Sequence[str]) -> list[str]:
    """Register the directions of measure columns that the table does not know yet.

    A column named like a registered measure of :mod:`trilemma.measures` (or
    ``measures_<name>``, the study table's name when a theory column took ``<name>``) gets
    kind ``"init"`` and the measure's own axis and direction (when its axis is one of
    :data:`AXES`). Only columns that look like measure columns of a study table are
    considered: those with a ``<name>_time`` sibling, and ``measures_*``.
    :mod:`trilemma.measures` (and torch) is imported only here, and only if such a column is
    unknown; without it nothing is registered.

    Args:
        columns: Column names of a results table.

    Returns:
        The names newly registered.
    """
    present = set(columns)
    unknown = [c for c in columns if isinstance(c, str) and c not in _METRICS
               and (c.startswith("measures_") or f"{c}_time" in present)]
    if not unknown:
        return []
    try:
        from trilemma.measures import get_measure, list_measures
    except ImportError:  # pragma: no cover - measures need torch
        return []
    known = set(list_measures())
    added = []
    for col in unknown:
        name = col[len("measures_"):] if col.startswith("measures_") and col[len("measures_"):] in known else col
        if name not in known:
            continue
        m = get_measure(name)
        dirs = {m.axis: bool(m.higher_is_better)} if m.axis in AXES and m.higher_is_better is not None else {}
        register_metric(MetricInfo(col, "init", dirs, name, m.description or f"measure {name}"))
        added.append(col)
    return added


@dataclass(frozen=True)
class AxisSpec:
    """Which columns stand for one axis in a results table.

    Attributes:
        name: One of :data:`AXES`.
        ground_truth: Candidate trained-metric columns, in order of preference; the first
            one present in a table is the axis's ground truth (ranks, Pareto front, verdict).
        topology: The topology column the papers correlate this axis with (``mean_depth``
            or ``P``), used to place the published values.
    """

    name: str
    ground_truth: tuple[str, ...]
    topology: str

    def __post_init__(self) -> None:
        check_axis(self.name)
        if isinstance(self.ground_truth, str) or not self.ground_truth:
            raise InvalidArgumentError(
                f"axis {self.name!r}: ground_truth must be a non-empty tuple of column names, "
                f"got {self.ground_truth!r}"
            )
        object.__setattr__(self, "ground_truth", tuple(self.ground_truth))

    def resolve(self, columns: Sequence[str]) -> str:
        """The first ground-truth candidate present in ``columns``.

        Raises:
            InvalidArgumentError: none of the candidates is present.
        """
        for name in self.ground_truth:
            if name in columns:
                return name
        raise InvalidArgumentError(
            f"no ground-truth column for axis {self.name!r}: expected one of "
            f"{', '.join(self.ground_truth)}; the table has: {', '.join(map(str, columns))}"
        )


def accuracy_metric(threshold: float = 0.5, resolution: str = "epochs") -> str:
    """The column name of the convergence-speed metric at an accuracy threshold.

    ``accuracy_metric(0.5)`` is ``"epochs_to_50"`` (the papers' ground truth: epochs to 50%
    training accuracy); ``resolution="steps"`` names the sub-epoch crossing ``"steps_to_50"``.

    Raises:
        InvalidArgumentError: ``threshold`` outside (0, 1] or an unknown resolution.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise InvalidArgumentError(f"threshold must be in (0, 1], got {threshold!r}")
    if resolution not in ("epochs", "steps"):
        raise InvalidArgumentError(f"resolution must be 'epochs' or 'steps', got {resolution!r}")
    return f"{resolution}_to_{round(threshold * 100)}"


def default_axes(
    accuracy_threshold: float = 0.5, overrides: Mapping[str, str] | None = None
) -> tuple[AxisSpec, ...]:
    """The axes' ground truths for a study: the papers' by default, any axis overridable.

    Args:
        accuracy_threshold: The training-accuracy threshold of the convergence metric
            (the convergence ground truth is ``epochs_to_<threshold·100>``).
        overrides: ``{axis: column}`` replacing an axis's ground truth (a study's
            ``[analysis] axes``), e.g. ``{"convergence": "convergence_epoch"}``.

    Raises:
        UnknownNameError: an override names an unknown axis.
    """
    truth = {"expressivity": "expressivity", "convergence": accuracy_metric(accuracy_threshold),
             "generalization": "generalization_gap"}
    for axis, column in (overrides or {}).items():
        check_axis(axis)
        if not isinstance(column, str) or not column:
            raise InvalidArgumentError(f"the ground truth of axis {axis!r} must be a column name, got {column!r}")
        truth[axis] = column
    topo = {"expressivity": "mean_depth", "convergence": "P", "generalization": "mean_depth"}
    return tuple(AxisSpec(a, (truth[a],), topo[a]) for a in AXES)


#: The papers' ground truth (Chen, Huang & Wang, AutoML-Conf 2023, appendix A): expressivity =
#: training loss at convergence; convergence = epochs to 50% training accuracy (the loss-plateau
#: convergence epoch only decides *when* the loss has converged; select it with
#: ``default_axes(overrides={"convergence": "convergence_epoch"})``); generalization = test −
#: train loss at convergence. All three: lower is better.
DEFAULT_AXES: tuple[AxisSpec, ...] = default_axes()

_E, _C, _G = AXES

_BUILTIN: tuple[MetricInfo, ...] = (
    # Topology (Chen et al., NeurIPS 2022; Chen, Huang & Wang, AutoML-Conf 2023). Directions
    # are the papers' predictions: deep & narrow -> expressive; wide & shallow -> fast, general.
    MetricInfo("P", "topology", {_E: False, _C: True, _G: True}, "P",
               "number of input-output paths (topological width)"),
    MetricInfo("mean_depth", "topology", {_E: True, _C: False, _G: False}, "d̄",
               "effective depth: mean number of linear layers per path"),
    MetricInfo("eff_width", "topology", {_E: False, _C: True, _G: True}, "m̄",
               "effective width #{p: d_p > 0} / d̄ (NeurIPS 2022)"),
    MetricInfo("sum_depth", "topology", {_E: True}, "Σd_p",
               "total depth over paths Σ_p d_p"),
    # Closed-form theory (AutoML-Conf 2023, Theorems 4.1, 4.4, 4.6, 4.5).
    MetricInfo("jacobian_path_sum", "theory", {_E: False}, "Σ_p e^(−5d_p/8m)",
               "Theorem 4.1 path sum, proportional to the expected Jacobian norm on the circle; "
               "larger Jacobian -> smaller curvature -> less expressive"),
    MetricInfo("nngp_bound", "theory", {_C: True}, "NNGP bound",
               "Theorem 4.4 upper bound on λ_min of the NNGP kernel; larger -> faster GD convergence"),
    MetricInfo("ntk_bound", "theory", {_C: True, _G: True}, "NTK bound",
               "Theorem 4.6 upper bound on λ_min of the NTK Gram, corrected (recursion) form; larger -> "
               "smaller generalization bound"),
    MetricInfo("gen_indicator", "theory", {_G: False}, "Σd_p/√λ",
               "Theorem 4.5 generalization indicator Σ_p d_p / sqrt(λ_min) with the corrected Theorem 4.6 "
               "bound; lower is better"),
    MetricInfo("ntk_bound_printed", "theory", {_C: True, _G: True}, "NTK bound (as printed)",
               "Theorem 4.6 as printed in the paper (its last sum mis-indexed: not a valid upper bound); "
               "kept to reproduce the paper's figures"),
    MetricInfo("gen_indicator_printed", "theory", {_G: False}, "Σd_p/√λ (as printed)",
               "the generalization indicator with Theorem 4.6 as printed"),
    # Measured at initialization (SPEC §3).
    MetricInfo("curvature", "init", {_E: True}, "curvature",
               "mean curvature of the output curve of a great circle at init (Poole et al. 2016)"),
    MetricInfo("length_distortion", "init", {_E: True}, "length distortion",
               "output-curve length over input-curve length at init"),
    MetricInfo("curvature_length_distortion", "init", {_E: True}, "length distortion",
               "length distortion as the study table names it (an extra of the curvature measure)"),
    MetricInfo("ntk_lambda_min_lambda_robust", "init", {_C: True, _G: True}, "robust λ(NTK)",
               "eigenvalue where the top-down cumulative NTK spectrum reaches 90% of the trace "
               "(the papers' robust λ_min; an extra of the ntk_lambda_min measure)"),
    MetricInfo("nngp_lambda_min", "init", {_C: True}, "λ_min(NNGP)",
               "least eigenvalue of the empirical NNGP Gram at init (Theorem 4.3)"),
    MetricInfo("ntk_lambda_min", "init", {_C: True, _G: True}, "λ_min(NTK)",
               "least eigenvalue of the empirical NTK at init"),
    MetricInfo("naswot", "init", {}, "NASWOT",
               "log-determinant of the activation-pattern kernel (Mellor et al. 2021); an accuracy proxy"),
    MetricInfo("measures_ntk_bound", "init", {_G: False}, "√(yᵀΘ⁻¹y/N)",
               "label-aware NTK generalization bound measured at init (Cao & Gu 2019); the study table "
               "prefixes it because the theory's ntk_bound came first"),
    # Ground truth after training (SPEC §3); all lower-is-better.
    MetricInfo("expressivity", "trained", {_E: False}, "train loss",
               "mean training loss over the 10 epochs after convergence (lower = more expressive)"),
    MetricInfo("convergence_epoch", "trained", {_C: False}, "plateau epoch",
               "first epoch where the moving-mean training loss stops changing (lower = faster); decides "
               "when the loss has converged, not the papers' convergence ground truth"),
    MetricInfo("generalization_gap", "trained", {_G: False}, "test − train loss",
               "test loss minus training loss at convergence (lower = generalizes better)"),
)

for _info in _BUILTIN:
    register_metric(_info)
for _name in ("epochs_to_50", "steps_to_50"):
    get_metric(_name)


def register_pattern_metrics(columns: Sequence[object]) -> None:
    """Register the metrics known by pattern (``epochs_to_<p>``, ``steps_to_<p>``) among ``columns``."""
    for col in columns:
        if isinstance(col, str) and col not in _METRICS and _accuracy_metric_info(col) is not None:
            get_metric(col)

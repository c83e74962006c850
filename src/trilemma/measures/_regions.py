"""Linear regions of ReLU networks: activation patterns and exact counts along curves.

A ReLU network is piecewise linear; its *activation pattern* (which ReLU units are on) is
constant on each linear region (Montúfar et al., NeurIPS 2014; Serra et al., ICML 2018;
Hanin & Rolnick, ICML 2019). Two counts are offered:

* :func:`activation_patterns` on a batch → number of distinct patterns (TE-NAS, Chen,
  Gong & Wang, ICLR 2021).
* :func:`count_linear_regions_exact` along a segment or polygonal curve: every
  breakpoint is located, so the count has no sampling error.
  :func:`count_linear_regions_sampled` is the slow, obvious reference (dense sampling,
  a lower bound).

The exact algorithm refines a set of breakpoints ``t`` on each segment. Between two
consecutive breakpoints every pre-activation whose inputs are already affine there is
itself affine, so a strict sign change between the two ends means exactly one zero
crossing, found by linear interpolation; it is added and the process repeats. The first
ReLU layer's crossings are exact in the first round, the next layer's in the second, and so
on; when a round adds nothing, every pre-activation is affine and sign-consistent on every
interval, so all breakpoints are known (spurious points added in early rounds split a
region without changing its pattern and are merged). A final check verifies that the
network output and every pre-activation are affine on every interval (it catches nonlinearities the hooks cannot see,
e.g. ``torch.relu`` called functionally or max-pooling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trilemma._checks import is_int
from trilemma.errors import InvalidArgumentError, InvalidTypeError, MeasureFailedError
from trilemma.measures._base import MeasureResult, check_requirements, register_measure
from trilemma.measures._forward import couples_samples, functional_view

__all__ = [
    "ACTIVATION_CONVENTIONS",
    "CurveRegions",
    "activation_patterns",
    "distinct_codes",
    "hamming_similarity",
    "count_linear_regions_exact",
    "count_linear_regions_sampled",
]


#: Which units make up an activation code (:func:`activation_patterns`):
#:
#: * ``"trilemma"``: the input of every ``nn.ReLU`` call, each unit once;
#: * ``"naswot"``: the input of every module whose type string contains ``"ReLU"`` — the
#:   rule of NASWOT's reference code (Mellor et al. 2021, and NASLib's ``nwot`` used by
#:   NAS-Bench-Suite-Zero). In NAS-Bench-201 the ``ReLUConvBN`` op is itself such a module
#:   and its input is the input of its own ``nn.ReLU``, so every convolution op's units are
#:   counted twice. (The original NASWOT script also skips modules that receive no gradient;
#:   NASLib does not, and neither does this rule.)
#: * ``"te-nas"``: ``nn.ReLU`` calls with a 4-D (image) input only, as TE-NAS's linear-region
#:   counter (Chen, Gong & Wang 2021).
ACTIVATION_CONVENTIONS: tuple[str, ...] = ("trilemma", "naswot", "te-nas")


def _hooked(model: nn.Module, convention: str) -> list[nn.Module]:
    if convention == "naswot":
        return [m for m in model.modules() if "ReLU" in str(type(m))]
    return [m for m in model.modules() if isinstance(m, nn.ReLU)]


def _preactivations(
    model: nn.Module, x: torch.Tensor, convention: str = "trilemma"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pre-activations (n, U) of the hooked ReLU calls, output (n, k))`` (see :data:`ACTIVATION_CONVENTIONS`)."""
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if convention != "te-nas" or args[0].ndim == 4:
            captured.append(args[0])

    handles = [m.register_forward_pre_hook(hook) for m in _hooked(model, convention)]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    n = x.shape[0]
    pre = torch.cat([c.reshape(n, -1) for c in captured], dim=1) if captured else x.new_zeros((n, 0))
    return pre, out.reshape(n, -1)


def _codes(model: nn.Module, x: torch.Tensor, convention: str) -> torch.Tensor:
    """``(n, U)`` bool codes (pre-activation ``> 0``) of the hooked ReLU calls, kept as bits."""
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if convention != "te-nas" or args[0].ndim == 4:
            captured.append(args[0] > 0)

    handles = [m.register_forward_pre_hook(hook) for m in _hooked(model, convention)]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    n = x.shape[0]
    return torch.cat([c.reshape(n, -1) for c in captured], dim=1) if captured else x.new_zeros((n, 0), dtype=torch.bool)


#: Columns of one float32 matmul chunk in :func:`hamming_similarity` (exact below 2^24).
_CODE_CHUNK = 2**18


def hamming_similarity(codes: torch.Tensor) -> torch.Tensor:
    """``K_ij`` = number of units on which codes ``i`` and ``j`` agree (``N_A`` − Hamming distance).

    ``K = U − r_i − r_j + 2 c cᵀ`` with ``r`` the row sums: one matmul of 0/1 entries per chunk
    of :data:`_CODE_CHUNK` columns, exact in float32 (every partial count is below 2^24) and
    accumulated in float64 (exact integers).

    Args:
        codes: ``(n, U)`` bool.

    Returns:
        ``(n, n)`` float64 on the codes' device.
    """
    n, units = codes.shape
    r = codes.sum(dim=1, dtype=torch.float64)
    cc = torch.zeros((n, n), dtype=torch.float64, device=codes.device)
    for s in range(0, units, _CODE_CHUNK):
        c = codes[:, s:s + _CODE_CHUNK].to(torch.float32)
        cc += (c @ c.T).to(torch.float64)
    return units - r[:, None] - r[None, :] + 2 * cc


def distinct_codes(similarity: torch.Tensor, units: int) -> int:
    """Number of distinct codes from :func:`hamming_similarity` (rows agreeing on all ``units``)."""
    same = similarity == units
    duplicate = torch.tril(same, diagonal=-1).any(dim=1)  # equal to an earlier row
    return int(similarity.shape[0] - int(duplicate.sum()))


def check_activation_convention(convention: str) -> None:
    """Raise :class:`~trilemma.errors.InvalidArgumentError` unless ``convention`` is in :data:`ACTIVATION_CONVENTIONS`."""
    if convention not in ACTIVATION_CONVENTIONS:
        raise InvalidArgumentError(f"convention must be one of {ACTIVATION_CONVENTIONS}, got {convention!r}")


def _require_relu(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    reason = check_requirements(model, ("relu",))
    if reason is not None:
        raise InvalidArgumentError(f"{type(model).__name__}: {reason}")


def activation_patterns(
    model: nn.Module,
    x: torch.Tensor,
    *,
    batchnorm: str = "batch",
    dtype: torch.dtype | None = None,
    convention: str = "trilemma",
) -> torch.Tensor:
    """Binary activation codes of the ``nn.ReLU`` units (pre-activation ``> 0``).

    Args:
        model: A network whose nonlinearities are ``nn.ReLU`` modules (never modified).
        x: Inputs ``(n, *)``.
        batchnorm: One of :data:`~trilemma.measures.BATCHNORM_MODES` (default ``"batch"``:
            batch statistics, as NASWOT and TE-NAS run a freshly initialized network).
        dtype: Computation dtype (``None``: the model's).
        convention: Which units, see :data:`ACTIVATION_CONVENTIONS`.

    Returns:
        ``(n, U)`` bool, ``U`` = total number of hooked units over all calls.

    Raises:
        InvalidArgumentError: The model has no ``nn.ReLU`` (or has other nonlinearities),
            or an unknown ``convention``.
    """
    _require_relu(model)
    check_activation_convention(convention)
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] < 1:
        raise InvalidArgumentError(f"x must be a non-empty batch tensor (n, *), got {getattr(x, 'shape', x)!r}")
    with functional_view(model, feature=lambda m, xx: _codes(m, xx, convention), dtype=dtype,
                         batchnorm=batchnorm) as view, torch.no_grad():
        codes: torch.Tensor = view.forward(view.input(x))
        return codes


@dataclass(frozen=True)
class CurveRegions:
    """Linear regions met along a polygonal curve.

    Attributes:
        count: Number of linear (activation) regions crossed.
        breakpoints: ``(count − 1,)`` (open) or ``(count,)`` (closed) curve parameters
            where the activation pattern changes; segment ``s`` covers ``[s, s + 1]``.
        rounds: Refinement rounds until no breakpoint was added.
    """

    count: int
    breakpoints: torch.Tensor
    rounds: int


def _affine_between(at_t: torch.Tensor, at_mid: torch.Tensor, rel_tol: float) -> bool:
    """Whether every column is affine on each interval: value at the midpoint = mean of the ends."""
    scale = at_t.abs().amax(dim=0, keepdim=True).clamp_min(1.0)
    dev = (at_mid - 0.5 * (at_t[:-1] + at_t[1:])).abs() / scale
    return bool((dev <= rel_tol).all())


def _check_points(points: object, closed: bool) -> torch.Tensor:
    if not isinstance(points, torch.Tensor):
        raise InvalidTypeError(f"points must be a torch.Tensor (p, *input_shape), got {type(points).__name__}")
    need = 3 if closed else 2
    if points.ndim < 2 or points.shape[0] < need:
        raise InvalidArgumentError(
            f"points must have shape (p, *input_shape) with p >= {need} for "
            f"{'a closed' if closed else 'an open'} curve, got {tuple(points.shape)}"
        )
    if not points.is_floating_point():
        raise InvalidArgumentError(f"points must be floating point, got {points.dtype}")
    return points


def _check_curve_statistics(model: nn.Module, batchnorm: str, statistics_of: torch.Tensor | None) -> None:
    if couples_samples(model, batchnorm) and statistics_of is None:
        raise InvalidArgumentError(
            "the points of a curve are independent samples: with batchnorm='batch' and a model with BatchNorm, "
            "pass statistics_of=<a batch> (its statistics are held fixed) or use batchnorm='eval'"
        )


def _segments(points: torch.Tensor, closed: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    p = points.shape[0]
    segs = [(points[i], points[i + 1]) for i in range(p - 1)]
    if closed:
        segs.append((points[-1], points[0]))
    return segs


def _count_changes(patterns: list[torch.Tensor], closed: bool) -> tuple[int, torch.Tensor]:
    """Number of regions and the indices of the pattern changes between consecutive intervals."""
    codes = torch.cat(patterns, dim=0)
    change = (codes[1:] != codes[:-1]).any(dim=1)
    idx = torch.nonzero(change).flatten() + 1  # change at the start of interval idx
    n_changes = int(change.sum())
    if closed:
        if bool((codes[0] != codes[-1]).any()):
            n_changes += 1
            idx = torch.cat([idx, idx.new_zeros(1)])
        return max(n_changes, 1), idx
    return n_changes + 1, idx


def count_linear_regions_exact(
    model: nn.Module,
    points: torch.Tensor,
    *,
    closed: bool = False,
    dtype: torch.dtype | None = torch.float64,
    max_rounds: int = 10_000,
    batchnorm: str = "batch",
    statistics_of: torch.Tensor | None = None,
) -> CurveRegions:
    """Exact number of linear regions of a ReLU network along a polygonal curve.

    Args:
        model: A piecewise-linear network whose only nonlinearities are ``nn.ReLU``
            modules (linear, convolution, average pooling, BatchNorm with fixed statistics,
            skip additions are fine). Dropout off; never modified.
        points: Vertices ``(p, *input_shape)``; ``p = 2`` is a segment.
        closed: Also join the last vertex to the first.
        dtype: Computation dtype (default float64; the model is not converted).
        max_rounds: Safety cap on refinement rounds (each round resolves at least one more
            layer of the network, so depth + 1 rounds suffice).
        batchnorm: ``"batch"`` (default): BatchNorm normalizes with the statistics of the
            batch ``statistics_of``, held fixed along the curve (needed when the model has
            BatchNorm); ``"eval"``: running statistics; ``"remove"``: no BatchNorm.
        statistics_of: The batch ``(n, *)`` whose BatchNorm statistics are used.

    Returns:
        A :class:`CurveRegions`. Regions are maximal stretches of the curve with a constant
        activation pattern; distinct stretches with equal patterns count separately.

    Raises:
        InvalidArgumentError: Bad points, a model that is not a ReLU network, or
            ``batchnorm="batch"`` for a model with BatchNorm without ``statistics_of``.
        MeasureFailedError: The output is not affine between the located breakpoints (a
            nonlinearity invisible to ``nn.ReLU`` hooks), or ``max_rounds`` was reached.

    Example:
        >>> tent = torch.nn.Sequential(torch.nn.Linear(1, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1), torch.nn.ReLU())
        >>> with torch.no_grad():
        ...     _ = tent[0].weight.copy_(torch.tensor([[2.0], [4.0]])), tent[0].bias.copy_(torch.tensor([0.0, -2.0]))
        ...     _ = tent[2].weight.copy_(torch.tensor([[1.0, -1.0]])), tent[2].bias.zero_()
        >>> count_linear_regions_exact(tent, torch.tensor([[0.0], [1.0]])).count
        2
    """
    _require_relu(model)
    points = _check_points(points, closed)
    _check_curve_statistics(model, batchnorm, statistics_of)
    patterns: list[torch.Tensor] = []
    breaks: list[torch.Tensor] = []
    rounds_used = 0
    with functional_view(model, feature=_preactivations, dtype=dtype, batchnorm=batchnorm,
                         statistics_of=statistics_of) as view, torch.no_grad():
        eps = torch.finfo(view.dtype).eps
        merge = 64 * eps
        rel_tol = 1e3 * eps
        for s, (a, b) in enumerate(_segments(view.input(points), closed)):
            t = torch.tensor([0.0, 1.0], dtype=view.dtype, device=view.device)
            d = (b - a).reshape(1, -1)

            def at(ts: torch.Tensor, a: torch.Tensor = a, d: torch.Tensor = d) -> tuple[torch.Tensor, torch.Tensor]:
                return view.forward((a.reshape(1, -1) + ts[:, None] * d).reshape(ts.shape[0], *a.shape))

            rounds = 0
            while True:
                rounds += 1
                if rounds > max_rounds:
                    raise MeasureFailedError(f"exact linear-region count did not converge in {max_rounds} rounds")
                z, _ = at(t)
                tol = rel_tol * z.abs().amax(dim=0, keepdim=True)
                z0, z1 = z[:-1], z[1:]
                cross = ((z0 > tol) & (z1 < -tol)) | ((z0 < -tol) & (z1 > tol))
                if not bool(cross.any()):
                    break
                i, u = torch.nonzero(cross, as_tuple=True)
                frac = z0[i, u] / (z0[i, u] - z1[i, u])
                new = t[i] + (t[i + 1] - t[i]) * frac
                t = torch.sort(torch.cat([t, new])).values
                gap_ok = (t[1:] - t[:-1]) > merge  # merge near-duplicate breakpoints
                keep = torch.cat([gap_ok.new_ones(1), gap_ok])
                if not bool(gap_ok[-1]):  # keep the end point 1, drop its near-duplicate
                    keep[-2], keep[-1] = False, True
                t = t[keep]
            rounds_used = max(rounds_used, rounds)
            mid = 0.5 * (t[:-1] + t[1:])
            z_mid, f_mid = at(mid)
            z_t, f_t = at(t)
            if not _affine_between(torch.cat([z_t, f_t], 1), torch.cat([z_mid, f_mid], 1), 1e6 * eps):
                raise MeasureFailedError(
                    "the network output is not affine between the located breakpoints: the model has a "
                    "nonlinearity that nn.ReLU hooks cannot see (functional relu, max-pooling, ...)"
                )
            patterns.append(z_mid > 0)
            breaks.append(s + t[:-1])
    count, idx = _count_changes(patterns, closed)
    starts = torch.cat(breaks)
    return CurveRegions(count=count, breakpoints=torch.sort(starts[idx]).values.cpu(), rounds=rounds_used)


def count_linear_regions_sampled(
    model: nn.Module,
    points: torch.Tensor,
    *,
    num_samples: int = 10_000,
    closed: bool = False,
    dtype: torch.dtype | None = torch.float64,
    batchnorm: str = "batch",
    statistics_of: torch.Tensor | None = None,
) -> int:
    """Linear regions along a polygonal curve by dense sampling (a lower bound).

    The slow, obvious reference of :func:`count_linear_regions_exact`: the activation
    pattern at ``num_samples`` equally spaced midpoints per segment; regions narrower than
    the spacing are missed.

    Args:
        model, points, closed, dtype, batchnorm, statistics_of: As in
            :func:`count_linear_regions_exact`.
        num_samples: Samples per segment.

    Returns:
        Number of pattern changes along the curve, plus one for an open curve.
    """
    _require_relu(model)
    points = _check_points(points, closed)
    if not is_int(num_samples) or num_samples < 1:
        raise InvalidArgumentError(f"num_samples must be an int >= 1, got {num_samples!r}")
    _check_curve_statistics(model, batchnorm, statistics_of)
    patterns = []
    with functional_view(model, feature=_preactivations, dtype=dtype, batchnorm=batchnorm,
                         statistics_of=statistics_of) as view, torch.no_grad():
        for a, b in _segments(view.input(points), closed):
            t = (torch.arange(num_samples, dtype=view.dtype, device=view.device) + 0.5) / num_samples
            pts = a.reshape(1, -1) + t[:, None] * (b - a).reshape(1, -1)
            z, _ = view.forward(pts.reshape(num_samples, *a.shape))
            patterns.append(z > 0)
    return _count_changes(patterns, closed)[0]


# --------------------------------------------------------------------------- registered


@register_measure(name="linear_regions_batch", axis="expressivity", higher_is_better=True, requires=("relu",))
def _regions_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    batchnorm: str = "batch",
    convention: str = "trilemma",
) -> MeasureResult:
    """Number of distinct ReLU activation patterns in the batch (TE-NAS, Chen, Gong & Wang 2021).

    At most the batch size. BatchNorm with batch statistics by default (as TE-NAS).
    ``convention="te-nas"`` codes only ReLUs with 4-D inputs, as TE-NAS's counter (the same
    units on NAS-Bench-201); see :data:`ACTIVATION_CONVENTIONS`. Extras: the number of units.
    """
    codes = activation_patterns(model, x, batchnorm=batchnorm, convention=convention)
    return MeasureResult(float(distinct_codes(hamming_similarity(codes), codes.shape[1])),
                         extras={"units": codes.shape[1]})


@register_measure(name="linear_regions_exact", input_kind="segment", axis="expressivity",
                  higher_is_better=True, requires=("relu",))
def _regions_exact(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    vertices: int = 2,
    closed: bool = False,
    batchnorm: str = "batch",
) -> MeasureResult:
    """Exact number of linear regions along the segment (or polygon) through the first inputs.

    Serra et al. 2018 / Hanin & Rolnick 2019 count regions along 1-D curves; here every
    breakpoint is located exactly (float64). ``vertices`` first rows of the batch are the
    polygon's vertices. BatchNorm (``batchnorm="batch"``) uses the statistics of the whole
    batch, held fixed along the curve. Extras: the breakpoints.
    """
    if not is_int(vertices) or vertices < 2:
        raise InvalidArgumentError(f"vertices must be an int >= 2, got {vertices!r}")
    if x.shape[0] < vertices:
        raise InvalidArgumentError(f"vertices={vertices} needs at least that many inputs; got {x.shape[0]}")
    stats = x.to(torch.float64) if couples_samples(model, batchnorm) else None
    res = count_linear_regions_exact(model, x[:vertices].to(torch.float64), closed=closed, batchnorm=batchnorm,
                                     statistics_of=stats)
    return MeasureResult(float(res.count), extras={"breakpoints": res.breakpoints, "rounds": res.rounds})

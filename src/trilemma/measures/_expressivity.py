"""Expressivity at initialization: curvature, length distortion, Jacobian norm, trajectory length.

The input curve is a great circle ``x(θ) = r (u0 cos θ + u1 sin θ)``, ``r = sqrt(N0)`` by
default (Poole et al., NeurIPS 2016, "Exponential expressivity in deep neural networks
through transient chaos"). Its image under the network has velocity ``v = d f(x(θ))/dθ``
and acceleration ``a = d² f(x(θ))/dθ²``, both computed exactly by forward-mode automatic
differentiation (``torch.func.jvp``, nested for ``a``), and curvature
``κ = sqrt(‖v‖²‖a‖² − (v·a)²) / ‖v‖³``. Chen, Huang & Wang (2023, Theorem 4.1, Cor. 4.2)
relate the mean curvature of a ReLU DAG to its paths: fewer, longer paths → higher
curvature → more expressive.

Each point of the curve is an independent sample. BatchNorm (``batchnorm="batch"``, the
default) normalizes with the statistics of the given batch ``x``, computed once and held
fixed along the curve — the normalization a freshly initialized network applies in train
mode; ``batchnorm="eval"`` uses the running statistics. The model is never modified.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import jacrev, jvp, vmap

from trilemma._checks import is_int
from trilemma.errors import InvalidArgumentError, InvalidTypeError, MeasureFailedError
from trilemma.measures._base import MeasureResult, register_measure
from trilemma.measures._forward import Feature, couples_samples, functional_view

__all__ = [
    "CircleImage",
    "circle",
    "curvature",
    "jacobian_norm",
    "trajectory_lengths",
]


def _check_batch(x: Any, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise InvalidTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise InvalidArgumentError(f"{name} must be a non-empty batch (n, *), got shape {tuple(x.shape)}")


def _orthonormal_pair(
    x: torch.Tensor, directions: str | Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two orthonormal directions ``(d,)`` in float64."""
    d = x[0].numel()
    if isinstance(directions, str):
        if directions == "data":
            if x.shape[0] < 2:
                raise InvalidArgumentError(
                    f"directions='data' spans the circle with the first two inputs; x has {x.shape[0]} row(s)"
                )
            basis = x[:2].reshape(2, -1).T.to(torch.float64)
        elif directions == "random":
            basis = torch.randn(d, 2, dtype=torch.float64, device=x.device)
        else:
            raise InvalidArgumentError(f"directions must be 'data', 'random' or a pair of tensors, got {directions!r}")
    else:
        if len(directions) != 2:
            raise InvalidArgumentError(f"directions must hold two tensors (u0, u1), got {len(directions)}")
        basis = torch.stack([torch.as_tensor(u).reshape(-1) for u in directions], dim=1).to(torch.float64)
        if basis.shape[0] != d:
            raise InvalidArgumentError(f"directions must have {d} entries each, got {basis.shape[0]}")
        basis = basis.to(x.device)
    q, r = torch.linalg.qr(basis)
    if float(r.diagonal().abs().min()) <= 1e-12 * float(r.diagonal().abs().max()):
        raise InvalidArgumentError("the two directions are linearly dependent; cannot span a circle")
    q = q * torch.sign(r.diagonal())  # keep u0 along the first direction
    return q[:, 0], q[:, 1]


def circle(
    x: torch.Tensor,
    num_points: int = 128,
    *,
    directions: str | Sequence[torch.Tensor] = "data",
    radius: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Points of the great circle ``x(θ) = r (u0 cos θ + u1 sin θ)``.

    Args:
        x: A batch ``(n, *)`` fixing the sample shape (and, with ``directions="data"``,
            the plane: ``u0, u1`` are Gram-Schmidt of the first two inputs).
        num_points: Number of equally spaced angles ``θ_t = 2π t / T``.
        directions: ``"data"``, ``"random"`` (Gaussian plane, uses the torch RNG) or a
            pair of tensors ``(u0, u1)`` (orthonormalized).
        radius: ``r`` (default ``sqrt(N0)``, ``N0`` the number of input entries).

    Returns:
        ``(theta (T,), points (T, *sample_shape), radius)``, float64 on ``x``'s device.

    Raises:
        InvalidArgumentError: ``num_points < 4``, bad radius or directions.
    """
    theta, u0, u1, r = _circle_setup(x, num_points, directions, radius)
    pts = r * (torch.cos(theta)[:, None] * u0 + torch.sin(theta)[:, None] * u1)
    return theta, pts.reshape(num_points, *x.shape[1:]), r


def _circle_setup(
    x: torch.Tensor, num_points: int, directions: str | Sequence[torch.Tensor], radius: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Validated ``(theta, u0, u1, r)`` of the circle (float64)."""
    _check_batch(x)
    if not is_int(num_points) or num_points < 4:
        raise InvalidArgumentError(f"num_points must be an int >= 4, got {num_points!r}")
    r = math.sqrt(x[0].numel()) if radius is None else float(radius)
    if not (math.isfinite(r) and r > 0):
        raise InvalidArgumentError(f"radius must be a positive finite number, got {radius!r}")
    u0, u1 = _orthonormal_pair(x, directions)
    theta = torch.arange(num_points, dtype=torch.float64, device=x.device) * (2 * math.pi / num_points)
    return theta, u0, u1, r


@dataclass(frozen=True)
class CircleImage:
    """Geometry of the image of a great circle under a network.

    Attributes:
        theta: ``(T,)`` angles.
        speed: ``(T,)`` ``‖v(θ)‖``.
        kappa: ``(T,)`` curvature ``κ(θ)``.
        radius: Radius ``r`` of the input circle.
        mean_curvature: Mean of ``κ`` over the angles.
        length_in: ``2π r``.
        length_out: ``∫ ‖v‖ dθ`` (rectangle rule on the periodic grid).
        length_distortion: ``length_out / length_in``.
    """

    theta: torch.Tensor
    speed: torch.Tensor
    kappa: torch.Tensor
    radius: float
    mean_curvature: float
    length_in: float
    length_out: float
    length_distortion: float


def _stats_batch(model: nn.Module, x: torch.Tensor, batchnorm: str) -> torch.Tensor | None:
    """The batch whose BatchNorm statistics are held fixed (``None`` when no BatchNorm is coupled)."""
    return x if couples_samples(model, batchnorm) else None


def _velocity_acceleration(fn: Any, theta: torch.Tensor) -> tuple[Any, Any]:
    ones = torch.ones_like(theta)

    def velocity(th: torch.Tensor) -> Any:
        return jvp(fn, (th,), (ones,))[1]

    out = jvp(velocity, (theta,), (ones,))  # (velocity, its derivative = acceleration)
    return out[0], out[1]


def curvature(
    model: nn.Module,
    x: torch.Tensor,
    *,
    num_points: int = 128,
    directions: str | Sequence[torch.Tensor] = "data",
    radius: float | None = None,
    feature: Feature = "auto",
    dtype: torch.dtype | None = torch.float64,
    batchnorm: str = "batch",
) -> CircleImage:
    """Curvature and length distortion of the image of a great circle (Poole et al. 2016).

    Args:
        model: Any ``nn.Module`` (dropout off, BatchNorm per ``batchnorm``; never modified).
        x: A batch ``(n, *)`` fixing the input shape (and the plane, see :func:`circle`).
        num_points: Angles on the circle (the papers: 128).
        directions, radius: See :func:`circle`.
        feature: Which representation traces the curve: ``"auto"`` (``model.features``
            for a DAG-MLP, i.e. the cell output; otherwise the input of the last
            ``nn.Linear``), ``"output"``, a submodule name or a callable.
        dtype: Computation dtype (default float64; the model is not converted).
        batchnorm: ``"batch"`` (statistics of ``x``, held fixed), ``"eval"`` or ``"remove"``.

    Returns:
        A :class:`CircleImage`.

    Raises:
        MeasureFailedError: The image has zero speed somewhere (the network is locally
            constant), so the curvature is undefined there.

    Example:
        >>> img = curvature(torch.nn.Identity(), torch.eye(2, 5), radius=2.0)
        >>> round(img.mean_curvature, 6), round(img.length_distortion, 6)
        (0.5, 1.0)
    """
    theta, u0, u1, r = _circle_setup(x, num_points, directions, radius)
    with functional_view(model, feature=feature, dtype=dtype, batchnorm=batchnorm,
                         statistics_of=_stats_batch(model, x, batchnorm)) as view:
        b0, b1 = u0.to(view.device, view.dtype), u1.to(view.device, view.dtype)

        def image(t: torch.Tensor) -> torch.Tensor:
            p = r * (torch.cos(t)[:, None] * b0 + torch.sin(t)[:, None] * b1)
            return view.forward(p.reshape(t.shape[0], *x.shape[1:])).reshape(t.shape[0], -1)

        v, a = _velocity_acceleration(image, theta.to(view.device, view.dtype))
    v, a = v.detach().to(torch.float64), a.detach().to(torch.float64)
    vv, aa, va = (v * v).sum(1), (a * a).sum(1), (v * a).sum(1)
    speed = vv.sqrt()
    still = int((speed == 0).sum())
    if still:
        raise MeasureFailedError(
            f"the image of the circle has zero speed at {still} of {num_points} points (the network is "
            "locally constant there), so its curvature is undefined"
        )
    kappa = (vv * aa - va * va).clamp_min(0).sqrt() / speed**3
    length_in = 2 * math.pi * r
    length_out = float(speed.mean()) * 2 * math.pi
    return CircleImage(
        theta=theta.cpu(), speed=speed.cpu(), kappa=kappa.cpu(), radius=r,
        mean_curvature=float(kappa.mean()), length_in=length_in, length_out=length_out,
        length_distortion=length_out / length_in,
    )


def jacobian_norm(
    model: nn.Module,
    x: torch.Tensor,
    *,
    feature: Feature = "output",
    dtype: torch.dtype | None = None,
    chunk_size: int = 32,
    batchnorm: str = "batch",
) -> torch.Tensor:
    """Frobenius norms of the input-output Jacobians ``‖∂f(x_i)/∂x_i‖_F`` (Novak et al., ICLR 2018).

    Args:
        model: Any ``nn.Module`` with floating inputs (dropout off; never modified).
        x: Inputs ``(n, *)``.
        feature: Output node (default the model output), as in :func:`curvature`.
        dtype: Computation dtype (``None``: the model's).
        chunk_size: Samples per ``vmap(jacrev)`` call (bounds memory ``chunk·D·d``).
        batchnorm: ``"batch"`` (statistics of ``x``, held fixed: each row's own Jacobian),
            ``"eval"`` or ``"remove"``.

    Returns:
        ``(n,)`` norms (float64, CPU).

    Raises:
        InvalidArgumentError: Integer inputs, or ``chunk_size < 1``.
    """
    _check_batch(x)
    if not x.is_floating_point():
        raise InvalidArgumentError(f"jacobian_norm needs floating inputs, got {x.dtype}")
    if not is_int(chunk_size) or chunk_size < 1:
        raise InvalidArgumentError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    norms = []
    with functional_view(model, feature=feature, dtype=dtype, batchnorm=batchnorm,
                         statistics_of=_stats_batch(model, x, batchnorm)) as view:
        def single(xi: torch.Tensor) -> torch.Tensor:
            return view.forward(xi.unsqueeze(0)).reshape(-1)

        xs = view.input(x)
        for i in range(0, xs.shape[0], chunk_size):
            jac = vmap(jacrev(single))(xs[i:i + chunk_size])  # (c, D, *sample)
            norms.append(jac.reshape(jac.shape[0], -1).detach().to(torch.float64).norm(dim=1))
    return torch.cat(norms).cpu()


def _relu_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    captured: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _a, out: captured.append(out))
               for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return tuple(captured)


def _node_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(model.nodes(x))  # type: ignore[operator]


def trajectory_lengths(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layers: str = "auto",
    num_points: int = 128,
    directions: str | Sequence[torch.Tensor] = "data",
    radius: float | None = None,
    dtype: torch.dtype | None = torch.float64,
    batchnorm: str = "batch",
) -> torch.Tensor:
    """Length of the image of a great circle at every layer (Raghu et al., ICML 2017).

    Raghu et al.'s "trajectory length" grows exponentially with depth in the chaotic
    regime; the per-layer growth factor is a measure of expressive power.

    Args:
        model: Any ``nn.Module`` (dropout off; never modified).
        x: Batch fixing the input shape and plane (see :func:`circle`).
        layers: ``"nodes"`` (the DAG-MLP's node features 0..H), ``"relu"`` (the output of
            every ``nn.ReLU`` module in call order) or ``"auto"`` (nodes if the model has
            a ``nodes`` method, else ReLU outputs).
        num_points, directions, radius: See :func:`circle`.
        dtype: Computation dtype (default float64).
        batchnorm: ``"batch"`` (statistics of ``x``, held fixed), ``"eval"`` or ``"remove"``.

    Returns:
        ``(L + 1,)`` float64 lengths: the input circle ``2πr`` first, then each layer.

    Raises:
        InvalidArgumentError: Unknown ``layers``, or no layer to measure.
    """
    if layers not in ("auto", "nodes", "relu"):
        raise InvalidArgumentError(f"layers must be 'auto', 'nodes' or 'relu', got {layers!r}")
    if layers == "auto":
        layers = "nodes" if callable(getattr(model, "nodes", None)) else "relu"
    if layers == "nodes" and not callable(getattr(model, "nodes", None)):
        raise InvalidArgumentError(
            f"layers='nodes' needs a model with a nodes(x) method; {type(model).__name__} has none"
        )
    if layers == "relu" and not any(isinstance(m, nn.ReLU) for m in model.modules()):
        raise InvalidArgumentError("layers='relu' needs nn.ReLU modules; the model has none")
    theta, u0, u1, r = _circle_setup(x, num_points, directions, radius)
    pick = _node_outputs if layers == "nodes" else _relu_outputs
    with functional_view(model, feature=pick, dtype=dtype, batchnorm=batchnorm,
                         statistics_of=_stats_batch(model, x, batchnorm)) as view:
        b0, b1 = u0.to(view.device, view.dtype), u1.to(view.device, view.dtype)

        def image(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
            p = r * (torch.cos(t)[:, None] * b0 + torch.sin(t)[:, None] * b1)
            return view.forward(p.reshape(t.shape[0], *x.shape[1:]))

        th = theta.to(view.device, view.dtype)
        tangents = jvp(image, (th,), (torch.ones_like(th),))[1]
    lengths = [2 * math.pi * r]
    for tan in tangents:
        speed = tan.detach().to(torch.float64).reshape(num_points, -1).norm(dim=1)
        lengths.append(float(speed.mean()) * 2 * math.pi)
    return torch.tensor(lengths, dtype=torch.float64)


# --------------------------------------------------------------------------- registered


@register_measure(name="curvature", input_kind="circle", axis="expressivity", higher_is_better=True)
def _curvature_measure(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    num_points: int = 128,
    directions: str = "data",
    radius: float | None = None,
    feature: Feature = "auto",
    dtype: torch.dtype | None = torch.float64,
    batchnorm: str = "batch",
) -> MeasureResult:
    """Mean curvature of the image of a great circle (Poole et al. 2016; Chen, Huang & Wang 2023).

    Circle through the plane of the first two inputs, radius sqrt(N0), 128 angles; the
    feature node is the DAG-MLP cell output (``model.features``) or the penultimate layer.
    Extras: ``kappa`` per angle, ``length_distortion``.
    """
    img = curvature(model, x, num_points=num_points, directions=directions, radius=radius,
                    feature=feature, dtype=dtype, batchnorm=batchnorm)
    return MeasureResult(img.mean_curvature, extras={"kappa": img.kappa, "length_distortion": img.length_distortion,
                                                     "length_out": img.length_out, "length_in": img.length_in})


@register_measure(name="length_distortion", input_kind="circle", axis="expressivity", higher_is_better=True)
def _length_measure(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    num_points: int = 128,
    directions: str = "data",
    radius: float | None = None,
    feature: Feature = "auto",
    dtype: torch.dtype | None = torch.float64,
    batchnorm: str = "batch",
) -> MeasureResult:
    """Length of the image of a great circle over its input length (Poole et al. 2016; Raghu et al. 2017).

    Same circle and feature node as ``curvature``; extras hold the mean curvature.
    """
    img = curvature(model, x, num_points=num_points, directions=directions, radius=radius,
                    feature=feature, dtype=dtype, batchnorm=batchnorm)
    return MeasureResult(img.length_distortion, extras={"mean_curvature": img.mean_curvature,
                                                        "length_out": img.length_out, "length_in": img.length_in})


@register_measure(name="jacobian_norm", axis="expressivity", higher_is_better=False)
def _jacobian_measure(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    feature: Feature = "output",
    dtype: torch.dtype | None = None,
    chunk_size: int = 32,
    batchnorm: str = "batch",
) -> MeasureResult:
    """Mean Frobenius norm of the input-output Jacobian over the batch (Novak et al. 2018).

    Smaller norm ↔ higher curvature (Chen, Huang & Wang 2023, Cor. 4.2); extras: per-sample norms.
    """
    norms = jacobian_norm(model, x, feature=feature, dtype=dtype, chunk_size=chunk_size, batchnorm=batchnorm)
    return MeasureResult(float(norms.mean()), extras={"norms": norms})


@register_measure(name="trajectory_growth", input_kind="circle", axis="expressivity", higher_is_better=True)
def _trajectory_measure(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    layers: str = "auto",
    num_points: int = 128,
    directions: str = "data",
    radius: float | None = None,
    dtype: torch.dtype | None = torch.float64,
    batchnorm: str = "batch",
) -> MeasureResult:
    """Per-layer growth factor of trajectory length, (L_last / L_in)^(1/#layers) (Raghu et al. 2017).

    Lengths of the image of a great circle at every layer (DAG-MLP nodes, else ReLU
    outputs); extras: the lengths.
    """
    lengths = trajectory_lengths(model, x, layers=layers, num_points=num_points, directions=directions,
                                 radius=radius, dtype=dtype, batchnorm=batchnorm)
    layers_n = lengths.numel() - 1
    if float(lengths[-1]) <= 0:
        raise MeasureFailedError("the last layer's trajectory has zero length; the growth factor is undefined")
    growth = (float(lengths[-1]) / float(lengths[0])) ** (1.0 / layers_n)
    return MeasureResult(growth, extras={"lengths": lengths})

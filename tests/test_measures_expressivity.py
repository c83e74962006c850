"""Expressivity measures: curvature (known curves), Jacobian norm, trajectories, linear regions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trilemma.errors import InvalidArgumentError, MeasureFailedError
from trilemma.measures import (
    activation_patterns,
    count_linear_regions_exact,
    count_linear_regions_sampled,
    curvature,
    get_measure,
    jacobian_norm,
    trajectory_lengths,
)
from trilemma.measures._expressivity import _orthonormal_pair
from trilemma.models import build_model

F64 = torch.float64


# --------------------------------------------------------------------------- curvature


@pytest.mark.parametrize("radius", [0.3, 1.0, 7.5])
def test_circle_of_radius_r_has_curvature_one_over_r(radius: float) -> None:
    x = torch.randn(3, 6)
    img = curvature(nn.Identity(), x, radius=radius, num_points=32)
    assert torch.allclose(img.kappa, torch.full_like(img.kappa, 1 / radius), rtol=1e-4, atol=0)
    assert img.length_distortion == pytest.approx(1.0, rel=1e-12)
    default = curvature(nn.Identity(), x, num_points=16)
    assert default.radius == pytest.approx(math.sqrt(6))
    assert default.mean_curvature == pytest.approx(1 / math.sqrt(6), rel=1e-10)


def test_linear_network_maps_circle_to_ellipse_with_analytic_curvature() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 3)).double()
    x = torch.randn(2, 5, dtype=F64)
    img = curvature(net, x, num_points=64, feature="output")
    u0, u1 = _orthonormal_pair(x, "data")
    w = (net[1].weight @ net[0].weight).detach()
    r = math.sqrt(5)
    m = torch.stack([r * w @ u0, r * w @ u1], dim=1)  # f(θ) − c = M (cos θ, sin θ)
    _, s, vh = torch.linalg.svd(m, full_matrices=False)
    phase = vh @ torch.stack([torch.cos(img.theta), torch.sin(img.theta)])  # ellipse angle
    a, b = s[0], s[1]
    kappa = a * b / (a**2 * phase[1] ** 2 + b**2 * phase[0] ** 2) ** 1.5
    assert torch.allclose(img.kappa, kappa, rtol=1e-4, atol=0)
    # the length of the ellipse by an independent fine quadrature
    t = torch.linspace(0, 2 * math.pi, 200_001, dtype=F64)
    ell = torch.sqrt(a**2 * torch.sin(t) ** 2 + b**2 * torch.cos(t) ** 2)
    length = float(torch.trapezoid(ell, t))
    assert img.length_out == pytest.approx(length, rel=1e-4)


def test_curvature_rejects_constant_networks_and_bad_circles() -> None:
    dead = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    with torch.no_grad():
        dead[0].weight.zero_()
        dead[0].bias.fill_(-1.0)
    with pytest.raises(MeasureFailedError, match="zero speed"):
        curvature(dead, torch.randn(2, 4), feature="output")
    with pytest.raises(InvalidArgumentError, match="linearly dependent"):
        curvature(nn.Identity(), torch.ones(2, 4))
    with pytest.raises(InvalidArgumentError, match="first two inputs"):
        curvature(nn.Identity(), torch.ones(1, 4))
    with pytest.raises(InvalidArgumentError, match="num_points"):
        curvature(nn.Identity(), torch.randn(2, 4), num_points=2)


def test_random_directions_follow_the_seed() -> None:
    net = build_model("2_02_002", 8, 3, width=16, seed=0)
    m = get_measure("curvature")
    x = torch.randn(2, 8)
    a = m(net, x, seed=1, directions="random", num_points=16).value
    assert a == m(net, x, seed=1, directions="random", num_points=16).value
    assert a != m(net, x, seed=2, directions="random", num_points=16).value


def test_relu_network_curvature_is_inverse_jacobian_scale_for_one_layer() -> None:
    """Poole et al.: a linear map scales a circle to an ellipse; one ReLU layer = a linear map where active."""
    net = nn.Sequential(nn.Linear(3, 3, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(2.0 * torch.eye(3, dtype=F64))
    img = curvature(net, torch.eye(3, dtype=F64)[:2], feature="output", num_points=8)
    assert torch.allclose(img.kappa, torch.full((8,), 1 / (2 * math.sqrt(3)), dtype=F64))
    assert img.length_distortion == pytest.approx(2.0)


def test_jacobian_norm_of_a_linear_map_is_its_frobenius_norm() -> None:
    lin = nn.Linear(5, 3).double()
    norms = jacobian_norm(lin, torch.randn(4, 5, dtype=F64), chunk_size=3)
    assert torch.allclose(norms, torch.full((4,), float(lin.weight.norm()), dtype=F64))


def test_trajectory_lengths_of_a_scaled_chain() -> None:
    """A chain of positive-scaling ReLU layers on a positive circle doubles the length per layer."""
    layers = []
    for _ in range(3):
        lin = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            lin.weight.copy_(2.0 * torch.eye(2))
        layers += [lin, nn.ReLU()]
    net = nn.Sequential(*layers)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # centre the circle in the positive quadrant: all ReLUs active → purely linear
    lengths = trajectory_lengths(net, x, radius=1.0, num_points=64, layers="relu")
    # with the circle through the origin some points are clipped; check the all-active case
    shift = nn.Sequential(_Shift(10.0), *layers)
    lengths = trajectory_lengths(shift, x, radius=1.0, num_points=64, layers="relu")
    assert torch.allclose(lengths, torch.tensor([2 * math.pi * 2**k for k in range(4)], dtype=F64))
    growth = get_measure("trajectory_growth")(shift, x, radius=1.0, layers="relu")
    assert growth.value == pytest.approx(2.0)


class _Shift(nn.Module):
    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c


def test_dagmlp_trajectory_uses_nodes() -> None:
    net = build_model("2_12_121", 6, 3, width=8, seed=0)
    lengths = trajectory_lengths(net, torch.randn(2, 6), num_points=16)
    assert lengths.shape == (1 + net.spec.nodes + 1,)


# --------------------------------------------------------------------------- linear regions


def tent_map(k: int) -> nn.Sequential:
    """tri(x) = ReLU(ReLU(2x) − ReLU(4x − 2)) composed k times."""
    layers: list[nn.Module] = []
    for _ in range(k):
        first, second = nn.Linear(1, 2), nn.Linear(2, 1)
        with torch.no_grad():
            first.weight.copy_(torch.tensor([[2.0], [4.0]]))
            first.bias.copy_(torch.tensor([0.0, -2.0]))
            second.weight.copy_(torch.tensor([[1.0, -1.0]]))
            second.bias.zero_()
        layers += [first, nn.ReLU(), second, nn.ReLU()]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("k", range(1, 11))
def test_tent_map_composed_k_times_has_2_to_the_k_pieces(k: int) -> None:
    net = tent_map(k)
    res = count_linear_regions_exact(net, torch.tensor([[0.0], [1.0]]))
    assert res.count == 2**k
    expected = torch.arange(1, 2**k, dtype=F64) / 2**k  # the dyadic breakpoints
    assert torch.allclose(res.breakpoints, expected, atol=1e-12)
    x = torch.linspace(0, 1, 2**k + 1).unsqueeze(1)  # the map alternates 0 and 1 at dyadic points
    assert torch.allclose(net(x).squeeze(1), (torch.arange(2**k + 1) % 2).float(), atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("closed", [False, True])
def test_exact_count_agrees_with_dense_sampling(seed: int, closed: bool) -> None:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(),
                        nn.Linear(5, 1))
    pts = 2 * torch.randn(4, 2)
    exact = count_linear_regions_exact(net, pts, closed=closed)
    sampled = count_linear_regions_sampled(net, pts, num_samples=50_000, closed=closed)
    assert exact.count == sampled
    assert exact.count > 3
    assert exact.breakpoints.numel() == (exact.count if closed else exact.count - 1)


def test_exact_count_on_dagmlp_with_skips_is_at_least_sampled() -> None:
    net = build_model("2_12_121", 4, 2, width=6, seed=0)
    pts = 3 * torch.randn(2, 4)
    exact = count_linear_regions_exact(net, pts).count
    assert exact == count_linear_regions_sampled(net, pts, num_samples=100_000)


def test_exact_count_rejects_hidden_nonlinearities() -> None:
    class FunctionalRelu(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Linear(1, 4), nn.Linear(4, 3), nn.Linear(3, 1)
            self.act = nn.ReLU()  # the first layer's ReLU is functional, invisible to hooks

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.act(self.b(torch.relu(self.a(x)))))

    torch.manual_seed(0)
    with pytest.raises(MeasureFailedError, match="not affine"):
        count_linear_regions_exact(FunctionalRelu(), torch.tensor([[-3.0], [3.0]]))
    with pytest.raises(InvalidArgumentError, match="Tanh"):
        count_linear_regions_exact(nn.Sequential(nn.Linear(1, 2), nn.Tanh(), nn.ReLU()), torch.zeros(2, 1))
    with pytest.raises(InvalidArgumentError, match="p >= 3"):
        count_linear_regions_exact(tent_map(1), torch.zeros(2, 1), closed=True)


def test_activation_patterns_and_batch_region_count() -> None:
    net = tent_map(1)
    x = torch.tensor([[0.25], [0.75], [0.3], [-1.0]])
    codes = activation_patterns(net, x)
    assert codes.tolist() == [[True, False, True], [True, True, True], [True, False, True], [False, False, False]]
    assert get_measure("linear_regions_batch")(net, x).value == 3.0
    assert get_measure("linear_regions_exact")(net, torch.tensor([[0.0], [1.0], [5.0]])).value == 2.0
    assert get_measure("linear_regions_exact")(net, torch.tensor([[0.0], [1.0], [5.0]]), vertices=3).value == 3.0

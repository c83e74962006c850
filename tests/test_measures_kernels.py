"""NNGP Gram (convergence) and the NTK generalization bound."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trilemma.errors import InvalidArgumentError
from trilemma.measures import (
    empirical_ntk,
    get_measure,
    kernel_quadratic_form,
    nngp_gram,
    nngp_spectrum,
    ntk_generalization_bound,
)
from trilemma.models import build_model

F64 = torch.float64


def relu_nngp_map(c: torch.Tensor) -> torch.Tensor:
    """Chen, Huang & Wang 2023, Section 4: f(C) = (sqrt(1 − C²) + (π − arccos C)·C) / π."""
    return (torch.sqrt(1 - c**2) + (math.pi - torch.arccos(c)) * c) / math.pi


def test_wide_relu_layer_gram_approaches_arccos_kernel() -> None:
    d, m = 6, 40_000
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(d, m, bias=False), nn.ReLU())
    with torch.no_grad():
        layer[0].weight.normal_(0, math.sqrt(2 / d))
    x = torch.nn.functional.normalize(torch.randn(5, d), dim=1) * math.sqrt(d)  # K0_ii = |x|²/d = 1
    k = nngp_gram(layer, x, feature="output", dtype=F64)
    c = (x @ x.T / d).clamp(-1, 1).to(F64)
    assert torch.allclose(k, relu_nngp_map(c), atol=0.03)


def test_feature_selection() -> None:
    net = build_model("2_12_121", 6, 3, width=8, seed=0)
    x = torch.randn(5, 6)
    phi = net.features(x).detach()
    assert torch.allclose(nngp_gram(net, x), phi @ phi.T / 8, atol=1e-6)
    assert torch.allclose(nngp_gram(net, x, feature="penultimate"), phi @ phi.T / 8, atol=1e-6)
    out = net(x).detach()
    assert torch.allclose(nngp_gram(net, x, feature="output"), out @ out.T / 3, atol=1e-6)
    h0 = net.nodes(x)[0].detach()
    assert torch.allclose(nngp_gram(net, x, feature="stem"), h0 @ h0.T / 8, atol=1e-6)
    assert torch.allclose(nngp_gram(net, x, feature=lambda m, xx: m.nodes(xx)[0]), h0 @ h0.T / 8, atol=1e-6)
    assert torch.allclose(nngp_gram(net, x[:2], x[2:]), (phi @ phi.T / 8)[:2, 2:], atol=1e-6)
    seq = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    hidden = torch.relu(seq[0](x)).detach()
    assert torch.allclose(nngp_gram(seq, x), hidden @ hidden.T / 4, atol=1e-6)  # auto → penultimate
    with pytest.raises(InvalidArgumentError, match="submodule"):
        nngp_gram(net, x, feature="nope")


def test_nngp_spectrum_and_batchnorm_modes() -> None:
    net = build_model("2_02_002", 6, 3, width=16, seed=0, batchnorm=True)
    x = torch.randn(6, 6)
    eigs, stats = nngp_spectrum(net, x, dtype=F64)
    assert eigs.dtype == F64 and stats["lambda_min"] == float(eigs[0])
    assert get_measure("nngp_lambda_min")(net, x).value == pytest.approx(stats["lambda_min"], rel=1e-6)
    batch = nngp_gram(net, x, batchnorm="batch")
    assert torch.equal(batch, nngp_gram(net, x))  # batch statistics by default
    assert not torch.allclose(batch, nngp_gram(net, x, batchnorm="eval"))
    # batch statistics, by hand: every BatchNorm1d normalizes with the batch mean / biased variance
    ref = net.train()
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.track_running_stats = False
    phi = ref.features(x).detach()
    assert torch.allclose(batch, phi @ phi.T / phi.shape[1], atol=1e-6)
    with pytest.raises(InvalidArgumentError, match="x2"):
        nngp_gram(net, x, x[:2], batchnorm="batch")
    assert nngp_gram(net, x, x[:2], batchnorm="eval").shape == (6, 2)


def test_bound_matches_explicit_inverse() -> None:
    net = build_model("2_22_221", 6, 3, width=12, seed=0)
    x, y = torch.randn(8, 6), torch.arange(8) % 3
    theta = empirical_ntk(net, x, dtype=F64)
    onehot = torch.nn.functional.one_hot(y, 3).to(F64)
    expected = math.sqrt(float(torch.trace(onehot.T @ torch.linalg.inv(theta) @ onehot)) / 8)
    value, extras = ntk_generalization_bound(net, x, y)
    assert value == pytest.approx(expected, rel=1e-8)
    assert extras["jitter"] == 0.0
    assert extras["sum_depth"] == net.spec.topology.sum_depth
    assert extras["bound"] == pytest.approx(net.spec.topology.sum_depth * value)
    res = get_measure("ntk_gen_bound")(net, x, y)
    assert res.value == pytest.approx(value, rel=1e-12)
    scalar = torch.randn(8, dtype=F64)
    s_value, _ = ntk_generalization_bound(net, x, scalar)
    assert s_value == pytest.approx(math.sqrt(float(scalar @ torch.linalg.solve(theta, scalar)) / 8), rel=1e-8)
    full = empirical_ntk(net, x, dtype=F64, mode="full").permute(0, 2, 1, 3).reshape(24, 24)
    f_value, _ = ntk_generalization_bound(net, x, y, mode="full")
    vec = onehot.reshape(-1)
    assert f_value == pytest.approx(math.sqrt(float(vec @ torch.linalg.solve(full, vec)) / 8), rel=1e-6)


def test_singular_kernel_gets_reported_jitter() -> None:
    k = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=F64)
    q, jitter = kernel_quadratic_form(k, torch.tensor([1.0, -1.0]))
    assert jitter > 0 and math.isfinite(q)
    assert q == pytest.approx(2 / jitter, rel=1e-3)  # y = (1, −1) spans the null space: yᵀ(K + εI)⁻¹y = |y|²/ε
    net = build_model("2_02_002", 4, 2, width=4, seed=0)
    x = torch.randn(3, 4)
    value, extras = ntk_generalization_bound(net, torch.cat([x, x]), torch.tensor([0, 1, 0, 1, 0, 1]))
    assert extras["jitter"] > 0 and math.isfinite(value)


def test_bound_label_errors() -> None:
    net = build_model("2_02_002", 4, 2, width=4, seed=0)
    x = torch.randn(3, 4)
    with pytest.raises(InvalidArgumentError, match=r"\[0, 2\)"):
        ntk_generalization_bound(net, x, torch.tensor([0, 1, 2]))
    with pytest.raises(InvalidArgumentError, match="one row per input"):
        ntk_generalization_bound(net, x, torch.tensor([0, 1]))
    with pytest.raises(InvalidArgumentError, match="mode='full'"):
        ntk_generalization_bound(net, x, torch.randn(3), mode="full")

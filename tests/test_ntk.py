"""Empirical NTK: the three implementations agree with the per-sample loop in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trilemma.errors import InvalidArgumentError, MeasureFailedError
from trilemma.measures import (
    NTKImplementation,
    as_matrix,
    chunked,
    empirical_ntk,
    get_measure,
    ntk_spectrum,
    spectrum_stats,
)
from trilemma.models import build_model

F64 = torch.float64
FAST = (NTKImplementation.CONTRACTION, NTKImplementation.STRUCTURED)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _cnn_bn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
        nn.Conv2d(4, 6, 3, stride=2, groups=2, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding="same", dilation=2, padding_mode="reflect"), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3),
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return net


class _Shared(nn.Module):
    """A layer called twice, a raw parameter, a LayerNorm (contraction fallback) and a Conv1d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3, stride=2, padding=1)
        self.lin = nn.Linear(6, 6)
        self.scale = nn.Parameter(torch.randn(6))
        self.norm = nn.LayerNorm(6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).flatten(1)  # (n, 3·2)
        h = torch.relu(self.lin(torch.relu(self.lin(h))))
        return self.out(self.norm(h * self.scale))


CASES = {
    "plain_mlp": (lambda: nn.Sequential(nn.Linear(7, 9), nn.ReLU(), nn.Linear(9, 9), nn.ReLU(), nn.Linear(9, 3)),
                  (7,)),
    "dag_skip_2_22_221": (lambda: build_model("2_22_221", 7, 3, width=10, seed=1), (7,)),
    "dag_skip_1_12_111": (lambda: build_model("1_12_111", 7, 3, width=10, seed=2, init="ntk"), (7,)),
    "dag_no_bias": (lambda: build_model("2_12_102", 7, 3, width=10, seed=3, bias=False), (7,)),
    "cnn_batchnorm": (_cnn_bn, (2, 7, 7)),
    "shared_and_unknown_layers": (_Shared, (2, 4)),
}


@pytest.mark.parametrize("batchnorm", ["batch", "eval"])
@pytest.mark.parametrize("mode", ["sum", "trace", "full"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_implementations_match_loop(case: str, mode: str, batchnorm: str) -> None:
    factory, shape = CASES[case]
    model = factory()
    x = torch.randn(6, *shape, generator=torch.Generator().manual_seed(0))
    ref = empirical_ntk(model, x, implementation="loop", mode=mode, dtype=F64, batchnorm=batchnorm)
    assert ref.dtype == F64
    assert ref.shape == ((6, 6, 3, 3) if mode == "full" and case != "shared_and_unknown_layers"
                         else (6, 6, 2, 2) if mode == "full" else (6, 6))
    for impl in FAST:
        got = empirical_ntk(model, x, implementation=impl, mode=mode, dtype=F64, batchnorm=batchnorm)
        assert rel_err(got, ref) <= 1e-6, (impl, rel_err(got, ref))


def test_modes_are_consistent() -> None:
    model = build_model("2_02_002", 5, 4, width=8, seed=0)
    x = torch.randn(5, 5)
    full = empirical_ntk(model, x, mode="full", dtype=F64)
    assert torch.allclose(empirical_ntk(model, x, mode="trace", dtype=F64), full.diagonal(dim1=2, dim2=3).sum(-1))
    assert torch.allclose(empirical_ntk(model, x, mode="sum", dtype=F64), full.sum(dim=(2, 3)))
    assert torch.allclose(as_matrix(full), as_matrix(full).T)


def test_cross_kernel_and_chunking_match_full_kernel() -> None:
    model = _cnn_bn(1)
    x = torch.randn(7, 2, 7, 7)
    ev = {"dtype": F64, "batchnorm": "eval"}
    whole = empirical_ntk(model, x, **ev)
    cross = empirical_ntk(model, x[:3], x[3:], **ev)
    assert torch.allclose(cross, whole[:3, 3:], rtol=1e-10, atol=1e-12)
    for impl in ("loop", "contraction"):
        assert torch.allclose(empirical_ntk(model, x[:3], x[3:], implementation=impl, **ev), cross)
    blocks = chunked(empirical_ntk, 3)(model, x, mode="full", **ev)
    assert torch.allclose(blocks, empirical_ntk(model, x, mode="full", **ev), rtol=1e-10, atol=1e-12)
    assert torch.allclose(chunked(empirical_ntk, 2)(model, x[:3], x[3:], **ev), cross)


def test_batch_statistics_by_default_eval_is_per_sample() -> None:
    """Default ``batchnorm="batch"``: Jacobian rows of the batch function (as TE-NAS's NTK).

    The three implementations agree, the kernel differs from the eval one, the running
    statistics and flags stay untouched; ``"eval"`` gives the per-sample kernel, independent
    of the model's train flag.
    """
    model = _cnn_bn(2)
    x = torch.randn(6, 2, 7, 7)
    model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    default = empirical_ntk(model, x, dtype=F64)
    loop = empirical_ntk(model, x, implementation="loop", batchnorm="batch", dtype=F64)
    contraction = empirical_ntk(model, x, implementation="contraction", batchnorm="batch", dtype=F64)
    assert rel_err(contraction, loop) <= 1e-6 and rel_err(default, loop) <= 1e-6
    assert not torch.allclose(default[:2, :2], empirical_ntk(model, x[:2], dtype=F64), rtol=1e-3)  # coupled
    in_train = empirical_ntk(model, x, dtype=F64, batchnorm="eval")
    assert rel_err(loop, in_train) > 1e-3
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    assert model.training and all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    model.eval()
    assert torch.equal(in_train, empirical_ntk(model, x, dtype=F64, batchnorm="eval"))
    assert torch.allclose(in_train[:2, :2], empirical_ntk(model, x[:2], dtype=F64, batchnorm="eval"), rtol=1e-10)
    with pytest.raises(InvalidArgumentError, match="x2"):
        empirical_ntk(model, x[:3], x[3:])
    with pytest.raises(InvalidArgumentError, match="independent samples"):
        chunked(empirical_ntk, 2)(model, x)


def test_batch_mode_without_batchnorm_is_the_per_sample_kernel() -> None:
    model = build_model("2_22_221", 6, 3, width=8, seed=0)
    x = torch.randn(5, 6)
    batch = empirical_ntk(model, x, dtype=F64, batchnorm="batch")
    assert torch.equal(batch, empirical_ntk(model, x, dtype=F64, batchnorm="eval"))
    assert torch.allclose(chunked(empirical_ntk, 2)(model, x, dtype=F64), batch, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("budget", [1, 40_000, 2**40])
def test_batch_rows_are_chunk_invariant(budget: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """One VJP per row, batched in chunks of any size: the same kernel as the loop."""
    from trilemma.measures import _ntk

    monkeypatch.setattr(_ntk, "_ROWS_BUDGET", budget)
    model = _cnn_bn(3)
    x = torch.randn(5, 2, 7, 7)
    for mode in ("sum", "full"):
        ref = empirical_ntk(model, x, implementation="loop", mode=mode, dtype=F64)
        assert rel_err(empirical_ntk(model, x, mode=mode, dtype=F64), ref) <= 1e-12


def test_parameter_subset_is_the_kernel_of_those_parameters() -> None:
    """``params=`` restricts J to the named tensors (TE-NAS: names containing 'weight')."""
    from trilemma.measures import weight_parameter_names

    model = _cnn_bn(4)
    x = torch.randn(5, 2, 7, 7)
    names = weight_parameter_names(model)
    assert names == [k for k, _ in model.named_parameters() if k.endswith("weight")]
    for bn in ("batch", "eval"):
        ref = empirical_ntk(model, x, implementation="loop", dtype=F64, batchnorm=bn, params=names)
        for impl in FAST:
            got = empirical_ntk(model, x, implementation=impl, dtype=F64, batchnorm=bn, params=names)
            assert rel_err(got, ref) <= 1e-10, (impl, bn)
        rest = [k for k, _ in model.named_parameters() if k not in names]
        whole = empirical_ntk(model, x, dtype=F64, batchnorm=bn)
        part = empirical_ntk(model, x, dtype=F64, batchnorm=bn, params=rest)
        assert rel_err(ref + part, whole) <= 1e-10
    with pytest.raises(InvalidArgumentError, match="params"):
        empirical_ntk(model, x, params=["nope.weight"])


def test_batchnorm_without_running_stats_needs_batch_mode() -> None:
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5, track_running_stats=False), nn.ReLU(), nn.Linear(5, 1))
    with pytest.raises(InvalidArgumentError, match="track_running_stats=False"):
        empirical_ntk(model, torch.randn(4, 4), batchnorm="eval")
    assert empirical_ntk(model, torch.randn(4, 4), implementation="contraction").shape == (4, 4)
    assert empirical_ntk(model, torch.randn(4, 4)).shape == (4, 4)


def test_ntk_does_not_touch_the_model() -> None:
    model = build_model("2_22_221", 6, 3, width=8, seed=0, batchnorm=True)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for impl in NTKImplementation:
        empirical_ntk(model, torch.randn(4, 6), implementation=impl)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(m.training for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_ntk_is_psd_and_matches_explicit_formula_for_one_linear_layer() -> None:
    """For f(x) = Σ_c (W x + b)_c the NTK is k·x_iᵀx_j + k (k outputs)."""
    lin = nn.Linear(4, 3)
    x = torch.randn(5, 4, dtype=F64)
    theta = empirical_ntk(lin, x, dtype=F64)
    assert torch.allclose(theta, 3 * (x @ x.T) + 3)
    eigs, stats = ntk_spectrum(lin, x, dtype=F64)
    assert eigs.dtype == F64 and float(eigs.min()) > -1e-9
    assert stats["trace"] == pytest.approx(float(theta.trace()), rel=1e-12)


def test_spectrum_stats_definitions() -> None:
    s = spectrum_stats(torch.tensor([0.5, 1.0, 3.0, 5.5]))
    # top-down cumulative: 5.5, 8.5 (85%), 9.5 (95%) → 90% reached at 1.0
    assert s == {"lambda_min": 0.5, "lambda_max": 5.5, "condition": 11.0, "trace": 10.0, "lambda_robust": 1.0}
    assert spectrum_stats(torch.tensor([0.0, 1.0]))["condition"] == float("inf")
    with pytest.raises(MeasureFailedError):
        spectrum_stats(torch.tensor([1.0, float("nan")]))
    with pytest.raises(InvalidArgumentError):
        spectrum_stats(torch.tensor([1.0]), fraction=0.0)


def test_registered_ntk_measures_and_nan_weights() -> None:
    model = build_model("2_02_002", 6, 3, width=8, seed=0)
    x = torch.randn(5, 6)
    res = get_measure("ntk_lambda_min")(model, x)
    eigs, stats = ntk_spectrum(model, x, dtype=F64)
    assert res.value == pytest.approx(stats["lambda_min"], rel=1e-10)
    assert res.extras["condition"] == pytest.approx(stats["condition"], rel=1e-8)
    assert get_measure("ntk_lambda_robust")(model, x).value == pytest.approx(stats["lambda_robust"], rel=1e-10)
    with torch.no_grad():
        model.readout[0].weight[0, 0] = float("nan")
    with pytest.raises(MeasureFailedError, match="ntk_lambda_min"):
        get_measure("ntk_lambda_min")(model, x)


@pytest.mark.parametrize("bad", [
    {"implementation": "fast"}, {"mode": "diag"}, {"batchnorm": "train"},
])
def test_bad_arguments_are_reported(bad: dict[str, str]) -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(InvalidArgumentError, match=list(bad)[0]):
        empirical_ntk(model, torch.randn(2, 3), **bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["sum", "trace", "full"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_weight_sharing_formulations_agree_with_explicit_gradients(mode: str, symmetric: bool) -> None:
    """Both exact forms of Σ_l b_il ⊗ a_il kernels (pairwise, materialized) equal <G_i, G_j>."""
    from trilemma.measures._ntk import _bilinear

    g = torch.Generator().manual_seed(0)
    num_cot = 1 if mode == "sum" else 3
    a = torch.randn(5, 4, 2, 3, generator=g, dtype=F64)  # (n, L, groups, D)
    b = torch.randn(num_cot, 5, 4, 2, 6, generator=g, dtype=F64)  # (K, n, L, groups, C)
    grads = torch.einsum("ailgc,ilgd->aigcd", b, a).reshape(num_cot, 5, -1)  # explicit per-sample G
    n1 = 5 if symmetric else 2
    g1, g2 = grads[:, :n1], grads[:, :n1] if symmetric else grads[:, n1:]
    expected = (torch.einsum("aip,bjp->ijab", g1, g2) if mode == "full"
                else torch.einsum("aip,ajp->ij", g1, g2))
    for method in ("pairwise", "materialize", None):
        got = _bilinear(a, b, n1, symmetric, mode, method=method)
        assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12), method

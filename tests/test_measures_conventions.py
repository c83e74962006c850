"""BatchNorm defaults and reference conventions, each against a small re-derivation written here.

The re-derivations follow what the reference code does (zero-cost-nas, NASWOT / NASLib,
TE-NAS): they mutate a deep copy of the network (train-mode BatchNorm, hooks, ``.backward()``)
and read ``.grad`` fields, the way those scripts work, independently of trilemma's
functional implementation.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trilemma.errors import InvalidArgumentError
from trilemma.measures import empirical_ntk, get_measure, weight_parameter_names
from trilemma.models import build_nb201

F64 = torch.float64
ARCH = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|"


def _nb201(dtype: torch.dtype = F64) -> nn.Module:
    return build_nb201(ARCH, C=4, N=1, seed=0, dtype=dtype)


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
        nn.Conv2d(5, 6, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
    ).double()


def _data(n: int = 8, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=g, dtype=F64), torch.randint(0, classes, (n,), generator=g)


def _train_copy(model: nn.Module) -> nn.Module:
    """What the reference scripts measure: a copy in train mode (batch statistics)."""
    ref = copy.deepcopy(model).train()
    ref.zero_grad()
    return ref


def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# --------------------------------------------------------------------------- zero-cost-nas


@pytest.mark.parametrize("factory", [_nb201, _cnn])
def test_gradient_proxies_equal_zero_cost_nas_with_batch_statistics(factory) -> None:  # type: ignore[no-untyped-def]
    """snip, grad_norm, grasp, jacob_cov: default (batch statistics) = the reference computation."""
    model = factory()
    x, y = _data(classes=4 if factory is _cnn else 10)
    ref = _train_copy(model)
    F.cross_entropy(ref(x), y).backward()
    snip = sum(float((m.weight * m.weight.grad).abs().sum()) for m in _layers(ref))
    grad_norm = sum(float(m.weight.grad.norm()) for m in _layers(ref))
    # grasp: gradient, then the gradient of <g, grad_f> from a second forward pass
    ref = _train_copy(model)
    weights = [m.weight for m in _layers(ref)]
    g0 = torch.autograd.grad(F.cross_entropy(ref(x), y), weights)
    gf = torch.autograd.grad(F.cross_entropy(ref(x), y), weights, create_graph=True)
    sum((a.detach() * b).sum() for a, b in zip(g0, gf)).backward()
    grasp = sum(float((-w.detach() * w.grad).sum()) for w in weights)
    # jacob_cov: gradient of the summed output w.r.t. the input, numpy correlation + eig
    ref = _train_copy(model)
    xx = x.clone().requires_grad_(True)
    out = ref(xx)
    out.backward(torch.ones_like(out))
    v = np.linalg.eig(np.corrcoef(xx.grad.reshape(len(x), -1).numpy()))[0].real
    jacob = float(-np.sum(np.log(v + 1e-5) + 1.0 / (v + 1e-5)))
    for convention in ("trilemma", "zero-cost-nas"):
        kw = {"convention": convention}
        assert get_measure("snip")(model, x, y, **kw).value == pytest.approx(snip, rel=1e-10)
        assert get_measure("grad_norm")(model, x, y, **kw).value == pytest.approx(grad_norm, rel=1e-10)
        assert get_measure("grasp")(model, x, y, **kw).value == pytest.approx(grasp, rel=1e-8)
        assert get_measure("jacob_cov")(model, x, **kw).value == pytest.approx(jacob, rel=1e-8)
    # eval-mode BatchNorm (running statistics 0/1 at init) is an option and differs
    assert get_measure("snip")(model, x, y, batchnorm="eval").value != pytest.approx(snip, rel=1e-3)


@pytest.mark.parametrize("factory", [_nb201, _cnn])
def test_fisher_zero_cost_nas_broadcasts_over_fan_in(factory) -> None:  # type: ignore[no-untyped-def]
    model = factory()
    x, y = _data(classes=4 if factory is _cnn else 10)
    ref = _train_copy(model)
    acts: list[tuple[nn.Module, torch.Tensor]] = []

    def keep(m: nn.Module, _a: object, out: torch.Tensor) -> None:
        out.retain_grad()
        acts.append((m, out))

    for m in _layers(ref):
        m.register_forward_hook(keep)
    F.cross_entropy(ref(x), y).backward()
    paper, zcn = 0.0, 0.0
    for m, a in acts:
        g = (a * a.grad).sum(dim=(2, 3)) if a.ndim == 4 else a * a.grad
        per_channel = 0.5 * g.pow(2).mean(0)  # (C_out,)
        paper += float(per_channel.sum())
        zcn += float(torch.stack([torch.full(m.weight.shape[1:], float(v), dtype=F64) for v in per_channel]).sum())
    assert get_measure("fisher")(model, x, y).value == pytest.approx(paper, rel=1e-10)
    assert get_measure("fisher")(model, x, y, convention="zero-cost-nas").value == pytest.approx(zcn, rel=1e-10)
    assert zcn > 2 * paper


def _synflow_reference(model: nn.Module, keep_bn: bool) -> float:
    ref = copy.deepcopy(model).double()
    if keep_bn:
        ref.eval()
    else:  # zero-cost-nas: BatchNorm layers do nothing
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.forward = lambda t: t  # type: ignore[method-assign]
    with torch.no_grad():
        for v in ref.state_dict().values():
            v.abs_()
    ref(torch.ones(1, 3, 8, 8, dtype=F64)).sum().backward()
    return sum(float((m.weight * m.weight.grad).abs().sum()) for m in _layers(ref))


def test_synflow_removes_batchnorm_like_zero_cost_nas() -> None:
    model = _nb201(torch.float32)
    with torch.no_grad():  # running statistics that matter in eval mode
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    x, _ = _data()
    removed = _synflow_reference(model, keep_bn=False)
    for kw in ({}, {"convention": "zero-cost-nas"}, {"batchnorm": "remove"}):
        assert get_measure("synflow")(model, x.float(), **kw).value == pytest.approx(removed, rel=1e-12)
    kept = _synflow_reference(model, keep_bn=True)  # Tanaka et al.'s code: eval mode, absolute buffers
    assert get_measure("synflow")(model, x.float(), batchnorm="eval").value == pytest.approx(kept, rel=1e-12)
    assert kept != pytest.approx(removed, rel=1e-3)
    with pytest.raises(InvalidArgumentError, match="synflow"):
        get_measure("synflow")(model, x.float(), batchnorm="batch")


# --------------------------------------------------------------------------- NASWOT


def _naswot_reference(model: nn.Module, x: torch.Tensor) -> float:
    """NASLib's nwot: every module whose type string contains 'ReLU' adds its input's Hamming kernel."""
    ref = _train_copy(model)
    k = np.zeros((len(x), len(x)))

    def hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        nonlocal k
        c = (inp[0].reshape(len(x), -1) > 0).double()
        k = k + (c @ c.T + (1 - c) @ (1 - c).T).numpy()

    for m in ref.modules():
        if "ReLU" in str(type(m)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        ref(x)
    return float(np.linalg.slogdet(k)[1])


def test_naswot_reference_hooks_count_nb201_conv_ops_twice() -> None:
    model = _nb201()
    x, _ = _data(16)
    reference = _naswot_reference(model, x)
    assert get_measure("naswot")(model, x, convention="naswot").value == pytest.approx(reference, rel=1e-10)
    ours = get_measure("naswot")(model, x).value
    assert ours != pytest.approx(reference, rel=1e-3)  # ReLUConvBN's ReLU counted once by default
    cnn = _cnn()  # only nn.ReLU modules: both rules hook the same units
    assert get_measure("naswot")(cnn, x).value == pytest.approx(_naswot_reference(cnn, x), rel=1e-10)


# --------------------------------------------------------------------------- TE-NAS


def _tenas_ntk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """TE-NAS's get_ntk_n: train mode, one backward per sample, gradients of params named 'weight'."""
    ref = _train_copy(model)
    logit = ref(x)
    rows = []
    for i in range(len(x)):
        logit[i:i + 1].backward(torch.ones_like(logit[i:i + 1]), retain_graph=True)
        rows.append(torch.cat([w.grad.reshape(-1).clone() for name, w in ref.named_parameters()
                               if "weight" in name and w.grad is not None]))
        ref.zero_grad()
    grads = torch.stack(rows)
    return torch.einsum("nc,mc->nm", grads, grads)


def test_tenas_ntk_convention() -> None:
    x, _ = _data(6)
    model = _nb201()
    kernel = _tenas_ntk(model, x)
    ours = empirical_ntk(model, x, dtype=F64, params=weight_parameter_names(model))  # the parameter set, exactly
    assert torch.allclose(ours, kernel, rtol=1e-12, atol=0)
    eig = torch.linalg.eigvalsh(kernel)
    res = get_measure("ntk_condition")(model, x, convention="te-nas", dtype=F64)  # float32 eigenvalues
    assert res.value == pytest.approx(float(eig[-1] / eig[0]), rel=1e-6)
    assert res.extras["trace"] == pytest.approx(float(eig.sum()), rel=1e-6)
    full = get_measure("ntk_trace")(model, x).value  # every parameter (biases, BatchNorm shifts) by default
    assert full > res.extras["trace"] * (1 + 1e-6)
    model32 = _nb201(torch.float32)  # the reference's number: float32 kernel and eigenvalues
    eig32 = torch.linalg.eigvalsh(_tenas_ntk(model32, x.float()))
    cond32 = get_measure("ntk_condition")(model32, x, convention="te-nas")
    assert cond32.value == pytest.approx(float(eig32[-1] / eig32[0]), rel=1e-4)
    with pytest.raises(InvalidArgumentError, match="convention"):
        get_measure("ntk_condition")(model, x, convention="zero-cost-nas")


def test_tenas_linear_regions_count_image_relus() -> None:
    """TE-NAS: sign of every 4-D ReLU output; regions = Σ 1 / (number of samples with the same code)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 64, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    x, _ = _data(32)
    ref = _train_copy(model)
    feats: list[torch.Tensor] = []
    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(lambda _m, inp, out: feats.append(out) if inp[0].ndim == 4 else None)
    with torch.no_grad():
        ref(x)
    a = torch.sign(torch.cat([f.reshape(len(x), -1) for f in feats], 1))
    same = 1 - torch.sign(a @ (1 - a).T + (a @ (1 - a).T).T)
    expected = float((1.0 / same.sum(1)).sum())
    assert get_measure("linear_regions_batch")(model, x, convention="te-nas").value == pytest.approx(expected)
    units = get_measure("linear_regions_batch")(model, x).extras["units"]
    assert get_measure("linear_regions_batch")(model, x, convention="te-nas").extras["units"] == units - 5


# --------------------------------------------------------------------------- per-sample measures


def test_per_sample_measures_hold_the_batch_statistics_fixed() -> None:
    """curvature / Jacobian norm with batch statistics = eval mode with the batch's mean and biased variance."""
    model = _cnn()
    x, _ = _data(8)
    ref = copy.deepcopy(model).eval()
    stats: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [m.register_forward_pre_hook(
        lambda m, a: stats.__setitem__(m, (a[0].mean((0, 2, 3)), a[0].var((0, 2, 3), unbiased=False))))
        for m in ref.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        ref.train()(x)
    for h in hooks:
        h.remove()
    ref.eval()
    with torch.no_grad():
        for m, (mean, var) in stats.items():
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
    for name in ("curvature", "length_distortion", "jacobian_norm", "trajectory_growth"):
        got = get_measure(name)(model, x).value
        assert got == pytest.approx(get_measure(name)(ref, x, batchnorm="eval").value, rel=1e-9), name
        assert got != pytest.approx(get_measure(name)(model, x, batchnorm="eval").value, rel=1e-6), name

"""Capacity measures: each checked against a case with a known answer or a slow reference."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from trilemma.errors import InvalidArgumentError, MeasureFailedError
from trilemma.measures import get_measure, list_measures
from trilemma.measures._capacity import (
    correlate_with_gap,
    fit_power_law,
    hessian_top_eigenvalue,
    operator_norm,
)
from trilemma.models import build_model


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is fastest (and much faster on a shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CAPACITY = [
    "distance_to_init", "heavy_tail_alpha", "lipschitz_upper_bound", "margin_distribution",
    "pacbayes_flatness", "path_norm", "sharpness", "spectral_complexity", "spectral_margin_bound",
]


def _max_jacobian_norm(net, x):
    jac = torch.func.vmap(torch.func.jacrev(lambda v: net(v[None])[0]))(x)
    return float(torch.linalg.matrix_norm(jac, ord=2).max().detach())


def _linear(weight, bias=None):
    w = torch.as_tensor(weight, dtype=torch.float64)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float64))
    return layer


def test_all_capacity_measures_registered():
    assert set(CAPACITY) <= set(list_measures(axis="capacity"))


# --------------------------------------------------------------------------- Lipschitz / operator norms


def test_lipschitz_of_linear_map_is_its_spectral_norm():
    torch.manual_seed(0)
    layer = nn.Linear(7, 5, dtype=torch.float64)
    value = get_measure("lipschitz_upper_bound")(layer, torch.randn(3, 7)).value
    assert value == pytest.approx(float(torch.linalg.svdvals(layer.weight.detach())[0]), rel=1e-12)


def test_lipschitz_chain_is_product_and_bounds_the_jacobian():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    x = torch.randn(20, 6, dtype=torch.float64)
    res = get_measure("lipschitz_upper_bound")(net, x)
    norms = [float(torch.linalg.svdvals(m.weight.detach())[0]) for m in net if isinstance(m, nn.Linear)]
    assert res.value == pytest.approx(math.prod(norms), rel=1e-10)
    assert _max_jacobian_norm(net, x) <= res.value * (1 + 1e-9)


def test_dag_lipschitz_path_bound():
    torch.manual_seed(2)
    chain = build_model("2_02_002", 5, 3, width=8, dtype=torch.float64)
    x = torch.randn(10, 5, dtype=torch.float64)
    res = get_measure("lipschitz_upper_bound")(chain, x)
    norms = [float(torch.linalg.svdvals(m.weight.detach())[0]) for m in chain.modules() if isinstance(m, nn.Linear)]
    assert res.extras["method"] == "dag-paths"
    assert res.value == pytest.approx(math.prod(norms), rel=1e-10)  # a chain cell: one path
    for spec in ("1_01_222", "2_21_112"):  # skips: the path sum still bounds the Jacobian
        net = build_model(spec, 5, 3, width=8, init="ntk", dtype=torch.float64)
        bound = get_measure("lipschitz_upper_bound")(net, x).value
        assert _max_jacobian_norm(net, x) <= bound * (1 + 1e-9)


def test_conv_operator_norm_lanczos_matches_dense_reference():
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, dtype=torch.float64)
    shape = (3, 16, 16)
    lanczos = operator_norm(conv, shape, method="lanczos")
    dense = operator_norm(conv, shape, method="dense")
    assert lanczos == pytest.approx(dense, rel=1e-8)


def test_pointwise_conv_norm_is_its_channel_matrix_norm():
    torch.manual_seed(4)
    conv = nn.Conv2d(4, 6, 1, bias=False, dtype=torch.float64)
    expected = float(torch.linalg.svdvals(conv.weight.detach()[:, :, 0, 0])[0])
    assert operator_norm(conv, (4, 5, 5)) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(InvalidArgumentError, match="in_shape"):
        operator_norm(conv)


# --------------------------------------------------------------------------- spectral complexity / margin bound


def test_spectral_complexity_matches_formula():
    a1 = np.array([[3.0, 0.0, 1.0], [0.0, -2.0, 0.0]])
    a2 = np.array([[1.0, 2.0], [0.5, 0.0]])
    m1 = np.full_like(a1, 0.1)
    net = nn.Sequential(_linear(a1, [0.0, 0.0]), nn.ReLU(), _linear(a2, [0.0, 0.0]))
    init = {k: v.clone() for k, v in net.state_dict().items()}
    init["0.weight"] = torch.as_tensor(m1)
    init["2.weight"] = torch.as_tensor(a2)  # second layer did not move
    x = torch.randn(4, 3, dtype=torch.float64)

    def formula(refs):
        s = [np.linalg.norm(a, 2) for a in (a1, a2)]
        l21 = [np.linalg.norm(a - m, axis=1).sum() for a, m in zip((a1, a2), refs)]  # ‖(A−M)ᵀ‖_{2,1}
        return np.prod(s) * sum((d / si) ** (2 / 3) for d, si in zip(l21, s)) ** 1.5

    zero = get_measure("spectral_complexity")(net, x).value
    assert zero == pytest.approx(formula([np.zeros_like(a1), np.zeros_like(a2)]), rel=1e-10)
    ref = get_measure("spectral_complexity")(net, x, init_state=init).value
    assert ref == pytest.approx(formula([m1, a2]), rel=1e-10)


def test_conv_l21_norm_matches_unrolled_rows():
    torch.manual_seed(5)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False, dtype=torch.float64)
    net = nn.Sequential(conv)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    res = get_measure("spectral_complexity")(net, x)
    dense = torch.func.jacrev(lambda v: conv(v.reshape(1, 2, 5, 5)).flatten())(torch.zeros(50, dtype=torch.float64))
    l21 = float(dense.detach().norm(dim=1).sum())
    sigma = float(torch.linalg.svdvals(dense.detach())[0])
    assert res.extras["layers"]["0"]["l21_distance"] == pytest.approx(l21, rel=1e-10)
    assert res.value == pytest.approx(sigma * (l21 / sigma), rel=1e-8)  # one layer: R_A = ‖Aᵀ‖_{2,1}


def test_spectral_margin_bound_definition_and_failure():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x = torch.randn(30, 4, dtype=torch.float64)
    y = net(x).argmax(1)  # every sample correct → margins positive
    res = get_measure("spectral_margin_bound")(net, x, y)
    out = net(x).detach()
    top2 = out.topk(2, dim=1).values
    gamma = float(torch.quantile(top2[:, 0] - top2[:, 1], 0.1))
    r_a = get_measure("spectral_complexity")(net, x).value
    assert res.extras["gamma"] == pytest.approx(gamma, rel=1e-10)
    assert res.value == pytest.approx(float(x.norm()) * r_a / (gamma * 30), rel=1e-10)
    with pytest.raises(MeasureFailedError, match="positive margin"):
        get_measure("spectral_margin_bound")(net, x, out.argmin(1))  # every margin < 0


# --------------------------------------------------------------------------- path norm, distance


def test_path_norm_of_hand_built_net():
    w1 = np.array([[1.0, -2.0], [3.0, 0.5], [0.0, 1.5]])
    b1 = np.array([0.5, -1.0, 2.0])
    w2 = np.array([[2.0, -1.0, 0.5]])
    b2 = np.array([-3.0])
    net = nn.Sequential(_linear(w1, b1), nn.ReLU(), _linear(w2, b2))
    x = torch.zeros(1, 2, dtype=torch.float64)
    for p in (1.0, 2.0):
        weights = sum(abs(w1[j, i] * w2[0, j]) ** p for j in range(3) for i in range(2))
        biases = sum(abs(b1[j] * w2[0, j]) ** p for j in range(3)) + abs(b2[0]) ** p
        assert get_measure("path_norm")(net, x, p=p).value == pytest.approx((weights + biases) ** (1 / p))
        no_bias = get_measure("path_norm")(net, x, p=p, include_bias=False).value
        assert no_bias == pytest.approx(weights ** (1 / p))


def test_path_norm_folds_batchnorm_and_skips():
    torch.manual_seed(7)
    net = build_model("1_01_222", 4, 2, width=5, batchnorm=True, dtype=torch.float64)
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm1d)):
        with torch.no_grad():
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(-2, 2)
            bn.bias.uniform_(-1, 1)
    folded = build_model("1_01_222", 4, 2, width=5, batchnorm=False, dtype=torch.float64)
    src = dict(net.named_modules())
    for name, mod in folded.named_modules():
        if isinstance(mod, nn.Linear):
            lin = src[name]
            seq_name = name.rsplit(".", 1)[0]
            bn = next((m for m in src[seq_name] if isinstance(m, nn.BatchNorm1d)), None)
            w, b = lin.weight.detach(), lin.bias.detach()
            if bn is not None:
                s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
                w, b = w * s[:, None], (b - bn.running_mean) * s + bn.bias.detach()
            with torch.no_grad():
                mod.weight.copy_(w)
                mod.bias.copy_(b)
    x = torch.randn(3, 4, dtype=torch.float64)
    net.eval()
    assert torch.allclose(net(x), folded(x))
    a = get_measure("path_norm")(net, x).value
    b = get_measure("path_norm")(folded, x).value
    assert a == pytest.approx(b, rel=1e-10)


def test_path_norm_rejects_non_path_modules():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(MeasureFailedError, match="Tanh"):
        get_measure("path_norm")(net, torch.randn(2, 3))


def test_distance_to_init():
    torch.manual_seed(8)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    init = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net[0].weight.add_(0.5)
        net[2].bias.sub_(2.0)
    value = get_measure("distance_to_init")(net, torch.randn(2, 3), init_state=init).value
    assert value == pytest.approx(math.sqrt(12 * 0.25 + 2 * 4.0), rel=1e-6)
    with pytest.raises(InvalidArgumentError, match="init_state"):  # the registry checks required options
        get_measure("distance_to_init")(net, torch.randn(2, 3))
    with pytest.raises(MeasureFailedError, match="init_state"):  # and so does the function itself
        get_measure("distance_to_init").fn(net, torch.randn(2, 3))
    with pytest.raises(InvalidArgumentError, match="no entry"):
        get_measure("distance_to_init")(net, torch.randn(2, 3), init_state={"0.weight": init["0.weight"]})


# --------------------------------------------------------------------------- loss-based


def test_hessian_top_eigenvalue_of_quadratic():
    torch.manual_seed(9)
    q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    for spectrum in ([5.0, 3.0, 1.0] + [0.5] * 9, [2.0, 1.0] + [-0.5] * 9 + [-7.0]):
        a = q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ q.T
        point = [torch.randn(12, dtype=torch.float64)]
        for method in ("power", "lanczos"):
            top, _ = hessian_top_eigenvalue(lambda p, a=a: 0.5 * p[0] @ a @ p[0], point, method=method, tol=1e-10,
                                            max_iter=2000)
            assert top == pytest.approx(max(spectrum), rel=1e-5), (spectrum, method)


def test_sharpness_of_linear_least_squares():
    torch.manual_seed(10)
    n, d, k = 40, 5, 3
    x = torch.randn(n, d, dtype=torch.float64)
    y = torch.randn(n, k, dtype=torch.float64)
    net = nn.Linear(d, k, dtype=torch.float64)
    xt = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)
    expected = 2.0 / (n * k) * float(torch.linalg.eigvalsh(xt.T @ xt)[-1])  # H = 2/(nk) X̃ᵀX̃ ⊗ I
    res = get_measure("sharpness")(net, x, y, loss="mse", tol=1e-10, max_iter=1000)
    assert res.value == pytest.approx(expected, rel=1e-6)


def test_sharpness_matches_full_hessian_reference():
    torch.manual_seed(11)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.randn(16, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss(flat):
        parts, i = {}, 0
        for name, shape in zip(names, shapes):
            size = math.prod(shape)
            parts[name] = flat[i:i + size].reshape(shape)
            i += size
        return nn.functional.cross_entropy(torch.func.functional_call(net, parts, (x,)), y)

    full = torch.autograd.functional.hessian(loss, flat0)
    expected = float(torch.linalg.eigvalsh(full)[-1])
    res = get_measure("sharpness")(net, x, y, method="lanczos", tol=1e-12)
    assert res.value == pytest.approx(expected, rel=1e-6)


def test_pacbayes_flatness_of_linear_model():
    torch.manual_seed(12)
    n, d = 64, 6
    x = torch.randn(n, d, dtype=torch.float64)
    net = nn.Linear(d, 2, dtype=torch.float64)
    with torch.no_grad():
        y = net(x)  # zero residual: E[L(w+u)] − L(w) = σ²·mean(‖x‖² + 1)
    tol = 0.05
    res = get_measure("pacbayes_flatness")(net, x, y, loss="mse", tolerance=tol, draws=100, rtol=1e-3)
    expected = math.sqrt(tol / float((x.pow(2).sum(1) + 1).mean()))
    assert res.value == pytest.approx(expected, rel=0.1)
    assert res.extras["inverse_sigma_squared"] == pytest.approx(res.value ** -2)
    again = get_measure("pacbayes_flatness")(net, x, y, loss="mse", tolerance=tol, draws=100, rtol=1e-3)
    assert again.value == res.value  # seeded


def test_vectorized_noisy_losses_match_a_loop():
    from trilemma.measures._capacity import _noisy_losses

    torch.manual_seed(17)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(3 * 4 * 4, 4)).eval()
    x, y = torch.randn(6, 2, 4, 4), torch.randint(0, 4, (6,))
    params = {n: p.detach() for n, p in net.named_parameters()}
    noise = {n: torch.randn(5, *p.shape) for n, p in params.items() if n != "4.bias"}
    fast = _noisy_losses(net, params, noise, 0.3, x, y, "cross_entropy")
    for j in range(5):  # the slow, obvious reference: one perturbed copy at a time
        ref = copy.deepcopy(net)
        with torch.no_grad():
            for n, p in ref.named_parameters():
                if n in noise:
                    p.add_(0.3 * noise[n][j])
            assert float(nn.functional.cross_entropy(ref(x), y)) == pytest.approx(float(fast[j]), rel=1e-5)


def test_loss_measures_validate_arguments():
    net = nn.Linear(3, 2)
    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    with pytest.raises(InvalidArgumentError, match="loss must be one of"):
        get_measure("sharpness")(net, x, y, loss="hinge")
    with pytest.raises(InvalidArgumentError, match="lie in"):
        get_measure("sharpness")(net, x, y + 5)
    with pytest.raises(InvalidArgumentError, match="tolerance"):
        get_measure("pacbayes_flatness")(net, x, y, tolerance=0)


# --------------------------------------------------------------------------- margins


def test_margin_distribution_geometry_and_scale_invariance():
    torch.manual_seed(13)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    x = torch.randn(50, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (50,))
    res = get_measure("margin_distribution")(net, x, y)
    h = torch.relu(net[0](x)).detach()
    out = net(x).detach()
    w = net[2].weight.detach()
    manual = []
    for i in range(50):
        j = max((c for c in range(3) if c != int(y[i])), key=lambda c: float(out[i, c]))
        manual.append(float((out[i, y[i]] - out[i, j]) / (w[y[i]] - w[j]).norm()))
    manual = np.array(manual) / math.sqrt(float(h.var(0, unbiased=False).sum()))
    assert res.value == pytest.approx(float(np.median(manual)), rel=1e-10)
    with torch.no_grad():
        net[2].weight.mul_(7.0)
        net[2].bias.mul_(7.0)
    assert get_measure("margin_distribution")(net, x, y).value == pytest.approx(res.value, rel=1e-10)


# --------------------------------------------------------------------------- heavy tails


def test_power_law_mle_matches_scipy_and_recovers_alpha():
    rng = np.random.default_rng(14)
    alpha, xmin = 2.5, 1.5
    sample = xmin * (1 - rng.random(20000)) ** (-1 / (alpha - 1))
    fixed = fit_power_law(sample, xmin=xmin)
    b, _, _ = stats.pareto.fit(sample, floc=0, fscale=xmin)  # scipy's Pareto shape b = α − 1
    assert fixed.alpha == pytest.approx(1 + b, rel=1e-6)
    assert fixed.alpha == pytest.approx(alpha, abs=0.05)
    noisy = np.concatenate([rng.uniform(0.01, xmin, 3000), sample[:3000]])  # a non-power-law body
    searched = fit_power_law(noisy)
    assert searched.alpha == pytest.approx(alpha, abs=0.2)
    with pytest.raises(InvalidArgumentError, match="min_tail"):
        fit_power_law([1.0, 2.0], min_tail=5)


def test_heavy_tail_alpha_of_planted_spectrum():
    rng = np.random.default_rng(15)
    n, alpha = 400, 3.0
    eig = (1 - rng.random(n)) ** (-1 / (alpha - 1))
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    layer = nn.Linear(n, n, bias=False, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(u @ np.diag(np.sqrt(eig)) @ v.T))
    res = get_measure("heavy_tail_alpha")(nn.Sequential(layer), torch.zeros(1, n))
    assert res.value == pytest.approx(alpha, abs=0.35)
    with pytest.raises(MeasureFailedError, match="min_tail"):
        get_measure("heavy_tail_alpha")(nn.Linear(3, 2), torch.zeros(1, 3))


# --------------------------------------------------------------------------- no mutation


def test_measures_leave_the_model_untouched():
    torch.manual_seed(16)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                        nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    net[5].weight.requires_grad_(False)
    net.train()
    net[1].eval()
    x, y = torch.randn(12, 2, 5, 5), torch.randint(0, 3, (12,))
    init = {k: v.clone() for k, v in net.state_dict().items()}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    flags = [p.requires_grad for p in net.parameters()]
    for name in CAPACITY:
        fn = get_measure(name).fn  # the raw function, without the registry's state restore
        kwargs = {"init_state": init} if name in ("distance_to_init", "spectral_complexity") else {}
        try:
            fn(net, x, y, **kwargs)
        except MeasureFailedError:
            pass
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), name
        assert [m.training for m in net.modules()] == modes, name
        assert [p.requires_grad for p in net.parameters()] == flags, name


# --------------------------------------------------------------------------- correlation with the gap


def test_correlate_with_gap_kendall_and_granulated():
    records = pd.DataFrame({
        "gap": [1.0, 2.0, 3.0, 4.0],
        "good": [10.0, 20.0, 30.0, 40.0],
        "bad": [4.0, 3.0, 2.0, 1.0],
        "mixed": [1.0, 3.0, 2.0, 4.0],  # one discordant pair of six: τ = (5 − 1) / 6
        "width": [1, 2, 1, 2],
        "depth": [1, 1, 2, 2],
    })
    out = correlate_with_gap(records, "gap", ["good", "bad", "mixed"]).set_index("measure")
    assert out.loc["good", "tau"] == pytest.approx(1.0)
    assert out.loc["bad", "tau"] == pytest.approx(-1.0)
    assert out.loc["mixed", "tau"] == pytest.approx(2 / 3)
    gran = correlate_with_gap(records, "gap", ["mixed"], hyper_cols=["width", "depth"]).iloc[0]
    # width groups (depth fixed): {1,3}→{1,2} τ=1, {2,4}→{3,4} τ=1; depth groups: {1,2}→{1,3} τ=1, {3,4}→{2,4} τ=1
    assert gran["psi_width"] == pytest.approx(1.0) and gran["psi_depth"] == pytest.approx(1.0)
    assert gran["psi"] == pytest.approx(1.0)
    with pytest.raises(InvalidArgumentError, match="lack column"):
        correlate_with_gap(records, "gap", ["nope"])
    with pytest.raises(InvalidArgumentError, match="constant"):
        correlate_with_gap(records.assign(flat=1.0), "gap", ["flat"])

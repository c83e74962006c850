"""Zero-cost proxies and cost measures against slow, obvious re-implementations."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trilemma.errors import MeasureFailedError
from trilemma.measures import count_macs, get_measure, weight_names
from trilemma.models import build_model
from trilemma.spaces import CellSpec, count_params


def _net() -> nn.Module:
    return build_model("2_12_121", 5, 3, width=6, seed=0)


def _data(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g), torch.arange(n) % 3


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def test_naswot_matches_hamming_kernel_by_hand() -> None:
    net, (x, _) = build_model("2_12_121", 5, 3, width=16, seed=0), _data()
    codes: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _a, out: codes.append((out > 0).flatten(1)))
             for m in net.modules() if isinstance(m, nn.ReLU)]
    net(x)
    for h in hooks:
        h.remove()
    c = torch.cat(codes, 1).numpy()
    n_units = c.shape[1]
    k = np.array([[n_units - np.sum(a != b) for b in c] for a in c], dtype=float)
    expected = np.linalg.slogdet(k)[1]
    assert get_measure("naswot")(net, x).value == pytest.approx(expected, rel=1e-10)


def test_naswot_with_duplicate_codes_fails_loudly() -> None:
    net, (x, _) = _net(), _data()
    x = torch.cat([x[:3], x[:3]])
    with pytest.raises(MeasureFailedError, match="singular"):
        get_measure("naswot")(net, x)


def test_snip_grad_norm_match_backward_on_a_copy() -> None:
    net, (x, y) = _net(), _data()
    ref = copy.deepcopy(net)
    F.cross_entropy(ref(x), y).backward()
    snip = sum(float((w * w.grad).abs().sum()) for w in _weights(ref))
    norm = sum(float(w.grad.norm()) for w in _weights(ref))
    assert get_measure("snip")(net, x, y).value == pytest.approx(snip, rel=1e-5)
    assert get_measure("grad_norm")(net, x, y).value == pytest.approx(norm, rel=1e-5)


def test_grasp_matches_full_hessian() -> None:
    net, (x, y) = _net(), _data()
    net = net.double()
    names = weight_names(net)
    params = dict(net.named_parameters())
    shapes = [params[k].shape for k in names]
    flat0 = torch.cat([params[k].detach().reshape(-1) for k in names])

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(flat, [s.numel() for s in shapes])
        state = {**{k: v.detach() for k, v in params.items()},
                 **{k: c.reshape(s) for k, c, s in zip(names, chunks, shapes)}}
        return F.cross_entropy(torch.func.functional_call(net, state, (x.double(),)), y)

    g = torch.autograd.functional.jacobian(loss_of, flat0)
    h = torch.autograd.functional.hessian(loss_of, flat0)
    expected = float(-(flat0 * (h @ g)).sum())
    assert get_measure("grasp")(net, x.double(), y).value == pytest.approx(expected, rel=1e-8)


def test_fisher_matches_hooked_activations() -> None:
    net, (x, y) = _net(), _data()
    ref = copy.deepcopy(net)
    acts: list[torch.Tensor] = []

    def keep(_m: nn.Module, _a: object, out: torch.Tensor) -> None:
        out.retain_grad()
        acts.append(out)

    for m in ref.modules():
        if isinstance(m, nn.Linear):
            m.register_forward_hook(keep)
    F.cross_entropy(ref(x), y).backward()
    expected = sum(float(0.5 * (a * a.grad).pow(2).mean(0).sum()) for a in acts)
    assert get_measure("fisher")(net, x, y).value == pytest.approx(expected, rel=1e-5)


def test_synflow_matches_abs_copy_in_double() -> None:
    net, (x, _) = _net(), _data()
    ref = copy.deepcopy(net).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.abs_()
    ref(torch.ones(1, 5, dtype=torch.float64)).sum().backward()
    expected = sum(float((w * w.grad).sum()) for w in _weights(ref))
    assert get_measure("synflow")(net, x).value == pytest.approx(expected, rel=1e-12)
    assert get_measure("synflow")(net, x, double=False).value == pytest.approx(expected, rel=1e-4)


def test_jacob_cov_matches_numpy() -> None:
    net, (x, _) = _net(), _data()
    xx = x.clone().requires_grad_(True)
    copy.deepcopy(net).eval()(xx).sum().backward()
    corr = np.corrcoef(xx.grad.numpy().astype(float))
    v = np.linalg.eigvalsh(corr)
    expected = -np.sum(np.log(v + 1e-5) + 1.0 / (v + 1e-5))
    assert get_measure("jacob_cov")(net, x).value == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("spec", ["2_02_002", "2_22_221", "1_11_111", "0_00_000", "2_12_102"])
def test_flops_of_dagmlp_match_analytic_count(spec: str) -> None:
    d, m, k = 11, 7, 4
    net = build_model(spec, d, k, width=m, seed=0)
    linear_edges = CellSpec.parse(spec).num_linear
    macs = d * m + linear_edges * m * m + m * k
    res = get_measure("flops")(net, torch.randn(3, d))
    assert res.extras["macs"] == macs and res.value == 2 * macs
    assert get_measure("num_params")(net, torch.randn(3, d)).value == count_params(spec, m, d, k)


def test_flops_of_convolutions() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2, groups=2),
                        nn.Flatten(), nn.Linear(4 * 3 * 3, 5))
    x = torch.randn(2, 3, 8, 8)
    expected = 8 * 8 * 8 * (3 * 9) + 4 * 3 * 3 * (4 * 9) + 36 * 5
    assert count_macs(net, x) == expected


def test_proxies_are_label_aware() -> None:
    net, (x, y) = _net(), _data()
    values = {perm: get_measure("snip")(net, x, y[list(perm)]).value
              for perm in itertools.islice(itertools.permutations(range(6)), 3)}
    assert len(set(values.values())) > 1


def test_naswot_kernel_is_exact_for_many_units() -> None:
    """One float32 matmul of 0/1 codes is exact (counts < 2^24): equal to the float64 two-matmul form."""
    from trilemma.measures._zero_cost import naswot_score

    codes = torch.rand(6, 2**20, generator=torch.Generator().manual_seed(0)) > 0.5
    c = codes.to(torch.float64)
    k = c @ c.T + (1 - c) @ (1 - c).T
    assert naswot_score(codes) == float(torch.linalg.slogdet(k)[1])


@pytest.mark.parametrize("chunk", [7, 2**18])
def test_hamming_kernel_and_distinct_codes_match_brute_force(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from trilemma.measures import _regions, distinct_codes, hamming_similarity

    monkeypatch.setattr(_regions, "_CODE_CHUNK", chunk)
    g = torch.Generator().manual_seed(0)
    base = torch.rand(5, 40, generator=g) > 0.5
    codes = torch.cat([base, base[[0, 3]], torch.rand(2, 40, generator=g) > 0.5])  # two duplicates
    k = hamming_similarity(codes)
    brute = np.array([[int((a == b).sum()) for b in codes.numpy()] for a in codes.numpy()], dtype=float)
    assert np.array_equal(k.numpy(), brute)
    assert distinct_codes(k, 40) == torch.unique(codes, dim=0).shape[0]
    empty = torch.zeros(3, 0, dtype=torch.bool)
    assert distinct_codes(hamming_similarity(empty), 0) == 1

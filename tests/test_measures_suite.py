"""The fused proxy suite equals the separate measures (float64, rel 1e-10) under every convention."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from trilemma.errors import InvalidArgumentError, MeasureFailedError
from trilemma.measures import SUITE, get_measure, proxy_suite
from trilemma.models import build_model, build_nb201

F64 = torch.float64
ARCH = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|"
DISCONNECTED = "|avg_pool_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|"


def _nb201() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    net = build_nb201(ARCH, C=4, N=1, seed=0, dtype=F64)
    return net, torch.randn(10, 3, 8, 8, generator=g, dtype=F64), torch.randint(0, 10, (10,), generator=g)


def _dagmlp(batchnorm: bool) -> Callable[[], tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    def make() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(1)
        net = build_model("2_12_121", 7, 3, width=9, seed=0, batchnorm=batchnorm, dtype=F64)
        return net, torch.randn(9, 7, generator=g, dtype=F64), torch.arange(9) % 3

    return make


MODELS = {"nb201": _nb201, "dagmlp": _dagmlp(False), "dagmlp_bn": _dagmlp(True)}

EVAL = {n: {"batchnorm": "eval"} for n in SUITE if "batchnorm" in get_measure(n).options and n != "synflow"}
OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "defaults": {},
    "reference_conventions": {
        "fisher": {"convention": "zero-cost-nas"}, "snip": {"convention": "zero-cost-nas"},
        "grad_norm": {"convention": "zero-cost-nas"}, "grasp": {"convention": "zero-cost-nas"},
        "jacob_cov": {"convention": "zero-cost-nas"}, "synflow": {"convention": "zero-cost-nas"},
        "naswot": {"convention": "naswot"}, "linear_regions_batch": {"convention": "te-nas"},
        "ntk_condition": {"convention": "te-nas"},  # float32 kernel: its own computation
        "ntk_trace": {"convention": "te-nas", "dtype": F64},  # weights only, shares the forward pass
        "ntk_lambda_max": {"convention": "te-nas", "dtype": F64},
    },
    "eval_batchnorm": {**EVAL, "synflow": {"batchnorm": "eval"}},
    "mixed": {"snip": {"batchnorm": "eval"}, "ntk_lambda_min": {"implementation": "contraction"},
              "ntk_lambda_robust": {"fraction": 0.5}, "naswot": {"convention": "naswot"}},
}


def _same(a: float, b: float) -> bool:
    return a == pytest.approx(b, rel=1e-10, abs=1e-300)


@pytest.mark.parametrize("case", sorted(OPTIONS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_fused_suite_equals_separate_measures(model_name: str, case: str) -> None:
    model, x, y = MODELS[model_name]()
    options = OPTIONS[case]
    if model_name != "nb201" and "linear_regions_batch" in options and case == "reference_conventions":
        options = {k: v for k, v in options.items() if k != "linear_regions_batch"}  # no 4-D ReLU in an MLP
    fused = proxy_suite(model, x, y, options=options)
    assert list(fused) == list(SUITE)
    for name in SUITE:
        m = get_measure(name)
        separate = m(model, x, y if m.needs_labels else None, **options.get(name, {}))
        assert _same(fused[name].value, separate.value), (name, fused[name].value, separate.value)
        assert fused[name].name == name and fused[name].seconds >= 0
        for key in ("units", "macs", "lambda_min", "lambda_max", "trace", "condition"):
            if key in separate.extras:
                assert _same(float(fused[name].extras[key]), float(separate.extras[key])), (name, key)


def test_suite_uses_one_forward_pass_where_the_separate_measures_use_many() -> None:
    """Default options on a float64 NB201 network: one shared forward pass plus synflow's own."""
    model, x, y = _nb201()
    calls = [0]
    handle = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        proxy_suite(model, x, y)
        fused = calls[0]
        calls[0] = 0
        for name in SUITE:
            m = get_measure(name)
            m(model, x, y if m.needs_labels else None)
        separate = calls[0]
    finally:
        handle.remove()
    assert fused == 2
    assert separate >= 13


def test_suite_failures_follow_on_error() -> None:
    """The disconnected cell: jacob_cov fails (as alone), the others still come back with skip."""
    model = build_nb201(DISCONNECTED, C=4, N=1, seed=0, dtype=F64)
    x, y = torch.randn(6, 3, 8, 8, dtype=F64), torch.arange(6) % 10
    with pytest.raises(MeasureFailedError, match="jacob_cov"):
        proxy_suite(model, x, y)
    res = proxy_suite(model, x, y, on_error="skip")
    assert "jacob_cov" not in res and "ntk_condition" not in res  # singular kernel → inf condition
    assert res["snip"].value == get_measure("snip")(model, x, y).value
    with pytest.raises(InvalidArgumentError, match="unknown name"):
        proxy_suite(model, x, y, names=["curvature"])
    with pytest.raises(InvalidArgumentError, match="needs labels"):
        proxy_suite(model, x, names=["snip"])
    with pytest.raises(InvalidArgumentError, match="unknown option"):
        proxy_suite(model, x, y, names=["snip"], options={"snip": {"colour": 1}})
    assert sorted(proxy_suite(model, x, names=["naswot", "num_params"])) == ["naswot", "num_params"]
    assert "snip" not in proxy_suite(model, x, on_error="skip")  # no labels: label-free measures only


def test_suite_leaves_the_model_unchanged() -> None:
    from trilemma.testing import _prepare, _snapshot  # noqa: PLC2701 - the conformance suite's own helpers

    model, x, y = _nb201()
    model = _prepare(model)
    before = _snapshot(model)
    proxy_suite(model, x, y)
    after = _snapshot(model)
    assert all(torch.equal(v, after["state"][k]) for k, v in before["state"].items())
    for key in ("training", "requires_grad", "grad_ids", "tracking", "attributes", "hooks"):
        assert before[key] == after[key], key

"""DAG-MLP builder: structure, parameter formula, initializations, budget solver."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trilemma.errors import BudgetError, InvalidArgumentError
from trilemma.models import DAGMLP, Scale, build_model
from trilemma.spaces import CellSpec, count_params, enumerate_cells, solve_width


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batchnorm", [True, False])
@pytest.mark.parametrize("init", ["he", "ntk"])
def test_param_formula_matches_numel(bias: bool, batchnorm: bool, init: str) -> None:
    for spec in list(enumerate_cells(3))[::37]:
        model = build_model(spec, in_features=20, num_classes=7, width=9, bias=bias, batchnorm=batchnorm,
                            init=init, seed=0)  # type: ignore[arg-type]
        assert n_params(model) == count_params(spec, 9, 20, 7, bias=bias, batchnorm=batchnorm)


def test_forward_matches_hand_written_dag() -> None:
    spec = CellSpec.parse("2_21_112")
    model = build_model(spec, in_features=12, num_classes=3, width=8, seed=1, dtype=torch.float64)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    relu = torch.relu
    lin = {k: m[0] for k, m in model.edges.items()}
    h0 = relu(model.stem[0](x.flatten(1)))
    h1 = relu(lin["0_1"](h0))
    h2 = relu(lin["0_2"](h0)) + h1
    h3 = h0 + h1 + relu(lin["2_3"](h2))
    torch.testing.assert_close(model(x), model.readout(h3))
    torch.testing.assert_close(model.features(x), h3)


def test_dead_output_node_gives_zero_features() -> None:
    model = build_model("2_20_000", in_features=4, num_classes=2, width=5, seed=0)
    assert torch.count_nonzero(model.features(torch.randn(3, 4))) == 0


def test_seed_is_reproducible_and_bias_zero() -> None:
    a = build_model("2_02_002", 10, 3, 16, seed=3)
    b = build_model("2_02_002", 10, 3, 16, seed=3)
    c = build_model("2_02_002", 10, 3, 16, seed=4)
    for (na, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert torch.equal(pa, pb), na
        if pa.dim() == 2:
            assert not torch.equal(pa, pc)
        else:
            assert torch.count_nonzero(pa) == 0  # zero biases


def test_he_and_ntk_initializations_have_the_theory_scales() -> None:
    torch.manual_seed(0)
    he = build_model("2_02_002", 400, 10, 400, init="he", seed=0)
    ntk = build_model("2_02_002", 400, 10, 400, init="ntk", seed=0)
    w_he = he.edges["0_1"][0].weight
    assert w_he.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    scale, linear = ntk.edges["0_1"][0], ntk.edges["0_1"][1]
    assert isinstance(scale, Scale) and scale.factor == pytest.approx(math.sqrt(2 / 400))
    assert linear.weight.std().item() == pytest.approx(1.0, rel=0.02)
    assert ntk.readout[0].factor == pytest.approx(math.sqrt(1 / 400))
    # c_sigma = 2 keeps the second moment of the features through ReLU layers
    x = torch.randn(256, 400)
    x = x / x.norm(dim=1, keepdim=True) * math.sqrt(400)
    for model in (he, ntk):
        h = model.nodes(x)
        for node in h:
            assert (node.pow(2).mean()).item() == pytest.approx(1.0, rel=0.1)


def test_batchnorm_layers_present() -> None:
    model = build_model("2_02_002", 6, 2, 4, batchnorm=True)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0}, "width must be a positive int, got 0"),
        ({"in_features": -2}, "in_features must be a positive int, got -2"),
        ({"init": "xavier"}, r"init must be one of \('he', 'ntk'\), got 'xavier'"),
    ],
)
def test_builder_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"spec": "2_02_002", "in_features": 4, "num_classes": 2, "width": 3}
    args.update(kwargs)
    with pytest.raises(InvalidArgumentError, match=message):
        DAGMLP(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------------ budget solver


@settings(max_examples=100, deadline=None)
@given(
    idx=st.integers(0, 728),
    target=st.integers(20_000, 2_000_000),
    bias=st.booleans(),
    bn=st.booleans(),
)
def test_solver_finds_the_closest_width(idx: int, target: int, bias: bool, bn: bool) -> None:
    spec = CellSpec.from_index(idx, 3)
    sol = solve_width(spec, target, 64, 10, bias=bias, batchnorm=bn, tolerance=0.5)
    cnt = lambda m: count_params(spec, m, 64, 10, bias, bn)  # noqa: E731
    assert sol.params == cnt(sol.width)
    # brute force: no other width is closer
    for m in range(max(1, sol.width - 3), sol.width + 4):
        assert abs(cnt(m) - target) >= abs(sol.params - target)


def test_solver_equalizes_budget_across_cells() -> None:
    target = 200_000
    for spec in [c for c in enumerate_cells(3) if c.topology.trainable][::25]:
        sol = solve_width(spec, target, 784, 10, tolerance=0.01)
        assert abs(sol.params - target) / target <= 0.01


def test_solver_error_says_why() -> None:
    with pytest.raises(BudgetError, match=r"cannot meet 1000 parameters within tolerance 0.01: width 1 gives"):
        solve_width("2_02_002", 1000, 784, 10, tolerance=0.01)
    with pytest.raises(InvalidArgumentError, match="tolerance must be a number in"):
        solve_width("2_02_002", 1000, 784, 10, tolerance=2)

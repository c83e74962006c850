"""Ensembles of cells and pruned cells: string form, multigraph topology, counts, networks, masks, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trilemma.analysis import PUBLISHED_TABLE1
from trilemma.data import load_dataset
from trilemma.errors import InvalidSpecError, InvalidTypeError
from trilemma.measures import NTKImplementation, empirical_ntk, get_measure
from trilemma.models import DAGMLP, EnsembleMLP, MaskedLinear, build_ensemble, build_model, ensemble_masks
from trilemma.spaces import (
    CellSpec,
    EnsembleSpec,
    ModelRecipe,
    count_params,
    ensemble_count_params,
    get_space,
    multigraph_topology,
    pruned_count,
)
from trilemma.testing import check_space
from trilemma.training import TrainConfig, train, train_batched


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------ string form
ROUND_TRIP = [
    "2_02_002", "1_22_221+2_02_002", "1_22_221@0.2+2_02_002@0.5", "2_02_002@0.3", "2_02_002+2_02_002",
    "1_22_221@0.125+2_02_002+2_21_112@0.9999", "1_22_221+2_02_002+stem@0.1", "2_02_002@0.5+readout@0.25",
    "2_02_002+stem@0.2+readout@0.3", "2_02", "1",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_string_round_trips(text: str) -> None:
    spec = EnsembleSpec.parse(text)
    assert spec.name == text
    assert EnsembleSpec.parse(spec.name) == spec
    assert EnsembleSpec.parse(spec) is spec


@pytest.mark.parametrize(("text", "canonical"), [
    ("2_22_221@0", "2_22_221"), ("1_22_221@0.20+2_02_002@.5", "1_22_221@0.2+2_02_002@0.5"),
    (" 1_22_221 + 2_02_002 ", "1_22_221+2_02_002"), ("readout@0.1+2_02_002", "2_02_002+readout@0.1"),
    ("stem@0.3+2_02_002@0.000", "2_02_002+stem@0.3"),
])
def test_canonical_spelling(text: str, canonical: str) -> None:
    assert EnsembleSpec.parse(text).name == canonical


def test_a_cell_is_its_one_member_ensemble() -> None:
    spec = EnsembleSpec.parse("2_22_221")
    assert spec.is_cell and not spec.pruned and spec.num_members == 1
    assert spec.cells == (CellSpec.parse("2_22_221"),) and EnsembleSpec.parse(CellSpec.parse("2_22_221")) == spec
    assert not EnsembleSpec.parse("2_22_221@0.1").is_cell and not EnsembleSpec.parse("2_22_221+stem@0.1").is_cell


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 728), st.integers(0, 9999)), min_size=1, max_size=4),
       st.integers(0, 9999), st.integers(0, 9999))
def test_round_trip_property(members: list[tuple[int, int]], stem: int, readout: int) -> None:
    parts = []
    for index, r in members:
        cell = CellSpec.from_index(index, 3)
        parts.append((cell, r / 10_000 if cell.num_linear else 0.0))
    spec = EnsembleSpec.of(parts, stem_ratio=stem / 10_000, readout_ratio=readout / 10_000)
    again = EnsembleSpec.parse(spec.name)
    assert again == spec and again.name == spec.name


MALFORMED = [
    ("", "empty ensemble string"),
    ("+", "member 1 is empty"),
    ("1_22_221+", "member 2 is empty"),
    ("1_22_221++2_02_002", "member 2 is empty"),
    ("1_22_221@", "has '@' but no ratio"),
    ("@0.2", "has a ratio but no cell"),
    ("1_22_221@1", "must be in [0, 1)"),
    ("1_22_221@1.5", "must be in [0, 1)"),
    ("1_22_221@-0.1", "decimal number in [0, 1)"),
    ("1_22_221@abc", "decimal number in [0, 1)"),
    ("1_22_221@1e-1", "decimal number in [0, 1)"),
    ("1_22_221@0.12345", "at most 4 decimals"),
    ("1_22_221@0.2@0.3", "at most one pruning ratio"),
    ("1_22_221+2_02", "same number of nodes H"),
    ("1_32_221+2_02_002", "allowed digits are 0 (zero), 1 (skip), 2 (linear)"),
    ("1_22_221+2_02_02", "group t must have exactly t digits"),
    ("stem@0.2", "names no member cell"),
    ("2_02_002+stem@0.2+stem@0.1", "'stem' is pruned twice"),
    ("2_02_002+stem", "needs a ratio > 0"),
    ("2_02_002+readout@0", "needs a ratio > 0"),
    ("0_10_111@0.5", "has no linear edge"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_malformed_strings_raise_clear_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidSpecError, match="ensemble string|ensemble|member") as info:
        EnsembleSpec.parse(text)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parse_rejects_wrong_types_and_node_counts() -> None:
    with pytest.raises(InvalidTypeError, match="must be a str"):
        EnsembleSpec.parse(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidSpecError, match="needs H=2"):
        EnsembleSpec.parse("1_22_221+2_02_002", nodes=2)


# ------------------------------------------------------------------ topology
def test_union_topology_by_hand() -> None:
    # 1_22_221: 0→1 skip, 0→2 lin, 1→2 lin, 0→3 lin, 1→3 lin, 2→3 skip
    # 2_02_002: 0→1 lin, 1→2 lin, 2→3 lin
    # union multigraph: 0→1 {skip, lin}, 0→2 {lin}, 1→2 {lin, lin}, 0→3 {lin}, 1→3 {lin}, 2→3 {skip, lin}
    # depth histogram per node (paths from 0):
    #   node 1: skip {0: 1}, lin {1: 1}                                  -> {0: 1, 1: 1}
    #   node 2: 0→2 lin {1: 1}; 1→2 lin twice: 2 × {1: 1, 2: 1}          -> {1: 3, 2: 2}
    #   node 3: 0→3 {1: 1}; 1→3 lin {1: 1, 2: 1}; 2→3 skip {1: 3, 2: 2}; 2→3 lin {2: 3, 3: 2}
    #           -> {1: 5, 2: 6, 3: 2}: P = 13, Σd = 5 + 12 + 6 = 23, d̄ = 23/13
    # The members' own paths are among them: 1_22_221's four depth-1 paths and 2_02_002's one depth-3 path.
    topo = EnsembleSpec.parse("1_22_221+2_02_002").topology
    assert topo.num_paths == 13
    assert dict(topo.depth_counts) == {1: 5, 2: 6, 3: 2}
    assert topo.sorted_depths == (1,) * 5 + (2,) * 6 + (3,) * 2
    assert topo.mean_depth == pytest.approx(23 / 13)
    assert topo.num_linear == 7
    # pruning does not change the topology; a one-member ensemble has its cell's topology
    assert EnsembleSpec.parse("1_22_221@0.2+2_02_002@0.5").topology == topo
    for cell in ("2_21_112", "1_01_222", "2_22_221", "0_10_222", "2_02_002"):
        ours, theirs = EnsembleSpec.parse(cell).topology, CellSpec.parse(cell).topology
        assert (ours.num_paths, ours.depth_counts, ours.depths) == (theirs.num_paths, theirs.depth_counts, theirs.depths)


def test_parallel_skips_multiply_paths() -> None:
    # two copies of the skip chain 1_01_001: 2 choices per hop over 3 hops = 8 zero-depth paths
    topo = EnsembleSpec.parse("1_01_001+1_01_001").topology
    assert (topo.num_paths, dict(topo.depth_counts), topo.trainable) == (8, {0: 8}, False)
    assert multigraph_topology(2, [(0, 1, 2), (0, 1, 2), (1, 2, 1), (0, 2, 0)]).depth_counts == ((1, 2),)


# ------------------------------------------------------------------ parameter counts
def test_table1_parameter_counts_are_the_papers() -> None:
    # Tiny-ImageNet (64×64×3 inputs, 200 classes), m = 256 with biases and BatchNorm: the paper's
    # Table 1 counts are the effective counts (pruned weights removed), to the published two
    # decimals (millions); without BatchNorm row III would be 3.39
    for row in PUBLISHED_TABLE1:
        ours = ensemble_count_params(row.arch, 256, 64 * 64 * 3, 200, batchnorm=True, effective=True)
        assert round(ours / 1e6, 2) == row.params_millions, row.row


def test_counts_match_the_built_network() -> None:
    for text in ("2_22_221", "1_22_221@0.2+2_02_002@0.5", "2_02_002+stem@0.3+readout@0.5", "1_22_221+2_21_112@0.7"):
        for bias in (True, False):
            model = build_ensemble(text, 20, 7, 12, bias=bias, seed=1)
            dense = sum(p.numel() for p in model.parameters())
            assert ensemble_count_params(text, 12, 20, 7, bias) == dense
            zeros = sum(int((p == 0).sum()) for n, p in model.named_parameters() if n.endswith("weight"))
            assert ensemble_count_params(text, 12, 20, 7, bias, effective=True) == dense - zeros == model.effective_params()
    assert ensemble_count_params("2_22_221", 16, 64, 10, batchnorm=True) == count_params("2_22_221", 16, 64, 10,
                                                                                        batchnorm=True)


# ------------------------------------------------------------------ networks and masks
@pytest.mark.parametrize("init", ["he", "ntk"])
@pytest.mark.parametrize("cell", ["2_22_221", "2_21_112", "0_10_222"])
def test_one_member_ensemble_is_the_cell(cell: str, init: str) -> None:
    ens = build_ensemble(cell, 30, 5, 16, init=init, seed=4)
    ref = build_model(cell, 30, 5, 16, init=init, seed=4)
    assert isinstance(ref, DAGMLP) and isinstance(ens, EnsembleMLP)
    assert list(ens.state_dict()) == list(ref.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ens.state_dict().values(), ref.state_dict().values()))
    x = torch.randn(9, 30)
    assert torch.equal(ens(x), ref(x))
    assert ensemble_count_params(cell, 16, 30, 5) == count_params(cell, 16, 30, 5) == sum(
        p.numel() for p in ens.parameters())


def test_ensemble_nodes_sum_the_members_edges() -> None:
    # node t of the ensemble is the sum of every member's incoming terms, each with its own weights
    model = build_ensemble("2_02_002+1_12_011", 10, 3, 8, seed=0)
    x = torch.randn(4, 10)
    h = model.nodes(x)
    e = model.edges
    torch.testing.assert_close(h[1], e["0_1"](h[0]) + h[0])
    torch.testing.assert_close(h[2], e["1_2"](h[1]) + h[0] + e["1_2_m1"](h[1]))
    torch.testing.assert_close(h[3], e["2_3"](h[2]) + h[1] + h[2])


def test_masks_are_exact_seeded_and_leave_the_weights_stream_alone() -> None:
    text = "1_22_221@0.2+2_02_002@0.5+stem@0.1"
    masks = ensemble_masks(text, 20, 5, 16, seed=3)
    assert set(masks) == {"stem", "0_2", "1_2", "0_3", "1_3", "0_1_m1", "1_2_m1", "2_3_m1"}
    assert int((masks["0_2"] == 0).sum()) == pruned_count(256, 0.2) == 51
    assert int((masks["0_1_m1"] == 0).sum()) == 128 and int((masks["stem"] == 0).sum()) == 32
    assert all(torch.equal(masks[k], v) for k, v in ensemble_masks(text, 20, 5, 16, seed=3).items())
    assert not torch.equal(masks["0_2"], ensemble_masks(text, 20, 5, 16, seed=4)["0_2"])
    pruned = build_ensemble(text, 20, 5, 16, seed=3)
    dense = build_ensemble("1_22_221+2_02_002", 20, 5, 16, seed=3)
    for name, mask in masks.items():
        seq = pruned.stem if name == "stem" else pruned.edges[name]
        ref = dense.stem if name == "stem" else dense.edges[name]
        assert isinstance(seq[0], MaskedLinear)
        torch.testing.assert_close(seq[0].weight, ref[0].weight * mask, rtol=0, atol=0)


@pytest.mark.parametrize("changes", [{"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2},
                                     {"optimizer": "adam", "lr": 1e-2, "weight_decay": 1e-3}])
def test_pruned_weights_stay_exactly_zero_after_training(changes: dict) -> None:
    ds = load_dataset("digits", max_train=128, max_test=32)
    text = "1_22_221@0.3+2_02_002@0.6+readout@0.2"
    config = TrainConfig(epochs=2, batch_size=32, **changes)
    model = build_ensemble(text, 64, 10, 16, seed=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, ds, config.replace(seed=2))
    batched = train_batched([text, "2_22_221"], ds, config, width=16, seeds=2, keep_weights=True)[0].final_state
    assert batched is not None
    for name, mask in model.masks().items():
        seq = model.readout if name == "readout" else model.edges[name]
        w = seq[0].weight
        assert torch.all(w[mask == 0] == 0), name
        assert not torch.equal(w[mask == 1], before[f"{'readout' if name == 'readout' else 'edges.' + name}.0.weight"][mask == 1])
        key = f"{'readout' if name == 'readout' else 'edges.' + name}.0.weight"
        assert torch.all(batched[key][mask == 0] == 0), name


def test_measures_at_init_run_on_pruned_ensembles() -> None:
    # the NTK of a masked layer is taken over its free weights: the structured implementation
    # (MaskedLinear is not a plain nn.Linear, so it goes through autograd) equals the per-sample loop
    model = build_ensemble("1_22_221@0.3+2_02_002@0.5", 12, 3, 8, seed=0, dtype=torch.float64)
    x = torch.randn(6, 12, dtype=torch.float64)
    loop = empirical_ntk(model, x, implementation=NTKImplementation.LOOP)
    fast = empirical_ntk(model, x, implementation=NTKImplementation.STRUCTURED)
    torch.testing.assert_close(fast, loop, rtol=1e-10, atol=1e-12)
    layer = model.edges["0_1_m1"][0]
    (grad,) = torch.autograd.grad(model(x[:1]).sum(), layer.weight)
    assert torch.all(grad[layer.weight_mask == 0] == 0) and grad.abs().sum() > 0  # pruned weights are no parameters
    value = get_measure("ntk_lambda_min")(model, x.float().double()).value
    assert np.isfinite(value) and value > 0


# ------------------------------------------------------------------ batched training
@pytest.fixture()
def _poisoned(monkeypatch: pytest.MonkeyPatch) -> None:
    from trilemma.training import _batched

    monkeypatch.setattr(_batched, "_POISON_BUFFERS", True)


@pytest.mark.usefixtures("_poisoned")
@pytest.mark.parametrize(("changes", "init", "bias"), [
    ({}, "he", True),
    ({"momentum": 0.9, "weight_decay": 1e-3}, "ntk", False),
    ({"optimizer": "adam", "lr": 1e-3}, "he", True),
])
def test_batched_equals_one_by_one_for_ensembles_with_masks(changes: dict, init: str, bias: bool) -> None:
    """Acceptance: cells, ensembles and pruned variants in one batched computation, each equal to
    training its EnsembleMLP alone (float64, 1e-6 relative)."""
    ds = load_dataset("digits", max_train=160, max_test=40)
    specs = ["2_21_112", "1_22_221@0.2+2_02_002@0.5", "1_22_221+2_02_002", "2_02_002@0.3",
             "2_21_112@0.3+1_01_222+2_02_002@0.1+stem@0.2+readout@0.4", "1_22_221"]
    seeds = [0, 1, 2, 0, 3, 1]
    config = TrainConfig(epochs=2, batch_size=64, dtype="float64", **changes)
    batched = train_batched(specs, ds, config, width=12, seeds=seeds, chunk_size=2, workers=2, keep_weights=True,
                            init=init, bias=bias)
    for spec, seed, rb in zip(specs, seeds, batched):
        model = build_ensemble(spec, 64, 10, 12, seed=seed, init=init, bias=bias, dtype=torch.float64)
        r1 = train(model, ds, config.replace(seed=seed), keep_weights=True)
        assert rb.spec == spec and rb.num_params == r1.num_params
        np.testing.assert_allclose(rb.train_loss, r1.train_loss, rtol=1e-6)
        np.testing.assert_allclose(rb.test_loss, r1.test_loss, rtol=1e-6)
        assert rb.train_acc == r1.train_acc and rb.train_step_correct == r1.train_step_correct
        assert r1.final_state is not None and rb.final_state is not None
        assert rb.final_state.keys() == r1.final_state.keys()
        for key, value in r1.final_state.items():
            torch.testing.assert_close(rb.final_state[key], value, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ the space
def test_ensemble_space_conforms_and_lists_the_grid() -> None:
    space = get_space("ensemble", nodes=3, ensembles=["1_22_221@0.2+2_02_002@0.5"],
                      grid={"members": ["1_22_221", "2_02_002"], "ratios": [[0, 0.2, 0.4], [0, 0.5]]})
    names = space.names()
    # cells, then the listed ensembles, then the grid row-major (its copy of the listed one dropped)
    assert len(names) == 729 + 6 and names[-6:] == [
        "1_22_221@0.2+2_02_002@0.5", "1_22_221+2_02_002", "1_22_221+2_02_002@0.5", "1_22_221@0.2+2_02_002",
        "1_22_221@0.4+2_02_002", "1_22_221@0.4+2_02_002@0.5"]
    assert check_space(space)
    only = get_space("ensemble", cells=False, ensembles=["2_02_002@0.3+stem@0.2+readout@0.3", "1_22_221+2_02_002"])
    assert check_space(only, n=2)
    row = space.describe("1_22_221@0.2+2_02_002@0.5")
    assert (row["P"], row["members"], row["member_ratios"], row["max_ratio"], row["single_cell"]) == (
        13, 2, "0.2/0.5", 0.5, False)
    assert space.describe("2_02_002+stem@0.3")["member_ratios"] == "0" and space.describe("2_02_002+stem@0.3")[
        "stem_ratio"] == 0.3
    assert space.describe("2_22_221")["single_cell"] is True
    assert space.count_params("1_22_221@0.2+2_02_002@0.5", recipe=ModelRecipe(), in_features=64, num_classes=10,
                              width=64) == ensemble_count_params("1_22_221+2_02_002", 64, 64, 10)
    theory = space.theory("1_22_221@0.2+2_02_002@0.5", width=64, in_features=64, num_classes=10)
    assert theory["effective_params"] == ensemble_count_params("1_22_221@0.2+2_02_002@0.5", 64, 64, 10, effective=True)
    with pytest.raises(InvalidSpecError, match="needs H=3"):
        space.canonical("2_02")
    with pytest.raises(ValueError, match="grid must be a table"):
        get_space("ensemble", grid={"members": ["2_02_002"]})

"""Closed-form theory of ensembles and pruned cells: the multigraph kernels against their references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trilemma.models import build_ensemble, edge_name
from trilemma.spaces import EnsembleSpec
from trilemma.theory import (
    NetWeights,
    ensemble_edges,
    ensemble_kernels,
    ensemble_theory_row,
    exact_kernels,
    input_gram,
    multigraph_monte_carlo,
    net_kernels,
    theory_row,
)

N0 = 7


def unit_inputs(n: int, seed: int = 0) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((n, N0))
    return X / np.linalg.norm(X, axis=1, keepdims=True) * np.sqrt(N0)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("cell", ["2_21_112", "1_01_222", "2_22_221", "2_02_002", "0_10_222", "2_00_122", "1_11_111"])
def test_one_member_kernels_are_the_cells_exact_kernels(cell: str) -> None:
    K = input_gram(unit_inputs(5, seed=3))
    ours, ref = ensemble_kernels(cell, K), exact_kernels(cell, K)
    np.testing.assert_allclose(ours.nngp, ref.nngp, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours.ntk, ref.ntk, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours.backward, ref.backward, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", ["2_21_112", "2_22_221", "2_02_002", "0_10_222", "1_01_001"])
def test_one_member_theory_row_is_the_cells(cell: str) -> None:
    ours = ensemble_theory_row(cell, 0.5, 64, in_features=64, num_classes=10)
    ref = theory_row(cell, 0.5, 64, in_features=64, num_classes=10)
    for key in ("jacobian_path_sum", "nngp_bound", "ntk_bound", "gen_indicator", "ntk_bound_printed",
                "gen_indicator_printed"):
        assert (ours[key] is None) == (ref[key] is None), key
        if ref[key] is not None:
            assert ours[key] == pytest.approx(ref[key], rel=1e-12), key
    assert ours["effective_params"] == ref["params"] and ours["pruned_params"] == 0


def test_parallel_edges_by_hand() -> None:
    # "2+2" (H = 1): two linear edges 0→1 with independent weights. Node 1 = g1 + g2, so
    # Σ[1,1] = 2·A(Σ00) + 2·μμᵀ (the cross term is the product of the ReLU means), and the
    # NTK adds, per edge, Σ00 ⊙ K̇ (D[1] = 1), and the stem term K ⊙ K̇_in ⊙ D[0] with
    # D[0] = 2·K̇ (one backward path through each edge).
    K = input_gram(unit_inputs(4, seed=1))
    k = ensemble_kernels("2+2", K)
    single = exact_kernels("2", K)
    S00 = single.sigma[0, 0]
    mu = np.sqrt(np.diag(S00) / np.pi)
    A = single.nngp  # A(Σ00) for the one-edge cell
    np.testing.assert_allclose(k.nngp, 2 * A + 2 * np.outer(mu, mu), rtol=1e-12)
    np.testing.assert_allclose(k.backward[0], 2 * single.backward[0], rtol=1e-12)
    # pruning one edge at r keeps a fraction q = 1 − r of its variance
    kp = ensemble_kernels("2+2@0.75", K)
    np.testing.assert_allclose(kp.nngp, 1.25 * A + 2 * np.sqrt(0.25) * np.outer(mu, mu), rtol=1e-12)


def _torch_weights(spec: EnsembleSpec, model: torch.nn.Module) -> NetWeights:
    """The numpy network of a torch EnsembleMLP (NTK parameterization, no bias, one output)."""
    edges = {}
    i = 0
    for s, t, op, k in spec.edges():
        if op == 0:
            continue
        if op == 2:
            lin = model.edges[edge_name(s, t, k)][1]  # (Scale, Linear, ReLU)
            edges[i] = (lin.weight * getattr(lin, "weight_mask", 1)).detach().numpy()
        i += 1
    stem = model.stem[1]
    readout = model.readout[1]
    return NetWeights((stem.weight * getattr(stem, "weight_mask", 1)).detach().numpy(), edges,
                      (readout.weight * getattr(readout, "weight_mask", 1)).detach().numpy()[0])


@pytest.mark.parametrize("text", ["1_22_221@0.2+2_02_002@0.5", "2_21_112@0.3+1_01_222+stem@0.25+readout@0.5"])
def test_monte_carlo_network_is_the_torch_ensemble(text: str) -> None:
    spec = EnsembleSpec.parse(text)
    model = build_ensemble(spec, N0, 1, 10, bias=False, init="ntk", seed=5, dtype=torch.float64)
    X = unit_inputs(4, seed=2)
    nngp, ntk, feats = net_kernels(spec.nodes, ensemble_edges(spec), _torch_weights(spec, model), X)
    x = torch.tensor(X)
    np.testing.assert_allclose(model.features(x).detach().numpy(), feats, rtol=1e-12, atol=1e-12)
    params = [p for p in model.parameters()]
    J = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(model(x[i : i + 1]).sum(), params)])
                     for i in range(len(X))]).numpy()
    np.testing.assert_allclose(ntk, J @ J.T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(nngp, feats @ feats.T / 10, rtol=1e-12)


@pytest.mark.parametrize("text", ["1_22_221+2_02_002", "1_22_221@0.2+2_02_002@0.5",
                                  "2_21_112@0.3+1_01_222+stem@0.25+readout@0.5"])
def test_exact_ensemble_kernels_agree_with_monte_carlo(text: str) -> None:
    # m = 128 with 128 networks (fresh weights and masks each): noise and O(1/m) bias ~2-4 %
    # (measured), far below what ignoring the pruning or the parallel edges' independence costs
    spec = EnsembleSpec.parse(text)
    X = unit_inputs(6, seed=10)
    ex = ensemble_kernels(spec, input_gram(X))
    nngp, ntk = multigraph_monte_carlo(spec.nodes, ensemble_edges(spec), X, 128, seeds=128,
                                       stem_keep=1 - spec.stem_ratio, readout_keep=1 - spec.readout_ratio)
    assert rel(nngp, ex.nngp) < 0.06
    assert rel(ntk, ex.ntk) < 0.06


def test_kernels_that_ignore_pruning_are_rejected_by_monte_carlo() -> None:
    # the test above can fail: the dense ensemble's kernels are far from the pruned network's
    spec = EnsembleSpec.parse("1_22_221@0.2+2_02_002@0.5")
    X = unit_inputs(6, seed=10)
    nngp, ntk = multigraph_monte_carlo(spec.nodes, ensemble_edges(spec), X, 128, seeds=32)
    dense = ensemble_kernels("1_22_221+2_02_002", input_gram(X))
    assert rel(nngp, dense.nngp) > 0.12 and rel(ntk, dense.ntk) > 0.12


def test_pruning_lowers_the_exact_eigenvalues_and_keeps_the_bounds() -> None:
    dense = ensemble_theory_row("1_22_221+2_02_002", 0.5, 64, in_features=64)
    pruned = ensemble_theory_row("1_22_221@0.2+2_02_002@0.5", 0.5, 64, in_features=64)
    for key in ("jacobian_path_sum", "nngp_bound", "ntk_bound"):  # the paper's bounds see paths only
        assert pruned[key] == dense[key]
    assert pruned["exact_nngp_lambda_min"] < dense["exact_nngp_lambda_min"]
    assert pruned["exact_ntk_lambda_min"] < dense["exact_ntk_lambda_min"]
    assert pruned["pruned_params"] == 4 * 819 + 3 * 2048  # round(0.2·4096) per wide-shallow edge, 0.5·4096 deep

"""Closed-form theory (Chen, Huang & Wang, AutoML-Conf 2023): ReLU maps, Theorems 4.1/4.4/4.6, the theory table, no-torch import."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.special import gamma

from trilemma.errors import InvalidArgumentError, InvalidTypeError, MeasureFailedError, TrilemmaError
from trilemma.spaces import CellSpec, count_params, enumerate_cells, enumerate_paths, sample_cells
from trilemma.theory import (
    COLUMNS,
    f,
    f_power,
    fdot,
    generalization_indicator,
    gram_to_correlation,
    jacobian_constant,
    jacobian_path_sum,
    nngp_bound,
    ntk_bound,
    stem_correlation,
    theory_row,
    theory_table,
)

# ------------------------------------------------------------------ slow, obvious references


def ref_f(c: float) -> float:
    return (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi


def ref_fdot(c: float) -> float:
    return (math.pi - math.acos(c)) / math.pi


def ref_fpow(c: float, d: int) -> float:
    for _ in range(d):
        c = ref_f(c)
    return c


def ref_bounds(spec: CellSpec, K: np.ndarray) -> tuple[float, float]:
    """Theorems 4.4 and 4.6 by enumerating every path and every pair i != j."""
    depths = [d for _, d in enumerate_paths(spec)]
    P = len(depths)
    best_nngp, best_ntk = math.inf, math.inf
    n = K.shape[0]
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            c = float(K[i, j])
            nngp = P - sum(ref_fpow(c, d) for d in depths)
            ntk = nngp + sum(depths)
            for d in depths:
                for e in range(1, d + 1):
                    prod = 1.0
                    for k in range(1, e + 1):
                        prod *= ref_fdot(ref_fpow(c, k - 1))
                    ntk -= ref_fpow(c, e) * prod
            best_nngp, best_ntk = min(best_nngp, nngp), min(best_ntk, ntk)
    return best_nngp, best_ntk


def ref_ntk_recursion_bound(spec: CellSpec, c: float) -> float:
    """Σ_p [G_ii − G_ij] of the per-path NTK recursion G⁽ʰ⁾ = K⁽ʰ⁾ + K̇⁽ʰ⁾ G⁽ʰ⁻¹⁾, G⁽⁰⁾ = K⁽⁰⁾."""
    total = 0.0
    for _, d in enumerate_paths(spec):
        k_off, g_diag, g_off = c, 1.0, c
        for _ in range(d):
            kdot_off = ref_fdot(k_off)
            k_off = ref_f(k_off)
            g_diag, g_off = 1.0 + g_diag, k_off + kdot_off * g_off
        total += g_diag - g_off
    return total


def random_correlation(n: int, seed: int, dim: int = 5) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((n, dim))
    return gram_to_correlation(X @ X.T)


# ------------------------------------------------------------------ maps


def test_relu_map_values() -> None:
    assert f(1.0) == pytest.approx(1.0, abs=1e-15)
    assert f(0.0) == pytest.approx(1 / math.pi, rel=1e-15)
    assert f(-1.0) == pytest.approx(0.0, abs=1e-15)
    assert fdot(0.0) == pytest.approx(0.5)
    assert fdot(1.0) == pytest.approx(1.0)
    assert fdot(-1.0) == pytest.approx(0.0)
    assert fdot(0.5) == pytest.approx((math.pi - math.acos(0.5)) / math.pi)
    assert isinstance(f(0.3), float)


def test_relu_map_vectorized_and_derivative() -> None:
    c = np.linspace(-0.99, 0.99, 41)
    out = f(c)
    assert isinstance(out, np.ndarray) and out.shape == c.shape
    np.testing.assert_allclose(out, [ref_f(x) for x in c], rtol=1e-14)
    # ḟ = df/dC (central difference)
    h = 1e-6
    np.testing.assert_allclose(fdot(c), (f(c + h) - f(c - h)) / (2 * h), rtol=1e-6, atol=1e-8)
    # f is increasing, f(C) >= C on [-1, 1] (correlations contract towards 1), f maps into [0, 1]
    assert np.all(np.diff(out) > 0)
    assert np.all(out >= c - 1e-12) and np.all((out >= 0) & (out <= 1))
    grid = f(np.eye(3) * 0.5 + 0.25)
    assert grid.shape == (3, 3)


def test_f_power_composition() -> None:
    for c in (-0.7, 0.0, 0.3, 0.9):
        assert f_power(c, 0) == c
        assert f_power(c, 1) == pytest.approx(f(c), rel=1e-15)
        assert f_power(c, 3) == pytest.approx(f(f(f(c))), rel=1e-15)
        assert f_power(c, 5) == pytest.approx(f_power(f_power(c, 2), 3), rel=1e-14)
    arr = np.array([[0.1, 0.2], [0.3, 0.4]])
    np.testing.assert_allclose(f_power(arr, 2), f(f(arr)))
    # the fixed point of f is 1: deep chains make all inputs look alike
    assert f_power(0.0, 200) > 0.999


def test_roundoff_clipping_and_range_errors() -> None:
    assert f(1.0 + 5e-10) == pytest.approx(1.0)
    assert f(-1.0 - 5e-10) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(InvalidArgumentError, match=r"\[-1, 1\].*1\.1"):
        f(1.1)
    with pytest.raises(InvalidArgumentError, match="finite"):
        fdot(np.array([0.1, np.nan]))
    with pytest.raises(InvalidTypeError, match="number"):
        f("0.5x")
    with pytest.raises(InvalidArgumentError, match="int >= 0"):
        f_power(0.5, -1)
    with pytest.raises(InvalidArgumentError, match="int >= 0"):
        f_power(0.5, 1.5)  # type: ignore[arg-type]


def test_stem_correlation_is_f() -> None:
    assert stem_correlation(0.2) == f(0.2)
    K = random_correlation(4, 0)
    S = stem_correlation(K)
    np.testing.assert_allclose(np.diag(S), 1.0)
    np.testing.assert_allclose(S, f(K))


# ------------------------------------------------------------------ Theorem 4.1


def test_jacobian_constant_matches_gamma_and_tends_to_one() -> None:
    for m in (1, 2, 5, 64, 150):
        expect = gamma((m + 1) / 2) / (gamma(m / 2) * math.sqrt(m / 2))
        assert jacobian_constant(m) == pytest.approx(expect, rel=1e-12)
    # gamma() itself overflows here; C(m) = 1 - 1/(4m) + 1/(32m^2) + O(m^-3)
    for m in (10**6, 10**9, 10**15):
        assert jacobian_constant(m) == pytest.approx(1 - 1 / (4 * m) + 1 / (32 * m**2), rel=1e-15)
    assert jacobian_constant(256) < 1.0
    with pytest.raises(InvalidArgumentError, match="width must be a positive int"):
        jacobian_constant(0)


@pytest.mark.parametrize("arch", ["2_02_002", "1_01_222", "2_21_112", "2_22_221", "0_00_000", "2_22_222"])
def test_jacobian_path_sum_is_sum_over_paths(arch: str) -> None:
    spec = CellSpec.parse(arch)
    m = 256
    expect = jacobian_constant(m) * sum(math.exp(-5 * d / (8 * m)) for _, d in enumerate_paths(spec))
    assert jacobian_path_sum(spec, m) == pytest.approx(expect, rel=1e-13)
    assert jacobian_path_sum(arch, m) == jacobian_path_sum(spec.topology, m)


def test_jacobian_path_sum_orders_deep_narrow_first() -> None:
    # fewer, longer paths -> smaller Jacobian norm -> higher curvature (Corollary 4.2)
    assert jacobian_path_sum("2_02_002", 256) < jacobian_path_sum("0_00_200", 256) < jacobian_path_sum("1_01_222", 256)
    with pytest.raises(InvalidTypeError, match="CellSpec, a cell string"):
        jacobian_path_sum(3, 256)  # type: ignore[arg-type]


# ------------------------------------------------------------------ Theorems 4.4 / 4.6


@pytest.mark.parametrize("C", [-0.5, 0.0, 0.3, 0.8])
def test_worked_bounds(C: float) -> None:
    assert nngp_bound("2_02_002", C) == pytest.approx(1 - f_power(C, 3), rel=1e-14)
    assert nngp_bound("1_01_222", C) == pytest.approx(3 * (1 - f(C)), rel=1e-14)
    # chain of 3: + 3 - [f(C)ḟ(C) + f²(C)ḟ(C)ḟ(f(C)) + f³(C)ḟ(C)ḟ(f(C))ḟ(f²(C))]
    f1, f2, f3 = f_power(C, 1), f_power(C, 2), f_power(C, 3)
    d0, d1, d2 = fdot(C), fdot(f1), fdot(f2)
    # Theorem 4.6 as printed (form="paper")
    assert ntk_bound("2_02_002", C, form="paper") == pytest.approx(
        1 - f3 + 3 - (f1 * d0 + f2 * d0 * d1 + f3 * d0 * d1 * d2), rel=1e-13)
    assert ntk_bound("1_01_222", C, form="paper") == pytest.approx(3 * (1 - f1) + 3 - 3 * f1 * d0, rel=1e-13)
    # the default, corrected form: the unrolled recursion Σ_h f^h Π_{k>h} ḟ_k
    assert ntk_bound("2_02_002", C) == pytest.approx(
        1 - f3 + 3 - (C * d0 * d1 * d2 + f1 * d1 * d2 + f2 * d2), rel=1e-13)
    assert ntk_bound("1_01_222", C) == pytest.approx(3 * (1 - f1) + 3 - 3 * C * d0, rel=1e-13)
    # a depth-0 path keeps the input correlation: 1 - C, and adds nothing to the NTK sum
    assert nngp_bound("0_00_100", C) == pytest.approx(1 - C)
    assert ntk_bound("0_00_100", C) == pytest.approx(1 - C)


@pytest.mark.parametrize("C", [-0.5, 0.0, 0.3, 0.8])
def test_ntk_bound_recursion_form(C: float) -> None:
    # d = 1: G = K⁽¹⁾ + K̇⁽¹⁾ K⁽⁰⁾ -> off-diagonal f(C) + C ḟ(C); the printed Theorem 4.6 has f(C) ḟ(C)
    assert ntk_bound("0_00_200", C, form="recursion") == pytest.approx(2 - f(C) - C * fdot(C), rel=1e-14)
    assert ntk_bound("0_00_200", C, form="paper") == pytest.approx(2 - f(C) - f(C) * fdot(C), rel=1e-14)
    assert ntk_bound("0_00_200", C, form="paper") <= ntk_bound("0_00_200", C, form="recursion")
    for arch in ("2_02_002", "2_21_112", "2_22_221", "1_01_222", "1_11_111"):
        spec = CellSpec.parse(arch)
        assert ntk_bound(spec, C, form="recursion") == pytest.approx(ref_ntk_recursion_bound(spec, C), rel=1e-13)
    # with a correlation matrix the recursion form is the minimum over all pairs (not monotone near C = -1)
    X = np.random.default_rng(5).standard_normal((6, 3))
    K = gram_to_correlation(X @ X.T)
    assert K.min() < -0.9
    for arch in ("0_00_200", "2_21_112", "2_02_002"):
        spec = CellSpec.parse(arch)
        ref = min(ref_ntk_recursion_bound(spec, K[i, j]) for i in range(6) for j in range(6) if i != j)
        assert ntk_bound(spec, K, form="recursion") == pytest.approx(ref, rel=1e-13)
    # depth-0 paths: both forms give 1 - C per path
    assert ntk_bound("1_11_111", C, form="recursion") == ntk_bound("1_11_111", C) == pytest.approx(4 * (1 - C))
    with pytest.raises(InvalidArgumentError, match="form must be one of"):
        ntk_bound("2_02_002", C, form="exact")


def test_bounds_of_cells_without_paths_are_zero() -> None:
    for arch in ("0_00_000", "2_22_000", "0_00_012"):
        assert not CellSpec.parse(arch).topology.has_path
        assert nngp_bound(arch, 0.5) == 0.0
        assert ntk_bound(arch, 0.5) == 0.0
        assert jacobian_path_sum(arch, 256) == 0.0
        with pytest.raises(MeasureFailedError, match="no path"):
            generalization_indicator(arch, 0.5)


def test_bounds_agree_with_path_enumeration_reference() -> None:
    specs = [CellSpec.parse(a) for a in ("2_21_112", "2_22_221", "1_11_111", "2_12_212")] + sample_cells(8, 3, seed=3)
    for k, spec in enumerate(specs):
        K = random_correlation(5, seed=k)
        ref_nngp, ref_ntk = ref_bounds(spec, K)
        assert nngp_bound(spec, K) == pytest.approx(ref_nngp, rel=1e-12, abs=1e-13)
        assert ntk_bound(spec, K, form="paper") == pytest.approx(ref_ntk, rel=1e-12, abs=1e-13)
    # H = 4 as well
    spec4 = CellSpec.parse("2_12_212_2121")
    K = random_correlation(4, seed=99)
    assert (nngp_bound(spec4, K), ntk_bound(spec4, K, form="paper")) == pytest.approx(ref_bounds(spec4, K), rel=1e-12)


def test_matrix_C_is_min_over_pairs_at_largest_correlation() -> None:
    K = random_correlation(6, seed=4)
    iu = np.triu_indices(6, 1)
    cmax = K[iu].max()
    for arch in ("2_21_112", "2_02_002"):
        assert nngp_bound(arch, K) == pytest.approx(nngp_bound(arch, cmax), rel=1e-14)
        assert ntk_bound(arch, K, form="paper") == pytest.approx(ntk_bound(arch, cmax, form="paper"), rel=1e-14)
        assert nngp_bound(arch, K) <= min(nngp_bound(arch, c) for c in K[iu]) + 1e-15
    # bounds are non-increasing in C
    cs = np.linspace(-1, 1, 51)
    for arch in ("2_21_112", "2_22_221", "1_01_222"):
        assert np.all(np.diff([nngp_bound(arch, c) for c in cs]) <= 1e-13)
        assert np.all(np.diff([ntk_bound(arch, c, form="paper") for c in cs]) <= 1e-13)


def test_bad_C_error_messages() -> None:
    with pytest.raises(InvalidArgumentError, match=r"\[-1, 1\]"):
        nngp_bound("2_02_002", 1.5)
    with pytest.raises(InvalidArgumentError, match="square"):
        nngp_bound("2_02_002", np.ones((2, 3)))
    with pytest.raises(InvalidArgumentError, match="at least 2x2"):
        ntk_bound("2_02_002", np.ones((1, 1)))
    with pytest.raises(InvalidArgumentError, match="symmetric"):
        nngp_bound("2_02_002", np.array([[1.0, 0.2], [0.3, 1.0]]))
    with pytest.raises(InvalidArgumentError, match="unit diagonal.*gram_to_correlation"):
        nngp_bound("2_02_002", np.array([[2.0, 0.2], [0.2, 1.0]]))
    with pytest.raises(InvalidArgumentError, match="scalar correlation or an \\(n, n\\)"):
        nngp_bound("2_02_002", np.array([0.1, 0.2]))
    with pytest.raises(InvalidArgumentError, match=r"\[-1, 1\]"):
        ntk_bound("2_02_002", np.array([[1.0, 1.2], [1.2, 1.0]]))
    with pytest.raises(InvalidTypeError, match="CellSpec or a cell string"):
        nngp_bound(7, 0.5)  # type: ignore[arg-type]
    # every error is a TrilemmaError and a ValueError
    with pytest.raises(TrilemmaError):
        nngp_bound("2_02_002", np.nan)


def test_gram_to_correlation() -> None:
    X = np.random.default_rng(0).standard_normal((4, 7))
    K = X @ X.T
    R = gram_to_correlation(K)
    np.testing.assert_allclose(np.diag(R), 1.0)
    np.testing.assert_allclose(R, K / np.sqrt(np.outer(np.diag(K), np.diag(K))))
    with pytest.raises(InvalidArgumentError, match="positive diagonal"):
        gram_to_correlation(np.zeros((2, 2)))


def test_generalization_indicator() -> None:
    C = 0.5
    assert generalization_indicator("2_02_002", C) == pytest.approx(3 / math.sqrt(ntk_bound("2_02_002", C)))
    assert generalization_indicator("0_00_100", C) == 0.0  # only a depth-0 path
    with pytest.raises(MeasureFailedError, match=r"bound is .* <= 0"):
        generalization_indicator("2_02_002", 1.0)  # identical inputs: bound = 0, no NaN/inf


# ------------------------------------------------------------------ table


def test_theory_table_space_facts_and_types() -> None:
    df = theory_table()
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 729
    assert int(df["trainable"].sum()) == 541
    assert df.loc[df["trainable"], "group"].nunique() == 23
    assert list(df["index"]) == list(range(729))
    num = df[["jacobian_path_sum", "nngp_bound", "ntk_bound"]].to_numpy()
    assert np.isfinite(num).all()  # never NaN
    # undefined values are <NA>, exactly where documented
    assert df["gen_indicator"].isna().sum() == 729 - 541
    assert (df["gen_indicator"].isna() == ~df["trainable"]).all()
    assert (df["mean_depth"].isna() == (df["P"] == 0)).all()
    assert df["eff_width"].isna().sum() == 67 + 121
    assert df["group"].isna().sum() == 67
    row = df.set_index("arch").loc["2_21_112"]
    assert (row["P"], row["depths"], row["sum_depth"]) == (4, "0 1 2 2", 5)
    assert row["params"] == count_params("2_21_112", 256, 784, 10)


def test_theory_table_matches_row_by_row_reference() -> None:
    K = random_correlation(5, seed=11)
    for C in (0.5, K):
        df = theory_table(C=C, width=128, in_features=64, num_classes=3)
        for spec, rec in zip(enumerate_cells(3), df.to_dict(orient="records")):
            ref = theory_row(spec, C=C, width=128, in_features=64, num_classes=3)
            assert set(ref) == set(COLUMNS)
            for key in COLUMNS:
                got, want = rec[key], ref[key]
                if want is None:
                    assert got is None or got is pd.NA, (spec.name, key, got)
                elif isinstance(want, float):
                    assert got == pytest.approx(want, rel=1e-12, abs=1e-14), (spec.name, key)
                else:
                    assert got == want, (spec.name, key)


def test_theory_table_paper_orderings() -> None:
    df = theory_table(C=0.5).set_index("arch")
    t = df[df["trainable"]]
    # convergence: the P = 4, d̄ = 0.25 group has the largest NNGP bound
    best = t["nngp_bound"].idxmax()
    assert t.loc[best, "group"] == (4, 0.25)
    # expressivity: the chain has the smallest Jacobian path sum among trainable cells
    assert t["jacobian_path_sum"].idxmin() == "2_02_002"


def test_theory_table_subset_and_bad_input() -> None:
    df = theory_table(["2_02_002", CellSpec.parse("1_01_222")], C=0.2)
    assert list(df["arch"]) == ["2_02_002", "1_01_222"]
    assert df["nngp_bound"].iloc[1] == pytest.approx(3 * (1 - f(0.2)))
    df4 = theory_table(nodes=2)
    assert len(df4) == 27
    with pytest.raises(InvalidArgumentError, match="width"):
        theory_table(width=0)
    with pytest.raises(InvalidArgumentError, match=r"\[-1, 1\]"):
        theory_table(C=-2.0)


# ------------------------------------------------------------------ import hygiene


def test_import_theory_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import trilemma.theory as th\n"
        "th.theory_table(); th.exact_kernels('2_21_112', [[1.0, 0.5], [0.5, 1.0]])\n"
        "th.monte_carlo('2_21_112', [[1.0, 0.0], [0.0, 1.0]], 8, seeds=1, thetas=4)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"

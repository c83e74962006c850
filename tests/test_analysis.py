"""trilemma.analysis: correlations with known answers, bootstrap coverage, ranks, Pareto, verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from trilemma.analysis import (
    AGREEMENT_COLUMNS,
    AXES,
    PUBLISHED_CORRELATIONS,
    AxisColumns,
    Column,
    aggregate_seeds,
    agreement_table,
    best_per_axis,
    direction,
    get_metric,
    group_means,
    list_metrics,
    pareto_front,
    pareto_layers,
    published_columns,
    published_correlations,
    rank_correlation,
    rank_table,
    register_metric,
    resolve_objectives,
    synthetic_results,
    unregister_metric,
    verdict,
)
from trilemma.analysis import _correlation as corr_impl
from trilemma.analysis import _ranking as rank_impl
from trilemma.errors import (
    DuplicateNameError,
    InvalidArgumentError,
    InvalidTypeError,
    UnknownNameError,
)

OBJ = {"expressivity": "expressivity", "convergence": "epochs_to_50", "generalization": "generalization_gap"}


# ----------------------------------------------------------------------------------- τ, ρ


@pytest.mark.parametrize("method", ["kendall", "spearman"])
def test_identity_is_one_and_reversal_is_minus_one(method):
    df = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) * 3 + 1, "c": -np.arange(20.0) ** 3})
    same = rank_correlation(df, "a", "b", method=method, n_boot=50)
    rev = rank_correlation(df, "a", "c", method=method, n_boot=50)
    assert same.value == pytest.approx(1.0) and rev.value == pytest.approx(-1.0)
    # Every resample of a perfectly monotone relation is perfectly monotone too.
    assert (same.ci_low, same.ci_high) == pytest.approx((1.0, 1.0))
    assert (rev.ci_low, rev.ci_high) == pytest.approx((-1.0, -1.0))


def test_hand_computed_kendall_and_spearman():
    # Pairs of x = 1..5 against y = 3,1,2,5,4: 7 concordant, 3 discordant -> τ = 4/10.
    # Ranks differ by -2,1,1,-1,1 -> Σd² = 8 -> ρ = 1 - 6·8 / (5·24) = 0.6.
    df = pd.DataFrame({"x": [1, 2, 3, 4, 5], "y": [3, 1, 2, 5, 4]})
    assert rank_correlation(df, "x", "y", n_boot=0).value == pytest.approx(0.4)
    assert rank_correlation(df, "x", "y", method="spearman", n_boot=0).value == pytest.approx(0.6)


def test_hand_computed_kendall_tau_b_with_ties():
    # x = 1,1,2,2 vs y = 1,2,3,4: 4 concordant, 0 discordant, 2 pairs tied in x of 6:
    # τ_b = 4 / sqrt((6 - 2) · 6).
    df = pd.DataFrame({"x": [1, 1, 2, 2], "y": [1, 2, 3, 4]})
    assert rank_correlation(df, "x", "y", n_boot=0).value == pytest.approx(4 / math.sqrt(24))


def test_sign_convention_orients_but_never_takes_absolute_values():
    df = synthetic_results(noise=0.0)
    # Deeper cells reach a lower training loss: the raw τ is negative (as published, -0.87)…
    c = rank_correlation(df, "mean_depth", "expressivity", n_boot=100,
                         x_higher_is_better=direction("mean_depth", "expressivity"),
                         y_higher_is_better=direction("expressivity", "expressivity"))
    assert c.value < -0.5
    # …and the theory predicts exactly that: deeper = better, lower loss = better -> sign -1.
    assert c.sign == -1 and c.oriented == pytest.approx(-c.value) and c.oriented > 0
    lo, hi = c.oriented_ci
    assert lo == pytest.approx(-c.ci_high) and hi == pytest.approx(-c.ci_low) and lo <= hi
    # A wrongly oriented indicator keeps its negative sign.
    wrong = rank_correlation(df, "mean_depth", "expressivity", n_boot=0, x_higher_is_better=False,
                             y_higher_is_better=False)
    assert wrong.sign == 1 and wrong.oriented == pytest.approx(c.value) and wrong.oriented < 0
    assert rank_correlation(df, "P", "expressivity", n_boot=0).sign is None


@pytest.mark.parametrize("method, truth", [
    ("kendall", lambda r: 2 / math.pi * math.asin(r)),
    ("spearman", lambda r: 6 / math.pi * math.asin(r / 2)),
])
def test_bootstrap_interval_covers_the_population_value(method, truth):
    # Bivariate normal with correlation r: population τ = (2/π) asin r, ρ_S = (6/π) asin(r/2).
    r, n, reps = 0.6, 150, 40
    rng = np.random.default_rng(123)
    true = truth(r)
    covered, widths = 0, []
    for k in range(reps):
        z = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=n)
        c = rank_correlation(pd.DataFrame({"x": z[:, 0], "y": z[:, 1]}), "x", "y", method=method,
                             n_boot=400, seed=k)
        covered += c.ci_low <= true <= c.ci_high
        widths.append(c.ci_high - c.ci_low)
    assert covered >= 0.85 * reps, f"{covered}/{reps} 95% intervals covered {true:.3f}"
    assert 0.05 < np.mean(widths) < 0.4


def test_bootstrap_is_seeded():
    df = synthetic_results(limit=80)
    a = rank_correlation(df, "P", "convergence_epoch", n_boot=200, seed=7)
    b = rank_correlation(df, "P", "convergence_epoch", n_boot=200, seed=7)
    c = rank_correlation(df, "P", "convergence_epoch", n_boot=200, seed=8)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)


@pytest.mark.parametrize("method", ["kendall", "spearman"])
@pytest.mark.parametrize("x", ["P", "mean_depth", "curvature"])
def test_fast_bootstrap_matches_the_scipy_loop(method, x):
    df = synthetic_results(limit=150)
    df.loc[df.index[::7], "convergence_epoch"] = np.nan  # missing values are dropped identically
    for level in ("architecture", "group"):
        clean, xv, yv, codes, dropped = corr_impl._prepare(df, x, "convergence_epoch", level, ("P", "mean_depth"))
        assert dropped == len(df.index[::7])
        rng = np.random.default_rng(0)
        if level == "group":
            idx = corr_impl._stratified_indices(codes, 60, rng)
            fast = corr_impl._bootstrap_group(xv, yv, codes, idx, method)
        else:
            idx = corr_impl._resample_indices(len(xv), 60, rng)
            fast = corr_impl._bootstrap_architecture(xv, yv, idx, method)
        slow = corr_impl._bootstrap_reference(clean, idx, method, level)
        np.testing.assert_allclose(fast, slow, atol=1e-12, equal_nan=True)


def test_kendall_loop_path_for_large_tables_matches_matmul_path(monkeypatch):
    df = synthetic_results(limit=120)
    a = rank_correlation(df, "mean_depth", "expressivity", n_boot=80, seed=3)
    monkeypatch.setattr(corr_impl, "_MATMUL_MAX_N", 10)
    b = rank_correlation(df, "mean_depth", "expressivity", n_boot=80, seed=3)
    assert (a.ci_low, a.ci_high) == pytest.approx((b.ci_low, b.ci_high), abs=1e-12)


def test_stratified_resamples_keep_every_group_and_its_size():
    codes = np.array([0, 0, 1, 2, 2, 2, 1])
    idx = corr_impl._stratified_indices(codes, 50, np.random.default_rng(0))
    assert (codes[idx] == codes).all()


def _hand_groups() -> pd.DataFrame:
    # Four (P, d̄) groups with hand-picked members; group means of y: 2, 5, 1, 12.
    return pd.DataFrame({
        "arch": list("abcdefgh"),
        "P": [1, 1, 2, 1, 1, 2, 2, 2],
        "mean_depth": [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0],
        "y": [1.0, 3.0, 5.0, 0.0, 2.0, 10.0, 12.0, 14.0],
        "z": [4.0, 4.0, 3.0, 2.0, 2.0, 1.0, 1.0, 1.0],
    })


def test_group_means_on_a_hand_made_grouping():
    g = group_means(_hand_groups(), ["y"])
    assert g[["P", "mean_depth", "count"]].values.tolist() == [[1, 1.0, 2], [1, 2.0, 2], [2, 1.0, 1], [2, 2.0, 3]]
    assert g["y"].tolist() == [2.0, 1.0, 5.0, 12.0]
    assert g["y_std"].tolist() == pytest.approx([1.0, 1.0, 0.0, math.sqrt(8 / 3)])


def test_group_level_correlation_on_a_hand_made_grouping():
    df = _hand_groups()
    # Group points (P, mean y): (1,2) (1,1) (2,5) (2,12): 4 concordant, 2 tied in P of 6 pairs.
    c = rank_correlation(df, "P", "y", level="group", n_boot=100)
    assert c.n == 4 and c.n_rows == 8 and c.value == pytest.approx(4 / math.sqrt(24))
    # Group means of z: 4, 2, 3, 1 vs of y: 2, 1, 5, 12 -> pairs: (4,2)-(2,1) C, (4,2)-(3,5) D,
    # (4,2)-(1,12) D, (2,1)-(3,5) C, (2,1)-(1,12) D, (3,5)-(1,12) D -> τ = (2 - 4) / 6.
    assert rank_correlation(df, "z", "y", level="group", n_boot=0).value == pytest.approx(-1 / 3)
    # Over architectures instead, the same columns give a different answer.
    assert rank_correlation(df, "z", "y", n_boot=0).value != pytest.approx(-1 / 3)


def test_group_means_of_a_key_column_tie_exactly():
    # d̄ = 1/3 in two groups of different size: the summed means must still tie.
    df = pd.DataFrame({"P": [3] * 7 + [6] * 3 + [1] * 2, "mean_depth": [1 / 3] * 10 + [2.0] * 2,
                       "y": np.arange(12.0)})
    c = rank_correlation(df, "mean_depth", "y", level="group", n_boot=20)
    assert c.value == pytest.approx(rank_correlation(pd.DataFrame({"d": [1 / 3, 1 / 3, 2.0],
                                                                   "m": [3.0, 8.0, 10.5]}), "d", "m", n_boot=0).value)


def test_correlation_errors_say_what_is_wrong():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [1.0, 1.0, 1.0, 1.0], "s": list("abcd")})
    with pytest.raises(InvalidArgumentError, match="constant"):
        rank_correlation(df, "x", "y")
    with pytest.raises(InvalidArgumentError, match=r"no column\(s\) 'nope'.*it has: x, y, s"):
        rank_correlation(df, "x", "nope")
    with pytest.raises(InvalidTypeError, match="'s' must be numeric"):
        rank_correlation(df, "x", "s")
    with pytest.raises(InvalidArgumentError, match="method must be one of kendall, spearman, got 'pearson'"):
        rank_correlation(df, "x", "y", method="pearson")
    with pytest.raises(InvalidArgumentError, match="confidence"):
        rank_correlation(df, "x", "y", confidence=1.5)
    with pytest.raises(InvalidArgumentError, match="at least 3 points"):
        rank_correlation(df.head(2), "x", "x")
    with pytest.raises(InvalidTypeError):
        rank_correlation([1, 2, 3], "x", "y")


def test_missing_values_are_dropped_and_counted():
    df = pd.DataFrame({"x": [1.0, 2.0, np.nan, 4.0, 5.0], "y": [1.0, 2.0, 3.0, np.inf, 6.0]})
    c = rank_correlation(df, "x", "y", n_boot=0)
    assert c.n == 3 and c.n_dropped == 2 and c.value == pytest.approx(1.0)


# ------------------------------------------------------------------------- ranks, Pareto


def _table(rows: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"arch": a, "expressivity": e, "epochs_to_50": c, "generalization_gap": g}
                         for a, (e, c, g) in rows.items()])


def test_planted_single_winner_wins_all():
    df = _table({"W": (0.1, 5, 0.01), "a": (0.2, 9, 0.05), "b": (0.5, 6, 0.02), "c": (0.15, 20, 0.3)})
    v = verdict(df)
    assert v.one_wins_all and not v.no_free_lunch
    assert v.all_axis_winners == ("W",)
    assert v.pareto_front == ("W",)
    assert "wins all 3 axes: W" in v.headline()
    assert all(s.rank == 1 and s.gap == 0 for s in v.standings)


def test_a_single_ranked_axis_is_not_announced_as_a_free_lunch():
    # A benchmark with only an accuracy column (NB201's lookup) ranks one axis: its best cell
    # trivially "wins all axes", which must not read as the answer to the trilemma.
    df = _table({"W": (0.1, 5, 0.01), "a": (0.2, 9, 0.05), "b": (0.5, 6, 0.02)})
    v = verdict(df, {"generalization": "generalization_gap"})
    assert not v.judged and [a.axis for a in v.axes] == ["generalization"]
    h = v.headline()
    assert "wins all" not in h and "No free lunch" not in h
    assert h.startswith("Only one axis is ranked (generalization): its best architecture is W of 3")
    assert verdict(df).judged


def test_planted_trade_off_gives_the_per_axis_winners_front_and_gaps():
    df = _table({
        "deep": (0.10, 30, 0.40),     # best expressivity
        "wide": (0.50, 10, 0.20),     # best convergence
        "mid": (0.30, 20, 0.10),      # best generalization
        "dom": (0.60, 35, 0.45),      # dominated by everyone
        "tradeoff": (0.20, 25, 0.30),  # on the front, best on nothing
    })
    v = verdict(df)
    assert v.no_free_lunch and v.all_axis_winners == ()
    assert [(a.axis, a.champion) for a in v.axes] == [
        ("expressivity", "deep"), ("convergence", "wide"), ("generalization", "mid")]
    assert set(v.pareto_front) == {"deep", "wide", "mid", "tradeoff"}
    s = v.standing("deep", "convergence")  # epochs 30: rank 4 of 5 (10, 20, 25, 30, 35)
    assert (s.rank, s.n, s.value, s.gap) == (4.0, 5, 30.0, 20.0)
    assert s.relative_gap == pytest.approx(2.0) and s.range_fraction == pytest.approx(20 / 25)
    s = v.standing("wide", "generalization")  # gap 0.20: rank 2; (0.2 - 0.1)/0.1 = 100 %
    assert s.rank == 2 and s.relative_gap == pytest.approx(1.0)
    assert "No free lunch" in v.headline() and "convergence: wide" in v.headline()


def test_tied_winners_break_ties_by_the_other_axes():
    df = _table({"a": (0.1, 10, 0.3), "b": (0.1, 12, 0.2), "c": (0.1, 11, 0.1), "d": (0.4, 9, 0.5)})
    e = verdict(df).axis("expressivity")
    # Tied on expressivity; rank sums on the others: a 2+3=5, b 4+2=6, c 3+1=4.
    assert e.winners == ("c", "a", "b") and e.champion == "c"


def test_rank_table_tie_methods():
    df = _table({"a": (1, 1, 1), "b": (2, 2, 2), "c": (2, 3, 3), "d": (4, 4, 4)})
    r = rank_table(df, {"expressivity": "expressivity"}).set_index("arch")
    assert r["rank_expressivity"].to_dict() == {"a": 1, "b": 2, "c": 2, "d": 4}
    r = rank_table(df, {"expressivity": "expressivity"}, method="average").set_index("arch")
    assert r["rank_expressivity"].to_dict() == {"a": 1, "b": 2.5, "c": 2.5, "d": 4}
    full = rank_table(df)
    assert full["arch"].tolist() == ["a", "b", "c", "d"]
    assert full["rank_sum"].tolist() == [3, 6, 8, 12]  # c: 2 + 3 + 3
    with pytest.raises(InvalidArgumentError, match="method must be one of"):
        rank_table(df, method="first")


def test_higher_is_better_is_respected():
    df = pd.DataFrame({"arch": list("abc"), "acc": [0.9, 0.5, 0.7], "expressivity": [0.3, 0.1, 0.2]})
    r = rank_table(df, {"expressivity": "acc"}, higher_is_better={"acc": True}).set_index("arch")
    assert r["rank_expressivity"].to_dict() == {"a": 1, "c": 2, "b": 3}
    with pytest.raises(UnknownNameError, match="acc"):
        rank_table(df, {"expressivity": "acc"})  # unknown metric, no direction given


def test_best_per_axis():
    df = _table({"a": (0.1, 9, 0.3), "b": (0.2, 8, 0.2), "c": (0.3, 7, 0.1)})
    top = best_per_axis(df, k=1)
    assert top[["axis", "arch"]].values.tolist() == [["expressivity", "a"], ["convergence", "c"],
                                                     ["generalization", "c"]]


@pytest.mark.parametrize("seed", range(6))
def test_pareto_front_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 120 if seed % 2 else 60
    df = pd.DataFrame(rng.integers(0, 5 if seed < 3 else 50, size=(n, 3)).astype(float), columns=list("abc"))
    dirs = [bool(seed % 2), True, False]
    m = np.column_stack([df[c] * (-1 if d else 1) for c, d in zip("abc", dirs)])
    expected = rank_impl._pareto_front_reference(m)
    np.testing.assert_array_equal(pareto_front(df, list("abc"), dirs).to_numpy(), expected)


def test_pareto_layers_are_successive_fronts():
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(80, 3)), columns=list("abc"))
    dirs = {"a": False, "b": False, "c": True}
    layers = pareto_layers(df, list("abc"), dirs)
    assert (layers[pareto_front(df, list("abc"), dirs)] == 1).all()
    m = np.column_stack([df["a"], df["b"], -df["c"]])
    for k in range(2, layers.max() + 1):
        later = (layers >= k).to_numpy()
        front = rank_impl._pareto_front_reference(m[later])
        np.testing.assert_array_equal(front, (layers[later] == k).to_numpy())


def test_pareto_duplicates_and_errors():
    df = pd.DataFrame({"a": [1.0, 1.0, 2.0], "b": [1.0, 1.0, 0.5]})
    assert pareto_front(df, ["a", "b"], [False, False]).tolist() == [True, True, True]
    with pytest.raises(InvalidArgumentError, match="finite"):
        pareto_front(pd.DataFrame({"a": [1.0, np.nan]}), ["a"], [True])
    with pytest.raises(InvalidArgumentError, match="one bool per column"):
        pareto_front(df, ["a", "b"], [True])


def test_verdict_leaves_out_incomplete_rows_and_rejects_repeated_architectures():
    df = _table({"a": (0.1, 5, 0.1), "b": (0.2, 4, 0.2), "c": (np.nan, 1, 0.0)})
    v = verdict(df)
    assert v.n_architectures == 2 and v.n_excluded == 1
    with pytest.raises(InvalidArgumentError, match="aggregate_seeds"):
        verdict(pd.concat([df, df]))
    with pytest.raises(InvalidArgumentError, match="no ground-truth column for axis 'convergence'"):
        verdict(df.drop(columns=["epochs_to_50"]))


def test_aggregate_seeds_averages_and_keeps_integer_columns():
    df = synthetic_results(limit=30, n_seeds=3)
    out = aggregate_seeds(df)
    assert len(out) == 30 and (out["n_seeds"] == 3).all()
    assert pd.api.types.is_integer_dtype(out["P"])
    first = df[df["arch"] == out["arch"].iloc[0]]
    assert out["expressivity"].iloc[0] == pytest.approx(first["expressivity"].mean())
    assert out["status"].iloc[0] == "complete"


# --------------------------------------------------------- metric table, published values


def test_metric_table_directions_and_errors():
    assert direction("expressivity", "expressivity") is False
    assert direction("mean_depth", "expressivity") is True and direction("P", "convergence") is True
    assert direction("mean_depth", "generalization") is False
    assert direction("expressivity", "expressivity", {"expressivity": True}) is True
    assert set(list_metrics("trained")) >= {"expressivity", "convergence_epoch", "epochs_to_50", "generalization_gap"}
    with pytest.raises(UnknownNameError, match="no producer describes column 'curvture'"):
        get_metric("curvture")
    with pytest.raises(UnknownNameError, match="no direction on axis 'expressivity'"):
        direction("nngp_lambda_min", "expressivity")
    with pytest.raises(UnknownNameError, match="valid axes"):
        Column("m", "init", directions={"speed": True})
    with pytest.raises(InvalidArgumentError, match="kind must be one of"):
        Column("m", "measured")
    info = register_metric(Column("test_metric_xyz", "init", directions={"convergence": True}, label="xyz"))
    try:
        assert "test_metric_xyz" in list_metrics("init", "convergence") and info.label == "xyz"
        with pytest.raises(DuplicateNameError):
            register_metric(Column("test_metric_xyz", "init"))
    finally:
        unregister_metric("test_metric_xyz")


def test_published_values_are_the_papers():
    # Chen, Huang & Wang, AutoML-Conf 2023: Figs. 3-6 and 8, Table 1 and Fig. 7 (written out independently here).
    got = {(p.figure, p.dataset, p.setting, p.kind, p.quantity, p.versus): p.value for p in PUBLISHED_CORRELATIONS}
    expected = {}
    for fig, ds, setting, depth, paths in (
        ("Fig. 3", "Tiny-ImageNet", "", (-0.87, 0.64, 0.39), (0.11, -0.69, -0.41)),
        ("Fig. 5", "CIFAR-10", "", (-0.79, 0.34, 0.69), (0.04, -0.85, -0.21)),
        ("Fig. 5", "CIFAR-100", "", (-0.80, 0.33, 0.35), (0.05, -0.85, -0.26)),
        ("Fig. 8", "Tiny-ImageNet", "best LR", (-0.57, 0.69, 0.51), (0.17, -0.50, -0.37)),
    ):
        for axis, vd, vp in zip(AXES, depth, paths):
            expected[(fig, ds, setting, "trained", axis, "mean_depth")] = vd
            expected[(fig, ds, setting, "trained", axis, "P")] = vp
    for q, vd, vp in (("curvature", 0.47, -0.79), ("nngp_lambda_min", -0.52, 0.79), ("ntk_lambda_min", -0.12, 0.86)):
        expected[("Fig. 4", None, "", "init", q, "mean_depth")] = vd
        expected[("Fig. 4", None, "", "init", q, "P")] = vp
    for axis, q, v in (("expressivity", "curvature", -0.05), ("convergence", "nngp_lambda_min", -0.77),
                       ("generalization", "ntk_lambda_min", -0.16)):
        expected[("Fig. 6", "Tiny-ImageNet", "", "init_trained", axis, q)] = v
    assert got == expected
    assert len(published_correlations(kind="trained", dataset="Fig. 5 CIFAR-10")) == 6
    assert published_columns() == ["paper:Fig. 3 Tiny-ImageNet", "paper:Fig. 4", "paper:Fig. 5 CIFAR-10",
                                   "paper:Fig. 5 CIFAR-100", "paper:Fig. 6 Tiny-ImageNet",
                                   "paper:Fig. 8 Tiny-ImageNet (best LR)"]
    from trilemma.analysis import PUBLISHED_FIG7_TAU, PUBLISHED_TABLE1

    assert [(r.row, r.arch, r.expressivity, r.convergence, r.generalization, r.rank_sum) for r in PUBLISHED_TABLE1] == [
        ("I", "2_22_221", 71, 76, 5, 152), ("II", "1_22_221", 217, 39, 1, 257), ("III", "2_02_002", 1, 538, 541, 1080),
        ("IV", "1_22_221+2_02_002", 5, 46, 180, 231), ("V", "1_22_221@0.2+2_02_002@0.5", 39, 32, 38, 109)]
    assert PUBLISHED_FIG7_TAU == {"wide_shallow_ratio": 0.45, "deep_narrow_ratio": -0.06}


# --------------------------------------------------------------------------- agreement


def test_agreement_table_on_planted_trends():
    df = synthetic_results(noise=0.0)
    ag = agreement_table(df, n_boot=20)
    assert list(ag.columns) == [*AGREEMENT_COLUMNS, *published_columns()]
    assert ag["axis"].drop_duplicates().tolist() == list(AXES)
    row = ag[(ag["axis"] == "expressivity") & (ag["x"] == "mean_depth") & (ag["y"] == "expressivity")
             & (ag["level"] == "architecture")].iloc[0]
    assert row["value"] < -0.9 and row["sign"] == -1 and row["agrees"]
    assert (row["paper:Fig. 3 Tiny-ImageNet"], row["paper:Fig. 5 CIFAR-10"]) == (-0.87, -0.79)
    assert np.isnan(row["paper:Fig. 4"])
    row = ag[(ag["x"] == "P") & (ag["y"] == "curvature") & (ag["level"] == "group")].iloc[0]
    assert row["paper:Fig. 4"] == -0.79 and row["value"] < 0 and row["agrees"]
    row = ag[(ag["axis"] == "convergence") & (ag["x"] == "P") & (ag["y"] == "epochs_to_50")].iloc[0]
    assert row["paper:Fig. 5 CIFAR-10"] == -0.85 and row["value"] < 0
    # Published values are attached only to the axis's ground truth and Kendall rows.
    assert ag[(ag["y"] == "convergence_epoch")]["paper:Fig. 5 CIFAR-10"].isna().all()
    # Fig. 6: the trained ground truth against the at-init measure of its axis.
    row = ag[(ag["x"] == "nngp_lambda_min") & (ag["y"] == "epochs_to_50")].iloc[0]
    assert row["paper:Fig. 6 Tiny-ImageNet"] == -0.77
    # The planted generalization gap grows with depth: the theory's direction holds.
    gen = ag[(ag["axis"] == "generalization") & (ag["x"] == "mean_depth") & (ag["y"] == "generalization_gap")]
    assert gen["agrees"].all() and (gen["value"] > 0).all()
    assert (ag["note"] == "").all()


def test_agreement_table_explains_undefined_pairs_and_takes_explicit_columns():
    df = synthetic_results(limit=60)
    df["flat"] = 1.0
    cols = [AxisColumns("convergence", topology=("P",), init=("flat", "nngp_lambda_min"),
                        trained=("epochs_to_50",))]
    ag = agreement_table(df, cols, methods=("kendall", "spearman"), levels=("architecture",), n_boot=20)
    assert set(ag["method"]) == {"kendall", "spearman"} and set(ag["level"]) == {"architecture"}
    # pairs: P-flat, P-nngp, P-e50, flat-e50, nngp-e50 -> 5 pairs x 2 methods
    assert len(ag) == 10
    flat = ag[(ag["y"] == "flat") | (ag["x"] == "flat")]
    assert flat["value"].isna().all() and flat["note"].str.contains("constant").all()
    assert flat["sign"].isna().all()  # 'flat' has no registered direction
    with pytest.raises(InvalidArgumentError, match="methods must be"):
        agreement_table(df, cols, methods=("pearson",))


def test_resolve_objectives_defaults_and_fallbacks():
    df = synthetic_results(limit=20)
    objs = resolve_objectives(df)
    assert [(o.axis, o.column, o.higher_is_better) for o in objs] == [
        ("expressivity", "expressivity", False), ("convergence", "epochs_to_50", False),
        ("generalization", "generalization_gap", False)]
    with pytest.raises(InvalidArgumentError, match="each axis may appear once"):
        resolve_objectives(df, [objs[0], objs[0]])


def test_synthetic_table_has_the_papers_space():
    df = synthetic_results()
    assert len(df) == 541 and df.groupby(["P", "mean_depth"]).ngroups == 23
    assert verdict(df, OBJ).no_free_lunch

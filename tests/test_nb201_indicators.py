"""Closed-form NAS-Bench-201 indicators, combined indicator, centre filter, search simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trilemma.errors import InvalidArgumentError, InvalidTypeError
from trilemma.nb201 import (
    COMBINED_VARIANTS,
    DEFAULT_COMBINED,
    DISCONNECTED_SCORE,
    INDICATORS,
    SECONDARY_WEIGHT,
    MacroConfig,
    centre_filter,
    closed_form_indicators,
    closed_form_table,
    combined_indicator,
    nb201_live_params,
    nb201_params,
    op_costs,
    search_table,
    simulate_search,
)
from trilemma.spaces import NUM_NB201_CELLS, NB201Spec, sample_nb201
from trilemma.theory import f_power

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
MIXED = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|"
DEAD = "|skip_connect~0|+|nor_conv_3x3~0|none~1|+|avg_pool_3x3~0|none~1|none~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


@pytest.fixture(scope="module")
def full_table() -> pd.DataFrame:
    return closed_form_table()


def test_table_covers_the_space_with_every_indicator(full_table):
    assert len(full_table) == NUM_NB201_CELLS
    assert list(full_table["index"]) == list(range(NUM_NB201_CELLS))
    assert set(INDICATORS) <= set(full_table.columns)
    numeric = full_table.drop(columns=["arch"]).astype(float)
    assert np.isfinite(numeric.to_numpy()).all()  # never a silent NaN/inf


def test_vectorized_table_agrees_with_the_reference(full_table):
    cells = [NB201Spec.parse(a) for a in (BEST, MIXED, DEAD, ALL_NONE)] + sample_nb201(60, seed=2)
    for corr, width, config in ((0.5, None, MacroConfig()), (-0.3, 7, MacroConfig(C=8, N=2, num_classes=100))):
        table = closed_form_table(cells, corr=corr, width=width, config=config, combined=False)
        for row, spec in zip(table.to_dict("records"), cells):
            ref = closed_form_indicators(spec, corr=corr, width=width, config=config)
            assert set(ref) == set(row)
            for key, value in ref.items():
                if isinstance(value, float):
                    assert row[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
                else:
                    assert row[key] == value, key
    # order of the input cells is kept; indices may be given instead of specs
    assert list(closed_form_table([5, 3], combined=False)["index"]) == [5, 3]
    assert full_table.loc[NB201Spec.parse(BEST).index, "arch"] == BEST


def test_hand_worked_indicator_values():
    c = closed_form_indicators(MIXED, corr=0.5)
    # paths 0→1→2→3 (conv3, skip, pool) and 0→3 (conv1): d = (1, 1)
    assert (c["P"], c["sum_depth"], c["mean_depth"], c["eff_width"], c["max_depth"]) == (2, 2, 1.0, 2.0, 1)
    assert (c["live_convs"], c["live_conv3"], c["live_pools"]) == (2, 1, 1)
    assert c["conv_score"] == 2 + 0 - 1 + 1
    assert c["nngp_bound"] == pytest.approx(2 * (1 - f_power(0.5, 1)))
    b = closed_form_indicators(BEST, corr=0.5)
    assert (b["P"], b["sum_depth"], b["num_param_paths"], b["conv_score"]) == (4, 7, 3, 10)
    assert b["nngp_bound"] == pytest.approx(4 - f_power(0.5, 3) - 2 * f_power(0.5, 2) - 0.5)
    d = closed_form_indicators(DEAD)
    # only the 0→3 pool is live: the conv3 on 0→2 is dead weight
    assert (d["P"], d["mean_depth"], d["eff_width"], d["conv_score"]) == (1, 0.0, 0.0, -1)
    costs = op_costs()
    assert d["params"] - d["live_params"] == costs["nor_conv_3x3"][0]
    assert d["live_params"] == nb201_live_params(ALL_NONE) == nb201_params(ALL_NONE)
    n = closed_form_indicators(ALL_NONE)
    assert (n["has_path"], n["P"], n["conv_score"], n["nngp_bound"], n["generalization_bound"]) == (
        False, 0, DISCONNECTED_SCORE, 0.0, 0.0,
    )


def test_conv_score_floor_separates_disconnected_cells(full_table):
    connected = full_table[full_table["has_path"]]
    assert connected["conv_score"].min() == -6 > DISCONNECTED_SCORE
    assert (full_table.loc[~full_table["has_path"], "conv_score"] == DISCONNECTED_SCORE).all()


def test_combined_indicator_is_a_log_rank_sum():
    t = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [4.0, 3.0, 2.0, 1.0]})
    s = combined_indicator(t, [("a", 1), ("b", 1)])
    np.testing.assert_allclose(s, np.log([1, 2, 3, 4]) + np.log([4, 3, 2, 1]) - 2 * np.log(4))
    s2 = combined_indicator(t, {"x": ("a", 1), "y": ("b", -1)})
    assert list(np.argsort(s2.to_numpy())) == [0, 1, 2, 3] and s2.iloc[-1] == pytest.approx(0.0)
    # monotone transforms of a column do not change the score
    t2 = t.assign(a=np.exp(t["a"]))
    np.testing.assert_allclose(combined_indicator(t2, [("a", 1), ("b", 1)]), s)
    # cells without an input→output path rank last and may hold NaN (their measures are undefined)
    td = pd.DataFrame({"a": [3.0, np.nan, 1.0, 2.0], "has_path": [True, False, True, True]})
    sd = combined_indicator(td, [("a", 1)])
    np.testing.assert_allclose(sd[[0, 2, 3]], np.log([3 / 3, 1 / 3, 2 / 3]))
    assert sd[1] == pytest.approx(np.log(1 / 3) - 1.0)
    with pytest.raises(InvalidArgumentError, match="NaN"):
        combined_indicator(td, [("a", 1)], disconnected_last=False)
    with pytest.raises(InvalidArgumentError, match="column 'zzz' not in the table"):
        combined_indicator(t, [("zzz", 1)])
    with pytest.raises(InvalidArgumentError, match=r"\+1 or -1"):
        combined_indicator(t, [("a", 2)])
    with pytest.raises(InvalidArgumentError, match="NaN"):
        combined_indicator(t.assign(a=[1.0, np.nan, 2.0, 3.0]), [("a", 1)])


def _design_table(seed: int = 0, n: int = 60) -> pd.DataFrame:
    """A constructed table with the default design's columns: integer conv_score levels."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "conv_score": rng.integers(-6, 13, n),
            "jacob_cov": rng.normal(size=n),
            "live_params": rng.integers(1, 5, n) * 1000,
            "has_path": True,
        }
    )


def test_weighted_combined_indicator_and_variants(full_table):
    t = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [4.0, 3.0, 2.0, 1.0]})
    s = combined_indicator(t, [("a", 1, 1.0), ("b", 1, 0.25)])
    np.testing.assert_allclose(s, np.log([1, 2, 3, 4]) + 0.25 * np.log([4, 3, 2, 1]) - 1.25 * np.log(4))
    # unit weights = the unweighted form; a mapping may carry weights too
    np.testing.assert_allclose(combined_indicator(t, [("a", 1, 1), ("b", -1, 1)]), combined_indicator(t, [("a", 1), ("b", -1)]))
    np.testing.assert_allclose(combined_indicator(t, {"x": ("a", 1, 1.0), "y": ("b", 1, 0.25)}), s)
    # the default is the named design, and the design is conv_score + w·(jacob_cov, live_params)
    assert DEFAULT_COMBINED == "trilemma" and 0 < SECONDARY_WEIGHT < 1
    d = _design_table()
    n = len(d)
    manual = np.log(d["conv_score"].rank() / n) + SECONDARY_WEIGHT * (
        np.log(d["jacob_cov"].rank() / n) + np.log(d["live_params"].rank() / n)
    )
    np.testing.assert_allclose(combined_indicator(d), manual)
    np.testing.assert_allclose(combined_indicator(d, DEFAULT_COMBINED), manual)
    # closed_form_table's trilemma_score is the closed-form variant of the design
    sub = full_table.iloc[::50].reset_index(drop=True)
    np.testing.assert_allclose(
        closed_form_table(sub["index"])["trilemma_score"], combined_indicator(sub, "closed_form")
    )
    for name, axes in COMBINED_VARIANTS.items():
        assert all(d_ in (1, -1) and w > 0 for _, d_, w in axes), name
    with pytest.raises(InvalidArgumentError, match="unknown combined-indicator variant 'nope'.*trilemma"):
        combined_indicator(d, "nope")
    with pytest.raises(InvalidArgumentError, match="column 'jacob_cov' not in the table"):
        combined_indicator(d.drop(columns="jacob_cov"))
    for bad in (0.0, -1.0, np.inf, "1"):
        with pytest.raises(InvalidArgumentError, match="weight of 'a' must be a finite number > 0"):
            combined_indicator(t, [("a", 1, bad)])
    with pytest.raises(InvalidArgumentError, match="tuple"):
        combined_indicator(t, [("a", 1, 1.0, 2.0)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_design_orders_by_expressivity_then_the_other_axes(seed):
    d = _design_table(seed)
    s = combined_indicator(d).to_numpy()
    conv, jc, lp = (d[c].to_numpy() for c in ("conv_score", "jacob_cov", "live_params"))
    ge = (conv[:, None] >= conv[None, :]) & (jc[:, None] >= jc[None, :]) & (lp[:, None] >= lp[None, :])
    # Pareto-monotone: no worse on every axis → no lower score
    assert (s[:, None] >= s[None, :] - 1e-12)[ge].all()
    # within a conv_score level (and equal live_params) the order is jacob_cov's
    same = (conv[:, None] == conv[None, :]) & (lp[:, None] == lp[None, :]) & (jc[:, None] > jc[None, :])
    assert same.any() and (s[:, None] > s[None, :])[same].all()
    # a cell in a higher conv_score level beats one in a lower level unless the log-rank gap of
    # conv_score is smaller than the most the two secondary axes can add (2 · w · log n)
    n = len(d)
    lr = np.log(d["conv_score"].rank().to_numpy() / n)
    far = (lr[:, None] - lr[None, :]) > 2 * SECONDARY_WEIGHT * np.log(n)
    assert far.any() and (s[:, None] > s[None, :])[far].all()
    # disconnected cells rank last and may hold NaN in the measured axis
    dd = d.assign(has_path=np.arange(n) % 7 != 0)
    dd.loc[~dd["has_path"], "jacob_cov"] = np.nan
    sd = combined_indicator(dd).to_numpy()
    assert sd[~dd["has_path"]].max() < sd[dd["has_path"]].min()


def test_bad_arguments():
    with pytest.raises(InvalidArgumentError, match=r"\[-1, 1\)"):
        closed_form_table([0], corr=1.0)
    with pytest.raises(InvalidArgumentError, match="width"):
        closed_form_table([0], width=0)
    with pytest.raises(InvalidTypeError, match="iterable of cells"):
        closed_form_table(BEST)


def test_centre_filter_definition(full_table):
    f = centre_filter(full_table)
    # d̄ spans [0, 3] and m̄ [0, 4] over the space: keep 0.75 ≤ d̄ ≤ 2.25 and 1 ≤ m̄ ≤ 3
    assert f.depth_range == pytest.approx((0.75, 2.25)) and f.width_range == pytest.approx((1.0, 3.0))
    d, m = full_table["mean_depth"], full_table["eff_width"]
    expected = (d >= 0.75) & (d <= 2.25) & (m >= 1) & (m <= 3)
    assert (f.keep == expected.to_numpy()).all()
    assert f.removed_fraction == pytest.approx(1 - expected.mean())
    # a sample filtered with the space's ranges keeps exactly its members that are in the centre
    sample = full_table.sample(200, random_state=0)
    fs = centre_filter(sample, reference=full_table)
    assert (fs.keep == expected.loc[sample.index].to_numpy()).all()
    assert centre_filter(full_table, fraction=1.0).removed_fraction == 0.0
    with pytest.raises(InvalidArgumentError, match="fraction"):
        centre_filter(full_table, fraction=0)


def test_search_simulation_matches_a_direct_loop():
    rng = np.random.default_rng(0)
    n = 300
    acc = rng.normal(80, 5, n)
    scores = acc + rng.normal(0, 3, n)
    keep = rng.random(n) < 0.6
    res = simulate_search(scores, acc, sample_size=20, repeats=50, seed=1, keep=keep)
    # the same draws, replayed
    draw = np.random.default_rng(1)
    for r in range(50):
        sample = draw.choice(n, size=20, replace=False)
        pool = sample[keep[sample]]
        assert res.evaluated[r] == pool.size
        assert res.picks[r] == acc[pool[np.argmax(scores[pool])]]  # continuous scores: no ties
        assert res.optimum[r] == acc[sample].max()
    # an oracle indicator always picks the optimum; its negation never does better than it
    oracle = simulate_search(acc, acc, sample_size=20, repeats=50, seed=1)
    assert np.array_equal(oracle.picks, oracle.optimum)
    worst = simulate_search(acc, acc, sample_size=20, repeats=50, seed=1, direction=-1)
    assert (worst.picks <= oracle.picks).all()
    table = search_table(pd.DataFrame({"s": scores}), acc, {"s": 1}, keep=keep, sample_size=20, repeats=50, seed=1)
    assert list(table["filter"]) == ["none", "centre"]
    assert table.loc[1, "mean"] == pytest.approx(res.mean)
    with pytest.raises(InvalidArgumentError, match="NaN"):
        simulate_search(np.array([np.nan, 1.0]), np.array([1.0, 2.0]), sample_size=1)
    with pytest.raises(InvalidArgumentError, match="exceeds"):
        simulate_search(scores, acc, sample_size=n + 1)

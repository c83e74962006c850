"""Training-free search with measured indicators (run_search) and its CLI on a small budget."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trilemma.errors import InvalidArgumentError, UnknownNameError
from trilemma.nb201 import (
    REFERENCE_WINDOW,
    centre_filter,
    closed_form_table,
    run_search,
    score_pool,
    search_draw,
    search_indicator,
    summarise_search,
)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return closed_form_table()


def test_run_search_matches_a_direct_loop(table: pd.DataFrame) -> None:
    rng = np.random.default_rng(5)
    acc = rng.normal(size=len(table))
    keep = centre_filter(table).keep
    rows = run_search(table, acc, search_indicator("live_params"), seeds=6, sample_size=30, keep=keep,
                      filter_name="centre")
    scores = table["live_params"].to_numpy(dtype=float)
    for seed, row in zip(range(6), rows.itertuples()):
        drawn = np.random.default_rng(seed).choice(len(table), size=30, replace=False)
        pool = [i for i in drawn if keep[i]]
        best = max(scores[i] for i in pool)
        winners = [i for i in pool if scores[i] == best]
        assert row.index in winners and row.evaluated == len(pool) and row.drawn == 30
        assert row.accuracy == acc[row.index] and row.optimum == acc[drawn].max() and row.filter == "centre"
    # the same seeds draw the same cells for every indicator
    other = run_search(table, acc, search_indicator("conv_score"), seeds=6, sample_size=30, keep=keep)
    assert list(other["optimum"]) == list(rows["optimum"])
    summary = summarise_search(pd.concat([rows, other]))
    assert summary.loc[0, "mean"] == pytest.approx(rows["accuracy"].mean())
    assert summary.loc[0, "std"] == pytest.approx(rows["accuracy"].std(ddof=1))
    assert summary.loc[0, "cost_saving"] == pytest.approx(1 - rows["evaluated"].sum() / 180)


def test_tenas_rank_sum_and_failed_cells() -> None:
    pool = pd.DataFrame({
        "ntk_condition": [10.0, 20.0, 5.0, np.nan, 5.0],
        "linear_regions_batch": [50.0, 60.0, 40.0, 99.0, 40.0],
    })
    # TE-NAS dense ranks (best 0): condition 5→0, 10→1, 20→2; regions 60→0, 50→1, 40→2
    scores = score_pool(pool, search_indicator("tenas"))
    np.testing.assert_array_equal(scores[[0, 1, 2, 4]], [-2.0, -2.0, -2.0, -2.0])
    assert np.isnan(scores[3])  # a failed measure: ranked below every scored cell by run_search
    tbl = pd.DataFrame({"arch": list("abcde"), "index": range(5), "naswot": [1.0, np.nan, 3.0, 2.0, np.nan],
                        "naswot_error": [None, "MeasureFailedError: …", None, None, "MeasureFailedError: …"]})
    rows = run_search(tbl, np.arange(5.0), search_indicator("naswot"), seeds=3, sample_size=5)
    assert set(rows["arch"]) == {"c"} and set(rows["failed"]) == {2}
    tbl.loc[1, "naswot_error"] = None  # never measured: an error, not a silent "worst"
    with pytest.raises(InvalidArgumentError, match="no 'naswot' value and no recorded failure"):
        run_search(tbl, np.arange(5.0), search_indicator("naswot"), seeds=1, sample_size=5)
    with pytest.raises(UnknownNameError, match="unknown search indicator 'nasw'"):
        search_indicator("nasw")


def test_reference_window_and_draws(table: pd.DataFrame) -> None:
    f = centre_filter(table, window=REFERENCE_WINDOW)
    d, m = table["mean_depth"].to_numpy(), table["eff_width"].to_numpy()
    assert (f.keep == ((d >= 0.99) & (d <= 2.51) & (m >= 0.99) & (m <= 3.01))).all()
    assert list(search_draw(3, 10, 100)) == list(search_draw(3, 10, 100)) and len(set(search_draw(3, 10, 100))) == 10


# ---------------------------------------------------------------------------- CLI
def _run(argv: list[str]) -> int:
    from trilemma.commands.nb201 import add_commands

    parser = argparse.ArgumentParser(prog="trilemma")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_search_measures_the_drawn_cells_and_writes_one_row_per_seed(tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    from trilemma.nb201 import load_nb201_accuracy

    try:
        acc = load_nb201_accuracy().set_index("arch")["val_acc"]
    except FileNotFoundError as err:  # DatasetNotFoundError is a FileNotFoundError
        pytest.skip(f"NAS-Bench-201 accuracy table not available: {err}")
    study = tmp_path / "tiny.toml"
    study.write_text(f"""
name = "tiny_search"
store = "{tmp_path / 'tiny.sqlite'}"
seeds = [0]
[space]
name = "nb201"
options = {{ N = 1 }}
[model]
width = 4
[data]
names = ["digits"]
options = {{ normalize = "l2", max_train = 64, max_test = 16, flatten = false }}
[tasks.proxy_suite]
names = ["naswot", "jacob_cov", "ntk_condition", "linear_regions_batch"]
batch_size = 8
labels = "none"
on_error = "record"
[tasks.proxy_suite.options]
ntk_condition = {{ batchnorm = "eval" }}
[executor]
kind = "serial"
threads_per_worker = 1
""")
    out = tmp_path / "search.csv"
    argv = ["nb201", "search", "--study", str(study), "--measure", "--indicator", "naswot,tenas,trilemma",
            "--filter", "centre", "--seeds", "3", "--sample-size", "5", "--out", str(out)]
    assert _run(argv) == 0
    rows = pd.read_csv(out)
    assert len(rows) == 9 and list(rows.columns[:4]) == ["seed", "indicator", "filter", "arch"]
    assert set(rows["filter"]) == {"centre"} and sorted(set(rows["seed"])) == [0, 1, 2]
    assert (rows["accuracy"].to_numpy() == acc.loc[rows["arch"]].to_numpy()).all()
    assert (rows["evaluated"] <= rows["drawn"]).all() and (rows["drawn"] == 5).all()
    # naswot picks the largest measured score among the evaluated (centre) cells of its draw
    from trilemma.study import load_results

    res = load_results(study).set_index("arch")
    table = closed_form_table()
    keep = centre_filter(table).keep
    for row in rows[rows["indicator"] == "naswot"].itertuples():
        drawn = search_draw(row.seed, 5, len(table))
        pool = [table["arch"].iloc[i] for i in drawn if keep[i]] or [table["arch"].iloc[i] for i in drawn]
        assert res.loc[row.arch, "naswot"] == res.loc[pool, "naswot"].max()
    text = capsys.readouterr().out
    assert "cost_saving" in text and "wrote 9 rows" in text
    # every closed-form and every measured indicator as columns, one row per cell
    scores = tmp_path / "scores.csv"
    assert _run(["nb201", "score", "--out", str(scores), "--study", str(study)]) == 0
    df = pd.read_csv(scores).set_index("arch")
    assert len(df) == 15625 and {"conv_score", "live_params", "naswot", "ntk_condition", "measured_as"} <= set(df.columns)
    assert df["naswot"].notna().sum() == res["naswot"].notna().sum() > 0
    assert df.loc[res.index, "naswot"].equals(res["naswot"])
    # a rerun measures nothing new (resumable store) and a measured indicator needs --study
    assert _run(argv) == 0 and "0 run now" in capsys.readouterr().out
    with pytest.raises(InvalidArgumentError, match="give --study"):
        _run(["nb201", "search", "--indicator", "naswot", "--seeds", "2"])


def test_cli_search_stops_when_its_measure_run_is_interrupted(tmp_path: Path, monkeypatch, capsys) -> None:
    """Ctrl-C during --measure ends the command (exit 130, resumable); no search on a half-measured table."""
    import trilemma.study as study_mod
    from trilemma.nb201 import load_nb201_accuracy
    from trilemma.study import StudySummary

    try:
        load_nb201_accuracy()
    except FileNotFoundError as err:  # DatasetNotFoundError is a FileNotFoundError
        pytest.skip(f"NAS-Bench-201 accuracy table not available: {err}")
    calls: list[object] = []

    def interrupted_run(cfg, **kwargs):
        calls.append(cfg)
        return StudySummary(name="tiny", store=tmp_path / "tiny.sqlite", total=10, skipped=0, ran=4,
                            complete=4, interrupted=True)

    monkeypatch.setattr(study_mod, "run_study", interrupted_run)
    out = tmp_path / "search.csv"
    code = _run(["nb201", "search", "--study", str(Path(__file__).parents[1] / "examples" / "nb201_search.toml"),
                 "--measure", "--indicator", "naswot",
                 "--filter", "none", "--seeds", "2", "--sample-size", "5", "--out", str(out)])
    assert code == 130 and len(calls) == 1
    assert "interrupted; run the same command again to resume" in capsys.readouterr().err
    assert not out.exists()

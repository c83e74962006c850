"""The papers' remedy, analysed and reported: ranks among the single cells, Table 1, the pruning
grid (Fig. 7), the chosen learning rates (Fig. 8), Theorem 4.3's summary and the ensemble search
(Chen, Huang & Wang, AutoML-Conf 2023, Table 1, Figures 7 and 8, Theorem 4.3)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from trilemma._schema import Column, ResultSchema
from trilemma._stats import placed_rank
from trilemma.analysis import (
    PUBLISHED_TABLE1,
    Objective,
    convergence_rate_summary,
    lr_table,
    placed_ranks,
    pruning_grids,
    table1,
)
from trilemma.errors import ConfigError, InvalidArgumentError
from trilemma.models import build_ensemble
from trilemma.report import build_report_for_study
from trilemma.report._remedy import RemedyData, lrs_text, remedy_data
from trilemma.spaces import EnsembleSpec
from trilemma.study import load_outputs, load_results, plan_study, run_study
from trilemma.study._config import load_config
from trilemma.study._context import TaskContext
from trilemma.study.tasks import EnsembleSearchTask
from trilemma.study.tasks.ensemble_search import live_key

OBJS = (Objective("expressivity", "expressivity", False), Objective("convergence", "epochs_to_50", False),
        Objective("generalization", "generalization_gap", False))


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """One torch thread: on a shared 2-core machine OpenMP's barriers stall small models."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _frame(rows: list[tuple]) -> pd.DataFrame:
    """``(arch, single_cell, expressivity, epochs_to_50, generalization_gap)`` rows with the
    ensemble space's reference column in the schema."""
    df = pd.DataFrame(rows, columns=["arch", "single_cell", "expressivity", "epochs_to_50", "generalization_gap"])
    df.attrs["schema"] = ResultSchema([Column("single_cell", "info", "bool", role="reference")])
    return df


# ------------------------------------------------------------------ placed ranks
@pytest.mark.parametrize("higher_is_better", [False, True])
def test_placed_rank_is_the_min_rank_among_the_reference(higher_is_better: bool) -> None:
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 6, size=40).astype(float)  # many ties
    got = placed_rank(ref, ref, higher_is_better)
    # the slow obvious reference: scipy's min rank (ties share the best rank of their block)
    want = stats.rankdata(-ref if higher_is_better else ref, method="min")
    np.testing.assert_array_equal(got, want)
    # a value outside the reference: 1 + the number of strictly better reference values
    for v in (-1.0, 2.0, 2.5, 9.0):
        better = np.sum(ref > v) if higher_is_better else np.sum(ref < v)
        assert placed_rank([v], ref, higher_is_better)[0] == better + 1
    assert math.isnan(placed_rank([np.nan], ref, higher_is_better)[0])


def test_placed_rank_ties_by_hand_and_errors() -> None:
    np.testing.assert_array_equal(placed_rank([1, 2, 2, 4, 3], [1, 2, 2, 4], False), [1, 2, 2, 4, 4])
    with pytest.raises(InvalidArgumentError, match="at least one finite reference value"):
        placed_rank([1.0], [np.nan, np.inf], False)


def test_placed_ranks_errors_name_the_problem() -> None:
    df = _frame([("a", True, 1.0, 2.0, 0.1), ("b", True, 2.0, 1.0, 0.2)])
    with pytest.raises(InvalidArgumentError, match="at least one objective"):
        placed_ranks(df, [])
    with pytest.raises(InvalidArgumentError, match=r"one flag per row \(2\), got shape \(3,\)"):
        placed_ranks(df, OBJS, reference=np.ones(3, dtype=bool))
    with pytest.raises(InvalidArgumentError, match="no column.*'nope'"):
        placed_ranks(df, [Objective("expressivity", "nope", False)])
    empty = df.assign(expressivity=np.nan)
    with pytest.raises(InvalidArgumentError, match="no reference row has a value of 'expressivity'"):
        placed_ranks(empty, OBJS)


# ------------------------------------------------------------------ Table 1
def _table1_frame() -> pd.DataFrame:
    return _frame([
        # arch, single, train loss, epochs to 50 %, gap
        ("1_11_111", True, 0.30, 3, 0.02),          # ranks 2, 1, 2 → 5: our best single cell
        ("2_22_221", True, 0.20, 5, 0.05),          # the paper's row I: 1, 3, 4 → 8
        ("1_22_221", True, 0.40, 3, 0.01),          # II: 4, 1, 1 → 6
        ("2_02_002", True, 0.30, 9, 0.30),          # III: 2, 4, 5 → 11 (ties with 1_11_111 on loss)
        ("0_20_002", True, 0.90, 9, 0.03),          # 5, 4, 3 → 12
        ("1_22_221+2_02_002", False, 0.10, 4, 0.40),           # IV: 1, 3, 6 → 10
        ("1_22_221@0.2+2_02_002@0.5", False, 0.25, 3, 0.02),   # V: 2, 1, 2 → 5
    ])


def test_table1_ranks_among_the_single_cells_and_keeps_the_papers_row() -> None:
    df = _table1_frame()
    t = table1(df, OBJS)
    assert t.n_reference == 5
    rows = t.rows.set_index("row")
    assert list(t.rows["row"]) == ["I", "I (paper's cell)", "II", "III", "IV", "V"]
    assert rows.loc["I", "arch"] == "1_11_111"  # ours: the best rank sum among the single cells
    assert rows.loc["I (paper's cell)", "arch"] == "2_22_221"
    by_hand = {"I": (2, 1, 2), "I (paper's cell)": (1, 3, 4), "II": (4, 1, 1), "III": (2, 4, 5), "IV": (1, 3, 6),
               "V": (2, 1, 2)}
    for row, ranks in by_hand.items():
        got = tuple(int(rows.loc[row, f"rank_{o.axis}"]) for o in OBJS)
        assert got == ranks, row
        assert rows.loc[row, "rank_sum"] == sum(ranks)
    # the paper's numbers ride along, unchanged
    for pub in PUBLISHED_TABLE1:
        assert rows.loc[pub.row, "paper_rank_sum"] == pub.rank_sum
        assert rows.loc[pub.row, "paper_params_m"] == pub.params_millions
    assert rows.loc["I", "paper_rank_sum"] == 152 and rows.loc["V", "paper_rank_sum"] == 109
    assert t.rank_sum("V") == 5 and t.rank_sum("I") == 5 and t.v_beats_i is False  # a tie does not beat
    assert any("our best single cell by rank sum is 1_11_111" in n for n in t.notes)


def test_table1_keeps_rows_the_study_did_not_train_and_judges_v_against_i() -> None:
    df = _table1_frame()
    df = df[df["arch"] != "1_22_221+2_02_002"].reset_index(drop=True)
    df.loc[df["arch"] == "1_22_221@0.2+2_02_002@0.5", "expressivity"] = 0.05  # now 1, 1, 2 → 4 < 5
    df.attrs["schema"] = _table1_frame().attrs["schema"]
    t = table1(df, OBJS)
    iv = t.rows.set_index("row").loc["IV"]
    assert not iv["in_study"] and math.isnan(iv["rank_sum"])
    assert any("row IV" in n and "not in this study" in n for n in t.notes)
    assert t.v_beats_i is True
    with pytest.raises(InvalidArgumentError, match="no single cell has a value on every axis"):
        table1(df.assign(generalization_gap=[np.nan] * 3 + [0.1] * 3, expressivity=[0.1] * 3 + [np.nan] * 3), OBJS)


# ------------------------------------------------------------------ Figure 7
def test_pruning_grid_tau_against_scipy_and_the_papers_values() -> None:
    rng = np.random.default_rng(1)
    rows = [("1_22_221", True, 0.5, 5, 0.1), ("2_02_002", True, 0.2, 9, 0.3), ("2_22_221", True, 0.4, 6, 0.05),
            ("1_11_111", True, 0.6, 4, 0.02)]
    r1s, r2s = [0.0, 0.1, 0.2, 0.3, 0.4], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    for r1 in r1s:
        for r2 in r2s:
            name = "+".join(f"{c}@{r:g}" if r else c for c, r in (("1_22_221", r1), ("2_02_002", r2)))
            # worse with the wide-shallow member pruned, unrelated to the deep-narrow ratio
            rows.append((name, False, 0.3 + r1 + 0.01 * rng.standard_normal(), 5 + 10 * r1, 0.05 + r1 / 10))
    df = _frame(rows)
    df["member_cells"] = ["+".join(a.replace("@", " ").split()[0] for a in arch.split("+")) for arch in df["arch"]]
    df["member_ratios"] = ["/".join(f"{float(m.split('@')[1]) if '@' in m else 0:g}" for m in arch.split("+"))
                           for arch in df["arch"]]
    df["effective_params"] = 1000 - 100 * np.arange(len(df))
    df.attrs["schema"] = _frame([]).attrs["schema"]
    placed = placed_ranks(df, OBJS)
    (grid,) = pruning_grids(df, placed)
    assert grid.members == ("1_22_221", "2_02_002") and len(grid.points) == 30
    want1 = stats.kendalltau(grid.points["ratio_1"], grid.points["rank_sum"])[0]
    want2 = stats.kendalltau(grid.points["ratio_2"], grid.points["rank_sum"])[0]
    assert grid.taus["1_22_221"][0] == pytest.approx(want1) and grid.taus["2_02_002"][0] == pytest.approx(want2)
    assert grid.taus["1_22_221"][0] > 0.5  # pruning the wide-shallow member hurts here, by construction
    assert grid.published == {"1_22_221": 0.45, "2_02_002": -0.06}
    assert grid.best["ratio_1"] == 0.0
    # too few points, or a pruned stem, is not a grid
    assert pruning_grids(df.iloc[:7].reset_index(drop=True), placed.iloc[:7].reset_index(drop=True)) == ()
    assert pruning_grids(df.assign(stem_ratio=0.1), placed) == ()
    assert pruning_grids(df.drop(columns=["member_cells"]), placed) == ()


# ------------------------------------------------------------------ Figure 8 and Theorem 4.3
def test_lr_table_and_lrs_text() -> None:
    df = pd.DataFrame({"arch": ["a", "b", "c"], "best_lr": [0.05, np.nan, 0.4]})
    t = lr_table(df)
    assert list(t["arch"]) == ["a", "c"] and list(t["best_lr"]) == [0.05, 0.4]
    data = RemedyData(3, pd.DataFrame(), None, (), lr_choices=t)
    assert lrs_text(data) == "a 0.05\nc 0.4\n"
    assert lrs_text(RemedyData(3, pd.DataFrame(), None, ())) is None
    with pytest.raises(InvalidArgumentError, match="no column.*'best_lr'"):
        lr_table(df.drop(columns=["best_lr"]))


def test_convergence_rate_summary() -> None:
    df = pd.DataFrame({"arch": list("abcde"), "gd_rate": [0.90, 0.95, 0.80, np.nan, 0.99],
                       "gd_bound_rate": [0.95, 0.97, 0.85, 0.9, 0.98], "gd_within_bound": [True, True, True, None, False]})
    s = convergence_rate_summary(df)
    assert s is not None and s.n == 4 and s.within == 3
    ok = df["gd_rate"].notna()
    assert s.tau_rate_bound == pytest.approx(stats.kendalltau(df["gd_rate"][ok], df["gd_bound_rate"][ok])[0])
    assert "3 of 4" in s.sentence() and "finite width" in s.sentence()
    assert "finite width" not in convergence_rate_summary(df.iloc[:3]).sentence()  # type: ignore[union-attr]
    assert convergence_rate_summary(df.drop(columns=["gd_rate"])) is None


def test_remedy_data_is_empty_without_a_reference_column() -> None:
    df = _table1_frame().drop(columns=["single_cell"])
    df.attrs = {}
    assert remedy_data(df, OBJS).empty


# ------------------------------------------------------------------ a tiny study, end to end
CELLS = ["2_22_221", "1_22_221", "2_02_002", "1_01_222", "2_21_112", "0_20_002", "1_11_111", "2_12_122"]


def _tiny(tmp_path: Path, **tasks: object) -> dict:
    return {
        "name": "tiny_remedy", "seeds": [0], "store": str(tmp_path / "tiny.sqlite"),
        "space": {"name": "ensemble", "archs": [*CELLS, "1_22_221+2_02_002", "1_22_221@0.2+2_02_002@0.5"],
                  "options": {"nodes": 3, "cells": False, "ensembles": ["1_22_221+2_02_002"]}},
        "model": {"width": 16}, "data": {"names": ["digits"], "options": {"normalize": "l2"}},
        "theory": {"options": {"C": 0.5}},
        "training": {"epochs": 12, "batch_size": 32, "lr": 0.5, "batched": True, "dtype": "float64"},
        "tasks": tasks, "executor": {"kind": "serial", "threads_per_worker": 1},
    }


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("tiny_remedy")
    cfg = _tiny(tmp,
                ensemble_search={"top_k": 2, "ratios": [0.0, 0.5], "train": 2, "trees": 10, "measures": False,
                                 "budget": 3000},
                lr_sweep={"factors": [0.5, 1.0, 2.0], "only": {"single_cell": True}, "sample": {"n": 4, "seed": 0}},
                convergence_rate={"n": 6, "steps": 5, "only": {"single_cell": True}, "sample": {"n": 3, "seed": 0}})
    summary = run_study(cfg)
    assert summary.failed == 0, summary.failures
    build_report_for_study(tmp / "tiny.sqlite", tmp / "report", n_boot=0, figures=("remedy",))
    return tmp, cfg


def test_tiny_study_report_shows_the_remedy(tiny_study: tuple[Path, dict]) -> None:
    tmp, _ = tiny_study
    html = (tmp / "report" / "report.html").read_text(encoding="utf-8")
    md = (tmp / "report" / "summary.md").read_text(encoding="utf-8")
    for anchor in ("id='remedy'", "id='table1'", "id='search-table'", "id='best-lr'", "id='convergence-rate'",
                   "id='remedy-finding'"):
        assert anchor in html, anchor
    assert "## Table 1: ensembles and random pruning" in md and "## Ensemble search" in md
    assert "## Best learning rate per architecture (Fig. 8)" in md and "## Theorem 4.3, checked" in md
    assert "1_22_221@0.2+2_02_002@0.5" in md and "| 109 |" in md  # our row V beside the paper's rank sum
    summary = json.loads((tmp / "report" / "summary.json").read_text(encoding="utf-8"))
    rows = {r["row"]: r for r in summary["remedy"]["table1"]}
    assert set(rows) >= {"I", "II", "III", "IV", "V"} and summary["remedy"]["v_beats_i"] in (True, False)
    # every other section covers the single cells only
    df = load_results(tmp / "tiny.sqlite")
    single = df["single_cell"].astype(bool) & df[["expressivity", "epochs_to_50", "generalization_gap"]].notna().all(axis=1)
    assert len(summary["headline"]) > 0 and summary["remedy"]["search"]["n_reference"] == int(single.sum())
    # the single cells are the papers' DAG cells: their trends sit beside the published values
    expr_depth = next(r for r in summary["headline"] if r["quantity"] == "expressivity" and r["versus"] == "mean_depth")
    assert expr_depth["paper:Fig. 3 Tiny-ImageNet"] == pytest.approx(-0.87)


def test_tiny_study_exports_the_chosen_learning_rates(tiny_study: tuple[Path, dict]) -> None:
    tmp, _ = tiny_study
    df = load_results(tmp / "tiny.sqlite")
    chosen = df[df["best_lr"].notna()]
    assert len(chosen) == 4 and chosen["single_cell"].all()
    assert set(chosen["best_lr"]) <= {0.25, 0.5, 1.0}
    lines = (tmp / "report" / "lrs.txt").read_text(encoding="utf-8").splitlines()
    assert sorted(lines) == sorted(f"{a} {lr:g}" for a, lr in zip(chosen["arch"], chosen["best_lr"]))
    assert df["gd_rate"].notna().sum() == 3


def test_tiny_study_search_respects_the_budget_and_reports_both_ranks(tiny_study: tuple[Path, dict]) -> None:
    tmp, cfg = tiny_study
    (out,) = load_outputs(tmp / "tiny.sqlite", "ensemble_search")
    assert out["status"] == "complete"
    s = out["payload"]
    assert s["budget_rule"] == "fixed" and s["budget"] == 3000
    assert s["n_candidates"] >= 1 and all(t["params"] <= s["budget"] for t in s["top"])
    assert 1 <= len(s["trained"]) <= 2
    for r in s["trained"]:
        assert r["params"] <= s["budget"] and r["arch"] not in CELLS
        assert {"pred_rank_sum", "rank_sum", "pred_rank_expressivity", "rank_expressivity"} <= set(r)
        ranks = [r[f"rank_{a}"] for a in ("expressivity", "convergence", "generalization")]
        assert r["rank_sum"] == (sum(ranks) if None not in ranks else None)  # no value: no rank (JSON null)
    best = s["best"]
    assert best is not None and best["rank_sum"] == min(r["rank_sum"] for r in s["trained"])
    # candidates train with the study's protocol: the search's trainer reproduces the study's rows
    df = load_results(tmp / "tiny.sqlite")
    ctx = TaskContext(load_config(cfg))
    objs = {a: (c, False) for a, c in s["objectives"].items()}
    again = EnsembleSearchTask()._train(ctx, ["1_22_221@0.2+2_02_002@0.5"], "digits", 0, objs,
                                        {a: np.array([1.0]) for a in objs}, np.ones(1, dtype=bool))
    row = df.set_index("arch").loc["1_22_221@0.2+2_02_002@0.5"]
    for col in s["objectives"].values():
        assert again[0][col] == pytest.approx(float(row[col]), rel=1e-6)
    # row I is the best single cell by rank sum among the study's single cells
    assert s["row_I"]["arch"] in CELLS
    assert set(s["members"]) <= set(df.loc[df["single_cell"].astype(bool), "arch"])


def test_search_options_and_space_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tasks\.ensemble_search\.ratios.*pruning ratios in \[0, 1\)"):
        plan_study(_tiny(tmp_path, ensemble_search={"ratios": [0.0, 1.0]}))
    with pytest.raises(ConfigError, match=r"tasks\.ensemble_search\.sizes.*between 2 and 4"):
        plan_study(_tiny(tmp_path, ensemble_search={"sizes": [1]}))
    with pytest.raises(ConfigError, match=r"tasks\.ensemble_search\.budget.*'best_single' or a positive number"):
        plan_study(_tiny(tmp_path, ensemble_search={"budget": -3}))
    cfg = _tiny(tmp_path, ensemble_search={})
    del cfg["training"]
    cfg["measures"] = {"names": ["nngp_lambda_min"]}
    with pytest.raises(ConfigError, match=r"ensemble_search: needs a \[training\] section"):
        plan_study(cfg)


def test_live_key_groups_exactly_the_ensembles_that_build_one_network() -> None:
    names = ["0_20_002@0.2+0_20_012@0.6", "0_20_002@0.2+0_21_002@0.6", "0_20_012@0.2+0_21_002@0.6",
             "0_20_002@0.6+0_20_012@0.2", "1_22_221+2_02_002", "2_02_002+1_22_221", "1_20_002+0_20_012",
             "1_20_002+0_20_002", "2_22_221@0.5", "2_22_221@0.4"]
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    outs = {n: build_ensemble(EnsembleSpec.parse(n).name, 64, 10, 16, seed=0)(x).detach() for n in names}
    for a in names:
        for b in names:
            same_key = live_key(EnsembleSpec.parse(a)) == live_key(EnsembleSpec.parse(b))
            assert same_key == bool(torch.equal(outs[a], outs[b])), (a, b)
    # node 1 is live in the union when another member feeds it: 1→3 of 0_20_012 then counts
    assert live_key(EnsembleSpec.parse("1_20_002+0_20_012")) != live_key(EnsembleSpec.parse("1_20_002+0_20_002"))


def test_cli_report_prints_table1(tiny_study: tuple[Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    from trilemma.cli import main

    tmp, _ = tiny_study
    assert main(["report", str(tmp / "tiny.sqlite"), "--out", str(tmp / "report_cli")]) == 0
    out = capsys.readouterr().out
    assert "Table 1 (ranks among the single cells; ties: min rank)" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in ("I", "V")}
    assert "1_22_221@0.2+2_02_002@0.5" in lines["V"] and lines["V"].rstrip().endswith("109")  # the paper's sum
    assert lines["I"].rstrip().endswith("152")
    assert "row V" in out and "row I on this study's data" in out

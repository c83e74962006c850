"""trilemma.report: figure data (numbers without pixels), renderers, the files a report writes."""

from __future__ import annotations

import json
import re
import sys
import types

import numpy as np
import pandas as pd
import pytest

from trilemma.analysis import synthetic_curves, synthetic_results, verdict
from trilemma.errors import InvalidArgumentError
from trilemma.report import (
    FIGURE_KINDS,
    build_report,
    build_report_for_study,
    curves_data,
    figure_bytes,
    headline_table,
    indicator_scatter_data,
    pareto_data,
    plot_indicator_scatter,
    plot_topology_map,
    report_data,
    topology_map_data,
    write_report,
)

# A quarter of the H=3 space with a few measure columns: every report section, small and fast.
_KEEP_OUT = ["ntk_bound", "gen_indicator", "jacobian_path_sum", "ntk_lambda_min"]


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return synthetic_results(seed=1).iloc[::4].drop(columns=_KEEP_OUT).reset_index(drop=True)


@pytest.fixture(scope="module")
def curves(results) -> pd.DataFrame:
    v = verdict(results)
    return synthetic_curves(results, [a.champion for a in v.axes], epochs=15)


METADATA = {
    "study": "unit-test",
    "config": {"space": "dag", "nodes": 3, "width": 64, "dataset": "digits"},
    "versions": {"torch": "2.13.0"},
    "seeds": [0],
    "wall_time_s": 421.5,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory, results, curves):
    out = tmp_path_factory.mktemp("report")
    return build_report(results, out, curves=curves, metadata=METADATA, n_boot=100,
                        figures=("axes", "curves", "pareto"))


def test_topology_map_data_matches_a_groupby(results):
    m = topology_map_data(results, "expressivity", axis="expressivity")
    ref = results.groupby(["P", "mean_depth"])["expressivity"].agg(["mean", "count"]).reset_index()
    assert m.groups["count"].sum() == len(results) == len(m.points)
    np.testing.assert_allclose(m.groups["mean"], ref["mean"])
    assert m.groups["count"].tolist() == ref["count"].tolist()
    assert m.higher_is_better is False and m.direction_text == "lower is better"
    assert m.label == "train loss"


def test_indicator_scatter_carries_tau_with_its_interval(results):
    s = indicator_scatter_data(results, "mean_depth", "expressivity", "expressivity", n_boot=100)
    assert len(s.points) == len(results)
    assert s.correlation.value < 0 and s.correlation.sign == -1
    assert re.fullmatch(r"τ = -0\.\d\d \[-0\.\d\d, -0\.\d\d\], n = \d+", s.legend)


def test_pareto_and_curves_data_follow_the_verdict(results, curves):
    v = verdict(results)
    p = pareto_data(results, v)
    assert set(p.front["arch"]) == set(v.pareto_front)
    assert p.pairs == ((0, 1), (0, 2), (1, 2))
    assert p.champions == {a.axis: a.champion for a in v.axes}
    c = curves_data(curves, v)
    assert set(c.roles) == {a.champion for a in v.axes}
    assert c.loss_columns == ("train_loss", "test_loss") and c.acc_columns == ("train_acc", "test_acc")
    with pytest.raises(InvalidArgumentError, match="none of the winners"):
        curves_data(curves[curves["arch"] == "no-such"], v)


def test_indicator_figure_has_one_panel_per_indicator(results):
    items = [indicator_scatter_data(results, x, "epochs_to_50", "convergence", n_boot=20)
             for x in ("P", "mean_depth", "nngp_lambda_min")]
    fig = plot_indicator_scatter(items, "convergence")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3
    assert [ax.get_legend().get_texts()[0].get_text() for ax in visible] == [i.legend for i in items]
    assert figure_bytes(fig, "png")[:4] == b"\x89PNG"


def test_figures_render_deterministically(results):
    fig = plot_topology_map(topology_map_data(results, "curvature", axis="expressivity"))
    svg1, svg2 = figure_bytes(fig, "svg"), figure_bytes(fig, "svg")
    assert svg1 == svg2 and b"<svg" in svg1[:500]
    assert figure_bytes(fig, "png")[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InvalidArgumentError, match="fmt must be"):
        figure_bytes(fig, "jpg")


def test_headline_table_puts_each_axis_against_topology_beside_the_paper(results):
    data = report_data(results, n_boot=50)
    h = data.headline
    gt = h[h["kind"] == "trained"]
    assert set(zip(gt["axis"], gt["versus"])) == {(a, v) for a in ("expressivity", "convergence", "generalization")
                                                  for v in ("mean_depth", "P")}
    row = gt[(gt["axis"] == "expressivity") & (gt["versus"] == "mean_depth")].iloc[0]
    assert (row["paper:Fig. 3 Tiny-ImageNet"], row["paper:Fig. 5 CIFAR-10"]) == (-0.87, -0.79)
    assert row["sign:Fig. 3 Tiny-ImageNet"] == "agree" and row["sign:Fig. 8 Tiny-ImageNet (best LR)"] == "agree"
    assert row["tau_arch"] < 0 and row["tau_arch_low"] <= row["tau_arch"] <= row["tau_arch_high"]
    assert row["n_group"] == results.groupby(["P", "mean_depth"]).ngroups
    init = h[h["kind"] == "init"]
    assert set(init["quantity"]) == {"curvature", "nngp_lambda_min"} | ({"ntk_lambda_min"} - set(_KEEP_OUT))
    # the pairs of Figs. 3 and 4 (three axes, the at-init measures present; each vs d̄ and P)
    n = 6 + 2 * init["quantity"].nunique()
    assert len(h) == n and data.signs is not None and data.signs.pairs == n
    near_zero = (h["paper:Fig. 3 Tiny-ImageNet"].abs() < 0.3) | (h["paper:Fig. 4"].abs() < 0.3)
    assert data.signs.counted == n - int(near_zero.sum())
    # Without ground-truth names only the pairs with a published value remain.
    only_paper = headline_table(data.agreement, {})
    papers = [c for c in only_paper.columns if c.startswith("paper:")]
    assert len(only_paper) and only_paper[papers].notna().any(axis=1).all()


def test_report_files_are_complete_and_self_contained(built, results):
    assert built.html.name == "report.html" and built.html.exists() and str(built) == str(built.html)
    page = built.html.read_text(encoding="utf-8")
    # Offline: no external resource, every image inline, scripts inline.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "<script src" not in page
    imgs = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert len(imgs) == len(built.figures) and all(s.startswith("data:image/svg+xml;base64,") for s in imgs)
    assert "Content-Security-Policy" in page
    # The paper's trends first, then the verdict, then the rest.
    assert page.index("id='topology'") < page.index("id='verdict'") < page.index("id='agreement'") \
        < page.index("id='architectures'")
    assert "id='sign-summary'" in page
    assert "No free lunch" in page
    # Figures written as PNG and SVG.
    names = {f.name for f in built.figures}
    assert names == {"topology_expressivity", "topology_epochs_to_50", "topology_generalization_gap",
                     "curves", "pareto"}
    for f in built.figures:
        assert f.png.read_bytes()[:4] == b"\x89PNG" and b"<svg" in f.svg.read_bytes()[:1000]
    # Every architecture is in the table.
    assert page.count("<tr class='pareto'>") + page.count("<tr><td class='t' data-value=") >= len(results)
    # What was run.
    for text in ("unit-test", "digits", "2.13.0", "7 min 2 s", "n_boot"):
        assert text in page


def test_markdown_and_json_summaries(built):
    md = built.markdown.read_text(encoding="utf-8")
    assert md.startswith("# trilemma report: unit-test")
    assert "**Verdict.** No free lunch" in md
    assert "| expressivity | train loss (trained) | d̄ |" in md and "-0.87" in md and "-0.79" in md
    assert "figures/pareto.png" in md and "config.dataset | digits" in md
    summary = json.loads(built.json.read_text(encoding="utf-8"))
    assert summary["verdict"]["one_wins_all"] is False
    assert len(summary["agreement"]) > 0 and summary["metadata"]["study"] == "unit-test"


def test_report_notes_what_it_could_not_show(tmp_path, results):
    df = results.copy()
    df.loc[df.index[:3], "generalization_gap"] = np.nan
    df.loc[df.index[3], "status"] = "diverged"
    data = report_data(df, curves=pd.DataFrame({"arch": ["x"], "epoch": [1], "train_loss": [1.0]}), n_boot=20)
    notes = " | ".join(data.notes)
    assert "1 diverged" in notes and "3 architecture(s) lack a trained value" in notes
    assert "training curves not shown" in notes
    paths = write_report(data, tmp_path, embed="png", figures=("pareto",))
    assert [f.name for f in paths.figures] == ["pareto"]
    assert "data:image/png;base64," in paths.html.read_text(encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match="figures must be a subset"):
        write_report(data, tmp_path, figures=("maps",))
    assert set(FIGURE_KINDS) == {"axes", "quantities", "indicators", "curves", "pareto", "remedy"}


def test_report_renders_without_ground_truth_and_says_so(tmp_path):
    df = pd.DataFrame({"arch": list("abcd"), "P": [1, 2, 3, 4], "mean_depth": [3.0, 2.0, 1.5, 1.0],
                       "nngp_bound": [0.1, 0.4, 0.6, 0.9]})
    paths = build_report(df, tmp_path / "no_training", n_boot=20)
    html = paths.html.read_text(encoding="utf-8")
    md = paths.markdown.read_text(encoding="utf-8")
    assert "No verdict" in html and "not measured in this study (add a [training] section)" in html
    assert "not measured in this study (add a \\[training\\] section)" in md
    assert "nngp" in md  # the theory column is still correlated with the topology
    # a ground truth that is present but empty everywhere (no cell converged) is named as such
    empty = df.assign(expressivity=[None] * 4, epochs_to_50=[3, 4, 5, 6])
    data = report_data(empty, n_boot=20)
    assert data.missing_axes["expressivity"].startswith("measured, but no architecture has a value")
    assert [o.axis for o in data.objectives] == ["convergence"]
    with pytest.raises(InvalidArgumentError, match="empty"):
        build_report(pd.DataFrame({"arch": []}), tmp_path)


def test_build_report_for_study_reads_the_study_api(tmp_path, monkeypatch, results):
    calls = []
    fake = types.ModuleType("trilemma.study")

    def load_results(study):
        calls.append(study)
        return results

    fake.load_results = load_results
    fake.load_curves = lambda study: None
    fake.load_outputs = lambda study: []
    fake.load_metadata = lambda study: {"config_file": str(study), "wall_time_s": 3.0}
    monkeypatch.setitem(sys.modules, "trilemma.study", fake)
    monkeypatch.setattr("trilemma.study", fake, raising=False)
    paths = build_report_for_study(tmp_path / "nfl_digits.toml", tmp_path / "out" / "nfl.html", n_boot=20,
                                   figures=())
    assert calls == [tmp_path / "nfl_digits.toml"]
    assert paths.html == tmp_path / "out" / "nfl.html" and paths.markdown == tmp_path / "out" / "summary.md"
    page = paths.html.read_text(encoding="utf-8")
    assert "trilemma report: nfl_digits" in page and "config_file" in page


def test_one_dataset_per_report_and_seed_averaged_curves(results, curves):
    two = pd.concat([results.assign(dataset="digits"), results.assign(dataset="mnist1d")], ignore_index=True)
    seeds = pd.concat([curves.assign(seed=0, dataset="digits"),
                       curves.assign(seed=1, dataset="digits", train_loss=curves["train_loss"] + 0.2)])
    data = report_data(two, curves=seeds, n_boot=0)
    assert len(data.results) == len(results) and data.settings["dataset"] == "digits"
    assert any("mnist1d" in n for n in data.notes)
    champion = data.verdict.axes[0].champion
    mean_curve = data.curves.curves.loc[data.curves.curves["arch"] == champion, "train_loss"].to_numpy()
    np.testing.assert_allclose(mean_curve, curves.loc[curves["arch"] == champion, "train_loss"].to_numpy() + 0.1)
    assert report_data(two, dataset="mnist1d", n_boot=0).title.endswith("(mnist1d)")
    with pytest.raises(InvalidArgumentError, match="they hold: digits, mnist1d"):
        report_data(two, dataset="cifar10", n_boot=0)


def test_measure_columns_get_the_measures_own_direction(results):
    pytest.importorskip("torch")
    from trilemma.analysis import get_metric, schema_of
    from trilemma.measures import get_measure

    df = results.assign(jacobian_norm=results["mean_depth"].rank(ascending=False), jacobian_norm_time=0.01)
    measure = get_measure("jacobian_norm")
    # one source of truth: the column's direction is the measure's own registration
    assert schema_of(df).get("jacobian_norm").directions == {measure.axis: measure.higher_is_better}
    assert get_metric("jacobian_norm").directions == {measure.axis: measure.higher_is_better}
    data = report_data(df, n_boot=0)
    exp = data.agreement.query("axis == 'expressivity' and x == 'mean_depth' and y == 'jacobian_norm'")
    assert len(exp) == 2 and (exp["y_kind"] == "init").all() and exp["agrees"].all()

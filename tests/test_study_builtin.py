"""The built-in task kinds (theory, measures, train) against direct calls of the modules they wrap."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from trilemma.errors import ConfigError  # noqa: E402
from trilemma.study import Store, TaskKey, export_study, load_curves, load_results, plan_study, run_study  # noqa: E402
from trilemma.study.tasks import init_seed, measure_batch  # noqa: E402

ARCHS = ["2_02_002", "1_01_222", "2_21_112", "2_22_221"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Serial studies run in this process with one torch thread (fast for tiny models); restore after."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _study(tmp_path: Path, name: str, **sections: object) -> dict:
    base = {
        "name": name,
        "store": str(tmp_path / f"{name}.sqlite"),
        "seeds": [3],
        "space": {"nodes": 3, "archs": ARCHS},
        "model": {"width": 16},
        "data": {"names": ["digits"], "options": {"normalize": "l2", "max_train": 256, "max_test": 128}},
        "executor": {"kind": "serial", "threads_per_worker": 1},
    }
    base.update(sections)
    return base


def _rows(path: str, task: str) -> dict[str, dict]:
    with Store(path, readonly=True) as st:
        return {r.arch: r.result() for r in st.rows(task=task)}


def test_theory_task_matches_theory_row(tmp_path: Path) -> None:
    from trilemma.theory import theory_row

    cfg = _study(tmp_path, "th", theory={"options": {"C": 0.3}})
    assert run_study(cfg).complete == len(ARCHS)
    for arch, payload in _rows(cfg["store"], "theory").items():
        ref = theory_row(arch, C=0.3, width=16, in_features=64, num_classes=10)
        for key in ("jacobian_path_sum", "nngp_bound", "ntk_bound", "gen_indicator"):
            assert payload[key] == pytest.approx(ref[key], rel=1e-12)
        assert payload["info"] == {"width": 16, "params": ref["params"]}


def test_measures_task_matches_direct_calls(tmp_path: Path) -> None:
    from trilemma.data import load_dataset
    from trilemma.measures import get_measure
    from trilemma.models import build_model

    names = ["naswot", "ntk_lambda_min", "ntk_gen_bound"]
    cfg = _study(tmp_path, "me", measures={"names": names, "batch_size": 16, "repeats": 2})
    assert run_study(cfg).complete == len(ARCHS)
    ds = load_dataset("digits", normalize="l2", max_train=256, max_test=128)
    x, y = measure_batch(ds, 16, 3)
    got = _rows(cfg["store"], "measures")
    for arch in ARCHS[:2]:
        for name in names:
            m = get_measure(name)
            vals = []
            for r in range(2):
                model = build_model(arch, 64, 10, width=16, seed=init_seed(3, r))
                vals.append(m(model, x, y if m.needs_labels else None, seed=init_seed(3, r)).value)
            assert got[arch][name] == pytest.approx(sum(vals) / 2, rel=1e-9)
            assert got[arch][f"{name}_std"] == pytest.approx(abs(vals[0] - vals[1]) / math.sqrt(2), rel=1e-6, abs=1e-12)
            assert got[arch][f"{name}_time"] > 0
        assert "ntk_lambda_min_lambda_max" in got[arch]  # scalar extras are kept
    df = load_results(cfg["store"])
    assert {"naswot", "ntk_lambda_min", "ntk_gen_bound", "ntk_gen_bound_std"} <= set(df.columns)
    schema = df.attrs["schema"]  # every measure column carries its measure's registered axis and direction
    assert schema.get("ntk_gen_bound").directions == {"generalization": False}
    assert schema.get("ntk_lambda_min").directions == {"convergence": True, "generalization": True}
    assert schema.get("ntk_lambda_min_time").kind == "cost"


def test_batched_training_equals_one_by_one(tmp_path: Path) -> None:
    training = {"epochs": 3, "batch_size": 64, "lr": 0.1, "dtype": "float64"}
    batched = _study(tmp_path, "tb", training={**training, "batched": True, "group_size": 3})
    single = _study(tmp_path, "ts", training={**training, "batched": False})
    sb, ss = run_study(batched), run_study(single)
    assert sb.complete == ss.complete == len(ARCHS)
    with Store(batched["store"], readonly=True) as st:
        assert len({r.started_at for r in st.rows()}) == 2  # two batched jobs of 3 + 1 cells
    got_b, got_s = _rows(batched["store"], "train"), _rows(single["store"], "train")
    for arch in ARCHS:
        cb, cs = got_b[arch]["curves"], got_s[arch]["curves"]
        assert len(cb["train_loss"]) == 3
        for name in ("train_loss", "test_loss", "train_acc", "test_acc"):
            assert cb[name] == pytest.approx(cs[name], rel=1e-6)
        assert got_b[arch]["final_test_acc"] == pytest.approx(got_s[arch]["final_test_acc"], rel=1e-9)
    # different cells really got different results (no mix-up of rows)
    assert len({round(got_b[a]["final_train_loss"], 9) for a in ARCHS}) == len(ARCHS)
    curves = load_curves(batched["store"])
    assert len(curves) == 3 * len(ARCHS) and {"train_loss", "test_acc", "epoch"} <= set(curves.columns)


def test_diverged_training_is_recorded_not_raised(tmp_path: Path) -> None:
    cfg = _study(tmp_path, "dv", space={"nodes": 3, "archs": ["2_22_222"]},
                 training={"epochs": 3, "lr": 1e12, "loss": "mse"})
    summary = run_study(cfg)
    assert summary.diverged == 1 and summary.failed == 0
    with Store(cfg["store"], readonly=True) as st:
        (row,) = st.rows()
    assert row.status == "diverged" and row.result()["diverged_epoch"] is not None
    assert row.result()["convergence_epoch"] is None


def test_full_study_table_and_json_export(tmp_path: Path) -> None:
    cfg = _study(tmp_path, "full", theory={}, measures={"names": ["naswot"], "batch_size": 16},
                 training={"epochs": 2, "batch_size": 64})
    assert run_study(cfg).complete == 3 * len(ARCHS)
    df = load_results(cfg["store"])
    assert len(df) == len(ARCHS) and set(df["status"]) == {"complete"}
    for col in ("arch", "dataset", "seed", "P", "mean_depth", "eff_width", "group", "width", "params",
                "jacobian_path_sum", "nngp_bound", "ntk_bound", "gen_indicator", "naswot", "naswot_time",
                "convergence_epoch", "expressivity", "generalization_gap", "epochs_to_50", "final_train_acc",
                "final_test_acc", "final_train_loss", "final_test_loss", "theory_status", "train_status"):
        assert col in df.columns, col
    assert set(df["seed"]) == {3} and set(df["dataset"]) == {"digits"}
    data = json.loads(export_study(cfg["store"], "json", tmp_path / "full.json").read_text())
    entries = data["digits"]
    meas, train = _rows(cfg["store"], "measures"), _rows(cfg["store"], "train")
    for arch in ARCHS:
        e = entries[arch]
        assert e["naswot"] == {"score": meas[arch]["naswot"], "time": meas[arch]["naswot_time"]}
        assert e["val_accuracy"] == pytest.approx(100 * train[arch]["final_test_acc"])
        assert e["train_accuracy"] == pytest.approx(100 * train[arch]["final_train_acc"])
        assert e["nngp_bound"]["score"] == _rows(cfg["store"], "theory")[arch]["nngp_bound"]
        assert e["seeds"] == 1 and e["P"] == df.set_index("arch").loc[arch, "P"]


@pytest.mark.parametrize(
    ("sections", "line"),
    [
        ({"measures": {"names": ["nasowt"]}}, "measures.names[0]: unknown measure 'nasowt'; did you mean 'naswot'?"),
        ({"measures": {"names": ["naswot"], "options": {"naswot": {"bogus": 1}}}},
         "measures.options.naswot.bogus: unknown option of measure 'naswot'"),
        ({"data": {"names": ["digitz"]}, "theory": {}}, "data.names[0]: unknown dataset 'digitz' (did you mean 'digits'?)"),
        ({"training": {"epochz": 3}}, "training.epochz: unknown key (did you mean 'epochs'?)"),
        ({"training": {"seed": 3}}, "training.seed: set by the study's seeds"),
        ({"training": {"lr": -1.0}}, "training.lr: must be a finite number in (0.0, inf], got -1.0"),
        ({"theory": {"options": {"width": 3}}}, "theory.options.width: set by the study"),
        ({"theory": {"options": {"D": 3}}}, "theory.options.D: unknown option; allowed: C"),
    ],
)
def test_semantic_config_errors(tmp_path: Path, sections: dict, line: str) -> None:
    cfg = _study(tmp_path, "bad", **sections)
    if "data" in sections:
        cfg["data"] = sections["data"]
        cfg.setdefault("measures", {"names": ["naswot"]})
    with pytest.raises(ConfigError) as info:
        plan_study(cfg)
    assert line in str(info.value)


def test_plan_has_one_task_per_arch_kind_dataset_seed() -> None:
    plan = plan_study({"name": "p", "seeds": [0, 1], "space": {"nodes": 3, "filter": {"trainable": True}},
                       "data": {"names": ["digits"]}, "theory": {}, "measures": {"names": ["naswot"]},
                       "training": {"epochs": 1}})
    kinds = [k.task for k, _ in plan.tasks]
    assert kinds.count("theory") == 541  # seed- and dataset-free
    assert kinds.count("measures") == kinds.count("train") == 2 * 541
    assert len(set(k for k, _ in plan.tasks)) == len(plan.tasks)
    assert TaskKey("2_02_002", "theory", "", 0) in dict(plan.tasks)


def test_two_producers_of_one_column_are_refused_at_planning(tmp_path: Path) -> None:
    from trilemma.errors import ConfigError
    from trilemma.measures import get_measure, register_measure, unregister_measure

    # a plug-in measure named like a theory column: an error at planning, never a silent rename
    register_measure(get_measure("naswot").fn, name="nngp_bound", axis="convergence", higher_is_better=True)
    try:
        cfg = _study(tmp_path, "clash", theory={}, measures={"names": ["nngp_bound"], "batch_size": 16})
        with pytest.raises(ConfigError, match="column .nngp_bound. is produced twice: by measures .init. and by theory .theory."):
            plan_study(cfg)
    finally:
        unregister_measure("nngp_bound")

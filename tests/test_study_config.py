"""Study configs: valid files parse; every malformed one is reported with its key path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from trilemma.errors import ConfigError
from trilemma.study import StudyConfig, load_config, parse_config, plan_study

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

MINIMAL = {"name": "t", "space": {"nodes": 2}, "tasks": {"probe": {}}}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_minimal_config_defaults() -> None:
    cfg = parse_config(MINIMAL)
    assert cfg.space.name == "dag" and cfg.space.nodes == 2
    assert cfg.model.fixed_width == 64 and cfg.model.init == "he"
    assert cfg.executor.kind == "local"
    assert cfg.seed_list == (0,)
    assert cfg.store_path() == Path("runs") / "t.sqlite"
    assert parse_config({**MINIMAL, "repeats": 3}).seed_list == (0, 1, 2)


def test_config_json_round_trip_and_fingerprint() -> None:
    cfg = parse_config({**MINIMAL, "seeds": [3, 1], "space": {"nodes": 2, "filter": {"P": [1, 2]}}})
    back = StudyConfig.from_json(cfg.to_json())
    assert back == cfg
    # the executor does not change results, the model does
    other_exec = parse_config({**MINIMAL, "seeds": [3, 1], "space": {"nodes": 2, "filter": {"P": [1, 2]}},
                               "executor": {"kind": "serial"}})
    assert other_exec.fingerprint() == cfg.fingerprint()
    other_model = parse_config({**MINIMAL, "seeds": [3, 1], "space": {"nodes": 2, "filter": {"P": [1, 2]}},
                                "model": {"width": 8}})
    assert other_model.fingerprint() != cfg.fingerprint()


def test_training_protocol_keys_are_collected() -> None:
    cfg = parse_config({**MINIMAL, "data": {"names": ["digits"]},
                        "training": {"epochs": 3, "lr": 0.05, "batched": False}})
    assert cfg.training is not None
    assert cfg.training.protocol == {"epochs": 3, "lr": 0.05}
    assert cfg.training.batched is False


# Each malformed config, the key path its message must start with, and words it must contain
# (what is allowed and what was given).
MALFORMED = [
    ({"model": {"width": -3}}, "model.width", ["greater than 0", "-3"]),
    ({"model": {"widht": 64}}, "model.widht", ["unknown key", "did you mean 'width'", "param_budget"]),
    ({"model": {"init": "xavier"}}, "model.init", ["'he' or 'ntk'", "'xavier'"]),
    ({"model": {"width": 64, "param_budget": 10_000}}, "model", ["either width or param_budget"]),
    ({"space": {"nodes": "three"}}, "space.nodes", ["integer", "'three'"]),
    ({"space": {"nodes": 2, "filter": {"P": {"min": 3, "max": 1}}}}, "space.filter.P", ["min (3)", "max (1)"]),
    ({"space": {"nodes": 2, "sample": {"n": 0}}}, "space.sample.n", ["greater than 0", "got 0"]),
    ({"executor": {"n_workers": 0}}, "executor.n_workers", ["greater than 0"]),
    ({"seeds": [0, 0]}, "seeds", ["distinct", "[0, 0]"]),
    ({"seeds": [0], "repeats": 2}, "repeats", ["either seeds or repeats"]),
    ({"data": {"names": []}}, "data.names", ["must not be empty"]),
    ({"measures": {"names": ["naswot"]}}, "measures", ["needs a [data] section"]),
    ({"training": {"group_size": "big"}, "data": {"names": ["digits"]}}, "training.group_size",
     ["positive integer or 'auto'", "'big'"]),
    ({"model": {"budget_tolerance": float("nan")}}, "model.budget_tolerance", ["finite", "nan"]),
    ({"model": "wide"}, "model", ["must be a table", "'wide'"]),
    ({"name": "bad name!"}, "name", ["letters, digits", "'bad name!'"]),
    ({"extra_section": {}}, "extra_section", ["unknown key", "allowed keys", "space"]),
]


@pytest.mark.parametrize(("patch", "path", "words"), MALFORMED, ids=[m[1] + f"#{i}" for i, m in enumerate(MALFORMED)])
def test_malformed_config_names_key_path(patch: dict, path: str, words: list[str]) -> None:
    data = {**MINIMAL, **patch}
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="study.toml")
    msg = str(info.value)
    assert "study.toml" in msg
    # one problem: one line "invalid study config study.toml: <path>: ..."; several: one per line
    lines = [ln.strip() for ln in msg.splitlines()[1:]] or [msg.split("study.toml: ", 1)[1]]
    hit = [ln for ln in lines if ln.startswith(path + ":")]
    assert hit, f"no line starting with {path!r} in:\n{msg}"
    for w in words:
        assert w in hit[0], f"{w!r} not in {hit[0]!r}"


def test_missing_required_key_and_several_problems_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"space": {"nodes": 0}, "model": {"width": 0}})
    msg = str(info.value)
    assert "(3 problems)" in msg
    assert "name: required key is missing" in msg
    assert "space.nodes: must be greater than or equal to 1, got 0" in msg
    assert "model.width: must be greater than 0, got 0" in msg


def test_toml_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = _write(tmp_path, 'name = "x"\n[space\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="base_dir: unknown key"):
        parse_config({**MINIMAL, "base_dir": "/"})


def test_semantic_errors_name_key_path(tmp_path: Path) -> None:
    path = _write(tmp_path, """
        name = "sem"
        [space]
        nodes = 2
        archs = ["2_02", "2_9x"]
        [tasks.probe]
        value = 3
        [tasks.nosuchkind]
    """)
    with pytest.raises(ConfigError) as info:
        plan_study(path)
    msg = str(info.value)
    assert "space.archs[1]:" in msg and "'2_9x'" in msg
    assert "tasks.nosuchkind: unknown task kind 'nosuchkind'" in msg and "probe" in msg
    assert "tasks.probe.value: unknown key (did you mean 'values'?)" in msg


def test_filter_on_unknown_column_lists_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, """
        name = "f"
        [space]
        nodes = 2
        filter = { depth = 2 }
        [tasks.probe]
    """)
    with pytest.raises(ConfigError, match=r"space\.filter\.depth: unknown column; filterable columns: .*mean_depth"):
        plan_study(path)


def test_filter_and_sample_select_expected_cells() -> None:
    plan = plan_study({**MINIMAL, "space": {"nodes": 3, "filter": {"trainable": True}}})
    assert len(plan.archs) == 541  # the papers' 541 trainable cells
    plan = plan_study({**MINIMAL, "space": {"nodes": 3, "filter": {"P": 4, "mean_depth": {"max": 0.25}}}})
    assert plan.archs and all(a.count("1") + a.count("2") > 0 for a in plan.archs)
    from trilemma.spaces import CellSpec

    for a in plan.archs:
        topo = CellSpec.parse(a).topology
        assert topo.num_paths == 4 and topo.mean_depth <= 0.25
    s1 = plan_study({**MINIMAL, "space": {"nodes": 3, "sample": {"n": 10, "seed": 1}}}).archs
    s2 = plan_study({**MINIMAL, "space": {"nodes": 3, "sample": {"n": 10, "seed": 1}}}).archs
    s3 = plan_study({**MINIMAL, "space": {"nodes": 3, "sample": {"n": 10, "seed": 2}}}).archs
    assert s1 == s2 and s1 != s3 and len(set(s1)) == 10


def test_example_configs_validate() -> None:
    files = sorted(EXAMPLES.glob("*.toml"))
    assert any(f.name == "nfl_digits.toml" for f in files)
    for f in files:
        cfg = load_config(f)
        assert cfg.name
    nfl = load_config(EXAMPLES / "nfl_digits.toml")
    assert nfl.datasets == ("digits",) and nfl.model.fixed_width == 64
    assert set(nfl.task_sections()) == {"theory", "measures", "train"}


def test_unknown_executor_is_refused_at_planning() -> None:
    # executors are a registry (plug-ins add backends), so the name is checked when the study is planned
    with pytest.raises(ConfigError, match=r"executor.kind: unknown executor 'slurm'; registered: local, ray, serial"):
        plan_study({**MINIMAL, "executor": {"kind": "slurm"}, "tasks": {"probe": {}}})

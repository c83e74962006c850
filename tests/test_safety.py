"""Safety and reliability: no command loses a study, runs code a store names, or greets a user with a traceback.

One test (or more) per item of the safety review; each failed on the code before the fixes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from trilemma.cli import COMMAND_MODULES, main
from trilemma.errors import ConfigError, OutputPathError, PluginError, StoreError
from trilemma.study import Store, export_study, load_results, plan_study, run_study, study_status

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _probe_study(tmp_path: Path, name: str = "s", nodes: int = 1, **extra: object) -> dict:
    cfg: dict = {"name": name, "store": str(tmp_path / f"{name}.sqlite"), "space": {"nodes": nodes},
                 "tasks": {"probe": {"values": 2}}, "executor": {"kind": "serial"}}
    cfg.update(extra)
    return cfg


def _snapshot(path: Path) -> bytes:
    """The store's content as SQL text (independent of WAL checkpoints)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "\n".join(con.iterdump()).encode()
    finally:
        con.close()


# --------------------------------------------------------------------------- 1. data loss


def test_export_never_writes_onto_a_store(tmp_path: Path) -> None:
    cfg = _probe_study(tmp_path)
    run_study(cfg)
    store = Path(cfg["store"])
    before = _snapshot(store)
    for target in (store, Path(str(store) + "-wal"), Path(str(store) + "-shm")):
        with pytest.raises(OutputPathError, match="study store"):
            export_study(store, "csv", target)
    assert _snapshot(store) == before
    # a store named like an export: the default output goes beside it, never onto it
    odd = tmp_path / "odd.csv"
    run_study({**_probe_study(tmp_path, name="odd"), "store": str(odd)})
    out = export_study(odd, "csv")
    assert out != odd and out.name == "odd.csv.csv" and odd.read_bytes()[:15] == b"SQLite format 3"
    assert len(load_results(odd)) == 3


def test_outputs_overwrite_only_their_own_kind(tmp_path: Path) -> None:
    cfg = _probe_study(tmp_path)
    run_study(cfg)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a table\n")
    with pytest.raises(OutputPathError, match="refusing to overwrite"):
        export_study(cfg["store"], "csv", notes)
    assert notes.read_text() == "my notes, not a table\n"
    first = export_study(cfg["store"], "csv", tmp_path / "out.csv")
    assert export_study(cfg["store"], "csv", first) == first  # an earlier export is overwritten
    with pytest.raises(OutputPathError, match="not a JSON document"):
        export_study(cfg["store"], "json", notes)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("x")
    from trilemma.report import build_report_for_study

    with pytest.raises(OutputPathError, match="not empty"):
        build_report_for_study(cfg["store"], folder)
    assert [p.name for p in folder.iterdir()] == ["thesis.tex"]


def test_every_writing_command_refuses_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _probe_study(tmp_path)
    run_study(cfg)
    store = cfg["store"]
    before = _snapshot(Path(store))
    commands = [
        ["export", store, "--out", store],
        ["report", store, "--out", store],
        ["space", "list", "--nodes", "1", "--format", "csv", "--out", store],
        ["nb201", "score", "--out", store],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "study store" in err and "Traceback" not in err, (argv, err)
    assert _snapshot(Path(store)) == before


def test_a_refused_run_changes_nothing_in_the_store(tmp_path: Path) -> None:
    cfg = _probe_study(tmp_path)
    run_study(cfg)
    store = Path(cfg["store"])
    before = _snapshot(store)
    changed = {**cfg, "tasks": {"probe": {"values": 3}}}
    with pytest.raises(StoreError, match="other settings"):
        run_study(changed)
    with pytest.raises(StoreError, match="belongs to study"):
        run_study({**cfg, "name": "other"})
    assert _snapshot(store) == before  # meta (config, last_run_started) included


# --------------------------------------------------------------------------- security


def test_reading_a_store_never_imports_the_plugins_it_names(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    plugin = tmp_path / "evil.py"
    plugin.write_text(textwrap.dedent(f"""
        from pathlib import Path
        Path({str(marker)!r}).write_text("imported")

        def space():
            return ["a", "b"], lambda arch, **kw: None, lambda arch: {{"size": len(arch)}}
    """))
    cfg = {"name": "evil", "store": str(tmp_path / "evil.sqlite"), "space": {"name": f"{plugin}:space"},
           "plugins": [str(plugin)], "tasks": {"probe": {}}, "executor": {"kind": "serial"}}
    run_study(cfg)
    assert marker.exists()  # running a config you pass runs its plug-ins
    marker.unlink()
    df = load_results(cfg["store"])
    assert df["size"].tolist() == [1, 1]  # the space's columns come from the store
    export_study(cfg["store"], "csv", tmp_path / "evil.csv")
    export_study(cfg["store"], "json", tmp_path / "evil.json")
    assert main(["status", cfg["store"]]) == 0
    assert main(["report", cfg["store"], "--out", str(tmp_path / "rep")]) == 0
    assert not marker.exists()


def test_summary_markdown_escapes_names_and_config(tmp_path: Path) -> None:
    import pandas as pd

    from trilemma.report import build_report

    names = ["<script>alert(1)</script>", "a|b", "[x](javascript:y)", "`tick`", "*bold*"]
    df = pd.DataFrame({"arch": names, "P": [1, 2, 3, 4, 4], "mean_depth": [3.0, 2.0, 1.0, 1.0, 0.5],
                       "expressivity": [0.1, 0.2, 0.3, 0.4, 0.5], "epochs_to_50": [5, 4, 3, 2, 1],
                       "generalization_gap": [0.5, 0.4, 0.3, 0.2, 0.1]})
    paths = build_report(df, tmp_path / "r", n_boot=20,
                         metadata={"study": "s", "description": "<img src=x onerror=alert(1)> | *x*"})
    md = paths.markdown.read_text(encoding="utf-8")
    assert "<script>" not in md and "<img" not in md
    assert "&lt;img src=x onerror=alert(1)&gt; \\| \\*x\\*" in md
    assert "[x](javascript" not in md and "\\[x\\](javascript" in md  # brackets escaped: no link
    # table rows keep their column count (a | in a name cannot open a new cell)
    import re

    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| axis | ground truth | winner"))
    table = lines[start:start + 5]
    cells = [len(re.findall(r"(?<!\\)\|", ln)) for ln in table]
    assert len(set(cells)) == 1, table


# --------------------------------------------------------------------------- errors as one line


def _one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    assert main(argv) == code, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_unwritable_outputs_and_missing_stores_are_one_line(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _probe_study(tmp_path)
    run_study(cfg)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    bad = str(blocker / "sub" / "out.csv")  # its folder cannot be created (works as root too)
    for argv in (["export", cfg["store"], "--out", bad], ["report", cfg["store"], "--out", bad],
                 ["space", "list", "--nodes", "1", "--format", "csv", "--out", bad],
                 ["nb201", "score", "--out", bad], ["lesson", "run", "batch-size", "--quick", "--out", bad]):
        line = _one_error_line(capsys, argv)
        assert "a_file" in line, line
    missing = str(tmp_path / "nothing.sqlite")
    for argv in (["status", missing], ["export", missing], ["report", missing]):
        assert "no study store" in _one_error_line(capsys, argv)
    # a study whose store folder cannot be created
    toml = tmp_path / "s.toml"
    toml.write_text(f'name = "s"\nstore = "{blocker}/x/s.sqlite"\n[space]\nnodes = 1\n[tasks.probe]\n'
                    '[executor]\nkind = "serial"\n')
    assert "a_file" in _one_error_line(capsys, ["run", str(toml), "--quiet"])
    # --workers 0: a clear config line, not a pydantic dump
    line = _one_error_line(capsys, ["run", str(toml), "--workers", "0"])
    assert "--workers (executor.n_workers): must be greater than 0" in line or "greater than 0" in line


def test_exceptions_inside_a_plugin_name_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = tmp_path / "broken.py"
    plugin.write_text("def space(**options):\n    raise ValueError('my space needs a dataset name')\n")
    toml = tmp_path / "p.toml"
    toml.write_text(f'name = "p"\nstore = "{tmp_path}/p.sqlite"\n[space]\nname = "broken.py:space"\n'
                    '[tasks.probe]\n[executor]\nkind = "serial"\n')
    line = _one_error_line(capsys, ["run", str(toml)])
    assert "broken.py:space" in line and "ValueError: my space needs a dataset name" in line
    assert not (tmp_path / "p.sqlite").exists()
    with pytest.raises(PluginError) as info:
        plan_study(toml)
    assert isinstance(info.value.__cause__, ValueError)
    # -v / --traceback, before or after the command, print the trace
    for argv in (["-v", "run", str(toml)], ["run", str(toml), "-v"], ["run", str(toml), "--traceback"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and "my space needs a dataset name" in err.splitlines()[-1]


def test_ray_without_a_cluster_is_one_line_and_leaves_no_store(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    toml = tmp_path / "r.toml"
    toml.write_text(f'name = "r"\nstore = "{tmp_path}/r.sqlite"\n[space]\nnodes = 1\n[tasks.probe]\n')
    env_before = os.environ.pop("RAY_ADDRESS", None)
    try:
        line = _one_error_line(capsys, ["run", str(toml), "--executor", "ray", "--address", "auto"])
    finally:
        if env_before is not None:
            os.environ["RAY_ADDRESS"] = env_before
    assert "Ray" in line
    assert not list(tmp_path.glob("r.sqlite*"))


# --------------------------------------------------------------------------- reports always render


def test_report_of_a_study_without_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = {"name": "notrain", "store": str(tmp_path / "nt.sqlite"), "space": {"nodes": 2, "filter": {"trainable": True}},
           "model": {"width": 16}, "data": {"names": ["digits"]}, "theory": {},
           "measures": {"names": ["nngp_lambda_min"], "batch_size": 8}, "executor": {"kind": "serial"}}
    run_study(cfg)
    assert main(["report", cfg["store"], "--out", str(tmp_path / "rep")]) == 0
    html = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert "not measured in this study (add a [training] section)" in html


def test_report_when_no_architecture_converged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = {"name": "tiny", "store": str(tmp_path / "tiny.sqlite"), "seeds": [0],
           "space": {"archs": ["2_02_002", "1_22_221", "2_22_221", "1_01_222"]}, "model": {"width": 8},
           "data": {"names": ["digits"]}, "training": {"epochs": 3, "lr": 0.01, "batched": False},
           "executor": {"kind": "serial"}}
    run_study(cfg)
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(["report", cfg["store"], "--out", str(tmp_path / "rep")]) == 0
    assert not [r for r in caplog.records if "bootstrap" in r.getMessage()]
    md = (tmp_path / "rep" / "summary.md").read_text(encoding="utf-8")
    assert md.count("bootstrap resamples") <= 1


# --------------------------------------------------------------------------- checked before running


def test_missing_dataset_is_refused_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRILEMMA_DATA", str(tmp_path / "empty_root"))
    cfg = {"name": "c10", "store": str(tmp_path / "c10.sqlite"), "space": {"archs": ["2_02_002"]},
           "data": {"names": ["cifar10"]}, "theory": {}, "executor": {"kind": "serial"}}
    with pytest.raises(ConfigError, match=r"data.names\[0\]: dataset 'cifar10' is not available"):
        run_study(cfg)
    assert not Path(cfg["store"]).exists()


def test_a_model_too_large_for_the_machine_is_refused(tmp_path: Path) -> None:
    cfg = {"name": "huge", "store": str(tmp_path / "huge.sqlite"), "space": {"archs": ["2_02_002", "1_01_222"]},
           "model": {"width": 10**9}, "data": {"names": ["digits"]}, "training": {"epochs": 1},
           "executor": {"kind": "serial"}}
    with pytest.raises(ConfigError, match=r"needs about .*EiB|needs about .*PiB|needs about .*TiB") as info:
        plan_study(cfg)
    assert "2_02_002" in str(info.value) and "--force" in str(info.value)
    plan_study(cfg, force=True)  # the override skips only this check
    assert not Path(cfg["store"]).exists()


def test_space_show_counts_paths_without_enumerating(capsys: pytest.CaptureFixture[str]) -> None:
    full = "_".join("2" * t for t in range(1, 25))  # H = 24, every edge linear: 2^23 paths
    t0 = time.perf_counter()
    assert main(["space", "show", full]) == 0
    assert time.perf_counter() - t0 < 10
    out = capsys.readouterr().out
    assert f"P = {2 ** 23:,} paths" in out and "listed 32 of 8,388,608 paths" in out


# --------------------------------------------------------------------------- smaller


def test_rows_of_an_older_config_are_hidden_after_rerun_changed(tmp_path: Path) -> None:
    cfg = _probe_study(tmp_path, nodes=2)
    run_study(cfg)
    smaller = {**cfg, "space": {"nodes": 2, "archs": ["0_00", "1_11"]}, "tasks": {"probe": {"values": 3}}}
    run_study(smaller, rerun_changed=True)
    assert sorted(load_results(cfg["store"])["arch"]) == ["0_00", "1_11"]
    assert len(load_results(cfg["store"], include_stale=True)) == 27
    st = study_status(cfg["store"])
    assert st.total == 2 and st.stale == 25


def test_status_shows_interrupted_rows_when_no_run_is_alive(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _probe_study(tmp_path)
    run_study(cfg)
    con = sqlite3.connect(cfg["store"])
    con.execute("UPDATE tasks SET status='running' WHERE arch='1'")
    con.commit()
    con.close()
    st = study_status(cfg["store"])
    assert not st.live and st.interrupted == 1
    assert main(["status", cfg["store"]]) == 0
    out = capsys.readouterr().out
    assert "interrupted" in out and "resumable" in out
    with Store(cfg["store"]) as store, store.run_lock():
        assert study_status(cfg["store"]).live  # a live run holds the lock: its rows are really running


def test_a_dying_worker_fails_only_its_own_job(tmp_path: Path) -> None:
    cfg = {**_probe_study(tmp_path, nodes=2), "tasks": {"probe": {"crash": ["1_11"], "sleep": 0.05}},
           "executor": {"kind": "local", "n_workers": 2, "max_in_flight": 4}}
    summary = run_study(cfg)
    assert summary.failed == 1 and summary.complete == 26
    (key, line), = summary.failures
    assert key.arch == "1_11" and "worker process died while running this job" in line


def test_every_help_answers_without_importing_torch() -> None:
    code = textwrap.dedent("""
        import sys, time
        from trilemma.cli import build_parser
        for argv in %r:
            t0 = time.perf_counter()
            try:
                build_parser(argv).parse_args(argv)
            except SystemExit:
                pass
            assert "torch" not in sys.modules, (argv, "imported torch")
        print("ok")
    """)
    commands = [c for cmds in COMMAND_MODULES.values() for c in cmds]
    argvs = [[c, "--help"] for c in commands] + [["--help"], ["space", "show", "--help"], ["lesson", "run", "--help"],
                                                 ["nb201", "score", "--help"]]
    res = subprocess.run([sys.executable, "-c", code % (argvs,)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr
    # and each answers fast as a whole process
    for argv in (["run", "--help"], ["measures", "--help"], ["lesson", "--help"]):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "trilemma.cli", *argv], capture_output=True, timeout=60, check=True)
        assert time.perf_counter() - t0 < 2.0  # generous: a loaded CI machine; the import check above is strict


def test_nb201_options_are_validated(capsys: pytest.CaptureFixture[str]) -> None:
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    assert "--combined" in _one_error_line(capsys, ["nb201", "show", arch, "--combined", "bogus"])
    assert "--filter-fraction" in _one_error_line(capsys, ["nb201", "show", arch, "--filter-fraction", "-3"])


def test_json_export_of_the_plugin_study_is_valid(tmp_path: Path) -> None:
    cfg = _probe_study(tmp_path)
    run_study(cfg)
    data = json.loads(export_study(cfg["store"], "json", tmp_path / "x.json").read_text())
    assert set(data) == {"none"} and len(data["none"]) == 3


def test_a_device_the_machine_lacks_is_refused_before_running(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for machines without it")
    toml = tmp_path / "d.toml"
    toml.write_text(f'name = "d"\nstore = "{tmp_path}/d.sqlite"\n[space]\nnodes = 1\n[tasks.probe]\n'
                    '[executor]\nkind = "serial"\n')
    line = _one_error_line(capsys, ["run", str(toml), "--device", "cuda"])
    assert "no CUDA device is available" in line and not (tmp_path / "d.sqlite").exists()

"""Lesson registry, parameters, files written, the index page, CLI, and the constructions the lessons rely on."""

from __future__ import annotations

import argparse
import ast
import math
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from trilemma._outputs import output_kind_matches
from trilemma.commands.lessons import _parse_sets, add_commands
from trilemma.data import sawtooth_target
from trilemma.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError
from trilemma.lessons import (
    LESSON_MODULES,
    Check,
    LessonResult,
    get_lesson,
    lecture_order,
    list_lessons,
    run_lesson,
    run_lessons,
    write_output,
)
from trilemma.lessons._approximation import TARGET_LIPSCHITZ, rectangle_network, target_function
from trilemma.lessons._depth import shallow_width, tent_network
from trilemma.lessons._error_decomposition import _gd_and_erm
from trilemma.lessons._page import render_index
from trilemma.measures import count_linear_regions_exact, count_linear_regions_sampled

LESSONS = [
    "batch-size", "compression-bound", "depth-separation", "error-decomposition", "hetero-regression",
    "linear-regions", "loss-landscape", "normalization", "optimizers", "random-labels", "regularization",
    "residual-depth", "universal-approximation", "width-sweep",
]
SRC = Path(__file__).resolve().parents[1] / "src"


def test_all_lessons_registered():
    assert list_lessons() == LESSONS
    assert sorted(lecture_order()) == LESSONS and lecture_order()[0] == "error-decomposition"
    assert len(LESSON_MODULES) == len(LESSONS)
    for name in LESSONS:
        lesson = get_lesson(name)
        assert lesson.claim and lesson.references and "seed" in lesson.defaults
        assert set(lesson.quick) <= set(lesson.defaults)


def test_unknown_lesson_lists_names_and_closest_match():
    with pytest.raises(UnknownNameError, match="did you mean 'width-sweep'") as info:
        get_lesson("width-sweeps")
    assert "depth-separation" in str(info.value)


def test_parameter_overrides_are_validated():
    lesson = get_lesson("depth-separation")
    params = lesson.params(quick=True, ks=[1, 2], restarts=1)
    assert params["ks"] == (1, 2) and params["restarts"] == 1 and params["grid_bits"] == lesson.quick["grid_bits"]
    with pytest.raises(InvalidArgumentError, match="no parameter.*'depth'.*its parameters are"):
        lesson.params(depth=3)
    with pytest.raises(InvalidTypeError, match="'restarts' must be like its default"):
        lesson.params(restarts=1.5)
    with pytest.raises(InvalidTypeError, match="'ks'"):
        lesson.params(ks=(1, "2"))
    with pytest.raises(InvalidArgumentError, match="strictly increasing"):
        lesson.run(lesson.params(quick=True, ks=(3, 1)))


def test_run_lesson_writes_csv_figures_and_summary(tmp_path):
    res = run_lesson("hetero-regression", tmp_path / "out", quick=True, depths=(1, 3, 16), degrees=(1, 5, 20),
                     widths=(4,), seeds=1)
    assert res.supported == all(c.passed for c in res.checks)
    pd.testing.assert_frame_equal(pd.read_csv(res.csv_path), res.table, check_dtype=False)
    stems = {p.stem for p in res.figure_paths}
    assert {p.suffix for p in res.figure_paths} == {".png", ".svg"} and len(res.figure_paths) == 2 * len(stems)
    assert all(p.stat().st_size > 1000 for p in res.figure_paths)
    assert res.figure_paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = res.summary_path.read_text(encoding="utf-8")
    assert get_lesson("hetero-regression").claim in text
    assert ("**yes**" if res.supported else "**no**") in text
    for check in res.checks:
        assert check.name in text
    assert res.seconds > 0
    assert res.command in text
    parser = argparse.ArgumentParser(prog="trilemma")  # the re-run command parses back to the same run
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(shlex.split(res.command)[1:])
    assert args.name == "hetero-regression" and args.quick and args.out == str(tmp_path / "out")
    assert get_lesson(args.name).params(quick=True, **_parse_sets(args.set)) == res.params
    assert {f"hetero-regression_{k}" for k in res.figures} == stems
    assert all(png[:4] == b"\x89PNG" for png in res.figures.values())
    mode = 0o666 & ~_umask()
    for path in [res.csv_path, res.summary_path, *res.figure_paths]:  # the files get the usual permissions
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert not list((tmp_path / "out").glob(".*.tmp"))  # no temporary files left behind
    lesson = get_lesson("hetero-regression")
    again = lesson.run(lesson.params(quick=True, depths=(1, 3, 16), degrees=(1, 5, 20), widths=(4,), seeds=1))
    pd.testing.assert_frame_equal(again.table, res.table)  # seeded: same numbers


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_output_is_the_one_writer(tmp_path):
    path = write_output(tmp_path / "a.txt", "héllo")
    assert path.read_text(encoding="utf-8") == "héllo"
    write_output(path, b"\x00\x01")  # replaces the file
    assert path.read_bytes() == b"\x00\x01"
    with pytest.raises(InvalidTypeError, match="str or bytes"):
        write_output(tmp_path / "b.txt", 3)  # type: ignore[arg-type]
    (tmp_path / "folder").mkdir()
    with pytest.raises(InvalidArgumentError, match="a folder of that name exists"):
        write_output(tmp_path / "folder", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "folder"]
    # every file the lessons write goes through write_output: no other writer in the package
    writers = re.compile(r"\.write_text\(|\.write_bytes\(|\.savefig\([^)]*(path|\.png|\.svg)|open\([^)]*['\"]w|to_csv\((?![a-z_]+=|\))")
    for module in sorted((SRC / "trilemma" / "lessons").glob("*.py")):
        source = module.read_text(encoding="utf-8")
        inside = set()  # the lines of write_output itself
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef) and node.name == "write_output":
                inside.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        for number, line in enumerate(source.splitlines(), 1):
            if number not in inside:
                assert not writers.search(line), f"{module.name}:{number} writes a file outside write_output: {line}"


def _fake_result(tmp_path: Path, name: str, passed: bool) -> LessonResult:
    checks = [Check("first check", True, "1 < 2"), Check("second check <b>", passed, "3 ≥ 4 & so on")]
    return LessonResult(
        name=name, title=f"Title of {name}", claim="A claim.", supported=passed, checks=checks,
        table=pd.DataFrame({"a": [1]}), numbers={"x": 0.5}, params={"seed": 0, "ks": (1, 2)}, seconds=1.5,
        csv_path=tmp_path / f"{name}.csv", summary_path=tmp_path / f"{name}.md", figure_paths=[],
        figures={"fig": b"\x89PNG\r\n\x1a\nfake"}, notes=["a note"], references=("A paper.",), quick=True,
        command=f"trilemma lesson run {name} --out out --quick",
    )


def _written(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_index_page_shows_pass_fail_numbers_and_commands(tmp_path):
    good, bad = _fake_result(tmp_path, "good", True), _fake_result(tmp_path, "bad", False)
    page = render_index([good, bad], seconds=125.0, quick=True, command="trilemma lesson run all --out out --quick")
    assert page.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in page and "<script" not in page
    assert output_kind_matches(_written(tmp_path / "index.html", page), "html")  # recognised as a trilemma page
    assert "1 of 2 claims supported" in page and "2 min 5 s" in page
    assert page.count("<section class='lesson") == 2
    assert "id='lesson-good'" in page and "data-supported='false'" in page
    assert page.count("class='badge fail'>fail<") == 1 and page.count("class='badge pass'>pass<") == 3
    assert "NOT supported" in page and "3 ≥ 4 &amp; so on" in page and "second check &lt;b&gt;" in page
    assert page.count("data:image/png;base64,") == 2 and "http://" not in page and "https://" not in page
    assert "trilemma lesson run bad --out out --quick" in page and "id='rerun-all'" in page


def test_run_lessons_writes_every_lesson_and_the_index(tmp_path):
    names = ["error-decomposition", "depth-separation"]
    seen = []
    suite = run_lessons(tmp_path, names, quick=True, progress=lambda r: seen.append(r.name),
                        overrides={"error-decomposition": {"repeats": 1, "widths": (2, 8, 32, 128)},
                                   "depth-separation": {"ks": (1, 4), "restarts": 1, "iters": 50}})
    assert seen == names and [r.name for r in suite.results] == names
    assert suite.index_path == tmp_path / "index.html" and suite.seconds >= sum(r.seconds for r in suite.results)
    page = suite.index_path.read_text(encoding="utf-8")
    for r in suite.results:
        assert f"id='lesson-{r.name}'" in page and r.summary_path.exists()
        assert "--set" in r.command  # the overrides are part of each lesson's re-run command
    assert page.count("data:image/png;base64,") == sum(len(r.figures) for r in suite.results)
    assert suite.command == ""  # a subset with overrides is not 'run all'
    with pytest.raises(InvalidArgumentError, match="not run"):
        run_lessons(tmp_path, ["depth-separation"], overrides={"error-decomposition": {"repeats": 1}})
    with pytest.raises(UnknownNameError):
        run_lessons(tmp_path, ["no-such-lesson"])
    with pytest.raises(InvalidArgumentError, match="repeat"):
        run_lessons(tmp_path, ["depth-separation", "depth-separation"])


def test_lesson_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from trilemma.cli import build_parser\n"
        "for argv in (['lesson', '--help'], ['lesson', 'run', '--help'], ['lesson', 'list', '--help']):\n"
        "    try:\n"
        "        build_parser(argv).parse_args(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "import trilemma.lessons\n"
        "assert 'trilemma.lessons._base' not in sys.modules\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("NO-TORCH"), out
    assert "'all'" in out and "--quick" in out  # the help of 'lesson run' was printed


def test_cli_list_and_run(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="trilemma")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["lesson", "list"])
    assert args.func(args) == 0
    assert "depth-separation" in capsys.readouterr().out
    args = parser.parse_args(["lesson", "run", "error-decomposition", "--quick", "--out", str(tmp_path),
                              "--set", "repeats=2", "--set", "widths=(2, 8, 32, 128)"])
    code = args.func(args)
    out = capsys.readouterr().out
    assert "error-decomposition: claim" in out and (tmp_path / "error-decomposition.md").exists()
    assert code == (0 if "claim supported" in out else 1)
    args = parser.parse_args(["lesson", "run", "error-decomposition", "--set", "nope"])
    assert args.func(args) == 2
    args = parser.parse_args(["lesson", "run", "all", "--set", "seed=1"])
    assert args.func(args) == 2 and "applies to one lesson" in capsys.readouterr().out


def test_tent_network_has_exactly_2_to_the_k_pieces_and_zero_error():
    grid = torch.arange(2**12 + 1, dtype=torch.float64)[:, None] / 2**12
    ends = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    for k in range(1, 7):
        net = tent_network(k)
        assert sum(p.numel() for p in net.parameters()) == 7 * k
        assert count_linear_regions_exact(net, ends).count == 2**k
        assert count_linear_regions_sampled(net, ends, num_samples=2**12) == 2**k  # the slow reference
        with torch.no_grad():
            out = net(grid)[:, 0].numpy()
        assert (out == sawtooth_target(grid[:, 0].numpy(), k)).all()
    assert shallow_width(7 * 4) == 9 and 3 * shallow_width(28) + 1 == 28
    with pytest.raises(InvalidArgumentError):
        tent_network(0)


def test_rectangle_network_meets_its_error_bound():
    x = torch.linspace(0, 1, 5001, dtype=torch.float64)[:, None]
    for k in (1, 5, 40):
        net = rectangle_network(k, ramp=0.01)
        assert net[0].out_features == 4 * k
        with torch.no_grad():
            err = float((net(x) - target_function(x)).abs().max())
        assert err <= TARGET_LIPSCHITZ * (0.5 / k + 0.01 / k)
        mids = (torch.arange(k, dtype=torch.float64) + 0.5) / k  # inside a rectangle the net equals f(midpoint)
        with torch.no_grad():
            assert torch.allclose(net(mids[:, None])[:, 0], target_function(mids), atol=1e-12)
    with pytest.raises(InvalidArgumentError, match="ramp"):
        rectangle_network(3, ramp=2.0)


def test_closed_form_gradient_descent_matches_the_loop():
    rng = np.random.default_rng(0)
    phi = np.maximum(rng.standard_normal((50, 8)) @ rng.standard_normal((8, 12)), 0.0)  # rank ≤ 8 < 12 features
    y = rng.standard_normal(50)
    steps = [1, 7, 40, 300]
    erm, iterates = _gd_and_erm(phi, y, steps)
    lip = np.linalg.eigvalsh(phi.T @ phi / 50)[-1]
    w = np.zeros(12)
    for t in range(1, steps[-1] + 1):  # the slow, obvious reference: plain gradient descent from zero
        w -= (phi.T @ (phi @ w - y) / 50) / lip
        if t in steps:
            np.testing.assert_allclose(iterates[steps.index(t)], w, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(erm, np.linalg.pinv(phi) @ y, rtol=1e-8, atol=1e-10)  # minimum-norm least squares


def test_threads_are_restored_after_a_lesson():
    before = torch.get_num_threads()
    lesson = get_lesson("error-decomposition")
    lesson.run(lesson.params(quick=True, widths=(2, 8, 32, 128), repeats=1), threads=1)
    assert torch.get_num_threads() == before
    assert math.isfinite(before)


def test_lesson_loop_takes_the_trainers_sgd_steps():
    from trilemma.data import load_dataset
    from trilemma.lessons._fit import fit
    from trilemma.models import build_model
    from trilemma.training import TrainConfig, train

    ds = load_dataset("digits", max_train=200, max_test=50)
    a = build_model("2", ds.in_features, ds.num_classes, width=16, seed=3)
    b = build_model("2", ds.in_features, ds.num_classes, width=16, seed=3)
    hist = fit(a, ds.x_train, ds.y_train, optimizer="sgd", lr=0.05, epochs=3, batch_size=32, seed=5)
    train(b, ds, TrainConfig(epochs=3, batch_size=32, lr=0.05, seed=5, eval_every=0))  # the project's trainer
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7, msg=name)
    assert hist.epochs == [1, 2, 3] and hist.train_loss[-1] < hist.initial_train_loss
    stopped = fit(build_model("2", ds.in_features, ds.num_classes, width=64, seed=0), ds.x_train, ds.y_train,
                  optimizer="adam", lr=0.01, epochs=200, batch_size=32, stop_at_train_acc=1.0)
    assert stopped.stopped_early and stopped.train_acc[-1] == 1.0 and len(stopped.epochs) < 200
    with pytest.raises(InvalidArgumentError, match="optimizer must be one of"):
        fit(a, ds.x_train, ds.y_train, optimizer="lion")

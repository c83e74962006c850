"""Lesson registry, parameters, files written, CLI, and the constructions the lessons rely on."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import pytest
import torch

from trilemma.commands.lessons import add_commands
from trilemma.data import sawtooth_target
from trilemma.errors import InvalidArgumentError, InvalidTypeError, UnknownNameError
from trilemma.lessons import get_lesson, list_lessons, run_lesson
from trilemma.lessons._approximation import TARGET_LIPSCHITZ, rectangle_network, target_function
from trilemma.lessons._depth import shallow_width, tent_network
from trilemma.lessons._error_decomposition import _gd_and_erm
from trilemma.measures import count_linear_regions_exact, count_linear_regions_sampled

LESSONS = [
    "batch-size", "depth-separation", "error-decomposition", "hetero-regression", "normalization",
    "universal-approximation", "width-sweep",
]


def test_all_lessons_registered():
    assert list_lessons() == LESSONS
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
                     widths=(4,))
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
    lesson = get_lesson("hetero-regression")
    again = lesson.run(lesson.params(quick=True, depths=(1, 3, 16), degrees=(1, 5, 20), widths=(4,)))
    pd.testing.assert_frame_equal(again.table, res.table)  # seeded: same numbers


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

"""Every lesson, with reduced settings, supports its claim with its own numbers.

Each test runs the lesson's computation (no files) and asserts the lesson's checks plus the
specific facts the claim rests on, read from the lesson's table.
"""

from __future__ import annotations

import numpy as np

from trilemma.lessons import get_lesson


def _run(name, **overrides):
    lesson = get_lesson(name)
    out = lesson.run(lesson.params(quick=True, **overrides))
    failed = [f"{c.name}: {c.detail}" for c in out.checks if not c.passed]
    assert out.supported, f"{name}: failed checks {failed}"
    return out.table


def test_error_decomposition():
    t = _run("error-decomposition", repeats=2)
    w, s, b = (t[t.sweep == k] for k in ("width", "samples", "budget"))
    assert np.all(np.diff(w.approximation) <= 0)  # nested classes
    assert (t.estimation >= -1e-12).all()  # the best student minimizes the population risk
    assert np.allclose(t.approximation + t.estimation + t.optimization, t.excess)
    assert s.estimation.iloc[-1] < s.estimation.iloc[0] and b.optimization.iloc[0] > 10 * abs(b.optimization.iloc[-1])


def test_universal_approximation():
    t = _run("universal-approximation")
    assert (t.constructed_sup <= t.bound_sup).all()
    assert t.trained_rms.iloc[-1] < t.trained_rms.iloc[0]


def test_depth_separation():
    t = _run("depth-separation")
    assert (t.deep_pieces == 2 ** t.k).all()  # exact counts
    assert (t.deep_max_error == 0.0).all()  # the deep narrow net is exact
    assert (abs(t.shallow_params - t.deep_params) <= 2).all()  # same parameter budget (up to rounding)
    last = t.iloc[-1]
    assert last.shallow_pieces < 2 ** last.k and last.shallow_rms > 0.1  # the shallow net keeps a clear error


def test_hetero_regression():
    t = _run("hetero-regression")
    poly = t[t.family == "polynomial"]
    assert poly.test_mse.min() < poly.test_mse.iloc[-1] and poly.train_mse.iloc[-1] < poly.train_mse.iloc[0]


def test_width_sweep():
    t = _run("width-sweep", capacity_measures=True)
    assert t.test_acc.iloc[-1] >= t.test_acc.iloc[0]
    assert t.train_acc.iloc[-1] >= 0.99
    assert t.path_norm.notna().all() and (t.distance_to_init > 0).all()  # the capacity measures were recorded


def test_batch_size():
    t = _run("batch-size")
    assert t.sharpness.iloc[-1] > t.sharpness.iloc[0]


def test_normalization():
    t = _run("normalization").set_index("normalization")
    for norm in ("batchnorm", "layernorm"):
        assert t.loc[norm, "epochs_to_target_or_budget"] < t.loc["none", "epochs_to_target_or_budget"]

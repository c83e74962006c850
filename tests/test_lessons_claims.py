"""Every lesson, with reduced settings, supports its claim with its own numbers.

Each test runs the lesson's computation (no files) and asserts the lesson's checks plus the
specific facts the claim rests on, read from the lesson's table. For the newer lessons a
second run with settings under which the claim does not hold shows that the checks can fail.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure

from trilemma.lessons import get_lesson


def _output(name, **overrides):
    lesson = get_lesson(name)
    return lesson.run(lesson.params(quick=True, **overrides))


def _run(name, draw=False, **overrides):
    out = _output(name, **overrides)
    failed = [f"{c.name}: {c.detail}" for c in out.checks if not c.passed]
    assert out.supported, f"{name}: failed checks {failed}"
    if draw:  # the figures are drawn from the same numbers (cheap: no file is written)
        for fill in out.figures.values():
            fill(Figure())
    return out.table


def _failed(name, **overrides):
    """Names of the checks that fail under ``overrides``."""
    return [c.name for c in _output(name, **overrides).checks if not c.passed]


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
    assert sorted(t.seed.unique()) == [0, 1]  # the MLP claim is checked on several data seeds
    poly = t[(t.family == "polynomial") & (t.seed == 0)]
    assert poly.test_mse.min() < poly.test_mse.iloc[-1] and poly.train_mse.iloc[-1] < poly.train_mse.iloc[0]
    for seed in (0, 1):
        mlp = t[(t.family == "mlp") & (t.seed == seed)]
        assert mlp.test_mse.iloc[-1] <= 1.25 * mlp.test_mse.min()  # wider does not overfit


def test_width_sweep():
    t = _run("width-sweep", capacity_measures=True)
    assert t.test_acc.iloc[-1] >= t.test_acc.iloc[0]
    assert t.train_acc.iloc[-1] >= 0.99
    assert t.path_norm.notna().all() and (t.distance_to_init > 0).all()  # the capacity measures were recorded


def test_batch_size():
    t = _run("batch-size")
    assert t.sharpness.iloc[-1] > t.sharpness.iloc[0]


def test_normalization():
    t = _run("normalization", draw=True, depth=4, width=32, lrs=(0.3, 3.0)).set_index("normalization")
    assert t.reached_all_seeds.all()  # the plain He-initialized baseline trains, and so does weight normalization
    assert t.loc["batchnorm", "epochs_to_target"] < t.loc["none", "epochs_to_target"]
    assert t.loc["batchnorm", "largest_stable_lr"] >= 3 * t.loc["none", "largest_stable_lr"]
    # one learning rate only: nothing shows BatchNorm's larger stable range, and the check says so
    failed = _failed("normalization", depth=4, width=32, epochs=2, lrs=(0.3,))
    assert "BatchNorm trains stably at learning rates at least 3× larger than the plain network's largest" in failed


def test_random_labels():
    t = _run("random-labels", draw=True, max_train=150, mlp_width=64, cnn_channels=4).set_index(
        ["arch", "corruption"])
    for arch in ("mlp", "cnn"):
        assert t.loc[(arch, 1.0), "train_acc"] >= 0.99  # the shuffled labels are memorized
        assert t.loc[(arch, 1.0), "test_acc"] <= 0.2 < 0.8 < t.loc[(arch, 0.0), "test_acc"]
        assert t.loc[(arch, 1.0), "epochs_to_fit"] > t.loc[(arch, 0.0), "epochs_to_fit"]
    # a budget too small to memorize: the shuffled-label run stays near chance on the training set, and it fails
    failed = _failed("random-labels", archs=("mlp",), max_train=150, mlp_width=64, epochs=2)
    assert failed[0].startswith("mlp: fits the training labels")


def test_compression_bound():
    t = _run("compression-bound", draw=True, widths=(32, 256), epochs=15, ranks=(1, 2, 4, 8, 16), bits=(3, 4),
             param_bits=(2, 3, 4, 8))
    assert (t.compression_bound < t.param_count_bound).all() and (t.compression_bound < t.spectral_term).all()
    assert (t.compressed_train_error <= t.train_error + 0.02 + 1e-12).all()  # within the measured error budget
    assert t.param_count_bound.iloc[-1] / t.param_count_bound.iloc[0] > t.compression_bound.iloc[-1] / \
        t.compression_bound.iloc[0]
    m = 1437  # the bound is the finite-class bound of the compressed net's description length
    for r in t.itertuples():
        settings = 5 * 2
        expected = r.compressed_train_error + math.sqrt((r.description_bits * math.log(2) + math.log(settings / 0.05))
                                                        / (2 * m))
        assert math.isclose(r.compression_bound, expected, rel_tol=1e-12)


def test_residual_depth():
    t = _run("residual-depth", draw=True, depths=(2, 40), epochs=3)
    plain, res = t[t.kind == "plain"].set_index("depth"), t[t.kind == "residual"].set_index("depth")
    assert plain.loc[40, "train_loss"] > 0.8 * plain.loc[40, "initial_loss"]  # the deep plain net barely moves
    assert res.loc[40, "train_loss"] < 0.3 * res.loc[40, "initial_loss"]  # the residual one trains
    # shallow nets only: plain nets do not stop training, and the check says so
    assert "plain networks stop training beyond some depth" in _failed("residual-depth", depths=(2, 4), epochs=3)[0]


def test_loss_landscape():
    t = _run("loss-landscape", draw=True, depth=4, directions=3, grid=5, large_batch=256, batch_width=64).set_index(
        "solution")
    assert t.loc["no skip", "sharpness"] > 2 * t.loc["skip", "sharpness"]
    assert t.loc["large batch", "sharpness"] > 2 * t.loc["small batch", "sharpness"]
    assert (t.train_acc == 1.0).all()


def test_filter_normalized_direction_matches_rows_and_zeroes_biases():
    from trilemma.lessons._landscape import filter_normalized_direction, loss_slice
    from trilemma.lessons._residual import DeepMLP

    model = DeepMLP(5, 3, 7, 2, residual=True, seed=0)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    d = filter_normalized_direction(params, torch.Generator().manual_seed(0))
    for k, v in params.items():
        if v.dim() == 1:
            assert (d[k] == 0).all()
        else:
            torch.testing.assert_close(d[k].norm(dim=1), v.norm(dim=1))
    x, y = torch.randn(9, 5), torch.randint(0, 3, (9,))
    losses = loss_slice(model, params, [d], np.array([[0.0], [0.5]]), x, y)
    with torch.no_grad():  # the slow, obvious reference: move the module's weights and evaluate
        ref0 = float(torch.nn.functional.cross_entropy(model(x), y))
        for k, p in model.named_parameters():
            p.add_(0.5 * d[k])
        ref1 = float(torch.nn.functional.cross_entropy(model(x), y))
    np.testing.assert_allclose(losses, [ref0, ref1], rtol=1e-6)


def test_optimizers():
    t = _run("optimizers", draw=True, kappas=(10.0, 100.0, 1000.0), adaptive_max_iter=300, mlp_epochs=2)
    quad = t[t.problem == "quadratic"]
    gd = quad[quad.method == "gd"].iterations.to_numpy()
    hb = quad[quad.method == "heavy_ball"].iterations.to_numpy()
    assert (hb[1:] < gd[1:]).all() and gd[-1] / gd[0] > 50 and hb[-1] / hb[0] < 20


def test_linear_momentum_methods_match_their_contraction_rates():
    from trilemma.lessons._optimizers import iterations_linear

    lam = np.array([0.01, 1.0])  # κ = 100; a start on the slowest eigenvector shows the exact rate
    x0 = np.array([1.0, 0.0])
    rho = (100 - 1) / (100 + 1)  # gradient descent with step 2/(L+μ): f shrinks by ρ² per step
    assert iterations_linear("gd", lam, x0, 1e-6, 10**6) == math.ceil(math.log(1e-6) / (2 * math.log(rho)))
    assert iterations_linear("heavy_ball", lam, x0, 1e-6, 10**6) < iterations_linear("gd", lam, x0, 1e-6, 10**6) / 3


def test_regularization():
    t = _run("regularization", draw=True, epochs=60, width=256).set_index("method")
    for method in ("dropout", "weight decay", "early stopping", "snapshot ensemble"):
        assert t.loc[method, "test_loss"] < t.loc["none", "test_loss"]
    assert t.loc["early stopping", "epoch"] < 60
    # stopped before it could memorize: no overfitting, and the first check says so
    assert _failed("regularization", epochs=4, snapshots=2, width=64)[0].startswith("the unregularized network overfits")


def test_linear_regions():
    t = _run("linear-regions", draw=True, grid=300, random_seeds=1, samples_1d=20000).set_index("architecture")
    assert list(t.construction_1d_exact) == [20, 100, 625]  # units^layers, counted exactly
    assert (t.loc[["2×10", "4×5"], "construction_2d_grid"] > 211).all()  # more than any 20-unit layer can have
    assert t.loc["1×20", "construction_2d_grid"] <= 211

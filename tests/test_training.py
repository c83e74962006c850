"""trilemma.training: config, the one-model trainer, and the curve metrics (vs slow references)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trilemma.data import load_dataset
from trilemma.errors import ConfigError, InvalidArgumentError, InvalidTypeError
from trilemma.models import build_model
from trilemma.training import (
    TrainConfig,
    TrainResult,
    accuracy_metric_name,
    convergence_epoch,
    count_ties,
    curve_metrics,
    epochs_to_accuracy,
    expressivity,
    generalization_gap,
    last_window_gap,
    last_window_loss,
    lr_at,
    parse_accuracy_metric,
    steps_to_accuracy,
    train,
    train_cell,
)


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """Tiny models: intra-op threads only add overhead (and stall on a busy machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --------------------------------------------------------------------------- config
def test_defaults_are_the_papers_protocol() -> None:
    c = TrainConfig()
    assert (c.optimizer, c.momentum, c.weight_decay, c.batch_size, c.schedule) == ("sgd", 0.0, 0.0, 128, "constant")
    assert c.resolved_loss("classification") == "cross_entropy"
    assert c.resolved_loss("regression") == "mse"


def test_config_validation_and_round_trip() -> None:
    with pytest.raises(InvalidArgumentError, match=r"TrainConfig.lr must be a finite number in \(0"):
        TrainConfig(lr=0)
    with pytest.raises(InvalidArgumentError, match="optimizer must be one of"):
        TrainConfig(optimizer="rmsprop")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="epochs must be an int"):
        TrainConfig(epochs=2.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="needs a classification dataset"):
        TrainConfig(loss="cross_entropy").resolved_loss("regression")
    with pytest.raises(ConfigError, match="unknown training option 'momentun'; did you mean 'momentum'"):
        TrainConfig.from_dict({"momentun": 0.9})
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        TrainConfig.from_dict({"batch_size": 0})
    c = TrainConfig(momentum=0.9, dtype=torch.float64, schedule="cosine")  # type: ignore[arg-type]
    assert c.dtype == "float64" and c.torch_dtype is torch.float64
    assert TrainConfig.from_dict(c.to_dict()) == c


def test_lr_schedules() -> None:
    assert lr_at(TrainConfig(lr=0.3), 57) == 0.3
    step = TrainConfig(lr=1.0, schedule="step", step_size=10, gamma=0.5)
    assert [lr_at(step, e) for e in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    cos = TrainConfig(lr=1.0, schedule="cosine", epochs=10, min_lr=0.1)
    assert lr_at(cos, 0) == 1.0 and math.isclose(lr_at(cos, 5), 0.55)


# --------------------------------------------------------------------------- trainer
@pytest.fixture(scope="module")
def small() -> object:
    return load_dataset("digits", max_train=256, max_test=100)


def test_train_is_seeded_and_learns(small: object) -> None:
    config = TrainConfig(epochs=5, batch_size=32, seed=3)
    a = train_cell("2_22_221", small, config, width=16, seed=3)  # type: ignore[arg-type]
    b = train_cell("2_22_221", small, config, width=16, seed=3)  # type: ignore[arg-type]
    c = train_cell("2_22_221", small, config, width=16, seed=4)  # type: ignore[arg-type]
    assert a.train_loss == b.train_loss and a.test_acc == b.test_acc  # deterministic on CPU
    assert a.train_loss != c.train_loss
    assert a.status == "completed" and a.epochs == 5 and a.eval_epochs == [1, 2, 3, 4, 5]
    assert a.train_loss[-1] < 0.5 * a.train_loss[0]
    assert a.train_acc[-1] > 0.8  # type: ignore[index]
    assert a.loss == "cross_entropy" and a.lr == [0.1] * 5
    record = json.loads(json.dumps(a.to_dict()))  # plain JSON for the result store
    assert record["train_loss"] == a.train_loss and record["config"]["seed"] == 3


def test_running_loss_is_mean_over_minibatches(small: object) -> None:
    """With lr tiny the weights barely move: the running loss equals a full pass at init."""
    model = build_model("2_02_002", 64, 10, 16, seed=0, dtype=torch.float64)
    from trilemma.training import evaluate

    x, y = small.x_train.double(), small.y_train  # type: ignore[attr-defined]
    init_loss, _ = evaluate(model, x, y, "cross_entropy")
    r = train(model, small, TrainConfig(epochs=1, lr=1e-12, batch_size=50, dtype="float64", eval_every=0))  # type: ignore[arg-type]
    assert math.isclose(r.train_loss[0], init_loss, rel_tol=1e-9)
    assert r.test_loss == [] and r.eval_epochs == []


def test_divergence_is_recorded_not_raised(small: object) -> None:
    std = load_dataset("digits", normalize="standardize", max_train=256, max_test=64)
    r = train_cell("2_21_112", std, TrainConfig(epochs=3, batch_size=64, lr=10.0, dtype="float64"), width=16,
                   seed=0)
    assert r.status == "diverged" and r.diverged_epoch == 2 and r.epochs == 1
    assert len(r.train_loss) == 1 and all(np.isfinite(r.train_loss))
    assert curve_metrics(r).convergence_epoch is None


def test_regression_and_bad_tasks(tmp_path: object) -> None:
    saw = load_dataset("sawtooth", k=2, n_samples=200)
    r = train_cell("1_22_221", saw, TrainConfig(epochs=3, batch_size=32, lr=0.05), width=16, seed=0)
    assert r.loss == "mse" and r.train_acc is None and r.test_acc is None and len(r.test_loss) == 3
    with pytest.raises(InvalidArgumentError, match="needs a classification dataset"):
        train_cell("1_22_221", saw, TrainConfig(loss="cross_entropy"), width=8)
    np.savez(tmp_path / "u.npz", images=np.zeros((4, 32, 32, 3), dtype=np.uint8))  # type: ignore[operator]
    unl = load_dataset("cifar10_unlabeled", path=str(tmp_path / "u.npz"))  # type: ignore[operator]
    with pytest.raises(InvalidArgumentError, match="cannot train on an unlabeled dataset"):
        train_cell("1_22_221", unl, width=8)
    with pytest.raises(InvalidTypeError, match="trilemma.data.Dataset"):
        train(build_model("2_02_002", 1, 1, 4), (torch.zeros(3, 1), torch.zeros(3)))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- curve metrics: references
def ref_convergence_epoch(losses: list[float], eps: float, window: int, patience: int, min_epoch: int) -> int | None:
    """Literal reading of the papers' plateau rule with 1-based epochs, by loops."""
    T = len(losses)

    def ma(e: int) -> float:  # moving mean ending at epoch e
        return sum(losses[e - window : e]) / window

    for e in range(max(min_epoch, window + 1), T + 1):
        if e + patience - 1 > T:
            return None
        if all(abs(ma(q) - ma(q - 1)) < eps for q in range(e, e + patience)):
            return e
    return None


def ref_epochs_to_accuracy(acc: list[float], threshold: float) -> int | None:
    for i, a in enumerate(acc):
        if a >= threshold:
            return i + 1
    return None


def test_convergence_epoch_by_hand() -> None:
    flat = [1.0] * 25
    assert convergence_epoch(flat) == 11  # first change exists at epoch window + 1
    assert convergence_epoch(flat, min_epoch=15) == 15
    assert convergence_epoch([1.0] * 19) is None  # too short for 10 + 10 epochs
    decay = [math.exp(-0.3 * e) for e in range(60)]
    e = convergence_epoch(decay, eps=1e-3)
    assert e is not None and ref_convergence_epoch(decay, 1e-3, 10, 10, 1) == e
    never = [1.0 - 0.01 * e for e in range(50)]  # moving mean changes by 0.01 every epoch
    assert convergence_epoch(never, eps=1e-3) is None
    with pytest.raises(InvalidArgumentError, match="must be finite; epoch 2"):
        convergence_epoch([1.0, float("nan")] * 20)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.floats(0.0, 0.02), min_size=1, max_size=60),
    eps=st.sampled_from([1e-3, 5e-3, 1e-2]),
    window=st.integers(1, 6),
    patience=st.integers(1, 6),
    min_epoch=st.integers(1, 30),
)
def test_convergence_epoch_matches_reference(steps: list[float], eps: float, window: int, patience: int,
                                             min_epoch: int) -> None:
    losses = list(1.0 - np.cumsum(steps))
    # A moving-mean change within round-off of eps is decided by summation order, which the
    # two implementations do not share; such ties say nothing about the rule itself.
    ma = [sum(losses[e - window : e]) / window for e in range(window, len(losses) + 1)]
    assume(all(abs(abs(b - a) - eps) > 1e-9 for a, b in zip(ma, ma[1:])))
    assert convergence_epoch(losses, eps, window, patience, min_epoch) == ref_convergence_epoch(
        losses, eps, window, patience, min_epoch)


@settings(max_examples=100, deadline=None)
@given(acc=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40), threshold=st.floats(0.0, 1.0))
def test_epochs_to_accuracy_matches_reference(acc: list[float], threshold: float) -> None:
    assert epochs_to_accuracy(acc, threshold) == ref_epochs_to_accuracy(acc, threshold)


def test_expressivity_and_gap() -> None:
    losses = [5.0, 4.0, 3.0, 2.0, 1.0]
    assert expressivity(losses, 2, span=2) == 3.5  # epochs 2 and 3
    assert expressivity(losses, 4, span=10) == 1.5  # truncated at the end of the run
    assert expressivity(losses, None) is None
    assert generalization_gap(losses, [6.0, 5.5, 4.0, 3.0, 2.5], 3) == 1.0
    assert generalization_gap(losses, [9.0, 7.0], 4, eval_epochs=[2, 4]) == 5.0
    with pytest.raises(InvalidArgumentError, match="not evaluated at epoch 3"):
        generalization_gap(losses, [9.0, 7.0], 3, eval_epochs=[2, 4])
    assert epochs_to_accuracy([0.1, 0.49, 0.5, 0.9]) == 3 and epochs_to_accuracy([0.1]) is None


def test_curve_metrics_of_a_result(small: object) -> None:
    r = train_cell("1_22_221", small, TrainConfig(epochs=25, batch_size=64, lr=0.5), width=16, seed=0)  # type: ignore[arg-type]
    m = curve_metrics(r, eps=0.05)
    e = convergence_epoch(r.train_loss, eps=0.05)
    assert m.convergence_epoch == e
    if e is not None:
        assert m.expressivity == pytest.approx(np.mean(r.train_loss[e - 1 : e + 9]))
        assert m.generalization_gap == pytest.approx(r.test_loss[e - 1] - r.train_loss[e - 1])
    assert m.epochs_to_accuracy == epochs_to_accuracy(r.train_acc)  # type: ignore[arg-type]
    assert m.final_test_acc == r.test_acc[-1]  # type: ignore[index]


# --------------------------------------------------------------------------- accuracy metrics: names
def test_accuracy_metric_name_follows_the_threshold() -> None:
    assert accuracy_metric_name() == "epochs_to_50"  # the papers' ground truth
    assert accuracy_metric_name(0.6) == "epochs_to_60" and accuracy_metric_name(0.6, "step") == "steps_to_60"
    assert accuracy_metric_name(1.0) == "epochs_to_100" and accuracy_metric_name(0.555) == "epochs_to_55p5"
    assert parse_accuracy_metric("steps_to_60") == ("step", 0.6)
    assert parse_accuracy_metric("epochs_to_55p5") == ("epoch", 0.555)
    assert parse_accuracy_metric("convergence_epoch") is None and parse_accuracy_metric("epochs_to_150") is None
    with pytest.raises(InvalidArgumentError, match=r"threshold must be a number in \[0, 1\], got 1.5"):
        accuracy_metric_name(1.5)
    with pytest.raises(InvalidArgumentError, match="resolution must be one of"):
        accuracy_metric_name(0.5, "batch")  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(pct=st.integers(0, 100000), resolution=st.sampled_from(["epoch", "step"]))
def test_accuracy_metric_name_round_trips(pct: int, resolution: str) -> None:
    thr = pct / 100000
    name = accuracy_metric_name(thr, resolution)  # type: ignore[arg-type]
    assert parse_accuracy_metric(name) == (resolution, pytest.approx(thr, abs=1e-9))


# --------------------------------------------------------------------------- steps_to_<pct>
def ref_steps_to_accuracy(correct: list[list[int]], rows: list[int], threshold: float) -> float | None:
    """The definition by loops: after every global step with a full one-epoch window."""
    S, n = len(rows), sum(rows)
    flat = [c for epoch in correct for c in epoch]
    for t in range(S, len(flat) + 1):  # t = 1-based global step
        if sum(flat[t - S : t]) / n >= threshold:
            epoch, step = (t - 1) // S + 1, (t - 1) % S + 1
            return epoch - 1 + sum(rows[:step]) / n
    return None


def test_steps_to_accuracy_by_hand() -> None:
    rows = [4, 4, 2]  # n = 10 samples per epoch, the last step smaller
    correct = [[1, 1, 0], [2, 3, 2], [4, 4, 2]]  # epoch accuracies 0.2, 0.7, 1.0
    assert epochs_to_accuracy([0.2, 0.7, 1.0]) == 2
    # window sums after global steps 3..9: 2, 3, 5, 7, 9, 10, 10 (of 10 samples)
    assert steps_to_accuracy(correct, rows, 0.5) == pytest.approx(1.8)  # step 2 of epoch 2: 1 + 8/10
    assert steps_to_accuracy(correct, rows, 0.7) == pytest.approx(2.0)  # exactly at the epoch's end
    assert steps_to_accuracy(correct, rows, 0.2) == 1.0  # a crossing in the first epoch reads 1.0
    assert steps_to_accuracy(correct, rows, 1.0) == pytest.approx(2.8)  # before the epoch's end
    assert steps_to_accuracy([], rows, 0.5) is None
    with pytest.raises(InvalidArgumentError, match=r"shape \(epochs, 3\)"):
        steps_to_accuracy([[1, 2]], rows, 0.5)
    with pytest.raises(InvalidArgumentError, match="between 0 and the rows"):
        steps_to_accuracy([[5, 0, 0]], rows, 0.5)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), rows=st.lists(st.integers(1, 6), min_size=1, max_size=5), epochs=st.integers(0, 6),
       threshold=st.floats(0.0, 1.0))
def test_steps_to_accuracy_matches_reference(data: st.DataObject, rows: list[int], epochs: int,
                                             threshold: float) -> None:
    correct = [[data.draw(st.integers(0, r)) for r in rows] for _ in range(epochs)]
    got = steps_to_accuracy(correct, rows, threshold)
    want = ref_steps_to_accuracy(correct, rows, threshold)
    assert (got is None) == (want is None) and (got is None or got == pytest.approx(want, abs=1e-12))
    acc = [sum(c) / sum(rows) for c in correct]
    e = epochs_to_accuracy(acc, threshold) if acc else None
    if e is not None:  # the window at an epoch's end is that epoch: never later than epochs_to
        assert got is not None and 1.0 <= got <= e


# --------------------------------------------------------------------------- ties
def test_count_ties() -> None:
    t = count_ties([35, 35, 35, 12, 40, 40, None, 7])
    assert (t.n, t.missing, t.distinct, t.largest, t.mode, t.tied) == (7, 1, 4, 3, 35.0, 5)
    assert count_ties([1.5, 2.5]).tied == 0 and count_ties([2, 1, 2, 1]).mode == 1.0  # smallest of equal groups
    assert count_ties([None]).as_dict() == {"n": 0, "missing": 1, "distinct": 0, "largest": 0, "mode": None,
                                            "tied": 0}
    with pytest.raises(InvalidArgumentError, match="finite or None, got nan"):
        count_ties([1.0, float("nan")])


# --------------------------------------------------------------------------- runs that never plateau
def _result(losses: list[float], tests: list[float], evals: list[int], acc: list[float] | None = None,
            status: str = "completed") -> TrainResult:
    return TrainResult(status=status, epochs=len(losses), train_loss=losses, train_acc=acc, eval_epochs=evals,
                       test_loss=tests, test_acc=None, lr=[0.1] * len(losses), config=TrainConfig(),
                       loss="cross_entropy", num_params=1, wall_time=0.0)


def test_last_window_loss_and_gap() -> None:
    losses = [5.0, 4.0, 3.0, 2.0, 1.0]
    assert last_window_loss(losses, span=2) == 1.5 and last_window_loss(losses, span=10) == 3.0
    tests = [6.0, 5.5, 4.0, 3.0, 2.5]
    assert last_window_gap(losses, tests, span=2) == pytest.approx(1.25)  # (1.0 + 1.5) / 2
    assert last_window_gap(losses, [9.0, 7.0], [2, 3], span=2) == 4.0  # only epoch 3 lies in the window
    assert last_window_gap(losses, [9.0], [2], span=2) == 5.0  # none in the window: the last evaluated
    assert last_window_gap(losses, [], [], span=2) is None


def test_curve_metrics_flag_runs_that_never_plateau() -> None:
    """A run without a plateau keeps an expressivity and a gap (last window) and converged=False."""
    never = [2.0 - 0.05 * e for e in range(30)]  # the moving mean moves by 0.05 every epoch
    tests = [x + 0.3 + 0.01 * e for e, x in enumerate(never)]
    m = curve_metrics(_result(never, tests, list(range(1, 31)), acc=[0.02 * e for e in range(30)]), span=10)
    assert m.convergence_epoch is None and m.converged is False
    assert m.expressivity == pytest.approx(np.mean(never[-10:]))
    assert m.generalization_gap == pytest.approx(np.mean([0.3 + 0.01 * e for e in range(20, 30)]))
    assert m.epochs_to_accuracy == 26 and m.steps_to_accuracy is None  # no per-step counts in this result
    d = curve_metrics(_result(never, tests, list(range(1, 31)), acc=[0.02 * e for e in range(30)]),
                      threshold=0.4).as_dict()
    assert d["converged"] is False and d["epochs_to_40"] == 21 and "steps_to_40" in d and "epochs_to_50" not in d
    assert all(v is None or np.isfinite(v) for v in d.values())
    # converged: today's definitions
    flat = [1.0] * 30
    c = curve_metrics(_result(flat, [1.5] * 30, list(range(1, 31))))
    assert c.converged and c.convergence_epoch == 11 and c.expressivity == 1.0 and c.generalization_gap == 0.5
    # diverged: no converged loss exists
    dv = curve_metrics(_result(never[:5], tests[:5], [1, 2, 3, 4, 5], status="diverged"))
    assert dv.converged is False and dv.expressivity is None and dv.generalization_gap is None


def test_trainer_records_per_step_counts(small: object) -> None:
    config = TrainConfig(epochs=3, batch_size=100, lr=0.5)  # 256 samples: steps of 100, 100, 56
    r = train_cell("1_22_221", small, config, width=16, seed=0)  # type: ignore[arg-type]
    assert r.step_rows == [100, 100, 56] and len(r.train_step_correct) == 3  # type: ignore[arg-type]
    assert [sum(c) / 256 for c in r.train_step_correct] == r.train_acc  # type: ignore[union-attr]
    m = curve_metrics(r, threshold=0.3)
    assert m.steps_to_accuracy == steps_to_accuracy(r.train_step_correct, r.step_rows, 0.3)  # type: ignore[arg-type]
    assert m.epochs_to_accuracy is not None and m.steps_to_accuracy <= m.epochs_to_accuracy  # type: ignore[operator]
    record = json.loads(json.dumps(r.to_dict()))
    assert record["train_step_correct"] == r.train_step_correct
    saw = load_dataset("sawtooth", k=2, n_samples=100)
    reg = train_cell("1_22_221", saw, TrainConfig(epochs=1, batch_size=32), width=8, seed=0)
    assert reg.train_step_correct is None and reg.step_rows == [32, 32, 16]

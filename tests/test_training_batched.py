"""train_batched against its reference: every model trained alone with train_cell."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trilemma.data import load_dataset
from trilemma.errors import InvalidArgumentError
from trilemma.training import EpochRecord, TrainConfig, curve_metrics, train_batched, train_cell

# skip edges, a dead node (0_10_222: node 1 has no input), the chain, the best single net
CELLS = ["2_21_112", "2_02_002", "1_01_222", "2_22_221", "0_10_222", "1_22_221", "2_12_122"]
SEEDS = [0, 1, 2, 0, 1, 2, 3]
# every available device; CUDA runs skip with the reason on machines without one
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False")),
]



@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """Tiny models: intra-op threads only add overhead (and stall on a busy machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def digits() -> object:
    return load_dataset("digits", max_train=200, max_test=60)


def _rel(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    assert x.shape == y.shape
    return float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-300))) if x.size else 0.0


def _assert_same(batched: list, cells: list[str], seeds: list[int], dataset: object, config: TrainConfig,
                 tol: float = 1e-6, **kw: object) -> None:
    for spec, seed, rb in zip(cells, seeds, batched):
        r1 = train_cell(spec, dataset, config, seed=seed, keep_weights=True, **kw)  # type: ignore[arg-type]
        assert rb.spec == spec and rb.seed == seed and rb.num_params == r1.num_params
        assert (rb.status, rb.epochs, rb.diverged_epoch) == (r1.status, r1.epochs, r1.diverged_epoch)
        assert _rel(rb.train_loss, r1.train_loss) < tol, spec
        assert _rel(rb.test_loss, r1.test_loss) < tol, spec
        assert rb.eval_epochs == r1.eval_epochs
        if r1.train_acc is not None:
            assert rb.train_acc == r1.train_acc and rb.test_acc == r1.test_acc
            # the sub-epoch crossing: the same per-step counts, hence the same steps_to_<pct>
            assert rb.train_step_correct == r1.train_step_correct and rb.step_rows == r1.step_rows
            for thr in (0.2, 0.5):
                mb, m1 = curve_metrics(rb, threshold=thr), curve_metrics(r1, threshold=thr)
                assert (mb.steps_to_accuracy, mb.epochs_to_accuracy) == (m1.steps_to_accuracy, m1.epochs_to_accuracy)
        if r1.status == "completed":
            for key, value in r1.final_state.items():  # type: ignore[union-attr]
                torch.testing.assert_close(rb.final_state[key], value, rtol=tol, atol=1e-9)  # type: ignore[index]


@pytest.fixture(autouse=True)
def _poisoned_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Work buffers start as NaN: reading an element that was never written fails the tests."""
    from trilemma.training import _batched

    monkeypatch.setattr(_batched, "_POISON_BUFFERS", True)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_equals_one_by_one_papers_protocol(digits: object, device: str) -> None:
    """Acceptance: same seeds -> per-epoch losses agree within 1e-6 relative in float64."""
    config = TrainConfig(epochs=3, batch_size=64, dtype="float64", device=device)
    # chunks of 3 split the runs of models; mixed seeds exercise per-model batch orders
    threads = torch.get_num_threads()
    batched = train_batched(CELLS, digits, config, width=16, seeds=SEEDS, chunk_size=3,  # type: ignore[arg-type]
                            workers=2, keep_weights=True)
    assert torch.get_num_threads() == threads  # restored after the worker threads
    _assert_same(batched, CELLS, SEEDS, digits, config, width=16)
    crossings = [curve_metrics(r, threshold=0.2).steps_to_accuracy for r in batched]
    assert any(c is not None and c != int(c) for c in crossings)  # sub-epoch crossings were compared
    facts = batched[0].metadata["batched"]
    assert facts["fused_sgd"] is True and facts["workers"] == 2 and facts["chunks"] == 3
    assert facts["device"] == str(torch.device(device)) and batched[0].config.device == facts["device"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("changes", "init", "bias"), [
    ({"momentum": 0.9, "weight_decay": 1e-3}, "he", True),
    ({"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4}, "ntk", False),
    ({"loss": "mse", "schedule": "cosine"}, "ntk", True),
    ({"schedule": "step", "step_size": 1, "full_train_eval": True, "eval_every": 2}, "he", False),
])
def test_batched_equals_one_by_one_options(digits: object, changes: dict, init: str, bias: bool,
                                           device: str) -> None:
    config = TrainConfig(epochs=3, batch_size=64, dtype="float64", device=device, **changes)
    cells, seeds = CELLS[:5], [5, 5, 5, 6, 6]
    batched = train_batched(cells, digits, config, width=8, seeds=seeds, init=init, bias=bias,  # type: ignore[arg-type]
                            chunk_size=2, workers=2, keep_weights=True)
    _assert_same(batched, cells, seeds, digits, config, width=8, init=init, bias=bias)
    if config.full_train_eval:
        one = train_cell(cells[0], digits, config, width=8, seed=5, init=init, bias=bias)  # type: ignore[arg-type]
        assert _rel(batched[0].train_loss_full, one.train_loss_full) < 1e-6  # type: ignore[arg-type]
        assert batched[0].eval_epochs == [2, 3]


def test_batched_regression_and_drop_last() -> None:
    ds = load_dataset("sawtooth", k=2, n_samples=150)
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05, dtype="float64", drop_last=True)
    cells = CELLS[:5]
    batched = train_batched(cells, ds, config, width=8, seeds=1, keep_weights=True)
    assert batched[0].loss == "mse" and batched[0].train_acc is None
    _assert_same(batched, cells, [1] * 5, ds, config, width=8)


def test_divergence_is_per_model_and_recorded(digits: object) -> None:
    std = load_dataset("digits", normalize="standardize", max_train=256, max_test=64)
    config = TrainConfig(epochs=3, batch_size=64, lr=10.0, dtype="float64")
    cells = CELLS + ["2_00_002"]
    seeds = list(range(len(cells)))
    batched = train_batched(cells, std, config, width=16, seeds=seeds, chunk_size=3, keep_weights=True)
    statuses = [r.status for r in batched]
    assert "diverged" in statuses and "completed" in statuses  # the test means something
    for r in batched:
        if r.diverged:
            assert r.epochs == r.diverged_epoch - 1 and len(r.train_loss) == r.epochs  # type: ignore[operator]
            assert all(np.isfinite(r.train_loss))
    _assert_same(batched, cells, seeds, std, config, width=16)


def test_callback_and_metadata(digits: object) -> None:
    records: list[EpochRecord] = []
    config = TrainConfig(epochs=2, batch_size=100)
    out = train_batched(CELLS[:3], digits, config, width=8, seeds=[0, 1, 2], callback=records.append)  # type: ignore[arg-type]
    assert len(records) == 6 and {r.model_index for r in records} == {0, 1, 2}
    rec = next(r for r in records if r.model_index == 1 and r.epoch == 2)
    assert rec.train_loss == out[1].train_loss[1] and rec.test_loss == out[1].test_loss[1]
    assert out[2].config.seed == 2 and out[0].metadata["batched"]["models"] == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(digits: object) -> None:
    with pytest.raises(InvalidArgumentError, match="'cuda' was requested but CUDA is not available"):
        train_batched(CELLS[:2], digits, TrainConfig(epochs=1, device="cuda"), width=8)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="'cuda:0' was requested but CUDA is not available"):
        train_cell(CELLS[0], digits, TrainConfig(epochs=1, device="cuda:0"), width=8)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="device must be a torch device"):
        train_cell(CELLS[0], digits, TrainConfig(epochs=1, device="gpu"), width=8)  # type: ignore[arg-type]


def test_batched_rejects_bad_input(digits: object) -> None:
    config = TrainConfig(epochs=1)
    with pytest.raises(InvalidArgumentError, match="does not support batchnorm=True"):
        train_batched(CELLS[:2], digits, config, width=8, batchnorm=True)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="same number of nodes H"):
        train_batched(["2_02_002", "2_02"], digits, config, width=8)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="one entry per spec"):
        train_batched(CELLS[:2], digits, config, width=8, seeds=[1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="non-empty sequence"):
        train_batched([], digits, config)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="chunk_size"):
        train_batched(CELLS[:2], digits, config, chunk_size=0)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="workers must be a positive int"):
        train_batched(CELLS[:2], digits, config, workers=0)  # type: ignore[arg-type]


@pytest.mark.parametrize(("init", "bias", "dtype"), [("he", True, torch.float32), ("ntk", False, torch.float64),
                                                    ("ntk", True, torch.float32)])
def test_replayed_initialization_equals_build_model(init: str, bias: bool, dtype: torch.dtype) -> None:
    """The fast initialization replays build_model's random stream exactly."""
    from trilemma.models import build_model
    from trilemma.spaces import CellSpec
    from trilemma.training._batched import _seeded_weights, _weights_of

    for cell, seed in zip(CELLS, [0, 7, 123, 5, 9, 1, 2]):
        spec = CellSpec.parse(cell)
        fast = _seeded_weights(spec, 12, 5, 8, bias=bias, init=init, seed=seed, dtype=dtype)
        ref = _weights_of(build_model(spec, 12, 5, 8, bias=bias, init=init, seed=seed, dtype=dtype))
        assert fast.layers.keys() == ref.layers.keys()
        for (w, b, f), (w_ref, b_ref, f_ref) in zip(fast.layers.values(), ref.layers.values()):
            assert torch.equal(w, w_ref) and f == f_ref
            assert (b is None and b_ref is None) or torch.equal(b, b_ref)  # type: ignore[arg-type]


def test_batched_is_deterministic_across_workers(digits: object) -> None:
    """The same chunks give bit-identical results whichever worker thread runs them."""
    config = TrainConfig(epochs=2, batch_size=50)
    one = train_batched(CELLS, digits, config, width=8, seeds=SEEDS, chunk_size=2, workers=1)  # type: ignore[arg-type]
    two = train_batched(CELLS, digits, config, width=8, seeds=SEEDS, chunk_size=2, workers=3)  # type: ignore[arg-type]
    for a, b in zip(one, two):
        assert a.train_loss == b.train_loss and a.test_loss == b.test_loss and a.test_acc == b.test_acc


def test_autocast_bfloat16_matches_one_by_one(digits: object) -> None:
    """bfloat16 autocast: batched and one by one round differently inside their GEMMs, so they
    agree to bfloat16 accuracy (not 1e-6); both differ from float32 by about as much."""
    config = TrainConfig(epochs=3, batch_size=64, autocast="bfloat16")
    cells, seeds = CELLS[:5], [0, 1, 2, 0, 1]
    batched = train_batched(cells, digits, config, width=16, seeds=seeds, chunk_size=2, workers=2,  # type: ignore[arg-type]
                            keep_weights=True)
    plain = train_batched(cells, digits, config.replace(autocast=None), width=16, seeds=seeds,  # type: ignore[arg-type]
                          chunk_size=2, workers=2)
    for spec, seed, rb, r32 in zip(cells, seeds, batched, plain):
        r1 = train_cell(spec, digits, config, width=16, seed=seed, keep_weights=True)  # type: ignore[arg-type]
        assert _rel(rb.train_loss, r1.train_loss) < 2e-2 and _rel(rb.test_loss, r1.test_loss) < 2e-2, spec
        assert 0 < _rel(rb.train_loss, r32.train_loss) < 2e-2, spec  # bfloat16 was used, and is close
        assert rb.final_state["stem.0.weight"].dtype == torch.float32  # type: ignore[index]  # float32 masters
    # momentum keeps per-parameter state in float32 and refreshes the bfloat16 copies
    mom = config.replace(momentum=0.9, loss="mse")
    rb = train_batched(cells[:3], digits, mom, width=16, seeds=1, chunk_size=2)  # type: ignore[arg-type]
    for spec, r in zip(cells[:3], rb):
        assert _rel(r.train_loss, train_cell(spec, digits, mom, width=16, seed=1).train_loss) < 2e-2  # type: ignore[arg-type]


def test_autocast_validation(digits: object) -> None:
    with pytest.raises(InvalidArgumentError, match="autocast must be one of"):
        TrainConfig(autocast="float16")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="needs float32 master weights"):
        TrainConfig(autocast="bfloat16", dtype="float64")
    with pytest.raises(InvalidArgumentError, match="init='ntk' and bias=True"):
        train_batched(CELLS[:2], digits, TrainConfig(epochs=1, autocast="bfloat16"), width=8, init="ntk")  # type: ignore[arg-type]

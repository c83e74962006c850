"""NAS-Bench-201 ground-truth loaders and the ``trilemma nb201`` commands."""

from __future__ import annotations

import argparse
import builtins
import json
import sys
import types

import numpy as np
import pandas as pd
import pytest

from trilemma.errors import DatasetNotFoundError, InvalidArgumentError, InvalidSpecError, MissingDependencyError
from trilemma.nb201 import (
    NBSZ_PROXIES,
    combined_indicator,
    load_cifar10_images,
    load_nats_bench,
    load_nb201_accuracy,
    load_nbsz_proxies,
    nb201_params,
    shared_data_dir,
)
from trilemma.spaces import NUM_NB201_CELLS, NB201Spec


def _shared():
    try:
        return shared_data_dir()
    except DatasetNotFoundError as exc:
        pytest.skip(f"shared reference data not available: {exc}")


def test_accuracy_file():
    root = _shared()
    if not (root / "nb201_cifar10_val.csv").is_file():
        pytest.skip("nb201_cifar10_val.csv is not in the shared data folder")
    df = load_nb201_accuracy()
    assert len(df) == NUM_NB201_CELLS and list(df["index"]) == list(range(NUM_NB201_CELLS))
    assert df["val_acc"].between(0, 100).all()
    # a cell whose output is identically zero cannot beat chance on 10 balanced classes
    assert df.loc[0, "arch"] == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    assert df.loc[0, "val_acc"] == pytest.approx(10.0)


def test_proxies_file_and_its_published_parameter_counts():
    root = _shared()
    if not (root / "nbsz_proxies_cifar10_subset.json").is_file():
        pytest.skip("nbsz_proxies_cifar10_subset.json is not in the shared data folder")
    df = load_nbsz_proxies()
    assert len(df) == 724 and set(NBSZ_PROXIES) <= set(df.columns)
    # NAS-Bench-Suite-Zero publishes each cell's parameter count in MB: all 724 equal our formula
    ours = np.array([nb201_params(a) for a in df["arch"]]) / 1e6
    np.testing.assert_allclose(ours, df["params"].to_numpy(), rtol=0, atol=5e-7)


def test_images_file():
    root = _shared()
    if not (root / "cifar10_unlabeled_1000.npz").is_file():
        pytest.skip("cifar10_unlabeled_1000.npz is not in the shared data folder")
    x = load_cifar10_images(16)
    assert x.shape == (16, 3, 32, 32) and x.dtype == np.float32
    assert abs(float(x.mean())) < 0.5 and 0.5 < float(x.std()) < 1.5  # standardized
    raw = load_cifar10_images(2, normalize=False)
    assert raw.min() >= 0 and raw.max() <= 255
    with pytest.raises(InvalidArgumentError, match="1..1000"):
        load_cifar10_images(0)


def test_loaders_validate_files(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="nb201_cifar10_val.csv not found"):
        load_nb201_accuracy(tmp_path)
    bad = tmp_path / "nb201_cifar10_val.csv"
    bad.write_text("arch,acc\n|none~0|,1\n")
    with pytest.raises(InvalidArgumentError, match="expected columns"):
        load_nb201_accuracy(bad)
    bad.write_text("arch,cifar10_val_acc\n|none~0|+|none~0|none~1|+|none~0|none~1|bogus~2|,1\n")
    with pytest.raises(InvalidSpecError, match="row 0.*'bogus'"):
        load_nb201_accuracy(tmp_path)
    ok = tmp_path / "small.csv"
    archs = [NB201Spec.from_index(i).name for i in (7, 3)]
    pd.DataFrame({"arch": archs, "cifar10_val_acc": [50.0, 60.0]}).to_csv(ok, index=False)
    df = load_nb201_accuracy(ok)
    assert list(df["index"]) == [3, 7] and list(df["val_acc"]) == [60.0, 50.0]
    js = tmp_path / "p.json"
    js.write_text(json.dumps({archs[0]: {"flops": 1.0}}))
    with pytest.raises(InvalidArgumentError, match="lacks"):
        load_nbsz_proxies(js)


def test_shared_data_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("TRILEMMA_SHARED_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path


class _FakeNATS:
    """Duck-typed stand-in for a nats_bench API object (two cells)."""

    archs = [NB201Spec.from_index(9).name, NB201Spec.from_index(2).name]

    def __len__(self) -> int:
        return 2

    def arch(self, i: int) -> str:
        return self.archs[i]

    def get_more_info(self, i: int, dataset: str, hp: str, is_random: bool) -> dict[str, float]:
        assert hp == "200" and is_random is False
        return {"valid-accuracy": 80.0 + i, "test-accuracy": 70.0 + i}


def test_nats_bench_adapter_and_missing_package(monkeypatch):
    df = load_nats_bench(_FakeNATS())
    assert list(df["index"]) == [2, 9] and list(df["api_index"]) == [1, 0]
    assert list(df["valid-accuracy"]) == [81.0, 80.0]
    with pytest.raises(InvalidArgumentError, match="no 'train-loss'.*available: test-accuracy, valid-accuracy"):
        load_nats_bench(_FakeNATS(), metric="train-loss")
    real_import = builtins.__import__

    def no_nats(name, *args, **kwargs):
        if name == "nats_bench":
            raise ImportError("No module named 'nats_bench'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setitem(sys.modules, "nats_bench", None)
    monkeypatch.setattr(builtins, "__import__", no_nats)
    with pytest.raises(MissingDependencyError, match="pip install nats_bench"):
        load_nats_bench("/nonexistent/NATS-tss-v1_0-3ffb9-simple")
    assert isinstance(MissingDependencyError("x"), ImportError)


def test_nats_bench_with_an_installed_module(monkeypatch):
    fake = types.ModuleType("nats_bench")
    calls = []

    def create(path, space, fast_mode, verbose):
        calls.append((path, space))
        return _FakeNATS()

    fake.create = create  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nats_bench", fake)
    df = load_nats_bench("some/file", metric="test-accuracy")
    assert calls == [("some/file", "tss")] and list(df["test-accuracy"]) == [71.0, 70.0]


# ---------------------------------------------------------------------------- CLI
def _run(argv: list[str]) -> int:
    from trilemma.commands.nb201 import add_commands

    parser = argparse.ArgumentParser(prog="trilemma")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_score_writes_every_indicator(tmp_path, capsys):
    from trilemma.nb201 import INDICATORS, centre_filter, closed_form_table

    out = tmp_path / "scores.csv"
    assert _run(["nb201", "score", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert len(df) == NUM_NB201_CELLS and set(INDICATORS) <= set(df.columns) and "in_centre" in df
    ref = closed_form_table()
    np.testing.assert_allclose(df["ntk_bound"], ref["ntk_bound"])
    np.testing.assert_allclose(df["trilemma_score"], ref["trilemma_score"])  # default: the closed-form design
    assert "removes 45.9%" in capsys.readouterr().out
    out2 = tmp_path / "centre.csv"
    assert _run(["nb201", "score", "--out", str(out2), "--filter", "centre", "--combined", "live_params:+1,P:-1"]) == 0
    df2 = pd.read_csv(out2)
    assert len(df2) == int(centre_filter(ref).keep.sum()) and df2["in_centre"].all()
    assert _run(["nb201", "score", "--out", str(out2), "--combined", "closed_form_equal"]) == 0
    np.testing.assert_allclose(pd.read_csv(out2)["trilemma_score"], combined_indicator(ref, "closed_form_equal"))
    assert _run(["nb201", "score", "--out", str(out2), "--combined", "none", "--unique"]) == 0
    assert "trilemma_score" not in pd.read_csv(out2).columns
    with pytest.raises(InvalidArgumentError, match="column:"):
        _run(["nb201", "score", "--out", str(out2), "--combined", "live_params"])


def test_cli_show(capsys):
    assert _run(["nb201", "show", "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|"]) == 0
    text = capsys.readouterr().out
    assert "conv_score" in text and "path 0→1→2→3: nor_conv_3x3, skip_connect, avg_pool_3x3" in text

"""trilemma.data: every registered dataset, the on-disk formats, download and errors."""

from __future__ import annotations

import argparse
import io
import pickle
import random
import socket
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from trilemma.data import (
    DATASETS,
    REMOTE_FILES,
    Dataset,
    _files,
    dataset_info,
    list_datasets,
    load_dataset,
    md5sum,
    read_idx,
    sawtooth_target,
    tent_map,
    write_idx,
)
from trilemma.errors import DatasetNotFoundError, InvalidArgumentError, UnknownNameError

SHARED_NPZ = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10_unlabeled_1000.npz"

# Every registered dataset must appear here with the test that covers it.
COVERED = {
    "digits": "test_digits",
    "mnist5k": "test_mnist5k",
    "mnist1d": "test_mnist1d_offline_and_rng_neutral",
    "teacher": "test_teacher_classification / test_teacher_regression",
    "sawtooth": "test_sawtooth_is_tri_power",
    "hetero1d": "test_hetero1d_noise_grows",
    "mnist": "test_idx_datasets",
    "fashion_mnist": "test_idx_datasets",
    "cifar10": "test_cifar10_from_batches",
    "cifar100": "test_cifar100_fine_and_coarse",
    "cifar10_unlabeled": "test_cifar10_unlabeled_fake / test_cifar10_unlabeled_shared",
}


def test_every_registered_dataset_has_a_test() -> None:
    assert set(list_datasets()) == set(COVERED), "register a test in COVERED for every dataset"


def test_registry_errors_and_options() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'digits'"):
        load_dataset("digitz")
    with pytest.raises(InvalidArgumentError, match="no option.*'k'.*options are: none"):
        load_dataset("digits", k=3)
    with pytest.raises(InvalidArgumentError, match="normalize must be one of"):
        load_dataset("digits", normalize="unit")
    with pytest.raises(InvalidArgumentError, match="official train/test split"):
        load_dataset("mnist1d", test_fraction=0.3)
    with pytest.raises(InvalidArgumentError, match=r"test_fraction must be a number in \[0, 1\)"):
        load_dataset("digits", test_fraction=1.0)
    assert dataset_info("sawtooth").options["k"] == 3
    assert list_datasets("cifar*") == ["cifar10", "cifar100", "cifar10_unlabeled"]


# --------------------------------------------------------------------------- bundled
def test_digits() -> None:
    assert load_dataset("digits").metadata["normalize"] == "standardize"  # default for training
    ds = load_dataset("digits", normalize="l2")
    assert isinstance(ds, Dataset) and ds.task == "classification"
    assert ds.x_train.shape == (1437, 64) and ds.x_test.shape == (360, 64)
    assert ds.in_features == 64 and ds.num_classes == 10 and ds.input_shape == (64,)
    # the papers' preprocessing: flattened, unit L2 norm per sample
    assert torch.allclose(ds.x_train.norm(dim=1), torch.ones(1437), atol=1e-6)
    # stratified: class proportions of the test set match the whole set within one sample
    counts = torch.bincount(ds.y_test, minlength=10).numpy()
    total = counts + torch.bincount(ds.y_train, minlength=10).numpy()
    assert np.all(np.abs(counts - total * 360 / 1797) <= 1)
    assert ds.metadata["split"] == "seeded" and ds.metadata["stratified"]
    # fixed seeded split: same seed, same split; another seed, another split
    again = load_dataset("digits", normalize="l2")
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)
    other = load_dataset("digits", normalize="l2", seed=1)
    assert not torch.equal(other.x_train, ds.x_train)
    # unflattened, raw pixels scaled to [0, 1]
    img = load_dataset("digits", flatten=False, normalize="none")
    assert img.x_train.shape == (1437, 1, 8, 8) and float(img.x_train.max()) == 1.0
    assert torch.allclose(img.x_train.flatten(1) / img.x_train.flatten(1).norm(dim=1, keepdim=True), ds.x_train,
                          atol=1e-6)


def test_standardize_uses_training_statistics_only() -> None:
    ds = load_dataset("digits", normalize="standardize", dtype=torch.float64)
    mean = ds.x_train.mean(0)
    assert float(mean.abs().max()) < 1e-10
    std = ds.x_train.std(0, unbiased=False)
    assert torch.all((torch.isclose(std, torch.ones_like(std))) | (std == 0))
    assert float(ds.x_test.mean(0).abs().max()) > 1e-3  # test statistics were not used


def test_subsampling_and_to() -> None:
    ds = load_dataset("digits", max_train=100, max_test=50, seed=3)
    assert ds.num_train == 100 and ds.num_test == 50
    with pytest.raises(InvalidArgumentError, match="max_train=5000 is larger than the 1437"):
        load_dataset("digits", max_train=5000)
    d64 = ds.to(dtype=torch.float64)
    assert d64.x_train.dtype == torch.float64 and d64.y_train.dtype == torch.int64


def test_mnist5k() -> None:
    ds = load_dataset("mnist5k", normalize="none")
    assert ds.x_train.shape == (4000, 784) and ds.x_test.shape == (1000, 784)
    assert float(ds.x_train.min()) >= 0 and float(ds.x_train.max()) == 1.0
    assert sorted(torch.unique(ds.y_train).tolist()) == list(range(10))


def test_mnist1d_offline_and_rng_neutral(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("mnist1d must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    ds = load_dataset("mnist1d", normalize="none")
    assert np.random.random() == np_before and random.random() == py_before  # global RNGs untouched
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.metadata["split"] == "official"
    assert ds.metadata["generator_args"]["seed"] == 42
    # the package's recipe: the whole set is centred with unit standard deviation
    both = torch.cat([ds.x_train, ds.x_test])
    assert abs(float(both.mean())) < 1e-4 and abs(float(both.std()) - 1) < 1e-3
    again = load_dataset("mnist1d", normalize="none")
    assert torch.equal(again.x_train, ds.x_train)


# --------------------------------------------------------------------------- synthetic
def test_teacher_classification() -> None:
    ds = load_dataset("teacher", n_samples=1000, num_classes=4)
    assert ds.x_train.shape == (800, 20) and ds.num_classes == 4
    counts = torch.bincount(torch.cat([ds.y_train, ds.y_test]), minlength=4)
    assert int(counts.min()) > 100  # centred teacher features: no class starves
    same = load_dataset("teacher", n_samples=1000, num_classes=4)
    other = load_dataset("teacher", n_samples=1000, num_classes=4, data_seed=1)
    assert torch.equal(same.y_train, ds.y_train) and not torch.equal(other.x_train, ds.x_train)
    with pytest.raises(InvalidArgumentError, match="teacher task must be"):
        load_dataset("teacher", task="ranking")


def test_teacher_regression() -> None:
    ds = load_dataset("teacher", task="regression", out_features=2, n_samples=2000, dtype=torch.float64)
    assert ds.task == "regression" and ds.y_train.shape == (1600, 2) and ds.num_outputs == 2
    y = torch.cat([ds.y_train, ds.y_test])
    assert abs(float(y.std(unbiased=False)) - 1.0) < 1e-9  # noise-free targets have unit variance


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_sawtooth_is_tri_power(k: int) -> None:
    ds = load_dataset("sawtooth", k=k, dtype=torch.float64)
    x, y = ds.x_train[:, 0].numpy(), ds.y_train[:, 0].numpy()
    ref = x.copy()
    for _ in range(k):  # tri(x) = ReLU(ReLU(2x) - ReLU(4x - 2)), composed k times
        ref = np.maximum(np.maximum(2 * ref, 0) - np.maximum(4 * ref - 2, 0), 0)
    np.testing.assert_allclose(y, ref, atol=1e-12)
    assert ds.task == "regression" and ds.metadata["teeth"] == 2 ** (k - 1)
    # Telgarsky: tri^k has 2^(k-1) teeth (local maxima equal to 1) on [0, 1]
    grid = np.linspace(0, 1, 2**12 + 1)
    vals = sawtooth_target(grid, k)
    peaks = np.sum((vals[1:-1] > vals[:-2]) & (vals[1:-1] >= vals[2:]))
    assert peaks == 2 ** (k - 1) and np.isclose(vals.max(), 1.0)
    assert np.allclose(tent_map(np.array([0.0, 0.25, 0.5, 1.0])), [0.0, 0.5, 1.0, 0.0])


def test_hetero1d_noise_grows() -> None:
    ds = load_dataset("hetero1d", n_samples=4000, dtype=torch.float64)
    x = torch.cat([ds.x_train, ds.x_test])[:, 0].numpy()
    y = torch.cat([ds.y_train, ds.y_test])[:, 0].numpy()
    resid = y - np.sin(2 * np.pi * x)
    low, high = resid[x < 0.2].std(), resid[x > 0.8].std()
    assert 0.05 < low < 0.15 and 0.4 < high < 0.55  # sigma(x) = 0.05 + 0.45 x
    assert 0 <= x.min() and x.max() <= 1


# --------------------------------------------------------------------------- on-disk formats
def _fake_idx(folder: Path, n_train: int, n_test: int, gz: bool, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, arr in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), arr)
    return arrays


def test_idx_round_trip_and_corruption(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte.gz", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), arr)
    # the official magic numbers: 0x00000803 for images, 0x00000801 for labels
    write_idx(tmp_path / "b", arr)
    assert (tmp_path / "b").read_bytes()[:4] == b"\x00\x00\x08\x03"
    (tmp_path / "c").write_bytes((tmp_path / "b").read_bytes()[:-1])
    with pytest.raises(DatasetNotFoundError, match="truncated or corrupt"):
        read_idx(tmp_path / "c")


@pytest.mark.parametrize(("name", "layout", "gz"), [
    ("mnist", "mnist", True),
    ("mnist", "MNIST/raw", False),
    ("fashion_mnist", "fashion_mnist", False),
    ("fashion_mnist", "FashionMNIST/raw", True),
])
def test_idx_datasets(tmp_path: Path, name: str, layout: str, gz: bool) -> None:
    arrays = _fake_idx(tmp_path / layout, 20, 10, gz, seed=1)
    ds = load_dataset(name, root=tmp_path, normalize="none", flatten=False)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    np.testing.assert_allclose(ds.x_train[:, 0].numpy() * 255, arrays["train-images-idx3-ubyte"], atol=1e-4)
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert ds.metadata["split"] == "official"
    flat = load_dataset(name, root=tmp_path, normalize="l2")
    assert flat.x_train.shape == (20, 784)
    assert torch.allclose(flat.x_train.norm(dim=1), torch.ones(20), atol=1e-5)


def test_missing_dataset_message_says_where_and_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", root=tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "mnist") in msg and str(tmp_path / "MNIST" / "raw") in msg
    assert "train-images-idx3-ubyte[.gz]" in msg and "download=True" in msg
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar100", root=tmp_path)
    msg = str(info.value)
    assert "cifar-100-python" in msg and "cifar-100-python.tar.gz" in msg and "download=True" in msg
    assert isinstance(info.value, FileNotFoundError)
    # TRILEMMA_DATA is the default root
    monkeypatch.setenv("TRILEMMA_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetNotFoundError, match="elsewhere"):
        load_dataset("fashion_mnist")


def _serve(monkeypatch: pytest.MonkeyPatch, payloads: dict[str, bytes], seen: list[str]) -> None:
    def fake_urlopen(url: str, timeout: float = 0) -> io.BytesIO:
        seen.append(url)
        name = url.rsplit("/", 1)[1]
        if name not in payloads:
            raise urllib.error.URLError("no route to host")
        return io.BytesIO(payloads[name])

    monkeypatch.setattr(_files.urllib.request, "urlopen", fake_urlopen)


def test_download_verifies_checksums(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    arrays = _fake_idx(src, 20, 10, gz=True, seed=2)
    payloads = {p.name: p.read_bytes() for p in src.iterdir()}
    fake = tuple(
        _files.RemoteFile(r.filename, r.urls, md5sum(src / r.filename)) for r in REMOTE_FILES["mnist"]
    )
    monkeypatch.setitem(REMOTE_FILES, "mnist", fake)
    seen: list[str] = []
    _serve(monkeypatch, payloads, seen)
    root = tmp_path / "root"
    with pytest.raises(DatasetNotFoundError):
        load_dataset("mnist", root=root)  # no download without download=True
    assert seen == []
    ds = load_dataset("mnist", root=root, download=True, normalize="none")
    assert all(u.startswith("https://ossci-datasets.s3.amazonaws.com/mnist/") for u in seen)
    np.testing.assert_array_equal(ds.y_train.numpy(), arrays["train-labels-idx1-ubyte"])
    assert (root / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    # a corrupted download is rejected with the checksum in the message, and removed
    bad = {k: v[:-3] + b"xyz" for k, v in payloads.items()}
    _serve(monkeypatch, bad, seen)
    with pytest.raises(DatasetNotFoundError, match="MD5 .* does not match the official"):
        load_dataset("mnist", root=tmp_path / "root2", download=True)
    assert not list((tmp_path / "root2" / "mnist").glob("*.gz"))
    # no network at all
    _serve(monkeypatch, {}, seen)
    with pytest.raises(DatasetNotFoundError, match="no route to host"):
        load_dataset("mnist", root=tmp_path / "root3", download=True)


def _cifar_batch(n: int, label_keys: dict[bytes, np.ndarray], seed: int) -> tuple[dict[bytes, object], np.ndarray]:
    data = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    batch: dict[bytes, object] = {b"data": data, b"batch_label": b"fake"}
    batch.update({k: list(map(int, v)) for k, v in label_keys.items()})
    return batch, data


def _write_pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def test_cifar10_from_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    datas = []
    for i in range(1, 6):
        batch, data = _cifar_batch(4, {b"labels": np.arange(4) + i}, seed=i)
        datas.append(data)
        _write_pickle(folder / f"data_batch_{i}", batch)
    test, _ = _cifar_batch(3, {b"labels": np.array([9, 8, 7])}, seed=9)
    _write_pickle(folder / "test_batch", test)
    _write_pickle(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    ds = load_dataset("cifar10", root=tmp_path, normalize="none", flatten=False)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    # the pickle rows are channel-major: R plane, G plane, B plane
    first = datas[0][0].reshape(3, 32, 32) / 255
    np.testing.assert_allclose(ds.x_train[0].numpy(), first, atol=1e-6)
    assert ds.y_train[:4].tolist() == [1, 2, 3, 4] and ds.y_test.tolist() == [9, 8, 7]
    assert ds.metadata["class_names"][3] == "c3"
    # the official archive next to the data root is extracted when the folder is missing
    archive_root = tmp_path / "from_archive"
    (archive_root / "cifar10").mkdir(parents=True)
    with tarfile.open(archive_root / "cifar10" / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    again = load_dataset("cifar10", root=archive_root, normalize="none", flatten=False)
    assert torch.equal(again.x_train, ds.x_train)


def test_cifar100_fine_and_coarse(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"  # directly under the root is accepted too
    train, _ = _cifar_batch(5, {b"fine_labels": np.array([0, 50, 99, 3, 4]),
                                b"coarse_labels": np.array([0, 10, 19, 1, 2])}, seed=1)
    test, _ = _cifar_batch(2, {b"fine_labels": np.array([7, 8]), b"coarse_labels": np.array([5, 6])}, seed=2)
    _write_pickle(folder / "train", train)
    _write_pickle(folder / "test", test)
    _write_pickle(folder / "meta", {b"fine_label_names": [b"f"] * 100, b"coarse_label_names": [b"c"] * 20})
    fine = load_dataset("cifar100", root=tmp_path)
    assert fine.num_classes == 100 and fine.y_train.tolist() == [0, 50, 99, 3, 4]
    assert fine.x_train.shape == (5, 3072)
    coarse = load_dataset("cifar100", root=tmp_path, label_mode="coarse")
    assert coarse.num_classes == 20 and coarse.y_test.tolist() == [5, 6]
    with pytest.raises(InvalidArgumentError, match="label_mode must be 'fine' or 'coarse'"):
        load_dataset("cifar100", root=tmp_path, label_mode="both")


def test_cifar10_unlabeled_fake(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "imgs.npz", images=images)
    ds = load_dataset("cifar10_unlabeled", path=str(tmp_path / "imgs.npz"), flatten=False, normalize="none")
    assert ds.task == "unlabeled" and ds.x_train.shape == (12, 3, 32, 32) and ds.num_test == 0
    np.testing.assert_allclose(ds.x_train[3].permute(1, 2, 0).numpy() * 255, images[3], atol=1e-4)
    assert bool((ds.y_train == -1).all())
    with pytest.raises(DatasetNotFoundError, match="missing.npz"):
        load_dataset("cifar10_unlabeled", path=str(tmp_path / "missing.npz"))


@pytest.mark.skipif(not SHARED_NPZ.is_file(), reason="reference data ../shared/data/ is not available here")
def test_cifar10_unlabeled_shared() -> None:
    ds = load_dataset("cifar10_unlabeled")
    assert ds.x_train.shape == (1000, 3072)
    assert torch.allclose(ds.x_train.norm(dim=1), torch.ones(1000), atol=1e-5)


def test_cli_lists_every_dataset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from trilemma.commands.data import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["datasets", "--root", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    for name in DATASETS:
        assert name in out
    assert "disk: missing" in out and "bundled" in out
    args = parser.parse_args(["datasets", "nothing*"])
    assert args.func(args) == 1


class _Evil:
    """Unpickling this calls ``open(marker, 'w')``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (str(self.marker), "w"))


def test_cifar_batches_are_read_with_a_restricted_unpickler(tmp_path: Path) -> None:
    from trilemma.errors import DataFormatError

    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    for i in range(1, 6):
        batch, _ = _cifar_batch(2, {b"labels": np.arange(2)}, seed=i)
        _write_pickle(folder / f"data_batch_{i}", batch)
    test, _ = _cifar_batch(2, {b"labels": np.arange(2)}, seed=9)
    _write_pickle(folder / "batches.meta", {b"label_names": [b"c"] * 10})
    marker = tmp_path / "pwned"
    test[b"batch_label"] = _Evil(marker)
    _write_pickle(folder / "test_batch", test)
    with pytest.raises(DataFormatError, match=r"test_batch is not an official CIFAR python batch.*refers to io.open"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()
    # anything that is not a pickled dict is refused too
    _write_pickle(folder / "test_batch", [1, 2, 3])
    with pytest.raises(DataFormatError, match="holds a list, not a dict"):
        load_dataset("cifar10", root=tmp_path)

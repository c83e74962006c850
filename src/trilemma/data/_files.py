"""Standard image datasets read from their official on-disk formats, and their download.

* MNIST / Fashion-MNIST: the four IDX files (``train-images-idx3-ubyte`` ...), gzipped or
  not, as distributed (LeCun et al. 1998; Xiao, Rasul & Vollgraf 2017).
* CIFAR-10 / CIFAR-100: the "python version" pickle batches in ``cifar-10-batches-py/`` and
  ``cifar-100-python/`` (Krizhevsky 2009), or the official ``.tar.gz`` next to them.
* ``cifar10_unlabeled``: the project's reference file ``cifar10_unlabeled_1000.npz``.

Nothing is downloaded unless ``download=True``; the official archives are then fetched
with :mod:`urllib` and their MD5 checksums verified before use.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trilemma._refdata import reference_candidates
from trilemma.data._dataset import RawData, register_dataset
from trilemma.errors import DataFormatError, DatasetNotFoundError, InvalidArgumentError

__all__ = ["read_idx", "write_idx", "download_file", "md5sum", "REMOTE_FILES"]

logger = logging.getLogger(__name__)

_IDX_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped when the name ends in ``.gz``.

    Layout: two zero bytes, a type byte (0x08 = uint8, ...), the number of dimensions, one
    big-endian uint32 per dimension, then the data in C order.

    Raises:
        DatasetNotFoundError: the file is not valid IDX (truncated or wrong magic number).
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetNotFoundError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(data[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DatasetNotFoundError(
            f"{path} is truncated or corrupt: header says shape {shape} ({expected} bytes), "
            f"file holds {len(data) - header} data bytes"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a uint8/int8 array as an IDX file (gzipped when the name ends in ``.gz``).

    Used by tests and by anyone packaging their own data in the MNIST format.
    """
    array = np.ascontiguousarray(array)
    if array.dtype not in _IDX_CODES:
        raise InvalidArgumentError(f"write_idx supports uint8 and int8 arrays, got {array.dtype}")
    header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(header + array.tobytes())


# --------------------------------------------------------------------------- download
@dataclass(frozen=True)
class RemoteFile:
    """An official file: its name, the URLs to try in order, and its MD5."""

    filename: str
    urls: tuple[str, ...]
    md5: str


def _remote(filename: str, bases: tuple[str, ...], md5: str) -> RemoteFile:
    return RemoteFile(filename, tuple(b + filename for b in bases), md5)


_MNIST_BASES = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_BASES = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
_IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

#: The official files of every downloadable dataset, with their MD5 checksums.
REMOTE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": tuple(
        _remote(n + ".gz", _MNIST_BASES, md5)
        for n, md5 in zip(
            _IDX_NAMES,
            ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
             "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
        )
    ),
    "fashion_mnist": tuple(
        _remote(n + ".gz", _FASHION_BASES, md5)
        for n, md5 in zip(
            _IDX_NAMES,
            ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
             "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
        )
    ),
    "cifar10": (
        _remote("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/",), "c58f30108f718f92721af3b95e74349a"),
    ),
    "cifar100": (
        _remote("cifar-100-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/",), "eb9058c3a382ffc7106e4002c42a8d85"),
    ),
}


def md5sum(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file (the checksum the dataset authors publish)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(remote: RemoteFile, folder: Path, timeout: float = 60.0) -> Path:
    """Fetch ``remote`` into ``folder`` (trying its URLs in order) and verify its MD5.

    Returns:
        The path of the verified file (an existing verified file is reused).

    Raises:
        DatasetNotFoundError: every URL failed or the checksum did not match; the message
            lists each URL's error.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / remote.filename
    if dest.exists() and md5sum(dest) == remote.md5:
        return dest
    errors = []
    for url in remote.urls:
        part = dest.with_name(dest.name + ".part")
        try:
            logger.info("downloading %s", url)
            with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
                shutil.copyfileobj(response, out)
            got = md5sum(part)
            if got != remote.md5:
                errors.append(f"{url}: MD5 {got} does not match the official {remote.md5}")
                part.unlink(missing_ok=True)
                continue
            part.replace(dest)
            return dest
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"{url}: {exc}")
            part.unlink(missing_ok=True)
    raise DatasetNotFoundError(
        f"could not download {remote.filename} into {folder}:\n  " + "\n  ".join(errors)
    )


def _safe_extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(dest, filter="data")


# --------------------------------------------------------------------------- MNIST-like
def _find_idx(folder: Path, base: str) -> Path | None:
    for name in (base, base + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_candidates(root: Path, name: str, torchvision_name: str) -> list[Path]:
    return [root / name, root / name / "raw", root / torchvision_name / "raw", root / torchvision_name]


def _load_idx_set(root: Path, name: str, torchvision_name: str, download: bool, classes: list[str]) -> RawData:
    candidates = _idx_candidates(root, name, torchvision_name)
    folder = None
    for cand in candidates:
        if all(_find_idx(cand, b) is not None for b in _IDX_NAMES):
            folder = cand
            break
    if folder is None and download:
        folder = root / name
        for remote in REMOTE_FILES[name]:
            download_file(remote, folder)
    if folder is None:
        bases = REMOTE_FILES[name][0].urls[0].rsplit("/", 1)[0] + "/"
        raise DatasetNotFoundError(
            f"dataset {name!r} not found. Looked in: {', '.join(str(c) for c in candidates)} for the four IDX "
            f"files {', '.join(b + '[.gz]' for b in _IDX_NAMES)}. Get them with "
            f"load_dataset({name!r}, download=True) (fetches them from {bases} into {root / name}), "
            f"or put the files in {root / name} yourself; pass root=... or set $TRILEMMA_DATA to use "
            f"another folder."
        )
    arrays = [read_idx(_find_idx(folder, b)) for b in _IDX_NAMES]  # type: ignore[arg-type]
    x_tr, y_tr, x_te, y_te = arrays
    for x, y, part in ((x_tr, y_tr, "train"), (x_te, y_te, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise DatasetNotFoundError(
                f"{folder}: {part} images {x.shape} and labels {y.shape} do not match (need (n, H, W) and (n,))"
            )
    return RawData(
        x_train=x_tr[:, None],
        y_train=y_tr.astype(np.int64),
        x_test=x_te[:, None],
        y_test=y_te.astype(np.int64),
        num_classes=10,
        task="classification",
        pixel_max=255.0,
        metadata={"folder": str(folder), "class_names": classes},
    )


@register_dataset(
    "mnist",
    description="MNIST (60,000 + 10,000 28x28 digits) from the official IDX files under the data root",
    task="classification",
    kind="disk",
    official_split=True,
    default_normalize="standardize",
    citation="LeCun, Bottou, Bengio & Haffner 1998",
)
def _mnist(*, root: Path, download: bool) -> RawData:
    return _load_idx_set(root, "mnist", "MNIST", download, [str(i) for i in range(10)])


@register_dataset(
    "fashion_mnist",
    description="Fashion-MNIST (60,000 + 10,000 28x28 clothing images) from the official IDX files",
    task="classification",
    kind="disk",
    official_split=True,
    default_normalize="standardize",
    citation="Xiao, Rasul & Vollgraf 2017",
)
def _fashion_mnist(*, root: Path, download: bool) -> RawData:
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
    return _load_idx_set(root, "fashion_mnist", "FashionMNIST", download, classes)


# --------------------------------------------------------------------------- CIFAR
@dataclass(frozen=True)
class _CifarLayout:
    name: str
    folder: str
    train: tuple[str, ...]
    test: str
    meta: str


_CIFAR = {
    "cifar10": _CifarLayout(
        "cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"
    ),
    "cifar100": _CifarLayout("cifar100", "cifar-100-python", ("train",), "test", "meta"),
}


#: The only globals an official CIFAR python batch refers to: numpy's array reconstruction.
_CIFAR_PICKLE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
})


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what the official CIFAR batches hold: builtin containers, bytes, str,
    numbers and numpy arrays. Any other global (a class, a function such as ``os.system``)
    is refused before it is looked up, so a crafted file cannot run code."""

    def __init__(self, fh: Any, path: Path) -> None:
        super().__init__(fh, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CIFAR_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise DataFormatError(
            f"{self.path} is not an official CIFAR python batch: it refers to {module}.{name}, but the official "
            f"files hold only dicts, lists, bytes, strings, numbers and numpy arrays; refusing to load it"
        )


def _unpickle(path: Path) -> dict[bytes, object]:
    """Read a CIFAR python batch with :class:`_CifarUnpickler` (never plain ``pickle.load``).

    Raises:
        DataFormatError: The file refers to anything but numpy arrays, or is not a pickle
            of a dict.
    """
    with open(path, "rb") as fh:
        try:
            data = _CifarUnpickler(fh, path).load()
        except DataFormatError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
            raise DataFormatError(f"{path} is not a readable CIFAR python batch: {err}") from None
    if not isinstance(data, dict):
        raise DataFormatError(f"{path} is not a CIFAR python batch: it holds a {type(data).__name__}, not a dict")
    return data


def _cifar_folder(root: Path, layout: _CifarLayout, download: bool) -> Path:
    needed = (*layout.train, layout.test, layout.meta)
    candidates = [root / layout.name / layout.folder, root / layout.folder]
    for cand in candidates:
        if all((cand / f).is_file() for f in needed):
            return cand
    remote = REMOTE_FILES[layout.name][0]
    for archive in (root / layout.name / remote.filename, root / remote.filename):
        if archive.is_file():
            logger.info("extracting %s", archive)
            _safe_extract(archive, archive.parent)
            if all((archive.parent / layout.folder / f).is_file() for f in needed):
                return archive.parent / layout.folder
    if download:
        archive = download_file(remote, root / layout.name)
        _safe_extract(archive, archive.parent)
        return archive.parent / layout.folder
    raise DatasetNotFoundError(
        f"dataset {layout.name!r} not found. Looked in: {', '.join(str(c) for c in candidates)} for the "
        f"python-version batches ({', '.join(needed)}), and for {remote.filename} in {root / layout.name} "
        f"and {root}. Get it with load_dataset({layout.name!r}, download=True) (fetches {remote.urls[0]}, "
        f"checks MD5 {remote.md5}), or download that archive yourself and put it (or its extracted "
        f"{layout.folder}/ folder) in {root / layout.name}; pass root=... or set $TRILEMMA_DATA to use "
        f"another folder."
    )


def _cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if b"data" not in batch or label_key not in batch:
        raise DatasetNotFoundError(
            f"{path} is not a CIFAR python batch (needs keys b'data' and {label_key!r}, has {sorted(batch)})"
        )
    x = np.asarray(batch[b"data"], dtype=np.uint8)
    y = np.asarray(batch[label_key], dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or x.shape[0] != y.shape[0]:
        raise DatasetNotFoundError(f"{path}: data {x.shape} / labels {y.shape} are not (n, 3072) / (n,)")
    return x.reshape(-1, 3, 32, 32), y


def _load_cifar(root: Path, layout: _CifarLayout, download: bool, label_key: bytes, names_key: bytes,
                num_classes: int) -> RawData:
    folder = _cifar_folder(root, layout, download)
    parts = [_cifar_batch(folder / f, label_key) for f in layout.train]
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    x_te, y_te = _cifar_batch(folder / layout.test, label_key)
    meta = _unpickle(folder / layout.meta)
    raw_names = meta.get(names_key, [])
    if not isinstance(raw_names, (list, tuple)):
        raise DataFormatError(f"{folder / layout.meta}: {names_key!r} is a {type(raw_names).__name__}, not a list")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw_names]
    return RawData(
        x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, num_classes=num_classes, task="classification",
        pixel_max=255.0, metadata={"folder": str(folder), "class_names": names},
    )


@register_dataset(
    "cifar10",
    description="CIFAR-10 (50,000 + 10,000 32x32 colour images, 10 classes) from the python pickle batches",
    task="classification",
    kind="disk",
    official_split=True,
    default_normalize="standardize",
    citation="Krizhevsky 2009, 'Learning multiple layers of features from tiny images'",
)
def _cifar10(*, root: Path, download: bool) -> RawData:
    return _load_cifar(root, _CIFAR["cifar10"], download, b"labels", b"label_names", 10)


@register_dataset(
    "cifar100",
    description="CIFAR-100 (50,000 + 10,000 32x32 colour images, 100 fine / 20 coarse classes), python pickles",
    task="classification",
    kind="disk",
    official_split=True,
    default_normalize="standardize",
    citation="Krizhevsky 2009, 'Learning multiple layers of features from tiny images'",
)
def _cifar100(*, root: Path, download: bool, label_mode: str = "fine") -> RawData:
    if label_mode not in ("fine", "coarse"):
        raise InvalidArgumentError(f"cifar100 label_mode must be 'fine' or 'coarse', got {label_mode!r}")
    key = label_mode.encode()
    return _load_cifar(root, _CIFAR["cifar100"], download, key + b"_labels", key + b"_label_names",
                       100 if label_mode == "fine" else 20)


# --------------------------------------------------------------------------- shared reference data
UNLABELED_FILE = "cifar10_unlabeled_1000.npz"


def _project_root() -> Path:
    # src/trilemma/data/_files.py -> the checkout's root (editable installs)
    return Path(__file__).resolve().parents[3]


def unlabeled_candidates(root: Path, path: str | os.PathLike[str] | None) -> list[Path]:
    """Where ``cifar10_unlabeled`` looks, in order."""
    if path is not None:
        return [Path(path).expanduser()]
    return [root / UNLABELED_FILE, *(d / UNLABELED_FILE for d in reference_candidates())]


@register_dataset(
    "cifar10_unlabeled",
    description="1,000 CIFAR-10 training images without labels (project reference data) for label-free measures",
    task="unlabeled",
    kind="reference",
    default_test_fraction=0.0,
    citation="Krizhevsky 2009; first 1,000 CIFAR-10 training images (../shared/data/README.md)",
)
def _cifar10_unlabeled(*, root: Path, download: bool, path: str | None = None) -> RawData:
    """Images from ``cifar10_unlabeled_1000.npz`` (``images``: uint8 (1000, 32, 32, 3), HWC).

    Looked for at ``path`` if given, else in the data root, then in ``../shared/data/``
    relative to the project root and to the working directory. Labels are ``-1``.
    """
    candidates = unlabeled_candidates(root, path)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise DatasetNotFoundError(
            f"dataset 'cifar10_unlabeled' not found. Looked for {', '.join(str(c.resolve()) for c in candidates)}. "
            f"It is the project's reference file {UNLABELED_FILE} (not downloadable); pass path=... to "
            f"load_dataset or copy it into {root}."
        )
    with np.load(found) as data:
        if "images" not in data:
            raise DatasetNotFoundError(f"{found} has no 'images' array (has {list(data.keys())})")
        images = np.asarray(data["images"])
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DatasetNotFoundError(f"{found}: images have shape {images.shape}, expected (n, 32, 32, 3) HWC")
    x = images.transpose(0, 3, 1, 2)
    return RawData(
        x_train=x, y_train=np.full(x.shape[0], -1, dtype=np.int64), num_classes=10, task="unlabeled",
        pixel_max=255.0, metadata={"file": str(found.resolve()), "labeled": False},
    )

"""Ground truth and inputs for NAS-Bench-201: the project's reference files and NATS-Bench.

Reference files (``/work/shared/data/README.md``) live in ``../shared/data/`` relative to the
project root. The folder is found, in order, from an explicit ``path`` argument, the
``TRILEMMA_SHARED_DATA`` environment variable, ``<project root>/../shared/data`` (for a
source checkout) and ``<cwd>/../shared/data``. A missing file raises
:class:`~trilemma.errors.DatasetNotFoundError` saying where it looked.

* ``nb201_cifar10_val.csv``: all 15,625 cells with their CIFAR-10 validation accuracy (%,
  200-epoch schedule), from the NAS-Bench-Suite-Zero files of automl/NASLib.
* ``nbsz_proxies_cifar10_subset.json``: 724 cells → NAS-Bench-Suite-Zero's published
  zero-cost proxy scores on CIFAR-10 (Krishnakumar et al., NeurIPS 2022 Datasets & Benchmarks).
* ``cifar10_unlabeled_1000.npz``: the first 1,000 CIFAR-10 training images, no labels.

A user's own NATS-Bench topology file (Dong et al., "NATS-Bench", TPAMI 2021) is read through
the optional ``nats_bench`` package (:func:`load_nats_bench`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trilemma._checks import is_int
from trilemma._refdata import ENV_SHARED_DATA, reference_dir, reference_file
from trilemma.errors import (
    InvalidArgumentError,
    InvalidSpecError,
    MissingDependencyError,
)
from trilemma.spaces._nb201 import NUM_NB201_CELLS, NB201Spec

__all__ = [
    "ENV_SHARED_DATA",
    "ACCURACY_FILE",
    "PROXIES_FILE",
    "IMAGES_FILE",
    "NBSZ_PROXIES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "shared_data_dir",
    "load_nb201_accuracy",
    "load_nbsz_proxies",
    "load_cifar10_images",
    "load_nats_bench",
]

logger = logging.getLogger(__name__)

ACCURACY_FILE = "nb201_cifar10_val.csv"
PROXIES_FILE = "nbsz_proxies_cifar10_subset.json"
IMAGES_FILE = "cifar10_unlabeled_1000.npz"

#: The published NAS-Bench-Suite-Zero proxies in :data:`PROXIES_FILE` (besides ``val_accuracy``).
NBSZ_PROXIES: tuple[str, ...] = (
    "flops", "params", "synflow", "grasp", "fisher", "grad_norm", "l2_norm", "plain", "nwot", "epe_nas", "jacov", "snip",
)

#: Per-channel normalization used by NAS-Bench-201 for CIFAR (RGB, on [0, 1] pixels).
CIFAR10_MEAN: tuple[float, float, float] = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD: tuple[float, float, float] = (63.0 / 255, 62.1 / 255, 66.7 / 255)


def shared_data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The reference-data folder (:func:`trilemma._refdata.reference_dir`)."""
    return reference_dir(path)


def _file(name: str, path: str | os.PathLike[str] | None) -> Path:
    return reference_file(name, path)


def _parse_archs(archs: Sequence[str], source: Path) -> np.ndarray:
    out = np.empty(len(archs), dtype=np.int64)
    for k, a in enumerate(archs):
        try:
            out[k] = NB201Spec.parse(a).index
        except InvalidSpecError as exc:
            raise InvalidSpecError(f"{source}: row {k}: {exc}") from None
    return out


def load_nb201_accuracy(path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """NAS-Bench-201 CIFAR-10 validation accuracy of every cell.

    Args:
        path: The CSV file or its folder; default ``<shared data>/nb201_cifar10_val.csv``.

    Returns:
        Columns ``index`` (this package's base-5 index), ``arch`` (canonical string) and
        ``val_acc`` (%), one row per cell, sorted by ``index``.

    Raises:
        DatasetNotFoundError: the file is missing.
        InvalidArgumentError: columns missing, duplicate cells or non-finite accuracies.
        InvalidSpecError: a malformed cell string (the message names the row).
    """
    p = _file(ACCURACY_FILE, path)
    raw = pd.read_csv(p)
    needed = {"arch", "cifar10_val_acc"}
    if not needed <= set(raw.columns):
        raise InvalidArgumentError(
            f"{p}: expected columns {sorted(needed)}, got {list(raw.columns)}"
        )
    idx = _parse_archs(raw["arch"].tolist(), p)
    acc = pd.to_numeric(raw["cifar10_val_acc"], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(acc).all():
        raise InvalidArgumentError(f"{p}: {int((~np.isfinite(acc)).sum())} non-finite accuracy value(s)")
    if len(np.unique(idx)) != len(idx):
        raise InvalidArgumentError(f"{p}: {len(idx) - len(np.unique(idx))} duplicate cell(s)")
    df = pd.DataFrame({"index": idx, "arch": [NB201Spec.from_index(int(i)).name for i in idx], "val_acc": acc})
    df = df.sort_values("index", ignore_index=True)
    if len(df) != NUM_NB201_CELLS:
        logger.warning("%s holds %d cells, not all %d", p, len(df), NUM_NB201_CELLS)
    return df


def load_nbsz_proxies(path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """NAS-Bench-Suite-Zero's published zero-cost proxies on CIFAR-10 (724 cells).

    Args:
        path: The JSON file or its folder; default ``<shared data>/nbsz_proxies_cifar10_subset.json``.

    Returns:
        Columns ``index``, ``arch``, every proxy of :data:`NBSZ_PROXIES` and
        ``val_accuracy`` (%), sorted by ``index``.

    Raises:
        DatasetNotFoundError: the file is missing.
        InvalidArgumentError: not a JSON object of cell → scores, or a proxy missing.
    """
    p = _file(PROXIES_FILE, path)
    with p.open() as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise InvalidArgumentError(f"{p}: expected a JSON object mapping cell strings to score objects")
    archs = list(data)
    idx = _parse_archs(archs, p)
    cols = (*NBSZ_PROXIES, "val_accuracy")
    rows = []
    for a in archs:
        missing = [c for c in cols if c not in data[a]]
        if missing:
            raise InvalidArgumentError(f"{p}: cell {a!r} lacks {missing}")
        rows.append([float(data[a][c]) for c in cols])
    df = pd.DataFrame(rows, columns=list(cols))
    df.insert(0, "arch", [NB201Spec.from_index(int(i)).name for i in idx])
    df.insert(0, "index", idx)
    return df.sort_values("index", ignore_index=True)


def load_cifar10_images(
    n: int | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    normalize: bool = True,
) -> np.ndarray:
    """The unlabeled CIFAR-10 images as a float32 array ``(n, 3, 32, 32)`` (NCHW).

    Args:
        n: Number of images (the first ``n``); default all 1,000.
        path: The ``.npz`` file or its folder; default ``<shared data>/cifar10_unlabeled_1000.npz``.
        normalize: Scale to [0, 1] and standardize with :data:`CIFAR10_MEAN` /
            :data:`CIFAR10_STD` (NAS-Bench-201's preprocessing); else raw values 0..255.

    Raises:
        DatasetNotFoundError: the file is missing.
        InvalidArgumentError: ``n`` outside ``1..available`` or an unexpected array.
    """
    p = _file(IMAGES_FILE, path)
    with np.load(p) as z:
        if "images" not in z:
            raise InvalidArgumentError(f"{p}: expected an array 'images', found {list(z.keys())}")
        images = z["images"]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InvalidArgumentError(f"{p}: expected images of shape (n, h, w, 3), got {images.shape}")
    if n is not None:
        if not is_int(n) or not 1 <= n <= len(images):
            raise InvalidArgumentError(f"n must be an int in 1..{len(images)}, got {n!r}")
        images = images[:n]
    x = images.transpose(0, 3, 1, 2).astype(np.float32)
    if normalize:
        x /= 255.0
        x -= np.asarray(CIFAR10_MEAN, dtype=np.float32)[None, :, None, None]
        x /= np.asarray(CIFAR10_STD, dtype=np.float32)[None, :, None, None]
    return x


def load_nats_bench(
    source: str | os.PathLike[str] | Any,
    dataset: str = "cifar10-valid",
    metric: str = "valid-accuracy",
    hp: str = "200",
) -> pd.DataFrame:
    """Ground truth for every cell from a NATS-Bench topology-search-space (NAS-Bench-201) file.

    Needs the optional ``nats_bench`` package (``pip install nats_bench``) and the benchmark
    file (e.g. ``NATS-tss-v1_0-3ffb9-simple``), which this project does not ship.

    Args:
        source: Path of the benchmark file/folder, or an API object already created with
            ``nats_bench.create(path, "tss", ...)``.
        dataset: ``"cifar10-valid"``, ``"cifar10"``, ``"cifar100"`` or ``"ImageNet16-120"``.
        metric: A key of ``api.get_more_info(...)``, e.g. ``"valid-accuracy"``,
            ``"test-accuracy"``, ``"train-accuracy"``.
        hp: Training schedule, ``"12"`` or ``"200"`` epochs.

    Returns:
        Columns ``index`` (this package's index), ``arch``, ``api_index`` (NATS-Bench's own
        index) and ``metric``'s name, sorted by ``index``.

    Raises:
        MissingDependencyError: ``source`` is a path and ``nats_bench`` is not installed.
        InvalidArgumentError: ``metric`` is not provided by the API for ``dataset``.
    """
    if isinstance(source, (str, os.PathLike)):
        try:
            from nats_bench import create
        except ImportError as exc:
            raise MissingDependencyError(
                "load_nats_bench needs the optional package 'nats_bench' (pip install nats_bench) and a "
                f"NATS-Bench topology file; could not import it: {exc}"
            ) from None
        api = create(os.fspath(source), "tss", fast_mode=True, verbose=False)
    else:
        api = source
    rows = []
    for api_index in range(len(api)):
        arch = api.arch(api_index)
        info = api.get_more_info(api_index, dataset, hp=hp, is_random=False)
        if metric not in info:
            raise InvalidArgumentError(
                f"NATS-Bench has no {metric!r} for dataset {dataset!r}; available: {', '.join(sorted(info))}"
            )
        spec = NB201Spec.parse(arch)
        rows.append((spec.index, spec.name, api_index, float(info[metric])))
    df = pd.DataFrame(rows, columns=["index", "arch", "api_index", metric])
    return df.sort_values("index", ignore_index=True)

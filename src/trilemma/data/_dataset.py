"""The dataset container, the dataset registry and :func:`load_dataset`.

Every dataset is registered as a :class:`DatasetSource`: a loader that returns raw numpy
arrays (:class:`RawData`) plus a description. :func:`load_dataset` does the part that is
the same for all of them: the fixed, seeded train/test split (for sources without an
official split), pixel scaling, flattening, the per-sample normalization, optional
seeded sub-sampling, and the conversion to tensors.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from trilemma._checks import is_int, is_real
from trilemma._registry import Registry
from trilemma.errors import InvalidArgumentError, InvalidTypeError

__all__ = [
    "Dataset",
    "DatasetSource",
    "RawData",
    "DATASETS",
    "NORMALIZATIONS",
    "TASKS",
    "register_dataset",
    "load_dataset",
    "list_datasets",
    "dataset_info",
    "default_root",
    "normalize_inputs",
]

logger = logging.getLogger(__name__)

TASKS = ("classification", "regression", "unlabeled")
Task = Literal["classification", "regression", "unlabeled"]
NORMALIZATIONS = ("none", "l2", "standardize")
Normalization = Literal["none", "l2", "standardize"]
KINDS = ("bundled", "synthetic", "disk", "reference")
DEFAULT_TEST_FRACTION = 0.2
ENV_ROOT = "TRILEMMA_DATA"


@dataclass(frozen=True, repr=False)
class Dataset:
    """A train/test split held as tensors.

    Attributes:
        name: Registry name of the source (``"digits"``, ...).
        x_train: Inputs ``(n_train, *input_shape)``, floating point.
        y_train: Targets: class indices ``(n_train,)`` int64 for classification, values
            ``(n_train, num_outputs)`` for regression, ``-1`` for unlabeled data.
        x_test: Inputs ``(n_test, *input_shape)`` (``n_test`` may be 0).
        y_test: Targets of the test inputs, shaped like ``y_train``.
        num_classes: Number of classes (classification, unlabeled), or number of
            regression outputs.
        input_shape: Shape of one sample as stored in ``x_train`` (``(64,)`` when
            flattened, ``(1, 8, 8)`` when not).
        task: ``"classification"``, ``"regression"`` or ``"unlabeled"``.
        metadata: Provenance and preprocessing (source, split, normalization,
            original sample shape, class names, ...).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    task: Task
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def in_features(self) -> int:
        """Number of input features after flattening (``prod(input_shape)``)."""
        return math.prod(self.input_shape)

    @property
    def num_outputs(self) -> int:
        """Output dimension a model needs (classes, or regression outputs)."""
        return self.num_classes

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Dataset:
        """A copy on ``device`` with floating tensors cast to ``dtype`` (labels keep int64)."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else None)

        return replace(
            self,
            x_train=move(self.x_train),
            y_train=move(self.y_train),
            x_test=move(self.x_test),
            y_test=move(self.y_test),
        )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, task={self.task!r}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}, num_classes={self.num_classes}, "
            f"normalize={self.metadata.get('normalize')!r})"
        )


@dataclass
class RawData:
    """What a loader returns: numpy arrays before the common preprocessing.

    ``x_test``/``y_test`` are ``None`` when the source has no official split.
    ``pixel_max`` (e.g. 255 or 16) rescales integer pixels to ``[0, 1]``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    num_classes: int
    task: Task
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    pixel_max: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


Loader = Callable[..., RawData]


@dataclass(frozen=True)
class DatasetSource:
    """A registered dataset.

    Attributes:
        name: Registry name.
        loader: ``loader(*, root, download, **options) -> RawData``.
        description: One line for ``trilemma datasets``.
        task: Task of the default options.
        kind: ``"bundled"`` (shipped with an installed package), ``"synthetic"``,
            ``"disk"`` (official files under a data root) or ``"reference"`` (the
            project's shared reference data).
        default_normalize: Normalization used when ``load_dataset(normalize=None)``.
        official_split: Whether the loader provides its own test set.
        options: The loader's own keyword options and their defaults.
        citation: Where the data come from.
    """

    name: str
    loader: Loader
    description: str
    task: Task
    kind: str
    default_normalize: Normalization = "l2"
    official_split: bool = False
    default_test_fraction: float = DEFAULT_TEST_FRACTION
    options: Mapping[str, Any] = field(default_factory=dict)
    citation: str = ""


DATASETS: Registry[DatasetSource] = Registry("dataset")


def register_dataset(
    name: str,
    *,
    description: str,
    task: Task,
    kind: str,
    default_normalize: Normalization = "l2",
    official_split: bool = False,
    default_test_fraction: float = DEFAULT_TEST_FRACTION,
    citation: str = "",
) -> Callable[[Loader], Loader]:
    """Decorator registering a loader as a dataset (see :class:`DatasetSource`).

    The loader's keyword-only parameters other than ``root`` and ``download`` become the
    dataset's options; :func:`load_dataset` rejects any other option by name.

    Raises:
        DuplicateNameError: ``name`` is already registered.
        InvalidArgumentError: ``task``, ``kind`` or ``default_normalize`` is not allowed.
    """
    if task not in TASKS:
        raise InvalidArgumentError(f"task must be one of {TASKS}, got {task!r}")
    if kind not in KINDS:
        raise InvalidArgumentError(f"kind must be one of {KINDS}, got {kind!r}")
    if default_normalize not in NORMALIZATIONS:
        raise InvalidArgumentError(f"default_normalize must be one of {NORMALIZATIONS}, got {default_normalize!r}")

    def wrap(loader: Loader) -> Loader:
        params = inspect.signature(loader).parameters
        options = {
            k: p.default
            for k, p in params.items()
            if k not in ("root", "download") and p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        DATASETS.register(
            name,
            DatasetSource(
                name=name,
                loader=loader,
                description=description,
                task=task,
                kind=kind,
                default_normalize=default_normalize,
                official_split=official_split,
                default_test_fraction=default_test_fraction,
                options=options,
                citation=citation,
            ),
        )
        return loader

    return wrap


def list_datasets(pattern: str | None = None) -> list[str]:
    """Registered dataset names, sorted, optionally filtered by a shell pattern (``"mnist*"``)."""
    return DATASETS.names(pattern)


def dataset_info(name: str) -> DatasetSource:
    """The :class:`DatasetSource` registered as ``name``.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists valid names).
    """
    return DATASETS.get(name)


def default_root() -> Path:
    """Where on-disk datasets live: ``$TRILEMMA_DATA`` if set, else ``~/.cache/trilemma/data``."""
    env = os.environ.get(ENV_ROOT)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "trilemma" / "data"


# --------------------------------------------------------------------------- preprocessing
def normalize_inputs(
    x_train: np.ndarray, x_test: np.ndarray, method: Normalization
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Apply a normalization to flattened-or-not inputs, sample axis first.

    Args:
        x_train: ``(n_train, ...)`` floating array.
        x_test: ``(n_test, ...)`` floating array.
        method: ``"none"``; ``"l2"``: every sample scaled to unit Euclidean norm over all
            its features (the papers' preprocessing for measures at initialization; an
            all-zero sample stays zero); ``"standardize"``: per-feature mean and standard
            deviation estimated on the training split only (constant features keep std 1).

    Returns:
        ``(x_train, x_test, info)``; ``info`` records the statistics used.

    Raises:
        InvalidArgumentError: unknown ``method``.
    """
    if method == "none":
        return x_train, x_test, {}
    if method == "l2":

        def unit(x: np.ndarray) -> np.ndarray:
            if x.shape[0] == 0:
                return x
            flat = x.reshape(x.shape[0], -1)
            norms = np.linalg.norm(flat, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            return (flat / norms).reshape(x.shape)

        return unit(x_train), unit(x_test), {}
    if method == "standardize":
        mean = x_train.mean(axis=0, keepdims=True)
        std = x_train.std(axis=0, keepdims=True)
        std[std == 0] = 1.0
        return (x_train - mean) / std, (x_test - mean) / std, {"standardized_on": "train"}
    raise InvalidArgumentError(f"normalize must be one of {NORMALIZATIONS} or None, got {method!r}")


def _split(
    x: np.ndarray, y: np.ndarray, task: str, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Seeded split; stratified for classification when every class has >= 2 samples."""
    from sklearn.model_selection import train_test_split

    n = x.shape[0]
    n_test = math.ceil(test_fraction * n)
    if n_test == 0:
        return x, y, x[:0], y[:0], False
    if n - n_test < 1:
        raise InvalidArgumentError(
            f"test_fraction={test_fraction} leaves no training samples out of {n}; use a smaller fraction"
        )
    stratify = None
    if task == "classification":
        _, counts = np.unique(y, return_counts=True)
        n_classes = len(counts)
        if counts.min() >= 2 and n_test >= n_classes and n - n_test >= n_classes:
            stratify = y
        else:
            logger.warning("split of %d samples is not stratified (a class is too small for %d test samples)",
                           n, n_test)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=n_test, random_state=seed, stratify=stratify)
    return x_tr, y_tr, x_te, y_te, stratify is not None


def _subsample(
    x: np.ndarray, y: np.ndarray, n: int | None, rng: np.random.Generator, what: str
) -> tuple[np.ndarray, np.ndarray]:
    if n is None:
        return x, y
    if not is_int(n) or n < 0:
        raise InvalidArgumentError(f"{what} must be a non-negative int or None, got {n!r}")
    if n > x.shape[0]:
        raise InvalidArgumentError(f"{what}={n} is larger than the {x.shape[0]} samples available")
    idx = np.sort(rng.choice(x.shape[0], size=n, replace=False))
    return x[idx], y[idx]


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    normalize: Normalization | None = None,
    flatten: bool = True,
    test_fraction: float | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    download: bool = False,
    dtype: torch.dtype = torch.float32,
    **options: Any,
) -> Dataset:
    """Load a registered dataset as a :class:`Dataset`.

    Args:
        name: A name from :func:`list_datasets`.
        root: Folder holding on-disk datasets (default :func:`default_root`:
            ``$TRILEMMA_DATA`` or ``~/.cache/trilemma/data``).
        seed: Seed of the train/test split (sources without an official split), of the
            sub-sampling, and nothing else; synthetic sets take their own ``data_seed``.
        normalize: ``"none"``, ``"l2"`` (unit L2 norm per sample; the papers'
            preprocessing for measures at initialization) or ``"standardize"``
            (per-feature, training-split statistics; the usual preprocessing for
            training). ``None`` picks the source's default: ``"standardize"`` for the
            labelled image sets (digits, mnist5k, mnist, fashion_mnist, cifar10/100),
            ``"l2"`` for ``cifar10_unlabeled`` (label-free measures), ``"none"`` for
            ``mnist1d`` (already centred and scaled by its generator) and the synthetic
            sets. Integer pixels are always first scaled to ``[0, 1]``.
        flatten: Flatten every sample to a vector (the papers' MLPs); otherwise images are
            channel-first ``(C, H, W)``.
        test_fraction: Fraction of the samples held out as the test set (the count is
            rounded up), for sources without an official split; ``None`` uses the source's
            default (0.2). Giving it for a source with an official split raises.
        max_train: Keep a seeded random subset of this many training samples.
        max_test: Keep a seeded random subset of this many test samples.
        download: Allow on-disk sources to download their official files when missing.
        dtype: Floating dtype of the inputs (and of regression targets).
        **options: Source-specific options (see ``dataset_info(name).options``).

    Returns:
        The :class:`Dataset`; ``metadata`` records the source, split and preprocessing.

    Raises:
        UnknownNameError: ``name`` is not registered.
        InvalidArgumentError: an option or value is not allowed (the message lists them).
        DatasetNotFoundError: an on-disk source is missing; the message says where it
            looked and how to get the files.

    Example:
        >>> ds = load_dataset("digits")
        >>> ds.x_train.shape, ds.x_test.shape, ds.num_classes
        (torch.Size([1437, 64]), torch.Size([360, 64]), 10)
    """
    source = DATASETS.get(name)
    unknown = sorted(set(options) - set(source.options))
    if unknown:
        allowed = ", ".join(f"{k}={v!r}" for k, v in source.options.items()) or "none"
        raise InvalidArgumentError(
            f"dataset {name!r} has no option(s) {', '.join(map(repr, unknown))}; its options are: {allowed}"
        )
    if not is_int(seed):
        raise InvalidTypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if normalize is not None and normalize not in NORMALIZATIONS:
        raise InvalidArgumentError(f"normalize must be one of {NORMALIZATIONS} or None, got {normalize!r}")
    if not isinstance(flatten, bool):
        raise InvalidTypeError(f"flatten must be a bool, got {type(flatten).__name__} {flatten!r}")
    if test_fraction is not None:
        if source.official_split:
            raise InvalidArgumentError(
                f"dataset {name!r} has an official train/test split; test_fraction must be None "
                f"(got {test_fraction!r}); use max_train / max_test to shrink it"
            )
        if not is_real(test_fraction) or not 0 <= test_fraction < 1:
            raise InvalidArgumentError(f"test_fraction must be a number in [0, 1), got {test_fraction!r}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InvalidTypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    root_path = Path(root).expanduser() if root is not None else default_root()

    raw = source.loader(root=root_path, download=download, **options)
    task = raw.task
    x_tr = np.asarray(raw.x_train)
    y_tr = np.asarray(raw.y_train)
    if raw.x_test is None:
        frac = source.default_test_fraction if test_fraction is None else float(test_fraction)
        x_tr, y_tr, x_te, y_te, stratified = _split(x_tr, y_tr, task, frac, int(seed))
        split = {"split": "seeded", "test_fraction": frac, "split_seed": int(seed), "stratified": stratified}
    else:
        x_te, y_te = np.asarray(raw.x_test), np.asarray(raw.y_test)
        split = {"split": "official"}
    rng = np.random.default_rng(int(seed))
    x_tr, y_tr = _subsample(x_tr, y_tr, max_train, rng, "max_train")
    x_te, y_te = _subsample(x_te, y_te, max_test, rng, "max_test")

    work = np.float64 if dtype == torch.float64 else np.float32
    x_tr = x_tr.astype(work)
    x_te = x_te.astype(work)
    if raw.pixel_max is not None:
        x_tr /= raw.pixel_max
        x_te /= raw.pixel_max
    raw_shape = tuple(int(s) for s in x_tr.shape[1:])
    if flatten:
        x_tr = x_tr.reshape(x_tr.shape[0], math.prod(raw_shape))
        x_te = x_te.reshape(x_te.shape[0], math.prod(raw_shape))
    method = source.default_normalize if normalize is None else normalize
    x_tr, x_te, norm_info = normalize_inputs(x_tr, x_te, method)

    if task == "regression":
        y_tr = y_tr.reshape(y_tr.shape[0], math.prod(y_tr.shape[1:]))
        y_te = y_te.reshape(y_te.shape[0], math.prod(y_tr.shape[1:]))
        y_train = torch.as_tensor(y_tr, dtype=dtype)
        y_test = torch.as_tensor(y_te, dtype=dtype)
    else:
        y_train = torch.as_tensor(y_tr.astype(np.int64))
        y_test = torch.as_tensor(y_te.astype(np.int64))
    metadata = {
        "source": name,
        "kind": source.kind,
        "citation": source.citation,
        "normalize": method,
        "flatten": flatten,
        "raw_shape": raw_shape,
        "pixel_max": raw.pixel_max,
        **split,
        **norm_info,
        "options": {**source.options, **options},
        **raw.metadata,
    }
    ds = Dataset(
        name=name,
        x_train=torch.as_tensor(x_tr, dtype=dtype),
        y_train=y_train,
        x_test=torch.as_tensor(x_te, dtype=dtype),
        y_test=y_test,
        num_classes=int(raw.num_classes),
        input_shape=tuple(int(s) for s in x_tr.shape[1:]),
        task=task,
        metadata=metadata,
    )
    logger.info("loaded %r", ds)
    return ds

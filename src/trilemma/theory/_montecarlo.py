"""Finite-width Monte Carlo of the DAG-MLP in the NTK parameterization (numpy only).

The network is the one of :mod:`trilemma.theory._exact` (stem ``sqrt(2/N0)·W x`` + ReLU, linear
edges ``ReLU(sqrt(2/m)·W h)``, skip edges, readout ``v·h_H/sqrt(m)`` with one output, no bias,
all weights N(0, 1)); it equals ``trilemma.models.build_model(spec, N0, 1, m, bias=False,
init="ntk")`` with the same weights. Per seed it computes

* the empirical NNGP Gram of the output node, ``(1/m)·h_H h_Hᵀ`` (uncentered);
* the empirical NTK Gram of the scalar output ``J Jᵀ``, assembled per layer as
  ``(A Aᵀ) ⊙ (B Bᵀ)`` with ``A`` the (scaled) layer input and ``B`` the gradient at the layer's
  pre-activation (manual backprop; Jacot et al. 2018);
* the length element ``‖dh_H/dθ‖/sqrt(m)`` along the great circle
  ``x(θ) = sqrt(N0)(u0 cos θ + u1 sin θ)`` (forward-mode tangents; Poole et al. 2016;
  Theorem 4.1 of Chen, Huang & Wang, AutoML-Conf 2023), averaged over a θ grid.

Seeds give independent networks: ``numpy.random.default_rng(seed)`` draws the stem, then the
linear edges in string order, then the readout.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from trilemma._checks import is_int
from trilemma.errors import InvalidArgumentError, InvalidTypeError
from trilemma.spaces import CellSpec
from trilemma.theory._validate import as_spec, as_width

__all__ = ["MonteCarloResult", "monte_carlo", "great_circle"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """One BLAS thread: the matmuls here are small ``(n, m) @ (m, m)`` products, where BLAS
    threads only add synchronization (3-10x slower on a loaded machine). ``threadpoolctl`` comes
    with scikit-learn; without it the setting is left alone."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn, a dependency, installs it
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@dataclass(frozen=True)
class _Net:
    """One sampled network: stem ``(m, N0)``, linear edges ``{(s, t): (m, m)}``, readout ``(m,)``."""

    spec: CellSpec
    stem: np.ndarray
    edges: dict[tuple[int, int], np.ndarray]
    readout: np.ndarray

    @property
    def width(self) -> int:
        return self.stem.shape[0]

    @property
    def in_features(self) -> int:
        return self.stem.shape[1]


def _sample_net(spec: CellSpec, in_features: int, width: int, seed: int) -> _Net:
    rng = np.random.default_rng(seed)
    stem = rng.standard_normal((width, in_features))
    edges = {(s, t): rng.standard_normal((width, width)) for s, t, op in spec.edges() if op == 2}
    readout = rng.standard_normal(width)
    return _Net(spec, stem, edges, readout)


def _forward(
    net: _Net, X: np.ndarray, dX: np.ndarray | None = None
) -> tuple[list[np.ndarray], dict[tuple[int, int], np.ndarray], np.ndarray, list[np.ndarray] | None]:
    """Node features (and tangents if ``dX`` is given).

    Returns:
        ``(h, z, u, dh)``: node features ``h[a]`` ``(n, m)``, edge pre-activations ``z[(s, t)]``,
        stem pre-activation ``u``, node tangents ``dh[a]`` (or None).
    """
    spec, m, n0 = net.spec, net.width, net.in_features
    s0, s1 = math.sqrt(2.0 / n0), math.sqrt(2.0 / m)
    u = s0 * (X @ net.stem.T)
    h = [np.maximum(u, 0.0)]
    dh = [(u > 0) * (s0 * (dX @ net.stem.T))] if dX is not None else None
    z: dict[tuple[int, int], np.ndarray] = {}
    for t in range(1, spec.nodes + 1):
        acc = np.zeros_like(h[0])
        dacc = np.zeros_like(h[0]) if dh is not None else None
        for s in range(t):
            op = spec.ops[t - 1][s]
            if op == 1:
                acc += h[s]
                if dh is not None:
                    dacc += dh[s]
            elif op == 2:
                W = net.edges[(s, t)]
                zz = s1 * (h[s] @ W.T)
                z[(s, t)] = zz
                acc += np.maximum(zz, 0.0)
                if dh is not None:
                    dacc += (zz > 0) * (s1 * (dh[s] @ W.T))
        h.append(acc)
        if dh is not None:
            dh.append(dacc)
    return h, z, u, dh


def _kernels(net: _Net, X: np.ndarray, trainable_stem: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Empirical NNGP ``(1/m) h_H h_Hᵀ`` and NTK ``J Jᵀ`` of the scalar output, each ``(n, n)``."""
    spec, m, n0 = net.spec, net.width, net.in_features
    s0, s1 = math.sqrt(2.0 / n0), math.sqrt(2.0 / m)
    h, z, u, _ = _forward(net, X)
    H = spec.nodes
    nngp = h[H] @ h[H].T / m
    ntk = nngp.copy()  # readout: d f / d v = h_H / sqrt(m)
    delta = [np.zeros_like(h[0]) for _ in range(H + 1)]  # d f / d h_a
    delta[H] += net.readout / math.sqrt(m)
    for t in range(H, 0, -1):
        for s in range(t):
            op = spec.ops[t - 1][s]
            if op == 1:
                delta[s] += delta[t]
            elif op == 2:
                B = delta[t] * (z[(s, t)] > 0)  # gradient at the pre-activation
                A = s1 * h[s]  # scaled layer input
                ntk += (A @ A.T) * (B @ B.T)
                delta[s] += s1 * (B @ net.edges[(s, t)])
    if trainable_stem:
        B = delta[0] * (u > 0)
        A = s0 * X
        ntk += (A @ A.T) * (B @ B.T)
    return nngp, 0.5 * (ntk + ntk.T)


def great_circle(in_features: int, thetas: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points and tangents of a random great circle of radius ``sqrt(N0)``.

    ``x(θ) = sqrt(N0)(u0 cos θ + u1 sin θ)`` with ``u0, u1`` orthonormal (QR of a seeded Gaussian
    ``(N0, 2)`` matrix), ``θ_k = 2πk/thetas``.

    Returns:
        ``(theta (T,), x (T, N0), dx/dθ (T, N0))``.

    Raises:
        InvalidArgumentError: ``in_features < 2`` or ``thetas < 1``.
    """
    if in_features < 2:
        raise InvalidArgumentError(f"a great circle needs in_features >= 2, got {in_features}")
    if not is_int(thetas) or thetas < 1:
        raise InvalidArgumentError(f"thetas must be a positive int, got {thetas!r}")
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((in_features, 2)))
    u0, u1 = q[:, 0], q[:, 1]
    theta = 2 * np.pi * np.arange(thetas) / thetas
    r = math.sqrt(in_features)
    x = r * (np.cos(theta)[:, None] * u0 + np.sin(theta)[:, None] * u1)
    dx = r * (-np.sin(theta)[:, None] * u0 + np.cos(theta)[:, None] * u1)
    return theta, x, dx


@dataclass(frozen=True)
class MonteCarloResult:
    """Finite-width estimates averaged over seeds.

    Attributes:
        spec: The cell.
        width: m.
        seeds: The seeds used.
        nngp: ``(n, n)`` empirical NNGP Gram ``(1/m) h_H h_Hᵀ``, mean over seeds.
        ntk: ``(n, n)`` empirical NTK Gram of the scalar output, mean over seeds.
        nngp_std_error: ``(n, n)`` standard error of :attr:`nngp` over seeds (None for one seed).
        ntk_std_error: ``(n, n)`` standard error of :attr:`ntk` (None for one seed).
        nngp_lambda_min: least eigenvalue of the mean NNGP Gram (float64 ``eigvalsh``).
        ntk_lambda_min: least eigenvalue of the mean NTK Gram.
        nngp_lambda_min_per_seed: ``(S,)`` least eigenvalue of each seed's NNGP Gram.
        ntk_lambda_min_per_seed: ``(S,)`` same for the NTK.
        length_element: mean over θ and seeds of ``‖dh_H/dθ‖/sqrt(m)``; None when ``thetas=0``.
        length_element_per_seed: ``(S,)`` the θ-mean per seed; None when ``thetas=0``.
    """

    spec: CellSpec
    width: int
    seeds: tuple[int, ...]
    nngp: np.ndarray
    ntk: np.ndarray
    nngp_std_error: np.ndarray | None
    ntk_std_error: np.ndarray | None
    nngp_lambda_min: float
    ntk_lambda_min: float
    nngp_lambda_min_per_seed: np.ndarray
    ntk_lambda_min_per_seed: np.ndarray
    length_element: float | None
    length_element_per_seed: np.ndarray | None


def _as_seeds(seeds: object) -> tuple[int, ...]:
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        if int(seeds) < 1:
            raise InvalidArgumentError(f"seeds as an int is a count and must be >= 1, got {seeds!r}")
        return tuple(range(int(seeds)))
    if isinstance(seeds, Sequence) and not isinstance(seeds, str):
        out = tuple(seeds)
        if not out or not all(is_int(s) and s >= 0 for s in out):
            raise InvalidArgumentError(f"seeds must be a non-empty sequence of ints >= 0, got {seeds!r}")
        return tuple(int(s) for s in out)
    raise InvalidTypeError(f"seeds must be an int (a count) or a sequence of ints, got {type(seeds).__name__} {seeds!r}")


def monte_carlo(
    spec: CellSpec | str,
    X: np.ndarray,
    width: int,
    seeds: int | Sequence[int] = (0, 1, 2, 3),
    *,
    thetas: int = 32,
    circle_seed: int = 0,
    trainable_stem: bool = True,
) -> MonteCarloResult:
    """Monte-Carlo NNGP, NTK and curve length of the DAG-MLP at finite width (numpy, float64).

    The finite-width counterpart of :func:`~trilemma.theory.exact_kernels` (Jacot et al. 2018
    empirical NTK; Poole et al. 2016 length element; see the module docstring).

    Args:
        spec: The cell.
        X: Inputs ``(n, N0, ...)``, flattened to ``(n, N0)``; normalize them to ``‖x‖² = N0``
            to match the papers' ``K⁽⁰⁾_ii = 1``.
        width: m.
        seeds: A sequence of seeds, or an int ``k`` meaning seeds ``0..k-1``.
        thetas: Number of θ values on the great circle (0 skips the length element).
        circle_seed: Seed of the great circle's orthonormal pair ``(u0, u1)`` (same for all
            network seeds).
        trainable_stem: Whether the stem weights are parameters of the NTK (see
            :func:`~trilemma.theory.exact_kernels`).

    Returns:
        :class:`MonteCarloResult`.

    Raises:
        InvalidArgumentError: bad ``X``, ``width``, ``seeds`` or ``thetas``.
    """
    spec = as_spec(spec)
    m = as_width(width)
    seed_list = _as_seeds(seeds)
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[0] < 1 or not np.all(np.isfinite(arr)):
        raise InvalidArgumentError(f"X must be a finite array of shape (n, N0, ...) with n >= 1, got shape {arr.shape}")
    Xf = arr.reshape(arr.shape[0], -1)
    n, n0 = Xf.shape
    if not is_int(thetas) or thetas < 0:
        raise InvalidArgumentError(f"thetas must be an int >= 0, got {thetas!r}")
    circle = great_circle(n0, int(thetas), circle_seed) if thetas else None

    nngps, ntks, lam_nngp, lam_ntk, lengths = [], [], [], [], []
    with _single_threaded_blas():
        for seed in seed_list:
            net = _sample_net(spec, n0, m, seed)
            nngp, ntk = _kernels(net, Xf, trainable_stem)
            nngps.append(nngp)
            ntks.append(ntk)
            lam_nngp.append(np.linalg.eigvalsh(nngp)[0])
            lam_ntk.append(np.linalg.eigvalsh(ntk)[0])
            if circle is not None:
                _, xc, dxc = circle
                _, _, _, dh = _forward(net, xc, dxc)
                if dh is None:  # pragma: no cover - _forward returns tangents whenever dX is given
                    raise InvalidArgumentError("the forward pass returned no tangents")
                lengths.append(float(np.mean(np.linalg.norm(dh[-1], axis=1)) / math.sqrt(m)))
    S = len(seed_list)
    nngp_all, ntk_all = np.stack(nngps), np.stack(ntks)
    nngp_mean, ntk_mean = nngp_all.mean(axis=0), ntk_all.mean(axis=0)

    def stderr(a: np.ndarray) -> np.ndarray | None:
        return a.std(axis=0, ddof=1) / math.sqrt(S) if S > 1 else None

    logger.debug("monte carlo of %s: n=%d, m=%d, %d seeds", spec.name, n, m, S)
    return MonteCarloResult(
        spec=spec,
        width=m,
        seeds=seed_list,
        nngp=nngp_mean,
        ntk=ntk_mean,
        nngp_std_error=stderr(nngp_all),
        ntk_std_error=stderr(ntk_all),
        nngp_lambda_min=float(np.linalg.eigvalsh(nngp_mean)[0]),
        ntk_lambda_min=float(np.linalg.eigvalsh(ntk_mean)[0]),
        nngp_lambda_min_per_seed=np.asarray(lam_nngp),
        ntk_lambda_min_per_seed=np.asarray(lam_ntk),
        length_element=float(np.mean(lengths)) if lengths else None,
        length_element_per_seed=np.asarray(lengths) if lengths else None,
    )

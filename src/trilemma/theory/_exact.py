"""Exact infinite-width NNGP and NTK of a DAG cell on a given input Gram matrix.

Parameterization (the NTK parameterization; no bias, no BatchNorm), width m → ∞:

* stem ``u = sqrt(2/N0)·W x``, ``h_0 = ReLU(u)``;
* linear edge ``g_st = ReLU(sqrt(2/m)·W_st h_s)``; skip edge passes ``h_s``; zero edge is absent;
* node ``h_t = Σ_{skip s→t} h_s + Σ_{linear s→t} g_st`` (a node without incoming edges is 0);
* readout ``f(x) = (1/sqrt(m))·v·h_H`` with one output; all weights i.i.d. N(0, 1).

With ``K_in(i, j) = x_i·x_j / N0`` the recursion tracks, for all node pairs ``(a, b)``, the
**uncentered** cross-covariances ``Σ[a, b](i, j) = lim (1/m) Σ_k h_{a,k}(x_i) h_{b,k}(x_j)`` and the
first moments ``M[a](i) = lim (1/m) Σ_k h_{a,k}(x_i)`` (ReLU outputs have non-zero means):

* stem: ``Σ[0,0] = A(K_in)``, ``M[0](i) = sqrt(K_in(i,i)/π)``, with the arc-cosine kernel
  ``A(S)(i,j) = sqrt(S_ii S_jj)·f(ρ_ij)``, ``ρ_ij = S_ij/sqrt(S_ii S_jj)`` (Cho & Saul 2009);
* a linear edge from ``s`` has same-edge covariance ``A(Σ[s,s])`` and mean ``μ(i) = sqrt(Σ[s,s](i,i)/π)``;
  two different linear edges (independent weights) have cross-covariance ``μ(i)·μ'(j)``; a linear
  edge into ``t`` against an earlier node ``t' < t`` (independent of ``W_st``) gives ``μ(i)·M[t'](j)``;
* node sums expand bilinearly.

The NNGP of the cell output is ``Σ[H, H]`` (the limit of the uncentered Gram ``(1/m) h_H h_Hᵀ``).

The NTK uses the gradient independence assumption (Yang 2020, "Tensor Programs II"; exact for this
architecture because the readout is Gaussian and used once). Let ``c_a(u)`` be the number of
skip-only paths ``a → u`` (``c_a(a) = 1``). Pairs of backward paths contribute in the limit only
when they pass through the same sequence of linear edges, so the backward Gram at node ``a`` is
``D[a] = c_a(H)² + Σ_{linear e = (u, w)} c_a(u)² · K̇_e ⊙ D[w]`` (``D[H] = 1``), with
``K̇_e(i, j) = ḟ(ρ_ij of Σ[u, u])``, and

    NTK = Σ[H, H]  +  Σ_{linear e=(s,t)} Σ[s,s] ⊙ K̇_e ⊙ D[t]  +  K_in ⊙ ḟ(ρ of K_in) ⊙ D[0]

(readout, cell edges, stem; Jacot et al. 2018). For a chain this is the usual recursion
``Θ⁽ʰ⁾ = Σ⁽ʰ⁾ + K̇⁽ʰ⁾ ⊙ Θ⁽ʰ⁻¹⁾``. A dead node (zero variance, e.g. no incoming edge) gives 0
everywhere, with ``ReLU'(0) = 0`` as in PyTorch, never NaN.

Chen, Huang & Wang (AutoML-Conf 2023) drop the ReLU-mean cross terms; the Monte-Carlo estimate of
:func:`~trilemma.theory.monte_carlo` is the judge of this recursion (see ``tests/test_theory_exact.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from trilemma.errors import InvalidArgumentError
from trilemma.spaces import CellSpec
from trilemma.theory._maps import _f, _fdot
from trilemma.theory._validate import as_gram, as_spec

__all__ = ["ExactKernels", "exact_kernels", "exact_length_element", "input_gram", "skip_path_counts"]

logger = logging.getLogger(__name__)


def input_gram(X: np.ndarray) -> np.ndarray:
    """``K_in = X Xᵀ / N0`` for inputs ``X`` of shape ``(n, N0)`` (trailing dims are flattened).

    Raises:
        InvalidArgumentError: ``X`` has fewer than 2 dimensions, no features or non-finite values.
    """
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[0] < 1 or int(np.prod(arr.shape[1:])) < 1:
        raise InvalidArgumentError(f"X must have shape (n, N0, ...) with n >= 1 and N0 >= 1, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidArgumentError("X must be finite; got NaN or inf")
    flat = arr.reshape(arr.shape[0], -1)
    return flat @ flat.T / flat.shape[1]


def _arccos(S: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arc-cosine kernel ``A(S)``, derivative kernel ``K̇`` and ReLU mean ``μ`` of a Gram ``S``.

    ``A(S)_ij = sqrt(S_ii S_jj) f(ρ_ij)``, ``K̇_ij = ḟ(ρ_ij)``, ``μ_i = sqrt(S_ii/π)`` for a
    pre-activation with covariance ``2S`` (c_σ = 2). Rows of a zero-variance input are 0
    (``ReLU(0) = ReLU'(0) = 0``).
    """
    d = np.maximum(np.diag(S), 0.0)
    norm = np.sqrt(np.outer(d, d))
    alive = norm > 0
    rho = np.clip(np.divide(S, norm, out=np.zeros_like(S), where=alive), -1.0, 1.0)
    # the diagonal correlation is exactly 1; 1 - ulp would cost ~1e-8 through arccos' square root
    np.fill_diagonal(rho, np.where(d > 0, 1.0, 0.0))
    K = np.where(alive, norm * _f(rho), 0.0)
    Kdot = np.where(alive, _fdot(rho), 0.0)
    return K, Kdot, np.sqrt(d / np.pi)


def skip_path_counts(spec: CellSpec | str) -> np.ndarray:
    """``c[a, u]`` = number of paths ``a → u`` using skip edges only (``c[a, a] = 1``).

    Returns:
        ``(H+1, H+1)`` int array, upper triangular.
    """
    spec = as_spec(spec)
    H = spec.nodes
    c = np.zeros((H + 1, H + 1), dtype=np.int64)
    for a in range(H + 1):
        c[a, a] = 1
        for u in range(a + 1, H + 1):
            c[a, u] = sum(c[a, s] for s in range(a, u) if spec.ops[u - 1][s] == 1)
    return c


class KernelSpectra:
    """The least eigenvalues of a kernel record's ``nngp`` and ``ntk`` Grams (float64)."""

    nngp: np.ndarray
    ntk: np.ndarray

    @property
    def nngp_lambda_min(self) -> float:
        """Least eigenvalue of :attr:`nngp` (``numpy.linalg.eigvalsh``, float64)."""
        return float(np.linalg.eigvalsh(self.nngp)[0])

    @property
    def ntk_lambda_min(self) -> float:
        """Least eigenvalue of :attr:`ntk`."""
        return float(np.linalg.eigvalsh(self.ntk)[0])


@dataclass(frozen=True)
class ExactKernels(KernelSpectra):
    """Infinite-width kernels of a DAG cell (see the module docstring for the recursion).

    Attributes:
        spec: The cell.
        k_in: ``(n, n)`` input Gram ``X Xᵀ / N0``.
        sigma: ``(H+1, H+1, n, n)`` uncentered cross-covariances ``Σ[a, b](i, j)``
            (``sigma[b, a] = sigma[a, b].T``).
        means: ``(H+1, n)`` first moments ``M[a](i)``.
        backward: ``(H+1, n, n)`` backward Grams ``D[a]`` (``D[H] = 1``).
        nngp: ``(n, n)`` NNGP of the output node, ``Σ[H, H]``.
        ntk: ``(n, n)`` NTK of the scalar network output (stem — unless ``trainable_stem=False`` —,
            cell edges and readout).
    """

    spec: CellSpec
    k_in: np.ndarray
    sigma: np.ndarray
    means: np.ndarray
    backward: np.ndarray
    nngp: np.ndarray
    ntk: np.ndarray


def exact_kernels(spec: CellSpec | str, K_in: np.ndarray, *, trainable_stem: bool = True) -> ExactKernels:
    """Exact infinite-width NNGP and NTK of the DAG-MLP with cell ``spec``.

    See the module docstring for the parameterization and the recursion (Cho & Saul 2009
    arc-cosine kernels, Jacot et al. 2018 NTK, Yang 2020 gradient independence; it keeps the
    ReLU-mean cross terms that Chen, Huang & Wang, AutoML-Conf 2023, drop).

    Args:
        spec: The cell.
        K_in: ``(n, n)`` input Gram matrix ``x_i·x_j / N0`` (see :func:`input_gram`).
        trainable_stem: Whether the stem weights are parameters of the NTK (default). With
            ``False`` the NTK is taken w.r.t. the cell and readout weights only; for a chain it is
            then exactly the paper's ``G⁽ᴴ⁾`` recursion started at ``G⁽⁰⁾ = K⁽⁰⁾`` (node 0).

    Returns:
        :class:`ExactKernels` with ``(n, n)`` float64 ``nngp`` and ``ntk``.

    Raises:
        InvalidArgumentError: ``K_in`` is not a symmetric Gram matrix.
    """
    spec = as_spec(spec)
    K = as_gram(K_in)
    n, H = K.shape[0], spec.nodes
    sigma = np.zeros((H + 1, H + 1, n, n))
    means = np.zeros((H + 1, n))
    sigma[0, 0], _, means[0] = _arccos(K)
    edge_kdot: dict[tuple[int, int], np.ndarray] = {}

    for t in range(1, H + 1):
        # incoming terms: ("skip", s) or ("lin", s) with the edge's own kernel and mean
        terms: list[tuple[str, int]] = []
        lin_k: dict[int, np.ndarray] = {}
        lin_mu: dict[int, np.ndarray] = {}
        for s in range(t):
            op = spec.ops[t - 1][s]
            if op == 1:
                terms.append(("skip", s))
            elif op == 2:
                terms.append(("lin", s))
                lin_k[s], edge_kdot[(s, t)], lin_mu[s] = _arccos(sigma[s, s])

        def mean(term: tuple[str, int], lin_mu: dict[int, np.ndarray] = lin_mu) -> np.ndarray:
            kind, s = term
            return means[s] if kind == "skip" else lin_mu[s]

        # cross-covariance with every earlier node t' < t
        for tp in range(t):
            acc = np.zeros((n, n))
            for kind, s in terms:
                acc += sigma[s, tp] if kind == "skip" else np.outer(lin_mu[s], means[tp])
            sigma[t, tp] = acc
            sigma[tp, t] = acc.T
        # self-covariance: bilinear expansion over pairs of incoming terms
        acc = np.zeros((n, n))
        for a in terms:
            for b in terms:
                if a[0] == "skip" and b[0] == "skip":
                    acc += sigma[a[1], b[1]]
                elif a == b:  # the same linear edge
                    acc += lin_k[a[1]]
                else:  # different weights (or a node independent of the edge's weights)
                    acc += np.outer(mean(a), mean(b))
        sigma[t, t] = 0.5 * (acc + acc.T)
        for kind, s in terms:
            means[t] += means[s] if kind == "skip" else lin_mu[s]

    # backward Grams (gradient independence)
    c = skip_path_counts(spec)
    backward = np.zeros((H + 1, n, n))
    for node in range(H, -1, -1):
        acc = np.full((n, n), float(c[node, H] ** 2))
        for (u, w), kdot in edge_kdot.items():
            if u >= node and c[node, u]:
                acc += float(c[node, u] ** 2) * kdot * backward[w]
        backward[node] = acc

    nngp = sigma[H, H].copy()
    ntk = nngp.copy()
    for (s, t), kdot in edge_kdot.items():
        ntk += sigma[s, s] * kdot * backward[t]
    if trainable_stem:
        _, kdot_in, _ = _arccos(K)
        ntk += K * kdot_in * backward[0]
    ntk = 0.5 * (ntk + ntk.T)
    logger.debug("exact kernels of %s on %d inputs", spec.name, n)
    return ExactKernels(spec=spec, k_in=K, sigma=sigma, means=means, backward=backward, nngp=nngp, ntk=ntk)


def exact_length_element(spec: CellSpec | str) -> float:
    """Infinite-width length element ``lim ‖dh_H/dθ‖ / sqrt(m)`` along a great circle.

    For ``x(θ) = sqrt(N0)(u0 cos θ + u1 sin θ)`` (Poole et al. 2016; Theorem 4.1 of Chen, Huang &
    Wang, AutoML-Conf 2023) the pre-activation and its θ-derivative are uncorrelated (the input
    norm is constant), so each ReLU layer with c_σ = 2 keeps the tangent's mean square, tangents
    through different linear edges are uncorrelated, and
    ``‖dh_H/dθ‖²/m → Σ_{sequences of linear edges} (number of paths 0→H with that sequence)²``.
    A single path of any depth gives 1; Theorem 4.1's ``exp(−5d/(8m))`` is the finite-width
    correction of ``E‖J‖`` that this limit does not see.

    Args:
        spec: The cell.

    Returns:
        The limit (0.0 without a path).
    """
    spec = as_spec(spec)
    H = spec.nodes
    c = skip_path_counts(spec)
    lin = [(s, t) for s, t, op in spec.edges() if op == 2]
    L = np.zeros(H + 1)
    for a in range(H, -1, -1):
        L[a] = c[a, H] ** 2 + sum(c[a, u] ** 2 * L[w] for u, w in lin if u >= a)
    return float(np.sqrt(L[0]))

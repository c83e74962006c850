"""Closed-form theory of cell ensembles and pruned cells: the multigraph kernels (numpy only).

An ensemble of DAG cells on shared nodes (Chen, Huang & Wang, AutoML-Conf 2023, Table 1) is a
DAG **multigraph**: between nodes ``s < t`` one edge per member, each with its own weights.
:func:`multigraph_kernels` extends the exact infinite-width NNGP/NTK recursion of
:func:`~trilemma.theory.exact_kernels` (same parameterization: NTK parameterization, no bias,
one output; Jacot et al. 2018; Yang 2020 gradient independence; ReLU-mean cross terms kept)
from one edge per node pair to any number of parallel edges, and to random unstructured pruning:

* every incoming edge of node ``t`` is its own term of the node sum; two *different* linear
  edges — parallel or not — have independent weights, so their cross-covariance is the product
  of their ReLU means ``μ_e(i)·μ_e'(j)``; two skip edges from ``s`` and ``s'`` give ``Σ[s, s']``;
* a weight matrix pruned at ratio ``r`` (a fixed random mask keeping a fraction ``q = 1 − r``)
  makes the pre-activation variance ``q`` times as large: the edge's covariance is
  ``q·A(Σ[s, s])``, its mean ``sqrt(q)·μ``, its derivative kernel ``K̇`` is unchanged (ReLU is
  positively homogeneous); backward, the edge passes ``q·K̇ ⊙ D[t]``, and only the kept
  weights are parameters, so its NTK term is ``q·Σ[s, s] ⊙ K̇ ⊙ D[t]``. A pruned stem scales
  ``Σ[0, 0]``, ``M[0]`` and the stem's NTK term the same way; a pruned readout scales the
  backward Grams (``D[H] = q_out``) and the readout's NTK term ``q_out·Σ[H, H]``.

So ``NTK = q_out Σ[H, H] + Σ_{linear e=(s,t)} q_e Σ[s,s] ⊙ K̇_e ⊙ D[t] + q_stem K_in ⊙ K̇_in ⊙ D[0]``
with ``D[a] = q_out c_a(H)² + Σ_{linear e=(u,w)} c_a(u)² q_e K̇_e ⊙ D[w]`` and ``c_a(u)`` the
number of skip-only paths ``a → u`` of the multigraph (parallel skips count separately).
A one-member unpruned ensemble gives exactly :func:`~trilemma.theory.exact_kernels`
(``tests/test_ensembles_theory.py``); :func:`multigraph_monte_carlo` samples finite-width
networks with random masks, the judge of the recursion.

:func:`ensemble_theory_row` gives an ensemble the DAG space's closed-form columns (the paper's
Theorems 4.1/4.4/4.6 evaluated over the union's paths, which do not see pruning) and the
pruning-aware exact kernels' least eigenvalues on two inputs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq

from trilemma._checks import is_int
from trilemma._schema import Column
from trilemma.errors import InvalidArgumentError, InvalidTypeError
from trilemma.spaces import EnsembleSpec, ensemble_count_params, pruned_count
from trilemma.theory._bounds import _pair_correlations, depth_tables, jacobian_constant, worst_correlation
from trilemma.theory._exact import KernelSpectra
from trilemma.theory._maps import _f, _fdot
from trilemma.theory._table import THEORY_COLUMNS
from trilemma.theory._validate import as_gram, as_width

__all__ = [
    "ENSEMBLE_THEORY_COLUMNS",
    "MultigraphKernels",
    "ensemble_edges",
    "ensemble_kernels",
    "ensemble_theory_row",
    "multigraph_kernels",
    "multigraph_monte_carlo",
    "NetWeights",
    "draw_weights",
    "net_kernels",
]

logger = logging.getLogger(__name__)

#: One edge of a multigraph: ``(source, target, op, keep)`` with op 1 (skip) or 2 (linear) and
#: ``keep = 1 − pruning ratio`` of a linear edge's weights (1 for skips).
Edge = tuple[int, int, int, float]


def _as_spec(spec: object) -> EnsembleSpec:
    if isinstance(spec, EnsembleSpec):
        return spec
    if isinstance(spec, str):
        return EnsembleSpec.parse(spec)
    raise InvalidTypeError(f"spec must be an EnsembleSpec or an ensemble string, got {type(spec).__name__} {spec!r}")


def ensemble_edges(spec: EnsembleSpec | str) -> list[Edge]:
    """The non-zero edges of an ensemble's multigraph, member by member in string order."""
    spec = _as_spec(spec)
    return [(s, t, op, 1.0 - spec.members[k].ratio if op == 2 else 1.0) for s, t, op, k in spec.edges() if op]


def _check_edges(nodes: int, edges: Sequence[Edge]) -> None:
    if not is_int(nodes) or nodes < 1:
        raise InvalidArgumentError(f"nodes must be an int >= 1, got {nodes!r}")
    for e in edges:
        s, t, op, keep = e
        if not (0 <= s < t <= nodes) or op not in (1, 2) or not 0 < keep <= 1:
            raise InvalidArgumentError(
                f"edge {e!r}: need 0 <= source < target <= {nodes}, op 1 (skip) or 2 (linear), keep in (0, 1]")


def _arccos(S: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``A(S)``, ``K̇`` and ReLU mean ``μ`` of a Gram ``S`` (c_σ = 2; zero-variance rows give 0)."""
    d = np.maximum(np.diag(S), 0.0)
    norm = np.sqrt(np.outer(d, d))
    alive = norm > 0
    rho = np.clip(np.divide(S, norm, out=np.zeros_like(S), where=alive), -1.0, 1.0)
    np.fill_diagonal(rho, np.where(d > 0, 1.0, 0.0))
    return np.where(alive, norm * _f(rho), 0.0), np.where(alive, _fdot(rho), 0.0), np.sqrt(d / np.pi)


def _skip_counts(nodes: int, edges: Sequence[Edge]) -> np.ndarray:
    """``c[a, u]``: skip-only paths ``a → u`` of the multigraph (``c[a, a] = 1``)."""
    c = np.zeros((nodes + 1, nodes + 1), dtype=np.int64)
    skips = [(s, t) for s, t, op, _ in edges if op == 1]
    for a in range(nodes + 1):
        c[a, a] = 1
        for u in range(a + 1, nodes + 1):
            c[a, u] = sum(c[a, s] for s, t in skips if t == u and s >= a)
    return c


@dataclass(frozen=True)
class MultigraphKernels(KernelSpectra):
    """Infinite-width kernels of a multigraph network (see the module docstring).

    Attributes:
        k_in: ``(n, n)`` input Gram ``X Xᵀ / N0``.
        sigma: ``(H+1, H+1, n, n)`` uncentered cross-covariances of the nodes.
        means: ``(H+1, n)`` first moments of the nodes.
        backward: ``(H+1, n, n)`` backward Grams ``D[a]``.
        nngp: ``(n, n)`` NNGP of the output node ``Σ[H, H]``.
        ntk: ``(n, n)`` NTK of the scalar output over the kept weights.
    """

    k_in: np.ndarray
    sigma: np.ndarray
    means: np.ndarray
    backward: np.ndarray
    nngp: np.ndarray
    ntk: np.ndarray


def multigraph_kernels(nodes: int, edges: Sequence[Edge], K_in: np.ndarray, *, stem_keep: float = 1.0,
                       readout_keep: float = 1.0, trainable_stem: bool = True) -> MultigraphKernels:
    """Exact infinite-width NNGP and NTK of a DAG multigraph network with pruned weights.

    Args:
        nodes: H.
        edges: ``(source, target, op, keep)`` per non-zero edge (parallel edges allowed; see
            :func:`ensemble_edges`).
        K_in: ``(n, n)`` input Gram ``x_i·x_j / N0``.
        stem_keep, readout_keep: Kept fraction of the stem / readout weights (1: unpruned).
        trainable_stem: Whether the stem weights are parameters of the NTK.

    Returns:
        :class:`MultigraphKernels`.

    Raises:
        InvalidArgumentError: a bad edge, keep fraction or Gram matrix.
    """
    _check_edges(nodes, edges)
    for what, q in (("stem_keep", stem_keep), ("readout_keep", readout_keep)):
        if not 0 < q <= 1:
            raise InvalidArgumentError(f"{what} must be in (0, 1], got {q!r}")
    K = as_gram(K_in)
    n, H = K.shape[0], nodes
    sigma = np.zeros((H + 1, H + 1, n, n))
    means = np.zeros((H + 1, n))
    A0, kdot_in, mu0 = _arccos(K)
    sigma[0, 0], means[0] = stem_keep * A0, math.sqrt(stem_keep) * mu0
    lin_kdot: dict[int, tuple[int, int, float, np.ndarray]] = {}  # edge index -> (s, t, keep, K̇)
    for t in range(1, H + 1):
        # the incoming terms of node t: (index, kind, source, own covariance, mean)
        terms: list[tuple[int, int, int, np.ndarray | None, np.ndarray]] = []
        for i, (s, tt, op, q) in enumerate(edges):
            if tt != t:
                continue
            if op == 1:
                terms.append((i, 1, s, None, means[s]))
            else:
                k_e, kdot_e, mu_e = _arccos(sigma[s, s])
                lin_kdot[i] = (s, t, q, kdot_e)
                terms.append((i, 2, s, q * k_e, math.sqrt(q) * mu_e))
        for tp in range(t):
            acc = np.zeros((n, n))
            for _, kind, s, _, mu in terms:
                acc += sigma[s, tp] if kind == 1 else np.outer(mu, means[tp])
            sigma[t, tp], sigma[tp, t] = acc, acc.T
        acc = np.zeros((n, n))
        for ia, ka, sa, cov_a, mu_a in terms:
            for ib, kb, sb, _, mu_b in terms:
                if ka == 1 and kb == 1:
                    acc += sigma[sa, sb]
                elif ia == ib and cov_a is not None:  # the same linear edge
                    acc += cov_a
                else:  # independent weights (or a node the edge's weights do not touch)
                    acc += np.outer(mu_a, mu_b)
        sigma[t, t] = 0.5 * (acc + acc.T)
        for *_, mu in terms:
            means[t] += mu
    c = _skip_counts(H, edges)
    backward = np.zeros((H + 1, n, n))
    for a in range(H, -1, -1):
        acc = np.full((n, n), readout_keep * float(c[a, H] ** 2))
        for s, t, q, kdot in lin_kdot.values():
            if s >= a and c[a, s]:
                acc += float(c[a, s] ** 2) * q * kdot * backward[t]
        backward[a] = acc
    nngp = sigma[H, H].copy()
    ntk = readout_keep * nngp
    for s, t, q, kdot in lin_kdot.values():
        ntk = ntk + q * sigma[s, s] * kdot * backward[t]
    if trainable_stem:
        ntk = ntk + stem_keep * K * kdot_in * backward[0]
    ntk = 0.5 * (ntk + ntk.T)
    return MultigraphKernels(k_in=K, sigma=sigma, means=means, backward=backward, nngp=nngp, ntk=ntk)


def ensemble_kernels(spec: EnsembleSpec | str, K_in: np.ndarray, *, trainable_stem: bool = True) -> MultigraphKernels:
    """Exact infinite-width NNGP and NTK of an ensemble (pruning included; module docstring).

    Example:
        >>> import numpy as np
        >>> K = np.array([[1.0, 0.3], [0.3, 1.0]])
        >>> dense = ensemble_kernels("1_22_221+2_02_002", K)
        >>> pruned = ensemble_kernels("1_22_221@0.2+2_02_002@0.5", K)
        >>> bool(pruned.nngp[0, 0] < dense.nngp[0, 0])
        True
    """
    spec = _as_spec(spec)
    return multigraph_kernels(spec.nodes, ensemble_edges(spec), K_in, stem_keep=1.0 - spec.stem_ratio,
                              readout_keep=1.0 - spec.readout_ratio, trainable_stem=trainable_stem)


# --------------------------------------------------------------------------- Monte Carlo
def _masked(rng: np.random.Generator, rows: int, cols: int, keep: float) -> np.ndarray:
    """A standard normal ``(rows, cols)`` matrix with exactly ``round((1 − keep)·rows·cols)`` zeros."""
    W = rng.standard_normal((rows, cols))
    if keep < 1:
        drop = rng.permutation(rows * cols)[: pruned_count(rows * cols, 1.0 - keep)]
        W.reshape(-1)[drop] = 0.0
    return W


def _pair_kernel(A: np.ndarray, B: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``Σ_{o,i kept} B[x,o] B[x',o] A[x,i] A[x',i]`` for all pairs ``(x, x')``."""
    if mask is None:
        return (A @ A.T) * (B @ B.T)
    AA = A[:, None, :] * A[None, :, :]  # (n, n, in)
    BB = B[:, None, :] * B[None, :, :]  # (n, n, out)
    return np.einsum("xyo,xyo->xy", BB, AA @ mask.T)


@dataclass(frozen=True)
class NetWeights:
    """The weights of one finite-width multigraph network (NTK parameterization, no bias).

    Attributes:
        stem: ``(m, N0)``.
        edges: ``{edge index: (m, m)}`` for the linear edges (index into the edge list).
        readout: ``(m,)``.

    Pruned weights are exactly zero; a zero entry counts as pruned (a Gaussian weight is zero
    with probability 0).
    """

    stem: np.ndarray
    edges: dict[int, np.ndarray]
    readout: np.ndarray


def draw_weights(edges: Sequence[Edge], in_features: int, width: int, rng: np.random.Generator, *,
                 stem_keep: float = 1.0, readout_keep: float = 1.0) -> NetWeights:
    """N(0, 1) weights with random masks at the edges' keep fractions (stem, edges in order, readout)."""
    stem = _masked(rng, width, in_features, stem_keep)
    Ws = {i: _masked(rng, width, width, q) for i, (_s, _t, op, q) in enumerate(edges) if op == 2}
    return NetWeights(stem, Ws, _masked(rng, 1, width, readout_keep)[0])


def net_kernels(nodes: int, edges: Sequence[Edge], weights: NetWeights, X: np.ndarray, *,
                trainable_stem: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empirical NNGP ``(1/m) h_H h_Hᵀ``, NTK ``J Jᵀ`` over the non-zero weights, and ``h_H``
    of one network (manual backward pass; per layer ``Σ_kept B B' A A'``, Jacot et al. 2018).

    Args:
        nodes, edges: The multigraph (see :func:`multigraph_kernels`).
        weights: The network's weights (:func:`draw_weights`).
        X: ``(n, N0)`` inputs.
        trainable_stem: Whether the stem weights count in the NTK.

    Returns:
        ``(nngp (n, n), ntk (n, n), features (n, m))``.
    """
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    n, n0 = X.shape
    m = weights.stem.shape[0]
    s0, s1 = math.sqrt(2.0 / n0), math.sqrt(2.0 / m)

    def mask(W: np.ndarray) -> np.ndarray | None:
        zero = W == 0
        return (~zero).astype(float) if zero.any() else None

    u = s0 * X @ weights.stem.T
    h = [np.maximum(u, 0.0)]
    z: dict[int, np.ndarray] = {}
    for t in range(1, nodes + 1):
        acc = np.zeros((n, m))
        for i, (s, tt, op, _) in enumerate(edges):
            if tt != t:
                continue
            if op == 1:
                acc += h[s]
            else:
                z[i] = s1 * h[s] @ weights.edges[i].T
                acc += np.maximum(z[i], 0.0)
        h.append(acc)
    v = weights.readout
    nngp = h[nodes] @ h[nodes].T / m
    ntk = _pair_kernel(h[nodes] / math.sqrt(m), np.ones((n, 1)), mask(v[None, :]))
    delta = [np.zeros((n, m)) for _ in range(nodes + 1)]
    delta[nodes] += v / math.sqrt(m)
    for t in range(nodes, 0, -1):
        for i in reversed(range(len(edges))):
            s, tt, op, _ = edges[i]
            if tt != t:
                continue
            if op == 1:
                delta[s] += delta[t]
                continue
            B = delta[t] * (z[i] > 0)
            ntk = ntk + _pair_kernel(s1 * h[s], B, mask(weights.edges[i]))
            delta[s] += s1 * B @ weights.edges[i]
    if trainable_stem:
        ntk = ntk + _pair_kernel(s0 * X, delta[0] * (u > 0), mask(weights.stem))
    return nngp, ntk, h[nodes]


def multigraph_monte_carlo(nodes: int, edges: Sequence[Edge], X: np.ndarray, width: int, *, seeds: int = 16,
                           stem_keep: float = 1.0, readout_keep: float = 1.0,
                           trainable_stem: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Mean empirical NNGP and NTK (kept weights only) of ``seeds`` finite-width networks of the
    multigraph, each with fresh weights and fresh random masks (:func:`net_kernels`).

    The network is the one of :func:`multigraph_kernels` at width ``m``: stem
    ``sqrt(2/N0)·(M⊙W) x`` + ReLU, linear edges ``ReLU(sqrt(2/m)·(M⊙W) h_s)``, skips,
    readout ``(M⊙v)·h_H / sqrt(m)``, all weights N(0, 1) (``numpy.random.default_rng(seed)``);
    it is :class:`~trilemma.models.EnsembleMLP` with ``init="ntk"``, ``bias=False`` and one
    output (``tests/test_ensembles_theory.py``).

    Args:
        nodes, edges: The multigraph (see :func:`multigraph_kernels`).
        X: ``(n, N0)`` inputs.
        width: m.
        seeds: Networks averaged (seeds ``0..seeds-1``).
        stem_keep, readout_keep, trainable_stem: As :func:`multigraph_kernels`.

    Returns:
        ``(nngp, ntk)``, each ``(n, n)``.
    """
    _check_edges(nodes, edges)
    m = as_width(width)
    if not is_int(seeds) or seeds < 1:
        raise InvalidArgumentError(f"seeds must be a positive int, got {seeds!r}")
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    n = X.shape[0]
    nngp_sum, ntk_sum = np.zeros((n, n)), np.zeros((n, n))
    for seed in range(seeds):
        w = draw_weights(edges, X.shape[1], m, np.random.default_rng(seed), stem_keep=stem_keep,
                         readout_keep=readout_keep)
        nngp, ntk, _ = net_kernels(nodes, edges, w, X, trainable_stem=trainable_stem)
        nngp_sum += nngp
        ntk_sum += ntk
    return nngp_sum / seeds, ntk_sum / seeds


# --------------------------------------------------------------------------- closed-form columns
_C, _G = "convergence", "generalization"

#: The ensemble space's closed-form columns: the DAG space's (over the union's paths) and the
#: pruning-aware exact kernels, plus the parameter counts.
ENSEMBLE_THEORY_COLUMNS: tuple[Column, ...] = (
    *(Column(**{**c.as_dict(), "source": "theory"}) for c in THEORY_COLUMNS),
    Column("exact_nngp_lambda_min", "theory", label="λ_min NNGP (exact)", directions={_C: True},
           description="least eigenvalue of the exact infinite-width NNGP of two unit inputs whose correlation at "
                       "the cell input is C (multigraph recursion, pruning included)", source="theory"),
    Column("exact_ntk_lambda_min", "theory", label="λ_min NTK (exact)", directions={_C: True, _G: True},
           description="least eigenvalue of the exact infinite-width NTK of the same two inputs (kept weights only)",
           source="theory"),
    Column("effective_params", "cost", "int", label="#params (effective)",
           description="trainable parameters minus the pruned weights (the paper's Table 1 counts)", source="theory"),
    Column("pruned_params", "cost", "int", label="pruned weights", description="weights removed by the masks",
           source="theory"),
)


def _input_correlation(C: float) -> float | None:
    """The raw-input correlation whose stem output has correlation ``C`` (``f(c) = C``), or None."""
    if not 0.0 <= C <= 1.0:
        return None
    if C == 1.0:
        return 1.0
    if C <= float(_f(np.array(-1.0))):
        return -1.0
    return float(brentq(lambda c: float(_f(np.array(c))) - C, -1.0, 1.0, xtol=1e-14))


def ensemble_theory_row(spec: EnsembleSpec | str, C: float | np.ndarray = 0.5, width: int = 256, *,
                        in_features: int = 784, num_classes: int = 10, bias: bool = True) -> dict[str, Any]:
    """Closed-form columns of an ensemble (:data:`ENSEMBLE_THEORY_COLUMNS`).

    The paper's Theorems 4.1/4.4/4.6 (Chen, Huang & Wang, AutoML-Conf 2023) are sums over paths;
    over an ensemble they run over the union multigraph's paths (for one unpruned member they equal
    :func:`~trilemma.theory.theory_row`). They do not see pruning; the exact kernels do.

    Args:
        spec: The ensemble.
        C: Correlation at the cell input (scalar, or an ``(n, n)`` matrix for the bounds; the
            exact columns use its largest off-diagonal value).
        width: m (Theorem 4.1 and the parameter counts).
        in_features, num_classes, bias: For the parameter counts.

    Returns:
        ``{column: value}``; undefined values are ``None`` (as :func:`~trilemma.theory.theory_row`).
    """
    spec = _as_spec(spec)
    m = as_width(width)
    topo = spec.topology
    depths = np.array([d for d, _ in topo.depth_counts], dtype=np.int64)
    counts = np.array([k for _, k in topo.depth_counts], dtype=np.float64)
    c = worst_correlation(C)
    max_depth = int(depths.max()) if len(depths) else 0
    F, Bt, _ = depth_tables(c, max_depth)
    _, _, Rp = depth_tables(np.unique(_pair_correlations(C)), max_depth)
    Fp, _, _ = depth_tables(np.unique(_pair_correlations(C)), max_depth)
    P, sum_depth = float(counts.sum()), float(counts @ depths) if len(depths) else 0.0
    row: dict[str, Any] = {
        "jacobian_path_sum": float(jacobian_constant(m) * (counts @ np.exp(-5.0 * depths / (8.0 * m)))) if P else 0.0,
        "nngp_bound": float(P - counts @ F[depths]) if P else 0.0,
    }
    ntk = float(np.min(P - counts @ Fp[depths] + sum_depth - counts @ Rp[depths])) if P else 0.0
    printed = (row["nngp_bound"] + sum_depth - float(counts @ Bt[depths])) if P else 0.0
    for suffix, bound in (("", ntk), ("_printed", printed)):
        row[f"ntk_bound{suffix}"] = bound
        row[f"gen_indicator{suffix}"] = sum_depth / math.sqrt(bound) if topo.trainable and bound > 0 else None
    c_in = _input_correlation(c)
    if c_in is None or not topo.has_path:
        row["exact_nngp_lambda_min"] = row["exact_ntk_lambda_min"] = None
    else:
        k = ensemble_kernels(spec, np.array([[1.0, c_in], [c_in, 1.0]]))
        row["exact_nngp_lambda_min"], row["exact_ntk_lambda_min"] = k.nngp_lambda_min, k.ntk_lambda_min
    dense = ensemble_count_params(spec, m, in_features, num_classes, bias)
    row["effective_params"] = ensemble_count_params(spec, m, in_features, num_classes, bias, effective=True)
    row["pruned_params"] = dense - row["effective_params"]
    return {col.name: row[col.name] for col in ENSEMBLE_THEORY_COLUMNS}

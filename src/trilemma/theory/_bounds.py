"""Closed-form quantities of a DAG cell: Theorems 4.1, 4.4 and 4.6 of Chen, Huang & Wang (AutoML-Conf 2023).

Every path sum ``Σ_p g(d_p)`` is computed as ``Σ_d count_d · g(d)`` from
:attr:`Topology.depth_counts <trilemma.spaces.Topology.depth_counts>`, so no path is enumerated.

Convention for ``C``: the correlation **at the cell input** (node 0 = stem output), the
``K⁽⁰⁾_ij`` of the paper with inputs normalized so ``K⁽⁰⁾_ii = 1``. A raw-input correlation is
pushed through the stem with :func:`~trilemma.theory.stem_correlation` (``f(C_input)``).
``C`` is either a scalar correlation or an ``(n, n)`` correlation matrix; for a matrix the bound
is the minimum over pairs ``i ≠ j``. The brackets of Theorem 4.4 and of Theorem 4.6 as printed
are non-increasing in ``C`` (``f^d`` and ``ḟ`` are non-decreasing, ``f ≥ 0``), so their minimum
is attained at the largest off-diagonal correlation, which is what is evaluated. The
``form="recursion"`` variant of :func:`ntk_bound` is not monotone near ``C = −1`` (its
``C·Π ḟ`` term), so it is evaluated on every off-diagonal pair.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from scipy.special import poch

from trilemma.errors import InvalidArgumentError, InvalidTypeError, MeasureFailedError
from trilemma.spaces import CellSpec, Topology
from trilemma.theory._maps import _f, _fdot
from trilemma.theory._validate import as_correlation, as_correlation_matrix, as_spec, as_width

__all__ = [
    "jacobian_constant",
    "jacobian_path_sum",
    "nngp_bound",
    "ntk_bound",
    "generalization_indicator",
    "NTK_FORMS",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- helpers
def _pair_correlations(C: Any) -> np.ndarray:
    """Validated correlations of the pairs ``i < j``: ``[C]`` for a scalar, the upper triangle of a matrix."""
    try:
        ndim = np.ndim(C)
    except ValueError as exc:  # ragged nested lists
        raise InvalidTypeError(f"C must be a number or an (n, n) matrix, got {C!r}") from exc
    if ndim == 2:
        mat = as_correlation_matrix(C)
        return mat[np.triu_indices(mat.shape[0], k=1)]
    if ndim != 0:
        raise InvalidArgumentError(
            f"C must be a scalar correlation or an (n, n) correlation matrix, got an array of shape {np.shape(C)}"
        )
    return as_correlation(C).reshape(1)


def worst_correlation(C: object) -> float:
    """The correlation at which the ``min_{i≠j}`` of Theorems 4.4/4.6 (as printed) is attained.

    A scalar is returned as is (validated); for an ``(n, n)`` correlation matrix the largest
    off-diagonal entry.

    Raises:
        InvalidArgumentError: a matrix that is not ``(n, n)`` with ``n ≥ 2``, not symmetric or
            without unit diagonal, or a correlation outside [-1, 1].
    """
    return float(np.max(_pair_correlations(C)))


def depth_tables(c: np.ndarray | float, max_depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-depth tables of the path sums, for ``d = 0..max_depth``.

    * ``F[d] = f^d(c)``;
    * ``B[d] = Σ_{e=1}^{d} f^e(c) Π_{k=1}^{e} ḟ_k(c)`` (Theorem 4.6 as printed), ``ḟ_k = ḟ(f^{k−1}(c))``;
    * ``R[d] = Σ_{h=0}^{d−1} f^h(c) Π_{k=h+1}^{d} ḟ_k(c)``, the off-diagonal of the unrolled NTK
      recursion ``G⁽ᵈ⁾ = K⁽ᵈ⁾ + K̇⁽ᵈ⁾ ⊙ G⁽ᵈ⁻¹⁾`` minus ``f^d`` (``R[d] = ḟ_d·(R[d−1] + f^{d−1})``).

    Args:
        c: Clipped correlation(s) (no validation), any shape ``S``.
        max_depth: Largest depth.

    Returns:
        ``(F, B, R)``, each of shape ``(max_depth + 1, *S)``.
    """
    c = np.asarray(c, dtype=np.float64)
    F = np.empty((max_depth + 1, *c.shape))
    B = np.empty_like(F)
    R = np.empty_like(F)
    F[0], B[0], R[0] = c, 0.0, 0.0
    prod = np.ones_like(c)
    for e in range(1, max_depth + 1):
        fdot_e = _fdot(F[e - 1])  # ḟ_e = ḟ(f^{e−1})
        prod = prod * fdot_e  # Π_{k=1}^{e} ḟ_k
        F[e] = _f(F[e - 1])
        B[e] = B[e - 1] + F[e] * prod
        R[e] = fdot_e * (R[e - 1] + F[e - 1])
    return F, B, R


def _counts(topo: Topology) -> tuple[np.ndarray, np.ndarray]:
    if not topo.depth_counts:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    d, c = zip(*topo.depth_counts)
    return np.asarray(d, dtype=np.int64), np.asarray(c, dtype=np.float64)


def _topology(spec_or_topology: object) -> Topology:
    if isinstance(spec_or_topology, Topology):
        return spec_or_topology
    if isinstance(spec_or_topology, (CellSpec, str)):
        return as_spec(spec_or_topology).topology
    raise InvalidTypeError(
        "expected a CellSpec, a cell string like '2_02_002' or a Topology, got "
        f"{type(spec_or_topology).__name__} {spec_or_topology!r}"
    )


# ---------------------------------------------------------------------------- Theorem 4.1
def jacobian_constant(width: int) -> float:
    """``C(m) = Γ((m+1)/2) / (Γ(m/2)·(m/2)^{1/2})`` of Theorem 4.1 (→ 1 as m → ∞).

    Computed as ``poch(m/2, 1/2)/sqrt(m/2)`` (``scipy.special.poch(x, a) = Γ(x+a)/Γ(x)``), which
    neither overflows nor cancels for large m (``exp(gammaln(·) − gammaln(·))`` loses about
    ``1e-6`` relative accuracy at m = 10⁹ and is useless at 10¹⁵).
    ``C(m) = E[χ_m]/sqrt(m)``, the mean norm of an m-dimensional standard Gaussian over sqrt(m).

    Args:
        width: m, a positive int.

    Raises:
        InvalidArgumentError: ``width`` is not a positive int.
    """
    m = as_width(width)
    return float(poch(m / 2, 0.5)) / math.sqrt(m / 2)


def jacobian_path_sum(spec_or_topology: CellSpec | str | Topology, width: int) -> float:
    """Theorem 4.1 of Chen, Huang & Wang (AutoML-Conf 2023): ``C(m)·Σ_p exp(−5 d_p/(8m))``.

    The leading term of ``∫₀^{2π} E‖J(θ)‖ dθ`` for a great circle fed through the cell
    (Poole et al. 2016's length/curvature set-up); larger means a smaller curvature
    ``κ = 1/‖J‖`` (Corollary 4.2), i.e. less expressive. The ``O(d_p/m²)`` term is dropped.

    Args:
        spec_or_topology: A cell (spec or string) or its :class:`~trilemma.spaces.Topology`.
        width: m, a positive int.

    Returns:
        The path sum (0.0 for a cell without a path).

    Raises:
        InvalidTypeError: ``spec_or_topology`` has the wrong type.
        InvalidArgumentError: ``width`` is not a positive int.
    """
    topo = _topology(spec_or_topology)
    m = as_width(width)
    d, cnt = _counts(topo)
    return jacobian_constant(m) * float(np.sum(cnt * np.exp(-5.0 * d / (8.0 * m))))


# ---------------------------------------------------------------------------- Theorems 4.4 / 4.6
def nngp_bound(spec: CellSpec | str, C: float | np.ndarray) -> float:
    """Theorem 4.4 of Chen, Huang & Wang (AutoML-Conf 2023): ``λ_min(K⁽ᴴ⁾) ≤ min_{i≠j}[P − Σ_p f^{d_p}(K_ij)]``.

    The paper's NNGP of the cell output sums one arc-cosine kernel (Cho & Saul 2009) per path
    and drops the cross-path (ReLU-mean) terms; :func:`~trilemma.theory.exact_kernels` keeps them.
    Worked values: ``2_02_002`` → ``1 − f³(C)``; ``1_01_222`` → ``3(1 − f(C))``; a cell
    without a path → 0.

    Args:
        spec: The cell.
        C: Correlation at the cell input (node 0), a scalar or an ``(n, n)`` correlation matrix
            (then the minimum over ``i ≠ j``, attained at the largest off-diagonal entry).

    Returns:
        The bound.

    Raises:
        InvalidArgumentError: bad ``C`` (outside [-1, 1], wrong shape, asymmetric, diagonal ≠ 1).
    """
    topo = as_spec(spec).topology
    c = worst_correlation(C)
    d, cnt = _counts(topo)
    if not d.size:
        return 0.0
    F, _, _ = depth_tables(c, int(d.max()))
    return float(topo.num_paths - np.sum(cnt * F[d]))


NTK_FORMS = ("paper", "recursion")


def ntk_bound(spec: CellSpec | str, C: float | np.ndarray, form: str = "recursion") -> float:
    """Theorem 4.6 of Chen, Huang & Wang (AutoML-Conf 2023), NTK least-eigenvalue bound.

    The theorem as printed reads
    ``λ_min(G⁽ᴴ⁾) ≤ min_{i≠j}[P − Σ_p f^{d_p}(K_ij) + Σ_p d_p − Σ_p Σ_{e=1}^{d_p} f^e(K_ij) Π_{k=1}^{e} ḟ_k(K_ij)]``
    with ``ḟ_k = ∂f^k/∂f^{k−1} = ḟ(f^{k−1}(K_ij))`` (``form="paper"``). Its last sum has an
    indexing error: it does not match the unrolled recursion, and it falls *below* the exact
    ``λ_min`` of the idealised 2×2 kernel it bounds (a chain at ``C = 0.5``: 0.985 < 1.058 at
    depth 1, 1.587 < 1.649 at depth 2), so it is not a valid upper bound. The default
    ``form="recursion"`` (the corrected bound) uses the off-diagonal of the unrolled NTK recursion
    ``G⁽ᵈ⁾ = K⁽ᵈ⁾ + K̇⁽ᵈ⁾ ⊙ G⁽ᵈ⁻¹⁾``, ``G⁽⁰⁾ = K⁽⁰⁾`` (Jacot et al. 2018), i.e.
    ``Σ_{h=0}^{d−1} f^h(K_ij) Π_{k=h+1}^{d} ḟ_k(K_ij)``: then the bracket is exactly
    ``G_ii − G_ij`` of the per-path kernel ``Σ_p G_p⁽ᵈᵖ⁾``. The two differ from depth 1 on
    (``d = 1``: paper ``f(C)ḟ(C)``, recursion ``C·ḟ(C)``, so the printed form is the smaller bound;
    for deeper paths either can be larger: the printed product runs over the first ``e``
    derivatives, the recursion's over the last ``d − h``). For a chain and two unit-norm inputs the recursion form equals ``λ_min`` of the
    exact NTK w.r.t. cell and readout weights
    (:func:`~trilemma.theory.exact_kernels` with ``trainable_stem=False``).

    Args:
        spec: The cell.
        C: Correlation at the cell input, scalar or ``(n, n)`` correlation matrix (see
            :func:`nngp_bound`).
        form: ``"recursion"`` (default, the corrected bound) or ``"paper"`` (as printed, to
            reproduce the paper's figures).

    Returns:
        The bound (0.0 for a cell without a path).

    Raises:
        InvalidArgumentError: bad ``C`` or unknown ``form``.
    """
    if form not in NTK_FORMS:
        raise InvalidArgumentError(f"form must be one of {NTK_FORMS}, got {form!r}")
    topo = as_spec(spec).topology
    pairs = _pair_correlations(C)
    # the printed form is monotone (minimum at the largest correlation); the recursion form is not
    c = np.max(pairs, keepdims=True) if form == "paper" else np.unique(pairs)
    d, cnt = _counts(topo)
    if not d.size:
        return 0.0
    F, B, R = depth_tables(c, int(d.max()))  # each (max_depth + 1, len(c))
    last = B if form == "paper" else R
    values = topo.num_paths - cnt @ F[d] + float(np.sum(cnt * d)) - cnt @ last[d]
    return float(np.min(values))


def generalization_indicator(spec: CellSpec | str, C: float | np.ndarray, form: str = "recursion") -> float:
    """``Σ_p d_p / sqrt(ntk_bound)``: the paper's generalization indicator (Theorems 4.5/4.6).

    Theorem 4.5 (via Cao & Gu 2019) bounds the risk by ``Õ(Σ_p d_p · sqrt(yᵀG⁻¹y/N))`` and
    ``sqrt(yᵀG⁻¹y/N) ≤ 1/sqrt(λ_min(G))``; Chen, Huang & Wang (AutoML-Conf 2023) rank cells by
    this quantity with the Theorem 4.6 bound in place of ``λ_min``. Lower = better generalization.
    A cell whose paths all have depth 0 gets 0.0 (no trainable cell layer; callers that rank
    cells usually exclude such cells, as :func:`~trilemma.theory.theory_table` does).

    Args:
        spec: The cell.
        C: Correlation at the cell input (see :func:`nngp_bound`).
        form: Form of the NTK bound, ``"recursion"`` (default) or ``"paper"`` (see :func:`ntk_bound`).

    Returns:
        The indicator.

    Raises:
        MeasureFailedError: the cell has no path 0 → H, or the NTK bound is ≤ 0 (e.g. ``C = 1``,
            identical inputs); the indicator is undefined there (never returned as NaN/inf).
        InvalidArgumentError: bad ``C``.
    """
    spec = as_spec(spec)
    topo = spec.topology
    if not topo.has_path:
        raise MeasureFailedError(
            f"generalization indicator of {spec.name} is undefined: the cell has no path 0 → {spec.nodes}"
        )
    bound = ntk_bound(spec, C, form=form)
    if not bound > 0:
        raise MeasureFailedError(
            f"generalization indicator of {spec.name} is undefined: the Theorem 4.6 NTK bound is "
            f"{bound!r} <= 0 at C = {worst_correlation(C)!r} (identical inputs give C = 1)"
        )
    return topo.sum_depth / math.sqrt(bound)

"""Lesson ``linear-regions``: deep vs shallow ReLU networks with the same number of units.

A ReLU network is piecewise linear; its linear regions are the input sets on which the
pattern of active units is constant. Montúfar, Pascanu, Cho & Bengio (2014) showed that
depth multiplies regions where width only adds them: a single hidden layer of N units on an
``n₀``-dimensional input has at most ``Σ_{j ≤ n₀} C(N, j)`` regions (Zaslavsky's count for an
arrangement of N hyperplanes: ``N + 1`` on a line, ``1 + N + N(N−1)/2`` in the plane),
while L layers of n units can have ``(n/n₀)^{n₀(L−1)} · Σ_{j ≤ n₀} C(n, j)`` or more. Their
construction *folds* the input: a layer of p units computes a zigzag that maps [0, 1] onto
itself p times, so the next layer sees every piece of the input as a full copy of [0, 1].

This lesson builds the folding construction for 20 units as 1×20, 2×10 and 4×5 (layers ×
units), on a 1-D input (exact counts on [0, 1], every breakpoint located) and on a 2-D
input (counts on a dense grid of [0, 1]²: the distinct activation patterns met, a lower
bound that misses regions no grid point falls in). Next to
the constructions — what depth *can* do — it counts the regions of the same architectures at
a random He initialization — what depth typically does at initialization: there the count
grows with the number of units, not exponentially with depth (Hanin & Rolnick 2019).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from trilemma.errors import InvalidArgumentError
from trilemma.lessons._base import Check, LessonOutput, register_lesson
from trilemma.measures import activation_patterns, count_linear_regions_exact, count_linear_regions_sampled

__all__ = ["folding_network", "grid_regions", "montufar_count", "random_network", "shallow_max"]


def _fold_coefficients(p: int) -> torch.Tensor:
    """Output weights ``a`` of the p-unit zigzag ``Σ_i a_i ReLU(u − t_i)`` (slopes ±p, onto [0, 1] p times)."""
    a = torch.tensor([2.0 * p * (-1) ** i for i in range(p)], dtype=torch.float64)
    a[0] = p
    return a


def _fold_offsets(p: int) -> torch.Tensor:
    """Kinks ``t_i = i/p``; unit 0 gets ``−1/(2p)`` so it is always on for u ≥ 0 (no kink on the domain's edge)."""
    t = torch.arange(p, dtype=torch.float64) / p
    t[0] = -0.5 / p
    return t


def _lines(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n lines in general position crossing near the centre of [0, 1]²: unit normals ``(n, 2)`` and offsets ``(n,)``.

    Directions are spread over π with a small jitter and every line passes within 0.02 of
    (0.5, 0.5), so every pair crosses inside the square and no three lines meet.
    """
    gen = torch.Generator().manual_seed(seed)
    theta = math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n
    theta = theta + 0.2 * math.pi / n * (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5)
    normals = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    centres = 0.5 + 0.02 * (2 * torch.rand(n, 2, generator=gen, dtype=torch.float64) - 1)
    return normals, -(normals * centres).sum(1)


def folding_network(layers: int, units: int, in_dim: int, *, seed: int = 0) -> nn.Sequential:
    """Montúfar et al.'s construction: ``layers`` ReLU layers of ``units`` units on ``[0, 1]^in_dim``.

    For ``in_dim = 1`` every layer folds the line ``units`` times (``units^layers`` regions on
    [0, 1]). For ``in_dim = 2`` every layer but the last folds each coordinate with
    ``p = units // 2`` units (the spare unit, if any, is off), and the last layer is an
    arrangement of ``units`` lines in general position on the folded square:
    ``p^{2(layers−1)} · (1 + units + units(units−1)/2)`` regions. The readout returns the
    folded coordinate(s) (1-D: the sawtooth ``g^layers(x)``) or the last layer's units summed.

    Args:
        layers: Number of hidden layers L ≥ 1.
        units: Units per hidden layer (≥ 2; ≥ 4 for ``in_dim = 2`` with L > 1).
        in_dim: 1 or 2.
        seed: Seed of the small jitter of the 2-D arrangement.

    Returns:
        ``nn.Sequential`` of float64 ``Linear`` and ``ReLU`` modules.

    Raises:
        InvalidArgumentError: Unsupported sizes.
    """
    if in_dim not in (1, 2):
        raise InvalidArgumentError(f"in_dim must be 1 or 2, got {in_dim!r}")
    if layers < 1 or units < 2 or (in_dim == 2 and layers > 1 and units < 4):
        raise InvalidArgumentError(f"need layers ≥ 1 and units ≥ 2 (≥ 4 to fold a plane), got {layers}, {units}")
    dt = torch.float64
    mods: list[nn.Module] = []
    groups = 1 if in_dim == 1 else 2
    p = units if in_dim == 1 else units // 2
    a, t = _fold_coefficients(p), _fold_offsets(p)
    # affine map from the previous layer's units to the folded coordinates u (groups × prev)
    fold_in = torch.eye(in_dim, dtype=dt)
    fold_bias = torch.zeros(in_dim, dtype=dt)
    for layer in range(layers):
        lin = nn.Linear(fold_in.shape[1], units, dtype=dt)
        w = torch.zeros(units, fold_in.shape[1], dtype=dt)
        b = torch.zeros(units, dtype=dt)
        last = layer == layers - 1
        if in_dim == 2 and last:
            normals, offsets = _lines(units, seed)
            w = normals @ fold_in
            b = normals @ fold_bias + offsets
        else:
            for g in range(groups):
                rows = slice(g * p, (g + 1) * p)
                w[rows] = fold_in[g].expand(p, -1)
                b[rows] = fold_bias[g] - t
            b[groups * p:] = -1.0  # spare unit: always off
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        mods += [lin, nn.ReLU()]
        # the folded coordinates seen by the next layer: u_g = Σ_i a_i r_{g,i} − a_0·t_0 (undo unit 0's shift)
        fold_in = torch.zeros(groups, units, dtype=dt)
        fold_bias = torch.full((groups,), float(a[0] * t[0]), dtype=dt)
        for g in range(groups):
            fold_in[g, g * p:(g + 1) * p] = a
    out = nn.Linear(units, 1 if in_dim == 2 else groups, dtype=dt)
    with torch.no_grad():
        if in_dim == 2:
            out.weight.fill_(1.0)
            out.bias.zero_()
        else:
            out.weight.copy_(fold_in)
            out.bias.copy_(fold_bias)
    return nn.Sequential(*mods, out)


def random_network(layers: int, units: int, in_dim: int, *, seed: int) -> nn.Sequential:
    """``layers`` ReLU layers of ``units`` units with He-normal weights and zero biases (float64)."""
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    fan = in_dim
    for _ in range(layers):
        lin = nn.Linear(fan, units, dtype=torch.float64)
        nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        nn.init.normal_(lin.bias, std=0.1)
        mods += [lin, nn.ReLU()]
        fan = units
    return nn.Sequential(*mods, nn.Linear(fan, 1, dtype=torch.float64))


def shallow_max(units: int, in_dim: int) -> int:
    """Most regions any one-hidden-layer ReLU net with ``units`` units can have on ``R^in_dim``: ``Σ_{j≤n₀} C(N, j)``."""
    return sum(math.comb(units, j) for j in range(in_dim + 1))


def montufar_count(layers: int, units: int, in_dim: int) -> int:
    """Regions of :func:`folding_network` (Montúfar et al. 2014's lower bound for this construction)."""
    if in_dim == 1:
        return units**layers
    return (units // 2) ** (2 * (layers - 1)) * shallow_max(units, 2)


def grid_regions(model: nn.Module, lo: float, hi: float, size: int) -> tuple[int, np.ndarray]:
    """Linear regions met by a ``size × size`` grid of ``[lo, hi]²``: the number of distinct activation patterns.

    Fixing the activation pattern makes every pre-activation affine in the input, so the
    points with one pattern form a convex polytope: one pattern is one region. The count is
    a lower bound (regions no grid point falls in are missed). (Counting connected sets of
    equal pattern on the grid instead would *over*-count: a thin wedge near a vertex shows
    up as several disconnected blobs of grid points.)

    Returns:
        ``(count, ids)`` with ``ids`` a ``(size, size)`` array of pattern ids (row = second coordinate).
    """
    axis = torch.linspace(lo, hi, size, dtype=torch.float64)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    codes = activation_patterns(model, pts, dtype=torch.float64)
    if codes.shape[1] <= 52:  # one exact float64 key per pattern: far faster to sort than rows of booleans
        keys = (codes.to(torch.float64) @ (2.0 ** torch.arange(codes.shape[1], dtype=torch.float64))).numpy()
        unique, ids = np.unique(keys, return_inverse=True)
        return int(unique.shape[0]), ids.reshape(size, size)
    rows, inverse = torch.unique(codes, dim=0, return_inverse=True)
    return int(rows.shape[0]), inverse.reshape(size, size).numpy()


def _segment_count(model: nn.Module, lo: float, hi: float) -> int:
    """Exact regions on ``[lo, hi]``, given to the counter as a polyline of 61 collinear pieces.

    The count is the same as for the plain segment; the pieces keep the pre-activations'
    slope per unit of the curve parameter moderate. On one segment the deep folds (slopes up
    to ``units^(layers−1)``) can cross zero between two breakpoints closer than the counter's
    merge distance, and the refinement then never ends.
    """
    points = torch.linspace(lo, hi, 62, dtype=torch.float64)[:, None]
    return count_linear_regions_exact(model, points).count


@register_lesson(
    "linear-regions",
    title="Linear regions: deep vs shallow networks with the same number of units",
    claim=(
        "With the same number of ReLU units, deep networks can have far more linear regions than shallow ones: "
        "Montúfar et al.'s folding construction gives units^layers regions on a line and more than any "
        "one-hidden-layer network can have in the plane, counted exactly (1-D) and on a dense grid (2-D)."
    ),
    references=(
        "Montúfar, Pascanu, Cho & Bengio (2014), On the number of linear regions of deep neural networks, NeurIPS.",
        "Serra, Tjandraatmadja & Ramalingam (2018), Bounding and counting linear regions of deep neural networks, "
        "ICML.",
        "Hanin & Rolnick (2019), Complexity of linear regions in deep networks, ICML.",
    ),
    defaults={
        "architectures": ((1, 20), (2, 10), (4, 5)),
        "grid": 1000,
        "random_seeds": 3,
        "samples_1d": 200000,
        "seed": 0,
    },
    quick={"grid": 500, "random_seeds": 2, "samples_1d": 50000},
)
def _compute(p: dict[str, Any]) -> LessonOutput:
    archs = [tuple(int(v) for v in a) for a in p["architectures"]]
    if len(archs) < 2 or any(len(a) != 2 or a[0] < 1 or a[1] < 2 for a in archs):
        raise InvalidArgumentError(f"architectures must be ≥ 2 pairs (layers, units ≥ 2), got {p['architectures']!r}")
    totals = {a[0] * a[1] for a in archs}
    if len(totals) != 1:
        raise InvalidArgumentError(f"every architecture must have the same number of units, got {archs!r}")
    total = totals.pop()
    if archs[0][0] != 1:
        raise InvalidArgumentError(f"the first architecture must be the shallow one (1, {total}), got {archs[0]!r}")
    if p["grid"] < 50 or p["random_seeds"] < 1 or p["samples_1d"] < 1000:
        raise InvalidArgumentError("need grid ≥ 50, random_seeds ≥ 1 and samples_1d ≥ 1000")
    rows = []
    partitions: dict[tuple[str, tuple[int, int]], np.ndarray] = {}
    sawtooth: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    xs = torch.linspace(0, 1, 4001, dtype=torch.float64)[:, None]
    for layers, units in archs:
        arch = f"{layers}×{units}"
        net1 = folding_network(layers, units, 1)
        exact1 = _segment_count(net1, 0.0, 1.0)
        sampled1 = count_linear_regions_sampled(net1, torch.tensor([[0.0], [1.0]], dtype=torch.float64),
                                                num_samples=p["samples_1d"])
        with torch.no_grad():
            sawtooth[(layers, units)] = (xs[:, 0].numpy(), net1(xs)[:, 0].numpy())
        net2 = folding_network(layers, units, 2, seed=p["seed"])
        count2, labels2 = grid_regions(net2, 0.0, 1.0, p["grid"])
        partitions[("constructed", (layers, units))] = labels2
        rand1, rand2 = [], []
        for s in range(p["random_seeds"]):
            rand1.append(_segment_count(random_network(layers, units, 1, seed=p["seed"] + s), -1.0, 1.0))
            count, labels = grid_regions(random_network(layers, units, 2, seed=p["seed"] + s), -1.0, 1.0, p["grid"])
            rand2.append(count)
            if s == 0:
                partitions[("random", (layers, units))] = labels
        rows.append({
            "architecture": arch, "layers": layers, "units_per_layer": units, "units": total,
            "construction_1d_theory": montufar_count(layers, units, 1), "construction_1d_exact": exact1,
            "construction_1d_sampled": sampled1, "construction_2d_theory": montufar_count(layers, units, 2),
            "construction_2d_grid": count2, "shallow_max_1d": shallow_max(total, 1),
            "shallow_max_2d": shallow_max(total, 2), "random_1d_exact_mean": float(np.mean(rand1)),
            "random_2d_grid_mean": float(np.mean(rand2)),
        })
    table = pd.DataFrame(rows)
    shallow, deep = table.iloc[0], table.iloc[1:]
    max1, max2 = shallow_max(total, 1), shallow_max(total, 2)
    checks = [
        Check(
            "the construction's exact 1-D count is units^layers for every architecture",
            bool((table.construction_1d_exact == table.construction_1d_theory).all()),
            ", ".join(f"{r.architecture}: {r.construction_1d_exact} (theory {r.construction_1d_theory})"
                      for r in table.itertuples()),
        ),
        Check(
            "dense sampling (the slow reference) finds the same 1-D counts",
            bool((table.construction_1d_sampled == table.construction_1d_exact).all()),
            ", ".join(f"{r.architecture}: {r.construction_1d_sampled}" for r in table.itertuples())
            + f" with {p['samples_1d']} samples",
        ),
        Check(
            f"every deep construction has more regions than any one-layer net of {total} units can have "
            f"({max1} on a line, {max2} in the plane)",
            bool((deep.construction_1d_exact > max1).all() and (deep.construction_2d_grid > max2).all()),
            "; ".join(f"{r.architecture}: 1-D {r.construction_1d_exact}, 2-D ≥ {r.construction_2d_grid}"
                      for r in deep.itertuples()),
        ),
        Check(
            "the shallow construction stays within Zaslavsky's maximum and the 2-D grid count within the theory",
            bool(shallow.construction_1d_exact <= max1 and shallow.construction_2d_grid <= max2
                 and (table.construction_2d_grid <= table.construction_2d_theory).all()),
            f"1×{total}: 1-D {shallow.construction_1d_exact} ≤ {max1}, 2-D {shallow.construction_2d_grid} ≤ {max2}; "
            "grid counts vs construction: " + ", ".join(
                f"{r.architecture}: {r.construction_2d_grid}/{r.construction_2d_theory}" for r in table.itertuples()),
        ),
    ]
    notes = [
        f"2-D counts: distinct activation patterns on a {p['grid']}×{p['grid']} grid (one pattern is one convex "
        "region; a lower bound: regions no grid point falls in are missed, which is why a grid count can fall "
        "short of the construction's exact number).",
        f"At a random He initialization (biases N(0, 0.1²), {p['random_seeds']} seeds; 1-D on [−1, 1] exactly, 2-D "
        "on a grid of [−1, 1]²) the mean counts are "
        + "; ".join(f"{r.architecture}: {r.random_1d_exact_mean:.1f} (1-D), {r.random_2d_grid_mean:.0f} (2-D)"
                    for r in table.itertuples())
        + ". Depth does not multiply regions at initialization: a typical network has a number of regions that "
        "grows with its number of units (Hanin & Rolnick 2019). The exponential count is what depth can "
        "represent, not what training or initialization guarantees.",
        "2-D construction: each layer but the last folds each coordinate with ⌊units/2⌋ units; the last layer "
        "is an arrangement of lines crossing near the centre of the folded square.",
    ]

    def draw_partitions(fig: Any) -> None:
        axes = fig.subplots(2, len(archs), squeeze=False)
        fig.set_size_inches(3.6 * len(archs), 7.4)
        rng = np.random.default_rng(0)
        for col, (layers, units) in enumerate(archs):
            for row, kind in enumerate(("constructed", "random")):
                labels = partitions[(kind, (layers, units))]
                colours = rng.random((int(labels.max()) + 1, 3)) * 0.8 + 0.2
                ax = axes[row, col]
                extent = (0, 1, 0, 1) if kind == "constructed" else (-1, 1, -1, 1)
                ax.imshow(colours[labels], origin="lower", extent=extent, interpolation="nearest")
                n = int(labels.max()) + 1
                ax.set_title(f"{kind} {layers}×{units}: {n} regions", fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])

    def draw_counts(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        fig.set_size_inches(11, 4)
        pos = np.arange(len(archs))
        ax1.bar(pos - 0.2, table.construction_1d_exact, 0.4, label="construction (exact)")
        ax1.bar(pos + 0.2, table.random_1d_exact_mean, 0.4, label="random init (exact, mean)")
        ax1.axhline(max1, color="k", ls="--", lw=1, label=f"one-layer maximum {max1}")
        ax1.set_yscale("log")
        ax1.set_xticks(pos, table.architecture)
        ax1.set_title("regions on a line")
        ax1.legend(fontsize=8)
        ax2.bar(pos - 0.2, table.construction_2d_grid, 0.4, label="construction (grid)")
        ax2.bar(pos + 0.2, table.random_2d_grid_mean, 0.4, label="random init (grid, mean)")
        ax2.axhline(max2, color="k", ls="--", lw=1, label=f"one-layer maximum {max2}")
        ax2.set_yscale("log")
        ax2.set_xticks(pos, table.architecture)
        ax2.set_title("regions in the plane")
        ax2.legend(fontsize=8)

    def draw_sawtooth(fig: Any) -> None:
        axes = fig.subplots(len(archs), 1, sharex=True)
        fig.set_size_inches(7, 1.8 * len(archs))
        for ax, (layers, units) in zip(np.atleast_1d(axes), archs):
            x, yv = sawtooth[(layers, units)]
            ax.plot(x, yv, lw=0.8)
            ax.set_ylabel(f"{layers}×{units}")
        np.atleast_1d(axes)[-1].set_xlabel("x (the construction's output: the input folded units^layers times)")

    return LessonOutput(
        table=table, checks=checks,
        figures={"partitions": draw_partitions, "counts": draw_counts, "sawtooth": draw_sawtooth}, notes=notes,
        numbers={f"construction_2d_{r.architecture}": float(r.construction_2d_grid) for r in table.itertuples()},
    )

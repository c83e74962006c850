"""Renderers: figure data objects -> matplotlib figures -> PNG / SVG bytes.

Uses :class:`matplotlib.figure.Figure` directly (no pyplot state, no GUI backend): safe in
threads, servers and tests. Colour maps are oriented so that the *better* end of a quantity
is always the bright (yellow) end of viridis.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from trilemma.errors import InvalidArgumentError
from trilemma.report._figdata import CurvesData, IndicatorScatterData, ParetoData, TopologyMapData, metric_label

__all__ = [
    "FigureFiles",
    "plot_topology_map",
    "plot_indicator_scatter",
    "plot_curves",
    "plot_pareto",
    "figure_bytes",
    "save_figure",
]

_RC: Any = {"svg.hashsalt": "trilemma", "svg.fonttype": "path", "font.size": 9, "axes.titlesize": 10}
_META = {"svg": {"Date": None}, "png": {"Software": None}}


def _cmap(higher_is_better: bool | None) -> str:
    return "viridis_r" if higher_is_better is False else "viridis"


def _wide_positive(values: np.ndarray) -> bool:
    values = values[np.isfinite(values)]
    return bool(len(values)) and values.min() > 0 and values.max() / values.min() > 1e3


def _p_colours(ps: Sequence[float]) -> dict[float, tuple[float, ...]]:
    ps = sorted(set(ps))
    cmap = matplotlib.colormaps["tab10" if len(ps) <= 10 else "viridis"]
    if len(ps) <= 10:
        return {p: cmap(i) for i, p in enumerate(ps)}
    return {p: cmap(i / max(1, len(ps) - 1)) for i, p in enumerate(ps)}


def plot_topology_map(data: TopologyMapData) -> Figure:
    """Two panels: group means over the plane of the two topology-group keys, and the
    quantity against the second key per value of the first (the DAG space: d̄ and P).

    Left: every architecture as a small jittered dot at its (col, row), coloured by its value,
    under one large disc per topology group coloured by the group mean (area ∝ group size).
    Right: the value against the column key, architectures as faint dots, group means ± one
    standard deviation joined per row value (the papers' Figures 3–5).
    """
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(10.5, 4.2), layout="constrained")
        left, right = fig.subplots(1, 2)
        pts, grp = data.points, data.groups
        rl, cl = data.row_label or "rows", data.col_label or "columns"
        norm = Normalize(vmin=float(pts["value"].min()), vmax=float(pts["value"].max()))
        cmap = _cmap(data.higher_is_better)
        rng = np.random.default_rng(0)
        dx = 0.06 * max(1e-9, float(np.ptp(pts["col"])) or 1.0)
        log_rows = bool(pts["row"].max() > 20 and pts["row"].min() > 0)
        jitter_x = rng.uniform(-dx, dx, len(pts))
        jitter_y = rng.uniform(-0.18, 0.18, len(pts))
        y = pts["row"] * np.exp(0.3 * jitter_y) if log_rows else pts["row"] + jitter_y
        left.scatter(pts["col"] + jitter_x, y, c=pts["value"], cmap=cmap, norm=norm, s=6, alpha=0.6,
                     linewidths=0, rasterized=True)
        sizes = 40 + 360 * np.sqrt(grp["count"] / grp["count"].max())
        sc = left.scatter(grp["col"], grp["row"], c=grp["mean"], cmap=cmap, norm=norm, s=sizes,
                          edgecolors="black", linewidths=0.6, alpha=0.9, zorder=3)
        if log_rows:
            left.set_yscale("log")
        else:
            left.yaxis.set_major_locator(MaxNLocator(integer=True))
        left.set_xlabel(cl)
        left.set_ylabel(rl)
        left.set_title(f"{len(grp)} ({rl}, {cl}) groups, {len(pts)} architectures (disc area ∝ group size)")
        bar = fig.colorbar(sc, ax=left, shrink=0.9)
        bar.set_label(f"{data.label}" + (f" ({data.direction_text})" if data.direction_text else ""))
        colours = _p_colours(grp["row"].tolist())
        for r, colour in colours.items():
            sel = pts[pts["row"] == r]
            right.scatter(sel["col"], sel["value"], color=colour, s=5, alpha=0.25, linewidths=0, rasterized=True)
            g = grp[grp["row"] == r].sort_values("col")
            right.errorbar(g["col"], g["mean"], yerr=g["std"], color=colour, marker="o", ms=4,
                           capsize=2, lw=1, label=f"{rl} = {r:g}")
        if _wide_positive(pts["value"].to_numpy()):
            right.set_yscale("log")
        right.set_xlabel(cl)
        right.set_ylabel(data.label)
        right.set_title(f"group mean ± std per {rl}")
        if len(colours) <= 12:
            right.legend(fontsize=7, ncols=2 if len(colours) > 6 else 1, loc="best")
        title = data.label if data.label == data.column else f"{data.label} [{data.column}]"
        fig.suptitle(f"{title} over the topology" + (f" ({data.axis} axis)" if data.axis else ""))
    return fig


def plot_indicator_scatter(items: Sequence[IndicatorScatterData], title: str = "") -> Figure:
    """One panel per indicator: indicator (x) against ground truth (y), τ in the legend."""
    n = len(items)
    if n == 0:
        raise InvalidArgumentError("plot_indicator_scatter needs at least one indicator, got none")
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(3.6 * ncols + 0.6, 3.2 * nrows + 0.4), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, item in zip(axes, items):
            pts = item.points
            style = {"c": pts["colour"], "cmap": "viridis"} if pts["colour"].notna().all() else {"color": "tab:blue"}
            ax.scatter(pts["x"], pts["y"], s=7, alpha=0.6, linewidths=0, label=item.legend, rasterized=True,
                       **style)
            if _wide_positive(pts["x"].to_numpy()):
                ax.set_xscale("log")
            if _wide_positive(pts["y"].to_numpy()):
                ax.set_yscale("log")
            ax.set_xlabel(item.x_label)
            ax.set_ylabel(item.y_label)
            ax.set_title(f"{item.x_label} vs {item.y_label}")
            ax.legend(loc="best", fontsize=7, handlelength=0, handletextpad=0, markerscale=0)
        for ax in axes[n:]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
    return fig


def plot_curves(data: CurvesData) -> Figure:
    """Training (solid) and test (dashed) curves of the per-axis winners."""
    panels = [cols for cols in (data.loss_columns, data.acc_columns) if cols]
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(5.2 * len(panels) + 0.4, 3.8), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)).ravel()
        colours = matplotlib.colormaps["tab10"]
        for k, (arch, roles) in enumerate(data.roles.items()):
            sel = data.curves[data.curves["arch"] == arch]
            for ax, cols in zip(axes, panels):
                for col in cols:
                    ax.plot(sel["epoch"], sel[col], color=colours(k % 10), ls="-" if col.startswith("train") else "--",
                            lw=1.3, label=f"{arch} ({col.split('_')[0]}; best {', '.join(roles)})")
        for ax, cols in zip(axes, panels):
            kind = "loss" if cols[0].endswith("loss") else "accuracy"
            ax.set_xlabel("epoch")
            ax.set_ylabel(kind)
            ax.set_title(f"{kind}: train solid, test dashed")
            ax.legend(fontsize=7, loc="best")
        fig.suptitle("training curves of the per-axis winners")
    return fig


def plot_pareto(data: ParetoData) -> Figure:
    """2-D projections of the three-axis Pareto front; axis winners starred."""
    pairs = data.pairs or ((0, 1),)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(4.0 * len(pairs) + 0.4, 4.3), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(pairs), squeeze=False)).ravel()
        pts = data.points
        front = pts["pareto_layer"] == 1
        markers = ("*", "P", "X", "D")
        for ax, (i, j) in zip(axes, pairs):
            oi, oj = data.objectives[i], data.objectives[j]
            ax.scatter(pts.loc[~front, oi.column], pts.loc[~front, oj.column], s=6, color="0.6", alpha=0.5,
                       linewidths=0, label="dominated", rasterized=True)
            ax.scatter(pts.loc[front, oi.column], pts.loc[front, oj.column], s=14, color="tab:red",
                       label=f"Pareto front ({int(front.sum())})", zorder=3)
            for k, (axis, arch) in enumerate(data.champions.items()):
                row = pts[pts["arch"] == arch]
                ax.scatter(row[oi.column], row[oj.column], marker=markers[k % len(markers)], s=110,
                           edgecolors="black", linewidths=0.6, zorder=4, label=f"best {axis}: {arch}")
            for o, setter in ((oi, ax.set_xlabel), (oj, ax.set_ylabel)):
                setter(f"{metric_label(o.column)} ({'higher' if o.higher_is_better else 'lower'} is better)")
            ax.set_title(f"{oi.axis} vs {oj.axis}")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(5, len(labels)), fontsize=8)
        fig.suptitle("Pareto front over the three axes (2-D projections of the 3-D front)")
    return fig


def _freeze_layout(fig: Figure) -> None:
    """Run the constrained layout once and keep its result (saving twice would lay out twice)."""
    if fig.get_layout_engine() is not None:
        with matplotlib.rc_context(_RC):
            fig.draw_without_rendering()
        fig.set_layout_engine("none")


def figure_bytes(fig: Figure, fmt: str, dpi: int = 110) -> bytes:
    """Render ``fig`` as ``"png"`` or ``"svg"`` bytes (deterministic: no dates, fixed SVG ids).

    The first call fixes the figure's constrained layout (it would otherwise shift by
    round-off at every draw), so repeated calls give identical bytes.
    """
    if fmt not in _META:
        raise InvalidArgumentError(f"fmt must be 'png' or 'svg', got {fmt!r}")
    _freeze_layout(fig)
    buf = io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=_META[fmt])
    return buf.getvalue()


@dataclass(frozen=True)
class FigureFiles:
    """Where one figure was written, and its bytes for embedding."""

    name: str
    title: str
    png: Path
    svg: Path


def save_figure(fig: Figure, directory: Path, name: str, title: str = "") -> tuple[FigureFiles, dict[str, bytes]]:
    """Write ``fig`` as ``directory/name.png`` and ``.svg``; return the paths and the bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    blobs = {fmt: figure_bytes(fig, fmt) for fmt in ("png", "svg")}
    files = FigureFiles(name, title or name, directory / f"{name}.png", directory / f"{name}.svg")
    files.png.write_bytes(blobs["png"])
    files.svg.write_bytes(blobs["svg"])
    return files, blobs

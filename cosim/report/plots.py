"""Figures of the HTML reports, drawn with matplotlib from plain data.

matplotlib is imported inside the functions (a ``cosim`` command that draws nothing never loads
it) and only its object API is used (:class:`matplotlib.figure.Figure`, the Agg renderer): no
pyplot, no global backend, no window. Every figure is drawn under matplotlib's default style with
the few settings of :data:`STYLE`, whatever the user's matplotlibrc says, and written without a
timestamp or version in the file: the same data gives the same PNG bytes. Each function writes
one PNG to a temporary name and renames it into place (:func:`save`).

One function per kind of figure, shared by every report page: :func:`stacked_bars` (step
breakdowns, AFD busy/idle), :func:`link_heatmap` (links x time, of a network run, a step or a
finalist), :func:`pareto_plot`, :func:`paired_bars` (the flow/packet re-check), :func:`cdf_plot`
(latency distributions) and :func:`timeline_plot` (a serving run over time).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from cosim.engine.summary import LinkSeries
from cosim.io_atomic import atomic_path

#: rcParams set on top of matplotlib's defaults for every figure.
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8,
         "legend.frameon": False, "savefig.dpi": 100, "figure.dpi": 100, "svg.hashsalt": "cosim"}
#: Colours of the serving modes (others cycle through the remaining ones).
MODE_COLOURS = {"aggregated": "#1f77b4", "aggregated+afd": "#17becf", "pd": "#d62728", "pd+afd": "#ff7f0e"}
_CYCLE = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


@contextmanager
def figure(width_in: float, height_in: float, **subplots) -> Iterator:
    """A new figure (``Figure`` and its axes) under :data:`STYLE`."""
    import matplotlib
    import matplotlib.style
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"), matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width_in, height_in), layout="constrained")
        axes = fig.subplots(**subplots) if subplots else fig.add_subplot()
        yield fig, axes


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically, without timestamp or software metadata."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return path


def _colours(names: Sequence[str], palette) -> dict[str, str]:
    from matplotlib.colors import to_hex

    n = max(len(names), 1)
    return {name: to_hex(palette(0.35 + 0.6 * i / max(n - 1, 1))) for i, name in enumerate(names)}


def segment_colours(compute: Sequence[str], comm: Sequence[str], other: Sequence[str] = ()) -> dict[str, str]:
    """Colours of step-breakdown segments: compute classes in blues, communication in oranges,
    the rest in greys (in the order given: the same name gets the same colour on every bar)."""
    from matplotlib import colormaps

    out = _colours(list(compute), colormaps["Blues"])
    out.update(_colours(list(comm), colormaps["Oranges"]))
    out.update(_colours(list(other), colormaps["Greys"]))
    return out


def stacked_bars(bars: Sequence[tuple[str, dict[str, float]]], colours: dict[str, str], path: str | Path, *,
                 title: str, unit: str = "ms", scale: float = 1e3) -> Path:
    """Horizontal stacked bars: one per ``(label, {segment: seconds})``, segments in the order of
    ``colours`` (which names every segment), values times ``scale`` in ``unit``."""
    with figure(8.0, 1.6 + 0.45 * len(bars)) as (fig, ax):
        labels = [label for label, _ in bars]
        y = np.arange(len(bars))
        left = np.zeros(len(bars))
        for seg, colour in colours.items():
            widths = np.array([parts.get(seg, 0.0) * scale for _, parts in bars])
            if not widths.any():
                continue
            ax.barh(y, widths, left=left, color=colour, label=seg, edgecolor="white", linewidth=0.5)
            left += widths
        for yi, total in zip(y, left):
            ax.text(total, yi, f" {total:.2f} {unit}", va="center", fontsize=8)
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_xlim(0, max(left.max() if len(left) else 0.0, 1e-9) * 1.18)
        ax.set_xlabel(unit)
        ax.set_title(title)
        ax.grid(axis="y", visible=False)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), ncols=1 if len(colours) <= 14 else 2)
        return save(fig, path)


def _time_unit(span_s: float) -> tuple[str, float]:
    for unit, scale in (("us", 1e6), ("ms", 1e3), ("s", 1.0)):
        if span_s * scale < 5000:
            return unit, scale
    return "s", 1.0


def link_heatmap(series: LinkSeries, path: str | Path, *, title: str, top: int = 16) -> Path:
    """Utilization of the ``top`` busiest links (rows, :meth:`LinkSeries.top`, labelled ``link
    [tier]``) over time (columns: the series' bins); the colour scale runs from 0 to the highest
    bin shown (named in the colour bar's label), so lightly loaded links still show their pattern."""
    rows = series.top(top)
    util = np.clip(series.utilization[rows], 0.0, 1.0) * 100.0 if len(rows) else np.zeros((1, 1))
    bins = util.shape[1]
    peak = float(util.max()) if util.size else 0.0
    unit, scale = _time_unit(series.bin_s * bins)
    with figure(9.0, 1.5 + 0.24 * max(len(rows), 1)) as (fig, ax):
        im = ax.imshow(util, aspect="auto", interpolation="nearest", cmap="magma_r", vmin=0.0, vmax=max(peak, 1e-3),
                       extent=(0.0, series.bin_s * bins * scale, len(rows) - 0.5 if len(rows) else 0.5, -0.5))
        ax.set_yticks(np.arange(len(rows)), [f"{series.names[i]} [{series.tiers[i]}]" for i in rows], fontsize=7)
        ax.set_xlabel(f"time ({unit})")
        ax.set_title(title)
        ax.grid(False)
        fig.colorbar(im, ax=ax, label=f"utilization % (peak bin {peak:.3g} %)", pad=0.01)
        return save(fig, path)


def pareto_plot(points: Sequence[dict], front: Sequence[dict], path: str | Path, *, title: str,
                x: str = "tokens_per_s_per_user", y: str = "tokens_per_s_per_gpu") -> Path:
    """Every point (``x`` against ``y``) coloured by its mode, the front drawn as a line through
    its points."""
    modes = sorted({p["mode"] for p in points} | {p["mode"] for p in front})
    extra = iter(_CYCLE * (1 + len(modes) // len(_CYCLE)))
    colours = {m: MODE_COLOURS.get(m) or next(extra) for m in modes}
    with figure(7.0, 4.6) as (fig, ax):
        for m in modes:
            ps = [p for p in points if p["mode"] == m]
            ax.scatter([p[x] for p in ps], [p[y] for p in ps], s=28, color=colours[m], label=f"{m} ({len(ps)})",
                       alpha=0.85, edgecolor="white", linewidth=0.5, zorder=3)
        if front:
            fx = [p[x] for p in front]
            fy = [p[y] for p in front]
            ax.plot(fx, fy, color="black", linewidth=1.2, marker="o", markersize=9, markerfacecolor="none",
                    label="Pareto front", zorder=4)
        ax.margins(0.08)
        ax.set_xlabel("tokens/s per user")
        ax.set_ylabel("tokens/s per GPU")
        ax.set_title(title)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.legend(loc="best")
        return save(fig, path)


def paired_bars(labels: Sequence[str], values: dict[str, Sequence[float | None]], path: str | Path, *,
                title: str, unit: str) -> Path:
    """Horizontal bars, one group per label and one bar per series of ``values`` (``None``:
    missing)."""
    n = max(len(values), 1)
    with figure(8.0, 1.4 + 0.22 * n * max(len(labels), 1)) as (fig, ax):
        y = np.arange(len(labels))
        h = 0.8 / n
        for i, (name, vs) in enumerate(values.items()):
            vals = np.array([np.nan if v is None else v for v in vs], dtype=float)
            ax.barh(y + (i - (n - 1) / 2) * h, np.nan_to_num(vals), height=h, label=name,
                    color=("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")[i % 4])
        ax.set_yticks(y, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        ax.set_title(title)
        ax.grid(axis="y", visible=False)
        ax.legend(loc="lower right")
        return save(fig, path)


def moe_traffic_plot(per_layer: Sequence[dict], rank_expert_s: dict[int, float], path: str | Path, *,
                     title: str, rank_expert_max_s: dict[int, float] | None = None) -> Path:
    """MoE token traffic of a step: per MoE layer the dispatch + combine bytes that stay inside a
    node and those that cross nodes (stacked), and per rank its mean routed-expert time over the
    layers (bars) and its largest (ticks: the layers where it is the straggler)."""
    layers = sorted({d["layer"] for d in per_layer})
    intra = np.array([sum(d["intra_bytes"] for d in per_layer if d["layer"] == l) for l in layers]) / 1e6
    inter = np.array([sum(d["inter_bytes"] for d in per_layer if d["layer"] == l) for l in layers]) / 1e6
    with figure(10.0, 3.4, ncols=2, gridspec_kw={"width_ratios": [3, 2]}) as (fig, axes):
        ax, bx = axes
        x = np.arange(len(layers))
        ax.bar(x, intra, color="#1f77b4", label="inside a node", width=0.9)
        ax.bar(x, inter, bottom=intra, color="#d62728", label="across nodes", width=0.9)
        step = max(1, len(layers) // 12)
        ax.set_xticks(x[::step], [str(l) for l in layers][::step], fontsize=7)
        ax.set_xlabel("MoE layer")
        ax.set_ylabel("MB (dispatch + combine)")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, max(float((intra + inter).max()) if len(layers) else 0.0, 1e-9) * 1.3)
        ax.legend(loc="upper right", fontsize=7, ncols=2)
        ranks = list(rank_expert_s)
        t = np.array([rank_expert_s[r] for r in ranks]) * 1e6
        bx.bar(np.arange(len(ranks)), t, color="#2ca02c", width=0.9, label="mean over layers")
        top = t
        if rank_expert_max_s:
            top = np.array([rank_expert_max_s[r] for r in ranks]) * 1e6
            bx.scatter(np.arange(len(ranks)), top, marker="_", s=120, color="black", label="largest layer")
        if len(t):
            bx.axhline(t.mean(), color="black", linewidth=0.8, linestyle="--", label=f"mean {t.mean():.0f} us")
            bx.set_ylim(0, max(float(top.max()), 1e-9) * 1.35)
            bx.legend(loc="upper right", fontsize=7, ncols=3)
        step = max(1, len(ranks) // 16)
        bx.set_xticks(np.arange(len(ranks))[::step], [str(r) for r in ranks][::step], fontsize=7)
        bx.set_xlabel("rank")
        bx.set_ylabel("routed-expert time per layer (us)")
        bx.set_title("Expert load per rank", fontsize=9)
        return save(fig, path)


def cdf_plot(panels: Sequence[tuple[str, np.ndarray, float | None]], path: str | Path, *, title: str) -> Path:
    """One empirical CDF per ``(name, seconds, SLO seconds or None)`` panel, in ms, with its
    p50/p90/p99 marked and the SLO as a red dashed line."""
    with figure(3.3 * max(len(panels), 1), 3.2, ncols=max(len(panels), 1), squeeze=False) as (fig, axes):
        for ax, (name, values, slo) in zip(axes[0], panels):
            v = np.sort(np.asarray(values, dtype=float))
            v = v[~np.isnan(v)] * 1e3
            if len(v):
                ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", color="#1f77b4")
                for q, style in ((50, ":"), (90, "--"), (99, "-.")):
                    pv = float(np.percentile(v, q))
                    ax.axvline(pv, color="grey", linestyle=style, linewidth=0.8, label=f"p{q} {pv:.1f} ms")
            if slo:
                ax.axvline(slo * 1e3, color="#d62728", linestyle="--", linewidth=1.2, label=f"SLO {slo * 1e3:g} ms")
            ax.set_ylim(0, 1.02)
            ax.set_xlim(left=0)
            ax.set_xlabel(f"{name} (ms)")
            ax.set_ylabel("share of samples")
            ax.set_title(f"{name} ({len(v):,} samples)")
            ax.legend(loc="lower right")
        fig.suptitle(title)
        return save(fig, path)


def timeline_plot(t_s: np.ndarray, panels: Sequence[tuple[str, np.ndarray]], path: str | Path, *,
                  title: str) -> Path:
    """Stacked panels sharing the time axis ``t_s`` (seconds): one line per ``(label, values)``."""
    with figure(8.0, 1.0 + 1.8 * len(panels), nrows=len(panels), sharex=True, squeeze=False) as (fig, axes):
        for ax, (label, values) in zip(axes[:, 0], panels):
            ax.plot(t_s, values, color="#1f77b4", drawstyle="steps-mid")
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0)
        axes[-1, 0].set_xlabel("simulated time (s)")
        fig.suptitle(title)
        return save(fig, path)

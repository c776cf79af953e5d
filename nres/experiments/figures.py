"""The comparison's figures: the metric against wall-clock, sequential steps and env steps.

One curve per method: the mean over seeds with a 95% band (Student-t interval of the
mean, ``mean +- t_{n-1} s / sqrt(n)``; no band for one seed). Seeds are evaluated at
the same updates, but their wall-clock (and burn-in env steps) differ, so every seed's
curve is read on a common grid (every seed's x values) as a step function: at ``x`` a
seed's value is that of its last evaluation at or before ``x`` (what the run had
reached by then; the same rule as time-to-target), and a seed that has finished keeps
its final value. Means and bands are taken
over log values where the axis is logarithmic. Reference values (e.g. tuned
hand-designed optimizers) are dashed horizontal lines. A step axis is logarithmic (linear
below the first step) where the methods' ranges differ more than 8x, and the y range follows the
seeds' own values, so a wide band with few seeds does not flatten the curves.

Given the summary, each target is a dotted horizontal line and each method that reached it
(finite median) a marker at its median x-to-target with a horizontal bar over its
interval (:mod:`nres.experiments.summary`; an infinite end runs to the axis' edge), in the
method's colour: the verdict's intervals, on the figure.
"""

from __future__ import annotations

import math
import pathlib
from typing import Mapping, Sequence

import numpy as np

from nres.experiments.summary import AXES
from nres.plotting import pyplot as _pyplot
from nres.plotting import save

# two-sided 95% Student-t quantiles, degrees of freedom 1..30
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t95(dof: int) -> float:
    return _T95[dof - 1] if dof <= len(_T95) else 1.96


def log_scale(values: Sequence[float]) -> bool:
    """Log y axis for positive values spanning more than a factor of 5."""
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) > 5 * min(finite)


def step_values(grid: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The value of the last point at or before each grid x (``xs`` sorted ascending)."""
    index = np.searchsorted(xs, grid, side="right") - 1
    return ys[np.clip(index, 0, len(ys) - 1)]


def mean_band(curves: Sequence[Sequence[Mapping]], x_key: str, log: bool):
    """``(x [P], mean [P], low [P], high [P])`` over seeds; ``None`` if no seed has points.

    The grid is every seed's x values from the point where every seed has started.
    """
    series = []
    for c in curves:
        xs = np.asarray([p[x_key] for p in c], float)
        ys = np.asarray([p["value"] for p in c], float)
        keep = np.isfinite(xs) & np.isfinite(ys) & ((ys > 0) if log else True)
        if keep.sum():
            series.append((xs[keep], np.log(ys[keep]) if log else ys[keep]))
    if not series:
        return None
    lo = max(xs[0] for xs, _ in series)  # before every seed has a first point there is no mean
    union = np.unique(np.concatenate([xs for xs, _ in series]))
    grid = union[union >= lo]
    stacked = np.stack([step_values(grid, xs, ys) for xs, ys in series])
    mean = stacked.mean(0)
    if len(series) > 1:
        half = t95(len(series) - 1) * stacked.std(0, ddof=1) / math.sqrt(len(series))
    else:
        half = np.zeros_like(mean)
    low, high = mean - half, mean + half
    if log:  # mean and band of log values: a geometric mean with a multiplicative band
        mean, low, high = np.exp(mean), np.exp(low), np.exp(high)
    return grid, mean, low, high


def _draw_targets(ax, methods: Sequence[Mapping], axis: str, to_target: Mapping) -> None:
    """Dotted target lines; per method a marker at the median x-to-target with its interval as a bar."""
    targets = sorted({t for stats in to_target.values() for t in stats}, key=float)
    for t in targets:
        ax.axhline(float(t), color="0.5", linestyle=":", linewidth=0.8)
    right = ax.get_xlim()[1]
    for i, method in enumerate(methods):
        for t, per_axis in to_target.get(method["name"], {}).items():
            stats = per_axis[axis]
            if stats["median"] is None:
                continue
            median, low = stats["median"], stats["low"]
            high = right if stats["high"] is None else stats["high"]
            ax.errorbar([median], [float(t)], xerr=[[median - low], [max(high - median, 0.0)]], fmt="o",
                        color=f"C{i % 10}", markersize=4, capsize=3, linewidth=1.2)


def _draw(ax, methods: Sequence[Mapping], axis: str, metric: str, log: bool, reference: Sequence[Mapping],
          to_target: Mapping | None = None) -> int:
    x_key, x_label = AXES[axis]
    drawn = 0
    for i, method in enumerate(methods):
        band = mean_band(method["curves"], x_key, log)
        if band is None:
            continue
        grid, mean, low, high = band
        color = f"C{i % 10}"
        n = len(method["curves"])
        ax.plot(grid, mean, color=color, label=f"{method['label']} (n={n})", drawstyle="steps-post")
        if n > 1:
            ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0, step="post")
        drawn += 1
    for j, ref in enumerate(reference):
        ax.axhline(ref["value"], color=f"C{(len(methods) + j) % 10}", linestyle="--", linewidth=1, label=ref["label"])
    ax.set_xlabel(x_label)
    ax.set_ylabel(metric.replace("_", " "))
    if log:
        ax.set_yscale("log")
    xs = [p[x_key] for m in methods for c in m["curves"] for p in c if p[x_key] and p[x_key] > 0]
    ends = [max(p[x_key] for c in m["curves"] for p in c) for m in methods if any(m["curves"])]
    if axis != "wall-clock" and ends and min(ends) > 0 and max(ends) > 8 * min(ends):
        ax.set_xscale("symlog", linthresh=min(xs))  # e.g. FullES's T sequential steps per update against W
        ax.set_xlim(0, max(xs) * 1.2)
    seen = [p["value"] for m in methods for c in m["curves"] for p in c if math.isfinite(p["value"])]
    seen += [r["value"] for r in reference]
    if seen and (not log or min(seen) > 0):
        low, high = min(seen), max(seen)
        pad = (high / low) ** 0.05 if log else 0.05 * (high - low or 1.0)
        ax.set_ylim(*((low / pad, high * pad) if log else (low - pad, high + pad)))
    if to_target:
        _draw_targets(ax, methods, axis, to_target)
    ax.grid(alpha=0.3)
    return drawn


def plot_comparison(methods: Sequence[Mapping], out_dir: str | pathlib.Path, metric: str, title: str = "",
                    reference: Sequence[Mapping] = (), summary: Mapping | None = None) -> dict[str, int]:
    """Write ``<metric>-vs-<axis>.png`` per axis and ``comparison.png`` (all three side by side).

    Args:
      methods: ``{"label", "curves": [points per seed]}`` (points as :func:`summary.curve`).
      reference: ``{"label", "value"}`` horizontal lines.
      summary: :func:`summary.summarize`'s output: draws the targets and the x-to-target intervals.
    Returns the number of method curves drawn per file name.
    """
    plt = _pyplot()
    out_dir = pathlib.Path(out_dir)
    values = [p["value"] for m in methods for c in m["curves"] for p in c] + [r["value"] for r in reference]
    log = log_scale(values)
    to_target = {m["name"]: m["to_target"] for m in summary["methods"]} if summary else {}
    drawn = {}
    fig_all, axes = plt.subplots(1, len(AXES), figsize=(6 * len(AXES), 4.5))
    for ax_all, axis in zip(axes, AXES):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        name = f"{metric}-vs-{axis}.png"
        drawn[name] = _draw(ax, methods, axis, metric, log, reference, to_target)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        save(fig, out_dir / name)
        plt.close(fig)
        drawn["comparison.png"] = _draw(ax_all, methods, axis, metric, log, reference, to_target)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    fig_all.suptitle(title)
    fig_all.tight_layout()
    save(fig_all, out_dir / "comparison.png")
    plt.close(fig_all)
    return drawn

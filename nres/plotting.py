"""Loss curves of one run (``curves.png``) and comparisons of several runs.

Every curve is drawn from :func:`series`: one point per x (a later row replaces an
earlier one, as a re-evaluation does), sorted by x, so lines never run backwards.
Train losses are noisy, so they are drawn raw (faint) with an exponential moving
average on top (:func:`smooth`). The y axis is logarithmic when a positive loss spans
more than a decade. Wall-clock axes start at the first update: the time before it
(burn-in, compilation and the first update itself) is an offset written in the axis label,
not a third of the axis (:func:`wall_clock_offset`). matplotlib is imported only when
a plot is drawn.
"""

from __future__ import annotations

import math
import pathlib
from typing import Sequence

X_AXES = {
    "updates": ("iteration", "updates"),
    "env-steps": ("total_env_steps", "total env steps"),
    "sequential-steps": ("sequential_steps", "sequential steps"),
    "wall-clock": ("wall_time_s", "wall-clock training time from the first update (s)"),
}

SMOOTHING_POINTS = 50  # the moving average spans about len(curve) / SMOOTHING_POINTS points


def image_format(out: str | pathlib.Path) -> str:
    """The image format of ``out`` from its extension (``png`` without one); ValueError for
    an extension matplotlib cannot write, listing those it can."""
    from matplotlib.backend_bases import FigureCanvasBase

    supported = FigureCanvasBase.get_supported_filetypes()
    extension = pathlib.Path(out).suffix.lstrip(".").lower() or "png"
    if extension not in supported:
        raise ValueError(f"cannot write {pathlib.Path(out).suffix!r} images; give a file name ending in "
                         + ", ".join("." + name for name in sorted(supported)))
    return extension


def save(fig, out: str | pathlib.Path) -> None:
    """Write ``fig`` at 100 dpi in the format of ``out``'s extension, atomically (a
    temporary file renamed: a failed write, e.g. on a full disk, leaves no truncated
    image and an earlier one intact). PNGs use fast compression (zlib level 1: about a
    third of the encoding time of the default level 6, for a file about 10% larger)."""
    from nres.checkpoint import atomic_write

    kind = image_format(out)
    options = {"pil_kwargs": {"compress_level": 1}} if kind == "png" else {}
    atomic_write(out, lambda handle: fig.savefig(handle, format=kind, dpi=100, **options))


def pyplot():
    """matplotlib's pyplot on the file-only Agg back end (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def wall_clock_offset(rows: Sequence[dict]) -> float:
    """Seconds of training before the first update's row: burn-in, compilation, first update.

    Uses the first train row's ``wall_time_s`` (rows count wall time from the start of
    the run, the compiling first call included).
    """
    first = min((r for r in rows if "train_loss" in r and _number(r.get("wall_time_s"))),
                key=lambda r: r["iteration"], default=None)
    return float(first["wall_time_s"]) if first else 0.0


def series(rows: Sequence[dict], x_key: str, y_key: str, offset: float = 0.0) -> tuple[list, list]:
    """``(xs, ys)`` of the rows holding ``y_key``: one point per x (the last row wins), sorted by x.

    With ``x_key == "wall_time_s"`` the x values are shifted by ``-offset`` (never below 0).
    """
    points: dict = {}
    for r in rows:
        x, y = r.get(x_key), r.get(y_key)
        if _number(x) and _number(y):
            points[max(0.0, x - offset) if x_key == "wall_time_s" else x] = y
    xs = sorted(points)
    return xs, [points[x] for x in xs]


def smooth(ys: Sequence[float], points: int = SMOOTHING_POINTS) -> list[float]:
    """Bias-corrected exponential moving average over about ``len(ys) / points`` values.

    Non-finite values are skipped (the average carries over them).
    """
    span = max(1.0, len(ys) / points)
    decay = 1.0 - 1.0 / span
    out, average, weight = [], 0.0, 0.0
    for y in ys:
        if math.isfinite(y):
            average = decay * average + (1.0 - decay) * y
            weight = decay * weight + (1.0 - decay)
        out.append(average / weight if weight else float("nan"))
    return out


def _scale_y(ax, values: Sequence[float]) -> None:
    """Log scale for positive losses spanning more than a decade, linear otherwise (e.g. rewards)."""
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) > 10 * min(finite):
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(_null_formatter())  # unlabelled minor ticks: far fewer text objects


def _null_formatter():
    from matplotlib.ticker import NullFormatter

    return NullFormatter()


def _draw_train(ax, xs, ys, color=None, label="train loss"):
    """Raw train loss (faint) and its moving average (solid, labelled)."""
    raw = ax.plot(xs, ys, "-", color=color, alpha=0.25, linewidth=0.8)[0]
    ax.plot(xs, smooth(ys), "-", color=raw.get_color(), linewidth=1.6, label=f"{label} (smoothed)")


def plot_run_curves(rows: list[dict], out: str | pathlib.Path, title: str = "") -> None:
    """Train (raw and smoothed) and test loss against updates, total env steps and wall-clock."""
    fig = run_curves_figure(rows, title)
    save(fig, out)
    pyplot().close(fig)


def run_curves_figure(rows: list[dict], title: str = ""):
    """The figure of :func:`plot_run_curves` (three panels), not yet saved."""
    plt = pyplot()
    offset = wall_clock_offset(rows)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    values = []
    for ax, axis in zip(axes, ("updates", "env-steps", "wall-clock")):
        x_key, label = X_AXES[axis]
        xs, ys = series(rows, x_key, "train_loss", offset)
        if xs:
            _draw_train(ax, xs, ys, color="C0")
            values += ys
        xs, ys = series(rows, x_key, "test_loss", offset)
        if xs:
            ax.plot(xs, ys, "o-", color="C1", label="test loss", markersize=3)
            values += ys
        ax.set_xlabel(label)
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if axis == "wall-clock" and offset > 0:
            ax.axvline(0.0, color="0.5", linestyle=":", linewidth=1)
            ax.set_xlabel(f"{label}\n(+{offset:.3g} s before the first update: burn-in, compilation)")
    for ax in axes:
        _scale_y(ax, values)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.17, top=0.88, wspace=0.22)  # tight_layout costs ~1 s
    return fig


def run_label(config: dict) -> str:
    """Legend text of a run: estimator, N, W, K, sigma, optimizer, lr and its schedule, grad clip, seed.

    E.g. ``pes N=200 W=100 sigma=0.04 sgd lr=1e-05 x0.1 at 1000 seed=3``: two seeds, or a
    piecewise and a constant schedule, get different labels.
    """
    parts = [config["estimator"], f"N={config['num_particles']}"]
    if config["estimator"] != "fulles":
        parts.append(f"W={config['unroll_length']}")
    if config.get("noise_period") is not None:
        parts.append(f"K={config['noise_period']}")
    parts += [f"sigma={config['sigma']:g}", f"{config['optimizer']} lr={config['lr']:g}"]
    if config.get("lr_schedule", "constant") != "constant":
        boundaries = ",".join(str(b) for b in config.get("lr_boundaries") or ())
        parts.append(f"x{config.get('lr_decay', 0.1):g} at {boundaries or '-'}")
    if config.get("grad_clip") is not None:
        parts.append(f"clip={config['grad_clip']:g}")
    if "seed" in config:
        parts.append(f"seed={config['seed']}")
    return " ".join(parts)


def distinct(labels: Sequence[str]) -> list[str]:
    """``labels`` with a repeated one numbered (``label [2]``), so every legend entry names one run."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if labels.count(label) == 1 else f"{label} [{seen[label]}]")
    return out


def plot_comparison(
    runs: Sequence[tuple[str, list[dict]]], out: str | pathlib.Path, x_axis: str, metric: str
) -> int:
    """One curve per run of ``metric`` against ``x_axis``; returns the number of curves.

    Train losses are drawn smoothed over their faint raw values; wall-clock axes start at
    each run's first update (the offsets are listed in the legend).
    """
    plt = pyplot()
    x_key, x_label = X_AXES[x_axis]
    fig, ax = plt.subplots(figsize=(8, 5))
    curves, values = 0, []
    labels = distinct([label for label, _ in runs])
    for i, ((_, rows), label) in enumerate(zip(runs, labels)):
        offset = wall_clock_offset(rows) if x_axis == "wall-clock" else 0.0
        xs, ys = series(rows, x_key, metric, offset)
        if not xs:
            continue
        if x_axis == "wall-clock" and offset > 0:
            label += f" (+{offset:.3g} s before update 1)"
        if metric == "train_loss":
            _draw_train(ax, xs, ys, color=f"C{i % 10}", label=label)
        else:
            ax.plot(xs, ys, "-", color=f"C{i % 10}", label=label, marker="o" if len(xs) <= 50 else None,
                    markersize=3)
        values += ys
        curves += 1
    ax.set_xlabel(x_label)
    ax.set_ylabel(metric.replace("_", " "))
    _scale_y(ax, values)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.1, top=0.97)
    save(fig, out)
    plt.close(fig)
    return curves

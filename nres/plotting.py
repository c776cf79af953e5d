"""Loss curves of one run (``curves.png``) and comparisons of several runs."""

from __future__ import annotations

import pathlib
from typing import Sequence

X_AXES = {
    "updates": ("iteration", "updates"),
    "env-steps": ("total_env_steps", "total env steps"),
    "sequential-steps": ("sequential_steps", "sequential steps"),
    "wall-clock": ("wall_time_s", "wall-clock training time (s)"),
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(rows: list[dict], x_key: str, y_key: str) -> tuple[list, list]:
    points = [(r[x_key], r[y_key]) for r in rows if y_key in r and x_key in r and r[y_key] is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _scale_y(ax, rows: list[dict], keys: Sequence[str]) -> None:
    """Log scale for positive losses spanning a wide range, linear otherwise (e.g. rewards)."""
    values = [r[k] for r in rows for k in keys if isinstance(r.get(k), (int, float))]
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    if finite and min(finite) > 0 and max(finite) > 10 * min(finite):
        ax.set_yscale("log")


def plot_run_curves(rows: list[dict], out: str | pathlib.Path, title: str = "") -> None:
    """Train (and test) loss against updates, total env steps and wall-clock."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, axis in zip(axes, ("updates", "env-steps", "wall-clock")):
        x_key, label = X_AXES[axis]
        for y_key, style in (("train_loss", "-"), ("test_loss", "o-")):
            xs, ys = _series(rows, x_key, y_key)
            if xs:
                ax.plot(xs, ys, style, label=y_key.replace("_", " "), markersize=3)
        ax.set_xlabel(label)
        ax.set_ylabel("loss")
        _scale_y(ax, rows, ("train_loss", "test_loss"))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def run_label(config: dict) -> str:
    parts = [config["estimator"], f"N={config['num_particles']}"]
    if config["estimator"] != "fulles":
        parts.append(f"W={config['unroll_length']}")
    if config.get("noise_period") is not None:
        parts.append(f"K={config['noise_period']}")
    parts += [f"sigma={config['sigma']:g}", f"{config['optimizer']} lr={config['lr']:g}"]
    return " ".join(parts)


def plot_comparison(
    runs: Sequence[tuple[str, list[dict]]], out: str | pathlib.Path, x_axis: str, metric: str
) -> int:
    """One curve per run of ``metric`` against ``x_axis``; returns the number of curves."""
    plt = _pyplot()
    x_key, x_label = X_AXES[x_axis]
    fig, ax = plt.subplots(figsize=(8, 5))
    curves = 0
    for label, rows in runs:
        xs, ys = _series(rows, x_key, metric)
        if xs:
            ax.plot(xs, ys, label=label)
            curves += 1
    ax.set_xlabel(x_label)
    ax.set_ylabel(metric.replace("_", " "))
    _scale_y(ax, [r for _, rows in runs for r in rows], (metric,))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return curves

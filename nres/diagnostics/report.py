"""The table and the plot of ``nres variance`` (from its JSON-ready result rows).

A row is a dict with ``theta`` (label), ``estimator`` (label), ``unroll_length``,
``noise_period`` (or None), ``num_particles``, ``num_samples``, ``mean_norm``,
``total_variance``, ``interval`` ``[low, high]`` and ``analytic`` (or None); rows of a
K sweep also carry ``sweep: true``.
"""

from __future__ import annotations

import math
import pathlib

from nres import plotting


def _number(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def format_table(rows: list[dict]) -> str:
    header = ("theta", "estimator", "W", "K", "N", "M", "|mean|", "tr Cov", "interval", "analytic", "emp/analytic")
    lines = [header]
    for r in rows:
        ratio = None if not r.get("analytic") else r["total_variance"] / r["analytic"]
        lines.append((
            r["theta"], r["estimator"], str(r["unroll_length"]), _number(r["noise_period"]),
            str(r["num_particles"]), str(r["num_samples"]), _number(r["mean_norm"]), _number(r["total_variance"]),
            f"[{_number(r['interval'][0])}, {_number(r['interval'][1])}]", _number(r.get("analytic")),
            _number(ratio),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def _pyplot():
    return plotting.pyplot()


def _positive(x) -> bool:
    return x is not None and not math.isnan(x) and x > 0


def plot_variance(rows: list[dict], out: str | pathlib.Path, title: str = "") -> None:
    """Bars of ``tr Cov`` per estimator (grouped by theta, log scale, interval whiskers,
    analytic as black diamonds); with a K sweep, a second panel of ``tr Cov`` against K."""
    plt = _pyplot()
    bars = [r for r in rows if not r.get("sweep")]
    sweep = [r for r in rows if r.get("sweep")]
    panels = (1 if bars else 0) + (1 if sweep else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(7 * max(panels, 1), 4.8), squeeze=False)
    axes = list(axes[0])
    thetas = list(dict.fromkeys(r["theta"] for r in rows))
    if bars:
        ax = axes.pop(0)
        names = list(dict.fromkeys(r["estimator"] for r in bars))
        width = 0.8 / len(thetas)
        for j, theta in enumerate(thetas):
            for i, name in enumerate(names):
                match = [r for r in bars if r["theta"] == theta and r["estimator"] == name]
                if not match or not _positive(match[0]["total_variance"]):
                    continue
                r = match[0]
                x = i + (j - (len(thetas) - 1) / 2) * width
                low, high = r["interval"]
                err = [[max(r["total_variance"] - low, 0.0)], [max(high - r["total_variance"], 0.0)]]
                ax.bar(x, r["total_variance"], width, color=f"C{j}", label=theta if i == 0 else None,
                       yerr=err if _positive(low) or _positive(high) else None, capsize=3)
                if _positive(r.get("analytic")):
                    ax.plot(x, r["analytic"], "kD", markersize=5, label="analytic" if (i, j) == (0, 0) else None)
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("total variance tr Cov")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    if sweep:
        ax = axes.pop(0)
        for j, theta in enumerate(thetas):
            points = sorted((r for r in sweep if r["theta"] == theta), key=lambda r: r["noise_period"])
            if not points:
                continue
            ks = [r["noise_period"] for r in points]
            values = [r["total_variance"] for r in points]
            low = [max(v - r["interval"][0], 0.0) for v, r in zip(values, points)]
            high = [max(r["interval"][1] - v, 0.0) for v, r in zip(values, points)]
            ax.errorbar(ks, values, yerr=[low, high], fmt="o-", color=f"C{j}", capsize=3, label=f"{theta} empirical")
            analytic = [(k, r["analytic"]) for k, r in zip(ks, points) if _positive(r.get("analytic"))]
            if analytic:
                ax.plot(*zip(*analytic), "k--", alpha=0.7, label=f"{theta} analytic")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("noise period K (PES: K = W, NRES: K >= T)")
        ax.set_ylabel("total variance tr Cov")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    plotting.save(fig, out)
    plt.close(fig)

"""Time, sequential steps and env steps to each target, over seeds, and the verdict.

Pure functions over the rows of ``metrics.jsonl``. A run's *curve* is its evaluation
points (one per evaluated saved ``theta``, sorted by update, a re-evaluated update counted
once: the last row wins), each with the training counters of that update. Reaching a
target means the first evaluated point whose metric meets it (``<=`` for a loss, ``>=``
for a return); its resolution is the evaluation stride, with no interpolation.

Over seeds every method reports the median and the range (min, max) of the x value at
which the target was reached, counting a seed that never reached it as infinitely late:
the median is finite only when more than half the seeds reached the target. With the
few seeds of a comparison the range is the honest interval (for ``n`` seeds, the
probability that the true median lies outside it is ``2^(1-n)``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

# x axis name -> (metrics.jsonl key, label)
AXES = {
    "wall-clock": ("wall_time_s", "wall-clock training time (s)"),
    "sequential-steps": ("sequential_steps", "sequential steps"),
    "env-steps": ("total_env_steps", "total env steps"),
}
COUNTERS = ("wall_time_s", "sequential_steps", "total_env_steps")


def curve(rows: Sequence[Mapping[str, Any]], metric: str, env_steps_per_update: int) -> list[dict]:
    """Evaluation points ``{iteration, wall_time_s, sequential_steps, total_env_steps, value}``.

    Counters come from the training row of the same update; the starting ``theta``
    (update 0) sits at zero time and sequential steps and at the burn-in's env steps.
    """
    train = {r["iteration"]: r for r in rows if "train_loss" in r}
    evals: dict[int, float] = {}
    for r in rows:
        if metric in r and r[metric] is not None:
            evals[int(r["iteration"])] = float(r[metric])
    first = train.get(min(train)) if train else None
    burn_in = (first["total_env_steps"] - env_steps_per_update * first["iteration"]) if first else 0
    points = []
    for iteration in sorted(evals):
        source = train.get(iteration)
        if source is None and iteration != 0:
            continue  # an evaluated theta with no training row: no counters to place it
        counters = ({"wall_time_s": 0.0, "sequential_steps": 0, "total_env_steps": burn_in} if source is None
                    else {k: source[k] for k in COUNTERS})
        points.append({"iteration": iteration, **counters, "value": evals[iteration]})
    return points


def reached(value: float, target: float, goal: str) -> bool:
    return value <= target if goal == "min" else value >= target


def first_reaching(points: Sequence[Mapping], axis_key: str, target: float, goal: str) -> Optional[float]:
    """The x value (``axis_key``) of the first point whose value meets ``target``; ``None`` if none does."""
    for point in points:
        if math.isfinite(point["value"]) and reached(point["value"], target, goal):
            return float(point[axis_key])
    return None


def over_seeds(values: Sequence[Optional[float]]) -> dict:
    """Median and range over seeds; ``None`` (not reached) counts as infinitely late.

    Returns ``{"median", "low", "high", "reached", "seeds"}``; ``median``/``high`` are
    ``None`` where they are infinite.
    """
    as_float = [math.inf if v is None else float(v) for v in values]
    if not as_float:
        return {"median": None, "low": None, "high": None, "reached": 0, "seeds": 0}
    finite = [v for v in as_float if math.isfinite(v)]
    ordered = sorted(as_float)
    n = len(ordered)
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    finite_or_none = lambda v: v if math.isfinite(v) else None
    return {"median": finite_or_none(median), "low": finite_or_none(ordered[0]), "high": finite_or_none(ordered[-1]),
            "reached": len(finite), "seeds": n}


def _best(values: Sequence[float], goal: str) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan
    return min(finite) if goal == "min" else max(finite)


def summarize(methods: Sequence[Mapping], targets: Sequence[float], goal: str) -> dict:
    """Per method and target, x-to-target over seeds; per axis and target, the verdict.

    Args:
      methods: ``{"name", "label", "curves": [points per seed]}`` in the experiment's order.
      targets: metric levels; goal: ``"min"`` or ``"max"``.
    """
    out_methods = []
    for method in methods:
        curves = method["curves"]
        entry = {"name": method["name"], "label": method.get("label", method["name"]), "seeds": len(curves),
                 "to_target": {}, "final": None, "best": None}
        for target in targets:
            entry["to_target"][repr(float(target))] = {
                axis: over_seeds([first_reaching(c, key, target, goal) for c in curves])
                for axis, (key, _) in AXES.items()}
        finals = [c[-1]["value"] for c in curves if c]
        bests = [_best([p["value"] for p in c], goal) for c in curves if c]
        entry["final"] = over_seeds([v if math.isfinite(v) else None for v in finals]) if finals else None
        entry["best"] = over_seeds([v if math.isfinite(v) else None for v in bests]) if bests else None
        out_methods.append(entry)
    verdict = {}
    for axis in AXES:
        verdict[axis] = {}
        for target in targets:
            t = repr(float(target))
            ranked = sorted(
                ((m["to_target"][t][axis]["median"], i, m["name"]) for i, m in enumerate(out_methods)
                 if m["to_target"][t][axis]["median"] is not None))
            verdict[axis][t] = [{"method": name, "median": median} for median, _, name in ranked]
    return {"methods": out_methods, "verdict": verdict, "targets": [float(t) for t in targets], "goal": goal}


# -- markdown ---------------------------------------------------------------------------------
def _fmt(value: Optional[float]) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-2:
        return f"{value:.3g}"
    return f"{value:.4g}" if abs(value) < 100 else f"{value:.0f}"


def _cell(stats: Optional[Mapping], missing: str = "not reached") -> str:
    if not stats or not stats["seeds"]:
        return "—"
    if stats["median"] is None:
        return f"{missing} ({stats['reached']}/{stats['seeds']})"
    high = _fmt(stats["high"]) if stats["high"] is not None else missing
    return f"{_fmt(stats['median'])} [{_fmt(stats['low'])}, {high}] ({stats['reached']}/{stats['seeds']})"


def markdown(summary: Mapping, title: str, metric: str, hardware: str, notes: Sequence[str] = (),
             reference: Optional[Sequence[Mapping]] = None, claim: str = "nres") -> str:
    """``summary.md``: hardware, per-method tables, the verdict per axis and target."""
    lines = [f"# {title}", "", f"Hardware: {hardware}", ""]
    lines += [f"{note}" for note in notes]
    if notes:
        lines.append("")
    lines += [f"Cells: median [min, max] over seeds (seeds that reached the target / seeds) of the first "
              f"evaluated update whose {metric} is {'<=' if summary['goal'] == 'min' else '>='} the target.", ""]
    for target in summary["targets"]:
        t = repr(float(target))
        lines += [f"## {metric} {'<=' if summary['goal'] == 'min' else '>='} {target:g}", "",
                  "| method | wall-clock (s) | sequential steps | env steps |", "|---|---|---|---|"]
        for m in summary["methods"]:
            cells = [_cell(m["to_target"][t][axis]) for axis in AXES]
            lines.append(f"| {m['label']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"## Final and best {metric}", "", "Median [min, max] over seeds (seeds with a finite value / seeds).", "",
              "| method | final | best |", "|---|---|---|"]
    for m in summary["methods"]:
        lines.append(f"| {m['label']} | {_cell(m['final'], 'non-finite')} | {_cell(m['best'], 'non-finite')} |")
    lines.append("")
    if reference:
        lines += ["## Reference: tuned hand-designed optimizers (same inner problem and horizon)", "",
                  "| optimizer | tuned lr | valid loss | test loss | test accuracy |", "|---|---|---|---|---|"]
        for r in reference:
            lines.append(f"| {r['name']} | {r['learning_rate']:.3g} | {r['valid_loss']:.4f} | {r['test_loss']:.4f} | "
                         f"{r['test_accuracy']:.4f} |")
        lines.append("")
    names = [m["name"] for m in summary["methods"]]
    lines += ["## Verdict: which method reaches each target first", ""]
    header = "| x axis | target | first | second | " + (f"{claim} first? |" if claim in names else "")
    lines += [header, "|---|---|---|---|" + ("---|" if claim in names else "")]
    labels = {m["name"]: m["label"] for m in summary["methods"]}
    for axis in AXES:
        for target in summary["targets"]:
            ranked = summary["verdict"][axis][repr(float(target))]
            leaders = [r for r in ranked if r["median"] == ranked[0]["median"]]
            rest = ranked[len(leaders):]
            first = (" = ".join(labels[r["method"]] for r in leaders) + f" ({_fmt(leaders[0]['median'])})"
                     if ranked else "none reached it")
            if len(leaders) > 1:
                first = "tie: " + first
            second = f"{labels[rest[0]['method']]} ({_fmt(rest[0]['median'])})" if rest else "—"
            row = f"| {axis} | {target:g} | {first} | {second} |"
            if claim in names:
                alone = len(leaders) == 1 and leaders[0]["method"] == claim
                tied = len(leaders) > 1 and claim in [r["method"] for r in leaders]
                row += " yes |" if alone else " tied |" if tied else " no |"
            lines.append(row)
    lines.append("")
    return "\n".join(lines)

"""Time, sequential steps and env steps to each target, over seeds, with intervals, and the verdict.

Pure functions over the rows of ``metrics.jsonl``. A run's *curve* is its evaluation
points (one per evaluated saved ``theta``, sorted by update, a re-evaluated update counted
once: the last row wins), each with the training counters of that update.

**Reaching a target** (:data:`CROSSING`) is a *sustained crossing*: the first evaluation
from which the metric meets the target (``<=`` for a loss, ``>=`` for a return) at that
evaluation and at every later one of the run. A noisy dip that the run leaves again does
not count; a run whose last evaluation misses the target has not reached it. The
resolution is the evaluation stride, with no interpolation.

**Over seeds** (:data:`INTERVAL`) every method reports the median x-to-target and a
distribution-free confidence interval for it from order statistics: the ``k``-th smallest
and ``k``-th largest of the ``n`` seeds, ``k`` the largest whose exact coverage
``1 - 2 P(Binomial(n, 1/2) <= k - 1)`` is at least 95%, or ``k = 1`` (the range) when no
``k`` is (``n <= 5``; five seeds give 93.75%, three 75%). A seed that never reached the
target counts as infinitely late, so the median is finite only when more than half of the
seeds reached it, and an interval end may be infinite (``None`` in JSON).

**The verdict** (:func:`verdict`) per x axis and target: the method with the smallest median
leads; it is ``first`` when no other method's interval overlaps its own, else it is
``tied`` with every method whose interval does; ``not reached`` when no method's median is
finite; ``no competitor`` when the comparison has one method (no verdict without one).
Earlier is better on every x axis whatever the metric's goal.
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


CROSSING = ("sustained crossing: the first evaluation from which the metric meets the target at every later "
            "evaluation of the run")
INTERVAL = ("exact order-statistic interval for the median over seeds (k-th smallest to k-th largest, coverage "
            ">= 95% where the seed count allows, else the range); unreached seeds count as infinitely late")
CONFIDENCE = 0.95


def reached(value: float, target: float, goal: str) -> bool:
    """Whether a finite ``value`` meets ``target`` (``<=`` for ``min``, ``>=`` for ``max``)."""
    return math.isfinite(value) and (value <= target if goal == "min" else value >= target)


def first_reaching(points: Sequence[Mapping], axis_key: str, target: float, goal: str) -> Optional[float]:
    """The x value (``axis_key``) of the sustained crossing of ``target``; ``None`` if there is none.

    That is the first point from which this and every later point's value meets the target
    (a non-finite value never does), so a run that ends off the target has not reached it.
    """
    x = None
    for point in reversed(points):
        if not reached(point["value"], target, goal):
            break
        x = float(point[axis_key])
    return x


def order_statistic_k(n: int, confidence: float = CONFIDENCE) -> tuple[int, float]:
    """``(k, coverage)``: the interval ``[x_(k), x_(n+1-k)]`` of ``n`` sorted values for the median.

    ``k`` is the largest with exact coverage ``1 - 2 P(Bin(n, 1/2) <= k - 1) >= confidence``;
    ``k = 1`` (the range, coverage ``1 - 2^(1-n)``) when none is. ``n = 0`` gives ``(0, 0.0)``.
    """
    if n <= 0:
        return 0, 0.0
    best = (1, 1.0 - 2.0 * 0.5 ** n)
    tail = 0.0
    for k in range(1, (n + 1) // 2 + 1):
        tail += math.comb(n, k - 1) * 0.5 ** n  # P(Bin(n, 1/2) <= k - 1)
        coverage = max(0.0, 1.0 - 2.0 * tail)
        if coverage >= confidence:
            best = (k, coverage)
    return best


def over_seeds(values: Sequence[Optional[float]]) -> dict:
    """Median and its order-statistic interval over seeds; ``None`` (not reached) is infinitely late.

    Returns ``{"median", "low", "high", "coverage", "reached", "seeds"}``; ``median``,
    ``low`` and ``high`` are ``None`` where they are infinite (or there are no seeds).
    """
    as_float = sorted(math.inf if v is None else float(v) for v in values)
    n = len(as_float)
    if not n:
        return {"median": None, "low": None, "high": None, "coverage": 0.0, "reached": 0, "seeds": 0}
    median = as_float[n // 2] if n % 2 else (as_float[n // 2 - 1] + as_float[n // 2]) / 2
    k, coverage = order_statistic_k(n)
    finite_or_none = lambda v: v if math.isfinite(v) else None
    return {"median": finite_or_none(median), "low": finite_or_none(as_float[k - 1]),
            "high": finite_or_none(as_float[n - k]), "coverage": round(coverage, 6),
            "reached": sum(math.isfinite(v) for v in as_float), "seeds": n}


def _inf(value: Optional[float]) -> float:
    return math.inf if value is None else value


def overlap(a: Mapping, b: Mapping) -> bool:
    """Whether two closed intervals ``{"low", "high"}`` (``None``: infinite) share a point."""
    return _inf(a["low"]) <= _inf(b["high"]) and _inf(b["low"]) <= _inf(a["high"])


def verdict(stats: Mapping[str, Mapping]) -> dict:
    """Who reaches a target first on one x axis, from each method's :func:`over_seeds` (in order).

    Returns ``{"status", "leaders", "methods"}``: ``status`` is ``first`` (``leaders`` holds
    the one method), ``tied`` (``leaders``: the leader and every method whose interval
    overlaps its own), ``not reached`` (no finite median) or ``no competitor`` (one method);
    ``methods`` maps every method to ``first``, ``tied with A, B``, ``behind A``, ``not
    reached`` or ``no competitor``.
    """
    names = list(stats)
    if len(names) < 2:
        return {"status": "no competitor", "leaders": [], "methods": {n: "no competitor" for n in names}}
    order = sorted(names, key=lambda n: (_inf(stats[n]["median"]), _inf(stats[n]["low"]), names.index(n)))
    leader = order[0]
    if stats[leader]["median"] is None:
        return {"status": "not reached", "leaders": [], "methods": {n: "not reached" for n in names}}
    group = [n for n in order if n == leader or (stats[n]["low"] is not None and overlap(stats[n], stats[leader]))]
    methods = {}
    for n in names:
        if stats[n]["low"] is None:
            methods[n] = "not reached"
        elif n in group:
            methods[n] = "first" if len(group) == 1 else "tied with " + ", ".join(g for g in group if g != n)
        else:
            methods[n] = f"behind {leader}"
    return {"status": "first" if len(group) == 1 else "tied", "leaders": group, "methods": methods}


def _best(values: Sequence[float], goal: str) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan
    return min(finite) if goal == "min" else max(finite)


def summarize(methods: Sequence[Mapping], targets: Sequence[float], goal: str) -> dict:
    """Per method and target, x-to-target over seeds; per axis and target, the :func:`verdict`.

    Args:
      methods: ``{"name", "label", "curves": [points per seed]}`` in the experiment's order.
      targets: metric levels; goal: ``"min"`` or ``"max"``.
    Returns ``{"methods", "verdict": {axis: {repr(target): verdict}}, "targets", "goal",
    "rules": {"crossing", "interval"}}``.
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
    verdicts = {axis: {repr(float(t)): verdict({m["name"]: m["to_target"][repr(float(t))][axis] for m in out_methods})
                       for t in targets} for axis in AXES}
    return {"methods": out_methods, "verdict": verdicts, "targets": [float(t) for t in targets], "goal": goal,
            "rules": {"crossing": CROSSING, "interval": INTERVAL}}


# -- markdown ---------------------------------------------------------------------------------
def _fmt(value: Optional[float]) -> str:
    """``3.84e7`` from 10^7 up, ``640,000`` / ``1,234`` for whole numbers and from 100 up, ``7.574``."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 1e7 or abs(value) < 1e-2:
        return f"{value:.3g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
    return f"{value:.4g}" if abs(value) < 100 else f"{value:,.0f}"


def cell(stats: Optional[Mapping], missing: str = "not reached") -> str:
    """``median [low, high] (reached/seeds)``; an infinite end reads ``missing``."""
    if not stats or not stats["seeds"]:
        return "—"
    show = lambda v: _fmt(v) if v is not None else missing
    if stats["low"] is None:
        return f"{missing} ({stats['reached']}/{stats['seeds']})"
    return f"{show(stats['median'])} [{show(stats['low'])}, {show(stats['high'])}] ({stats['reached']}/{stats['seeds']})"


def verdict_text(result: Mapping, labels: Mapping[str, str]) -> str:
    """One verdict in words: ``NRES first``, ``tied: NRES, PES``, ``not reached``, ``no competitor``."""
    if result["status"] == "first":
        return f"{labels[result['leaders'][0]]} first"
    if result["status"] == "tied":
        return "tied: " + ", ".join(labels[n] for n in result["leaders"])
    return result["status"]


def method_status(result: Mapping, name: str, labels: Mapping[str, str]) -> str:
    """One method's place in a verdict, method names replaced by labels."""
    text = result["methods"][name]
    for prefix in ("tied with ", "behind "):
        if text.startswith(prefix):
            return prefix + ", ".join(labels[n] for n in text[len(prefix):].split(", "))
    return text


def coverage_note(summary: Mapping) -> str:
    """The seed count(s) and the intervals' coverage, in words."""
    pairs = sorted({(m["seeds"], order_statistic_k(m["seeds"])) for m in summary["methods"] if m["seeds"]})
    parts = [f"{n} seeds: {_ordinal(k)} smallest to {_ordinal(k)} largest, coverage {100 * c:.4g}%"
             for n, (k, c) in pairs]
    return "; ".join(parts) or "no seeds"


def _ordinal(k: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(k, f"{k}th")


def markdown(summary: Mapping, title: str, metric: str, hardware: str, notes: Sequence[str] = (),
             reference: Optional[Sequence[Mapping]] = None, claim: str = "nres") -> str:
    """``summary.md``: hardware, the rules, per-method tables, the verdict per axis and target."""
    lines = [f"# {title}", "", f"Hardware: {hardware}", ""]
    lines += [f"{note}" for note in notes]
    if notes:
        lines.append("")
    sign = "<=" if summary["goal"] == "min" else ">="
    lines += [f"Reaching a target: the {CROSSING} ({metric} {sign} target). Cells: median [interval] over seeds "
              f"(seeds that reached the target / seeds); the interval is the {INTERVAL} ({coverage_note(summary)}).",
              ""]
    for target in summary["targets"]:
        t = repr(float(target))
        lines += [f"## {metric} {sign} {target:g}", "",
                  "| method | wall-clock (s) | sequential steps | env steps |", "|---|---|---|---|"]
        for m in summary["methods"]:
            cells = [cell(m["to_target"][t][axis]) for axis in AXES]
            lines.append(f"| {m['label']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"## Final and best {metric}", "", "Median [interval] over seeds (seeds with a finite value / seeds).",
              "", "| method | final | best |", "|---|---|---|"]
    for m in summary["methods"]:
        lines.append(f"| {m['label']} | {cell(m['final'], 'non-finite')} | {cell(m['best'], 'non-finite')} |")
    lines.append("")
    if reference:
        lines += ["## Reference: tuned hand-designed optimizers (same inner problem and horizon)", "",
                  "| optimizer | tuned lr | valid loss | test loss | test accuracy |", "|---|---|---|---|---|"]
        for r in reference:
            lines.append(f"| {r['name']} | {r['learning_rate']:.3g} | {r['valid_loss']:.4f} | {r['test_loss']:.4f} | "
                         f"{r['test_accuracy']:.4f} |")
        lines.append("")
    labels = {m["name"]: m["label"] for m in summary["methods"]}
    with_claim = claim in labels and len(labels) > 1
    lines += ["## Verdict: which method reaches each target first", "",
              "First: the smallest median, with an interval that overlaps no other method's; tied: the leader and "
              "every method whose interval overlaps the leader's; not reached: no method's median reached it.", ""]
    lines += ["| x axis | target | verdict |" + (f" {labels.get(claim, claim)} |" if with_claim else ""),
              "|---|---|---|" + ("---|" if with_claim else "")]
    for axis in AXES:
        for target in summary["targets"]:
            result = summary["verdict"][axis][repr(float(target))]
            row = f"| {axis} | {target:g} | {verdict_text(result, labels)} |"
            if with_claim:
                row += f" {method_status(result, claim, labels)} |"
            lines.append(row)
    lines.append("")
    return "\n".join(lines)

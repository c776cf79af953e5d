"""Time-to-target, statistics over seeds, the verdict and the band curves, on hand-made rows."""

import math

import numpy as np
import pytest

from nres.experiments import figures
from nres.experiments.summary import (curve, first_reaching, markdown, order_statistic_k, over_seeds,
                                      summarize, verdict)

PER_UPDATE = 40  # env steps per update; burn-in = 100


def rows_of(evals, metric="test_loss"):
    """Training rows for updates 1..4 and the given (iteration, test_loss) evaluation rows."""
    train = [{"iteration": i, "wall_time_s": 1.5 + 0.5 * i, "sequential_steps": 10 * i,
              "total_env_steps": 100 + PER_UPDATE * i, "train_loss": 1.0, "grad_norm": 1.0} for i in range(1, 5)]
    test = [{"iteration": i, "wall_time_s": 0.0, "total_env_steps": None, "sequential_steps": None, metric: v}
            for i, v in evals]
    return train + test


def test_curve_places_points_at_their_updates_counters_and_the_last_reevaluation_wins():
    points = curve(rows_of([(0, 10.0), (2, 6.0), (4, 3.0), (2, 5.0)]), "test_loss", PER_UPDATE)
    assert points == [
        {"iteration": 0, "wall_time_s": 0.0, "sequential_steps": 0, "total_env_steps": 100, "value": 10.0},
        {"iteration": 2, "wall_time_s": 2.5, "sequential_steps": 20, "total_env_steps": 180, "value": 5.0},
        {"iteration": 4, "wall_time_s": 3.5, "sequential_steps": 40, "total_env_steps": 260, "value": 3.0},
    ]


def test_time_to_target_is_a_sustained_crossing():
    points = curve(rows_of([(0, 10.0), (2, 5.0), (4, 3.0)]), "test_loss", PER_UPDATE)
    assert first_reaching(points, "wall_time_s", 5.0, "min") == 2.5  # 5.0 <= 5.0 at update 2, and stays
    assert first_reaching(points, "sequential_steps", 4.0, "min") == 40
    assert first_reaching(points, "total_env_steps", 4.0, "min") == 260
    assert first_reaching(points, "wall_time_s", 1.0, "min") is None
    assert first_reaching(points, "wall_time_s", 9.0, "max") is None  # a return: 10 >= 9, then 5: not sustained
    assert first_reaching(points, "wall_time_s", 2.0, "max") == 0.0  # every point meets it
    nan_first = [{**points[0], "value": math.nan}] + points[1:]
    assert first_reaching(nan_first, "wall_time_s", 20.0, "min") == 2.5  # a non-finite value never counts


@pytest.mark.parametrize("values, target, goal, expected", [
    ([10, 4, 9, 4, 3], 5, "min", 3),       # a dip at 1 that the run leaves: only the sustained crossing at 3
    ([10, 4, 9, 4, 6], 5, "min", None),    # ends above the target: not reached
    ([10, 8, 6, 5, 5], 5, "min", 3),       # meeting the target exactly counts
    ([1, 3, 2, 4, 5], 3, "max", 3),        # a return: 3 at 1, then 2 < 3; sustained from 3
    ([1, 3, 2, 4, math.nan], 3, "max", None),  # a non-finite last value breaks the crossing
    ([], 3, "min", None),
])
def test_sustained_crossing_table(values, target, goal, expected):
    points = [{"x": float(i), "value": float(v)} for i, v in enumerate(values)]
    assert first_reaching(points, "x", target, goal) == expected


def test_order_statistic_interval_has_its_exact_coverage():
    # coverage of [x_(k), x_(n+1-k)] = 1 - 2 P(Bin(n, 1/2) <= k - 1), computed by hand
    assert order_statistic_k(5) == (1, 1 - 2 / 32)
    assert order_statistic_k(3) == (1, 0.75)
    assert order_statistic_k(1) == (1, 0.0)
    assert order_statistic_k(9) == (2, 1 - 2 * 10 / 512)  # k = 2 keeps 96.1% >= 95%; k = 3 would be 82%
    assert order_statistic_k(0) == (0, 0.0)
    # the claim itself, by simulation: the median of a continuous distribution falls in [x_(2), x_(8)] of 9 draws
    rng = np.random.default_rng(0)
    draws = np.sort(rng.exponential(size=(20000, 9)), axis=1)
    inside = np.mean((draws[:, 1] <= math.log(2)) & (math.log(2) <= draws[:, 7]))
    # 20,000 trials: standard error sqrt(p (1 - p) / 20000) < 0.0014; 4 standard errors
    assert abs(inside - (1 - 2 * 10 / 512)) < 0.0056, inside


def test_over_seeds_counts_unreached_seeds_as_infinitely_late():
    c5 = 1 - 2 / 32
    assert over_seeds([2.5, 3.5, None]) == {"median": 3.5, "low": 2.5, "high": None, "coverage": 0.75,
                                            "reached": 2, "seeds": 3}
    assert over_seeds([None, None, 1.0]) == {"median": None, "low": 1.0, "high": None, "coverage": 0.75,
                                             "reached": 1, "seeds": 3}
    assert over_seeds([5.0, 1.0, 3.0, 2.0, 4.0]) == {"median": 3.0, "low": 1.0, "high": 5.0, "coverage": c5,
                                                     "reached": 5, "seeds": 5}
    assert over_seeds([1.0, None])["median"] is None  # (1 + inf) / 2: half the seeds are not enough
    nine = over_seeds(list(range(1, 10)))
    assert (nine["low"], nine["median"], nine["high"]) == (2, 5, 8)  # 2nd smallest to 2nd largest


def stats(median, low, high, reached=5, seeds=5):
    return {"median": median, "low": low, "high": high, "coverage": 0.9375, "reached": reached, "seeds": seeds}


@pytest.mark.parametrize("name, case, status, leaders, per_method", [
    ("clear winner: intervals apart",
     {"nres": stats(10, 8, 12), "pes": stats(20, 15, 30)}, "first", ["nres"],
     {"nres": "first", "pes": "behind nres"}),
    ("medians differ, intervals overlap: tied",
     {"nres": stats(10, 8, 16), "pes": stats(14, 11, 20), "tes": stats(40, 30, 50)}, "tied", ["nres", "pes"],
     {"nres": "tied with pes", "pes": "tied with nres", "tes": "behind nres"}),
    ("touching ends overlap",
     {"a": stats(10, 8, 12), "b": stats(14, 12, 20)}, "tied", ["a", "b"], {"a": "tied with b", "b": "tied with a"}),
    ("a method reached in few seeds: median not reached, interval open to infinity, still ties",
     {"nres": stats(10, 8, 12), "pes": stats(None, 9, None, reached=2)}, "tied", ["nres", "pes"],
     {"nres": "tied with pes", "pes": "tied with nres"}),
    ("a method no seed reached",
     {"nres": stats(10, 8, 12), "pes": stats(None, None, None, reached=0)}, "first", ["nres"],
     {"nres": "first", "pes": "not reached"}),
    ("nobody's median reached it",
     {"nres": stats(None, 9, None, reached=2), "pes": stats(None, None, None, reached=0)}, "not reached", [],
     {"nres": "not reached", "pes": "not reached"}),
    ("the leader's interval is open-ended: it overlaps a later method",
     {"fulles": stats(5, 4, None, reached=3), "nres": stats(30, 20, 40)}, "tied", ["fulles", "nres"],
     {"fulles": "tied with nres", "nres": "tied with fulles"}),
    ("one method: no verdict", {"nres": stats(10, 8, 12)}, "no competitor", [], {"nres": "no competitor"}),
])
def test_verdict_table(name, case, status, leaders, per_method):
    result = verdict(case)
    assert (result["status"], result["leaders"], result["methods"]) == (status, leaders, per_method), name


def test_summary_verdict_and_markdown_by_hand():
    fast = curve(rows_of([(0, 10.0), (2, 5.0), (4, 3.0)]), "test_loss", PER_UPDATE)
    slow = curve(rows_of([(0, 10.0), (2, 8.0), (4, 4.0)]), "test_loss", PER_UPDATE)
    dip = curve(rows_of([(0, 10.0), (2, 4.0), (4, 6.0)]), "test_loss", PER_UPDATE)  # touches 5, leaves it
    methods = [{"name": "a", "label": "A", "curves": [slow, slow, slow]},
               {"name": "nres", "label": "NRES", "curves": [fast, fast, slow]},
               {"name": "pes", "label": "PES", "curves": [dip, dip, dip]}]
    summary = summarize(methods, [5.0, 4.0, 1.0], "min")
    a, n, p = summary["methods"]
    assert summary["rules"]["crossing"].startswith("sustained crossing")
    # target 5: A at update 4 in every seed (wall 3.5); NRES at 2, 2, 4 (2.5, 2.5, 3.5); PES never (its dip
    # at update 2 does not last)
    assert a["to_target"]["5.0"]["wall-clock"] == {"median": 3.5, "low": 3.5, "high": 3.5, "coverage": 0.75,
                                                   "reached": 3, "seeds": 3}
    assert n["to_target"]["5.0"]["sequential-steps"] == {"median": 20, "low": 20, "high": 40, "coverage": 0.75,
                                                         "reached": 3, "seeds": 3}
    assert p["to_target"]["5.0"]["wall-clock"]["reached"] == 0
    # NRES's median is smaller, but its interval [2.5, 3.5] reaches A's 3.5: tied, not first
    assert summary["verdict"]["wall-clock"]["5.0"] == {
        "status": "tied", "leaders": ["nres", "a"],
        "methods": {"a": "tied with nres", "nres": "tied with a", "pes": "not reached"}}
    assert summary["verdict"]["env-steps"]["1.0"]["status"] == "not reached"
    text = markdown(summary, "t", "test_loss", "test machine")
    assert "sustained crossing" in text and "3 seeds: 1st smallest to 1st largest, coverage 75%" in text
    verdict_rows = [l for l in text.split("## Verdict")[1].splitlines() if l.startswith("| ") and "x axis" not in l]
    assert "| wall-clock | 5 | tied: NRES, A | tied with A |" in verdict_rows
    assert "| sequential-steps | 1 | not reached | not reached |" in verdict_rows
    assert len(verdict_rows) == 3 * 3
    assert "| NRES | 2.5 [2.5, 3.5] (3/3) |" in text  # wall-clock to 5: median [interval] (reached/seeds)
    # one method alone: no verdict, no claim column
    alone = markdown(summarize(methods[1:2], [5.0], "min"), "t", "test_loss", "m")
    assert "| wall-clock | 5 | no competitor |" in alone and "first" not in alone.split("## Verdict")[1].split("|")[-2]


def test_a_return_to_maximize():
    """goal = "max": reaching means >= and staying there; earlier is still better on every axis."""
    climbs = curve(rows_of([(0, 0.0), (2, 150.0), (4, 320.0)], "test_return"), "test_return", PER_UPDATE)
    peaks = curve(rows_of([(0, 0.0), (2, 330.0), (4, 250.0)], "test_return"), "test_return", PER_UPDATE)  # falls back
    late = curve(rows_of([(0, 0.0), (2, 90.0), (4, 310.0)], "test_return"), "test_return", PER_UPDATE)
    methods = [{"name": "nres", "label": "NRES", "curves": [climbs] * 5},
               {"name": "pes", "label": "PES", "curves": [peaks] * 5},
               {"name": "tes", "label": "TES", "curves": [late, late, late, climbs, climbs]}]
    summary = summarize(methods, [100.0, 300.0], "max")
    verdict_100 = summary["verdict"]["sequential-steps"]["100.0"]
    # to 100: NRES at update 2 in all seeds; PES at 2 too (330, 250 stay >= 100); TES at 4, 4, 4, 2, 2
    assert verdict_100["status"] == "tied" and verdict_100["leaders"] == ["nres", "pes", "tes"]
    verdict_300 = summary["verdict"]["sequential-steps"]["300.0"]
    # to 300: PES peaks at 330 then falls to 250: not reached; NRES and TES both at update 4
    assert verdict_300["methods"]["pes"] == "not reached"
    assert verdict_300["status"] == "tied" and set(verdict_300["leaders"]) == {"nres", "tes"}
    best = {m["name"]: m["best"]["median"] for m in summary["methods"]}
    assert best == {"nres": 320.0, "pes": 330.0, "tes": 310.0}  # best of a return is its maximum


def test_band_is_a_step_function_of_each_seed_with_a_t_interval():
    a = [{"x": 0.0, "value": 4.0}, {"x": 2.0, "value": 2.0}]
    b = [{"x": 0.0, "value": 6.0}, {"x": 1.0, "value": 4.0}, {"x": 3.0, "value": 2.0}]
    grid, mean, low, high = figures.mean_band([a, b], "x", log=False)
    np.testing.assert_array_equal(grid, [0.0, 1.0, 2.0, 3.0])
    # a holds 4 until x = 2 and keeps its final 2 after it ends; b steps at 1 and 3
    np.testing.assert_allclose(mean, [5.0, 4.0, 3.0, 2.0])
    half = figures.t95(1) * np.std([[4, 6], [4, 4], [2, 4], [2, 2]], axis=1, ddof=1) / np.sqrt(2)
    np.testing.assert_allclose(high - mean, half)
    np.testing.assert_allclose(mean - low, half)
    _, geo, _, _ = figures.mean_band([a, b], "x", log=True)
    np.testing.assert_allclose(geo[0], math.sqrt(24.0))  # geometric mean on a log axis
    assert figures.t95(4) == pytest.approx(2.776) and figures.t95(100) == 1.96

"""Time-to-target, statistics over seeds, the verdict and the band curves, on hand-made rows."""

import math

import numpy as np
import pytest

from nres.experiments import figures
from nres.experiments.summary import curve, first_reaching, markdown, over_seeds, summarize

PER_UPDATE = 40  # env steps per update; burn-in = 100


def rows_of(evals):
    """Training rows for updates 1..4 and the given (iteration, test_loss) evaluation rows."""
    train = [{"iteration": i, "wall_time_s": 1.5 + 0.5 * i, "sequential_steps": 10 * i,
              "total_env_steps": 100 + PER_UPDATE * i, "train_loss": 1.0, "grad_norm": 1.0} for i in range(1, 5)]
    test = [{"iteration": i, "wall_time_s": 0.0, "total_env_steps": None, "sequential_steps": None, "test_loss": v}
            for i, v in evals]
    return train + test


def test_curve_places_points_at_their_updates_counters_and_the_last_reevaluation_wins():
    points = curve(rows_of([(0, 10.0), (2, 6.0), (4, 3.0), (2, 5.0)]), "test_loss", PER_UPDATE)
    assert points == [
        {"iteration": 0, "wall_time_s": 0.0, "sequential_steps": 0, "total_env_steps": 100, "value": 10.0},
        {"iteration": 2, "wall_time_s": 2.5, "sequential_steps": 20, "total_env_steps": 180, "value": 5.0},
        {"iteration": 4, "wall_time_s": 3.5, "sequential_steps": 40, "total_env_steps": 260, "value": 3.0},
    ]


def test_time_to_target_by_hand():
    points = curve(rows_of([(0, 10.0), (2, 5.0), (4, 3.0)]), "test_loss", PER_UPDATE)
    assert first_reaching(points, "wall_time_s", 5.0, "min") == 2.5  # 5.0 <= 5.0 at update 2
    assert first_reaching(points, "sequential_steps", 4.0, "min") == 40
    assert first_reaching(points, "total_env_steps", 4.0, "min") == 260
    assert first_reaching(points, "wall_time_s", 1.0, "min") is None
    assert first_reaching(points, "wall_time_s", 9.0, "max") == 0.0  # a return: the start already meets it
    nan_first = [{**points[0], "value": math.nan}] + points[1:]
    assert first_reaching(nan_first, "wall_time_s", 20.0, "min") == 2.5  # a non-finite value never counts


def test_over_seeds_counts_unreached_seeds_as_infinitely_late():
    assert over_seeds([2.5, 3.5, None]) == {"median": 3.5, "low": 2.5, "high": None, "reached": 2, "seeds": 3}
    assert over_seeds([None, None, 1.0]) == {"median": None, "low": 1.0, "high": None, "reached": 1, "seeds": 3}
    assert over_seeds([1.0, 3.0]) == {"median": 2.0, "low": 1.0, "high": 3.0, "reached": 2, "seeds": 2}
    assert over_seeds([1.0, None])["median"] is None  # (1 + inf) / 2: half the seeds are not enough


def test_summary_and_verdict_by_hand():
    fast = curve(rows_of([(0, 10.0), (2, 5.0), (4, 3.0)]), "test_loss", PER_UPDATE)
    slow = curve(rows_of([(0, 10.0), (2, 8.0), (4, 4.0)]), "test_loss", PER_UPDATE)
    methods = [{"name": "a", "label": "A", "curves": [slow, slow]},
               {"name": "nres", "label": "NRES", "curves": [fast, slow]}]
    summary = summarize(methods, [5.0, 4.0, 1.0], "min")
    a, n = summary["methods"]
    # target 5: A reaches it at update 4 in both seeds (wall 3.5); NRES at update 2 (2.5) and 4 (3.5)
    assert a["to_target"]["5.0"]["wall-clock"] == {"median": 3.5, "low": 3.5, "high": 3.5, "reached": 2, "seeds": 2}
    assert n["to_target"]["5.0"]["wall-clock"]["median"] == 3.0
    assert n["to_target"]["5.0"]["sequential-steps"] == {"median": 30.0, "low": 20.0, "high": 40.0, "reached": 2,
                                                         "seeds": 2}
    assert summary["verdict"]["wall-clock"]["5.0"] == [{"method": "nres", "median": 3.0},
                                                       {"method": "a", "median": 3.5}]
    # target 4: both at update 4 in every seed: a tie; target 1: nobody
    assert [r["median"] for r in summary["verdict"]["env-steps"]["4.0"]] == [260.0, 260.0]
    assert summary["verdict"]["env-steps"]["1.0"] == []
    assert n["final"]["median"] == 3.5 and n["best"]["low"] == 3.0
    text = markdown(summary, "t", "test_loss", "test machine")
    verdict = text.split("## Verdict")[1]
    assert "| wall-clock | 5 | NRES (3) | A (3.5) | yes |" in verdict
    assert "| env-steps | 4 | tie: A = NRES (260) | — | tied |" in verdict
    assert "| sequential-steps | 1 | none reached it | — | no |" in verdict
    assert len([l for l in verdict.splitlines() if l.startswith("| ") and "x axis" not in l]) == 3 * 3


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

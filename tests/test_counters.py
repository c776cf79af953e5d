"""Host counters of a chunk (:mod:`nres.counters`)."""

import numpy as np

from nres.counters import Counters, tally
from nres.step import UpdateInfo


def _infos(applied):
    n = len(applied)
    return UpdateInfo(np.arange(n, dtype=np.float32), np.ones(n, np.float32), np.asarray(applied),
                      np.asarray([0 if a else 3 for a in applied], np.int32), np.full(n, 40, np.int32))


def test_tally_counts_steps_time_and_the_nonfinite_streak():
    before = Counters(iteration=10, total_env_steps=1000, sequential_steps=50, wall_time_s=2.0,
                      consecutive_nonfinite=2, nonfinite_windows=5)
    applied = [False, True, False, False, True, False]
    steps = tally(before, _infos(applied + [True] * 4), np.zeros((10, 2)), 6, 3.0, sequential_steps_per_update=5)
    np.testing.assert_array_equal(steps.iteration, np.arange(11, 17))
    np.testing.assert_array_equal(steps.total_env_steps, 1000 + 40 * np.arange(1, 7))
    np.testing.assert_array_equal(steps.sequential_steps, 50 + 5 * np.arange(1, 7))
    np.testing.assert_allclose(steps.wall_time_s, 2.0 + 0.5 * np.arange(1, 7))
    np.testing.assert_array_equal(steps.consecutive_nonfinite, [3, 0, 1, 2, 0, 1])
    assert steps.counters == Counters(16, 1240, 80, 5.0, 1, 9)
    assert steps.theta.shape == (6, 2) and len(steps.info.applied) == 6


def test_env_steps_are_those_each_window_took():
    infos = _infos([True] * 4)._replace(env_steps=np.asarray([40, 12, 0, 40], np.int32))
    steps = tally(Counters(total_env_steps=100), infos, np.zeros((4, 1)), 4, 1.0, 5)
    np.testing.assert_array_equal(steps.total_env_steps, [140, 152, 152, 192])
    assert steps.total_env_steps.dtype == np.int64


def test_per_update_rebuilds_each_updates_counters():
    steps = tally(Counters(nonfinite_windows=1), _infos([True, False, True]), np.zeros((3, 1)), 3, 0.3, 2)
    rows = steps.per_update()
    assert [c.iteration for c, _, _ in rows] == [1, 2, 3]
    assert [c.nonfinite_windows for c, _, _ in rows] == [1, 2, 2]
    assert [info.applied for _, info, _ in rows] == [True, False, True]
    assert rows[-1][0] == steps.counters

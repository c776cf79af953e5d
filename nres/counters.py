"""Host-side bookkeeping of a run: its counters and a chunk's results as columns.

:class:`Counters` are Python ints (never overflow) kept beside the learner;
:func:`tally` turns the device results of a chunk of updates into :class:`Steps`,
the columns a run log writes (one entry per update).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import numpy as np

from nres.step import UpdateInfo
from nres.tree import PyTree


@dataclasses.dataclass
class Counters:
    """Counters after an update: ``iteration`` (updates done), ``total_env_steps``,
    ``sequential_steps``, ``wall_time_s`` (seconds of training, evaluation and
    checkpoints excluded), ``consecutive_nonfinite`` (windows skipped in a row) and
    ``nonfinite_windows`` (skipped in all)."""

    iteration: int = 0
    total_env_steps: int = 0
    sequential_steps: int = 0
    wall_time_s: float = 0.0
    consecutive_nonfinite: int = 0
    nonfinite_windows: int = 0


class Steps(NamedTuple):
    """The host results of a chunk's ``count`` updates, as columns (entry ``k`` = update ``k``).

    ``iteration``, ``total_env_steps``, ``sequential_steps``, ``consecutive_nonfinite``:
    int64 ``[count]``, the counters after each update; ``wall_time_s``: float64 ``[count]``
    (seconds); ``info``: :class:`UpdateInfo` of ``[count]`` arrays; ``theta``: theta's tree
    with leaves ``[count, ...]``; ``counters``: the :class:`Counters` after the last update.
    """

    iteration: np.ndarray
    wall_time_s: np.ndarray
    total_env_steps: np.ndarray
    sequential_steps: np.ndarray
    consecutive_nonfinite: np.ndarray
    info: UpdateInfo
    theta: PyTree
    counters: Counters

    def per_update(self) -> list[tuple[Counters, UpdateInfo, PyTree]]:
        """One ``(counters, info, theta)`` per update (Python scalars in ``info``)."""
        infos = UpdateInfo(*(field.tolist() for field in self.info))
        out, nonfinite = [], self.counters.nonfinite_windows - int(np.sum(~self.info.applied))
        for k in range(len(self.iteration)):
            nonfinite += not infos.applied[k]
            counters = Counters(int(self.iteration[k]), int(self.total_env_steps[k]), int(self.sequential_steps[k]),
                                float(self.wall_time_s[k]), int(self.consecutive_nonfinite[k]), nonfinite)
            out.append((counters, UpdateInfo(*(field[k] for field in infos)),
                        jax.tree_util.tree_map(lambda x: x[k], self.theta)))
        return out


def tally(counters: Counters, infos: UpdateInfo, thetas: PyTree, count: int, elapsed: float,
          sequential_steps_per_update: int) -> Steps:
    """The :class:`Steps` of ``count`` updates after ``counters``, from host buffers
    ``infos`` and ``thetas`` (leading axis >= ``count``) that took ``elapsed`` seconds,
    spread evenly over the updates. Environment steps are those each window really took
    (``infos.env_steps``)."""
    info = UpdateInfo(*(np.asarray(field[:count]) for field in infos))
    bad = ~info.applied
    # consecutive non-finite windows: the run before this chunk, reset by every applied update
    last_good = np.maximum.accumulate(np.where(bad, -1, np.arange(count)))
    streak = np.where(last_good < 0, counters.consecutive_nonfinite + np.arange(1, count + 1),
                      np.arange(count) - last_good)
    steps_done = np.arange(1, count + 1)
    iteration = counters.iteration + steps_done
    wall_time_s = counters.wall_time_s + elapsed * steps_done / count
    total_env_steps = counters.total_env_steps + np.cumsum(info.env_steps, dtype=np.int64)
    sequential_steps = counters.sequential_steps + sequential_steps_per_update * steps_done
    after = Counters(int(iteration[-1]), int(total_env_steps[-1]), int(sequential_steps[-1]),
                     float(wall_time_s[-1]), int(streak[-1]), counters.nonfinite_windows + int(np.sum(bad)))
    return Steps(iteration, wall_time_s, total_env_steps, sequential_steps, streak, info,
                 jax.tree_util.tree_map(lambda x: x[:count], thetas), after)

"""The training loop: chunks of updates, pipelined, reporting through callbacks.

:func:`train_loop` owns the order of things and nothing else: it sizes each compiled
call (:class:`Pacer`), keeps one chunk in flight while the host handles the previous
one, tracks the streak of non-finite windows and the last good state, and stops on a
signal. Files, flags and clocks of the run directory live in the callbacks
(:class:`Callbacks`, implemented by :class:`nres.runlog.RunLog` for ``nres train``), so
the loop runs and is tested without any file.

Every decision taken from local facts (the next call's size, from measured time; a
stop signal) goes through ``trainer.agree``, so all processes of a multi-process run
take the same decisions in the same order and run the same collective programs.

The training clock: a chunk's time runs from its launch to its results. The chunk that
ends at an evaluation or checkpoint boundary is collected *before* the next chunk is
launched, so evaluation and checkpoint work never overlaps a chunk in flight and is
never counted in ``wall_time_s``; between boundaries the pipeline stays full.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Protocol

import numpy as np

from nres.counters import Counters, Steps
from nres.step import Learner


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When things happen, in updates: train until ``iterations``; evaluate every
    ``eval_every`` (0: never) and at the end if ``eval_at_end``; checkpoint every
    ``checkpoint_every`` and at the end; stop after ``max_nonfinite`` non-finite
    windows in a row."""

    iterations: int
    eval_every: int = 0
    checkpoint_every: int = 500
    max_nonfinite: int = 20
    eval_at_end: bool = True

    @classmethod
    def of(cls, config) -> "Schedule":
        """The schedule of a :class:`nres.config.TrainConfig`."""
        return cls(config.iterations, config.eval_every, config.checkpoint_every, config.max_nonfinite,
                   config.eval_at_end)

    def boundary(self, iteration: int) -> bool:
        """Whether an evaluation or a checkpoint falls at ``iteration``."""
        return any(every and iteration % every == 0 for every in (self.eval_every, self.checkpoint_every))

    def evaluates(self, iteration: int) -> bool:
        return bool(self.eval_every) and iteration % self.eval_every == 0


class Callbacks(Protocol):
    """What the loop reports. ``steps(steps, end)``: a chunk's results, of which the first
    ``end`` updates count (the rest follow a non-finite stop); ``evaluate(learner,
    counters)``: evaluate now; ``checkpoint(learner, counters)``: save this state;
    ``stop_signal()``: the number of a stop signal received, or None."""

    def steps(self, steps: Steps, end: int) -> None: ...

    def evaluate(self, learner: Learner, counters: Counters) -> None: ...

    def checkpoint(self, learner: Learner, counters: Counters) -> None: ...

    def stop_signal(self) -> Optional[int]: ...


class Stopped(Exception):
    """The loop ended early after checkpointing its last good state ``counters``:
    ``signum`` (a stop signal) or ``streak`` (that many non-finite windows in a row)."""

    def __init__(self, counters: Counters, signum: Optional[int] = None, streak: int = 0):
        super().__init__(f"stopped at update {counters.iteration}")
        self.counters, self.signum, self.streak = counters, signum, streak


class Pacer:
    """Chooses updates per compiled call so each call takes about ``target_s`` seconds.

    The first call (which compiles) runs one update; later calls are sized from the
    measured time per update, so logging, Ctrl-C and the progress bar stay responsive
    while fast tasks spend almost no time in Python between updates.
    """

    def __init__(self, max_count: int, target_s: float = 0.25):
        self.max_count, self.target_s = max_count, target_s
        self.calls, self.per_update_s = 0, None

    def count(self) -> int:
        if self.per_update_s is None:
            return 1
        return int(min(self.max_count, max(1, self.target_s // max(self.per_update_s, 1e-9))))

    def observe(self, count: int, seconds: float) -> None:
        self.calls += 1
        if self.calls >= 2:  # the first call includes compilation
            self.per_update_s = seconds / count


def to_boundary(iteration: int, every: int) -> int:
    """Updates until the next multiple of ``every`` (no bound when ``every`` is 0)."""
    return every - iteration % every if every else 1 << 30


def chunk_size(pacer: Pacer, schedule: Schedule, planned: int) -> int:
    """Updates of the next call: the pacer's choice, cut at the end and at the next
    evaluation or checkpoint."""
    return min(pacer.count(), schedule.iterations - planned, to_boundary(planned, schedule.checkpoint_every),
               to_boundary(planned, schedule.eval_every))


def _nonfinite_end(steps: Steps, max_nonfinite: int) -> tuple[int, bool]:
    """How many of a chunk's updates count, and whether the streak limit ends the run there."""
    stop_at = np.flatnonzero(steps.consecutive_nonfinite >= max_nonfinite)
    return (int(stop_at[0]) + 1, True) if stop_at.size else (len(steps.iteration), False)


def train_loop(trainer, learner: Learner, counters: Counters, schedule: Schedule, callbacks: Callbacks,
               fresh: bool = True, chunk_seconds: float = 0.25) -> tuple[Learner, Counters]:
    """Train from ``counters`` to ``schedule.iterations`` (see the module docstring).

    ``trainer`` launches and collects chunks (:meth:`nres.training.Trainer.launch`,
    :meth:`~nres.training.Trainer.collect`, ``max_chunk``), keeps the training clock
    (``trainer.clock()``, seconds) and may agree every decision with the other
    processes of the run (``trainer.agree(count, signum) -> (count, signum)``, see
    :mod:`nres.engines.peers`); a ``fresh`` start is
    checkpointed (after its first evaluation) before training; each compiled call aims
    at ``chunk_seconds`` of work (:class:`Pacer`). Returns the final learner
    and counters; raises :class:`Stopped` after checkpointing the last good state.
    """
    last_good = (learner, counters)
    agree = getattr(trainer, "agree", None) or (lambda count, signum: (count, signum))

    def decide(count: int = 0) -> int:
        """The next call's updates (or 0) and the stop signal, agreed by every process of
        the run; a stop checkpoints the last good state."""
        count, signum = agree(count, callbacks.stop_signal())
        if signum is not None:
            callbacks.checkpoint(*last_good)
            raise Stopped(last_good[1], signum=signum)
        return count

    if schedule.evaluates(counters.iteration):
        callbacks.evaluate(learner, counters)  # the starting point of the test curve
    if fresh:
        callbacks.checkpoint(learner, counters)
    pacer = Pacer(trainer.max_chunk, chunk_seconds)
    pending, planned, collected = None, counters.iteration, None
    while pending is not None or planned < schedule.iterations:
        # The chunk in flight ends at a boundary: collect it before launching the next.
        drain = pending is not None and schedule.boundary(planned)
        count = decide(chunk_size(pacer, schedule, planned) if planned < schedule.iterations and not drain else 0)
        launched = trainer.launch(pending.learner if pending else learner, count) if count else None
        planned += count
        if pending is not None:
            before = counters
            learner, steps = trainer.collect(pending, counters, since=collected)
            collected, counters = trainer.clock(), steps.counters
            pacer.observe(pending.count, counters.wall_time_s - before.wall_time_s)
            end, streak_stop = _nonfinite_end(steps, schedule.max_nonfinite)
            callbacks.steps(steps, end)
            if streak_stop:
                callbacks.checkpoint(*last_good)
                raise Stopped(last_good[1], streak=int(steps.consecutive_nonfinite[end - 1]))
            if schedule.evaluates(counters.iteration):
                callbacks.evaluate(learner, counters)
            if counters.consecutive_nonfinite == 0:  # a consistent, good state to resume from
                last_good = (learner, counters)
                if counters.iteration % schedule.checkpoint_every == 0:
                    callbacks.checkpoint(learner, counters)
        pending = launched
    decide()
    callbacks.checkpoint(*last_good)
    if schedule.eval_at_end:
        callbacks.evaluate(learner, counters)
    decide()
    return learner, counters

"""A run log: the writers of a run directory while it trains.

:class:`RunLog` owns ``metrics.jsonl``, the TensorBoard events, the theta trajectory and
the checkpoints (written in order by one background writer) and keeps every row of the
run for the curves and the divergence check at the end. It implements the callbacks of
:func:`nres.loop.train_loop` that touch files; the rows are encoded by
:mod:`nres.rundir` (:func:`~nres.rundir.json_row`, :func:`~nres.rundir.column_lines`).

Write order keeps the directory consistent at every instant: a fresh run's ``theta_0``
(and its iteration-0 evaluation row) come before its first checkpoint, the thetas of a
checkpoint before the checkpoint, and evaluation rows before the checkpoint at their
update, never twice for one iteration.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from nres import rundir
from nres.checkpoint import BackgroundWriter, save_pytree
from nres.counters import Counters, Steps
from nres.step import Learner
from nres.tensorboard import TensorBoardLog

EXPLODED_FACTOR = 1e6


def counter_values(counters: Counters) -> dict:
    """The counters' columns of a metrics row."""
    return {
        "iteration": counters.iteration,
        # Nothing is trained at iteration 0 (the burn-in's time is counted with update 1).
        "wall_time_s": round(counters.wall_time_s, 6) if counters.iteration else 0.0,
        "total_env_steps": counters.total_env_steps,
        "sequential_steps": counters.sequential_steps,
    }


def train_columns(steps: Steps) -> list[list]:
    """The :data:`nres.rundir.TRAIN_COLUMNS` of a chunk's updates, as Python numbers."""
    return [steps.iteration.tolist(), np.round(steps.wall_time_s, 6).tolist(), steps.total_env_steps.tolist(),
            steps.sequential_steps.tolist(), steps.info.train_loss.tolist(), steps.info.grad_norm.tolist()]


def train_rows(steps: Steps) -> list[dict]:
    """The metrics rows of a chunk's updates (one per update; skipped ones marked)."""
    info = steps.info
    rows = rundir.column_rows(train_columns(steps))
    for k in np.flatnonzero(~info.applied).tolist():
        rows[k].update(skipped_nonfinite=True, nonfinite_particles=int(info.num_nonfinite[k]))
    return rows


def divergence(rows: list[dict], columns: Sequence[tuple[list, list]] = ()) -> Optional[str]:
    """Why the train losses of ``rows`` (and of ``columns``: ``(iterations, train
    losses)`` pairs of further train rows) say the run diverged, or None.

    Diverged means: no train loss was ever finite, or the last finite one (by iteration)
    exceeds the first finite one by more than ``EXPLODED_FACTOR`` times its magnitude.
    """
    iterations = [r["iteration"] for r in rows if not rundir.is_eval_row(r)]
    losses = [r["train_loss"] for r in rows if not rundir.is_eval_row(r)]
    for its, values in columns:
        iterations += its
        losses += values
    if not losses:
        return None
    finite = sorted((it, v) for it, v in zip(iterations, losses) if isinstance(v, (int, float)) and math.isfinite(v))
    if not finite:
        return "the train loss was never finite"
    first, last = finite[0][1], finite[-1][1]
    if last - first > EXPLODED_FACTOR * abs(first) and first != 0:
        return f"the train loss exploded from {first:.4g} to {last:.4g}"
    return None


class RunLog:
    """The files of a training run at ``path`` (see the module docstring).

    ``theta``, ``counters``: where training starts; ``resumed``: continue the directory's
    files (rows and thetas past ``counters`` dropped) instead of starting them;
    ``host(learner)``: the learner with every particle's state as arrays (engines may
    hold them remotely); ``evaluate(theta, shared)``: the held-out metrics of a theta
    (``shared``: the learner's shared state, None for most tasks).
    """

    def __init__(self, path: pathlib.Path, theta, counters: Counters, resumed: bool,
                 host: Callable[[Learner], Learner], evaluate: Callable[..., dict]):
        self.path, self._host, self._evaluate = path, host, evaluate
        self.thetas = rundir.ThetaTrajectory(path)
        if resumed:
            self.thetas.truncate(counters.iteration, theta)
            rows = rundir.tidy_rows(r for r in rundir.read_metrics(path) if r["iteration"] <= counters.iteration)
            rundir.write_metrics(path, rows)
        else:
            rows = []
            self.thetas.append(0, theta)  # written with the first checkpoint, before it
        self.evaluated = {r["iteration"] for r in rows if rundir.is_eval_row(r)}
        # Every row as metrics.jsonl holds it: rows read back from their JSON, usual chunks as columns.
        self.history, self.chunks = list(rows), []
        self.writer = BackgroundWriter()  # thetas and checkpoints are written while training goes on
        self.tensorboard = TensorBoardLog(path, purge_step=counters.iteration + 1 if resumed else None)
        self.metrics = open(path / rundir.METRICS, "a")

    def rows(self, rows: list[dict], prefix: str) -> None:
        """Rows in one write to each file (``prefix``: their TensorBoard group)."""
        if rows:
            lines = [rundir.json_row(row) for row in rows]
            self.metrics.write("".join(lines))
            self.metrics.flush()
            self.tensorboard.scalars(rows, prefix)
            self.history.extend(json.loads(line) for line in lines)

    def steps(self, steps: Steps, end: int) -> None:
        """The train rows of a chunk's first ``end`` updates and the thetas of its applied ones."""
        streak = steps.consecutive_nonfinite
        good = np.flatnonzero(streak[:end] == 0)
        self.thetas.extend(steps.iteration[good], jax.tree_util.tree_map(lambda x: x[good], steps.theta))
        finite = np.all(np.isfinite(steps.info.train_loss)) and np.all(np.isfinite(steps.info.grad_norm))
        if len(good) == len(streak) and finite:  # the usual chunk: no dict per row
            columns = train_columns(steps)
            self.chunks.append(columns)
            self.metrics.write(rundir.column_lines(columns))
            self.metrics.flush()
            self.tensorboard.columns(steps.iteration, dict(zip(rundir.TRAIN_COLUMNS[1:], columns[1:])), "train")
        else:
            self.rows(train_rows(steps)[:end], "train")

    def evaluate(self, learner: Learner, counters: Counters) -> None:
        """The evaluation row of ``counters.iteration``, once per iteration."""
        if counters.iteration not in self.evaluated:
            self.rows([{**counter_values(counters), **self._evaluate(learner.theta, learner.shared)}], "test")
            self.evaluated.add(counters.iteration)

    def checkpoint(self, learner: Learner, counters: Counters) -> None:
        """The thetas so far, then the checkpoint (both in the background, in order)."""
        self.thetas.flush(self.writer)  # first the thetas: a checkpoint never lacks its thetas
        save_checkpoint(self.path, self._host(learner), counters, self.writer)

    def all_rows(self) -> list[dict]:
        """Every row of the run, tidied (as ``metrics.jsonl`` holds them)."""
        return rundir.tidy_rows(self.history + [row for columns in self.chunks for row in rundir.column_rows(columns)])

    def divergence(self) -> Optional[str]:
        """:func:`divergence` of every train loss of the run."""
        loss = rundir.TRAIN_COLUMNS.index("train_loss")
        return divergence(self.history, [(columns[0], columns[loss]) for columns in self.chunks])

    def close(self) -> None:
        """Close the files; every checkpoint is on disk when this returns."""
        try:
            self.metrics.close()
            self.tensorboard.close()
        finally:
            self.writer.close()


def save_checkpoint(path: pathlib.Path, learner: Learner, counters: Counters,
                    writer: Optional[BackgroundWriter] = None) -> None:
    """Write ``learner`` (host-readable) and ``counters`` to the checkpoint now, or with
    ``writer`` in the background (in order)."""
    metadata = {"counters": dataclasses.asdict(counters)}
    job = lambda: save_pytree(path / rundir.CHECKPOINT, learner, metadata)
    writer.submit(job) if writer is not None else job()

"""Checks that the files of a run directory agree, before a resume trusts (and rewrites) them.

A resume continues from ``checkpoint.npz`` and truncates ``metrics.jsonl`` and
``thetas.npz`` to its update, so a damaged or foreign file would silently replace good
results: a checkpoint without counters restarts at update 1, one from the future skips
updates, an emptied ``metrics.jsonl`` or one of another run loses or mixes rows. Every
check here reads only; each disagreement is one :class:`nres.rundir.RunDirError` naming
the file, so the command ends with exit 2 and nothing changed.

Facts the checks rely on (see :mod:`nres.run`): the checkpoint's counters say how many
updates were trained; every update up to it has a train row in ``metrics.jsonl``, whose
``sequential_steps`` grow by the estimator's fixed steps per update and whose
``total_env_steps`` never shrink; the checkpoint is written only after the thetas up to its update, and only at a
good update (whose theta is saved).
"""

from __future__ import annotations

import json
import pathlib
from typing import Optional

import numpy as np

from nres import rundir
from nres.tree import PyTree

# Counters every checkpoint's metadata holds (older ones may lack the non-finite counts).
REQUIRED_COUNTERS = ("iteration", "total_env_steps", "sequential_steps")
OPTIONAL_COUNTERS = ("wall_time_s", "consecutive_nonfinite", "nonfinite_windows")


def checkpoint_counters(path: str | pathlib.Path) -> Optional[dict]:
    """The counters in ``checkpoint.npz``'s metadata, checked; None without a checkpoint."""
    file = pathlib.Path(path) / rundir.CHECKPOINT
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as data:
            metadata = json.loads(str(data["metadata"]))
    except Exception as err:  # zip, key and JSON errors all mean an unreadable file
        raise rundir.RunDirError(f"{str(file)!r} is unreadable: {err}") from None
    counters = metadata.get("counters") if isinstance(metadata, dict) else None
    if not isinstance(counters, dict):
        raise rundir.RunDirError(f"{str(file)!r} has no counters in its metadata")
    unknown = sorted(set(counters) - set(REQUIRED_COUNTERS) - set(OPTIONAL_COUNTERS))
    if unknown:
        raise rundir.RunDirError(f"{str(file)!r} has unknown counters: {', '.join(unknown)}")
    for name in REQUIRED_COUNTERS + OPTIONAL_COUNTERS:
        value = counters.get(name)
        if value is None and name in OPTIONAL_COUNTERS:
            continue
        kind = (int, float) if name == "wall_time_s" else int
        if isinstance(value, bool) or not isinstance(value, kind) or not value >= 0:
            what = "is missing" if value is None else f"is {value!r}, not a non-negative number"
            raise rundir.RunDirError(f"{str(file)!r}: counter {name!r} {what}")
    return counters


def check_resumable(path: str | pathlib.Path, run_iterations: Optional[int], iterations: Optional[int],
                    steps_per_update: tuple[Optional[int], int], theta: Optional[PyTree] = None,
                    metrics: tuple[str, ...] = ()) -> Optional[dict]:
    """Raise :class:`nres.rundir.RunDirError` unless the run in ``path`` can be resumed.

    Args:
      run_iterations: the run's ``iterations`` as ``config.json`` holds it (None: unknown).
      iterations: the new ``--iterations``, or None.
      steps_per_update: ``(env steps, sequential steps)`` the estimator counts per update
        (env steps None: the task's episodes may end early, so they vary).
      theta: the checkpoint's theta (a pytree of arrays), compared bit for bit with the
        saved theta of its update.
      metrics: the metrics every evaluation row of the run's task holds
        (``TaskEntry.metrics``; empty: not checked).

    Returns the checkpoint's counters, or None for a half-made run (no checkpoint), which
    starts over.
    """
    path = pathlib.Path(path)
    counters = checkpoint_counters(path)
    saved = _saved_iterations(path)
    if counters is None:
        if saved.size and saved.max() > 0:
            raise rundir.RunDirError(
                f"{str(path / rundir.CHECKPOINT)!r} is missing, but {rundir.THETAS} holds updates up to "
                f"{int(saved.max())}: the run would start over; restore the checkpoint or use --overwrite")
        return None
    done = counters["iteration"]
    checkpoint = str(path / rundir.CHECKPOINT)
    if run_iterations is not None and done > run_iterations:
        raise rundir.RunDirError(f"{checkpoint!r} is at update {done}, past the run's {run_iterations} updates "
                                 f"({rundir.CONFIG})")
    if iterations is not None and iterations < done:
        raise rundir.RunDirError(f"--iterations {iterations} is below update {done}, which the run in "
                                 f"{str(path)!r} has reached; give at least {done}")
    _check_rows(path, counters, steps_per_update)
    _check_metric_names(path, metrics)
    if done not in set(saved.tolist()):
        raise rundir.RunDirError(f"{str(path / rundir.THETAS)!r} lacks the theta of update {done}, the "
                                 f"checkpoint's (it holds {_span(saved)})")
    if theta is not None:
        _check_theta(path, done, theta)
    return counters


def _check_rows(path: pathlib.Path, counters: dict, steps_per_update: tuple[Optional[int], int]) -> None:
    """Every update up to the checkpoint's has its train row, counted as the checkpoint
    counts: sequential steps grow by the estimator's fixed steps per update; environment
    steps grow by its fixed env steps (``None``: a task whose episodes may end early,
    whose env steps only never shrink) and reach the checkpoint's."""
    file = str(path / rundir.METRICS)
    done = counters["iteration"]
    env_steps, sequential_steps = steps_per_update
    rows = rundir.read_metrics(path)
    train = {r["iteration"]: r for r in rows if not rundir.is_eval_row(r)}
    missing = [i for i in range(1, done + 1) if i not in train]
    if missing:
        raise rundir.RunDirError(f"{file!r} lacks the train rows of {len(missing)} of the {done} updates that "
                                 f"{rundir.CHECKPOINT} has trained (first: update {missing[0]})")
    previous = None
    for i in range(1, done + 1):
        got = {k: train[i].get(k) for k in ("total_env_steps", "sequential_steps")}
        want_sequential = counters["sequential_steps"] - (done - i) * sequential_steps
        env = got["total_env_steps"]
        bad_env = (not isinstance(env, int) or (previous is not None and env < previous)
                   or env > counters["total_env_steps"] or (i == done and env != counters["total_env_steps"])
                   or (env_steps is not None and env != counters["total_env_steps"] - (done - i) * env_steps))
        if got["sequential_steps"] != want_sequential or bad_env:
            raise rundir.RunDirError(
                f"{file!r} row of update {i} counts {got}, which {rundir.CHECKPOINT} (sequential steps "
                f"{counters['sequential_steps']}, env steps {counters['total_env_steps']} at update {done}) and "
                f"this run's estimator do not give: the files are not of one run")
        previous = env


def _check_metric_names(path: pathlib.Path, metrics: tuple[str, ...]) -> None:
    """Every evaluation row holds exactly the task's metrics: rows of another task (whose
    counters may agree, for the same N, W and T) are refused."""
    if not metrics:
        return
    for row in rundir.read_metrics(path):
        if rundir.is_eval_row(row) and set(row) - set(rundir.COUNTERS) != set(metrics):
            got = sorted(set(row) - set(rundir.COUNTERS))
            raise rundir.RunDirError(
                f"{str(path / rundir.METRICS)!r} row of update {row.get('iteration')} holds the metrics "
                f"{', '.join(got) or 'none'}, not this task's ({', '.join(sorted(metrics))}): the rows are of "
                "another task")


def _saved_iterations(path: pathlib.Path) -> np.ndarray:
    file = path / rundir.THETAS
    if not file.is_file():
        return np.zeros((0,), np.int64)
    try:
        with np.load(file, allow_pickle=False) as data:
            iterations = np.asarray(data["iteration"])
    except Exception as err:  # zip, key and format errors all mean an unreadable file
        raise rundir.RunDirError(f"{str(file)!r} is unreadable: {err}") from None
    if iterations.ndim != 1 or iterations.dtype.kind not in "iu":
        raise rundir.RunDirError(f"{str(file)!r} has no list of iterations")
    return iterations


def _check_theta(path: pathlib.Path, done: int, theta: PyTree) -> None:
    import jax

    iterations, thetas = rundir.load_thetas(path, theta)
    stored = thetas[int(np.flatnonzero(iterations == done)[-1])]
    same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
               zip(jax.tree_util.tree_leaves(stored), jax.tree_util.tree_leaves(theta)))
    if not same:
        raise rundir.RunDirError(f"{str(path / rundir.THETAS)!r} theta of update {done} differs from "
                                 f"{rundir.CHECKPOINT}'s: the files are not of one run")


def _span(iterations: np.ndarray) -> str:
    return f"updates {int(iterations.min())}..{int(iterations.max())}" if iterations.size else "no theta"

"""Training and evaluating runs that live in a run directory (see :mod:`nres.rundir`)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
from typing import Callable, Optional

import jax
import numpy as np

from nres import rundir, rundir_check, run_info, sizes
from nres.checkpoint import CheckpointError, load_pytree
from nres.config import ConfigError, TrainConfig, config_to_dict
from nres.build import resolve_config, resolved_config
from nres.engines import EngineOptions
from nres.counters import Counters, Steps
from nres.estimators import ES_ESTIMATORS
from nres import interrupts
from nres.interrupts import deferred_stop, exit_code
from nres.loop import Schedule, Stopped, train_loop
from nres.plotting import plot_run_curves, run_label
from nres.progress import progress, track
from nres.runlog import RunLog, divergence, save_checkpoint, train_rows  # noqa: F401 (divergence: part of this module's API)
from nres.step import Learner
from nres.tasks import get_task_entry
from nres.training import Trainer


class RunStopped(RuntimeError):
    """Training ended early (stop signal, non-finite losses, divergence); ``exit_code`` says why."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


EXIT_DIVERGED = 3
COUNTER_KEYS = rundir.COUNTERS


class _Reporter:
    """The loop's callbacks for ``nres train``: the run log's files, the progress bar,
    the deferred stop signals and the caller's ``callback(rows)`` (train rows of each
    chunk and each evaluation row, as ``metrics.jsonl`` holds them)."""

    def __init__(self, log: RunLog, bar, stop: dict, callback: Optional[Callable[[list[dict]], None]] = None):
        self.log, self.bar, self.stop, self.callback = log, bar, stop, callback
        self.checkpoint = log.checkpoint

    def evaluate(self, learner: Learner, counters: Counters) -> None:
        seen = len(self.log.history)
        self.log.evaluate(learner, counters)
        if self.callback is not None and len(self.log.history) > seen:
            self.callback(self.log.history[seen:])

    def steps(self, steps: Steps, end: int) -> None:
        self.log.steps(steps, end)
        if self.callback is not None:
            self.callback(train_rows(steps)[:end])
        self.bar.update(len(steps.iteration))
        self.bar.set_postfix(loss=f"{steps.info.train_loss[-1]:.4g}", refresh=False)

    def stop_signal(self):
        return self.stop["signum"]


class Run:
    """A training run bound to its directory."""

    def __init__(self, path: pathlib.Path, config: TrainConfig, engine: Optional[EngineOptions] = None):
        self.path = path
        self.config = config
        self.chunk_seconds = chunk_seconds()  # checked before any file is written
        self.trainer = Trainer(config, engine=engine)

    # -- persistence -------------------------------------------------------------------
    def save_checkpoint(self, learner: Learner, counters: Counters) -> None:
        """Write the checkpoint now (remote particle states gathered here)."""
        save_checkpoint(self.path, self.trainer.engine.host(learner), counters)

    def load_checkpoint(self) -> tuple[Learner, Counters]:
        learner, metadata = load_pytree(self.path / rundir.CHECKPOINT, self.trainer.learner_template())
        try:
            counters = Counters(**metadata["counters"])
        except (KeyError, TypeError) as err:
            raise CheckpointError(f"checkpoint in {str(self.path)!r} has unusable counters: {err}") from None
        return self.trainer.engine.place(learner), counters

    def load_state(self) -> tuple[Learner, Counters]:
        """The checkpoint, after checking that thetas and metrics are readable too."""
        learner, counters = self.load_checkpoint()
        rundir.load_thetas(self.path, learner.theta)
        rundir.read_metrics(self.path)
        return learner, counters

    def evaluate_row(self, counters: dict, theta) -> dict:
        return {**counters, **self.trainer.evaluate(theta)}

    # -- training ----------------------------------------------------------------------
    def train(self, learner: Learner, counters: Counters, progress: bool = True, resumed: bool = False,
              callback: Optional[Callable[[list[dict]], None]] = None) -> Counters:
        """Train up to ``config.iterations`` updates (:func:`nres.loop.train_loop`, writing
        through a :class:`nres.runlog.RunLog`; ``callback(rows)`` as in :class:`_Reporter`);
        call with the run's lock held."""
        _prefetch_plotting()
        log = RunLog(self.path, learner.theta, counters, resumed, self.trainer.engine.host, self.trainer.evaluate)
        bar = _progress_bar(self.config, counters.iteration, progress)
        try:
            with deferred_stop() as stop:
                learner, counters = train_loop(self.trainer, learner, counters, Schedule.of(self.config),
                                               _Reporter(log, bar, stop, callback), fresh=not resumed,
                                               chunk_seconds=self.chunk_seconds)
        except Stopped as stopped:
            self.plot()  # the checkpoint is saved; the curves so far
            raise self._stopped(stopped) from None
        finally:
            bar.close()
            log.close()  # every checkpoint on disk before the run returns or stops
        self.plot(log.all_rows)
        reason = log.divergence()
        if reason:
            raise RunStopped(f"diverged: {reason} (lower --lr or --sigma); results in {self.path}", EXIT_DIVERGED)
        return counters

    def _stopped(self, stopped: Stopped) -> RunStopped:
        at = stopped.counters.iteration
        if stopped.signum is not None:
            return RunStopped(f"{signal.Signals(stopped.signum).name}: stopped at update {at}; checkpoint saved, "
                              f"continue with: nres train --resume {self.path}", exit_code(stopped.signum))
        return RunStopped(f"stopped: {stopped.streak} consecutive windows were non-finite (losses, gradient or "
                          f"update; lower --lr or --sigma); last good checkpoint is at update {at} in {self.path}",
                          EXIT_DIVERGED)

    def plot(self, rows: Optional[list[dict] | Callable[[], list[dict]]] = None) -> None:
        """Draw ``curves.png`` from ``rows`` (or a function returning them; default: read
        ``metrics.jsonl``)."""
        rows = rundir.read_metrics(self.path) if rows is None else rows() if callable(rows) else rows
        if rows:
            plot_run_curves(rows, self.path / rundir.CURVES, title=f"{self.config.task}: {run_label(config_to_dict(self.config))}")


CHUNK_SECONDS_ENV = "NRES_CHUNK_SECONDS"


def chunk_seconds() -> float:
    """Seconds of work each compiled call of updates aims at (``NRES_CHUNK_SECONDS``,
    default 0.25): shorter keeps Ctrl-C and the progress bar snappier, longer spends
    less time in Python between calls. In a ``--distributed`` run process 0's decides."""
    value = os.environ.get(CHUNK_SECONDS_ENV, "0.25")
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"{CHUNK_SECONDS_ENV} must be a positive number of seconds, got {value!r}")
    return seconds


def _prefetch_plotting() -> None:
    """Import matplotlib in the background while training runs: the curves drawn at the
    end then cost only the drawing (the import overlaps compilation and the updates)."""
    import threading

    from nres.plotting import pyplot

    threading.Thread(target=pyplot, name="nres-import-matplotlib", daemon=True).start()


def _progress_bar(config: TrainConfig, initial: int, enabled: bool):
    return progress(config.iterations, f"{config.estimator} on {config.task}", "update", initial, enabled)


def default_out_dir(config: TrainConfig) -> pathlib.Path:
    import re
    import time

    task = re.sub(r"[^A-Za-z0-9_.-]+", "-", config.task).strip("-.") or "task"  # `module:ENTRY` -> `module-ENTRY`
    return pathlib.Path("runs") / f"{task}-{config.estimator}-{time.strftime('%Y%m%d-%H%M%S')}"


def start_run(config: TrainConfig, out: Optional[str], overwrite: bool = False, progress: bool = True,
              engine: Optional[EngineOptions] = None, callback: Optional[Callable[[list[dict]], None]] = None
              ) -> pathlib.Path:
    """Validate everything, then create the run directory and train."""
    path = pathlib.Path(out) if out else default_out_dir(config)
    rundir.check_out(path, overwrite)
    rundir.check_free(path)  # another process trains it: refused before the task is built
    run = Run(path, config, engine)  # builds task, estimator, optimiser, engine: fails before any file is written
    if config.estimator not in ES_ESTIMATORS:  # differentiating the task fails only when traced
        run.trainer.check()
    sizes.check_count("--num-particles", config.num_particles, run.trainer.estimator.env_steps_per_update,
                      "environment steps per update")
    sizes.check_fits("--num-particles", config.num_particles, sizes.tree_bytes(run.trainer.learner_template()),
                     "theta, optimiser state and every particle's state")
    run_info.announce(config, run.trainer.task)
    with contextlib.closing(run.trainer.engine):
        learner, counters = run.trainer.init()
        interrupts.check()  # a stop deferred during start-up ends here, before any file is written
        created = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        try:
            with rundir.RunLock(path):
                rundir.prepare(path, overwrite=overwrite)  # checked again, now that the directory is ours
                _write_config(run)
                run.train(learner, counters, progress=progress, callback=callback)
        except BaseException:
            if created:  # stopped before config.json: no directory left, rather than one holding a lock
                rundir.remove_if_unstarted(path)
            raise
    return path


def _write_config(run: Run) -> None:
    task = run.trainer.task
    resolved = resolved_config(run.config, task)
    rundir.write_config(run.path, config_to_dict(resolved), run_info.facts(run.config, task))


def load_run(path: str | pathlib.Path, iterations: Optional[int] = None,
             engine: Optional[EngineOptions] = None) -> Run:
    path = pathlib.Path(path)
    stored = rundir.read_config(path)
    rundir.check_free(path)  # another process trains it: refused before the task is built
    overrides = {"iterations": iterations} if iterations is not None else {}
    try:
        config = resolve_config(stored["config"], overrides)
    except (ConfigError, KeyError, TypeError) as err:
        raise rundir.RunDirError(f"{str(path)!r} holds an unusable config: {err}") from None
    return Run(path, config, engine)


def resume_run(path: str | pathlib.Path, iterations: Optional[int] = None, progress: bool = True,
               engine: Optional[EngineOptions] = None, callback: Optional[Callable[[list[dict]], None]] = None
               ) -> pathlib.Path:
    """Continue a run from its checkpoint; a half-made run (no checkpoint) starts over.

    Every file is checked before anything is written (``--iterations`` rewrites
    ``config.json`` only after the checkpoint, thetas and metrics have been read).
    """
    run = load_run(path, iterations, engine)
    run_info.announce(run.config, run.trainer.task)
    with contextlib.closing(run.trainer.engine):
        half_made = rundir.is_half_made(run.path)
        state = None if half_made else run.load_state()
        estimator = run.trainer.estimator
        rundir_check.check_resumable(run.path, rundir.read_config(run.path)["config"].get("iterations"), iterations,
                                     (None if run.trainer.task.done is not None else estimator.env_steps_per_update,
                                      estimator.sequential_steps_per_update),
                                     None if state is None else state[0].theta,
                                     get_task_entry(run.config.task).metrics)
        interrupts.check()  # a stop deferred during start-up ends here, before any file is written
        with rundir.RunLock(run.path):
            if iterations is not None:
                _write_config(run)
            if half_made:
                learner, counters = run.trainer.init()
                rundir.remove_run_files(run.path, keep=(rundir.CONFIG,))
                run.train(learner, counters, progress=progress, callback=callback)
            else:
                run.train(*state, progress=progress, resumed=True, callback=callback)
    return run.path


def evaluate_run(path: str | pathlib.Path, every_saved: bool = False, stride: int = 1) -> list[dict]:
    """Evaluate the final (or every ``stride``-th saved) ``theta``; its test rows replace
    any earlier ones of the same iterations."""
    run = load_run(path)
    if run.trainer.task.shared is not None:
        raise rundir.RunDirError(f"{str(run.path)!r} trained with shared task state (e.g. --obs-norm running), which "
                                 f"its saved thetas lack; its evaluations are those in {rundir.METRICS}")
    template = run.trainer.learner_template().theta
    iterations, thetas = rundir.load_thetas(run.path, template)
    if not len(iterations):
        raise rundir.RunDirError(f"{str(run.path)!r} has no saved thetas ({rundir.THETAS})")
    picks = list(range(0, len(iterations), stride)) if every_saved else [len(iterations) - 1]
    if every_saved and picks[-1] != len(iterations) - 1:
        picks.append(len(iterations) - 1)
    counters_at = _counters_by_iteration(rundir.read_metrics(run.path), run.trainer.estimator.env_steps_per_update)
    with rundir.RunLock(run.path):
        new_rows = [run.evaluate_row(counters_at.get(int(iterations[i]), {"iteration": int(iterations[i])}),
                                     jax.tree_util.tree_map(np.asarray, thetas[i]))
                    for i in track(picks, len(picks), f"evaluating {run.path}", "theta", enabled=len(picks) > 1)]
        rundir.write_metrics(run.path, rundir.tidy_rows(rundir.read_metrics(run.path) + new_rows))
        run.plot()
    return new_rows


def _counters_by_iteration(rows: list[dict], env_steps_per_update: int) -> dict[int, dict]:
    """The counters of every logged iteration, iteration 0 included (burn-in steps only)."""
    at = {r["iteration"]: {k: r.get(k) for k in COUNTER_KEYS} for r in rows if not rundir.is_eval_row(r)}
    zero = next((r for r in rows if r["iteration"] == 0), None)
    if zero is None and 1 in at and at[1]["total_env_steps"] is not None:
        zero = {"iteration": 0, "total_env_steps": at[1]["total_env_steps"] - env_steps_per_update}
    if zero is not None:
        at[0] = {"iteration": 0, "wall_time_s": 0.0, "total_env_steps": zero.get("total_env_steps"),
                 "sequential_steps": 0}
    return at

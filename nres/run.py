"""Training and evaluating runs that live in a run directory (see :mod:`nres.rundir`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import pathlib
import signal
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from nres import rundir, rundir_check, run_info, sizes
from nres.checkpoint import BackgroundWriter, CheckpointError, load_pytree, save_pytree
from nres.config import ConfigError, TrainConfig, config_to_dict, resolve_config
from nres.engines import EngineOptions
from nres.estimators import ES_ESTIMATORS
from nres import interrupts
from nres.interrupts import deferred_stop, exit_code
from nres.plotting import plot_run_curves, run_label
from nres.progress import progress, track
from nres.training import Counters, Learner, Steps, Trainer


class RunStopped(RuntimeError):
    """Training ended early (stop signal, non-finite losses, divergence); ``exit_code`` says why."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


EXIT_DIVERGED = 3
EXPLODED_FACTOR = 1e6
COUNTER_KEYS = ("iteration", "wall_time_s", "total_env_steps", "sequential_steps")


def _counter_values(counters: Counters) -> dict:
    return {
        "iteration": counters.iteration,
        # Nothing is trained at iteration 0 (the burn-in's time is counted with update 1).
        "wall_time_s": round(counters.wall_time_s, 6) if counters.iteration else 0.0,
        "total_env_steps": counters.total_env_steps,
        "sequential_steps": counters.sequential_steps,
    }


_PLAIN_KEYS = ("iteration", "wall_time_s", "total_env_steps", "sequential_steps", "train_loss", "grad_norm")
# The JSON line of a row of finite numbers (json.dumps writes ints with %d and floats with repr).
_PLAIN_ROW = "{" + ", ".join(f'"{k}": %{"d" if k in ("iteration", "total_env_steps", "sequential_steps") else "r"}'
                             for k in _PLAIN_KEYS) + "}\n"


def _plain_columns(steps: Steps) -> list[list]:
    """The columns of a chunk's train rows (:data:`_PLAIN_KEYS`), as Python numbers."""
    return [steps.iteration.tolist(), np.round(steps.wall_time_s, 6).tolist(), steps.total_env_steps.tolist(),
            steps.sequential_steps.tolist(), steps.info.train_loss.tolist(), steps.info.grad_norm.tolist()]


def _plain_rows(columns: list[list]) -> list[dict]:
    """The rows of :func:`_plain_columns`."""
    return [dict(zip(_PLAIN_KEYS, values)) for values in zip(*columns)]


def _finite(steps: Steps) -> bool:
    return bool(np.all(np.isfinite(steps.info.train_loss)) and np.all(np.isfinite(steps.info.grad_norm)))


def _train_rows(steps: Steps) -> list[dict]:
    """The metrics rows of a chunk's updates (one per update)."""
    info = steps.info
    rows = _plain_rows(_plain_columns(steps))
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


class Run:
    """A training run bound to its directory."""

    def __init__(self, path: pathlib.Path, config: TrainConfig, engine: Optional[EngineOptions] = None):
        self.path = path
        self.config = config
        self.trainer = Trainer(config, engine=engine)

    # -- persistence -------------------------------------------------------------------
    def save_checkpoint(self, learner: Learner, counters: Counters, writer: Optional[BackgroundWriter] = None) -> None:
        """Write the checkpoint now, or with ``writer`` in the background (in order)."""
        learner = self.trainer.engine.host(learner)  # remote particle states gathered here
        metadata = {"counters": dataclasses.asdict(counters)}
        job = lambda: save_pytree(self.path / rundir.CHECKPOINT, learner, metadata)
        writer.submit(job) if writer is not None else job()

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
    def train(self, learner: Learner, counters: Counters, progress: bool = True, resumed: bool = False) -> Counters:
        """Train up to ``config.iterations`` updates; call with the run's lock held.

        A fresh run (``resumed=False``) writes ``theta_0`` and the iteration-0
        evaluation row before its first checkpoint, so no checkpoint ever exists
        without them. Evaluation rows are written before the checkpoint at their
        update, and never twice for one iteration.
        """
        config = self.config
        _prefetch_plotting()
        thetas = rundir.ThetaTrajectory(self.path)
        if resumed:
            thetas.truncate(counters.iteration, learner.theta)
            rows = rundir.tidy_rows(r for r in rundir.read_metrics(self.path) if r["iteration"] <= counters.iteration)
            rundir.write_metrics(self.path, rows)
        else:
            rows = []
            thetas.append(0, learner.theta)  # written with the first checkpoint, before it
        evaluated = {r["iteration"] for r in rows if rundir.is_eval_row(r)}
        # Every row of the run as metrics.jsonl will hold it, for the curves and the divergence
        # check at the end: rows as read back from their JSON, usual chunks as columns.
        history, plain_chunks = list(rows), []
        tensorboard = rundir.TensorBoardLog(self.path, purge_step=counters.iteration + 1 if resumed else None)
        bar = _progress_bar(config, counters.iteration, progress)
        last_good = (learner, counters)
        writer = BackgroundWriter()  # thetas and checkpoints are written while training goes on
        try:
            with open(self.path / rundir.METRICS, "a") as metrics, deferred_stop() as stop:

                def log(rows, prefix):
                    """Rows (one or a chunk's list) in one write to each file."""
                    rows = [rows] if isinstance(rows, dict) else rows
                    if rows:
                        lines = [rundir.json_row(row) for row in rows]
                        metrics.write("".join(lines))
                        metrics.flush()
                        tensorboard.scalars(rows, prefix)
                        history.extend(json.loads(line) for line in lines)

                def evaluate(learner, counters):
                    if counters.iteration not in evaluated:
                        log(self.evaluate_row(_counter_values(counters), learner.theta), "test")
                        evaluated.add(counters.iteration)

                def checkpoint(learner, counters):
                    thetas.flush(writer)  # first the thetas: a checkpoint never lacks its thetas
                    self.save_checkpoint(learner, counters, writer)

                def stop_if_asked():
                    if stop["signum"] is not None:
                        checkpoint(*last_good)
                        raise RunStopped(
                            f"{signal.Signals(stop['signum']).name}: stopped at update {last_good[1].iteration}; "
                            f"checkpoint saved, continue with: nres train --resume {self.path}",
                            exit_code(stop["signum"]),
                        )

                if config.eval_every and counters.iteration % config.eval_every == 0:
                    evaluate(learner, counters)  # the starting point of the test curve
                if not resumed:
                    checkpoint(learner, counters)
                # Pipelined: chunk k + 1 is launched before chunk k is collected, so the
                # host logs chunk k while the device computes chunk k + 1.
                pacer, trainer = _Pacer(self.trainer.max_chunk), self.trainer
                pending, planned, collected = None, counters.iteration, None
                while pending is not None or planned < config.iterations:
                    stop_if_asked()
                    launched = None
                    if planned < config.iterations:
                        count = min(pacer.count(), config.iterations - planned,
                                    _to_boundary(planned, config.checkpoint_every),
                                    _to_boundary(planned, config.eval_every))
                        launched = trainer.launch(pending.learner if pending else learner, count)
                        planned += count
                    if pending is not None:
                        before = counters
                        learner, steps = trainer.collect(pending, counters, since=collected)
                        collected, counters = time.perf_counter(), steps.counters
                        pacer.observe(pending.count, counters.wall_time_s - before.wall_time_s)
                        streak = steps.consecutive_nonfinite
                        stop_at = np.flatnonzero(streak >= config.max_nonfinite)
                        end = int(stop_at[0]) + 1 if stop_at.size else len(streak)
                        good = np.flatnonzero(streak[:end] == 0)
                        thetas.extend(steps.iteration[good], jax.tree_util.tree_map(lambda x: x[good], steps.theta))
                        if len(good) == len(streak) and _finite(steps):  # the usual chunk: no dict per row
                            columns = _plain_columns(steps)
                            plain_chunks.append(columns)
                            metrics.write("".join(_PLAIN_ROW % row for row in zip(*columns)))
                            metrics.flush()
                            tensorboard.columns(steps.iteration, dict(zip(_PLAIN_KEYS[1:], columns[1:])), "train")
                        else:
                            log(_train_rows(steps)[:end], "train")
                        if stop_at.size:
                            checkpoint(*last_good)
                            raise RunStopped(
                                f"stopped: {int(streak[end - 1])} consecutive windows were non-finite "
                                f"(losses, gradient or update; lower --lr or --sigma); last good checkpoint is "
                                f"at update {last_good[1].iteration} in {self.path}",
                                EXIT_DIVERGED,
                            )
                        if config.eval_every and counters.iteration % config.eval_every == 0:
                            evaluate(learner, counters)
                        if counters.consecutive_nonfinite == 0:  # a consistent, good state to resume from
                            last_good = (learner, counters)
                            if counters.iteration % config.checkpoint_every == 0:
                                checkpoint(learner, counters)
                        bar.update(len(streak))
                        bar.set_postfix(loss=f"{steps.info.train_loss[-1]:.4g}", refresh=False)
                    pending = launched
                stop_if_asked()
                checkpoint(*last_good)
                if config.eval_at_end:
                    evaluate(learner, counters)
                stop_if_asked()
        except RunStopped:
            self.plot()  # the checkpoint is saved; the curves so far
            raise
        finally:
            bar.close()
            tensorboard.close()
            writer.close()  # every checkpoint on disk before the run returns or stops
        self.plot(lambda: rundir.tidy_rows(history + [row for columns in plain_chunks for row in _plain_rows(columns)]))
        loss = _PLAIN_KEYS.index("train_loss")
        reason = divergence(history, [(columns[0], columns[loss]) for columns in plain_chunks])
        if reason:
            raise RunStopped(f"diverged: {reason} (lower --lr or --sigma); results in {self.path}", EXIT_DIVERGED)
        return counters

    def plot(self, rows: Optional[list[dict] | Callable[[], list[dict]]] = None) -> None:
        """Draw ``curves.png`` from ``rows`` (or a function returning them; default: read
        ``metrics.jsonl``)."""
        rows = rundir.read_metrics(self.path) if rows is None else rows() if callable(rows) else rows
        if rows:
            plot_run_curves(rows, self.path / rundir.CURVES, title=f"{self.config.task}: {run_label(config_to_dict(self.config))}")


def _prefetch_plotting() -> None:
    """Import matplotlib in the background while training runs: the curves drawn at the
    end then cost only the drawing (the import overlaps compilation and the updates)."""
    import threading

    from nres.plotting import pyplot

    threading.Thread(target=pyplot, name="nres-import-matplotlib", daemon=True).start()


def _to_boundary(iteration: int, every: int) -> int:
    """Updates until the next multiple of ``every`` (no bound when ``every`` is 0)."""
    return every - iteration % every if every else 1 << 30


class _Pacer:
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


def _progress_bar(config: TrainConfig, initial: int, enabled: bool):
    return progress(config.iterations, f"{config.estimator} on {config.task}", "update", initial, enabled)


def default_out_dir(config: TrainConfig) -> pathlib.Path:
    import re
    import time

    task = re.sub(r"[^A-Za-z0-9_.-]+", "-", config.task).strip("-.") or "task"  # `module:ENTRY` -> `module-ENTRY`
    return pathlib.Path("runs") / f"{task}-{config.estimator}-{time.strftime('%Y%m%d-%H%M%S')}"


def start_run(config: TrainConfig, out: Optional[str], overwrite: bool = False, progress: bool = True,
              engine: Optional[EngineOptions] = None) -> pathlib.Path:
    """Validate everything, then create the run directory and train."""
    path = pathlib.Path(out) if out else default_out_dir(config)
    rundir.check_out(path, overwrite)
    run = Run(path, config, engine)  # builds task, estimator, optimiser, engine: fails before any file is written
    if config.estimator not in ES_ESTIMATORS:  # differentiating the task fails only when traced
        run.trainer.check()
    sizes.check_fits("--num-particles", config.num_particles, sizes.tree_bytes(run.trainer.learner_template()),
                     "theta, optimiser state and every particle's state")
    run_info.announce(config, run.trainer.task)
    with contextlib.closing(run.trainer.engine):
        learner, counters = run.trainer.init()
        interrupts.check()  # a stop deferred during start-up ends here, before any file is written
        path.mkdir(parents=True, exist_ok=True)
        with rundir.RunLock(path):
            rundir.prepare(path, overwrite=overwrite)  # checked again, now that the directory is ours
            _write_config(run)
            run.train(learner, counters, progress=progress)
    return path


def _write_config(run: Run) -> None:
    task = run.trainer.task
    resolved = run_info.resolved_config(run.config, task)
    rundir.write_config(run.path, config_to_dict(resolved), run_info.facts(run.config, task))


def load_run(path: str | pathlib.Path, iterations: Optional[int] = None,
             engine: Optional[EngineOptions] = None) -> Run:
    path = pathlib.Path(path)
    stored = rundir.read_config(path)
    overrides = {"iterations": iterations} if iterations is not None else {}
    try:
        config = resolve_config(stored["config"], overrides)
    except (ConfigError, KeyError, TypeError) as err:
        raise rundir.RunDirError(f"{str(path)!r} holds an unusable config: {err}") from None
    return Run(path, config, engine)


def resume_run(path: str | pathlib.Path, iterations: Optional[int] = None, progress: bool = True,
               engine: Optional[EngineOptions] = None) -> pathlib.Path:
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
                                     (estimator.env_steps_per_update, estimator.sequential_steps_per_update),
                                     None if state is None else state[0].theta)
        interrupts.check()  # a stop deferred during start-up ends here, before any file is written
        with rundir.RunLock(run.path):
            if iterations is not None:
                _write_config(run)
            if half_made:
                learner, counters = run.trainer.init()
                rundir.remove_run_files(run.path, keep=(rundir.CONFIG,))
                run.train(learner, counters, progress=progress)
            else:
                run.train(*state, progress=progress, resumed=True)
    return run.path


def evaluate_run(path: str | pathlib.Path, every_saved: bool = False, stride: int = 1) -> list[dict]:
    """Evaluate the final (or every ``stride``-th saved) ``theta``; its test rows replace
    any earlier ones of the same iterations."""
    run = load_run(path)
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

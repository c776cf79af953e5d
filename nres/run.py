"""Training and evaluating runs that live in a run directory (see :mod:`nres.rundir`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import signal
import time
import sys
from typing import Optional

import jax
import numpy as np

from nres import rundir, run_info
from nres.checkpoint import load_pytree, save_pytree
from nres.config import ConfigError, TrainConfig, config_to_dict, resolve_config
from nres.engines import EngineOptions
from nres.plotting import plot_run_curves, run_label
from nres.progress import progress, track
from nres.training import Counters, Learner, Trainer


class RunStopped(RuntimeError):
    """Training ended early (interrupt or non-finite losses); ``exit_code`` says why."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@contextlib.contextmanager
def _graceful_interrupt():
    """First Ctrl-C sets a flag (the loop checkpoints and stops); a second one aborts."""
    requested = {"stop": False}
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if requested["stop"]:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        requested["stop"] = True
        print("\ninterrupt: saving a checkpoint after this update (Ctrl-C again to abort)", file=sys.stderr)

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield requested
        return
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


def _train_row(counters: Counters, info) -> dict:
    row = {
        "iteration": counters.iteration,
        "wall_time_s": round(counters.wall_time_s, 6),
        "total_env_steps": counters.total_env_steps,
        "sequential_steps": counters.sequential_steps,
        "train_loss": float(info.train_loss),
        "grad_norm": float(info.grad_norm),
    }
    if not bool(info.applied):
        row["skipped_nonfinite"] = True
        row["nonfinite_particles"] = int(info.num_nonfinite)
    return row


def _eval_row(counters: Counters, metrics: dict) -> dict:
    return {
        "iteration": counters.iteration,
        "wall_time_s": round(counters.wall_time_s, 6),
        "total_env_steps": counters.total_env_steps,
        "sequential_steps": counters.sequential_steps,
        **metrics,
    }


class Run:
    """A training run bound to its directory."""

    def __init__(self, path: pathlib.Path, config: TrainConfig, engine: Optional[EngineOptions] = None):
        self.path = path
        self.config = config
        self.trainer = Trainer(config, engine=engine)

    # -- persistence -------------------------------------------------------------------
    def save_checkpoint(self, learner: Learner, counters: Counters) -> None:
        learner = self.trainer.engine.host(learner)  # remote particle states gathered here
        save_pytree(self.path / rundir.CHECKPOINT, learner, {"counters": dataclasses.asdict(counters)})

    def load_checkpoint(self) -> tuple[Learner, Counters]:
        learner, metadata = load_pytree(self.path / rundir.CHECKPOINT, self.trainer.learner_template())
        return self.trainer.engine.place(learner), Counters(**metadata["counters"])

    # -- training ----------------------------------------------------------------------
    def train(self, learner: Learner, counters: Counters, progress: bool = True, resumed: bool = False) -> Counters:
        config = self.config
        _prefetch_plotting()
        thetas = rundir.ThetaTrajectory(self.path)
        if resumed:
            thetas.truncate(counters.iteration, learner.theta)
            rows = [r for r in rundir.read_metrics(self.path) if r["iteration"] <= counters.iteration]
            rundir.write_metrics(self.path, rows)
        else:
            thetas.append(0, learner.theta)
        tensorboard = rundir.TensorBoardLog(self.path, purge_step=counters.iteration + 1 if resumed else None)
        bar = _progress_bar(config, counters.iteration, progress)
        last_good = (learner, counters)
        try:
            with open(self.path / rundir.METRICS, "a") as metrics, _graceful_interrupt() as interrupt:

                def log(rows, prefix):
                    """Rows (one or a chunk's list) in one write to each file."""
                    rows = [rows] if isinstance(rows, dict) else rows
                    if rows:
                        metrics.write("".join(json.dumps(row) + "\n" for row in rows))
                        metrics.flush()
                        tensorboard.scalars(rows, prefix)

                def checkpoint(learner, counters):
                    thetas.flush()
                    self.save_checkpoint(learner, counters)

                if config.eval_every and not resumed:  # the starting point of the test curve
                    log(_eval_row(counters, self.trainer.evaluate(learner.theta)), "test")
                pacer = _Pacer(self.trainer.max_chunk)
                while counters.iteration < config.iterations:
                    if interrupt["stop"]:
                        checkpoint(*last_good)
                        raise RunStopped(
                            f"interrupted at update {last_good[1].iteration}; checkpoint saved, "
                            f"continue with: nres train --resume {self.path}",
                            130,
                        )
                    count = min(pacer.count(), config.iterations - counters.iteration,
                                _to_boundary(counters.iteration, config.checkpoint_every),
                                _to_boundary(counters.iteration, config.eval_every))
                    started = time.perf_counter()
                    learner, steps = self.trainer.update_many(learner, counters, count)
                    pacer.observe(count, time.perf_counter() - started)
                    rows = []
                    for counters, info, theta in steps:
                        rows.append(row := _train_row(counters, info))
                        if counters.consecutive_nonfinite == 0:
                            thetas.append(counters.iteration, theta)
                        elif counters.consecutive_nonfinite >= config.max_nonfinite:
                            log(rows, "train")
                            checkpoint(*last_good)
                            raise RunStopped(
                                f"stopped: {counters.consecutive_nonfinite} consecutive windows had non-finite "
                                f"losses (lower --lr or --sigma); last good checkpoint is at update "
                                f"{last_good[1].iteration} in {self.path}",
                                3,
                            )
                    log(rows, "train")
                    if counters.consecutive_nonfinite == 0:  # a consistent, good state to resume from
                        last_good = (learner, counters)
                        if counters.iteration % config.checkpoint_every == 0:
                            checkpoint(learner, counters)
                    if config.eval_every and counters.iteration % config.eval_every == 0:
                        log(_eval_row(counters, self.trainer.evaluate(learner.theta)), "test")
                    bar.update(len(steps))
                    bar.set_postfix(loss=f"{row['train_loss']:.4g}", refresh=False)
                checkpoint(*last_good)
                if config.eval_at_end and not (config.eval_every and counters.iteration % config.eval_every == 0):
                    log(_eval_row(counters, self.trainer.evaluate(learner.theta)), "test")
        finally:
            bar.close()
            tensorboard.close()
            self.plot()
        return counters

    def plot(self) -> None:
        rows = rundir.read_metrics(self.path)
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
    if rundir.is_run(path) and not overwrite:
        rundir.prepare(path, overwrite=False)  # raises the "already holds a run" error
    run = Run(path, config, engine)  # builds task, estimator, optimiser, engine: fails before any file is written
    run_info.announce(config, run.trainer.task)
    with contextlib.closing(run.trainer.engine):
        learner, counters = run.trainer.init()
        rundir.prepare(path, overwrite=overwrite)
        _write_config(run)
        run.save_checkpoint(learner, counters)
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
    run = load_run(path, iterations, engine)
    run_info.announce(run.config, run.trainer.task)
    with contextlib.closing(run.trainer.engine):
        if iterations is not None:
            _write_config(run)
        learner, counters = run.load_checkpoint()
        run.train(learner, counters, progress=progress, resumed=True)
    return run.path


def evaluate_run(path: str | pathlib.Path, every_saved: bool = False, stride: int = 1) -> list[dict]:
    """Evaluate the final (or every ``stride``-th saved) ``theta`` and append test rows."""
    run = load_run(path)
    template = run.trainer.learner_template().theta
    iterations, thetas = rundir.load_thetas(run.path, template)
    if not len(iterations):
        raise rundir.RunDirError(f"{str(run.path)!r} has no saved thetas ({rundir.THETAS})")
    picks = list(range(0, len(iterations), stride)) if every_saved else [len(iterations) - 1]
    if every_saved and picks[-1] != len(iterations) - 1:
        picks.append(len(iterations) - 1)
    rows = rundir.read_metrics(run.path)
    counters_at = {r["iteration"]: r for r in rows if "train_loss" in r}
    new_rows = []
    for i in track(picks, len(picks), f"evaluating {run.path}", "theta", enabled=len(picks) > 1):
        it = int(iterations[i])
        base = counters_at.get(it, {"iteration": it, "wall_time_s": 0.0, "total_env_steps": None, "sequential_steps": None})
        metrics = run.trainer.evaluate(jax.tree_util.tree_map(np.asarray, thetas[i]))
        new_rows.append({k: base[k] for k in ("iteration", "wall_time_s", "total_env_steps", "sequential_steps")} | metrics)
    rundir.write_metrics(run.path, rows + new_rows)
    run.plot()
    return new_rows

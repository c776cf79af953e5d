"""A run's training session: its config built into a pure step and an engine.

:class:`Trainer` wires the layers below it and holds no math of its own: the task,
estimator and optimiser come from :mod:`nres.build`, the update from
:func:`nres.step.make_step`, the execution from an engine (:mod:`nres.engines`), the
host counters from :mod:`nres.counters`. It runs the start (init and burn-in), launches
and collects chunks of updates, and evaluates.

The burn-in (SPEC section 4) runs through the same compiled program as training: the
init builds the pairs at ``tau = 0`` (a small program), then one call of the chunk
program with ``hold`` (each pair's burn-in windows) advances only the pairs still
burning in and applies no update.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nres.build import build_estimator, build_task, make_optimizer, optimizer_hyperparameters, program_identity, seed_key
from nres.compilation_cache import Program
from nres.compiler import compiler_options
from nres.config import TrainConfig
from nres.counters import Counters, Steps, tally
from nres.engines import EngineOptions, Job, make_engine
from nres.evaluation import make_evaluator
from nres.step import Learner, UpdateInfo, make_step, unpack_infos
from nres.task import Task
from nres.tree import PyTree

__all__ = ["Counters", "Learner", "PendingChunk", "Steps", "Trainer", "UpdateInfo"]


class PendingChunk(NamedTuple):
    """A launched chunk of updates (:meth:`Trainer.launch`): device arrays, possibly still
    being computed, as ``Step.chunk`` returns them (``infos``: rows of
    :func:`nres.step.pack_info`), its update count and launch time."""

    learner: Learner
    infos: jax.Array
    thetas: PyTree
    count: int
    started: float


class Trainer:
    """Builds task, estimator, optimiser, step and engine from a config (see the module
    docstring). ``task``: a task built outside the config (its programs are then never
    stored: nres cannot fingerprint its code)."""

    def __init__(self, config: TrainConfig, task: Task | None = None, engine: EngineOptions | None = None):
        self.config = config
        self.task = task if task is not None else build_task(config)
        self.estimator = build_estimator(config, self.task)
        self.optimizer = make_optimizer(config)
        self.step = make_step(self.task, self.estimator, self.optimizer)
        self.max_chunk = self.step.max_chunk
        self.no_hold = np.zeros((config.num_particles,), np.int32)  # training: no pair burns in
        identity = (lambda name: program_identity(config, self.estimator, name)) if task is None else (lambda _: None)
        self._init = Program(self.step.init, lambda: identity("init"), compiler_options(config.compile_for))
        self.hyper = optimizer_hyperparameters(config)
        self.template = jax.eval_shape(self.step.init, seed_key(config.seed), self.hyper)[0]
        self.engine = make_engine(Job(self.step, self.estimator, config, self.template, identity),
                                  engine or EngineOptions())
        self.evaluate_fn = None
        self.clock = time.perf_counter  # the training clock (seconds); replaceable in tests

    def learner_template(self) -> Learner:
        """Shapes and dtypes of a learner (``jax.ShapeDtypeStruct`` leaves)."""
        return self.template

    def check(self) -> None:
        """Trace (without running) the update, so errors of the task or estimator that
        show only when the update is traced surface before a run writes any file."""
        jax.eval_shape(self.step.chunk, self.learner_template(), jnp.asarray(1, jnp.int32), self.no_hold)

    def init(self) -> tuple[Learner, Counters]:
        """Fresh learner (burn-in included) and counters at iteration 0; the start's time
        is the counters' ``wall_time_s``."""
        start = time.perf_counter()
        key = seed_key(self.config.seed)
        # Both programs build at once: the init compiles in the background while the
        # update program is traced, which then compiles while the init runs.
        self._init.prepare(key, self.hyper)
        self.engine.prepare()
        learner, hold = self._init(key, self.hyper)
        hold = np.asarray(hold)
        learner = self.engine.place(learner)
        windows = int(hold.max())
        if windows:
            learner = self.engine.run_chunk(learner, np.int32(windows), hold)[0]
        state = self.engine.host(learner).estimator_state
        counters = Counters(total_env_steps=self.estimator.burn_in_env_steps(state))
        jax.block_until_ready((learner.theta, learner.opt_state))
        counters.wall_time_s = time.perf_counter() - start
        return learner, counters

    def launch(self, learner: Learner, count: int) -> PendingChunk:
        """Start ``count`` updates in one compiled call (``1 <= count <= max_chunk``) and
        return at once: the device computes while the host formats the previous chunk
        (collect it with :meth:`collect`)."""
        if not 1 <= count <= self.max_chunk:
            raise ValueError(f"count must be in [1, {self.max_chunk}], got {count}")
        started = self.clock()
        learner, infos, thetas = self.engine.run_chunk(learner, np.int32(count), self.no_hold)
        return PendingChunk(learner, infos, thetas, count, started)

    def collect(self, chunk: PendingChunk, counters: Counters, since: float | None = None) -> tuple[Learner, Steps]:
        """Wait for a launched chunk; returns its learner and its :class:`Steps` on the host.

        ``counters`` are those before the chunk. Its wall time runs from its launch (or
        from ``since``, when the chunk waited behind an earlier one) to its results, and
        is spread evenly over its updates.
        """
        infos, thetas = jax.device_get((chunk.infos, chunk.thetas))
        infos = unpack_infos(infos)
        elapsed = self.clock() - max(chunk.started, since or 0.0)
        steps = tally(counters, infos, thetas, chunk.count, elapsed, self.estimator.sequential_steps_per_update)
        return chunk.learner, steps

    def agree(self, count: int, signum):
        """``(count, signum)`` as every process of the run decides it (the engine's
        :meth:`~nres.engines.base.Engine.agree`)."""
        return self.engine.agree(count, signum)

    def update_many(self, learner: Learner, counters: Counters, count: int) -> tuple[Learner, list]:
        """``count`` updates in one compiled call (``1 <= count <= max_chunk``).

        Returns the new learner and one ``(counters, info, theta)`` per update, on the host.
        """
        learner, steps = self.collect(self.launch(learner, count), counters)
        return learner, steps.per_update()

    def update(self, learner: Learner, counters: Counters) -> tuple[Learner, Counters, UpdateInfo]:
        """One update; returns new learner, new counters and host-side info."""
        learner, [(counters, info, _)] = self.update_many(learner, counters, 1)
        return learner, counters, info

    def evaluate(self, theta: PyTree, shared: PyTree = None) -> dict[str, float]:
        """The task's held-out metrics of an unperturbed ``theta`` (:mod:`nres.evaluation`);
        ``shared``: the learner's shared state, for a task with one."""
        if self.evaluate_fn is None:
            self.evaluate_fn = make_evaluator(self.task, seed_key(self.config.seed + 1))
        return self.evaluate_fn(theta, shared)

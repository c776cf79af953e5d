"""The training loop's pure parts: building a run from its config and one update.

``Trainer.update`` is one compiled call per update: the estimator's whole window,
the optax update, and the non-finite guard (a window with non-finite losses, gradient
or gradient norm, or whose update would make ``theta`` or the optimiser state
non-finite, leaves both untouched and is counted as skipped).

The burn-in (SPEC section 4) runs through the same compiled program: ``Trainer.init``
builds the pairs at ``tau = 0`` (a small program) and then calls the update program
with ``hold`` (each pair's burn-in windows), whose windows advance only the pairs
still burning in and apply no update.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import optax

from nres.config import ConfigError, TrainConfig
from nres.engines import EngineOptions, make_engine
from nres.estimators import ES_ESTIMATORS, make_estimator
from nres.particles import burn_in_select, episode_losses, map_particle_axis
from nres.task import Task, theta_size
from nres.tasks import get_task_entry
from nres.tree import PyTree, tree_all_finite, tree_norm


def build_task(config: TrainConfig) -> Task:
    """The task of a config, with ``config.horizon`` overriding the task's own ``T``."""
    entry = get_task_entry(config.task)
    options = dict(config.task_options)
    if config.horizon is not None:
        if "horizon" not in {f.name for f in dataclasses.fields(entry.config_cls)}:
            raise ConfigError(f"task {config.task!r} has a fixed horizon; remove setting 'horizon'")
        options["horizon"] = config.horizon
    try:
        return entry.build(entry.config_cls(**options))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"task {config.task!r}: {err}") from None


def build_estimator(config: TrainConfig, task: Task):
    # ES-only switches, passed only when changed from their defaults
    options = {name: getattr(config, name) for name in ("loss_normalize", "store_noise")
               if getattr(config, name) != getattr(TrainConfig, name)}
    for name in options:
        if config.estimator not in ES_ESTIMATORS:
            raise ConfigError(
                f"{name} applies to the ES estimators ({', '.join(ES_ESTIMATORS)}), not to {config.estimator!r}"
            )
    try:
        return make_estimator(
            config.estimator,
            task,
            num_particles=config.num_particles,
            unroll_length=config.unroll_length,
            sigma=config.sigma,
            noise_period=config.noise_period,
            **options,
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None


def learning_rate(config: TrainConfig) -> optax.Schedule:
    if config.lr_schedule == "piecewise":
        return optax.piecewise_constant_schedule(config.lr, {b: config.lr_decay for b in config.lr_boundaries})
    return optax.constant_schedule(config.lr)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The outer optimiser: optional global-norm clipping, then SGD or Adam."""
    schedule = learning_rate(config)
    base = optax.sgd(schedule) if config.optimizer == "sgd" else optax.adam(schedule)
    if config.grad_clip is None:
        return base
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), base)


MAX_UPDATES_PER_CALL = 100
EVAL_EPISODES = 8  # held-out episodes of the default evaluation (tasks without ``evaluate``)


class Learner(NamedTuple):
    """Everything of a run that lives on device: theta, optimiser and estimator state."""

    theta: PyTree
    opt_state: Any
    estimator_state: Any


class UpdateInfo(NamedTuple):
    train_loss: jax.Array
    grad_norm: jax.Array
    applied: jax.Array
    num_nonfinite: jax.Array


@dataclasses.dataclass
class Counters:
    """Host-side bookkeeping (Python ints, so they never overflow)."""

    iteration: int = 0
    total_env_steps: int = 0
    sequential_steps: int = 0
    wall_time_s: float = 0.0
    consecutive_nonfinite: int = 0
    nonfinite_windows: int = 0


class Trainer:
    """Builds task, estimator and optimiser from a config; owns the update, which an
    engine (:mod:`nres.engines`: local, multi-process, Ray) executes."""

    def __init__(self, config: TrainConfig, task: Task | None = None, engine: EngineOptions | None = None):
        self.config = config
        self.task = task if task is not None else build_task(config)
        self.estimator = build_estimator(config, self.task)
        self.optimizer = make_optimizer(config)
        self._init = jax.jit(self._init_fn)
        size = max(1, theta_size(self.task))
        # Updates per compiled call: bounded so the per-update theta buffer stays <= 64 MiB.
        self.max_chunk = int(min(MAX_UPDATES_PER_CALL, max(1, 2**24 // size)))
        self.no_hold = np.zeros((config.num_particles,), np.int32)  # training: no pair burns in
        self.engine = make_engine(self, engine or EngineOptions())

    def _init_fn(self, key: jax.Array) -> tuple[Learner, jax.Array]:
        """The learner with every pair at ``tau = 0`` and each pair's burn-in windows."""
        k_theta, k_est = jax.random.split(key)
        theta = self.task.init_theta(k_theta)
        state, hold = self.estimator.start(k_est, theta)
        return Learner(theta, self.optimizer.init(theta), state), hold

    def init(self) -> tuple[Learner, Counters]:
        """Fresh learner (burn-in included) and counters at iteration 0.

        The burn-in is one call of the update program (:meth:`_chunk_fn` with ``hold``)
        through the engine, so it runs wherever the engine runs windows.
        """
        start = time.perf_counter()
        learner, hold = self._init(jax.random.PRNGKey(self.config.seed))
        hold = np.asarray(hold)
        learner = self.engine.place(learner)
        windows = int(hold.max())
        if windows:
            learner = self.engine.run_chunk(learner, jnp.asarray(windows, jnp.int32), hold)[0]
        state = self.engine.host(learner).estimator_state
        counters = Counters(total_env_steps=self.estimator.burn_in_env_steps(state))
        jax.block_until_ready((learner.theta, learner.opt_state))
        counters.wall_time_s = time.perf_counter() - start
        return learner, counters

    def place(self, learner: Learner) -> Learner:
        """Spread the particles over every local device (theta and optimiser replicated).

        With ``D > 1`` devices and ``D`` dividing ``N``, every estimator-state leaf is
        sharded along its particle axis, so each compiled window runs ``N / D`` pairs per
        device and XLA sums the gradient across devices. Otherwise nothing moves.
        """
        devices = jax.local_devices()
        n = self.config.num_particles
        if len(devices) < 2 or n % len(devices):
            return learner
        mesh = Mesh(np.asarray(devices), ("particles",))

        def shard(x, axis):
            if jnp.ndim(x) <= axis or jnp.shape(x)[axis] != n:
                return jax.device_put(x, NamedSharding(mesh, PartitionSpec()))
            spec = [None] * jnp.ndim(x)
            spec[axis] = "particles"
            return jax.device_put(x, NamedSharding(mesh, PartitionSpec(*spec)))

        theta, opt_state = jax.device_put((learner.theta, learner.opt_state), NamedSharding(mesh, PartitionSpec()))
        return Learner(theta, opt_state, map_particle_axis(shard, learner.estimator_state))

    def check(self) -> None:
        """Trace (without running) the update, so errors of the task or estimator that
        show only when the update is traced surface before a run writes any file."""
        jax.eval_shape(self._chunk_fn, self.learner_template(), jnp.asarray(1, jnp.int32), self.no_hold)

    def learner_template(self) -> Learner:
        """Shapes and dtypes of a learner, without running the burn-in."""
        return jax.eval_shape(self._init_fn, jax.random.PRNGKey(self.config.seed))[0]

    def _update_fn(self, learner: Learner, window: jax.Array, hold: jax.Array, estimate=None
                   ) -> tuple[Learner, UpdateInfo]:
        """Window ``window`` of a call with burn-in windows ``hold`` ``[N]``: a burn-in
        window while ``window < max(hold)`` (:func:`nres.particles.burn_in_select`, no
        update applied), else one update. ``estimate(state, theta, burn_in) -> (grad,
        state, info)`` defaults to the estimator's own (an engine passes one that shards
        the window)."""
        estimate = estimate or self.estimator.estimate
        burning = window < jnp.max(hold)
        old = learner.estimator_state
        grad, est_state, info = estimate(old, learner.theta, burning)
        est_state = burn_in_select(est_state, old, hold, window, self.estimator.unroll_length, burning)
        theta, opt_state, update_info = self._apply_fn(learner.theta, learner.opt_state, grad, info, burning)
        return Learner(theta, opt_state, est_state), update_info

    def _apply_fn(self, theta: PyTree, opt_state, grad: PyTree, info, burn_in=False) -> tuple[PyTree, Any, UpdateInfo]:
        """The optax step and the non-finite guard (``theta``, ``opt_state`` kept unless
        applied; never applied in a burn-in window)."""
        updates, new_opt_state = self.optimizer.update(grad, opt_state, theta)
        new_theta = optax.apply_updates(theta, updates)
        grad_norm = tree_norm(grad)
        # Applied only if everything it touches stays finite: losses, gradient (and its
        # norm, which can overflow on its own), the new theta and the new optimiser state.
        applied = (~jnp.asarray(burn_in) & (info.num_nonfinite == 0) & tree_all_finite(grad)
                   & jnp.isfinite(grad_norm) & tree_all_finite(new_theta) & tree_all_finite(new_opt_state))
        keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(applied, n, o), new, old)
        return (keep(new_theta, theta), keep(new_opt_state, opt_state),
                UpdateInfo(info.train_loss, grad_norm, applied, info.num_nonfinite))

    def _chunk_fn(self, learner: Learner, count: jax.Array, hold: jax.Array, estimate=None
                  ) -> tuple[Learner, UpdateInfo, PyTree]:
        """``count`` (dynamic) windows in one call: the first ``max(hold)`` are burn-in
        windows (``hold`` ``[N]``, zeros in training), the rest updates (``estimate`` as
        in :meth:`_update_fn`).

        Returns the learner and, per update, its :class:`UpdateInfo` and ``theta``, in
        buffers with a leading ``[max_chunk]`` axis (rows past ``count`` are unused; a
        burn-in call may run more than ``max_chunk`` windows and its rows are unused).
        """
        theta_buffer = jax.tree_util.tree_map(lambda x: jnp.zeros((self.max_chunk,) + x.shape, x.dtype),
                                              learner.theta)
        info_buffer = UpdateInfo(*(jnp.zeros((self.max_chunk,), dtype) for dtype in
                                   (jnp.float32, jnp.float32, bool, jnp.int32)))

        def body(i, carry):
            learner, infos, thetas = carry
            learner, info = self._update_fn(learner, i, hold, estimate)
            row = jnp.minimum(i, self.max_chunk - 1)
            write = lambda buffer, value: buffer.at[row].set(value)
            infos = jax.tree_util.tree_map(write, infos, UpdateInfo(*(jnp.asarray(v) for v in info)))
            return learner, infos, jax.tree_util.tree_map(write, thetas, learner.theta)

        return jax.lax.fori_loop(0, count, body, (learner, info_buffer, theta_buffer))

    def update_many(self, learner: Learner, counters: Counters, count: int) -> tuple[Learner, list]:
        """``count`` updates in one compiled call (``1 <= count <= max_chunk``).

        Returns the new learner and one ``(counters, info, theta)`` per update, on the host.
        Wall time is measured per call and spread evenly over its updates.
        """
        if not 1 <= count <= self.max_chunk:
            raise ValueError(f"count must be in [1, {self.max_chunk}], got {count}")
        start = time.perf_counter()
        learner, infos, thetas = self.engine.run_chunk(learner, jnp.asarray(count, jnp.int32), self.no_hold)
        infos, thetas = jax.device_get((infos, thetas))
        elapsed = time.perf_counter() - start
        infos = UpdateInfo(*(field[:count].tolist() for field in infos))  # Python scalars, cheap per row
        leaves, treedef = jax.tree_util.tree_flatten(thetas)
        steps = []
        for k in range(count):
            info = UpdateInfo(*(field[k] for field in infos))
            applied = bool(info.applied)
            counters = dataclasses.replace(
                counters,
                iteration=counters.iteration + 1,
                total_env_steps=counters.total_env_steps + self.estimator.env_steps_per_update,
                sequential_steps=counters.sequential_steps + self.estimator.sequential_steps_per_update,
                wall_time_s=counters.wall_time_s + elapsed / count,
                consecutive_nonfinite=0 if applied else counters.consecutive_nonfinite + 1,
                nonfinite_windows=counters.nonfinite_windows + (0 if applied else 1),
            )
            steps.append((counters, info, jax.tree_util.tree_unflatten(treedef, [x[k] for x in leaves])))
        return learner, steps

    def update(self, learner: Learner, counters: Counters) -> tuple[Learner, Counters, UpdateInfo]:
        """One update; returns new learner, new counters and host-side info."""
        learner, [(counters, info, _)] = self.update_many(learner, counters, 1)
        return learner, counters, info

    def evaluate(self, theta: PyTree) -> dict[str, float]:
        """The task's held-out metrics of an unperturbed ``theta``.

        Tasks without an ``evaluate`` report ``test_loss``: the mean per-step loss of
        ``EVAL_EPISODES`` unperturbed episodes on fixed episode keys the training never uses.
        """
        if not hasattr(self, "_evaluate"):
            evaluate = self.task.evaluate
            if evaluate is None:
                def evaluate(theta, key):
                    keys = jax.random.split(key, EVAL_EPISODES)
                    losses = jax.vmap(lambda k: episode_losses(self.task, theta, k))(keys)
                    return {"test_loss": jnp.mean(losses)}
            self._evaluate = jax.jit(evaluate)
        metrics = self._evaluate(theta, jax.random.PRNGKey(self.config.seed + 1))
        return {k: float(v) for k, v in jax.device_get(metrics).items()}

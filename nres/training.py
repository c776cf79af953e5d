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
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding
import optax

from nres.compilation_cache import Program
from nres.config import ConfigError, TrainConfig, config_to_dict
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


def seed_key(seed: int):
    """``jax.random.PRNGKey(seed)``, built on the host when that is exact (no program runs
    for it): the default threefry key of a seed in ``[0, 2**32)`` is ``[0, seed]``."""
    if jax.config.jax_default_prng_impl != "threefry2x32" or not 0 <= seed < 2**32:
        return jax.random.PRNGKey(seed)
    return np.asarray([0, seed], np.uint32)


MAX_UPDATES_PER_CALL = 1000
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


class PendingChunk(NamedTuple):
    """A launched chunk of updates (:meth:`Trainer.launch`): device arrays, possibly still
    being computed, as ``Trainer._chunk_fn`` returns them, its update count and launch time."""

    learner: Learner
    infos: UpdateInfo
    thetas: PyTree
    count: int
    started: float


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


class Trainer:
    """Builds task, estimator and optimiser from a config; owns the update, which an
    engine (:mod:`nres.engines`: local, multi-process, Ray) executes."""

    def __init__(self, config: TrainConfig, task: Task | None = None, engine: EngineOptions | None = None):
        self.config = config
        self.task = task if task is not None else build_task(config)
        self.estimator = build_estimator(config, self.task)
        self.optimizer = make_optimizer(config)
        self._own_task = task is None
        self._init = Program(self._init_fn, lambda: self.program_identity("init"))
        size = max(1, theta_size(self.task))
        # Updates per compiled call: bounded so the per-update theta buffer stays <= 64 MiB.
        self.max_chunk = int(min(MAX_UPDATES_PER_CALL, max(1, 2**24 // size)))
        self.no_hold = np.zeros((config.num_particles,), np.int32)  # training: no pair burns in
        self.engine = make_engine(self, engine or EngineOptions())

    def program_identity(self, name: str) -> dict | None:
        """What determines this trainer's compiled program ``name`` beside nres's code (for
        :class:`nres.compilation_cache.Program`): the resolved config, the estimator's
        settings, and the task's data where it reads files. None (never stored) for a task
        built outside the config or from a module of your own, whose code nres cannot
        fingerprint."""
        if not self._own_task or ":" in self.config.task:
            return None
        entry = get_task_entry(self.config.task)
        data = entry.fingerprint(self.config.task_options) if entry.fingerprint else None
        estimator = {f.name: repr(getattr(self.estimator, f.name)) for f in dataclasses.fields(self.estimator)
                     if f.name != "task"}
        return {"program": name, "config": config_to_dict(self.config), "estimator": estimator, "data": data}

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
        key = seed_key(self.config.seed)
        # Both programs build at once: the init compiles in the background while the
        # update program is traced, which then compiles while the init runs.
        self._init.prepare(key)
        self.engine.prepare(self.placed_template())
        learner, hold = self._init(key)
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

    def place(self, learner: Learner) -> Learner:
        """Spread the particles over every local device (theta and optimiser replicated).

        With ``D > 1`` devices and ``D`` dividing ``N``, every estimator-state leaf is
        sharded along its particle axis, so each compiled window runs ``N / D`` pairs per
        device and XLA sums the gradient across devices. Otherwise nothing moves.
        """
        shardings = self.placement(learner)
        return learner if shardings is None else jax.device_put(learner, shardings)

    def placement(self, learner: Learner) -> Learner | None:
        """The sharding of every leaf of ``learner`` (arrays or shapes) as :meth:`place`
        puts it, or None when nothing moves (one device, or ``D`` not dividing ``N``)."""
        devices = jax.local_devices()
        n = self.config.num_particles
        if len(devices) < 2 or n % len(devices):
            return None
        mesh = Mesh(np.asarray(devices), ("particles",))

        def shard(x, axis):
            if len(x.shape) <= axis or x.shape[axis] != n:
                return NamedSharding(mesh, PartitionSpec())
            spec = [None] * len(x.shape)
            spec[axis] = "particles"
            return NamedSharding(mesh, PartitionSpec(*spec))

        replicated = jax.tree_util.tree_map(lambda _: NamedSharding(mesh, PartitionSpec()),
                                            (learner.theta, learner.opt_state))
        return Learner(*replicated, map_particle_axis(shard, learner.estimator_state))

    def placed_template(self) -> Learner:
        """:meth:`learner_template` with the shardings of a fresh learner after :meth:`place`."""
        template = self.learner_template()
        shardings = self.placement(template)
        if shardings is None:  # where a compiled program leaves its results
            shardings = jax.tree_util.tree_map(lambda _: SingleDeviceSharding(jax.local_devices()[0]), template)
        return jax.tree_util.tree_map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s, weak_type=x.weak_type), template, shardings)

    def check(self) -> None:
        """Trace (without running) the update, so errors of the task or estimator that
        show only when the update is traced surface before a run writes any file."""
        jax.eval_shape(self._chunk_fn, self.learner_template(), jnp.asarray(1, jnp.int32), self.no_hold)

    def learner_template(self) -> Learner:
        """Shapes and dtypes of a learner, without running the burn-in."""
        return jax.eval_shape(self._init_fn, seed_key(self.config.seed))[0]

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

    def launch(self, learner: Learner, count: int) -> "PendingChunk":
        """Start ``count`` updates in one compiled call (``1 <= count <= max_chunk``) and
        return at once: the device computes while the host formats the previous chunk
        (collect it with :meth:`collect`)."""
        if not 1 <= count <= self.max_chunk:
            raise ValueError(f"count must be in [1, {self.max_chunk}], got {count}")
        started = time.perf_counter()
        learner, infos, thetas = self.engine.run_chunk(learner, np.int32(count), self.no_hold)
        return PendingChunk(learner, infos, thetas, count, started)

    def collect(self, chunk: "PendingChunk", counters: Counters, since: float | None = None
                ) -> tuple[Learner, "Steps"]:
        """Wait for a launched chunk; returns its learner and its :class:`Steps` on the host.

        ``counters`` are those before the chunk. Its wall time runs from its launch (or
        from ``since``, when the chunk waited behind an earlier one) to its results, and
        is spread evenly over its updates.
        """
        count = chunk.count
        infos, thetas = jax.device_get((chunk.infos, chunk.thetas))
        elapsed = time.perf_counter() - max(chunk.started, since or 0.0)
        info = UpdateInfo(*(np.asarray(field[:count]) for field in infos))
        bad = ~info.applied
        # consecutive non-finite windows: the run before this chunk, reset by every applied update
        last_good = np.maximum.accumulate(np.where(bad, -1, np.arange(count)))
        streak = np.where(last_good < 0, counters.consecutive_nonfinite + np.arange(1, count + 1),
                          np.arange(count) - last_good)
        steps_done = np.arange(1, count + 1)
        iteration = counters.iteration + steps_done
        wall_time_s = counters.wall_time_s + elapsed * steps_done / count
        total_env_steps = counters.total_env_steps + self.estimator.env_steps_per_update * steps_done
        sequential_steps = counters.sequential_steps + self.estimator.sequential_steps_per_update * steps_done
        after = Counters(int(iteration[-1]), int(total_env_steps[-1]), int(sequential_steps[-1]),
                         float(wall_time_s[-1]), int(streak[-1]), counters.nonfinite_windows + int(np.sum(bad)))
        steps = Steps(iteration, wall_time_s, total_env_steps, sequential_steps, streak, info,
                      jax.tree_util.tree_map(lambda x: x[:count], thetas), after)
        return chunk.learner, steps

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
        metrics = self._evaluate(theta, seed_key(self.config.seed + 1))
        return {k: float(v) for k, v in jax.device_get(metrics).items()}

"""Learning the parameters of the chaotic Lorenz system (SPEC section 6).

``theta = (log a, log r)`` (shape ``[2]``); the inner state is ``s_t = (x, y, z)``
(shape ``[3]``), advanced by Euler steps of size ``dt``::

    x += a (y - x) dt;   y += (x (r - z) - y) dt;   z += (x y - b z) dt,   b = 8/3.

The per-step loss is ``L_t = (z_t - z_t^gt)^2`` against the ground-truth trajectory
from the same initial state under ``a = 10, r = 28``. Training always starts from
``(1.2, 1.3, 1.6)``; the test set perturbs that start by ``N(0, 1)`` per coordinate
and evaluates the unperturbed ``theta`` over the whole horizon.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from nres.task import Task
from nres.tasks import TaskEntry

B = 8.0 / 3.0
TRUE_THETA = (math.log(10.0), math.log(28.0))


@dataclasses.dataclass(frozen=True)
class LorenzConfig:
    """Options of the Lorenz task.

    Attributes:
      horizon: ``T``, Euler steps per episode.
      dt: Euler step size (time units).
      init_log_a, init_log_r: the starting ``theta``.
      num_test_starts: perturbed initial states in the test set.
      test_seed: seed of the test perturbations (fixed so evaluations compare).
    """

    horizon: int = 2000
    dt: float = 0.005
    init_log_a: float = 3.116
    init_log_r: float = 3.7
    num_test_starts: int = 10000
    test_seed: int = 0

    def __post_init__(self):
        if self.horizon <= 0:
            raise ValueError(f"lorenz horizon must be positive, got {self.horizon}")
        if not self.dt > 0:
            raise ValueError(f"lorenz dt must be positive, got {self.dt}")
        if self.num_test_starts <= 0:
            raise ValueError(f"lorenz num_test_starts must be positive, got {self.num_test_starts}")


INITIAL_STATE = (1.2, 1.3, 1.6)


def lorenz_step(theta: jax.Array, state: jax.Array, dt: float) -> jax.Array:
    """One Euler step of ``(x, y, z)`` under ``theta = (log a, log r)``."""
    a, r = jnp.exp(theta[0]), jnp.exp(theta[1])
    x, y, z = state[0], state[1], state[2]
    return jnp.stack([x + a * (y - x) * dt, y + (x * (r - z) - y) * dt, z + (x * y - B * z) * dt])


def trajectory(theta: jax.Array, state: jax.Array, horizon: int, dt: float) -> jax.Array:
    """States ``s_1 .. s_T`` (shape ``[T, 3]``) from ``s_0 = state``."""

    def body(s, _):
        s = lorenz_step(theta, s, dt)
        return s, s

    return jax.lax.scan(body, state, None, length=horizon)[1]


def test_loss(theta: jax.Array, starts: jax.Array, horizon: int, dt: float) -> jax.Array:
    """Mean over starts ``[M, 3]`` of ``(1/T) sum_t (z_t - z_t^gt)^2`` for unperturbed ``theta``."""
    true_theta = jnp.asarray(TRUE_THETA, jnp.float32)

    def one(start):
        z = trajectory(theta, start, horizon, dt)[:, 2]
        z_gt = trajectory(true_theta, start, horizon, dt)[:, 2]
        return jnp.mean((z - z_gt) ** 2)

    return jnp.mean(jax.lax.map(one, starts, batch_size=1024))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _ground_truth_z(theta: jax.Array, start: jax.Array, horizon: int, dt: float) -> jax.Array:
    """``z_t^gt`` ``[T]`` from ``start`` under ``theta`` (arguments, not constants: XLA would
    fold constants with its compile-time evaluator, whose arithmetic differs in the last bits)."""
    return trajectory(theta, start, horizon, dt)[:, 2]


def make_lorenz_task(config: LorenzConfig = LorenzConfig()) -> Task:
    """The task; the ground truth ``z_t^gt`` ``[T]`` is computed when first traced and the
    test set when first evaluated, so building the task compiles nothing.

    The ground truth is the task's data: ``sample_batch(key, t) = z_t^gt`` and
    ``window_batches`` slices a whole window of it at once.
    """
    dt, horizon = config.dt, config.horizon
    initial = INITIAL_STATE

    @functools.cache
    def z_truth() -> jax.Array:
        # A constant of the traced programs, computed by one compiled program (called
        # directly, so it runs even when first needed while another function is traced).
        theta, start = np.asarray(TRUE_THETA, np.float32), np.asarray(initial, np.float32)
        return _ground_truth_z.lower(theta, start, horizon, dt).compile()(theta, start)

    @functools.cache
    def test_starts() -> jax.Array:
        with jax.ensure_compile_time_eval():
            start = jnp.asarray(initial, jnp.float32)
            return start + jax.random.normal(jax.random.PRNGKey(config.test_seed), (config.num_test_starts, 3))

    def init_theta(key):
        del key
        return jnp.asarray([config.init_log_a, config.init_log_r], jnp.float32)

    def init_state(key):
        del key
        return jnp.asarray(initial, jnp.float32)

    def step(theta, state, t, key, batch):
        del t, key, batch
        return lorenz_step(theta, state, dt)

    def loss(theta, state, t, z_gt):
        del theta
        if z_gt is None:  # called without the task's data (e.g. a hand-written loop)
            z_gt = z_truth()[t]
        return (state[2] - z_gt) ** 2

    def sample_batch(key, t):
        del key
        return z_truth()[t]

    def window_batches(keys, t0, length):
        del keys
        return jax.lax.dynamic_slice(z_truth(), (t0,), (length,))

    def evaluate(theta, key):
        del key
        return {"test_loss": test_loss(theta, test_starts(), horizon, dt)}

    return Task(init_theta, init_state, step, loss, horizon, sample_batch=sample_batch, evaluate=evaluate,
                name="lorenz", window_batches=window_batches)


ENTRY = TaskEntry(
    name="lorenz",
    config_cls=LorenzConfig,
    build=make_lorenz_task,
    training_defaults={
        "num_particles": 200,
        "unroll_length": 100,
        "sigma": 0.04,
        "optimizer": "sgd",
        "lr": 1e-5,
        "iterations": 5000,
        "eval_every": 250,
        "compile_for": "start",  # the same bits as "steps" (tests/test_compiler.py), half the compile
    },
    description="Lorenz-system parameter learning, theta = (log a, log r)",
    metrics=("test_loss",),
)

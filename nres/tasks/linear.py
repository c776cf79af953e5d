"""A linear-quadratic task whose exact gradient and estimator variances are known.

Inner state ``s`` (shape ``[state_dim]``), ``theta`` (shape ``[theta_dim]``)::

    s_{t+1} = A s_t + B theta + c,      L_{t+1} = 0.5 * ||s_{t+1} - target_{t+1}||^2.

``s_t`` is affine in ``theta`` and in every noise block, so each ``L_t`` is quadratic:
the Gaussian-smoothed objective has exactly the gradient ``jax.grad`` gives, and the
antithetic differences are exactly linear in the noise, which makes the first-order
variance formula of SPEC section 5 exact. It is the library's test bed and the
smallest complete example of a task.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from nres.particles import episode_losses
from nres.task import Task
from nres.tasks import TaskEntry


@dataclasses.dataclass(frozen=True)
class LinearConfig:
    """Options of the linear-quadratic task.

    Attributes:
      horizon: ``T``.
      state_dim, theta_dim: sizes of ``s`` and ``theta``.
      spectral_radius: of ``A``; below 1 keeps the system stable.
      problem_seed: draws ``A``, ``B``, ``c``, the targets and the initial ``theta``.
    """

    horizon: int = 16
    state_dim: int = 3
    theta_dim: int = 3
    spectral_radius: float = 0.9
    problem_seed: int = 0


def make_linear_task(config: LinearConfig = LinearConfig()) -> Task:
    k_a, k_b, k_c, k_target, k_theta = jax.random.split(jax.random.PRNGKey(config.problem_seed), 5)
    n, d = config.state_dim, config.theta_dim
    a = jax.random.normal(k_a, (n, n))
    a = config.spectral_radius * a / jnp.max(jnp.abs(jnp.linalg.eigvals(a)))
    b = jax.random.normal(k_b, (n, d)) / jnp.sqrt(d)
    c = 0.1 * jax.random.normal(k_c, (n,))
    targets = jax.random.normal(k_target, (config.horizon, n))
    theta0 = jax.random.normal(k_theta, (d,))

    def step(theta, state, t, key, batch):
        del t, key, batch
        return a @ state + b @ theta + c

    def loss(theta, state, t, batch):
        del theta, batch
        return 0.5 * jnp.sum((state - targets[t]) ** 2)

    def evaluate(theta, key):
        del key
        return {"test_loss": horizon_loss(task, theta)}

    task = Task(
        init_theta=lambda key: theta0,
        init_state=lambda key: jnp.zeros((n,)),
        step=step,
        loss=loss,
        horizon=config.horizon,
        evaluate=evaluate,
        name="linear",
    )
    return task


def horizon_loss(task: Task, theta, key=None) -> jax.Array:
    """``L(theta) = (1/T) sum_t L_t`` of one unperturbed episode (differentiable)."""
    return jnp.mean(episode_losses(task, theta, jax.random.PRNGKey(0) if key is None else key))


ENTRY = TaskEntry(
    name="linear",
    config_cls=LinearConfig,
    build=make_linear_task,
    training_defaults={"num_particles": 8, "unroll_length": 4, "sigma": 0.1, "optimizer": "sgd", "lr": 0.05,
                       "iterations": 200},
    description="linear dynamics with a quadratic loss (exact gradients; tests and examples)",
    metrics=("test_loss",),
)

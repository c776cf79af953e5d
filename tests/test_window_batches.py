"""Task.window_batches: a window's data drawn once per particle gives exactly the
per-step results, for a task whose data uses its keys and for Lorenz's ground truth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nres
from nres.particles import batch_key, init_particles, window_batches
from nres.task import Task, validate_task
from nres.tasks.lorenz import LorenzConfig, make_lorenz_task


def _keyed_data_task(with_window: bool) -> Task:
    """Data drawn from the batch key and the step index: any mix-up of keys or steps shows."""

    def sample_batch(key, t):
        return jax.random.uniform(key, (2,)) + t

    def windows(keys, t0, length):
        return jax.vmap(sample_batch)(keys, t0 + jnp.arange(length))

    return Task(
        init_theta=lambda k: jnp.asarray([0.3, -0.2]),
        init_state=lambda k: jax.random.normal(k, (2,)),
        step=lambda theta, s, t, k, batch: 0.9 * s + theta * batch + 0.1 * jax.random.normal(k, s.shape),
        loss=lambda theta, s, t, batch: jnp.sum((s - batch) ** 2),
        horizon=12,
        sample_batch=sample_batch,
        window_batches=windows if with_window else None,
    )


def _leaves_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_window_batches_are_the_per_step_batches():
    task = _keyed_data_task(with_window=True)
    particles = init_particles(task, jax.random.PRNGKey(0), 5)._replace(tau=jnp.asarray([0, 3, 6, 9, 3]))
    got = window_batches(task, particles, 3)  # [W, N, 2]
    for s in range(3):
        for i in range(5):
            t = particles.tau[i] + s
            np.testing.assert_array_equal(got[s, i], task.sample_batch(batch_key(particles.episode_key[i], t), t))
    assert window_batches(task._replace(window_batches=None), particles, 3) is None


@pytest.mark.parametrize("name", ["nres", "pes", "tes"])
def test_estimates_with_and_without_the_hook_are_identical(name):
    with_hook, without = _keyed_data_task(True), _keyed_data_task(False)
    theta = with_hook.init_theta(None)
    estimators = [nres.make_estimator(name, task, num_particles=4, unroll_length=3, sigma=0.1)
                  for task in (with_hook, without)]
    steps = [jax.jit(est.estimate) for est in estimators]
    state = estimators[0].init(jax.random.PRNGKey(1), theta)
    _leaves_equal(state, estimators[1].init(jax.random.PRNGKey(1), theta))
    for _ in range(6):  # crosses episode ends (T = 12, W = 3)
        fast, slow = steps[0](state, theta), steps[1](state, theta)
        _leaves_equal(fast, slow)
        state = fast[1]


def test_lorenz_window_path_equals_the_plain_lookup():
    """Lorenz with its window hook, without it, and with no data at all (the loss then
    looks the ground truth up itself, as before the hook existed) agree bit for bit."""
    task = make_lorenz_task(LorenzConfig(horizon=60, num_test_starts=4))
    variants = [task, task._replace(window_batches=None), task._replace(window_batches=None, sample_batch=None)]
    theta = task.init_theta(None)
    estimators = [nres.nres(t, num_particles=6, unroll_length=10, sigma=0.04) for t in variants]
    state = estimators[0].init(jax.random.PRNGKey(2), theta)
    steps = [jax.jit(est.estimate) for est in estimators]
    for _ in range(4):
        results = [step(state, theta) for step in steps]
        _leaves_equal(results[0], results[1])
        _leaves_equal(results[0], results[2])
        state = results[0][1]


def test_window_batches_needs_sample_batch():
    task = _keyed_data_task(True)._replace(sample_batch=None)
    with pytest.raises(TypeError, match="window_batches"):
        validate_task(task)

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nres.particles import episode_losses
from nres.tasks.linear import LinearConfig, horizon_loss, make_linear_task


def test_loss_is_quadratic_in_theta(linear_task, linear_theta):
    """A constant Hessian: the property that makes ES gradients and variances exact here."""
    hessian = jax.hessian(lambda th: horizon_loss(linear_task, th))
    h1, h2 = hessian(linear_theta), hessian(linear_theta + 3.0)
    np.testing.assert_allclose(h1, h2, rtol=1e-4, atol=1e-5)
    assert np.all(np.linalg.eigvalsh(np.asarray(h1)) >= -1e-5)


def test_horizon_loss_is_the_mean_episode_loss(linear_task, linear_theta):
    losses = episode_losses(linear_task, linear_theta, jax.random.PRNGKey(0))
    assert losses.shape == (16,)
    assert float(horizon_loss(linear_task, linear_theta)) == pytest.approx(float(jnp.mean(losses)))


def test_problem_seed_and_sizes():
    a = make_linear_task(LinearConfig(problem_seed=1, state_dim=2, theta_dim=5))
    b = make_linear_task(LinearConfig(problem_seed=2, state_dim=2, theta_dim=5))
    assert a.init_theta(None).shape == (5,)
    assert not np.allclose(a.init_theta(None), b.init_theta(None))

"""Shared fixtures: small tasks, built once per session."""

import jax
import pytest

from nres.tasks.linear import LinearConfig, make_linear_task


@pytest.fixture(scope="session")
def linear_task():
    """T = 16, d = 3, n = 3 linear-quadratic task (exact gradients and variances)."""
    return make_linear_task(LinearConfig(horizon=16))


@pytest.fixture(scope="session")
def linear_theta(linear_task):
    return linear_task.init_theta(jax.random.PRNGKey(0))

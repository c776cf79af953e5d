"""Shared fixtures: small tasks, built once per session.

Every test session points the persistent compilation cache at one fresh temporary
directory (``NRES_COMPILATION_CACHE``), shared by the xdist workers and the ``nres``
subprocesses they start, so tests never write to ``~/.cache`` and repeated
subprocess runs of one configuration skip compilation.
"""

import os
import shutil
import tempfile

import jax
import pytest

from nres.tasks.linear import LinearConfig, make_linear_task

_CACHE_OWNER = "_NRES_TEST_CACHE_OWNER"


def pytest_configure(config):
    # The xdist controller (or a plain session) creates the directory before the
    # workers start; the workers inherit the environment.
    if not hasattr(config, "workerinput") and _CACHE_OWNER not in os.environ:
        os.environ["NRES_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="nres-test-jax-cache-")
        os.environ[_CACHE_OWNER] = str(os.getpid())


def pytest_unconfigure(config):
    if os.environ.get(_CACHE_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ["NRES_COMPILATION_CACHE"], ignore_errors=True)


@pytest.fixture(scope="session")
def linear_task():
    """T = 16, d = 3, n = 3 linear-quadratic task (exact gradients and variances)."""
    return make_linear_task(LinearConfig(horizon=16))


@pytest.fixture(scope="session")
def linear_theta(linear_task):
    return linear_task.init_theta(jax.random.PRNGKey(0))

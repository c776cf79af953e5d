"""Held-out evaluation of an unperturbed ``theta``."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from nres.particles import episode_losses
from nres.task import Task
from nres.tree import PyTree

EVAL_EPISODES = 8  # held-out episodes of the default evaluation (tasks without ``evaluate``)


def make_evaluator(task: Task, key) -> Callable[..., dict[str, float]]:
    """``evaluate(theta, shared=None) -> {metric: float}``: the task's own
    ``evaluate(theta, key)`` (``evaluate(theta, key, shared)`` for a task with shared
    state, :attr:`nres.task.Task.shared`: the learner's current one), or
    (tasks without one) ``test_loss``, the mean per-step loss of :data:`EVAL_EPISODES`
    unperturbed episodes on episode keys from ``key`` (one the training never uses).
    Compiled once, on the first call."""
    evaluate = task.evaluate
    if evaluate is None:
        def evaluate(theta, key):
            keys = jax.random.split(key, EVAL_EPISODES)
            losses = jax.vmap(lambda k: episode_losses(task, theta, k))(keys)
            return {"test_loss": jnp.mean(losses)}
    compiled = jax.jit(evaluate)

    def metrics(theta: PyTree, shared: PyTree = None) -> dict[str, float]:
        args = (theta, key) if task.shared is None else (theta, key, shared)
        return {k: float(v) for k, v in jax.device_get(compiled(*args)).items()}

    return metrics

"""A task's shared state (:class:`nres.task.Shared`) around one window of an estimator.

The state ``S`` (running observation statistics, say) lives in
:attr:`nres.step.Learner.shared`, beside theta: it is neither perturbed nor trained, and
it is checkpointed with the learner. Each update (:func:`nres.step.make_step`):

1. :func:`install` writes ``S`` into every trajectory's inner state (all ``M`` members
   of all ``N`` pairs), so every member of every pair reads the same ``S`` for the whole
   window -- the antithetic differences see one ``S``, the estimate stays that of ``theta``;
2. the estimator runs its window, unchanged (``S`` travels in the inner states, so the
   sharded, per-shard and remote windows need nothing new);
3. :func:`update` computes the next ``S`` from the states the window ended in (members
   that ended early excluded) -- in a training window only, never in a burn-in window.

Windows must end episodes only at their ends (window-aligned ES,
:func:`check_estimator`): a fresh episode's initial state holds the task's default
``S``, which :func:`install` replaces before the next window.
"""

from __future__ import annotations

import jax

from nres.particles import Particles, live_members
from nres.task import Task
from nres.tree import PyTree

_is_particles = lambda node: isinstance(node, Particles)


def check_estimator(task: Task, estimator) -> None:
    """Raise ``ValueError`` when ``task`` has shared state and ``estimator``'s windows may
    start a fresh episode mid-window (anything but window-aligned ES)."""
    if task.shared is not None and not getattr(estimator, "window_aligned", False):
        raise ValueError(
            f"task {task.name!r} keeps shared state (e.g. --obs-norm running), which needs an ES estimator whose "
            f"episodes end only at window ends (W dividing T; PES/GPES with K a multiple of W); "
            f"{getattr(estimator, 'name', type(estimator).__name__)!r} with W={estimator.unroll_length} and "
            f"T={task.horizon} is not one")


def install(task: Task, estimator_state: PyTree, shared: PyTree) -> PyTree:
    """``estimator_state`` with ``shared`` installed in every inner state ``[M, N, ...]``."""
    one = lambda state: task.shared.install(shared, state)
    put = lambda p: p._replace(inner=jax.vmap(jax.vmap(one))(p.inner))
    return jax.tree_util.tree_map(lambda n: put(n) if _is_particles(n) else n, estimator_state,
                                  is_leaf=_is_particles)


def update(task: Task, shared: PyTree, estimator_state: PyTree) -> PyTree:
    """``shared`` after a window, from the inner states of every :class:`Particles` in
    ``estimator_state`` (members that have ended early excluded)."""
    for node in jax.tree_util.tree_leaves(estimator_state, is_leaf=_is_particles):
        if _is_particles(node):
            shared = task.shared.update(shared, node.inner, live_members(task, node.inner))
    return shared

"""One training step as pure functions over ``Learner = (theta, opt_state, estimator_state)``
(plus ``shared``, the task's shared state, for a task with one: :mod:`nres.shared`).

:func:`make_step` turns a task, an estimator and an optax optimiser into a
:class:`Step`:

* ``init(key, hyper=None) -> (learner, hold)``: theta, optimiser state and every pair at
  ``tau = 0``, and each pair's burn-in windows ``hold`` ``[N]`` (int32). ``hyper``: the
  optimiser's hyperparameters as data (:func:`nres.optimizer.hyperparameters`; None: the
  values the optimiser was made with), so one compiled ``init`` serves every value.
* ``update(learner, window, hold, estimate=None) -> (learner, UpdateInfo)``: window
  ``window`` of a call whose first ``max(hold)`` windows are burn-in windows (they
  advance only the pairs still burning in and apply no update), else one update.
* ``chunk(learner, count, hold, estimate=None) -> (learner, infos, thetas)``: ``count``
  (dynamic) windows in one ``fori_loop``; per update its :class:`UpdateInfo` as a row of
  ``infos`` uint32 ``[max_chunk, INFO_WORDS]`` (:func:`pack_info`; the host reads them
  with :func:`unpack_infos`) and its ``theta`` in a buffer with a leading ``[max_chunk]``
  axis (rows past ``count`` unused).
* ``apply(theta, opt_state, grad, info, burn_in) -> (theta, opt_state, UpdateInfo)``:
  the optax step behind the non-finite guard (:func:`guarded_apply`).

``estimate(state, theta, burn_in) -> (grad, state, info)`` defaults to the estimator's
own; an engine passes one that runs the window elsewhere (sharded, remote). Every
function is pure and can be compiled with ``jax.jit``; nothing here touches the host.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nres.optimizer import with_hyperparameters
from nres import shared as task_shared
from nres.particles import burn_in_select
from nres.threefry import split_keys
from nres.task import Task, theta_size
from nres.tree import PyTree, tree_all_finite, tree_norm

MAX_UPDATES_PER_CALL = 1000
THETA_BUFFER_SCALARS = 2**24  # the per-update theta buffer of a chunk stays <= 64 MiB (float32)


class Learner(NamedTuple):
    """Everything of a run that lives on device: theta, optimiser and estimator state, and
    the task's shared state (None unless the task has one, :attr:`nres.task.Task.shared`)."""

    theta: PyTree
    opt_state: Any
    estimator_state: Any
    shared: Any = None


class UpdateInfo(NamedTuple):
    """Per update: ``train_loss`` (float32), ``grad_norm`` (float32, global L2 norm),
    ``applied`` (bool: the guard let the update through), ``num_nonfinite`` (int32:
    pairs whose loss was non-finite in the window) and ``env_steps`` (int32: environment
    steps the window really took, fewer than ``env_steps_per_update`` when episodes end
    early)."""

    train_loss: jax.Array
    grad_norm: jax.Array
    applied: jax.Array
    num_nonfinite: jax.Array
    env_steps: jax.Array


class Step(NamedTuple):
    """The pure functions of one training step (see the module docstring)."""

    init: Callable
    update: Callable
    chunk: Callable
    apply: Callable
    max_chunk: int


def guarded_apply(optimizer: optax.GradientTransformation) -> Callable:
    """``apply(theta, opt_state, grad, info, burn_in=False) -> (theta, opt_state, UpdateInfo)``:
    the optax step, kept only if everything it touches stays finite (as
    ``optax.apply_if_finite``): the window's losses (``info.num_nonfinite == 0``), the
    gradient and its norm (which can overflow on its own), the new theta and the new
    optimiser state. Never applied in a burn-in window."""

    def apply(theta: PyTree, opt_state, grad: PyTree, info, burn_in=False):
        updates, new_opt_state = optimizer.update(grad, opt_state, theta)
        new_theta = optax.apply_updates(theta, updates)
        grad_norm = tree_norm(grad)
        # a finite norm means a finite gradient: a non-finite entry makes its square sum nan or inf
        applied = (~jnp.asarray(burn_in) & (info.num_nonfinite == 0) & jnp.isfinite(grad_norm)
                   & tree_all_finite(new_theta) & tree_all_finite(new_opt_state))
        keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(applied, n, o), new, old)
        return (keep(new_theta, theta), keep(new_opt_state, opt_state),
                UpdateInfo(info.train_loss, grad_norm, applied, info.num_nonfinite, info.env_steps))

    return apply


INFO_WORDS = len(UpdateInfo._fields)
_INFO_DTYPES = UpdateInfo(jnp.float32, jnp.float32, jnp.bool_, jnp.int32, jnp.int32)


def pack_info(info: UpdateInfo) -> jax.Array:
    """One update's :class:`UpdateInfo` as one row: uint32 ``[INFO_WORDS]``, each field's
    bits (``applied`` as 0 or 1). A chunk keeps its updates' infos as rows of one buffer,
    which XLA writes with one kernel per update instead of one per field."""
    def word(value, dtype):
        value = jnp.asarray(value, dtype)
        return value.astype(jnp.uint32) if dtype == jnp.bool_ else jax.lax.bitcast_convert_type(value, jnp.uint32)

    return jnp.stack([word(v, d) for v, d in zip(info, _INFO_DTYPES)])


def unpack_infos(rows) -> UpdateInfo:
    """The host's reading of rows of :func:`pack_info` (uint32 ``[n, INFO_WORDS]``): an
    :class:`UpdateInfo` of numpy ``[n]`` arrays, the same bits."""
    rows = np.asarray(rows, np.uint32)
    return UpdateInfo(*(rows[:, k] != 0 if dtype == jnp.bool_ else rows[:, k].view(np.dtype(dtype))
                        for k, dtype in enumerate(_INFO_DTYPES)))


def chunk_capacity(task: Task) -> int:
    """Updates per compiled call: at most :data:`MAX_UPDATES_PER_CALL`, fewer for a large
    theta so the chunk's theta buffer stays within :data:`THETA_BUFFER_SCALARS`."""
    return int(min(MAX_UPDATES_PER_CALL, max(1, THETA_BUFFER_SCALARS // max(1, theta_size(task)))))


def make_step(task: Task, estimator, optimizer: optax.GradientTransformation, max_chunk: int | None = None) -> Step:
    """The :class:`Step` of ``estimator`` on ``task`` under ``optimizer``."""
    max_chunk = chunk_capacity(task) if max_chunk is None else max_chunk
    apply = guarded_apply(optimizer)
    task_shared.check_estimator(task, estimator)

    def init(key: jax.Array, hyper: dict | None = None) -> tuple[Learner, jax.Array]:
        k_theta, k_est = split_keys(key, 2)
        theta = task.init_theta(k_theta)
        state, hold = estimator.start(k_est, theta)
        shared = None if task.shared is None else task.shared.init()
        return Learner(theta, with_hyperparameters(optimizer.init(theta), hyper), state, shared), hold

    def update(learner: Learner, window: jax.Array, hold: jax.Array, estimate=None) -> tuple[Learner, UpdateInfo]:
        estimate = estimate or estimator.estimate
        burning = window < jnp.max(hold)
        old, shared = learner.estimator_state, learner.shared
        if task.shared is not None:  # every member reads the same shared state all window
            old = task_shared.install(task, old, shared)
        grad, est_state, info = estimate(old, learner.theta, burning)
        est_state = burn_in_select(est_state, old, hold, window, estimator.unroll_length, burning)
        theta, opt_state, update_info = apply(learner.theta, learner.opt_state, grad, info, burning)
        if task.shared is not None:  # then it moves on, once per update (not in burn-in windows)
            shared = jax.lax.cond(burning, lambda: shared, lambda: task_shared.update(task, shared, est_state))
        return Learner(theta, opt_state, est_state, shared), update_info

    def chunk(learner: Learner, count: jax.Array, hold: jax.Array, estimate=None
              ) -> tuple[Learner, jax.Array, PyTree]:
        theta_buffer = jax.tree_util.tree_map(lambda x: jnp.zeros((max_chunk,) + x.shape, x.dtype), learner.theta)
        info_buffer = jnp.zeros((max_chunk, INFO_WORDS), jnp.uint32)

        def body(i, carry):
            learner, infos, thetas = carry
            learner, info = update(learner, i, hold, estimate)
            row = jnp.minimum(i, max_chunk - 1)
            infos = infos.at[row].set(pack_info(info))
            return learner, infos, jax.tree_util.tree_map(lambda b, v: b.at[row].set(v), thetas, learner.theta)

        return jax.lax.fori_loop(0, count, body, (learner, info_buffer, theta_buffer))

    return Step(init, update, chunk, apply, max_chunk)

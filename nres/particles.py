"""A population of ``N`` antithetic particle pairs stepping through their episodes.

This module owns the mechanics every online estimator shares: step-unlocked starting
positions and the burn-in that reaches them in masked windows (SPEC section 4,
:func:`burn_in_select`), the vectorised antithetic step, and the one particle-reset
rule (an episode ends after ``T`` steps, or as soon as a particle's loss turns
non-finite, and the particle starts a fresh episode).

Shapes: ``N`` = ``num_particles`` antithetic pairs. Inner states carry leading axes
``[2, N]`` (index 0 runs under ``theta + eps``, index 1 under ``theta - eps``);
positions ``tau`` and episode keys carry ``[N]``.

Early termination (a task with ``done``, :mod:`nres.task`): a trajectory whose state is
done is absorbed: it is no longer stepped (its state stays as it is) and its losses
are zero, while the other member of its pair goes on. A pair's episode ends -- the
reset rule, exactly as at ``T`` -- when both members are done (single-trajectory
particles: as soon as the one is). Window-aligned estimators apply the rule at the
window's end, so a pair whose episode ended early idles for the rest of the window;
those idle steps are not steps taken (:func:`live_members`).

Every random quantity of an episode is derived from its episode key, so a pair's two
members share keys and data, and replaying an episode reproduces it exactly:
noise block ``b`` uses ``noise_key(k, b) = fold_in(k, 8 + b)``, step ``t`` uses
``step_key(k, t)`` and ``batch_key(k, t)``, the initial state uses ``fold_in(k, 3)`` and
the next episode's key is ``fold_in(k, 4)`` (``jax.random``'s functions, computed by
:mod:`nres.threefry`).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nres.task import Batch, Task
from nres.threefry import fold_in, randint, split
from nres.tree import SMALL_SELECTION, PyTree, masked_vmap, selection_size, tree_broadcast, tree_size, tree_where

_STEP, _BATCH, _INIT, _NEXT = 1, 2, 3, 4
_NOISE_OFFSET = 8


class Particles(NamedTuple):
    """Inner states ``[2, N, ...]``, positions ``tau`` int32 ``[N]``, keys uint32 ``[N, 2]``.

    ``steps``: int32 ``[N]``, the member steps each pair has really taken since it was
    made, for tasks whose episodes can end early (the burn-in's exact cost); None for
    tasks that never end early (every step is taken: ``members * tau`` in the burn-in).
    """

    inner: PyTree
    tau: jax.Array
    episode_key: jax.Array
    steps: Optional[jax.Array] = None


def noise_key(episode_key: jax.Array, block: jax.Array) -> jax.Array:
    """Key of noise block ``block`` of an episode (the same for both pair members).

    One hash: ``fold_in(k, 8 + block)`` never meets the other streams' ``fold_in(k, 0..4)``.
    """
    return fold_in(episode_key, _NOISE_OFFSET + block)


def step_key(episode_key: jax.Array, t: jax.Array) -> jax.Array:
    return fold_in(fold_in(episode_key, _STEP), t)


def batch_key(episode_key: jax.Array, t: jax.Array) -> jax.Array:
    return fold_in(fold_in(episode_key, _BATCH), t)


def _initial_state(task: Task, episode_key: jax.Array) -> PyTree:
    """The initial state of the episode with key ``episode_key`` ``[2]``."""
    return task.init_state(fold_in(episode_key, _INIT))


def _initial_inner(task: Task, episode_keys: jax.Array, members: int = 2) -> PyTree:
    """Fresh episode states for keys ``[n, 2]``, duplicated over the member axis."""
    return tree_broadcast(jax.vmap(lambda k: _initial_state(task, k))(episode_keys), members)


def init_particles(task: Task, key: jax.Array, num_particles: int, members: int = 2) -> Particles:
    """``N`` pairs at the start of independent episodes (``tau = 0``).

    ``members`` is the size of the leading axis of ``inner``: 2 for an antithetic pair,
    1 for single-trajectory methods (the autodiff baselines).
    """
    keys = split(key, num_particles)
    return Particles(
        inner=_initial_inner(task, keys, members),
        tau=jnp.zeros((num_particles,), jnp.int32),
        episode_key=keys,
        steps=None if task.done is None else jnp.zeros((num_particles,), jnp.int32),
    )


def unlocked_windows(key: jax.Array, num_particles: int, horizon: int, unroll_length: int) -> jax.Array:
    """Burn-in windows ``tau_i / W`` of step-unlocked pairs: uniform over ``0 .. ceil(T / W) - 1``."""
    num_windows = -(-horizon // unroll_length)
    return randint(key, (num_particles,), 0, num_windows, dtype=jnp.int32)


def unlocked_positions(key: jax.Array, num_particles: int, horizon: int, unroll_length: int) -> jax.Array:
    """Step-unlocked positions ``tau_i``: uniform over the multiples of ``W`` below ``T``."""
    return unroll_length * unlocked_windows(key, num_particles, horizon, unroll_length)


def map_particle_axis(fn, state):
    """Apply ``fn(leaf, axis)`` along the particle axis of every leaf of an estimator state.

    The convention of every estimator state: leaves carry particles on axis 0, except
    :attr:`Particles.inner`, which carries the member axis first (``[members, N, ...]``).
    """

    def visit(node):
        if isinstance(node, Particles):
            inner = jax.tree_util.tree_map(lambda x: fn(x, 1), node.inner)
            return Particles(inner, fn(node.tau, 0), fn(node.episode_key, 0),
                             None if node.steps is None else fn(node.steps, 0))
        return jax.tree_util.tree_map(lambda x: fn(x, 0), node)

    return jax.tree_util.tree_map(visit, state, is_leaf=lambda x: isinstance(x, Particles))


def select_pairs(mask: jax.Array, on_true, on_false):
    """Per pair, the estimator state ``on_true`` where ``mask`` ``[N]``, else ``on_false``."""
    axes = map_particle_axis(lambda x, axis: axis, on_false)
    return jax.tree_util.tree_map(lambda axis, x, y: tree_where(mask, x, y, axis), axes, on_true, on_false)


def burn_in_select(new, old, hold: jax.Array, window: jax.Array, unroll_length: int, burning=True):
    """The estimator state after window ``window`` of a call whose pair ``i`` still had
    ``hold[i]`` burn-in windows to run when it started (the burn-in, SPEC section 4).

    Every pair starts the burn-in at ``tau = 0`` and unrolls windows under the initial
    ``theta`` (the update is not applied) until it reaches ``tau_i = hold[i] W``: pair ``i``
    keeps its new state ``new`` iff ``window < hold[i]`` and it is at ``tau = window W``,
    otherwise its state ``old`` before the window.

    A pair whose loss turns non-finite in the burn-in starts a new episode (the reset
    rule) and, no longer at ``tau = window W``, stops burning in at the end of that
    window: at ``tau = 0`` with window-aligned ES windows (which reset at the window's
    end), or ``tau < W`` steps into its new episode with per-step rules (autodiff
    baselines, GPES with ``K`` not aligned to ``W``), which go on after a reset.

    ``burning`` (``window < max(hold)``, may be traced) skips the selection in training
    windows (a ``lax.cond``), except for a state of at most
    :data:`nres.tree.SMALL_SELECTION` scalars, which is selected in every window (no
    branch to compile).
    """

    runs = (window < hold) & (old.particles.tau == window * unroll_length)
    if burning is True:
        return select_pairs(runs, new, old)
    if tree_size(old) <= SMALL_SELECTION:
        return select_pairs(runs | ~burning, new, old)
    return jax.lax.cond(burning, lambda new: select_pairs(runs, new, old), lambda new: new, new)


def burn_in(estimate, state, theta: PyTree, hold: jax.Array, unroll_length: int):
    """Run the burn-in of a fresh estimator state in ``max(hold)`` windows (see
    :func:`burn_in_select`); ``estimate(state, theta, burn_in=True)`` runs one window.
    :class:`nres.training.Trainer` runs the same windows through its update program."""

    def body(window, state):
        return burn_in_select(estimate(state, theta, True)[1], state, hold, window, unroll_length)

    return jax.lax.fori_loop(0, jnp.max(hold), body, state)


def live_members(task: Task, inner: PyTree) -> Optional[jax.Array]:
    """Which trajectories of ``inner`` ``[members, N, ...]`` have not ended early: bool
    ``[members, N]``; ``None`` for a task that never ends early (every step is taken)."""
    if task.done is None:
        return None
    return ~jax.vmap(jax.vmap(task.done))(inner)


def step_inputs(task: Task, particles: Particles) -> tuple[jax.Array, Batch]:
    """Step keys ``[N, 2]`` and data batches ``[N, ...]`` of every particle's current step."""
    tau, keys = particles.tau, particles.episode_key
    batches = jax.vmap(lambda k, t: task.batch(batch_key(k, t), t))(keys, tau)
    return jax.vmap(step_key)(keys, tau), batches


def window_batches(task: Task, particles: Particles, length: int) -> Optional[Batch]:
    """The data of the next ``length`` steps of every particle, ``[length, N, ...]``, drawn
    once per window with the task's ``window_batches``; ``None`` when the task has no such
    hook (the steps then draw their own data, :func:`step_inputs`).

    Equal to the per-step batches: step ``s`` of particle ``i`` gets the batch of
    ``batch_key(k_i, tau_i + s)`` at position ``tau_i + s``.
    """
    if task.window_batches is None:
        return None
    steps = jnp.arange(length)

    def one(key, tau):
        keys = jax.vmap(lambda s: batch_key(key, tau + s))(steps)
        return task.window_batches(keys, tau, length)

    batches = jax.vmap(one)(particles.episode_key, particles.tau)  # [N, length, ...]
    return jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), batches)


def step_pairs(task: Task, thetas: PyTree, particles: Particles, batches: Optional[Batch] = None,
               live: Optional[jax.Array] = None) -> tuple[PyTree, jax.Array]:
    """Advance every member one step; returns new inner states and losses ``[2, N]``.

    ``thetas`` has leaves ``[2, N, ...]`` (see :func:`nres.noise.antithetic`). Both
    members of a pair receive the same step key, data batch and position. ``batches``
    ``[N, ...]`` (from :func:`window_batches`) replaces drawing this step's data.
    With early termination, members that are done (``live`` ``[2, N]`` False, from
    :func:`live_members` when not given) keep their state and report a zero loss.
    """
    if batches is None:
        skeys, batches = step_inputs(task, particles)
    else:
        skeys = jax.vmap(step_key)(particles.episode_key, particles.tau)

    def one(theta, state, t, k, batch):
        new_state = task.step(theta, state, t, k, batch)
        return new_state, task.loss(theta, new_state, t, batch)

    over_particles = jax.vmap(one)
    over_pair = jax.vmap(over_particles, in_axes=(0, 0, None, None, None))
    inner, losses = over_pair(thetas, particles.inner, particles.tau, skeys, batches)
    if task.done is None:
        return inner, losses
    live = live_members(task, particles.inner) if live is None else live
    return tree_where(live, inner, particles.inner), jnp.where(live, losses, 0.0)


def advance(
    task: Task,
    particles: Particles,
    new_inner: PyTree,
    losses: jax.Array,
    steps: int = 1,
    selective: bool = False,
    lead_member: bool = False,
    taken: Optional[jax.Array] = None,
) -> tuple[Particles, jax.Array]:
    """The particle-reset rule. Returns the advanced particles and ``done`` ``[N]``.

    A pair whose step reached the horizon (``tau + steps == T``), produced a non-finite
    loss in either member, or whose members have all ended early (the task's ``done``;
    with ``lead_member``, member 0 alone decides: TES, whose next window restarts from
    it) starts a new episode: fresh key, fresh initial state, ``tau = 0``. ``steps`` > 1 advances a whole window at once (``new_inner`` is the state after
    it, ``losses`` any per-window aggregate that turns non-finite with any step).
    ``losses`` is ``[members, N]`` like ``new_inner`` (``members`` = 2, or 1 for
    single-trajectory particles).

    ``taken`` ``[N]``: the member steps each pair really took (added to ``steps`` of a task
    that can end early); by default the members live before a one-step advance.

    Episodes end rarely, so the key and state work is skipped when no pair resets, and
    with ``selective`` (positions step-unlocked: about ``N * steps / T`` pairs reset at a
    time) done only for the resetting pairs (:func:`nres.tree.masked_vmap`), unless the
    states of all pairs are small (:func:`nres.tree.selection_size`; then for all pairs,
    without a branch).
    """
    finite = jnp.all(jnp.isfinite(losses), axis=0)
    done = (particles.tau + steps >= task.horizon) | ~finite
    if task.done is not None:
        ended = ~live_members(task, new_inner)
        done = done | (ended[0] if lead_member else jnp.all(ended, axis=0))
    tau = particles.tau + steps

    def fresh_episode(key):  # one pair: [members, ...] and [2]
        key = fold_in(key, _NEXT)
        return tree_broadcast(_initial_state(task, key), losses.shape[0]), key

    row_size = tree_size(new_inner) // max(done.shape[0], 1) + 2  # one pair's states and key
    size = selection_size(done.shape[0], steps / task.horizon, row_size) if selective else done.shape[0]
    inner, episode_key = masked_vmap(fresh_episode, done, particles.episode_key,
                                     (new_inner, particles.episode_key), size, out_axes=(1, 0), unbranched_if_small=True)
    if particles.steps is not None and taken is None:
        taken = jnp.sum(live_members(task, particles.inner), axis=0, dtype=jnp.int32)
    counted = None if particles.steps is None else particles.steps + taken
    return Particles(inner, jnp.where(done, 0, tau), episode_key, counted), done



def replay_episode(task: Task, theta_at, key: jax.Array) -> jax.Array:
    """Per-step losses ``[T]`` of one episode with episode key ``key``; step ``t`` runs
    under ``theta_at(t)``.

    Uses the same key derivation as the particles, so it replays what a particle with
    that episode key sees; differentiable when the task is. After an early end (the
    task's ``done``) the losses are zero.
    """

    def body(state, t):
        theta = theta_at(t)
        batch = task.batch(batch_key(key, t), t)
        new = task.step(theta, state, t, step_key(key, t), batch)
        loss = task.loss(theta, new, t, batch)
        if task.done is None:
            return new, loss
        live = ~task.done(state)
        return tree_where(live, new, state), jnp.where(live, loss, 0.0)

    state = task.init_state(fold_in(key, _INIT))
    return jax.lax.scan(body, state, jnp.arange(task.horizon))[1]


def episode_losses(task: Task, theta: PyTree, key: jax.Array) -> jax.Array:
    """Per-step losses ``[T]`` of one unperturbed episode under ``theta`` (see :func:`replay_episode`)."""
    return replay_episode(task, lambda t: theta, key)


def taken_steps(particles: Particles, members: int) -> int:
    """Environment steps the particles have taken since they were made (host-side): their
    ``steps`` where the task can end early, else ``members * sum_i tau_i`` (exact while no
    episode has ended, as in the burn-in)."""
    if particles.steps is not None:
        return int(np.sum(np.asarray(particles.steps), dtype=np.int64))
    return members * int(np.sum(np.asarray(particles.tau), dtype=np.int64))

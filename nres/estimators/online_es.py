"""One implementation of the online evolution-strategies family (SPEC section 2).

``OnlineES`` is generalised PES (GPES_K). Each of ``N`` antithetic pairs keeps the
current noise ``eps_cur`` (code: ``eps``) and an accumulator ``xi``. Before each step,
if ``tau mod K == 0`` a fresh ``eps ~ N(0, sigma^2 I_d)`` is drawn, ``eps_cur = eps``
and ``xi += eps``; both members step with ``theta +/- eps_cur`` and the window estimate
adds ``(L^+ - L^-) / (2 sigma^2) * xi``. An episode end resets ``xi = eps_cur = 0``.
The estimate is the sum over pairs and steps divided by ``N * W``.

The named estimators are settings of it (see :mod:`nres.estimators`):

* PES: ``K = W``. NRES: ``K >= T`` -- one noise per episode, so ``xi`` *is* ``eps_cur``
  and no accumulator is stored (half the noise memory).
* FullES: NRES with ``W = T`` and every pair starting at ``tau = 0``.
* TES: fresh noise at every window start and no memory: ``xi = eps_cur``. Both members
  of a pair start each window from the ``theta + eps`` member's carried state.

Symbols: ``N`` = ``num_particles``, ``W`` = ``unroll_length``, ``K`` =
``noise_period``, ``T`` = ``task.horizon``, ``sigma`` = ``sigma``, ``d`` = size of theta.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nres.estimators.base import WindowInfo, check_positive_float, check_positive_int, check_window
from nres.noise import antithetic, sample_noise
from nres.particles import (
    Particles,
    advance,
    burn_in,
    init_particles,
    noise_key,
    step_pairs,
    window_batches,
)
from nres.task import Task
from nres.tree import PyTree, tree_add, tree_broadcast, tree_scale, tree_weighted_sum, tree_where, tree_zeros_like


def refresh_noise(
    theta: PyTree, episode_key: jax.Array, draw: jax.Array, block: jax.Array, eps: PyTree, xi: Optional[PyTree],
    sigma: float,
) -> tuple[PyTree, Optional[PyTree]]:
    """The GPES noise rule before a step: where ``draw`` ``[N]``, ``eps_cur`` becomes the
    fresh noise of block ``block`` ``[N]`` and ``xi += eps_cur`` (``xi`` None: no accumulator).
    """

    def fresh_noise(_):
        return jax.vmap(lambda k, b: sample_noise(noise_key(k, b), theta, sigma))(episode_key, block)

    fresh = jax.lax.cond(jnp.any(draw), fresh_noise, lambda _: eps, None)
    new_eps = tree_where(draw, fresh, eps)
    return new_eps, None if xi is None else tree_where(draw, tree_add(xi, fresh), xi)


def clear_noise(done: jax.Array, eps: PyTree, xi: Optional[PyTree]) -> tuple[PyTree, Optional[PyTree]]:
    """Episode end: ``eps_cur = xi = 0`` where ``done`` ``[N]``."""
    keep = ~done
    return tree_where(keep, eps, tree_zeros_like(eps)), None if xi is None else tree_where(keep, xi, tree_zeros_like(xi))


class OnlineESState(NamedTuple):
    """Particles plus noise ``eps`` ``[N, ...theta]`` and accumulator ``xi`` (or None)."""

    particles: Particles
    eps: PyTree
    xi: Optional[PyTree]


@dataclasses.dataclass(frozen=True, eq=False)
class OnlineES:
    """GPES_K and its special cases. Use the constructors in :mod:`nres.estimators`.

    Attributes:
      task: the unrolled computation graph.
      num_particles: ``N``, antithetic pairs (``2N`` trajectories).
      unroll_length: ``W``, steps per window (= per update).
      sigma: noise scale (``eps ~ N(0, sigma^2 I)``).
      noise_period: ``K``; ``None`` means fresh noise every window without memory (TES).
      step_unlocked: start pairs at uniform multiples of ``W`` after a burn-in.
      name: the estimator's display name.
      loss_normalize: divide the window's gradient by the standard deviation over pairs
        of each pair's mean loss difference ``(1/W) sum_t (L^+ - L^-)`` (a scale-free
        step; the direction is unchanged).
    """

    task: Task
    num_particles: int
    unroll_length: int
    sigma: float
    noise_period: Optional[int]
    step_unlocked: bool = True
    name: str = "gpes"
    loss_normalize: bool = False

    def __post_init__(self):
        check_window(self.task, self.num_particles, self.unroll_length)
        object.__setattr__(self, "sigma", check_positive_float("sigma", self.sigma))
        if self.noise_period is not None:
            check_positive_int("noise_period (K)", self.noise_period)

    # -- bookkeeping (SPEC section 4) -------------------------------------------------
    @property
    def env_steps_per_update(self) -> int:
        return 2 * self.num_particles * self.unroll_length

    @property
    def sequential_steps_per_update(self) -> int:
        return self.unroll_length

    def burn_in_env_steps(self, state: OnlineESState) -> int:
        """Steps spent bringing the pairs to their positions: ``2 * sum_i tau_i``."""
        return 2 * int(np.sum(np.asarray(state.particles.tau), dtype=np.int64)) if self.step_unlocked else 0

    @property
    def reuses_noise(self) -> bool:
        """True when ``xi`` equals ``eps_cur`` (NRES, FullES, TES): no accumulator."""
        return self.noise_period is None or self.noise_period >= self.task.horizon

    # -- the estimator -----------------------------------------------------------------
    def init(self, key: jax.Array, theta: PyTree) -> OnlineESState:
        """Particles at step-unlocked positions reached by really unrolling under ``theta``."""
        k_particles, k_positions = jax.random.split(key)
        eps = tree_broadcast(tree_zeros_like(theta), self.num_particles)
        state = OnlineESState(
            particles=init_particles(self.task, k_particles, self.num_particles),
            eps=eps,
            xi=None if self.reuses_noise else eps,
        )
        if not self.step_unlocked:
            return state
        step = lambda state, s, active: self._step(state, theta, s, active=active)[0]
        return burn_in(step, state, k_positions, self.num_particles, self.task.horizon, self.unroll_length)

    @property
    def window_aligned(self) -> bool:
        """True when noise is drawn only at window starts and episodes end only at window ends.

        That holds when ``W`` divides ``T`` and ``K`` is a multiple of ``W`` or ``>= T``
        (PES, NRES, FullES, TES and GPES with such ``K``): positions stay multiples of
        ``W``, so :meth:`estimate` can unroll the window with fixed perturbed parameters
        and apply the noise and reset rules once per window instead of once per step.
        """
        k, w, t = self.noise_period, self.unroll_length, self.task.horizon
        return t % w == 0 and (k is None or k % w == 0 or k >= t)

    def estimate(self, state: OnlineESState, theta: PyTree) -> tuple[PyTree, OnlineESState, WindowInfo]:
        """One window of ``W`` steps for all pairs: returns ``(grad, new_state, info)``."""
        if self.noise_period is None:  # TES: both members restart from the carried state
            inner = jax.tree_util.tree_map(lambda x: jnp.stack([x[0], x[0]]), state.particles.inner)
            state = state._replace(particles=state.particles._replace(inner=inner))
        if self.window_aligned:
            return self._estimate_aligned(state, theta)
        return self._estimate_per_step(state, theta)

    def _estimate_per_step(self, state: OnlineESState, theta: PyTree):
        """The window with the noise and reset rules applied before and after every step."""

        def body(carry, s):
            state, grad, loss_sum, diff_sum, bad = carry
            state, contribution, losses, nonfinite = self._step(state, theta, s)
            carry = (
                state,
                tree_add(grad, contribution),
                loss_sum + jnp.sum(losses),
                diff_sum + (losses[0] - losses[1]),
                bad | nonfinite,
            )
            return carry, None

        zeros = jnp.zeros(self.num_particles, jnp.float32)
        init = (state, tree_zeros_like(theta), jnp.zeros((), jnp.float32), zeros, zeros > 0)
        (state, grad_sum, loss_sum, diff_sum, bad), _ = jax.lax.scan(body, init, jnp.arange(self.unroll_length))
        return self._finish(grad_sum, state, loss_sum, diff_sum, bad)

    def _estimate_aligned(self, state: OnlineESState, theta: PyTree):
        """The window when :attr:`window_aligned`: same estimate, rules applied per window."""
        particles = state.particles
        draw, block = self._noise_schedule(particles.tau, window_start=True)
        eps, xi = refresh_noise(theta, particles.episode_key, draw, block, state.eps, state.xi, self.sigma)
        thetas = antithetic(theta, eps)
        batches = window_batches(self.task, particles, self.unroll_length)  # None: drawn per step

        def body(carry, inputs):
            inner, member_losses = carry
            s, batch = inputs
            at = particles._replace(inner=inner, tau=particles.tau + s)
            inner, losses = step_pairs(self.task, thetas, at, batch)
            return (inner, member_losses + losses), None

        init = (particles.inner, jnp.zeros((2, self.num_particles), jnp.float32))
        (inner, member_losses), _ = jax.lax.scan(body, init, (jnp.arange(self.unroll_length), batches))
        diff_sum = member_losses[0] - member_losses[1]
        grad_sum = tree_weighted_sum(diff_sum, eps if xi is None else xi)
        particles, done = advance(self.task, particles, inner, member_losses, steps=self.unroll_length)
        if self.noise_period is not None:  # episode end: xi = eps_cur = 0
            eps, xi = clear_noise(done, eps, xi)
        bad = ~jnp.all(jnp.isfinite(member_losses), axis=0)
        return self._finish(grad_sum, OnlineESState(particles, eps, xi), jnp.sum(member_losses), diff_sum, bad)

    def _finish(self, grad_sum, state, loss_sum, diff_sum, bad):
        """Normalise by ``2 sigma^2 N W`` (and the loss scale if asked); build the info."""
        n_w = self.num_particles * self.unroll_length
        scale = 1.0 / (2.0 * self.sigma**2 * n_w)
        if self.loss_normalize:
            scale = scale / (jnp.std(diff_sum / self.unroll_length) + 1e-12)
        grad = tree_scale(grad_sum, scale)
        info = WindowInfo(train_loss=loss_sum / (2 * n_w), num_nonfinite=jnp.sum(bad))
        return grad, state, info

    def _noise_schedule(self, tau: jax.Array, window_start) -> tuple[jax.Array, jax.Array]:
        """Which pairs draw fresh noise before this step (``[N]`` bool) and its block index.

        GPES: when ``tau mod K == 0``, block ``tau // K``. TES (``K`` None): at every
        window start, block ``tau`` (unique within the episode).
        """
        if self.noise_period is None:
            return jnp.broadcast_to(window_start, tau.shape), tau
        return tau % self.noise_period == 0, tau // self.noise_period

    def _step(self, state: OnlineESState, theta: PyTree, s: jax.Array, active: Optional[jax.Array] = None):
        """One step of every pair. ``s`` is the step index within the window.

        Returns the new state, this step's gradient contribution
        ``sum_i (L_i^+ - L_i^-) xi_i`` (before normalisation), the losses ``[2, N]``
        and the per-pair non-finite flags ``[N]``.
        """
        particles = state.particles
        draw, block = self._noise_schedule(particles.tau, window_start=s == 0)
        if active is not None:
            draw = draw & active

        eps, xi = refresh_noise(theta, particles.episode_key, draw, block, state.eps, state.xi, self.sigma)
        new_inner, losses = step_pairs(self.task, antithetic(theta, eps), particles)
        weights = losses[0] - losses[1]
        if active is not None:
            weights = jnp.where(active, weights, 0.0)
        contribution = tree_weighted_sum(weights, eps if xi is None else xi)
        particles, done = advance(self.task, particles, new_inner, losses, active)
        if self.noise_period is not None:  # episode end: xi = eps_cur = 0
            eps, xi = clear_noise(done, eps, xi)
        nonfinite = ~jnp.all(jnp.isfinite(losses), axis=0)
        return OnlineESState(particles, eps, xi), contribution, losses, nonfinite

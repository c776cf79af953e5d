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

A window-aligned window (see :attr:`OnlineES.window_aligned`) is :meth:`OnlineES.window`,
which reports per pair only scalars (:class:`nres.estimators.scalars.WindowScalars`),
followed by :meth:`OnlineES.gradient`, which rebuilds the gradient from them: the same
two functions run on one host, across processes and across Ray workers. With
``store_noise=False`` the state keeps no per-pair noise at all (``O(1)`` instead of
``O(d)`` memory per pair) and both functions regenerate it from the episode keys.

Early termination (a task with ``done``, :mod:`nres.particles`): a member that ends
early is absorbed (no more steps, zero losses) and the pair's episode ends, with the
reset rule above, once both members have ended -- at the window's end for
window-aligned windows (TES: once member 0 has, the member every window restarts
from). Each member's loss is then a function of its own ``theta +/- eps`` alone, so the
estimates stay unbiased: for the gradient of ``J / C``, where ``J`` is the expected
sum of an episode's losses and ``C`` the mean number of steps a pair spends per episode
(``T`` without early ends, where this is the SPEC's mean per-step loss; with early
ends, idle steps to the window's end included). :attr:`WindowInfo.env_steps` counts
only the steps really taken.

Symbols: ``N`` = ``num_particles``, ``W`` = ``unroll_length``, ``K`` =
``noise_period``, ``T`` = ``task.horizon``, ``sigma`` = ``sigma``, ``d`` = size of theta.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from nres.estimators.base import Unrolled, WindowInfo, check_positive_float, check_positive_int, check_window
from nres.estimators.scalars import WindowScalars, finish, gradient_from_scalars
from nres.noise import antithetic, sample_noise
from nres.particles import (
    Particles,
    advance,
    init_particles,
    live_members,
    noise_key,
    step_pairs,
    taken_steps,
    window_batches,
)
from nres.task import Task
from nres.threefry import split_keys
from nres.tree import (
    PyTree,
    masked_vmap,
    selection_size,
    tree_add,
    tree_broadcast,
    tree_size,
    tree_weighted_sum,
    tree_where,
    tree_zeros_like,
)


def refresh_noise(
    theta: PyTree, episode_key: jax.Array, draw: jax.Array, block: jax.Array, eps: PyTree, xi: Optional[PyTree],
    sigma: float, fraction: float = 1.0, unbranched_if_small: bool = False,
) -> tuple[PyTree, Optional[PyTree]]:
    """The GPES noise rule before a step: where ``draw`` ``[N]``, ``eps_cur`` becomes the
    fresh noise of block ``block`` ``[N]`` and ``xi += eps_cur`` (``xi`` None: no accumulator).

    ``fraction`` (static): the expected share of pairs drawing. When it is small (a window
    of step-unlocked pairs) the noise is sampled only for the drawing pairs
    (:func:`nres.tree.masked_vmap`), unless the noise of all pairs is small
    (:func:`nres.tree.selection_size`); by default for all pairs or, when none draws, none.
    ``xi += eps_cur`` stays outside that computation: inside, XLA would fuse the add with
    the sampler's scale (one rounding instead of two) and change the bits of ``xi``.
    ``unbranched_if_small`` (see :func:`nres.tree.masked_vmap`): set by the windows that
    draw once per window; a per-step draw keeps the branch, whose boundary keeps its bits.
    """
    fresh = lambda row: sample_noise(noise_key(*row), theta, sigma)
    size = selection_size(draw.shape[0], fraction, tree_size(theta))
    eps = masked_vmap(fresh, draw, (episode_key, block), eps, size, unbranched_if_small=unbranched_if_small)
    return eps, None if xi is None else tree_where(draw, tree_add(xi, eps), xi)


def as_stored(eps: PyTree) -> PyTree:
    """Regenerated noise as the stored path perturbs with it: each ``eps = sigma * n``
    rounded to float32 before ``theta +/- eps``.

    Stored noise reaches ``theta +/- eps`` through a select (:func:`refresh_noise`'s
    ``where``); noise sampled in the same program would otherwise be fused into the sum,
    and XLA on CPU contracts ``theta + sigma * n`` into one fused multiply-add (one
    rounding instead of two; ``optimization_barrier`` does not stop it there). The same
    select here (``eps`` is always finite, so it keeps every value) makes the perturbed
    parameters, and with them the whole run, bit for bit those of ``store_noise=True``.
    Not for TES's training windows: every pair draws there, the stored path's select
    has a constant mask that XLA removes, and the sum is contracted in both paths alike.
    """
    return jax.tree_util.tree_map(lambda e: jnp.where(jnp.isfinite(e), e, jnp.zeros_like(e)), eps)


def clear_noise(done: jax.Array, eps: PyTree, xi: Optional[PyTree]) -> tuple[PyTree, Optional[PyTree]]:
    """Episode end: ``eps_cur = xi = 0`` where ``done`` ``[N]``."""
    keep = ~done
    return tree_where(keep, eps, tree_zeros_like(eps)), None if xi is None else tree_where(keep, xi, tree_zeros_like(xi))


class OnlineESState(NamedTuple):
    """Particles plus noise ``eps`` ``[N, ...theta]`` and accumulator ``xi`` (or None).

    Both are None with ``store_noise=False`` (the noise is regenerated from the keys).
    """

    particles: Particles
    eps: PyTree
    xi: Optional[PyTree]


@dataclasses.dataclass(frozen=True, eq=False)
class OnlineES(Unrolled):
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
      store_noise: keep each pair's ``eps``/``xi`` in the state (``O(N d)`` memory).
        ``False`` keeps none and regenerates them from the episode keys every window
        (needs :attr:`window_aligned`); the perturbations, losses and states are the same
        bits (:func:`as_stored`), and so is the gradient of NRES, FullES and TES (PES/GPES:
        to float32 rounding of the accumulator ``xi``).
    """

    task: Task
    num_particles: int
    unroll_length: int
    sigma: float
    noise_period: Optional[int]
    step_unlocked: bool = True
    name: str = "gpes"
    loss_normalize: bool = False
    store_noise: bool = True

    def __post_init__(self):
        check_window(self.task, self.num_particles, self.unroll_length)
        object.__setattr__(self, "sigma", check_positive_float("sigma", self.sigma))
        if self.noise_period is not None:
            check_positive_int("noise_period (K)", self.noise_period)
        if not self.store_noise and not self.window_aligned:
            raise ValueError(self.not_aligned_message("store_noise=False"))

    def not_aligned_message(self, what: str) -> str:
        return (f"{what} needs windows aligned to the noise blocks: W must divide T and K must be a multiple "
                f"of W or >= T (got W={self.unroll_length}, T={self.task.horizon}, K={self.noise_period})")

    # -- bookkeeping (SPEC section 4) -------------------------------------------------
    @property
    def env_steps_per_update(self) -> int:
        return 2 * self.num_particles * self.unroll_length

    @property
    def sequential_steps_per_update(self) -> int:
        return self.unroll_length

    def burn_in_env_steps(self, state: OnlineESState) -> int:
        """Steps spent bringing the pairs to their positions (:func:`nres.particles.taken_steps`)."""
        return taken_steps(state.particles, members=2) if self.step_unlocked else 0

    @property
    def reuses_noise(self) -> bool:
        """True when ``xi`` equals ``eps_cur`` (NRES, FullES, TES): no accumulator."""
        return self.noise_period is None or self.noise_period >= self.task.horizon

    @property
    def max_span(self) -> int:
        """Most noise blocks one pair's ``xi`` sums: 1, or ``ceil(T / K)`` for PES/GPES."""
        return 1 if self.reuses_noise else -(-self.task.horizon // self.noise_period)

    # -- the estimator -----------------------------------------------------------------
    def start(self, key: jax.Array, theta: PyTree) -> tuple[OnlineESState, jax.Array]:
        """Every pair at ``tau = 0`` (no noise drawn yet) and its burn-in windows (see
        :class:`nres.estimators.base.Unrolled`; :meth:`init` runs them).

        The burn-in unrolls the pairs under ``theta +/- eps`` with the estimator's own
        noise rule, except TES, which draws its noise once at ``tau = 0`` and keeps it,
        as if the burn-in were one window.
        """
        k_particles, k_positions = split_keys(key, 2)
        eps = tree_broadcast(tree_zeros_like(theta), self.num_particles) if self.store_noise else None
        state = OnlineESState(
            particles=init_particles(self.task, k_particles, self.num_particles),
            eps=eps,
            xi=None if self.reuses_noise else eps,
        )
        return state, self.burn_in_windows(k_positions)

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

    def estimate(self, state: OnlineESState, theta: PyTree, burn_in=False) -> tuple[PyTree, OnlineESState, WindowInfo]:
        """One window of ``W`` steps for all pairs: returns ``(grad, new_state, info)``.

        ``burn_in`` (a bool, may be traced): the window is one of the burn-in's (see
        :meth:`start`; only TES's noise rule differs).
        """
        if self._split_burn_in(burn_in):
            return jax.lax.cond(burn_in, lambda *a: self.estimate(*a, True), self.estimate, state, theta)
        if self.window_aligned:
            scalars, state, weights = self._window(state, theta, burn_in)
            grad, info = self.gradient(scalars, theta, weights)
            return grad, state, info
        return self._estimate_per_step(self._tes_restart(state, burn_in), theta, burn_in)

    def window(self, state: OnlineESState, theta: PyTree, burn_in=False) -> tuple[WindowScalars, OnlineESState]:
        """Run one window of every pair in ``state``; return its scalars and the new state.

        Works on any number of pairs (a shard of the population): every pair is
        independent. Needs :attr:`window_aligned`. ``burn_in`` as in :meth:`estimate`.
        """
        if self._split_burn_in(burn_in):
            return jax.lax.cond(burn_in, lambda *a: self.window(*a, True), self.window, state, theta)
        scalars, state, _ = self._window(state, theta, burn_in)
        return scalars, state

    def _split_burn_in(self, burn_in) -> bool:
        """TES with a traced ``burn_in``: burn-in and training windows become the two
        branches of a ``lax.cond``, so the training window is the program it is without
        a burn-in (a traced noise rule inside it would change XLA's fusion of the noise
        into the steps, and with it the last bit of the states)."""
        return self.noise_period is None and not isinstance(burn_in, bool)

    def gradient(self, scalars: WindowScalars, theta: PyTree, weights: Optional[PyTree] = None):
        """``(grad, info)`` of a window from the scalars of all ``N`` pairs (noise regenerated
        from the keys unless ``weights``, the pairs' stored ``xi``, are given)."""
        return gradient_from_scalars(scalars, theta, sigma=self.sigma, unroll_length=self.unroll_length,
                                     max_span=self.max_span, loss_normalize=self.loss_normalize, weights=weights)

    def _tes_restart(self, state: OnlineESState, burn_in: bool = False) -> OnlineESState:
        if self.noise_period is not None or burn_in:
            return state
        # TES: both members restart from the carried state (not within the burn-in)
        inner = jax.tree_util.tree_map(lambda x: jnp.stack([x[0], x[0]]), state.particles.inner)
        return state._replace(particles=state.particles._replace(inner=inner))

    def _estimate_per_step(self, state: OnlineESState, theta: PyTree, burn_in=False):
        """The window with the noise and reset rules applied before and after every step."""

        def body(carry, s):
            state, grad, loss_sum, diff_sum, bad, steps = carry
            live = live_members(self.task, state.particles.inner)
            state, contribution, losses, nonfinite = self._step(state, theta, s, burn_in, live)
            carry = (
                state,
                tree_add(grad, contribution),
                loss_sum + jnp.sum(losses),
                diff_sum + (losses[0] - losses[1]),
                bad | nonfinite,
                None if live is None else steps + jnp.sum(live, dtype=jnp.int32),
            )
            return carry, None

        zeros = jnp.zeros(self.num_particles, jnp.float32)
        steps = None if self.task.done is None else jnp.zeros((), jnp.int32)
        init = (state, tree_zeros_like(theta), jnp.zeros((), jnp.float32), zeros, zeros > 0, steps)
        (state, grad_sum, loss_sum, diff_sum, bad, steps), _ = jax.lax.scan(body, init, jnp.arange(self.unroll_length))
        grad, info = finish(grad_sum, diff_sum, loss_sum, bad, self.sigma, self.unroll_length, self.loss_normalize,
                            steps)
        return grad, state, info

    def _window(self, state: OnlineESState, theta: PyTree, burn_in=False):
        """The window when :attr:`window_aligned`: noise and reset rules applied once.

        Step-unlocked, only about ``N W / T`` pairs start or end an episode in a window
        (``N W / K`` draw for GPES with ``K < T``), so the noise and the reset work are
        done for those pairs only (:func:`nres.tree.masked_vmap`): a window then costs
        about what a step-locked one does, where both happen for all pairs or none (and
        are skipped when none).

        Returns the scalars, the new state and the pairs' stored ``xi`` (None without
        stored noise).
        """
        if not self.window_aligned:
            raise ValueError(self.not_aligned_message("a window reported as scalars"))
        particles = self._tes_restart(state, burn_in).particles
        draw, block = self._noise_schedule(particles.tau, window_start=True, burn_in=burn_in)
        if self.store_noise:
            eps, xi = refresh_noise(theta, particles.episode_key, draw, block, state.eps, state.xi, self.sigma,
                                    self._window_draw_fraction, unbranched_if_small=True)
        else:
            eps = jax.vmap(lambda k, b: sample_noise(noise_key(k, b), theta, self.sigma))(particles.episode_key, block)
            if self.noise_period is not None or burn_in:  # see as_stored
                eps = as_stored(eps)
        thetas = antithetic(theta, eps)
        batches = window_batches(self.task, particles, self.unroll_length)  # None: drawn per step
        num_pairs = particles.tau.shape[0]

        def body(carry, inputs):
            inner, member_losses, steps = carry
            s, batch = inputs
            at = particles._replace(inner=inner, tau=particles.tau + s)
            live = live_members(self.task, inner)
            inner, losses = step_pairs(self.task, thetas, at, batch, live)
            steps = None if live is None else steps + jnp.sum(live, axis=0, dtype=jnp.int32)
            return (inner, member_losses + losses, steps), None

        steps = None if self.task.done is None else jnp.zeros((num_pairs,), jnp.int32)
        init = (particles.inner, jnp.zeros((2, num_pairs), jnp.float32), steps)
        (inner, member_losses, steps), _ = jax.lax.scan(body, init, (jnp.arange(self.unroll_length), batches))
        scalars = WindowScalars(
            diff=member_losses[0] - member_losses[1],
            loss=member_losses[0] + member_losses[1],
            nonfinite=~jnp.all(jnp.isfinite(member_losses), axis=0),
            episode_key=particles.episode_key,
            first_block=block if self.reuses_noise else jnp.zeros_like(block),
            last_block=block,
            steps=jnp.full((num_pairs,), 2 * self.unroll_length, jnp.int32) if steps is None else steps,
        )
        particles, done = advance(self.task, particles, inner, member_losses, steps=self.unroll_length,
                                  selective=self.step_unlocked, lead_member=self.noise_period is None, taken=steps)
        if not self.store_noise:
            return scalars, OnlineESState(particles, None, None), None
        weights = eps if xi is None else xi
        if self.noise_period is not None:  # episode end: xi = eps_cur = 0
            eps, xi = clear_noise(done, eps, xi)
        return scalars, OnlineESState(particles, eps, xi), weights

    def _noise_schedule(self, tau: jax.Array, window_start, burn_in: bool = False) -> tuple[jax.Array, jax.Array]:
        """Which pairs draw fresh noise before this step (``[N]`` bool) and its block index.

        GPES: when ``tau mod K == 0``, block ``tau // K``. TES (``K`` None): at every
        window start, block ``tau`` (unique within the episode); in the burn-in only at
        ``tau = 0``, block 0.
        """
        if self.noise_period is None and burn_in:
            return window_start & (tau == 0), jnp.zeros_like(tau)
        if self.noise_period is None:
            return jnp.broadcast_to(window_start, tau.shape), tau
        return tau % self.noise_period == 0, tau // self.noise_period

    @property
    def _window_draw_fraction(self) -> float:
        """The expected share of pairs drawing fresh noise at a window start: ``W / min(K, T)``
        when positions are step-unlocked; 1 (all of them, or none) for step-locked pairs and TES."""
        if self.noise_period is None or not self.step_unlocked:
            return 1.0
        return self.unroll_length / min(self.noise_period, self.task.horizon)

    def _step(self, state: OnlineESState, theta: PyTree, s: jax.Array, burn_in=False, live=None):
        """One step of every pair. ``s`` is the step index within the window; ``live``
        ``[2, N]`` the members not yet ended early (None: the task never ends early).

        Returns the new state, this step's gradient contribution
        ``sum_i (L_i^+ - L_i^-) xi_i`` (before normalisation), the losses ``[2, N]``
        and the per-pair non-finite flags ``[N]``.
        """
        particles = state.particles
        draw, block = self._noise_schedule(particles.tau, window_start=s == 0, burn_in=burn_in)
        eps, xi = refresh_noise(theta, particles.episode_key, draw, block, state.eps, state.xi, self.sigma)
        new_inner, losses = step_pairs(self.task, antithetic(theta, eps), particles, live=live)
        contribution = tree_weighted_sum(losses[0] - losses[1], eps if xi is None else xi)
        particles, done = advance(self.task, particles, new_inner, losses)
        if self.noise_period is not None:  # episode end: xi = eps_cur = 0
            eps, xi = clear_noise(done, eps, xi)
        nonfinite = ~jnp.all(jnp.isfinite(losses), axis=0)
        return OnlineESState(particles, eps, xi), contribution, losses, nonfinite

"""Autodiff baselines (SPEC section 3) on the same interface as :class:`OnlineES`.

Every baseline runs ``N`` single trajectories under the unperturbed ``theta`` (no
antithetic pair: the particles' member axis has size 1, ``inner`` is ``[1, N, ...]``),
uses the step-unlocking burn-in, key derivation and reset rule of :mod:`nres.particles`,
and returns ``(grad, state, WindowInfo)`` from ``estimate``.

* :class:`Backprop` -- reverse mode. **TBPTT**: the gradient of the window's mean loss
  through its ``W`` steps only; the state at the window start is carried and treated as
  a constant. **BPTT**: ``W = T`` from ``tau = 0`` (no step-unlocking), i.e. the exact
  gradient of the horizon loss ``L(theta) = (1/T) sum_t L_t``.
* :class:`UORO` -- unbiased online recurrent optimisation (Tallec & Ollivier 2017): a
  rank-one forward approximation ``ds_t/dtheta ~ s~ theta~^T`` updated with random signs
  ``nu``; unbiased for the gradient of the losses since the episode start.
* :class:`ForwardGradient` -- DODGE-style forward mode: the state tangent along a random
  direction ``v ~ N(0, I_d)`` is carried with ``jax.jvp``, a fresh direction starts every
  ``K`` steps and, as in GPES, the estimate multiplies each step's directional derivative
  by the accumulated directions ``xi = sum of the directions seen this episode``. That
  makes it unbiased for ``grad L`` for every ``K`` (it is the ``sigma -> 0`` limit of
  GPES_K with ``eps = sigma v``; on a quadratic task the two are identical).

Early termination (a task with ``done``): a trajectory that ends early starts a new
episode right after that step (the reset rule of :func:`nres.particles.advance`), so
no step idles and every window takes ``N W`` steps.

``sigma`` plays no role in any of them. Step counts (SPEC section 4) are honest for one
trajectory per particle: ``N W`` env steps per update (``N T`` for BPTT) and
``sum_i tau_i`` for the burn-in; forward-mode steps count once (the tangent rides along).

Symbols: ``N`` = ``num_particles``, ``W`` = ``unroll_length``, ``K`` = ``noise_period``,
``T`` = ``task.horizon``, ``d`` = size of theta, ``n`` = size of the float part of the state.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from nres.estimators.base import Unrolled, WindowInfo, check_positive_int, check_window, reject_keyword
from nres.estimators.online_es import clear_noise, refresh_noise
from nres.particles import Particles, advance, init_particles, noise_key, step_inputs, taken_steps
from nres.task import Task
from nres.threefry import split_keys
from nres.tree import PyTree, tree_add, tree_broadcast, tree_scale, tree_weighted_sum, tree_where, tree_zeros_like

_EPS = 1e-7  # keeps UORO's rescaling factors finite when a norm is zero


def _member(tree: PyTree) -> PyTree:
    """``[1, N, ...] -> [N, ...]``: the single member of single-trajectory particles."""
    return jax.tree_util.tree_map(lambda x: x[0], tree)


def _as_member(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x: x[None], tree)


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def float_part(state: PyTree) -> tuple[list, Callable[[list], PyTree]]:
    """The differentiable (floating-point) leaves of a state and a function that puts
    new float leaves back (integer leaves such as counters are kept as they are)."""
    leaves, treedef = jax.tree_util.tree_flatten(state)
    floats = [x for x in leaves if _is_float(x)]

    def rebuild(new_floats: list) -> PyTree:
        it = iter(new_floats)
        return jax.tree_util.tree_unflatten(treedef, [next(it) if _is_float(x) else x for x in leaves])

    return floats, rebuild


@dataclasses.dataclass(frozen=True, eq=False)
class _SingleTrajectory(Unrolled):
    """Shared bookkeeping of the baselines (attributes as in :class:`OnlineES`)."""

    task: Task
    num_particles: int
    unroll_length: int
    step_unlocked: bool = True
    name: str = "autodiff"

    def __post_init__(self):
        check_window(self.task, self.num_particles, self.unroll_length)

    @property
    def env_steps_per_update(self) -> int:
        return self.num_particles * self.unroll_length

    @property
    def sequential_steps_per_update(self) -> int:
        return self.unroll_length

    def burn_in_env_steps(self, state) -> int:
        return taken_steps(state.particles, members=1) if self.step_unlocked else 0

    def _initial(self, particles: Particles, theta: PyTree):
        """Method state at ``tau = 0`` around fresh particles."""
        raise NotImplementedError

    def _step(self, state, theta: PyTree):
        """One step of every particle: ``(state, contribution, losses [N], nonfinite [N])``."""
        raise NotImplementedError

    def start(self, key: jax.Array, theta: PyTree):
        """Every particle at ``tau = 0`` and its burn-in windows (see
        :class:`nres.estimators.base.Unrolled`; :meth:`init` runs them)."""
        k_particles, k_positions = split_keys(key, 2)
        state = self._initial(init_particles(self.task, k_particles, self.num_particles, members=1), theta)
        return state, self.burn_in_windows(k_positions)

    def _scan_window(self, state, theta: PyTree, zero_contribution: PyTree):
        """``W`` steps: ``(state, sum of contributions, loss sum, losses [W, N], bad [N])``."""

        def body(carry, _):
            state, total, bad = carry
            state, contribution, losses, nonfinite = self._step(state, theta)
            return (state, tree_add(total, contribution), bad | nonfinite), losses

        bad = jnp.zeros(self.num_particles, bool)
        (state, total, bad), losses = jax.lax.scan(
            body, (state, zero_contribution, bad), None, length=self.unroll_length
        )
        return state, total, losses, bad

    def _info(self, losses: jax.Array, bad: jax.Array) -> WindowInfo:
        env_steps = jnp.asarray(self.env_steps_per_update, jnp.int32)  # early ends reset at once: no idle step
        return WindowInfo(train_loss=jnp.mean(losses), num_nonfinite=jnp.sum(bad), env_steps=env_steps)

    def _plain_step(self, particles: Particles, theta: PyTree):
        """Step every trajectory under ``theta`` and apply the reset rule."""
        skeys, batches = step_inputs(self.task, particles)

        def one(state, t, k, batch):
            state = self.task.step(theta, state, t, k, batch)
            return state, self.task.loss(theta, state, t, batch)

        inner, losses = jax.vmap(one)(_member(particles.inner), particles.tau, skeys, batches)
        particles, _ = advance(self.task, particles, _as_member(inner), losses[None])
        return particles, losses


class BackpropState(NamedTuple):
    particles: Particles


@dataclasses.dataclass(frozen=True, eq=False)
class Backprop(_SingleTrajectory):
    """TBPTT (window ``W``, state carried) and, with ``W = T`` from ``tau = 0``, BPTT."""

    name: str = "tbptt"

    def _initial(self, particles, theta):
        return BackpropState(particles)

    def _step(self, state, theta):
        particles, losses = self._plain_step(state.particles, theta)
        return BackpropState(particles), None, losses, ~jnp.isfinite(losses)

    def estimate(self, state: BackpropState, theta: PyTree, burn_in=False) -> tuple[PyTree, BackpropState, WindowInfo]:
        """``grad = d/dtheta (1/(N W)) sum_{i, t in window} L_{i,t}`` with the start state fixed
        (``burn_in``: the window is one of the burn-in's, which changes nothing here)."""

        def window_loss(theta):
            start = jax.lax.stop_gradient(state)
            end, _, losses, bad = self._scan_window(start, theta, None)
            return jnp.mean(losses), (end, losses, bad)

        grad, (state, losses, bad) = jax.grad(window_loss, has_aux=True)(theta)
        return grad, state, self._info(losses, bad)


class UOROState(NamedTuple):
    """Particles, ``s~`` ``[N, n]`` and ``theta~`` ``[N, d]`` (flat, float32)."""

    particles: Particles
    state_tilde: jax.Array
    theta_tilde: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class UORO(_SingleTrajectory):
    """UORO: per step, with random signs ``nu`` ``[n]``, ``J_s`` = ``ds'/ds``, ``J_theta`` = ``ds'/dtheta``::

        s~' = rho0 J_s s~ + rho1 nu,     theta~' = theta~ / rho0 + J_theta^T nu / rho1,
        rho0 = sqrt(|theta~| / |J_s s~|),  rho1 = sqrt(|J_theta^T nu| / |nu|),

    and the step's gradient ``(dL/ds' . s~') theta~' + dL/dtheta``. ``rho0, rho1`` are even in
    ``nu``, so ``E[s~' theta~'^T] = ds'/dtheta`` and every step's estimate is unbiased.
    """

    name: str = "uoro"

    def _initial(self, particles, theta):
        n = ravel_pytree(float_part(_member(particles.inner))[0])[0].size // self.num_particles
        d = ravel_pytree(theta)[0].size
        return UOROState(particles, jnp.zeros((self.num_particles, n)), jnp.zeros((self.num_particles, d)))

    def _step(self, state, theta):
        particles = state.particles
        flat_theta, unravel_theta = ravel_pytree(theta)
        skeys, batches = step_inputs(self.task, particles)
        nu_keys = jax.vmap(noise_key)(particles.episode_key, particles.tau)

        def one(inner, s_tilde, th_tilde, t, k, batch, nu_key):
            floats, rebuild = float_part(inner)
            flat_s, unravel_s = ravel_pytree(floats)

            def step(th, s):
                new = self.task.step(unravel_theta(th), rebuild(unravel_s(s)), t, k, batch)
                return ravel_pytree(float_part(new)[0])[0], new

            new_s, linear, new_inner = jax.linearize(step, flat_theta, flat_s, has_aux=True)
            js = linear(jnp.zeros_like(flat_theta), s_tilde)
            nu = jax.random.rademacher(nu_key, new_s.shape, new_s.dtype)
            nu_j = jax.linear_transpose(linear, flat_theta, flat_s)(nu)[0]
            rho0 = jnp.sqrt((jnp.linalg.norm(th_tilde) + _EPS) / (jnp.linalg.norm(js) + _EPS))
            rho1 = jnp.sqrt((jnp.linalg.norm(nu_j) + _EPS) / (jnp.linalg.norm(nu) + _EPS))
            s_tilde = rho0 * js + rho1 * nu
            th_tilde = th_tilde / rho0 + nu_j / rho1
            new_floats, rebuild_new = float_part(new_inner)
            unravel_new = ravel_pytree(new_floats)[1]
            loss_fn = lambda th, s: self.task.loss(unravel_theta(th), rebuild_new(unravel_new(s)), t, batch)
            loss, (g_theta, g_s) = jax.value_and_grad(loss_fn, argnums=(0, 1))(flat_theta, new_s)
            return new_inner, loss, s_tilde, th_tilde, jnp.dot(g_s, s_tilde) * th_tilde + g_theta

        inner, losses, s_tilde, th_tilde, grads = jax.vmap(one)(
            _member(particles.inner), state.state_tilde, state.theta_tilde, particles.tau, skeys, batches, nu_keys
        )
        contribution = unravel_theta(jnp.ones_like(losses) @ grads)
        particles, done = advance(self.task, particles, _as_member(inner), losses[None])
        s_tilde = jnp.where(done[:, None], 0.0, s_tilde)
        th_tilde = jnp.where(done[:, None], 0.0, th_tilde)
        return UOROState(particles, s_tilde, th_tilde), contribution, losses, ~jnp.isfinite(losses)

    def estimate(self, state: UOROState, theta: PyTree, burn_in=False) -> tuple[PyTree, UOROState, WindowInfo]:
        state, total, losses, bad = self._scan_window(state, theta, tree_zeros_like(theta))
        grad = tree_scale(total, 1.0 / (self.num_particles * self.unroll_length))
        return grad, state, self._info(losses, bad)


class ForwardState(NamedTuple):
    """Particles, tangent (float leaves of the state, ``[N, ...]``), direction ``v`` and
    accumulator ``xi`` (``[N, ...theta]``; ``xi`` is None when ``K >= T``)."""

    particles: Particles
    tangent: list
    direction: PyTree
    xi: Optional[PyTree]


@dataclasses.dataclass(frozen=True, eq=False)
class ForwardGradient(_SingleTrajectory):
    """DODGE-style forward-mode gradient with directions resampled every ``K`` steps.

    Per step: draw ``v`` when ``tau mod K == 0`` (``xi += v``), push the tangent
    ``z' = J_s z + J_theta v`` with ``jax.jvp``, and add ``(dL/ds' z' + dL/dtheta v) xi``.
    Directions are the library's noise (``sample_noise`` with scale 1, noise block keys).
    """

    noise_period: int = 1
    name: str = "dodge"

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("noise_period (K)", self.noise_period)

    def _initial(self, particles, theta):
        floats = float_part(_member(particles.inner))[0]
        direction = tree_broadcast(tree_zeros_like(theta), self.num_particles)
        xi = None if self.noise_period >= self.task.horizon else direction
        return ForwardState(particles, [jnp.zeros_like(x) for x in floats], direction, xi)

    def _step(self, state, theta):
        particles = state.particles
        draw = particles.tau % self.noise_period == 0
        block = particles.tau // self.noise_period
        direction, xi = refresh_noise(theta, particles.episode_key, draw, block, state.direction, state.xi, 1.0)
        skeys, batches = step_inputs(self.task, particles)

        def one(inner, tangent, v, t, k, batch):
            floats, rebuild = float_part(inner)

            def step(th, s):
                new = self.task.step(th, rebuild(s), t, k, batch)
                return float_part(new)[0], new

            new_floats, new_tangent, new_inner = jax.jvp(step, (theta, floats), (v, tangent), has_aux=True)
            rebuild_new = float_part(new_inner)[1]
            loss_fn = lambda th, s: self.task.loss(th, rebuild_new(s), t, batch)
            loss, dloss = jax.jvp(loss_fn, (theta, new_floats), (v, new_tangent))
            return new_inner, new_tangent, loss, dloss

        inner, tangent, losses, dloss = jax.vmap(one)(
            _member(particles.inner), state.tangent, direction, particles.tau, skeys, batches
        )
        contribution = tree_weighted_sum(dloss, direction if xi is None else xi)
        particles, done = advance(self.task, particles, _as_member(inner), losses[None])
        tangent = tree_where(~done, tangent, tree_zeros_like(tangent))
        direction, xi = clear_noise(done, direction, xi)
        return ForwardState(particles, tangent, direction, xi), contribution, losses, ~jnp.isfinite(losses)

    def estimate(self, state: ForwardState, theta: PyTree, burn_in=False) -> tuple[PyTree, ForwardState, WindowInfo]:
        state, total, losses, bad = self._scan_window(state, theta, tree_zeros_like(theta))
        grad = tree_scale(total, 1.0 / (self.num_particles * self.unroll_length))
        return grad, state, self._info(losses, bad)


_NO_SIGMA = "the autodiff baselines perturb nothing (sigma plays no role)"
_NO_K = "a noise period K applies only to 'dodge' (and 'gpes')"


def _reject_unused(name: str, sigma, noise_period, options) -> None:
    """The keywords an autodiff baseline does not use: ``sigma``, ES switches and (but
    for DODGE) ``noise_period``, each a ``ValueError`` naming it."""
    reject_keyword(name, "sigma", sigma, _NO_SIGMA)
    reject_keyword(name, "noise_period", noise_period, _NO_K)
    for keyword, value in sorted(options.items()):
        reject_keyword(name, keyword, value, "it is a switch of the ES estimators")


def bptt(task: Task, num_particles: int = 1, *, unroll_length: Optional[int] = None, sigma: Optional[float] = None,
         noise_period: Optional[int] = None, **options) -> Backprop:
    """Exact gradient of the horizon loss: whole episodes from ``tau = 0`` (``W = T``;
    ``unroll_length``, if given, must be ``T``)."""
    reject_keyword("bptt", "unroll_length", unroll_length, f"BPTT unrolls whole episodes, W = T = {task.horizon}",
                   fits=lambda w: w == task.horizon)
    _reject_unused("bptt", sigma, noise_period, options)
    return Backprop(task, num_particles, task.horizon, step_unlocked=False, name="bptt")


def tbptt(task: Task, num_particles: int, unroll_length: int, *, sigma: Optional[float] = None,
          noise_period: Optional[int] = None, **options) -> Backprop:
    """Truncated backprop through the last ``W`` steps, state carried between windows."""
    _reject_unused("tbptt", sigma, noise_period, options)
    return Backprop(task, num_particles, unroll_length, name="tbptt")


def uoro(task: Task, num_particles: int, unroll_length: int, *, sigma: Optional[float] = None,
         noise_period: Optional[int] = None, **options) -> UORO:
    """Unbiased online recurrent optimisation, one rank-one forward approximation per particle."""
    _reject_unused("uoro", sigma, noise_period, options)
    return UORO(task, num_particles, unroll_length)


def dodge(task: Task, num_particles: int, unroll_length: int, noise_period: Optional[int] = None, *,
          sigma: Optional[float] = None, **options) -> ForwardGradient:
    """Forward-mode directional gradients; ``noise_period`` K defaults to ``W`` (a new
    direction every update)."""
    _reject_unused("dodge", sigma, None, options)
    k = unroll_length if noise_period is None else noise_period
    return ForwardGradient(task, num_particles, unroll_length, noise_period=k)

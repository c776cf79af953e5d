"""First-order (exact for quadratic losses) total variance of GPES_K (SPEC section 5).

Notation (SPEC -> code): ``T`` = ``horizon``, ``W`` = ``unroll_length``, ``K`` =
``noise_period``, ``N`` = ``num_particles``, ``d`` = size of theta,
``G_{t,b}`` = ``blocks[t - 1, b]``: the part of ``dL_t/dtheta`` flowing through noise
block ``b`` (the steps ``bK .. bK + K - 1``), ``m_t = ceil(t / K)`` blocks seen.

With ``x_t = sum_b G_{t,b} . eps_b`` and ``xi_t = sum_{b < m_t} eps_b`` a pair's step
term is ``x_t xi_t / sigma^2``; Isserlis' theorem gives for two steps ``s, t`` of one
window::

    tr Cov(g_s, g_t) = d min(m_s, m_t) sum_b G_{s,b}.G_{t,b} + C_{s, m_t} . C_{t, m_s},

with ``C_{t, m} = sum_{b < m} G_{t,b}``. For ``s = t`` this is SPEC's
``||grad L_t||^2 + d m_t sum_b ||G_{t,b}||^2``. The window estimate averages ``W``
steps, pairs start at uniform multiples of ``W`` (law of total variance over the start)
and ``N`` independent pairs divide the variance by ``N``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from nres.particles import replay_episode
from nres.task import Task
from nres.tree import PyTree


def block_gradients(
    task: Task, theta: PyTree, noise_period: int, key: jax.Array | None = None, chunk_size: int = 64
) -> np.ndarray:
    """``G`` of shape ``[T, B, d]``: ``dL_t / dtheta_b`` for every step and noise block.

    One episode is unrolled with a separate copy of ``theta`` per noise block
    (``B = ceil(T / K)`` blocks) and differentiated in reverse mode: one forward pass
    (``jax.vjp``), then the ``T`` rows of the Jacobian ``chunk_size`` at a time, so the
    memory is the episode's residuals plus ``chunk_size`` cotangents (``K >= T`` gives
    ``B = 1``: ``[T, 1, d]``, what NRES and FullES need, e.g. ``T = 1000, d = 1762``).
    The episode's key is fixed, so this is meant for tasks whose losses are
    differentiable; for tasks with random data it is the variance for that one episode.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    flat, unravel = ravel_pytree(theta)
    horizon = task.horizon
    num_blocks = -(-horizon // noise_period)

    def losses(block_thetas):  # [B, d] -> [T]
        return replay_episode(task, lambda t: unravel(block_thetas[t // noise_period]), key)

    copies = jnp.broadcast_to(flat, (num_blocks,) + flat.shape)

    @jax.jit
    def rows(copies):
        _, pullback = jax.vjp(losses, copies)
        basis = jnp.eye(horizon, dtype=flat.dtype)
        return jax.lax.map(lambda e: pullback(e)[0], basis, batch_size=min(chunk_size, horizon))

    return np.asarray(rows(copies), np.float64)


def window_moments(blocks: np.ndarray, start: int, unroll_length: int, noise_period: int) -> tuple[np.ndarray, float]:
    """Mean ``[d]`` and total variance of one pair's estimate for the window at ``start``."""
    horizon, _, dim = blocks.shape
    steps = np.arange(start, min(start + unroll_length, horizon))
    g = blocks[steps]  # [W, B, d]
    seen = steps // noise_period + 1  # m_t
    cumulative = np.cumsum(g, axis=1)  # C_{t, m} at index m - 1
    full = cumulative[:, -1]  # grad L_t
    inner = np.einsum("sbd,tbd->st", g, g)
    cross = np.einsum("std,tsd->st", cumulative[:, seen - 1], cumulative[:, seen - 1])
    cov = dim * np.minimum.outer(seen, seen) * inner + cross
    return full.sum(0) / unroll_length, float(cov.sum()) / unroll_length**2


def gpes_total_variance(
    blocks: np.ndarray, unroll_length: int, noise_period: int, num_particles: int = 1, step_unlocked: bool = True
) -> float:
    """``tr Cov`` of the GPES_K estimate: ``N`` pairs at uniform multiples of ``W`` below ``T``.

    ``blocks`` must come from :func:`block_gradients` with the same ``noise_period``.
    With ``step_unlocked=False`` every pair starts at ``tau = 0`` (FullES when ``W = K = T``).
    """
    horizon = blocks.shape[0]
    starts = range(0, horizon, unroll_length) if step_unlocked else [0]
    moments = [window_moments(blocks, s, unroll_length, noise_period) for s in starts]
    means = np.stack([m for m, _ in moments])
    within = np.mean([v for _, v in moments])
    between = float(np.sum(np.var(means, axis=0)))
    return (within + between) / num_particles


def expected_gradient(blocks: np.ndarray) -> np.ndarray:
    """``grad L(theta) = (1/T) sum_t grad L_t`` (shape ``[d]``)."""
    return blocks.sum(axis=1).mean(axis=0)


def gpes_setting(estimator) -> tuple[int, int, bool, int] | None:
    """``(W, K, step_unlocked, N)`` of an estimator the formula covers, else ``None``.

    GPES_K and its special cases (PES, NRES, FullES) and the forward-mode
    :class:`~nres.estimators.autodiff.ForwardGradient` (DODGE), whose estimate is the
    first-order term of GPES_K for every task; ``K`` is capped at ``T``. TES, UORO,
    BPTT and TBPTT are not covered.
    """
    from nres.estimators import OnlineES
    from nres.estimators.autodiff import ForwardGradient

    if isinstance(estimator, (OnlineES, ForwardGradient)) and estimator.noise_period is not None:
        k = min(estimator.noise_period, estimator.task.horizon)
        return estimator.unroll_length, k, estimator.step_unlocked, estimator.num_particles
    return None


def predicted_total_variance(estimator, blocks_for) -> float | None:
    """First-order ``tr Cov`` of one estimate of ``estimator`` (``None`` if not covered).

    ``blocks_for(K)`` returns :func:`block_gradients` for noise period ``K`` (callers
    cache it: one Jacobian serves every estimator with that ``K``).
    """
    setting = gpes_setting(estimator)
    if setting is None:
        return None
    unroll_length, k, unlocked, n = setting
    return gpes_total_variance(blocks_for(k), unroll_length, k, num_particles=n, step_unlocked=unlocked)


def equal_compute_prediction(blocks: np.ndarray, unroll_length: int) -> tuple[float, float]:
    """First-order ``(tr Cov FullES, tr Cov (W/T) sum_i NRES_i)`` from ``K >= T`` blocks."""
    horizon = blocks.shape[0]
    n = horizon // unroll_length
    full = gpes_total_variance(blocks, horizon, horizon, step_unlocked=False)
    combo = sum(window_moments(blocks, i * unroll_length, unroll_length, horizon)[1] for i in range(n)) / n**2
    return full, combo

"""Scalars on the wire: the one way an ES gradient is rebuilt from per-pair numbers.

A window of an online ES estimator (when :attr:`OnlineES.window_aligned`) needs to
report per antithetic pair only its summed loss difference ``diff_i = sum_t (L_i^+ -
L_i^-)`` and what identifies the pair's noise accumulator ``xi_i``: its episode key and
a range of noise blocks, ``xi_i = sum_{b = first_i}^{last_i} noise(key_i, b)``, where
``noise(k, b) = sample_noise(noise_key(k, b), theta, sigma)`` is the one sampler every
estimator perturbs with. NRES and FullES name one block (block 0 of the episode), TES
one block per window (block ``tau``), PES/GPES_K the blocks ``0 .. tau // K`` drawn so
far in the episode. Whoever holds ``theta`` rebuilds

    grad = sum_i diff_i * xi_i / (2 sigma^2 N W)

by regenerating the noise (:func:`pair_noise`, :func:`gradient_from_scalars`), so a
worker sends ``O(N)`` bytes per window instead of a gradient (``O(d)``) or its noise
(``O(N d)``), and a single host need not keep any per-pair noise (``O(N d)`` memory).

Shapes: ``N`` pairs (``diff`` float32 ``[N]``, ``episode_key`` uint32 ``[N, 2]``,
blocks int32 ``[N]``), ``d`` = size of ``theta``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from nres.estimators.base import WindowInfo
from nres.noise import sample_noise
from nres.particles import noise_key
from nres.tree import PyTree, tree_add, tree_scale, tree_weighted_sum, tree_where, tree_zeros_like


class WindowScalars(NamedTuple):
    """What one window reports per pair (every field has ``N`` on axis 0).

    ``diff``: float32 ``[N]``, ``sum_t (L^+ - L^-)`` over the window.
    ``loss``: float32 ``[N]``, ``sum_t (L^+ + L^-)`` (for the logged train loss).
    ``nonfinite``: bool ``[N]``, a loss of the pair turned non-finite in the window.
    ``episode_key``: uint32 ``[N, 2]``, the pair's episode key at the window start.
    ``first_block``, ``last_block``: int32 ``[N]``, ``xi = sum`` of noise blocks
    ``first .. last`` (inclusive) of that episode.
    ``steps``: int32 ``[N]``, member steps the pair really took in the window (``2 W``
    unless a member's episode ended early).
    """

    diff: jax.Array
    loss: jax.Array
    nonfinite: jax.Array
    episode_key: jax.Array
    first_block: jax.Array
    last_block: jax.Array
    steps: jax.Array


def scalar_bytes(num_pairs: int) -> int:
    """Bytes of one window's :class:`WindowScalars` for ``num_pairs`` pairs (29 per pair)."""
    return num_pairs * (4 + 4 + 1 + 8 + 4 + 4 + 4)


def pair_noise(theta: PyTree, sigma: float, scalars: WindowScalars, max_span: int) -> PyTree:
    """Every pair's ``xi`` ``[N, ...theta]`` regenerated from its key and block range.

    ``max_span`` (static) bounds ``last - first + 1``. Blocks are added to zero in
    increasing order, the order in which the stored accumulator ``xi`` received them,
    so the result equals the stored ``xi`` bit for bit.
    """

    def one(key, first, last):
        draw = lambda b: sample_noise(noise_key(key, b), theta, sigma)
        if max_span == 1:
            return draw(first)

        def body(j, xi):
            return tree_where(first + j <= last, tree_add(xi, draw(first + j)), xi)

        return jax.lax.fori_loop(0, max_span, body, tree_zeros_like(theta))

    return jax.vmap(one)(scalars.episode_key, scalars.first_block, scalars.last_block)


def finish(
    grad_sum: PyTree, diff: jax.Array, loss_total: jax.Array, nonfinite: jax.Array, sigma: float,
    unroll_length: int, loss_normalize: bool = False, env_steps=None,
) -> tuple[PyTree, WindowInfo]:
    """Normalise ``grad_sum = sum_i diff_i xi_i`` by ``2 sigma^2 N W`` (and the loss
    scale if asked: the std over pairs of ``diff_i / W``); build the window's info.

    ``N`` is ``diff.shape[0]``; ``loss_total`` is the sum of all ``2 N W`` losses (zero
    after an early end); ``env_steps`` the steps really taken (default ``2 N W``).
    """
    n_w = diff.shape[0] * unroll_length
    scale = 1.0 / (2.0 * sigma**2 * n_w)
    if loss_normalize:
        scale = scale / (jnp.std(diff / unroll_length) + 1e-12)
    env_steps = jnp.asarray(2 * n_w if env_steps is None else env_steps, jnp.int32)
    info = WindowInfo(train_loss=loss_total / (2 * n_w), num_nonfinite=jnp.sum(nonfinite), env_steps=env_steps)
    return tree_scale(grad_sum, scale), info


def gradient_from_scalars(
    scalars: WindowScalars, theta: PyTree, *, sigma: float, unroll_length: int, max_span: int,
    loss_normalize: bool = False, weights: Optional[PyTree] = None,
) -> tuple[PyTree, WindowInfo]:
    """The window's gradient ``sum_i diff_i xi_i / (2 sigma^2 N W)`` and info.

    ``weights``: the pairs' ``xi`` when the caller still holds them (stored noise);
    ``None`` regenerates them with :func:`pair_noise`. Cost ``O(N d max_span)``.
    """
    if weights is None:
        weights = pair_noise(theta, sigma, scalars, max_span)
    grad_sum = tree_weighted_sum(scalars.diff, weights)
    return finish(grad_sum, scalars.diff, jnp.sum(scalars.loss), scalars.nonfinite, sigma, unroll_length,
                  loss_normalize, jnp.sum(scalars.steps, dtype=jnp.int32))

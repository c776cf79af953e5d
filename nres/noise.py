"""The one Gaussian noise sampler and the one antithetic-pair helper.

Every ES estimator perturbs ``theta`` with ``eps ~ N(0, sigma^2 I_d)`` and evaluates
the pair ``theta + eps`` / ``theta - eps``; both go through here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nres.threefry import normal, split
from nres.tree import PyTree


def sample_noise(key: jax.Array, theta: PyTree, sigma: float) -> PyTree:
    """Draw ``eps ~ N(0, sigma^2 I_d)`` shaped like ``theta`` (one key per leaf)."""
    leaves, treedef = jax.tree_util.tree_flatten(theta)
    keys = [key] if len(leaves) == 1 else split(key, max(len(leaves), 1))
    # The barriers keep XLA from fusing the scale into the sampler's arithmetic or the
    # noise into its consumers (theta + eps as one fused multiply-add), which it does
    # differently in different programs: with them the same key gives the same bits and
    # the same perturbed theta wherever the noise is drawn (stored, regenerated from keys,
    # on another process or worker).
    barrier = jax.lax.optimization_barrier
    noise = [
        barrier(sigma * barrier(normal(k, jnp.shape(x), dtype=jnp.result_type(x, jnp.float32))))
        for k, x in zip(keys, leaves)
    ]
    return jax.tree_util.tree_unflatten(treedef, noise)


def antithetic(theta: PyTree, eps: PyTree) -> PyTree:
    """Stack the antithetic pair: every leaf becomes ``[2, ...eps.shape]``.

    Index 0 holds ``theta + eps`` and index 1 holds ``theta - eps``; ``eps`` may carry
    leading particle axes (``[N, ...]``), which ``theta`` is broadcast against.
    """
    return jax.tree_util.tree_map(lambda t, e: jnp.stack([t + e, t - e]), theta, eps)

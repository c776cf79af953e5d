"""Small pure helpers over pytrees (all shapes are preserved leaf by leaf)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def tree_zeros_like(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(jnp.zeros_like, tree)


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(jnp.add, a, b)


def tree_scale(tree: PyTree, scale) -> PyTree:
    return jax.tree_util.tree_map(lambda x: x * scale, tree)


def tree_where(mask: jax.Array, on_true: PyTree, on_false: PyTree, axis: int = 0) -> PyTree:
    """Select leaf rows: ``mask`` has shape ``[n]`` and every leaf has ``n`` at ``axis``."""

    def pick(x, y):
        m = jnp.reshape(mask, (1,) * axis + mask.shape + (1,) * (jnp.ndim(x) - axis - mask.ndim))
        return jnp.where(m, x, y)

    return jax.tree_util.tree_map(pick, on_true, on_false)


def tree_weighted_sum(weights: jax.Array, tree: PyTree) -> PyTree:
    """``sum_i weights[i] * leaf[i]`` for every leaf of shape ``[n, ...]``."""
    return jax.tree_util.tree_map(lambda x: jnp.tensordot(weights, x, axes=1), tree)


def tree_broadcast(tree: PyTree, n: int) -> PyTree:
    """Stack ``n`` copies of every leaf along a new leading axis."""
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x)), tree)


def tree_size(tree: PyTree) -> int:
    """Total number of scalars ``d`` in a pytree."""
    return int(sum(jnp.size(x) for x in jax.tree_util.tree_leaves(tree)))


def tree_all_finite(tree: PyTree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def tree_norm(tree: PyTree) -> jax.Array:
    """Global Euclidean norm over all leaves."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))

"""Small pure helpers over pytrees (all shapes are preserved leaf by leaf)."""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

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


SMALL_SELECTION = 4096  # scalars: below this, computing every row costs no more than selecting


def selection_size(n: int, fraction: float, row_size: int | None = None) -> int:
    """The static bound ``M`` of :func:`masked_vmap` for ``n`` rows of which about
    ``n * fraction`` are selected at a time: that mean plus four of its Poisson standard
    deviations plus 4, or ``n`` (no selective path) when the bound exceeds ``n / 2``,
    where selecting would save little.

    ``row_size``: the scalars one row of the computation produces (None: unknown). When
    all ``n`` rows together produce at most :data:`SMALL_SELECTION`, also ``n``: then
    computing every row takes about as long as the selection's own work (ranks, gather,
    scatter, loop; on CPU, Lorenz noise and resets of ``N = 200`` and ``2000`` pairs),
    and the program has about 35 kernels fewer to compile (see
    ``benchmarks/results/compile_experiments.txt``).
    """
    if row_size is not None and n * row_size <= SMALL_SELECTION:
        return n
    mean = n * min(max(fraction, 0.0), 1.0)
    size = math.ceil(mean + 4.0 * math.sqrt(mean)) + 4
    return size if 2 * size <= n else n


def set_ranks(mask: jax.Array) -> jax.Array:
    """For every entry of ``mask`` bool ``[n]``, how many set entries come before it
    (int32 ``[n]``; at set entries: its rank among them, as in ``cumsum(mask) - 1``).

    Counted on ``mask`` packed into 32-bit words: a population count within the word
    plus the set entries of the words before, on a CPU a fraction of the cost of a
    cumulative sum over all ``n`` entries. Up to 64 words the latter is one masked sum
    (``words^2`` additions, cheaper there than XLA's cumulative sum), beyond a cumulative sum.
    """
    n = mask.shape[0]
    words = -(-n // 32)
    bits = jnp.pad(mask, (0, 32 * words - n)).reshape(words, 32).astype(jnp.uint32)
    packed = jnp.sum(bits << jnp.arange(32, dtype=jnp.uint32), axis=1, dtype=jnp.uint32)  # entries 32w .. 32w+31
    per_word = jax.lax.population_count(packed).astype(jnp.int32)
    if words <= 64:  # set entries before word w
        w = jnp.arange(words)
        word_start = jnp.sum(jnp.where(w[None, :] < w[:, None], per_word[None, :], 0), axis=1)
    else:
        word_start = jnp.cumsum(per_word) - per_word
    i = jnp.arange(n, dtype=jnp.int32)
    below = packed[i // 32] & ((jnp.uint32(1) << (i % 32).astype(jnp.uint32)) - 1)
    return word_start[i // 32] + jax.lax.population_count(below).astype(jnp.int32)


def masked_vmap(fn: Callable, mask: jax.Array, inputs: PyTree, on_false: PyTree, size: int,
                out_axes: Any = 0, unbranched_if_small: bool = False) -> PyTree:
    """``tree_where(mask, jax.vmap(fn, out_axes=out_axes)(inputs), on_false)``, with ``fn``
    run only on the rows where ``mask`` is set.

    Shapes: ``mask`` bool ``[n]``; ``inputs`` a pytree whose leaves carry ``n`` on axis 0
    (``fn`` gets one row: the leaves without that axis); ``fn(row)`` returns one row of
    ``on_false``, whose leaves carry ``n`` on axis ``out_axes`` (an int, or a prefix
    pytree of ``on_false`` as in ``jax.vmap``). ``size`` is a static ``M <= n``.

    With no row set, ``fn`` does not run. Otherwise the set rows are taken ``M`` at a
    time in increasing order (one round when at most ``M`` are set): their indices go
    into a buffer of ``M`` (by :func:`set_ranks`; padding repeats a row and is
    dropped), ``fn`` runs on those ``M`` rows and the results are scattered back. So
    ``fn`` is compiled once, for ``M`` rows. With ``M >= n`` it runs on all ``n`` rows
    and selects. The result is the same bit for bit in every case as long as ``fn``'s
    row results do not depend on the batch (true of elementwise work such as key
    hashing and sampling).

    ``unbranched_if_small``: with ``M >= n`` and a result of at most
    :data:`SMALL_SELECTION` scalars, ``fn`` runs on every row even when none is set:
    no branch (``lax.cond``) to compile, which costs more than the rows (the Lorenz
    update program has about 20 kernels fewer). Only where ``fn``'s results are not
    combined arithmetically with values of the same program in a way XLA could fuse
    differently (a contracted multiply-add changes the last bits): callers opt in
    where the reference trajectories are unchanged.
    """
    n = mask.shape[0]
    leafwise = lambda f, *trees: jax.tree_util.tree_map(
        lambda axis, *subtrees: jax.tree_util.tree_map(functools.partial(f, axis), *subtrees), out_axes, *trees)
    batched = jax.vmap(fn, out_axes=out_axes)

    def every(_):
        return leafwise(lambda axis, new, old: tree_where(mask, new, old, axis), batched(inputs), on_false)

    def selected(_):
        rank, row = set_ranks(mask), jnp.arange(n, dtype=jnp.int32)

        def chunk(j, out):  # the set rows of rank j M .. j M + M - 1
            slot = jnp.where(mask & (rank >= j * size), rank - j * size, size)  # >= size: dropped
            index = jnp.full((size,), n, jnp.int32).at[slot].set(row, mode="drop")  # padding: n
            rows = jax.tree_util.tree_map(lambda x: jnp.take(x, index, axis=0, mode="clip"), inputs)
            scatter = lambda axis, old, new: old.at[(slice(None),) * axis + (index,)].set(new, mode="drop")
            return leafwise(scatter, out, batched(rows))

        return jax.lax.fori_loop(0, (count + size - 1) // size, chunk, on_false)

    if unbranched_if_small and size >= n and tree_size(on_false) <= SMALL_SELECTION:
        return every(None)
    count = jnp.sum(mask, dtype=jnp.int32)
    return jax.lax.cond(count > 0, every if size >= n else selected, lambda _: on_false, None)


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

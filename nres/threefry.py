"""``jax.random``'s key functions and normal sampler, bit for bit, compiled without loops.

nres derives every random quantity of an episode from its key with :func:`fold_in`
(:mod:`nres.particles`) and draws its noise with :func:`normal` (:mod:`nres.noise`).
``jax.random``'s default generator behind them hashes with Threefry-2x32, which JAX
lowers on CPU to a ``while`` loop of five iterations; XLA compiles each such loop into a
loop condition, a few kernels and a copy of every carried value, and a training window
holds three of them (the noise key, the noise, the next episode's key). Here the same
hash is written out in full -- 20 rounds of uint32 additions, rotations and xors, exact
integer arithmetic -- which XLA fuses with its neighbours: the same keys and samples as
``jax.random`` (``tests/test_threefry.py`` checks them against it), from a program that
compiles faster.

Keys are raw ``uint32[2]`` arrays, as ``jax.random.PRNGKey`` makes them (a typed key,
``jax.random.key``, goes to ``jax.random`` itself).
"""

from __future__ import annotations

import math

import jax
import jax.extend.random
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def threefry2x32(key: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 with 20 rounds (Salmon et al., 2011) of the counter pairs ``(x0, x1)``
    (uint32, one shape) under ``key`` uint32 ``[2]``: the hash of ``jax.random``'s
    default generator (its ``threefry2x32`` primitive), unrolled.

    Written in ``lax`` primitives inside one ``jax.jit`` (not inlined): it is traced once
    per argument signature and per batching of a ``vmap``, where ``jnp``'s operators (each
    its own small jitted function) would be traced anew at every call -- most of an update
    program's tracing before. The hash is exact integer arithmetic, so how XLA fuses it
    does not change a bit."""
    return _hash(key, x0, x1)


@jax.jit
def _hash(key, x0, x1):
    shape = jnp.shape(x0)
    word = lambda i: jax.lax.broadcast(jax.lax.index_in_dim(key, i, keepdims=False), shape)
    k0, k1 = word(0), word(1)
    k = (k0, k1, jax.lax.bitwise_xor(jax.lax.bitwise_xor(k0, k1), jax.lax.full(shape, _PARITY, jnp.uint32)))
    const = lambda value: jax.lax.full(shape, value, jnp.uint32)
    x0, x1 = jax.lax.add(x0, k[0]), jax.lax.add(x1, k[1])
    for s in range(1, 6):  # five groups of four rounds, each followed by a key injection
        for r in _ROTATIONS[(s - 1) % 2]:
            x0 = jax.lax.add(x0, x1)
            rotated = jax.lax.bitwise_or(jax.lax.shift_left(x1, const(r)),
                                         jax.lax.shift_right_logical(x1, const(32 - r)))
            x1 = jax.lax.bitwise_xor(rotated, x0)
        x0, x1 = jax.lax.add(x0, k[s % 3]), jax.lax.add(jax.lax.add(x1, k[(s + 1) % 3]), const(s))
    return x0, x1


def _typed(key) -> bool:
    """A typed key (``jax.random.key``): left to ``jax.random`` itself."""
    return jax.dtypes.issubdtype(jnp.result_type(key), jax.dtypes.prng_key)


def fold_in(key: jax.Array, data) -> jax.Array:
    """``jax.random.fold_in(key, data)`` for a raw key ``[2]`` and a scalar integer ``data``:
    the hash of the counter pair ``(0, data)``."""
    if _typed(key):
        return jax.random.fold_in(key, data)
    data = jnp.asarray(data, dtype=jnp.uint32)
    return jnp.stack(threefry2x32(key, jnp.zeros_like(data), data))


def _partitionable() -> bool:
    """``jax.random``'s counters are a 64-bit iota over the output (JAX's default; the
    only layout written out here, the other one defers to ``jax.random``)."""
    return bool(jax.config.jax_threefry_partitionable)


def split(key: jax.Array, num: int) -> jax.Array:
    """``jax.random.split(key, num)`` for a raw key: ``[num, 2]``."""
    if _typed(key) or not _partitionable() or num >= 2**32:
        return jax.random.split(key, num)
    count = jax.lax.iota(jnp.uint32, num)
    return jnp.stack(threefry2x32(key, jnp.zeros_like(count), count), axis=1)


def split_keys(key: jax.Array, num: int) -> jax.Array:
    """:func:`split`, its keys computed once (behind an optimization barrier) however many
    computations read them: XLA would otherwise copy the written-out hash into each."""
    return jax.lax.optimization_barrier(split(key, num))


def _random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
    """``jax.random``'s random bits of ``key`` (32-bit words written out, others deferred)."""
    size = math.prod(shape)
    if bit_width != 32 or not _partitionable() or size >= 2**32:
        return jax.extend.random.threefry_prng_impl.random_bits(key, bit_width, shape)
    count = jax.lax.iota(jnp.uint32, size).reshape(shape)
    bits0, bits1 = threefry2x32(key, jnp.zeros_like(count), count)
    return bits0 ^ bits1


def _split(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``jax.random``'s split of ``key`` into keys ``[*shape, 2]`` (written out up to 2**32 keys)."""
    size = math.prod(shape)
    if not _partitionable() or size >= 2**32:
        return jax.extend.random.threefry_prng_impl.split(key, shape)
    return split(key, size).reshape(tuple(shape) + (2,))


_DEFAULT = jax.extend.random.threefry_prng_impl
_UNROLLED = jax.extend.random.define_prng_impl(
    key_shape=(2,), seed=_DEFAULT.seed, split=_split, random_bits=_random_bits, fold_in=_DEFAULT.fold_in,
    name="threefry2x32_unrolled", tag="nres_tf")


def normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """``jax.random.normal(key, shape, dtype)`` for a raw key: ``jax.random``'s own sampler
    on the bits of :func:`threefry2x32`."""
    if _typed(key):
        return jax.random.normal(key, shape, dtype)
    return jax.random.normal(jax.random.wrap_key_data(key, impl=_UNROLLED), shape, dtype)


def randint(key: jax.Array, shape: tuple[int, ...], minval, maxval, dtype=jnp.int32) -> jax.Array:
    """``jax.random.randint(key, shape, minval, maxval, dtype)`` for a raw key: ``jax.random``'s
    own sampler on the bits and key split of :func:`threefry2x32`."""
    if _typed(key):
        return jax.random.randint(key, shape, minval, maxval, dtype)
    return jax.random.randint(jax.random.wrap_key_data(key, impl=_UNROLLED), shape, minval, maxval, dtype)

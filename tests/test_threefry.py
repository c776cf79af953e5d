"""nres.threefry gives jax.random's keys and samples bit for bit (the unrolled hash is only
cheaper to compile)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nres import threefry

KEYS = jax.random.split(jax.random.PRNGKey(11), 257)
DATA = np.random.RandomState(0).randint(0, 2**31 - 1, size=257).astype(np.int32)


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_fold_in_equals_jax_random_for_keys_and_data_under_jit_and_vmap():
    ours = jax.jit(jax.vmap(threefry.fold_in))(KEYS, DATA)
    theirs = jax.vmap(jax.random.fold_in)(KEYS, DATA)
    assert _same(ours, theirs), "fold_in differs from jax.random.fold_in"
    edge = [0, 1, 8, 2**31 - 1, 2**32 - 1, np.int32(-1)]
    for d in edge:
        assert _same(threefry.fold_in(KEYS[0], d), jax.random.fold_in(KEYS[0], d)), f"fold_in(k, {d})"


@pytest.mark.parametrize("num", [1, 2, 3, 200])
def test_split_equals_jax_random(num):
    ours = jax.jit(jax.vmap(lambda k: threefry.split(k, num)))(KEYS)
    assert _same(ours, jax.vmap(lambda k: jax.random.split(k, num))(KEYS)), f"split(k, {num})"


@pytest.mark.parametrize("shape,dtype", [((2,), jnp.float32), ((3,), jnp.float32), ((5, 7), jnp.float32),
                                         ((1000,), jnp.float32), ((0,), jnp.float32), ((4,), jnp.bfloat16)])
def test_normal_equals_jax_random(shape, dtype):
    ours = jax.jit(jax.vmap(lambda k: threefry.normal(k, shape, dtype)))(KEYS)
    theirs = jax.jit(jax.vmap(lambda k: jax.random.normal(k, shape, dtype)))(KEYS)
    assert _same(ours, theirs), f"normal{shape} {dtype} differs from jax.random.normal"


def test_split_keys_equals_jax_random_and_compiles_the_hash_once():
    """split_keys: jax.random.split's keys; behind its barrier XLA writes their hash once
    however many computations read them (as in the init: a key split again, a key used
    as is). Without the barrier this program holds the 20 rotations of the split's hash
    in several kernels (78 shift-lefts against 40 here)."""
    def use(k):
        keys = threefry.split_keys(k, 2)
        return keys[1], threefry.split(keys[0], 200), jnp.remainder(keys[1][0], 7), keys[0] * 3

    assert _same(jax.jit(lambda k: threefry.split_keys(k, 2))(KEYS[3]), jax.random.split(KEYS[3], 2))
    text = jax.jit(use).lower(KEYS[3]).compile().as_text()
    assert text.count("shift-left") <= 2 * 20, "two hashes (the split, the split of 200) of 20 rotations each"


def test_the_other_counter_layout_defers_to_jax_random():
    with jax.threefry_partitionable(False):
        assert _same(jax.jit(lambda k: threefry.split(k, 3))(KEYS[1]), jax.random.split(KEYS[1], 3))
        assert _same(jax.jit(lambda k: threefry.normal(k, (6,)))(KEYS[1]), jax.random.normal(KEYS[1], (6,)))


def test_typed_keys_go_to_jax_random():
    key = jax.random.key(5)
    assert _same(jax.random.key_data(threefry.fold_in(key, 3)), jax.random.key_data(jax.random.fold_in(key, 3)))
    assert _same(threefry.normal(key, (4,)), jax.random.normal(key, (4,)))


@pytest.mark.parametrize("shape,low,high", [((200,), 0, 20), ((3, 5), -7, 9), ((64,), 0, 1), ((10,), 5, 5)])
def test_randint_equals_jax_random(shape, low, high):
    ours = jax.jit(jax.vmap(lambda k: threefry.randint(k, shape, low, high)))(KEYS)
    theirs = jax.vmap(lambda k: jax.random.randint(k, shape, low, high))(KEYS)
    assert _same(ours, theirs), f"randint{shape} in [{low}, {high}) differs from jax.random.randint"


def test_randint_compiles_without_loops():
    """jax.random's own randint hashes in ``while`` loops on CPU; the written-out one has none."""
    hlo = jax.jit(lambda k: threefry.randint(k, (200,), 0, 20)).lower(KEYS[0]).as_text()
    assert " while(" not in hlo and "stablehlo.while" not in hlo
    assert "while" in jax.jit(lambda k: jax.random.randint(k, (200,), 0, 20)).lower(KEYS[0]).as_text()

"""The pure training step (:mod:`nres.step`): the guard, a chunk against single updates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nres
from nres.estimators.base import WindowInfo
from nres.step import INFO_WORDS, Learner, UpdateInfo, chunk_capacity, guarded_apply, make_step, pack_info, unpack_infos

W = 2


@pytest.fixture(scope="module")
def step(linear_task):
    return make_step(linear_task, nres.nres(linear_task, 4, W, 0.1), optax.sgd(0.01), max_chunk=5)


@pytest.mark.parametrize("case, applied", [
    ("finite", True), ("nonfinite pairs", False), ("burn-in", False), ("nan gradient", False), ("overflow", False)])
def test_guard_applies_only_finite_updates_outside_the_burn_in(case, applied):
    optimizer = optax.sgd(1.0)
    apply = jax.jit(guarded_apply(optimizer))
    theta = jnp.array([1.0, 2.0])
    grad = {"nan gradient": jnp.array([jnp.nan, 0.0]), "overflow": jnp.array([-3e38, 0.0])}.get(case, jnp.array([0.5, -1.0]))
    info = WindowInfo(jnp.float32(1.0), jnp.int32(case == "nonfinite pairs"), jnp.int32(8))
    theta = jnp.array([3e38, 2.0]) if case == "overflow" else theta
    new_theta, _, update = apply(theta, optimizer.init(theta), grad, info, case == "burn-in")
    assert bool(update.applied) is applied
    expected = theta - grad if applied else theta
    np.testing.assert_array_equal(new_theta, expected)
    assert float(update.grad_norm) == pytest.approx(float(jnp.linalg.norm(grad)), nan_ok=True)


def test_a_chunk_is_its_updates_one_by_one(step, linear_task):
    """One compiled chunk of 4 updates gives, bit for bit, the learners and infos of 4
    calls of ``update``; buffer rows past the count stay zero."""
    learner, hold = jax.jit(step.init)(jax.random.PRNGKey(3))
    no_hold = jnp.zeros_like(hold)
    chunked, rows, thetas = jax.jit(step.chunk)(learner, jnp.int32(4), no_hold)
    assert rows.shape == (5, INFO_WORDS) and rows.dtype == jnp.uint32
    infos = unpack_infos(rows)
    update = jax.jit(step.update)
    one = learner
    for k in range(4):
        one, info = update(one, jnp.int32(k), no_hold)
        np.testing.assert_array_equal(thetas[k], one.theta)
        for got, want in zip(infos, info):
            np.testing.assert_array_equal(got[k], want)
    for got, want in zip(jax.tree_util.tree_leaves(chunked), jax.tree_util.tree_leaves(one)):
        np.testing.assert_array_equal(got, want)
    assert infos.train_loss.shape == (5,) and not np.any(np.asarray(infos.applied[4:]))


def test_burn_in_windows_apply_no_update(step):
    learner, hold = jax.jit(step.init)(jax.random.PRNGKey(3))
    assert int(hold.max()) > 0
    burnt, rows, _ = jax.jit(step.chunk)(learner, hold.max(), hold)
    np.testing.assert_array_equal(burnt.theta, learner.theta)
    assert isinstance(burnt, Learner) and not np.any(unpack_infos(rows).applied)


def test_chunk_capacity_bounds_the_theta_buffer(linear_task):
    from nres.step import MAX_UPDATES_PER_CALL, THETA_BUFFER_SCALARS
    from nres.task import Task

    assert chunk_capacity(linear_task) == MAX_UPDATES_PER_CALL
    big = Task(init_theta=lambda k: jnp.zeros(THETA_BUFFER_SCALARS // 7), init_state=lambda k: jnp.zeros(1),
               step=lambda theta, s, t, k, b: s, loss=lambda theta, s, t, b: s[0], horizon=4)
    assert chunk_capacity(big) == 7


def test_packed_infos_read_back_bit_for_bit():
    """Every field's bits survive a row of pack_info: signed zeros, nan, inf, negative and
    large integers, both booleans."""
    infos = UpdateInfo(np.array([0.0, -0.0, np.nan, -np.inf, 3.25e-39], np.float32),
                       np.array([np.inf, 1e38, 0.5, -2.0, 7.0], np.float32),
                       np.array([True, False, True, False, True]),
                       np.array([0, -1, 2**31 - 1, -(2**31), 17], np.int32),
                       np.array([40000, 0, 2**30, -5, 1], np.int32))
    rows = jax.jit(jax.vmap(pack_info))(infos)
    back = unpack_infos(rows)
    for got, want in zip(back, infos):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(np.ascontiguousarray(got).view(np.uint8), want.view(np.uint8))

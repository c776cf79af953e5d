"""The learned optimizer: parameter count, features by hand, and the update rule."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nres.tasks.lopt import learned_optimizer as lopt
from nres.tree import tree_size

SIZES = (2, 3)  # a tiny "model": a 2-vector and a 3-vector, flat P = 5


@pytest.fixture(scope="module")
def tiny():
    params = jnp.asarray([0.5, -1.0, 2.0, 0.0, -3.0])
    grad = jnp.asarray([1.0, 3.0, -2.0, 0.5, 0.0])
    momenta = jnp.asarray(np.arange(30, dtype=np.float32).reshape(5, 6) / 10.0)
    return params, grad, momenta


def test_theta_has_exactly_1762_parameters():
    theta = lopt.init_theta(jax.random.PRNGKey(0))
    assert tree_size(theta) == 1762
    assert theta["w1"].shape == (19, 32) and theta["w2"].shape == (32, 32) and theta["w3"].shape == (32, 2)
    assert lopt.NUM_FEATURES == 19


def test_momenta_update_by_hand(tiny):
    params, grad, momenta = tiny
    new = np.asarray(lopt.update_momenta(momenta, grad))
    for k, beta in enumerate([0.1, 0.5, 0.9, 0.99, 0.999, 0.9999]):
        expected = beta * np.asarray(momenta)[:, k] + (1 - beta) * np.asarray(grad)
        np.testing.assert_allclose(new[:, k], expected, rtol=1e-6, atol=1e-7)


def test_features_match_a_hand_computation(tiny):
    params, grad, momenta = tiny
    step = 7
    got = np.asarray(lopt.features(grad, params, momenta, jnp.asarray(step), SIZES))
    assert got.shape == (5, 19)
    raw = np.concatenate([np.asarray(grad)[:, None], np.asarray(params)[:, None], np.asarray(momenta)], axis=1)
    expected = np.empty((5, 19))
    for start, stop in [(0, 2), (2, 5)]:  # normalised per tensor, per feature column
        block = raw[start:stop]
        expected[start:stop, :8] = block / np.sqrt(1e-5 + np.mean(block**2, axis=0))
    timescales = [1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000]
    expected[:, 8:] = [math.tanh(step / tau - 1) for tau in timescales]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # a hand check of one entry: grad feature of parameter 0 in tensor [1, 3]
    assert got[0, 0] == pytest.approx(1.0 / math.sqrt(1e-5 + (1 + 9) / 2), rel=1e-6)


def test_normalize_rejects_sizes_that_do_not_cover_the_parameters():
    with pytest.raises(ValueError, match="sum to 4"):
        lopt.normalize_per_tensor(jnp.ones((5, 8)), (2, 2))


def test_update_equals_the_mlp_on_the_full_features(tiny):
    params, grad, momenta = tiny
    theta = lopt.init_theta(jax.random.PRNGKey(1))
    state = lopt.LOptState(momenta, jnp.asarray(12, jnp.int32))
    new_params, new_state = lopt.update(theta, state, params, grad, SIZES)
    feats = lopt.features(grad, params, new_state.momenta, state.step, SIZES)
    out = lopt.mlp(theta, feats)
    expected = params - 0.001 * out[:, 0] * jnp.exp(0.001 * out[:, 1])
    np.testing.assert_allclose(new_params, expected, rtol=1e-5, atol=1e-7)
    assert int(new_state.step) == 13
    assert not np.allclose(new_params, params), "a random theta must move the parameters"


def test_zero_theta_gives_the_zero_output_step(tiny):
    params, grad, momenta = tiny
    zero = jax.tree_util.tree_map(jnp.zeros_like, lopt.init_theta(jax.random.PRNGKey(0)))
    state = lopt.init_state(params)
    new_params, new_state = lopt.update(zero, state, params, grad, SIZES)
    # dir = mag = 0  ->  p - 0.001 * 0 * exp(0) = p exactly
    np.testing.assert_array_equal(np.asarray(new_params), np.asarray(params))
    np.testing.assert_allclose(new_state.momenta[:, 0], 0.9 * np.asarray(grad), rtol=1e-6)
    assert int(new_state.step) == 1
    # only the output bias set: every parameter moves by 0.001 * dir * exp(0.001 * mag)
    direction, magnitude = 2.5, 300.0
    biased = dict(zero, b3=jnp.asarray([direction, magnitude]))
    new_params, _ = lopt.update(biased, state, params, grad, SIZES)
    np.testing.assert_allclose(new_params, np.asarray(params) - 0.001 * direction * math.exp(0.3), rtol=1e-6)

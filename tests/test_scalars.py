"""Scalars on the wire: noise regenerated from episode keys equals the stored noise.

Linear task (T = 16, d = 3), N = 6 pairs, W = 4: 12 windows cross three episode ends
of every pair, so each GPES_K setting meets fresh episodes, new blocks and resets.

The noise of NRES, FullES and TES and the episode bookkeeping agree bit for bit, a
PES/GPES accumulator (a sum of noise blocks) to float32 rounding of the sum. The loss differences (and so
the gradients) agree to float32 rounding, RTOL = 1e-5: the stored and key-regenerated
windows are different XLA programs, and XLA may compile the task's own arithmetic in
them differently (e.g. hoisting ``B @ (theta + eps)`` out of the window's loop, or
contracting a multiply-add), which moves the last bits of a loss.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nres
from nres.estimators.scalars import pair_noise, scalar_bytes
from nres.particles import map_particle_axis

N, W, SIGMA, WINDOWS = 6, 4, 0.1, 12
RTOL = 1e-5
EXACT = ("nonfinite", "episode_key", "first_block", "last_block")
CASES = {"nres": ("nres", None), "pes": ("pes", None), "gpes_K8": ("gpes", 8), "fulles": ("fulles", None),
         "tes": ("tes", None)}


def _pair(task, name, k):
    make = lambda store: nres.make_estimator(name, task, num_particles=N, unroll_length=W, sigma=SIGMA,
                                             noise_period=k, store_noise=store)
    return make(True), make(False)


def _windows(estimator, state, theta):
    """WINDOWS windows under a moving theta: per window the (grad, scalars, stored xi)."""

    @jax.jit
    def one(state, theta):
        scalars, new_state, weights = estimator._window(state, theta)
        grad, info = estimator.gradient(scalars, theta, weights)
        return new_state, grad, scalars, weights, info

    out = []
    for i in range(WINDOWS):
        state, grad, scalars, weights, info = one(state, theta)
        out.append((grad, scalars, weights, info))
        theta = theta + 0.01 * jnp.sin(jnp.arange(theta.size) + i)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_noise_from_keys_equals_stored_noise(linear_task, linear_theta, case):
    stored, keyed = _pair(linear_task, *CASES[case])
    key = jax.random.PRNGKey(3)
    state_s, state_k = stored.init(key, linear_theta), keyed.init(key, linear_theta)
    assert state_k.eps is None and state_k.xi is None, "store_noise=False must keep no per-pair noise"
    np.testing.assert_array_equal(state_s.particles.tau, state_k.particles.tau)
    run_s, run_k = _windows(stored, state_s, linear_theta), _windows(keyed, state_k, linear_theta)
    theta = linear_theta
    for i, ((g_s, sc_s, xi_s, info_s), (g_k, sc_k, xi_k, info_k)) in enumerate(zip(run_s, run_k)):
        assert xi_k is None
        # The stored noise and the noise rebuilt from (key, block range) are the same bits;
        # a PES/GPES accumulator (a sum of blocks) to float32 rounding of that sum.
        regenerated = np.asarray(jax.jit(pair_noise, static_argnums=(1, 3))(theta, SIGMA, sc_s, stored.max_span))
        if stored.max_span == 1:
            np.testing.assert_array_equal(regenerated, np.asarray(xi_s), err_msg=f"window {i}")
        else:
            np.testing.assert_allclose(regenerated, np.asarray(xi_s), rtol=RTOL, atol=RTOL * SIGMA,
                                       err_msg=f"window {i}")
        for field in EXACT:
            np.testing.assert_array_equal(getattr(sc_s, field), getattr(sc_k, field), err_msg=f"{field}, window {i}")
        np.testing.assert_allclose(sc_k.diff, sc_s.diff, rtol=RTOL, atol=RTOL * np.abs(sc_s.diff).max())
        scale = np.abs(np.asarray(g_s)).max()
        np.testing.assert_allclose(np.asarray(g_k), np.asarray(g_s), rtol=RTOL, atol=RTOL * scale,
                                   err_msg=f"gradient, window {i}")
        assert float(info_k.train_loss) == pytest.approx(float(info_s.train_loss), rel=RTOL)
        theta = theta + 0.01 * jnp.sin(jnp.arange(theta.size) + i)
    blocks = np.stack([np.asarray(sc.last_block) for _, sc, _, _ in run_s])
    if case == "pes":  # the accumulator spans blocks 0..tau/W: several blocks were really summed
        assert blocks.max() >= 2 and np.all(np.stack([sc.first_block for _, sc, _, _ in run_s]) == 0)
    if case in ("nres", "fulles"):
        assert blocks.max() == 0, "one noise block per episode"


def test_estimate_without_stored_noise_equals_the_stored_path(linear_task, linear_theta):
    stored, keyed = _pair(linear_task, "pes", None)
    key = jax.random.PRNGKey(5)
    g_s, s_s, _ = jax.jit(stored.estimate)(stored.init(key, linear_theta), linear_theta)
    g_k, s_k, _ = jax.jit(keyed.estimate)(keyed.init(key, linear_theta), linear_theta)
    np.testing.assert_allclose(g_k, g_s, rtol=RTOL, atol=RTOL * np.abs(g_s).max())
    assert np.abs(g_s).max() > 0
    np.testing.assert_array_equal(s_k.particles.episode_key, s_s.particles.episode_key)


def test_a_shard_of_pairs_reports_the_slice_of_the_scalars(linear_task, linear_theta):
    """The window is per pair: running pairs 2..5 alone gives rows 2..5 of the whole
    (what a Ray worker or a process holding a shard of the pairs computes)."""
    estimator = _pair(linear_task, "nres", None)[1]
    state = estimator.init(jax.random.PRNGKey(1), linear_theta)
    whole, _ = estimator.window(state, linear_theta)
    shard = map_particle_axis(lambda x, axis: jax.lax.slice_in_dim(x, 2, N, axis=axis), state)
    part, _ = estimator.window(shard, linear_theta)
    for field in EXACT:
        np.testing.assert_array_equal(getattr(part, field), getattr(whole, field)[2:], err_msg=field)
    # float32 rounding only: the batch size may change how XLA blocks the task's matmuls
    np.testing.assert_allclose(part.diff, whole.diff[2:], rtol=RTOL, atol=RTOL * np.abs(whole.diff).max())


def test_store_noise_off_needs_aligned_windows(linear_task):
    with pytest.raises(ValueError, match="W must divide T"):
        nres.make_estimator("pes", linear_task, num_particles=2, unroll_length=3, sigma=0.1, store_noise=False)
    with pytest.raises(ValueError, match="K must be a multiple of W"):
        nres.make_estimator("gpes", linear_task, num_particles=2, unroll_length=4, sigma=0.1, noise_period=2,
                            store_noise=False)


def test_scalar_bytes_are_linear_in_pairs():
    assert scalar_bytes(1) == 29 and scalar_bytes(1000) == 29_000

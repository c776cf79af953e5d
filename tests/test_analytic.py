import jax
import numpy as np

from nres.diagnostics.analytic import block_gradients, expected_gradient, gpes_total_variance, window_moments
from nres.tasks.linear import horizon_loss


def test_blocks_sum_to_the_true_gradient(linear_task, linear_theta):
    true = jax.grad(lambda th: horizon_loss(linear_task, th))(linear_theta)
    for k in (1, 4, 16):
        blocks = block_gradients(linear_task, linear_theta, k)
        assert blocks.shape == (16, -(-16 // k), 3)
        np.testing.assert_allclose(expected_gradient(blocks), true, rtol=1e-4, atol=1e-5)


def test_future_blocks_do_not_affect_past_losses(linear_task, linear_theta):
    blocks = block_gradients(linear_task, linear_theta, 4)
    for t in range(16):
        assert np.all(blocks[t, t // 4 + 1 :] == 0)


def test_single_step_window_is_the_spec_formula(linear_task, linear_theta):
    """W = 1: tr Cov(g_t) = ||grad L_t||^2 + d m_t sum_b ||G_{t,b}||^2 (SPEC section 5)."""
    k, d = 4, 3
    blocks = block_gradients(linear_task, linear_theta, k)
    for t in (0, 5, 15):
        m = t // k + 1
        spec = np.sum(blocks[t].sum(0) ** 2) + d * m * np.sum(blocks[t] ** 2)
        assert np.isclose(window_moments(blocks, t, 1, k)[1], spec)


def test_nres_is_d_plus_one_times_the_squared_gradient_for_one_step(linear_task, linear_theta):
    blocks = block_gradients(linear_task, linear_theta, 16)
    for t in (0, 9):
        assert np.isclose(window_moments(blocks, t, 1, 16)[1], 4 * np.sum(blocks[t, 0] ** 2))


def test_particles_divide_the_variance(linear_task, linear_theta):
    blocks = block_gradients(linear_task, linear_theta, 4)
    assert np.isclose(gpes_total_variance(blocks, 4, 4, num_particles=10), gpes_total_variance(blocks, 4, 4) / 10)

import jax
import jax.numpy as jnp
import numpy as np

from nres.noise import antithetic, sample_noise


def test_noise_matches_theta_structure_and_scale():
    theta = {"w": jnp.zeros((50, 40)), "b": jnp.zeros((30,))}
    eps = sample_noise(jax.random.PRNGKey(0), theta, 0.3)
    assert jax.tree_util.tree_structure(eps) == jax.tree_util.tree_structure(theta)
    flat = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(eps)])
    n = flat.size
    # The sample std of n Gaussians has standard error sigma / sqrt(2n).
    se = 0.3 / np.sqrt(2 * n)
    assert abs(flat.std() - 0.3) < 5 * se, f"std {flat.std()} vs 0.3 (5 se = {5 * se}, n={n})"
    assert abs(flat.mean()) < 5 * 0.3 / np.sqrt(n)


def test_noise_is_deterministic_and_leaves_independent():
    theta = {"a": jnp.zeros(1000), "b": jnp.zeros(1000)}
    e1 = sample_noise(jax.random.PRNGKey(7), theta, 1.0)
    e2 = sample_noise(jax.random.PRNGKey(7), theta, 1.0)
    np.testing.assert_array_equal(e1["a"], e2["a"])
    assert not np.allclose(e1["a"], e1["b"])


def test_antithetic_pair():
    theta = jnp.array([1.0, 2.0])
    eps = jnp.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])  # [N=3, d=2]
    pair = antithetic(theta, eps)
    assert pair.shape == (2, 3, 2)
    np.testing.assert_allclose(pair[0], theta + eps)
    np.testing.assert_allclose(pair[1], theta - eps)

"""Policies: shapes, initialisations and bad names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nres.tasks.rl.policies import OBS_CLIP, ObsScale, ObsScaler, Policy, scale_obs


def test_linear_policy_is_m_times_obs_without_bias():
    policy = Policy("linear", obs_dim=3, action_dim=2)
    theta = {"M": jnp.arange(6.0).reshape(2, 3)}
    obs = jnp.array([1.0, -1.0, 2.0])
    np.testing.assert_allclose(policy.apply(theta, obs), theta["M"] @ obs)
    np.testing.assert_allclose(policy.apply(theta, jnp.zeros(3)), jnp.zeros(2))  # no bias


def test_zero_init_is_all_zeros():
    theta = Policy("linear", 8, 2, init="zeros").init_theta(jax.random.PRNGKey(0))
    assert theta["M"].shape == (2, 8) and not np.any(np.asarray(theta["M"]))


def test_truncated_normal_init_is_bounded_by_two_scales():
    scale = 0.03
    theta = Policy("linear", 17, 6, init="truncated_normal", init_scale=scale).init_theta(jax.random.PRNGKey(0))
    m = np.asarray(theta["M"])
    assert np.all(np.abs(m) <= 2 * scale + 1e-7)
    # 102 draws of a [-2, 2]-truncated normal (std 0.88): the sample std lies within 30% of it
    assert 0.7 * 0.88 * scale < m.std() < 1.3 * 0.88 * scale, m.std()


def test_variance_scaling_init_has_variance_scale_over_fan_in():
    # The reference code's HalfCheetah start: haiku VarianceScaling(scale, fan_in, truncated_normal).
    scale, fan_in, out = 0.03, 400, 50
    m = np.asarray(Policy("linear", fan_in, out, init="variance_scaling", init_scale=scale)
                   .init_theta(jax.random.PRNGKey(0))["M"], np.float64)
    target, n = scale / fan_in, m.size
    bound = 2 * (target ** 0.5) / 0.87962566
    assert np.all(np.abs(m) <= bound * (1 + 1e-6)), (np.abs(m).max(), bound)
    # n = 20,000 draws: the sample variance's relative std is below sqrt(2 / n) = 1.0% (the
    # truncated normal's kurtosis is under the normal's 3); allow 5 of them.
    tolerance = 5 * (2 / n) ** 0.5
    assert abs(m.var() / target - 1) < tolerance, f"var {m.var():.3e} vs {target:.3e}, n={n}, tol {tolerance:.3f}"


def test_variance_scaling_mlp_biases_start_at_zero():
    theta = Policy("mlp", obs_dim=8, action_dim=2, hidden=5, init="variance_scaling",
                   init_scale=1.0).init_theta(jax.random.PRNGKey(1))
    assert not np.any(np.asarray(theta["b1"])) and not np.any(np.asarray(theta["b2"]))
    assert np.all(np.abs(np.asarray(theta["W2"])) <= 2 * (1 / 5) ** 0.5 / 0.87962566 + 1e-6)  # fan_in = hidden
    assert np.any(np.asarray(theta["W1"])) and np.any(np.asarray(theta["W2"]))


def test_mlp_policy_shapes():
    policy = Policy("mlp", obs_dim=8, action_dim=2, hidden=5, init="truncated_normal", init_scale=0.5)
    theta = policy.init_theta(jax.random.PRNGKey(1))
    assert {k: v.shape for k, v in theta.items()} == {"W1": (5, 8), "b1": (5,), "W2": (2, 5), "b2": (2,)}
    assert policy.apply(theta, jnp.ones(8)).shape == (2,)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_action_bounds_clip_each_coordinate(kind):
    bounds = ((-0.4, -1.0), (0.4, 2.0))
    clipped, free = (Policy(kind, obs_dim=3, action_dim=2, hidden=4, init="truncated_normal", init_scale=3.0,
                            action_bounds=b) for b in (bounds, None))
    theta = free.init_theta(jax.random.PRNGKey(0))
    for obs in (jnp.array([5.0, -7.0, 9.0]), jnp.array([-5.0, 7.0, -9.0]), jnp.array([1e-3, 0.0, -1e-3])):
        raw = np.asarray(free.apply(theta, obs))
        np.testing.assert_array_equal(np.asarray(clipped.apply(theta, obs)), np.clip(raw, *map(np.float32, bounds)))
    assert np.any(np.abs(np.asarray(free.apply(theta, jnp.array([5.0, -7.0, 9.0])))) > 0.4)  # the clip acted


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "rnn"}, "unknown policy 'rnn'"),
    ({"init": "ones"}, "unknown init 'ones'"),
    ({"init_scale": -1.0}, "init_scale must be >= 0"),
    ({"action_bounds": ((-1.0,), (1.0, 1.0))}, "action_bounds must be"),
])
def test_bad_policy_options_name_the_value(kwargs, message):
    options = {"kind": "linear", "obs_dim": 2, "action_dim": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        Policy(**options)


def test_obs_scaler_standardises_and_defaults_to_identity():
    obs = jnp.array([2.0, 4.0])
    np.testing.assert_allclose(ObsScaler()(obs), obs)
    np.testing.assert_allclose(ObsScaler(np.array([1.0, 2.0]), np.array([0.5, 2.0]))(obs), [2.0, 1.0])


def test_running_normalised_observations_are_clipped():
    # A coordinate seen nearly constant (std 1e-5) that moves once would otherwise feed the
    # policy 1e5 (Humanoid's contact forces: losses 100x larger within a few updates).
    scale = ObsScale(jnp.zeros(3, jnp.float32), jnp.array([1e-5, 1.0, 2.0], jnp.float32))
    out = np.asarray(scale_obs(scale, jnp.array([1.0, -50.0, 3.0], jnp.float32)))
    np.testing.assert_allclose(out, [OBS_CLIP, -OBS_CLIP, 1.5])

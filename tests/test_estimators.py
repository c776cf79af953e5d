"""Unbiasedness, variance and identities of the online ES family on the linear task.

The linear-quadratic task (T = 16, d = 3) has per-step losses quadratic in every noise
block, so (SPEC section 2) every GPES_K and FullES is exactly unbiased for
``grad L(theta)`` and the total variance of :mod:`nres.diagnostics.analytic` is exact.
Each estimator is sampled M = 20000 times with one pair (N = 1), each sample with
fresh noise and a fresh step-unlocked position.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nres
from nres.diagnostics.analytic import block_gradients, gpes_total_variance
from nres.tasks.linear import horizon_loss

W = 4
SIGMA = 0.1
M = 20000
Z = 4.5  # two-sided normal quantile: per-check false-alarm rate below 1e-5

CASES = {
    "gpes_K1": ("gpes", 1),
    "pes": ("pes", None),  # K = W = 4
    "gpes_K8": ("gpes", 8),
    "nres": ("nres", None),  # K >= T = 16
    "fulles": ("fulles", None),
    "tes": ("tes", None),
}
NOISE_PERIOD = {"gpes_K1": 1, "pes": W, "gpes_K8": 8, "nres": 16, "fulles": 16}


def _estimator(task, name, noise_period):
    return nres.make_estimator(name, task, num_particles=1, unroll_length=W, sigma=SIGMA, noise_period=noise_period)


def _draw(task, theta, estimator, seed=1):
    def one(key):
        state = estimator.init(key, theta)
        grad, _, _ = estimator.estimate(state, theta)
        return grad

    keys = jax.random.split(jax.random.PRNGKey(seed), M)
    return np.asarray(jax.jit(jax.vmap(one))(keys), np.float64)


@pytest.fixture(scope="module")
def samples(linear_task, linear_theta):
    return {case: _draw(linear_task, linear_theta, _estimator(linear_task, *spec)) for case, spec in CASES.items()}


@pytest.fixture(scope="module")
def true_grad(linear_task, linear_theta):
    return np.asarray(jax.grad(lambda th: horizon_loss(linear_task, th))(linear_theta), np.float64)


@pytest.mark.parametrize("case", ["gpes_K1", "pes", "gpes_K8", "nres", "fulles"])
def test_unbiased_for_the_true_gradient(samples, true_grad, case):
    g = samples[case]
    se = g.std(axis=0, ddof=1) / np.sqrt(M)
    err = np.abs(g.mean(axis=0) - true_grad)
    assert np.all(err < Z * se), f"{case}: |mean - grad| = {err} exceeds {Z} se = {Z * se} (M={M})"


def _truncated_gradient(task, theta):
    """What TES estimates: the window losses' gradient with the window's start state held fixed."""

    def window_loss(th, start):
        def body(state, t):
            state = task.step(th, state, t, None, None)
            return state, task.loss(th, state, t, None)

        def rollout_to(tau):
            def step(state, t):
                return jnp.where(t < tau, task.step(theta, state, t, None, None), state), None

            return jax.lax.scan(step, task.init_state(None), jnp.arange(task.horizon))[0]

        s0 = jax.lax.stop_gradient(rollout_to(start))
        _, losses = jax.lax.scan(body, s0, start + jnp.arange(W))
        return jnp.mean(losses)

    starts = jnp.arange(0, task.horizon, W)
    return np.asarray(jnp.mean(jax.vmap(jax.grad(window_loss), in_axes=(None, 0))(theta, starts), 0), np.float64)


def test_tes_is_biased_and_estimates_the_truncated_gradient(linear_task, linear_theta, samples, true_grad):
    g = samples["tes"]
    se = g.std(axis=0, ddof=1) / np.sqrt(M)
    truncated = _truncated_gradient(linear_task, linear_theta)
    err_truncated = np.abs(g.mean(axis=0) - truncated)
    assert np.all(err_truncated < Z * se), f"TES mean off the truncated gradient by {err_truncated} (bound {Z * se})"
    err_true = np.abs(g.mean(axis=0) - true_grad)
    assert np.any(err_true > 10 * Z * se), f"TES should be visibly biased: |mean - grad| = {err_true}, se = {se}"


def _total_variance_with_se(g):
    """tr Cov estimate and its standard error, from the per-sample squared deviations."""
    dev2 = np.sum((g - g.mean(axis=0)) ** 2, axis=1)
    return dev2.mean() * M / (M - 1), dev2.std(ddof=1) / np.sqrt(M)


@pytest.mark.parametrize("case", ["gpes_K1", "pes", "gpes_K8", "nres", "fulles"])
def test_total_variance_matches_the_formula(linear_task, linear_theta, samples, case):
    k = NOISE_PERIOD[case]
    blocks = block_gradients(linear_task, linear_theta, k)
    if case == "fulles":
        predicted = gpes_total_variance(blocks, linear_task.horizon, k, step_unlocked=False)
    else:
        predicted = gpes_total_variance(blocks, W, k)
    empirical, se = _total_variance_with_se(samples[case])
    assert abs(empirical - predicted) < 5 * se, (
        f"{case}: empirical tr Cov {empirical:.2f} vs formula {predicted:.2f}; bound 5 se = {5 * se:.2f} (M={M})"
    )


def test_variance_ordering_nres_lowest(linear_task, linear_theta, samples):
    """K divides K' => Var(GPES_K') <= Var(GPES_K); here 1 | 4 | 8 | 16 (NRES)."""
    order = ["gpes_K1", "pes", "gpes_K8", "nres"]
    predicted = [gpes_total_variance(block_gradients(linear_task, linear_theta, NOISE_PERIOD[c]), W, NOISE_PERIOD[c])
                 for c in order]
    assert all(a > b for a, b in zip(predicted, predicted[1:])), f"formula not ordered: {predicted}"
    measured = [_total_variance_with_se(samples[c]) for c in order]
    for (v_hi, se_hi), (v_lo, se_lo), hi, lo in zip(measured, measured[1:], order, order[1:]):
        gap = 3 * np.hypot(se_hi, se_lo)
        assert v_hi - v_lo > gap, f"Var({hi})={v_hi:.1f} should exceed Var({lo})={v_lo:.1f} by > 3 se ({gap:.1f})"


def _grads_for_keys(task, theta, estimator, n=64):
    def one(key):
        return estimator.estimate(estimator.init(key, theta), theta)[0]

    return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(5), n)))


def test_gpes_with_k_at_least_t_is_bit_identical_to_nres(linear_task, linear_theta):
    ref = _grads_for_keys(linear_task, linear_theta, nres.nres(linear_task, 1, W, SIGMA))
    for k in (16, 17, 64):
        got = _grads_for_keys(linear_task, linear_theta, nres.gpes(linear_task, 1, W, SIGMA, noise_period=k))
        np.testing.assert_array_equal(got, ref, err_msg=f"GPES K={k}")


def test_pes_is_gpes_with_k_equal_w(linear_task, linear_theta):
    ref = _grads_for_keys(linear_task, linear_theta, nres.pes(linear_task, 1, W, SIGMA))
    got = _grads_for_keys(linear_task, linear_theta, nres.gpes(linear_task, 1, W, SIGMA, noise_period=W))
    np.testing.assert_array_equal(got, ref)
    other = _grads_for_keys(linear_task, linear_theta, nres.gpes(linear_task, 1, W, SIGMA, noise_period=2))
    assert not np.array_equal(other, ref)


def test_nres_keeps_no_accumulator_and_gpes_does(linear_task, linear_theta):
    assert nres.nres(linear_task, 2, W, SIGMA).init(jax.random.PRNGKey(0), linear_theta).xi is None
    assert nres.gpes(linear_task, 2, W, SIGMA, 2).init(jax.random.PRNGKey(0), linear_theta).xi is not None


def test_window_estimate_normalisation(linear_task, linear_theta):
    """grad = sum_{i,t} (L+ - L-) xi / (2 sigma^2 N W): N pairs average their single estimates."""
    est4 = nres.nres(linear_task, 4, W, SIGMA)
    state = est4.init(jax.random.PRNGKey(2), linear_theta)
    grad4, _, _ = est4.estimate(state, linear_theta)
    est1 = nres.nres(linear_task, 1, W, SIGMA)
    singles = []
    for i in range(4):
        pick = jax.tree_util.tree_map(lambda x: x[i : i + 1], state)
        pick = pick._replace(particles=pick.particles._replace(inner=state.particles.inner[:, i : i + 1]))
        singles.append(est1.estimate(pick, linear_theta)[0])
    np.testing.assert_allclose(grad4, np.mean(singles, axis=0), rtol=1e-5, atol=1e-6)


def test_same_seed_same_estimates(linear_task, linear_theta):
    est = nres.pes(linear_task, 8, W, SIGMA)
    a = est.estimate(est.init(jax.random.PRNGKey(11), linear_theta), linear_theta)[0]
    b = est.estimate(est.init(jax.random.PRNGKey(11), linear_theta), linear_theta)[0]
    c = est.estimate(est.init(jax.random.PRNGKey(12), linear_theta), linear_theta)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(unroll_length=0), "unroll_length.*0"),
        (dict(unroll_length=-2), "unroll_length.*-2"),
        (dict(unroll_length=17), "unroll_length.*T=16.*17"),
        (dict(sigma=0.0), "sigma.*0.0"),
        (dict(sigma=-1.0), "sigma.*-1.0"),
        (dict(num_particles=0), "num_particles.*0"),
        (dict(num_particles=-5), "num_particles.*-5"),
        (dict(name="adamw"), "unknown estimator 'adamw'"),
        (dict(name="gpes"), "needs noise_period"),
        (dict(name="gpes", noise_period=0), "noise_period.*0"),
        (dict(name="nres", noise_period=4), "only to 'gpes'"),
    ],
)
def test_bad_configuration_raises_naming_the_value(linear_task, kwargs, match):
    args = dict(name="nres", num_particles=2, unroll_length=4, sigma=0.1, noise_period=None) | kwargs
    name = args.pop("name")
    with pytest.raises(ValueError, match=match):
        nres.make_estimator(name, linear_task, **args)


def test_step_counting(linear_task, linear_theta):
    est = nres.nres(linear_task, 5, W, SIGMA)
    assert est.env_steps_per_update == 2 * 5 * W and est.sequential_steps_per_update == W
    full = nres.fulles(linear_task, 5, SIGMA)
    assert full.env_steps_per_update == 2 * 5 * 16 and full.sequential_steps_per_update == 16
    assert full.burn_in_env_steps(full.init(jax.random.PRNGKey(0), linear_theta)) == 0


@pytest.mark.parametrize("name, k", [("nres", None), ("pes", None), ("tes", None), ("gpes", 8), ("fulles", None)])
def test_window_aligned_path_equals_the_per_step_rules(linear_task, linear_theta, name, k):
    """The once-per-window fast path gives the per-step algorithm's estimate and state."""
    est = nres.make_estimator(name, linear_task, num_particles=6, unroll_length=W, sigma=SIGMA, noise_period=k)
    assert est.window_aligned
    state = est.init(jax.random.PRNGKey(4), linear_theta)
    if name == "tes":  # both paths expect the pair synchronised at the window start
        inner = jax.tree_util.tree_map(lambda x: jnp.stack([x[0], x[0]]), state.particles.inner)
        state = state._replace(particles=state.particles._replace(inner=inner))
    for _ in range(5):  # several windows, crossing episode ends
        fast = est.estimate(state, linear_theta)  # the window path (scalars + gradient)
        slow = est._estimate_per_step(state, linear_theta)
        np.testing.assert_allclose(fast[0], slow[0], rtol=1e-5, atol=1e-5)
        for a, b in zip(jax.tree_util.tree_leaves(fast[1]), jax.tree_util.tree_leaves(slow[1])):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fast[2].train_loss, slow[2].train_loss, rtol=1e-5)
        state = fast[1]
        if name == "tes":
            inner = jax.tree_util.tree_map(lambda x: jnp.stack([x[0], x[0]]), state.particles.inner)
            state = state._replace(particles=state.particles._replace(inner=inner))

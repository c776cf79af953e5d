import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nres
from nres.noise import sample_noise
from nres.particles import advance, init_particles, noise_key, step_key, step_pairs, unlocked_positions
from nres.task import Task
from nres.tree import selection_size

T, W, N = 16, 4, 64


def test_unlocked_positions_are_multiples_of_w_covering_the_horizon():
    tau = np.asarray(unlocked_positions(jax.random.PRNGKey(0), 2000, horizon=T, unroll_length=W))
    assert np.all(tau % W == 0)
    assert set(tau.tolist()) == set(range(0, T, W))
    # Uniform: each of the 4 positions has probability 1/4; binomial sd = sqrt(2000 * 3/16).
    counts = np.bincount(tau // W)
    bound = 5 * np.sqrt(2000 * 0.25 * 0.75)
    assert np.all(np.abs(counts - 500) < bound), f"counts {counts} vs 500 +- {bound}"


def test_unlocked_positions_when_w_does_not_divide_t():
    tau = np.asarray(unlocked_positions(jax.random.PRNGKey(1), 500, horizon=10, unroll_length=4))
    assert set(tau.tolist()) == {0, 4, 8}


@pytest.fixture(scope="module")
def nres_after_burn_in(linear_task, linear_theta):
    est = nres.nres(linear_task, num_particles=N, unroll_length=W, sigma=0.1)
    return est, jax.jit(est.init)(jax.random.PRNGKey(3), linear_theta)


def test_burn_in_states_are_really_unrolled(linear_task, linear_theta, nres_after_burn_in):
    """State i after init equals unrolling tau_i steps under theta +/- eps_i by hand."""
    est, state = nres_after_burn_in
    tau = np.asarray(state.particles.tau)
    assert np.all(tau % W == 0) and tau.max() > 0
    for i in range(8):
        key = state.particles.episode_key[i]
        eps = sample_noise(noise_key(key, 0), linear_theta, 0.1)
        for member, sign in ((0, 1.0), (1, -1.0)):
            s = linear_task.init_state(None)
            for t in range(tau[i]):
                s = linear_task.step(linear_theta + sign * eps, s, t, step_key(key, t), None)
            np.testing.assert_allclose(state.particles.inner[member, i], s, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.eps[i], eps if tau[i] > 0 else 0 * eps, rtol=1e-6)


@pytest.mark.parametrize("name", ["pes", "tes"])
def test_burn_in_noise_rules(linear_task, linear_theta, name):
    """PES draws a fresh noise block every window and sums them in xi; TES draws block 0
    at tau = 0 and keeps it, its members never restarted, as if the burn-in were one window."""
    est = nres.make_estimator(name, linear_task, num_particles=8, unroll_length=W, sigma=0.1)
    state = jax.jit(est.init)(jax.random.PRNGKey(5), linear_theta)
    tau = np.asarray(state.particles.tau)
    assert tau.max() >= 2 * W
    block = (lambda t: t // W) if name == "pes" else (lambda t: 0)
    for i in range(8):
        key = state.particles.episode_key[i]
        noise = lambda t: sample_noise(noise_key(key, block(t)), linear_theta, 0.1)
        for member, sign in ((0, 1.0), (1, -1.0)):
            s = linear_task.init_state(None)
            for t in range(tau[i]):
                s = linear_task.step(linear_theta + sign * noise(t), s, t, step_key(key, t), None)
            np.testing.assert_allclose(state.particles.inner[member, i], s, rtol=1e-5, atol=1e-6)
        if tau[i]:
            np.testing.assert_array_equal(state.eps[i], noise(tau[i] - 1))
        if name == "pes":
            xi = sum((noise(t) for t in range(0, tau[i], W)), 0 * linear_theta)
            np.testing.assert_allclose(state.xi[i], xi, rtol=1e-6)


def test_burn_in_env_steps_counts_two_per_particle_step(nres_after_burn_in):
    est, state = nres_after_burn_in
    assert est.burn_in_env_steps(state) == 2 * int(np.sum(state.particles.tau))


def _data_task(horizon=5, size=3):
    """A task whose step uses its key and its data batch: pair members must agree."""

    def step(theta, state, t, key, batch):
        return state + theta * batch + jax.random.normal(key, state.shape)

    return Task(
        init_theta=lambda k: jnp.ones(size),
        init_state=lambda k: jax.random.normal(k, (size,)),
        step=step,
        loss=lambda theta, s, t, batch: jnp.sum(s**2) + jnp.sum(batch),
        horizon=horizon,
        sample_batch=lambda k, t: jax.random.uniform(k, (size,)),
    )


def test_pair_members_share_keys_data_and_initial_state():
    task = _data_task()
    particles = init_particles(task, jax.random.PRNGKey(0), 4)
    np.testing.assert_array_equal(particles.inner[0], particles.inner[1])
    assert not np.allclose(particles.inner[0, 0], particles.inner[0, 1])  # episodes differ
    thetas = jnp.ones((2, 4, 3))  # identical parameters for both members
    inner, losses = step_pairs(task, thetas, particles)
    np.testing.assert_array_equal(inner[0], inner[1])
    np.testing.assert_array_equal(losses[0], losses[1])


def test_reset_rule_at_horizon_and_on_nonfinite_loss():
    task = _data_task(horizon=3)
    particles = init_particles(task, jax.random.PRNGKey(0), 3)
    particles = particles._replace(tau=jnp.array([2, 0, 1], jnp.int32))
    thetas = jnp.ones((2, 3, 3))
    inner, losses = step_pairs(task, thetas, particles)
    losses = losses.at[1, 2].set(jnp.nan)  # pair 2 turns non-finite in one member
    new, done = advance(task, particles, inner, losses)
    np.testing.assert_array_equal(done, [True, False, True])
    np.testing.assert_array_equal(new.tau, [0, 1, 0])
    assert not np.array_equal(new.episode_key[0], particles.episode_key[0])
    np.testing.assert_array_equal(new.episode_key[1], particles.episode_key[1])
    np.testing.assert_array_equal(new.inner[:, 1], inner[:, 1])
    fresh = init_particles(task, jax.random.PRNGKey(9), 1)  # structure only
    assert fresh.inner.shape[2:] == new.inner.shape[2:]
    # A reset pair starts from its new episode's initial state in both members.
    np.testing.assert_array_equal(new.inner[0, 0], new.inner[1, 0])


@pytest.fixture(scope="module")
def many_pairs_reset():
    """64 pairs, T = 40, states of 40 scalars (too large together to reset every pair): the
    compiled reset rule (``advance``) and the rule written out for every pair, then selected."""
    task, n = _data_task(horizon=40, size=40), 64

    def rule(keys, inner, done):
        fresh_keys = jax.vmap(lambda k: jax.random.fold_in(k, 4))(keys)
        fresh = jax.vmap(lambda k: task.init_state(jax.random.fold_in(k, 3)))(fresh_keys)
        keys = jnp.where(done[:, None], fresh_keys, keys)
        return keys, jnp.where(done[None, :, None], fresh[None], inner)

    step = jax.jit(lambda particles, inner: advance(task, particles, inner, jnp.zeros((2, n)), selective=True))
    return task, init_particles(task, jax.random.PRNGKey(1), n), step, jax.jit(rule)


@pytest.mark.parametrize("resets", [0, 3, 11, 40], ids=["none", "few", "bound", "many"])
def test_reset_of_a_few_pairs_among_many_equals_the_rule(many_pairs_reset, resets):
    """About 64/40 pairs reset per step, so the reset work runs on the resetting pairs only
    (up to selection_size(64, 1/40) = 11 of them); any count gives the rule's result bit
    for bit: new key fold_in(k, 4) and that episode's initial state in both members."""
    task, particles, step, rule = many_pairs_reset
    n = particles.tau.shape[0]
    assert selection_size(n, 1 / task.horizon, 2 * 40 + 2) == 11
    resetting = np.random.default_rng(resets).permutation(n)[:resets]
    particles = particles._replace(tau=jnp.zeros(n, jnp.int32).at[resetting].set(task.horizon - 1))
    inner = particles.inner + 1.0
    new, done = step(particles, inner)
    keys, want = rule(particles.episode_key, inner, done)
    assert int(np.sum(done)) == resets
    np.testing.assert_array_equal(new.episode_key, keys)
    np.testing.assert_array_equal(new.inner, want)


@pytest.mark.parametrize("num_particles", [1, 7])
def test_burn_in_matches_hand_unrolls_for_any_particle_count(linear_task, linear_theta, num_particles):
    est = nres.nres(linear_task, num_particles=num_particles, unroll_length=W, sigma=0.1)
    state = est.init(jax.random.PRNGKey(num_particles), linear_theta)
    for i in range(num_particles):
        key, tau = state.particles.episode_key[i], int(state.particles.tau[i])
        eps = sample_noise(noise_key(key, 0), linear_theta, 0.1)
        s = linear_task.init_state(None)
        for t in range(tau):
            s = linear_task.step(linear_theta + eps, s, t, step_key(key, t), None)
        np.testing.assert_allclose(state.particles.inner[0, i], s, rtol=1e-5, atol=1e-6)


def test_burn_in_handles_states_with_zero_size_leaves():
    """MJX states carry empty arrays (no contacts); the per-pair selection must keep them."""
    task = Task(
        init_theta=lambda k: jnp.ones(2),
        init_state=lambda k: {"x": jnp.zeros(2), "contacts": jnp.zeros((0, 3))},
        step=lambda theta, s, t, k, b: {"x": s["x"] + theta, "contacts": s["contacts"]},
        loss=lambda theta, s, t, b: jnp.sum(s["x"] ** 2),
        horizon=8,
    )
    state = nres.nres(task, num_particles=6, unroll_length=2, sigma=0.1).init(jax.random.PRNGKey(0), jnp.ones(2))
    assert state.particles.inner["contacts"].shape == (2, 6, 0, 3)
    tau = np.asarray(state.particles.tau)
    np.testing.assert_allclose(state.particles.inner["x"][0, :, 0] + state.particles.inner["x"][1, :, 0], 2.0 * tau,
                               rtol=1e-5)


@pytest.mark.parametrize("num_particles", [8, 3000])  # a small state: a select; a large one: a branch
def test_burn_in_select_keeps_burning_pairs_only_in_burn_in_windows(linear_task, linear_theta, num_particles):
    from nres.particles import burn_in_select
    from nres.tree import SMALL_SELECTION, tree_size

    est = nres.nres(linear_task, num_particles=num_particles, unroll_length=W, sigma=0.1)
    old, _ = est.start(jax.random.PRNGKey(2), linear_theta)
    hold = jnp.arange(num_particles, dtype=jnp.int32) % 4  # burn-in windows left per pair
    old = old._replace(particles=old.particles._replace(tau=W * (jnp.arange(num_particles) % 3)))
    new = est.estimate(old, linear_theta, True)[1]
    assert (tree_size(old) > SMALL_SELECTION) == (num_particles == 3000)
    select = jax.jit(lambda burning: burn_in_select(new, old, hold, jnp.int32(1), W, burning))
    for got, want in zip(jax.tree_util.tree_leaves(select(False)), jax.tree_util.tree_leaves(new)):
        np.testing.assert_array_equal(got, want)  # a training window keeps every pair's new state
    runs = (1 < np.asarray(hold)) & (np.arange(num_particles) % 3 == 1)
    assert 0 < runs.sum() < num_particles
    got = select(True)
    np.testing.assert_array_equal(got.particles.tau, np.where(runs, new.particles.tau, old.particles.tau))
    np.testing.assert_array_equal(got.particles.inner, np.where(runs[None, :, None], new.particles.inner, old.particles.inner))

"""Early termination (``Task.done``): episode lengths, step counts, the reset rule per
estimator, and unbiasedness when episodes end at random times.

The toy task: ``x_{t+1} = A x_t + theta`` from ``x_0 = 0`` (``d = 2``), per-step loss
``L_t = |x_{t+1} - C|^2``, and an episode length ``len`` drawn uniformly from
``1 .. T`` with the episode's key (so both members of a pair end together, and the
length is independent of the noise). The loss of step ``t`` counts iff ``len > t``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nres
from nres.estimators.scalars import pair_noise
from nres.noise import antithetic, sample_noise
from nres.particles import Particles, advance, live_members, noise_key, replay_episode, step_pairs
from nres.task import Task, TaskShapeError, check_shapes

T, W, D = 8, 2, 2
A = 0.5
C = jnp.asarray([1.0, -1.0], jnp.float32)
THETA = jnp.asarray([0.3, 0.2], jnp.float32)
SIGMA = 0.1


def _toy(horizon=T, name="toy-ends"):
    def init_state(key):
        return {"x": jnp.zeros(D, jnp.float32), "left": jax.random.randint(key, (), 1, horizon + 1)}

    def step(theta, state, t, key, batch):
        return {"x": A * state["x"] + theta, "left": state["left"] - 1}

    def loss(theta, state, t, batch):
        return jnp.sum((state["x"] - C) ** 2)

    return Task(init_theta=lambda key: THETA, init_state=init_state, step=step, loss=loss, horizon=horizon,
                name=name, done=lambda state: state["left"] <= 0)


TASK = _toy()


def _lengths(state):
    """Episode length of every pair at the start of its current episode: ``tau + left``."""
    return np.asarray(state.particles.tau) + np.asarray(state.particles.inner["left"][0])


def test_done_must_return_a_bool_scalar():
    bad = TASK._replace(done=lambda state: state["x"], name="toy-bad-done")
    with pytest.raises(TaskShapeError, match="done returned"):
        check_shapes(bad)


def test_replayed_losses_are_zero_after_the_end():
    key = jax.random.PRNGKey(4)
    losses = np.asarray(replay_episode(TASK, lambda t: THETA, key))
    length = int(TASK.init_state(jax.random.fold_in(key, 3))["left"])
    assert np.all(losses[length:] == 0) and np.all(losses[:length] > 0), (length, losses)


def test_a_done_member_is_absorbed_and_the_pair_resets_when_both_are():
    """done depends on theta here, so the two members of a pair end at different steps."""
    task = TASK._replace(done=lambda s: s["x"][0] > 1.0, name="toy-theta-done")
    n = 3
    x = jnp.asarray([[[2.0, 0.0], [0.0, 0.0], [2.0, 0.0]],     # member 0: done, live, done
                     [[0.0, 0.0], [0.0, 0.0], [2.0, 0.0]]])    # member 1: live, live, done
    inner = {"x": x, "left": jnp.full((2, n), 5, jnp.int32)}
    particles = Particles(inner, jnp.full((n,), 2, jnp.int32), jax.random.split(jax.random.PRNGKey(0), n))
    np.testing.assert_array_equal(live_members(task, inner), [[False, True, False], [True, True, False]])
    thetas = antithetic(THETA, jnp.zeros((n, D)))
    new, losses = step_pairs(task, thetas, particles)
    np.testing.assert_array_equal(new["x"][0, 0], x[0, 0])  # absorbed: not stepped
    np.testing.assert_array_equal(new["x"][1, 0], A * x[1, 0] + THETA)
    assert losses[0, 0] == 0 and losses[1, 0] > 0 and np.all(np.asarray(losses[:, 2]) == 0)
    advanced, done = advance(task, particles, new, losses)
    np.testing.assert_array_equal(done, [False, False, True])  # pair 2: both members done
    np.testing.assert_array_equal(advanced.tau, [3, 3, 0])
    _, done_tes = advance(task, particles, new, losses, lead_member=True)
    np.testing.assert_array_equal(done_tes, [True, False, True])  # TES: member 0 decides


@functools.partial(jax.jit, static_argnums=1)
def _replay(keys, period):
    """Per-step losses ``[n, 2, T]`` of the episodes of ``keys`` ``[n, 2]`` under ``theta +/-``
    the noise blocks of period ``period``."""

    def one(key, sign):
        return replay_episode(TASK, lambda t: THETA + sign * sample_noise(noise_key(key, t // period), THETA, SIGMA),
                              key)

    return jax.vmap(lambda k: jax.vmap(lambda sign: one(k, sign))(jnp.asarray([1.0, -1.0])))(keys)


@pytest.mark.parametrize("name", ["nres", "pes", "tes", "gpes"])
def test_window_aligned_episode_lengths_steps_and_resets(name):
    """Per window: a pair whose episode (length len) ends inside the window idles to its
    end and starts a new episode there; it took 2 min(W, len - tau) steps; its window
    losses are the replayed episode's over the steps taken; NRES/PES noise is cleared."""
    n = 32
    est = nres.make_estimator(name, TASK, num_particles=n, unroll_length=W, sigma=SIGMA,
                              noise_period=2 * W if name == "gpes" else None, step_unlocked=False)
    assert est.window_aligned
    state, _ = est.start(jax.random.PRNGKey(1), THETA)
    window = jax.jit(est.window)
    estimate = jax.jit(est.estimate)
    resets = 0
    for _ in range(10):
        tau, keys, length = np.asarray(state.particles.tau), np.asarray(state.particles.episode_key), _lengths(state)
        scalars, new = window(state, THETA)
        info = estimate(state, THETA)[2]
        steps = 2 * np.minimum(W, length - tau)
        np.testing.assert_array_equal(scalars.steps, steps)
        assert int(info.env_steps) == steps.sum() <= est.env_steps_per_update
        ended = (length <= tau + W) | (tau + W >= T)
        np.testing.assert_array_equal(new.particles.tau, np.where(ended, 0, tau + W))
        assert np.all(np.any(np.asarray(new.particles.episode_key) != keys, axis=1) == ended)
        resets += ended.sum()
        if name != "tes":  # window losses = the replayed episode's steps tau .. tau + W - 1 (zero after len)
            period = {"nres": T, "pes": W, "gpes": 2 * W}[name]
            losses = np.asarray(_replay(jnp.asarray(keys[:4]), period))  # [4, 2, T]
            for i in range(4):
                total = losses[i, :, tau[i]:tau[i] + W].sum()
                np.testing.assert_allclose(float(scalars.loss[i]), total, rtol=1e-5)
        if name in ("nres", "pes", "gpes"):
            for field in ("eps",) + (("xi",) if new.xi is not None else ()):
                assert np.all(np.asarray(getattr(new, field))[ended] == 0)
        state = new
    assert resets > n, "too few episode ends to test anything"


def _chain_expectation(windows: int) -> np.ndarray:
    """Exact mean over windows ``0 .. windows - 1`` of the expected gradient of a pair
    that starts an episode at window 0 (NRES, PES, GPES with W | K: each unbiased per step).

    Window position ``j`` (``tau = j W``) moves to ``j + 1`` with probability
    ``P(len > (j + 1) W) / P(len > j W)`` (if ``j + 1 < T / W``), else to 0; the window's
    expected gradient there is ``(1/W) sum_{t in window} P(len > t | len > j W) grad L_t``.
    """
    survive = lambda t: (T - t) / T  # len uniform on 1 .. T
    s = lambda k: (1 - A**k) / (1 - A)
    theta, c = np.asarray(THETA, np.float64), np.asarray(C, np.float64)
    grad_l = lambda t: 2 * s(t + 1) * (theta * s(t + 1) - c)
    h = T // W
    g = [sum(survive(t) / survive(j * W) * grad_l(t) for t in range(j * W, j * W + W)) / W for j in range(h)]
    p, total = np.eye(h)[0], np.zeros(D)
    for _ in range(windows):
        total += sum(p[j] * g[j] for j in range(h))
        nxt = np.zeros(h)
        for j in range(h):
            stay = survive((j + 1) * W) / survive(j * W) if j + 1 < h else 0.0
            if j + 1 < h:
                nxt[j + 1] += p[j] * stay
            nxt[0] += p[j] * (1 - stay)
        p = nxt
    return total / windows


@pytest.mark.parametrize("name,noise_period", [("nres", None), ("pes", None), ("gpes", 2 * W), ("fulles", None)])
def test_unbiased_with_random_episode_ends(name, noise_period):
    """Mean gradient over 2000 independent pairs and 12 windows (FullES: 1 window of T)
    against the exact expectation; tolerance 4.5 standard errors of the per-pair means
    (pairs are independent), i.e. a false alarm below 1e-5 per component."""
    n, windows = 2000, 12 if name != "fulles" else 1
    est = nres.make_estimator(name, TASK, num_particles=n, unroll_length=W, sigma=SIGMA, noise_period=noise_period,
                              **({} if name == "fulles" else {"step_unlocked": False}))
    state, _ = est.start(jax.random.PRNGKey(11), THETA)
    window = jax.jit(est.window)
    noise = jax.jit(lambda scalars: pair_noise(THETA, SIGMA, scalars, est.max_span))
    gradient = jax.jit(lambda scalars: est.gradient(scalars, THETA)[0])
    per_pair = np.zeros((n, D))
    for _ in range(windows):
        scalars, state = window(state, THETA)
        xi = np.asarray(noise(scalars), np.float64)
        per_pair += np.asarray(scalars.diff, np.float64)[:, None] * xi / (2 * SIGMA**2 * est.unroll_length)
        grad = np.asarray(gradient(scalars))
        np.testing.assert_allclose(grad, (np.asarray(scalars.diff)[:, None] * xi).sum(0)
                                   / (2 * SIGMA**2 * n * est.unroll_length), rtol=1e-4, atol=1e-6)
    per_pair /= windows
    expected = _chain_expectation(windows) if name != "fulles" else _chain_expectation_fulles()
    mean, se = per_pair.mean(0), per_pair.std(0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(mean - expected) < 4.5 * se), f"{name}: mean {mean} vs exact {expected} (4.5 se = {4.5 * se})"


def _chain_expectation_fulles() -> np.ndarray:
    """FullES: one window of ``T`` steps from ``tau = 0``: ``(1/T) sum_t P(len > t) grad L_t``."""
    s = lambda k: (1 - A**k) / (1 - A)
    theta, c = np.asarray(THETA, np.float64), np.asarray(C, np.float64)
    return sum((T - t) / T * 2 * s(t + 1) * (theta * s(t + 1) - c) for t in range(T)) / T


def test_burn_in_stops_at_an_early_end():
    """A pair that must burn in ``hold`` windows reaches ``tau = hold W`` iff its first
    episode is longer than that; otherwise it sits at ``tau = 0`` of a new episode."""
    est = nres.nres(TASK, num_particles=64, unroll_length=W, sigma=SIGMA)
    key = jax.random.PRNGKey(5)
    start, hold = est.start(key, THETA)
    length, hold = _lengths(start), np.asarray(hold)
    state = jax.jit(est.init)(key, THETA)
    survived = length > hold * W
    assert survived.any() and (~survived).any()
    np.testing.assert_array_equal(state.particles.tau, np.where(survived, hold * W, 0))
    # the steps really taken: both members to the burn-in's end, or to their fall
    taken = np.where(survived, 2 * hold * W, 2 * length)
    np.testing.assert_array_equal(state.particles.steps, taken)
    assert est.burn_in_env_steps(state) == taken.sum() < 2 * np.sum(hold * W), "a fall must shorten the burn-in"


@pytest.mark.parametrize("name", ["tbptt", "uoro", "dodge"])
def test_autodiff_baselines_reset_right_after_the_end(name):
    """Single trajectories start a new episode right after the step that ends one:
    from ``tau = 0`` a window of ``W = 2`` steps leaves ``tau = 0`` if ``len = 2``, ``tau = 1``
    if ``len = 1`` (or 0 if the next episode has length 1 too), else ``tau = W``."""
    n = 64
    est = nres.make_estimator(name, TASK, num_particles=n, unroll_length=W, sigma=SIGMA)
    state, _ = est.start(jax.random.PRNGKey(2), THETA)
    length = _lengths(state)
    grad, new, info = jax.jit(est.estimate)(state, THETA)
    tau = np.asarray(new.particles.tau)
    assert W == 2 and np.all(tau[length > W] == W) and np.all(tau[length == W] == 0)
    assert set(tau[length == 1].tolist()) <= {0, 1} and 1 in tau[length == 1], (length, tau)
    assert int(info.env_steps) == n * W and np.all(np.isfinite(jax.tree_util.tree_leaves(grad)[0]))

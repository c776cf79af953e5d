"""CPU MuJoCo physics: exact agreement with gymnasium, shared antithetic state, resets at T."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nres.estimators import make_estimator
from nres.noise import antithetic
from nres.particles import init_particles, step_pairs
from nres.tasks.rl import RLConfig, make_rl_task
from nres.tasks.rl.cpu_physics import CpuPhysics, bits_to_rows, rows_to_bits
from nres.tasks.rl.envs import load_env, quiet_make
from nres.tree import tree_zeros_like

HORIZON = 6


@pytest.fixture(scope="module")
def task():
    return make_rl_task(RLConfig(env="Swimmer-v5", horizon=HORIZON, num_eval_episodes=3))


@pytest.fixture(scope="module")
def physics(task):
    return CpuPhysics(load_env("Swimmer-v5"))


def test_state_bits_round_trip_exactly():
    rows = np.random.default_rng(0).normal(size=(3, 4, 47)) * 1e300
    bits = rows_to_bits(rows)
    assert bits.dtype == np.uint32 and bits.shape == (3, 4, 47, 2)
    assert np.array_equal(bits_to_rows(np.asarray(jnp.asarray(bits))), rows)


NEW_ENVS = ["InvertedDoublePendulum-v5", "Reacher-v5", "Ant-v5", "Humanoid-v5"]


@pytest.mark.parametrize("env_id", ["Swimmer-v5", "HalfCheetah-v5"] + NEW_ENVS)
def test_batched_steps_equal_gymnasium_steps_exactly(env_id):
    """From the full state of a gymnasium env mid-episode, our batch reproduces its steps bit for bit."""
    spec = load_env(env_id)
    physics = CpuPhysics(spec)
    env = quiet_make(env_id)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(10):
        env.step(rng.uniform(-1, 1, spec.action_dim))
    raw = env.unwrapped
    row = physics.row_of(raw.data)  # the integration state (+ Ant's and Humanoid's carried position)
    rows = np.stack([row, row])  # an antithetic pair holding the same world
    for _ in range(25):
        action = rng.uniform(-1.5, 1.5, spec.action_dim)  # beyond ctrlrange: MuJoCo clamps, cost does not
        obs, reward, *_ = env.step(action)
        rows, batch_obs, batch_reward, _ = physics.step_rows(rows, np.stack([action, action]))
        assert np.array_equal(batch_obs[0], obs) and np.array_equal(batch_obs[1], obs)
        assert batch_reward[0] == reward and batch_reward[1] == reward
    env.close()


# Ant rarely leaves its healthy height range under random actions: at step 150 gymnasium's
# torso is launched upward (qvel[2] = 6 m/s, set in gymnasium, then copied) so it does.
LAUNCH = {"Ant-v5": (150, 2, 6.0)}


@pytest.mark.parametrize("env_id", ["Swimmer-v5", "HalfCheetah-v5", "Hopper-v5", "Walker2d-v5",
                                    "InvertedPendulum-v5"] + NEW_ENVS)
def test_steps_side_by_side_with_gymnasium_make(env_id):
    """300 steps side by side with ``gymnasium.make(env_id)`` (float64, CPU MuJoCo) from the
    same state and actions: observations, rewards and ``terminated`` are equal bit for bit;
    at each termination both restart from gymnasium's next reset state."""
    spec = load_env(env_id)
    physics = CpuPhysics(spec, num_threads=1)
    env = quiet_make(env_id)
    raw = env.unwrapped
    rng = np.random.default_rng(1)

    def copy_state():
        return physics.row_of(raw.data)[None]

    env.reset(seed=5)
    rows, ends = copy_state(), 0
    for t in range(300):
        if env_id in LAUNCH and t == LAUNCH[env_id][0]:
            qvel = raw.data.qvel.copy()
            qvel[LAUNCH[env_id][1]] = LAUNCH[env_id][2]
            raw.set_state(raw.data.qpos.copy(), qvel)
            rows = copy_state()
        action = rng.uniform(-1.5, 1.5, spec.action_dim)
        obs, reward, terminated, _, _ = env.step(action)
        rows, ours, our_reward, our_end = physics.step_rows(rows, action[None])
        assert np.array_equal(ours[0], obs) and our_reward[0] == reward and bool(our_end[0]) == terminated
        if terminated:
            ends += 1
            env.reset(seed=int(rng.integers(1 << 30)))
            rows = copy_state()
    env.close()
    assert (ends > 0) == spec.can_terminate, f"{env_id}: {ends} terminations in 300 random steps"


@pytest.mark.parametrize("env_id", ["Hopper-v5"] + NEW_ENVS)
def test_reset_equals_gymnasium_reset_exactly(env_id):
    """From gymnasium's reset positions and velocities, ``reset_rows`` gives its state row (and
    carried position) and its reset observation bit for bit (``mj_forward`` as gymnasium runs it)."""
    spec = load_env(env_id)
    physics = CpuPhysics(spec, num_threads=1)
    env = quiet_make(env_id)
    raw = env.unwrapped
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        rows, ours = physics.reset_rows(raw.data.qpos[None].copy(), raw.data.qvel[None].copy())
        assert np.array_equal(rows[0], physics.row_of(raw.data)) and np.array_equal(ours[0], obs), (env_id, seed)
    env.close()


def test_pair_members_start_identical_and_stay_identical_under_equal_actions(task):
    particles = init_particles(task, jax.random.PRNGKey(0), 3)
    bits = np.asarray(particles.inner.physics.bits)
    assert np.array_equal(bits[0], bits[1])
    assert len({bits[1, i].tobytes() for i in range(3)}) == 3  # episodes differ, pair members do not
    theta = task.init_theta(jax.random.PRNGKey(1))
    theta = jax.tree_util.tree_map(lambda x: x + 0.3, theta)
    zero = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (3,) + x.shape), tree_zeros_like(theta))
    inner, losses = step_pairs(task, antithetic(theta, zero), particles)
    assert np.array_equal(np.asarray(inner.obs[0]), np.asarray(inner.obs[1]))
    assert np.array_equal(np.asarray(inner.physics.bits[0]), np.asarray(inner.physics.bits[1]))
    assert np.array_equal(np.asarray(losses[0]), np.asarray(losses[1]))


def test_a_copied_mid_episode_state_replays_identically(task, physics):
    """Copy the full row (warm start included) of one member into the other: same future."""
    particles = init_particles(task, jax.random.PRNGKey(2), 2)
    theta = task.init_theta(jax.random.PRNGKey(1))
    eps = jax.tree_util.tree_map(lambda x: 0.5 * jnp.ones((2,) + x.shape), theta)
    for _ in range(3):  # members diverge under theta +/- eps
        inner, _ = step_pairs(task, antithetic(theta, eps), particles)
        particles = particles._replace(inner=inner, tau=particles.tau + 1)
    rows = bits_to_rows(np.asarray(particles.inner.physics.bits))
    assert not np.array_equal(rows[0], rows[1])
    copied = np.stack([rows[0, 0], rows[0, 0]])
    actions = np.tile(np.array([[0.7, -0.2]]), (2, 1))
    for _ in range(5):
        copied, obs, reward, _ = physics.step_rows(copied, actions)
        assert np.array_equal(copied[0], copied[1]) and np.array_equal(obs[0], obs[1])


def test_episodes_reset_at_the_horizon(task, physics):
    """Under NRES windows crossing T, simulation time is always tau * dt: time restarts at T."""
    estimator = make_estimator("nres", task, num_particles=4, unroll_length=3, sigma=0.3)
    theta = task.init_theta(jax.random.PRNGKey(0))
    state = jax.jit(estimator.init)(jax.random.PRNGKey(5), theta)
    estimate = jax.jit(estimator.estimate)
    dt = load_env("Swimmer-v5").dt
    seen_taus = set()
    for window in range(5):
        particles = state.particles
        tau = np.asarray(particles.tau)
        assert np.all(tau < HORIZON)
        seen_taus.update(tau.tolist())
        np.testing.assert_allclose(physics.time(particles.inner.physics), np.broadcast_to(tau * dt, (2, 4)),
                                   atol=1e-9, err_msg=f"window {window}")
        restarted = tau == 0
        bits = np.asarray(particles.inner.physics.bits)
        assert np.array_equal(bits[0][restarted], bits[1][restarted])  # fresh episodes: pair members equal
        _, state, info = estimate(state, theta)
        assert int(info.num_nonfinite) == 0
    assert seen_taus == {0, 3}


def test_evaluation_returns_mean_return(task):
    metrics = jax.jit(task.evaluate)(task.init_theta(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    assert set(metrics) == {"test_return", "test_loss"}
    assert float(metrics["test_loss"]) == pytest.approx(-float(metrics["test_return"]) / HORIZON, rel=1e-6)
    assert abs(float(metrics["test_return"])) < 1.0  # the zero policy barely drifts in 6 steps

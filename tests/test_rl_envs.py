"""Environment loading: gymnasium's values are read, bad names fail clearly."""

import numpy as np
import pytest

from nres.cli import main
from nres.tasks.rl.envs import SUPPORTED, load_env, quiet_make


def test_swimmer_spec_reads_gymnasium_values():
    spec = load_env("Swimmer-v5")
    assert spec.frame_skip == 4
    assert spec.dt == pytest.approx(0.04)
    assert spec.ctrl_cost_weight == pytest.approx(1e-4)
    assert (spec.obs_dim, spec.action_dim) == (8, 2)


def test_halfcheetah_spec_reads_gymnasium_values():
    spec = load_env("HalfCheetah-v5")
    assert spec.frame_skip == 5
    assert spec.ctrl_cost_weight == pytest.approx(0.1)
    assert (spec.obs_dim, spec.action_dim) == (17, 6)
    assert spec.qvel_noise == "normal"


def test_reward_formula_works_for_numpy_and_jax():
    import jax.numpy as jnp

    spec = load_env("Swimmer-v5")
    action = np.array([[0.5, -1.0]])
    expected = (0.2 - 0.1) / 0.04 - 1e-4 * 1.25
    assert spec.reward(np.array([0.1]), np.array([0.2]), action)[0] == pytest.approx(expected)
    assert float(spec.reward(jnp.array([0.1]), jnp.array([0.2]), jnp.asarray(action), jnp)[0]) == pytest.approx(
        expected, rel=1e-5)


def test_unknown_environment_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown environment 'NoSuchEnv-v5'"):
        load_env("NoSuchEnv-v5")


def test_discrete_action_space_is_a_clear_error():
    with pytest.raises(ValueError, match="'CartPole-v1' has a non-continuous action space"):
        load_env("CartPole-v1")


def test_continuous_but_unsupported_environment_is_a_clear_error():
    with pytest.raises(ValueError, match="'Pendulum-v1' is continuous but not supported"):
        load_env("Pendulum-v1")


def test_cli_reports_a_bad_environment_in_one_line(tmp_path, capsys):
    code = main(["train", "--task", "rl", "--env", "CartPole-v1", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("nres: error:") and "non-continuous" in err[-1]
    assert not (tmp_path / "run").exists()


def test_cli_rejects_an_unknown_physics(tmp_path, capsys):
    code = main(["train", "--task", "rl", "--physics", "bullet", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    assert "unknown physics 'bullet'" in capsys.readouterr().err


@pytest.mark.slow
def test_mjx_imports_without_printing_the_missing_warp_backend():
    import subprocess
    import sys

    code = ("from nres.tasks.rl.mjx_physics import import_mjx\nimport_mjx()\nimport sys, mujoco.mjx.warp as w\n"
            "sys.stderr.write(f'warp installed: {w.WARP_INSTALLED}')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "", proc.stdout
    assert "warp installed: False" in proc.stderr  # so MJX did try (and fail) to import it, silently


NEW_ENVS = ["InvertedDoublePendulum-v5", "Reacher-v5", "Ant-v5", "Humanoid-v5"]


@pytest.mark.parametrize("env_id", list(SUPPORTED))
def test_observation_size_is_gymnasiums(env_id):
    env = quiet_make(env_id)
    assert load_env(env_id).obs_dim == env.observation_space.shape[0]
    env.close()


@pytest.mark.parametrize("env_id", list(SUPPORTED))
def test_action_bounds_are_gymnasiums_action_space(env_id):
    env = quiet_make(env_id)
    low, high = load_env(env_id).action_bounds
    np.testing.assert_array_equal(np.asarray(low, np.float32), env.action_space.low)
    np.testing.assert_array_equal(np.asarray(high, np.float32), env.action_space.high)
    env.close()


def test_new_specs_read_gymnasium_values():
    ant, humanoid = load_env("Ant-v5"), load_env("Humanoid-v5")
    assert (ant.contact_cost_weight, ant.contact_force_range, ant.ctrl_cost_weight) == (5e-4, (-1.0, 1.0), 0.5)
    assert ant.health[-1].bounds == (0.2, 1.0) and ant.health[-1].closed and ant.carries_progress
    assert [p.quantity for p in ant.observation] == ["qpos", "qvel", "cfrc_ext"]  # include_cfrc_ext: True
    assert (humanoid.contact_cost_weight, humanoid.contact_cost_range) == (5e-7, (-np.inf, 10.0))
    assert (humanoid.forward_reward_weight, humanoid.healthy_reward, humanoid.reset_noise_scale) == (1.25, 5.0, 0.01)
    assert [p.quantity for p in humanoid.observation] == ["qpos", "qvel", "cinert", "cvel", "qfrc_actuator", "cfrc_ext"]
    reacher, pendulum = load_env("Reacher-v5"), load_env("InvertedDoublePendulum-v5")
    assert (reacher.distance_weight, reacher.ctrl_cost_weight, reacher.frame_skip) == (1.0, 1.0, 2)
    assert not reacher.can_terminate and pendulum.can_terminate
    assert (pendulum.healthy_reward, pendulum.reset_noise_scale, pendulum.qvel_noise) == (10.0, 0.1, "normal")


def test_reacher_reset_draws_its_target_uniformly_in_the_disc():
    """gymnasium: qpos = init + U(-0.1, 0.1), target qpos[-2:] uniform in the disc |g| < 0.2,
    qvel = init + U(-0.005, 0.005) with the target's zeroed. 2000 draws."""
    import jax

    spec = load_env("Reacher-v5")
    qpos, qvel = jax.vmap(spec.reset_noise)(jax.random.split(jax.random.PRNGKey(0), 2000))
    qpos, qvel = np.asarray(qpos, np.float64), np.asarray(qvel, np.float64)
    goal = qpos[:, 2:]
    radius = np.linalg.norm(goal, axis=1)
    assert radius.max() < 0.2 and radius.max() > 0.19
    assert np.all(np.abs(qpos[:, :2] - spec.init_qpos[:2]) <= 0.1 + 1e-6)
    assert np.all(np.abs(qvel[:, :2]) <= 0.005 + 1e-6) and not np.any(qvel[:, 2:])
    # uniform in the disc: P(|g| < 0.1) = 1/4 (binomial sd 0.0097 at n = 2000; bound 5 sd)
    assert abs(np.mean(radius < 0.1) - 0.25) < 0.05
    # each coordinate has mean 0 and sd 0.1 (sd of the mean 0.0022; bound 5 sd)
    assert np.all(np.abs(goal.mean(0)) < 0.011)


def test_humanoid_on_mjx_is_a_one_line_error(tmp_path, capsys):
    """MJX has no PGS solver, which gymnasium's Humanoid XML selects."""
    code = main(["train", "--task", "rl", "--env", "Humanoid-v5", "--physics", "mjx", "--out", str(tmp_path / "run"),
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("nres: error:") and "'Humanoid-v5'" in err[-1] and "'mjx'" in err[-1] and "PGS" in err[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("env_id", NEW_ENVS)
def test_a_short_nres_run_completes_through_the_cli(env_id, tmp_path):
    from nres import rundir

    out = tmp_path / "run"
    code = main(["train", "--task", "rl", "--env", env_id, "--estimator", "nres", "--iterations", "2",
                 "--num-particles", "2", "--unroll-length", "5", "--horizon", "10", "--sigma", "0.05", "--lr", "0.01",
                 "--num-eval-episodes", "2", "--eval-every", "0", "--no-progress", "--out", str(out)])
    assert code == 0
    spec = load_env(env_id)
    iterations, thetas = rundir.load_thetas(out, {"M": np.zeros((spec.action_dim, spec.obs_dim), np.float32)})
    assert list(iterations)[-1] == 2 and np.all(np.isfinite(thetas[-1]["M"])) and np.any(thetas[-1]["M"])

"""Environment loading: gymnasium's values are read, bad names fail clearly."""

import numpy as np
import pytest

from nres.cli import main
from nres.tasks.rl.envs import load_env


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

import jax.numpy as jnp
import numpy as np
import pytest

from nres import rundir


def test_pytree_theta_trajectory_round_trip(tmp_path):
    theta = {"layer": {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}}
    trajectory = rundir.ThetaTrajectory(tmp_path)
    for i in range(4):
        trajectory.append(i, {"layer": {"w": theta["layer"]["w"] * i, "b": theta["layer"]["b"] + i}})
    trajectory.flush()
    with np.load(tmp_path / rundir.THETAS) as data:  # plain numpy, one array per leaf
        assert sorted(data.files) == ["iteration", "theta/layer/b", "theta/layer/w"]
        assert data["theta/layer/w"].shape == (4, 2, 3)
    iterations, thetas = rundir.load_thetas(tmp_path, theta)
    assert list(iterations) == [0, 1, 2, 3]
    np.testing.assert_array_equal(thetas[3]["layer"]["w"], 3 * np.ones((2, 3)))
    again = rundir.ThetaTrajectory(tmp_path)
    again.truncate(1, theta)
    assert again.iterations == [0, 1]


def test_prepare_refuses_runs_and_files(tmp_path):
    run = tmp_path / "run"
    rundir.prepare(run, overwrite=False)
    rundir.write_config(run, {"estimator": "nres"})
    (run / rundir.METRICS).write_text('{"iteration": 1}\n')
    (run / "notes.txt").write_text("mine")
    with pytest.raises(rundir.RunDirError, match="already holds a run"):
        rundir.prepare(run, overwrite=False)
    rundir.prepare(run, overwrite=True)
    assert not (run / rundir.CONFIG).exists() and not (run / rundir.METRICS).exists()
    assert (run / "notes.txt").read_text() == "mine"  # only run files are removed
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(rundir.RunDirError, match="not a directory"):
        rundir.prepare(file, overwrite=False)


def test_config_records_versions(tmp_path):
    rundir.write_config(tmp_path, {"seed": 1})
    stored = rundir.read_config(tmp_path)
    assert stored["config"] == {"seed": 1} and stored["versions"]["jax"]
    with pytest.raises(rundir.RunDirError, match="not a run directory"):
        rundir.read_config(tmp_path / "elsewhere")


def test_metrics_tolerate_a_row_cut_short_by_a_crash(tmp_path):
    (tmp_path / rundir.METRICS).write_text('{"iteration": 1}\n{"iteration": 2}\n{"itera')
    assert rundir.read_metrics(tmp_path) == [{"iteration": 1}, {"iteration": 2}]
    (tmp_path / rundir.METRICS).write_text('{"iteration": 1}\ngarbage\n{"iteration": 3}\n')
    with pytest.raises(rundir.RunDirError, match="line 2 is not JSON"):
        rundir.read_metrics(tmp_path)

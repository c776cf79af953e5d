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
    assert rundir.is_half_made(run)  # killed before its first checkpoint: replaced without --overwrite
    rundir.prepare(run, overwrite=False)
    assert not (run / rundir.CONFIG).exists() and (run / "notes.txt").exists()
    rundir.write_config(run, {"estimator": "nres"})
    (run / rundir.METRICS).write_text('{"iteration": 1}\n')
    (run / rundir.CHECKPOINT).write_bytes(b"")
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


def test_rows_are_strict_json_with_nonfinite_keys_listed(tmp_path):
    import json

    rows = [{"iteration": 1, "train_loss": float("nan"), "grad_norm": float("inf")}, {"iteration": 2, "x": 1.5}]
    rundir.write_metrics(tmp_path, rows)
    strict = [json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON token {c}"))
              for line in (tmp_path / rundir.METRICS).read_text().splitlines()]
    assert strict[0] == {"iteration": 1, "train_loss": None, "grad_norm": None, "nonfinite": ["train_loss", "grad_norm"]}
    assert strict[1] == rows[1]
    (tmp_path / rundir.METRICS).write_text('{"iteration": 1, "grad_norm": Infinity}\n')  # older files still read
    assert rundir.read_metrics(tmp_path)[0]["grad_norm"] == float("inf")


def test_tidy_rows_keeps_one_row_of_each_kind_per_iteration_sorted():
    rows = [{"iteration": 2, "train_loss": 1.0}, {"iteration": 0, "test_loss": 9.0},
            {"iteration": 2, "test_loss": 5.0}, {"iteration": 1, "train_loss": 2.0},
            {"iteration": 2, "test_loss": 4.0}]
    assert rundir.tidy_rows(rows) == [{"iteration": 0, "test_loss": 9.0}, {"iteration": 1, "train_loss": 2.0},
                                      {"iteration": 2, "train_loss": 1.0}, {"iteration": 2, "test_loss": 4.0}]


def test_run_lock_is_exclusive_across_processes_and_cleans_temporary_files(tmp_path):
    import subprocess
    import sys

    (tmp_path / ".checkpoint.npz.abc.tmp").write_bytes(b"half")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom nres import rundir\n"
                               f"with rundir.RunLock({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not (tmp_path / ".checkpoint.npz.abc.tmp").exists()
        with pytest.raises(rundir.RunDirError, match=f"is being trained by pid {holder.pid}"):
            with rundir.RunLock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with rundir.RunLock(tmp_path):  # the lock died with its holder (SIGKILL)
        assert (tmp_path / rundir.LOCK).read_text().strip() == str(__import__("os").getpid())


def test_read_metrics_can_keep_only_rows_with_a_key(tmp_path):
    rows = [{"iteration": 1, "train_loss": 2.0}, {"iteration": 1, "test_loss": 3.5}, {"iteration": 2, "train_loss": 1.0}]
    rundir.write_metrics(tmp_path, rows)
    assert rundir.read_metrics(tmp_path) == rows
    assert rundir.read_metrics(tmp_path, having="test_loss") == [rows[1]]
    assert rundir.read_metrics(tmp_path, having="missing") == []


def test_a_run_stopped_before_its_config_leaves_no_directory(tmp_path, monkeypatch):
    """A stop between taking the lock and writing config.json (seen as a directory holding
    only `.lock`, which --resume cannot continue) removes the directory the run created."""
    from nres import run as run_module
    from nres.build import resolve_config

    def stopped(run):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "_write_config", stopped)
    config = resolve_config({"task": "linear", "num_particles": 2, "unroll_length": 4, "iterations": 1})
    with pytest.raises(KeyboardInterrupt):
        run_module.start_run(config, str(tmp_path / "new"), progress=False)
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt):
        run_module.start_run(config, str(kept), progress=False)
    assert sorted(p.name for p in kept.iterdir()) == [".lock", "notes.txt"], "a directory it did not create stays"

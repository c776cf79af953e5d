"""Execution engines give the one-process theta trajectory: 2 ``jax.distributed``
processes on 127.0.0.1 and 2 Ray workers (a real local Ray instance), on Lorenz and on
CPU-MuJoCo Swimmer; a killed Ray worker is rebuilt and the run directory resumes.

Every comparison is bit for bit: each pair's window is the same per-pair arithmetic
wherever it runs, the gathered per-pair scalars are the same numbers, and the gradient
is rebuilt from them by the same program on every engine.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from nres import rundir
from nres.cli import main
from nres.build import resolve_config
from nres.engines import EngineOptions
from nres.run import resume_run, start_run
from nres.training import Trainer

LORENZ = {"task": "lorenz", "num_particles": 8, "unroll_length": 10, "horizon": 40, "eval_every": 0,
          "eval_at_end": False}
SWIMMER = {"task": "rl", "num_particles": 4, "unroll_length": 10, "horizon": 50, "eval_every": 0,
           "eval_at_end": False, "task_options": {"num_threads": 1, "num_eval_episodes": 2}}
TIMEOUT_S = 420


def _flags(settings: dict) -> list:
    flags = []
    for key, value in {**settings, **settings.get("task_options", {})}.items():
        if key == "task_options":
            continue
        flag = "--" + key.replace("_", "-")
        flags += [flag] if value is True else [f"--no-{flag[2:]}"] if value is False else [flag, str(value)]
    return flags


def _thetas(path) -> np.ndarray:
    data = np.load(path / rundir.THETAS)
    return np.concatenate([data[k].reshape(len(data["iteration"]), -1) for k in sorted(data.files)
                           if k.startswith("theta")], axis=1)


def _losses(path) -> list:
    return [r["train_loss"] for r in rundir.read_metrics(path) if "train_loss" in r]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- bad input --------------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--backend", "ray", "--num-workers", "3"], "--num-workers 3 does not divide the 8 particle pairs"),
    (["--backend", "ray", "--num-workers", "2", "--ray-address", "127.0.0.1:{closed}"], "cannot reach the Ray"),
    (["--backend", "ray", "--num-workers", "2", "--ray-address", "nowhere"], "must be HOST:PORT"),
    (["--backend", "ray", "--num-workers", "2", "--estimator", "tbptt", "--lr", "1e-4"], "runs the ES estimators"),
    (["--backend", "ray", "--num-workers", "2", "--unroll-length", "7"], "W must divide T"),
    (["--num-workers", "2"], "need --backend ray"),
    (["--process-id", "0"], "need --distributed"),
    (["--distributed", "--num-processes", "2"], "missing --coordinator-address"),
    (["--no-store-noise", "--estimator", "tbptt", "--lr", "1e-4"], "store_noise applies to the ES estimators"),
])
def test_bad_scaling_flags_give_one_line_errors(tmp_path, capsys, flags, message):
    flags = [f.format(closed=_free_port()) for f in flags]
    out = tmp_path / "run"
    code = main(["train", "--num-particles", "8", "--horizon", "40", "--unroll-length", "10", "--iterations", "2",
                 "--out", str(out), "--no-progress", *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("nres: error: ") and message in err, err
    assert len(err.splitlines()) == 1, err
    assert not out.exists(), "nothing may be written on bad input"


# -- jax.distributed --------------------------------------------------------------------
def _start_distributed(extra, cache="off", env_per_process=({}, {})):
    """Two `nres train --distributed` processes on 127.0.0.1 (not waited for)."""
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES="2", NRES_COMPILATION_CACHE=str(cache))
    env.pop("XLA_FLAGS", None)
    args = [sys.executable, "-m", "nres.cli", "train", "--distributed", "--no-progress", *extra]
    return [subprocess.Popen(args, env={**env, "JAX_PROCESS_ID": str(i), **env_per_process[i]},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]


def _wait(procs, codes=(0, 0)):
    try:
        outputs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            p.kill() if p.poll() is None else None
    for p, code, (stdout, stderr) in zip(procs, codes, outputs):
        assert p.returncode == code, f"exit {p.returncode}, expected {code}: {stderr[-3000:]}"
    return outputs


def _distributed(settings, out, extra=(), cache="off", env_per_process=({}, {})):
    """Two `nres train --distributed` processes on 127.0.0.1 (returns their outputs)."""
    return _wait(_start_distributed(extra, cache, env_per_process))


def _rows_past(path, count):
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline and len(_losses(path)) < count:
        time.sleep(0.05)
    assert len(_losses(path)) >= count, "the run did not get going"


@pytest.mark.slow
@pytest.mark.parametrize("settings, iterations, more", [(LORENZ, 6, 4), (SWIMMER, 4, 0)], ids=["lorenz", "swimmer"])
def test_two_distributed_processes_equal_one(tmp_path, settings, iterations, more):
    config = resolve_config({**settings, "iterations": iterations, "checkpoint_every": 3})
    one = start_run(config, str(tmp_path / "one"), progress=False)
    two = tmp_path / "two"
    outputs = _distributed(settings, two, [*_flags({**settings, "iterations": iterations, "checkpoint_every": 3}),
                                           "--out", str(two)])
    assert "done: results in" in outputs[0][0] and "done" not in outputs[1][0], "process 0 alone reports"
    np.testing.assert_array_equal(_thetas(two), _thetas(one))
    assert _losses(two) == _losses(one)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"], "process 1 must leave no files"
    if more:  # resume both with more updates: still the same trajectory
        resume_run(one, iterations + more, progress=False)
        _distributed(settings, two, ["--resume", str(two), "--iterations", str(iterations + more)])
        np.testing.assert_array_equal(_thetas(two), _thetas(one))
        assert len(_losses(two)) == iterations + more


@pytest.mark.slow
def test_distributed_runs_share_the_compilation_cache_and_agree_whatever_their_pacing(tmp_path):
    """Cache on (the default), run after run: the second run loads what the first stored,
    per process. Process 1 aims at 0.1 ms per compiled call and process 0 at 2 s, so on
    their own they would run different numbers of updates per call (different collective
    sequences: a hang or a Gloo abort); process 0's decisions are shared, and both runs
    equal one process."""
    settings = {**LORENZ, "iterations": 300, "checkpoint_every": 100}
    one = start_run(resolve_config(settings), str(tmp_path / "one"), progress=False)
    cache = tmp_path / "cache"
    pacing = ({"NRES_CHUNK_SECONDS": "2"}, {"NRES_CHUNK_SECONDS": "0.0001"})
    for name in ("first", "second"):
        _distributed(settings, tmp_path / name, [*_flags(settings), "--out", str(tmp_path / name)], cache, pacing)
        np.testing.assert_array_equal(_thetas(tmp_path / name), _thetas(one))
        assert _losses(tmp_path / name) == _losses(one)
    stored = sorted(os.listdir(cache / "executables"))
    assert len(stored) == 2, f"the init program of each process (the update program is jitted): {stored}"


def _stopped_run(tmp_path, signum, codes, env=({}, {})):
    """A distributed run of many updates that process 1 receives ``signum`` in."""
    settings = {**LORENZ, "checkpoint_every": 50}
    two = tmp_path / "two"
    procs = _start_distributed([*_flags({**settings, "iterations": 10**7}), "--out", str(two)],
                               env_per_process=env)
    _rows_past(two, 40)
    procs[1].send_signal(signum)
    return settings, two, _wait(procs, codes)


def _resumed_equals_one(tmp_path, settings, two):
    total = len(_losses(two)) + 7
    _distributed(settings, two, ["--resume", str(two), "--iterations", str(total)])
    one = start_run(resolve_config({**settings, "iterations": total}), str(tmp_path / "one"), progress=False)
    np.testing.assert_array_equal(_thetas(two), _thetas(one))
    assert _losses(two) == _losses(one)


@pytest.mark.slow
def test_sigterm_to_one_distributed_process_stops_both_resumably(tmp_path):
    settings, two, outputs = _stopped_run(tmp_path, signal.SIGTERM, (143, 143),
                                          env=({}, {"NRES_CHUNK_SECONDS": "0.01"}))
    for stdout, stderr in outputs:
        assert "SIGTERM: stopped at update" in stderr and "Traceback" not in stderr, stderr[-2000:]
        assert f"--resume {two}" in stderr, "both name the run directory of process 0"
    _resumed_equals_one(tmp_path, settings, two)


@pytest.mark.slow
def test_a_killed_peer_ends_the_other_process_within_the_timeout(tmp_path):
    timeout = {"NRES_PEER_TIMEOUT": "5"}
    settings, two, ((_, stderr), _) = _stopped_run(tmp_path, signal.SIGKILL, (4, -9), env=(timeout, timeout))
    lines = [line for line in stderr.splitlines() if line.startswith("nres:")]
    assert len(lines) == 1 and "process 1 stopped answering" in lines[0] and "Traceback" not in stderr, stderr
    assert (two / rundir.CHECKPOINT).is_file()
    _resumed_equals_one(tmp_path, settings, two)


# -- Ray --------------------------------------------------------------------------------
# The Ray engine starts its own local Ray instance from its driver process (this pytest
# process never imports Ray); joining a running cluster is tested in tests/test_ray_faults.py.
RAY = EngineOptions("ray", num_workers=2)


@pytest.mark.slow
def test_ray_workers_equal_one_process_on_swimmer():
    pytest.importorskip("ray")
    config = resolve_config({**SWIMMER, "iterations": 4})
    reference = Trainer(config)
    learner, counters = reference.init()
    _, steps = reference.update_many(learner, counters, 4)
    workers = Trainer(config, engine=RAY)
    try:
        learner, counters = workers.init()
        learner, ray_steps = workers.update_many(learner, counters, 4)
        flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])
        for k, ((_, info_a, theta_a), (_, info_b, theta_b)) in enumerate(zip(steps, ray_steps)):
            np.testing.assert_array_equal(flat(theta_b), flat(theta_a), err_msg=f"update {k + 1}")
            assert float(info_b.train_loss) == float(info_a.train_loss)
        # the actors hold exactly the slices of the one-process particle states
        local = jax.device_get(reference.update_many(*reference.init(), 4)[0].estimator_state)
        gathered = workers.engine.host(learner).estimator_state
        for a, b in zip(jax.tree_util.tree_leaves(gathered), jax.tree_util.tree_leaves(local)):
            np.testing.assert_array_equal(a, b)
    finally:
        workers.engine.close()


@pytest.mark.slow
def test_a_killed_ray_worker_is_rebuilt_and_the_run_resumes(tmp_path, capfd):
    pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    iterations, more = 60, 10
    config = resolve_config({**LORENZ, "iterations": iterations, "checkpoint_every": 20})
    reference = start_run(config, str(tmp_path / "one"), progress=False)
    out = tmp_path / "ray"
    errors = []

    def train():
        try:
            start_run(config, str(out), progress=False, engine=RAY)
        except BaseException as err:  # reported by the assertion below
            errors.append(err)

    thread = threading.Thread(target=train)
    thread.start()
    deadline = time.time() + TIMEOUT_S
    actors = []
    while len(actors) < 2 and time.time() < deadline:  # the actors' processes, under the engine's Ray
        actors = [p for p in psutil.Process().children(recursive=True) if p.name() == "ray::_Worker"]
        time.sleep(0.05)
    pid = actors[-1].pid
    while time.time() < deadline and not (out / rundir.METRICS).exists():
        time.sleep(0.02)
    while time.time() < deadline and len(_losses(out)) < 25:  # past the checkpoint at update 20
        time.sleep(0.02)
    assert thread.is_alive(), "the run ended before the worker could be killed (raise iterations)"
    os.kill(pid, signal.SIGKILL)
    thread.join(TIMEOUT_S)
    assert not thread.is_alive() and not errors, errors
    err = capfd.readouterr().err
    assert re.search(r"Ray worker [01] died", err) and "replayed" in err, err[-2000:]
    np.testing.assert_array_equal(_thetas(out), _thetas(reference))
    assert _losses(out) == _losses(reference)
    # the directory is a valid run: it resumes (on any engine) where it stopped
    resume_run(out, iterations + more, progress=False)
    resume_run(reference, iterations + more, progress=False)
    np.testing.assert_array_equal(_thetas(out), _thetas(reference))
    assert json.loads((out / "config.json").read_text())

"""A Ray run's driver stopped (SIGTERM), killed (SIGKILL) or cut off from its cluster
(the Ray head killed) mid-run: the run directory resumes to exactly the run that was
never stopped, and a Ray instance the driver started leaves no process behind.

Each driver is a real ``nres train --backend ray --num-workers 2`` process on a real
local Ray instance (127.0.0.1). The stop lands mid-run: the test waits for a number of
train rows in ``metrics.jsonl`` while compiled calls run a few updates each
(``NRES_CHUNK_SECONDS`` small) and checkpoints fall every 7 updates, so the actors are
usually a chunk ahead of the state the stop checkpoints. The reference is the local
engine uninterrupted (the Ray engine equals it bit for bit, ``tests/test_engines.py``).
"""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from nres import rundir
from nres.build import resolve_config
from nres.run import start_run

psutil = pytest.importorskip("psutil")
# Ray itself is imported by the engine's driver process only (tests/test_engines.py's
# fixture must set its token before this pytest process imports Ray).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs Ray")

SETTINGS = {"task": "lorenz", "num_particles": 8, "unroll_length": 10, "horizon": 40, "eval_every": 0,
            "eval_at_end": False}
FLAGS = ["--task", "lorenz", "--num-particles", "8", "--unroll-length", "10", "--horizon", "40", "--eval-every",
         "0", "--no-eval-at-end"]
RAY = ["--backend", "ray", "--num-workers", "2"]
TIMEOUT_S = 300
LEFTOVER_S = 30  # a killed driver's Ray processes must be gone by then (Ray alone: 60 s and more)


def _env(**extra) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", NRES_CHUNK_SECONDS="0.02", **extra)
    env.pop("XLA_FLAGS", None)
    return env


def _driver(*flags, env=None) -> subprocess.Popen:
    """``nres train FLAGS`` in its own session (a signal reaches the driver alone)."""
    args = [sys.executable, "-m", "nres.cli", "train", "--no-progress", *flags]
    return subprocess.Popen(args, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish(proc, code) -> str:
    try:
        _, stderr = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}: {stderr[-3000:]}"
    return stderr


def _train_rows(path) -> list:
    try:
        return [r for r in rundir.read_metrics(path) if "train_loss" in r]
    except Exception:  # not written yet, or a line being written
        return []


def _wait_rows(proc, path, count) -> None:
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline and proc.poll() is None and len(_train_rows(path)) < count:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before the stop (exit {proc.returncode}): {proc.stderr.read()[-2000:]}"
    assert len(_train_rows(path)) >= count, "the run did not get going"


def _wait_checkpoint(proc, path, iteration) -> None:
    """Until the run's checkpoint is of update ``iteration`` or later."""
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline and proc.poll() is None:
        try:
            if _counters(path)["iteration"] >= iteration:
                return
        except (OSError, ValueError, KeyError):  # none yet, or being replaced
            pass
        time.sleep(0.02)
    pytest.fail(f"no checkpoint of update {iteration} or later (exit {proc.poll()})")


def _counters(path) -> dict:
    with np.load(path / rundir.CHECKPOINT, allow_pickle=False) as data:
        return json.loads(str(data["metadata"]))["counters"]


def _leaves(path) -> list:
    with np.load(path / rundir.CHECKPOINT, allow_pickle=False) as data:
        return [data[k] for k in sorted(data.files) if k != "metadata"]


def _same_run(path, reference) -> None:
    """Metrics rows (all but the clock), every saved theta and the checkpoint bit for bit."""
    clockless = lambda rows: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]
    assert clockless(rundir.read_metrics(path)) == clockless(rundir.read_metrics(reference))
    with np.load(path / rundir.THETAS) as a, np.load(reference / rundir.THETAS) as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for k, (a, b) in enumerate(zip(_leaves(path), _leaves(reference), strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"checkpoint leaf {k}")
    ours, theirs = _counters(path), _counters(reference)
    assert {k: v for k, v in ours.items() if k != "wall_time_s"} == \
        {k: v for k, v in theirs.items() if k != "wall_time_s"}


def _local(tmp_path, name, iterations, checkpoint_every):
    config = resolve_config({**SETTINGS, "iterations": iterations, "checkpoint_every": checkpoint_every})
    return start_run(config, str(tmp_path / name), progress=False)


def _ray_processes(proc) -> list:
    """The driver's descendants: the Ray instance it started (head, agents, actors)."""
    return psutil.Process(proc.pid).children(recursive=True)


def _alive(processes) -> list:
    alive = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _gone_within(processes, seconds) -> list:
    deadline = time.time() + seconds
    while time.time() < deadline and _alive(processes):
        time.sleep(0.2)
    return [f"{p.pid} {p.name()}" for p in _alive(processes)]


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, every", [(signal.SIGTERM, 143, 1000), (signal.SIGKILL, -9, 7)],
                         ids=["sigterm", "sigkill"])
def test_a_stopped_ray_driver_resumes_to_the_uninterrupted_run(tmp_path, signum, code, every):
    """SIGTERM: no checkpoint is due (every 1000 updates), so when the stop is taken the
    next chunk has run on the actors already and the stop's checkpoint rewinds them.
    SIGKILL: the run resumes from its last periodic checkpoint (every 7 updates)."""
    out = tmp_path / "ray"
    proc = _driver(*FLAGS, "--checkpoint-every", str(every), "--out", str(out), "--iterations", "100000", *RAY)
    _wait_rows(proc, out, 30)
    if signum == signal.SIGKILL:  # checkpoints land behind the rows (one background writer)
        _wait_checkpoint(proc, out, 28)
    ray_processes = _ray_processes(proc)
    assert any("raylet" in p.name() for p in ray_processes), [p.name() for p in ray_processes]
    proc.send_signal(signum)
    stderr = _finish(proc, code)
    stopped = _counters(out)["iteration"]
    if signum == signal.SIGTERM:  # the stop's own checkpoint: the last update collected, mid-run
        assert f"SIGTERM: stopped at update {stopped}" in stderr and "Traceback" not in stderr, stderr[-2000:]
        assert stopped >= 30, stopped
        at_stop = _local(tmp_path, "at-stop", stopped, every)  # its particles are of that update, as theta's
        for k, (a, b) in enumerate(zip(_leaves(out), _leaves(at_stop), strict=True)):
            np.testing.assert_array_equal(a, b, err_msg=f"checkpoint leaf {k} at the stop (update {stopped})")
    else:  # the last periodic checkpoint
        assert stopped >= 28 and stopped % 7 == 0, stopped  # killed after checkpoint 28 had landed
    left = _gone_within(ray_processes, LEFTOVER_S)
    assert not left, f"Ray processes of the stopped driver still run after {LEFTOVER_S} s: {left}"

    total = stopped + 12
    _finish(_driver("--resume", str(out), "--iterations", str(total), *RAY), 0)
    _same_run(out, _local(tmp_path, "one", total, every))


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head started by ``ray start --head`` on 127.0.0.1 (its own temporary
    directory and token); yields ``(address, env, head processes)``. Its processes are
    found by pid and killed at the end (``ray stop`` would stop every Ray on the machine)."""
    import secrets
    import tempfile

    temp = tempfile.mkdtemp(prefix="nres-ray-")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    env = _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    started = subprocess.run([ray_cli, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                              "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats",
                              "--temp-dir", temp], env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    head = [p for p in psutil.process_iter(["cmdline"])
            if temp in " ".join(p.info["cmdline"] or []) or str(port) in " ".join(p.info["cmdline"] or [])]
    family = head + [c for p in head for c in _children(p)]
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        yield f"127.0.0.1:{port}", env, family
    finally:
        for p in _alive(family + [c for p in family for c in _children(p)]):
            p.kill()
        shutil.rmtree(temp, ignore_errors=True)


def _children(proc) -> list:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_driver_that_loses_its_ray_cluster_ends_with_one_line_and_a_resumable_checkpoint(tmp_path, ray_head):
    """The Ray head (GCS and raylet) killed mid-run: Ray ends its driver process at once;
    the run ends with one line naming the lost cluster and exit 4, and its last periodic
    checkpoint resumes on the local engine to the uninterrupted run."""
    address, env, head = ray_head
    joined = tmp_path / "joined"  # a run that joins a cluster leaves it running
    _finish(_driver(*FLAGS, "--out", str(joined), "--iterations", "3", *RAY, "--ray-address", address, env=env), 0)
    assert len(_train_rows(joined)) == 3
    killed = [p for p in head if p.name() in ("gcs_server", "raylet")]
    assert len(killed) == 2 and len(_alive(killed)) == 2, [p.name() for p in head]
    out = tmp_path / "ray"
    proc = _driver(*FLAGS, "--checkpoint-every", "7", "--out", str(out), "--iterations", "100000", *RAY,
                   "--ray-address", address, env=env)
    _wait_rows(proc, out, 30)
    for p in killed:
        p.kill()
    stderr = _finish(proc, 4)
    lines = [line for line in stderr.splitlines() if line.startswith("nres:")]
    assert len(lines) == 1 and lines[0].startswith(f"nres: error: lost the Ray cluster at '{address}'"), stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    stopped = _counters(out)["iteration"]
    assert stopped >= 28 and stopped % 7 == 0, stopped
    total = stopped + 12
    _finish(_driver("--resume", str(out), "--iterations", str(total)), 0)
    _same_run(out, _local(tmp_path, "one", total, 7))

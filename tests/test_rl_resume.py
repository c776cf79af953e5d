"""A MuJoCo run whose episodes end early (Hopper falls), killed mid-run and resumed,
equals the uninterrupted run: the particles' fresh episodes after a fall, their keys and
the steps really taken are all in the checkpoint (and, with ``--obs-norm running``, the
running observation statistics)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nres import rundir
from test_faults import assert_same_run

TIMEOUT_S = 300
UPDATES = 30
FLAGS = ["--task", "rl", "--env", "Hopper-v5", "--horizon", "40", "--num-particles", "4", "--unroll-length", "10",
         "--sigma", "0.5", "--init", "truncated_normal", "--init-scale", "0.5", "--lr", "0.05",
         "--iterations", str(UPDATES), "--checkpoint-every", "5", "--num-eval-episodes", "2", "--num-threads", "1",
         "--no-progress"]
FULL_WINDOW = 2 * 4 * 10  # env steps of a window in which no episode ends early


def _train(out, *extra, env=None):
    return subprocess.Popen([sys.executable, "-m", "nres.cli", "train", *FLAGS, "--out", str(out), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _window_steps(path) -> list[int]:
    totals = [row["total_env_steps"] for row in rundir.read_metrics(path, having="train_loss")]
    return [b - a for a, b in zip(totals, totals[1:])]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--obs-norm", "running"]], ids=["plain", "obs-norm-running"])
def test_a_killed_hopper_run_resumes_across_early_episode_ends(tmp_path, extra):
    env = {**os.environ, "NRES_CHUNK_SECONDS": "0.02", "NRES_COMPILATION_CACHE": str(tmp_path / "cache")}
    full = _train(tmp_path / "full", *extra, env=env)
    assert full.wait(TIMEOUT_S) == 0, full.stderr.read()
    steps = _window_steps(tmp_path / "full")
    early = [i + 2 for i, s in enumerate(steps) if s < FULL_WINDOW]  # updates with an early end
    assert any(u <= 10 for u in early) and any(u > 15 for u in early), \
        f"episodes must end early before and after the kill ({steps})"

    part = tmp_path / "part"
    proc = _train(part, *extra, env=env)
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline and proc.poll() is None:
        if (part / rundir.METRICS).exists() and len(rundir.read_metrics(part, having="train_loss")) >= 12:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(TIMEOUT_S)
    with np.load(part / rundir.CHECKPOINT) as checkpoint:
        at = json.loads(str(checkpoint["metadata"]))["counters"]["iteration"]
    assert 10 <= at < UPDATES, f"the kill must land mid-run, after a checkpoint (checkpoint at {at})"

    resumed = subprocess.run([sys.executable, "-m", "nres.cli", "train", "--resume", str(part), "--no-progress"],
                             env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(part, tmp_path / "full")

"""``--obs-norm running``: running observation statistics as the rl task's shared state
(:class:`nres.task.Shared`, :mod:`nres.shared`), frozen within a window, merged between
windows, checkpointed."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nres.cli import main
from nres.estimators import make_estimator
from nres.step import make_step
from nres.tasks import rl
from nres.tasks.rl import RLConfig, make_rl_task
from nres.tasks.rl.policies import empty_stats, merge_stats, stats_scale

# Hopper falls within a few steps at this scale, so some members are absorbed mid-window.
CONFIG = RLConfig(env="Hopper-v5", horizon=20, init="truncated_normal", init_scale=0.5, num_threads=1,
                  num_eval_episodes=2, obs_norm="running")
N, W, UPDATES = 4, 5, 6


def _step(task):
    estimator = make_estimator("nres", task, num_particles=N, unroll_length=W, sigma=0.5)
    return make_step(task, estimator, optax.sgd(0.05))


@pytest.fixture(scope="module")
def trajectory():
    """``UPDATES`` updates of the running task: the learner after each one."""
    task = make_rl_task(CONFIG)
    step = _step(task)
    hold = jnp.zeros((N,), jnp.int32)
    update = jax.jit(lambda learner: step.update(learner, jnp.asarray(0), hold))
    learner, _ = step.init(jax.random.PRNGKey(0))
    learners = [learner]
    for _ in range(UPDATES):
        learners.append(update(learners[-1])[0])
    return task, step, learners


def test_merge_matches_numpy_with_masks():
    rng = np.random.default_rng(0)
    stats, seen = empty_stats(3), []
    for size in (7, 1, 30, 12):
        obs = (rng.normal(size=(size, 3)) * [1.0, 1e-3, 50.0] + [0.0, 1e4, -3.0]).astype(np.float32)
        keep = rng.random(size) < 0.7
        stats = merge_stats(stats, jnp.asarray(obs), jnp.asarray(keep))
        seen.append(obs[keep].astype(np.float64))
    seen = np.concatenate(seen)
    assert int(stats.count) == len(seen)
    np.testing.assert_allclose(stats.mean, seen.mean(0), rtol=1e-6, atol=1e-6)
    # column 1: a std 1e-7 of its mean, float32's own resolution; merging raw means
    # instead of shifting by the running mean was 26% off there
    var, std = np.asarray(stats.m2) / len(seen), np.asarray(stats_scale(stats).std)
    assert np.all(np.abs(var / seen.var(0) - 1) < [1e-4, 2e-3, 1e-4]), var
    assert np.all(np.abs(std / seen.std(0) - 1) < [1e-4, 1e-3, 1e-4]), std


def test_nothing_seen_scales_by_the_identity():
    scale = stats_scale(merge_stats(empty_stats(2), jnp.ones((3, 2)), jnp.zeros(3, bool)))
    assert scale.mean.tolist() == [0.0, 0.0] and scale.std.tolist() == [1.0, 1.0]


def test_running_statistics_equal_numpy_over_the_window_end_observations(trajectory):
    task, _, learners = trajectory
    seen, absorbed = [], 0
    for learner in learners[1:]:
        inner = learner.estimator_state.particles.inner
        live = ~np.asarray(inner.done)
        absorbed += int((~live).sum())
        seen.append(np.asarray(inner.obs, np.float64)[live])
        seen_all = np.concatenate(seen)
        stats = learner.shared
        assert int(stats.count) == len(seen_all)
        np.testing.assert_allclose(stats.mean, seen_all.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stats.m2 / len(seen_all), seen_all.var(0), rtol=1e-4, atol=1e-6)
    assert absorbed > 0, "some members should have ended early (their observations are excluded)"


def test_every_member_steps_with_the_statistics_frozen_at_the_window_start(trajectory, monkeypatch):
    """One update of the running task equals one of a task with *fixed* statistics (the
    independent ``ObsScaler`` path) set to the learner's statistics at the window start."""
    task, step, learners = trajectory
    learner = learners[3]
    scale = jax.device_get(stats_scale(learner.shared))
    assert np.any(scale.std != 1.0)
    monkeypatch.setattr(rl, "observation_statistics", lambda *a: (scale.mean, scale.std))
    fixed_task = make_rl_task(dataclasses.replace(CONFIG, obs_norm="off", obs_normalize=True))
    fixed_step = _step(fixed_task)
    hold = jnp.zeros((N,), jnp.int32)
    after, _ = jax.jit(lambda lr: step.update(lr, jnp.asarray(0), hold))(learner)
    # every member of every pair that goes on (not reset to a fresh episode at the
    # window's end) carries one scale, the one of the window's start
    going_on = np.asarray(after.estimator_state.particles.tau) > 0
    assert going_on.any()
    for got, want in zip(after.estimator_state.particles.inner.scale, scale):
        got = np.asarray(got)[:, going_on]
        np.testing.assert_array_equal(got, np.broadcast_to(want, got.shape))
    state = learner.estimator_state
    stripped = state._replace(particles=state.particles._replace(
        inner=state.particles.inner._replace(scale=None)))
    fixed = learner._replace(estimator_state=stripped, shared=None)
    fixed_after, _ = jax.jit(lambda lr: fixed_step.update(lr, jnp.asarray(0), hold))(fixed)
    np.testing.assert_allclose(after.theta["M"], fixed_after.theta["M"], rtol=1e-6, atol=1e-7)
    assert not np.array_equal(after.theta["M"], learner.theta["M"])
    np.testing.assert_allclose(after.estimator_state.particles.inner.obs,
                               fixed_after.estimator_state.particles.inner.obs, rtol=1e-5, atol=1e-5)


def test_evaluation_reads_the_statistics(trajectory):
    task, _, learners = trajectory
    learner, key = learners[-1], jax.random.PRNGKey(1)
    running = task.evaluate(learner.theta, key, learner.shared)["test_return"]
    identity = task.evaluate(learner.theta, key, empty_stats(task.shared.init().mean.shape[0]))["test_return"]
    assert identity == task.evaluate(learner.theta, key)["test_return"]
    assert running != identity


def test_off_keeps_the_state_and_learner_as_before():
    task = make_rl_task(dataclasses.replace(CONFIG, obs_norm="off"))
    assert task.shared is None
    learner, _ = _step(task).init(jax.random.PRNGKey(0))
    assert learner.shared is None and learner.estimator_state.particles.inner.scale is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--obs-norm", "sometimes"], "unknown obs_norm 'sometimes'; choose one of off, fixed, running"),
        (["--obs-norm", "running", "--obs-normalize"], "exclude each other"),
        (["--obs-norm", "running", "--backend", "ray"], "do not carry a task's shared state"),
        (["--obs-norm", "running", "--horizon", "100", "--unroll-length", "30"], "episodes end only at window ends"),
        (["--obs-norm", "running", "--estimator", "tbptt", "--horizon", "100", "--unroll-length", "10"],
         "episodes end only at window ends"),
    ],
)
def test_bad_settings_give_one_line_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["train", "--task", "rl", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("nres: error:") and len(err.splitlines()) == 1, err
    assert not out.exists()


SHARDED = r"""
import json, sys
import jax, numpy as np
from nres.build import resolve_config
from nres.training import Trainer
trainer = Trainer(resolve_config({"task": "rl", "task_options": {"env": "Swimmer-v5", "obs_norm": "running",
                  "num_threads": 1, "num_eval_episodes": 2, "init": "truncated_normal"},
                  "num_particles": 4, "unroll_length": 10, "horizon": 40, "sigma": 0.1, "lr": 0.1}))
learner, counters = trainer.init()
learner, steps = trainer.update_many(learner, counters, 5)
print(json.dumps({"shards": len(learner.estimator_state.particles.tau.sharding.device_set),
                  "theta": np.asarray(learner.theta["M"]).ravel().tolist(),
                  "mean": np.asarray(learner.shared.mean).tolist(), "count": int(learner.shared.count),
                  "test": trainer.evaluate(learner.theta, learner.shared)["test_return"]}))
"""


@pytest.mark.slow
def test_two_devices_agree_with_one(tmp_path):
    def run(devices):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
        out = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    one, two = run(1), run(2)
    assert (one["shards"], two["shards"]) == (1, 2)
    assert one["count"] == two["count"] == 5 * 8
    assert two["mean"] == pytest.approx(one["mean"], rel=1e-5, abs=1e-6)
    assert two["theta"] == pytest.approx(one["theta"], rel=1e-4, abs=1e-6)
    assert two["test"] == pytest.approx(one["test"], rel=1e-3)

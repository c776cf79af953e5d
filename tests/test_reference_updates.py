"""Results unchanged: the first 20 updates of a small fixed-seed Lorenz run, for every
estimator, equal the reference generated from the code before the speed work (commit
eab8261) by tests/data/make_reference_updates.py: theta bit for bit (float32); the logged
train_loss to the rounding of its sum, because ES windows now sum each pair's losses first
(so sharded workers can report one number per pair) -- a reordered sum of ``n = 2 N W``
non-negative float32 losses differs by at most ``(n - 1) * 2**-24`` relative.
The reference also holds one replayed episode's per-step losses (particles.replay_episode).
Both ``compile_for`` settings give the reference's bits."""

import pathlib
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent / "data"))
import references  # noqa: E402

reference, REFERENCE = references.load("updates")
FAST = {"nres", "tbptt"}  # the rest are marked slow


@pytest.mark.parametrize("compile_for", ["start", "steps"])  # the Lorenz task's default, and XLA's (nres.compiler)
@pytest.mark.parametrize("name", references.run_names(reference, FAST))
def test_first_20_updates_match_the_reference(name, compile_for):
    expected = references.expected_run(reference, REFERENCE, name)
    got = reference.run({**reference.RUNS[name], "compile_for": compile_for})
    settings = {**reference.BASE, **reference.RUNS[name]}
    n = 2 * settings["num_particles"] * (settings["horizon"] if name == "fulles" else settings["unroll_length"])
    bound = (n - 1) * 2.0**-24
    got_loss, want_loss = np.asarray(got["train_loss"]), np.asarray(expected["train_loss"])
    worst = float(np.max(np.abs(got_loss - want_loss) / np.abs(want_loss)))
    assert worst <= bound, f"{name}: train_loss differs from the reference by {worst:.3g} relative > {bound:.3g} (n = {n})"
    assert got["theta"] == expected["theta"], f"{name}: theta differs from the reference"


def test_replayed_episode_matches_the_reference():
    from nres.build import resolve_config
    from nres.particles import episode_losses
    from nres.build import build_task

    task = build_task(resolve_config({}, {**reference.BASE, "estimator": "nres"}))
    theta = task.init_theta(jax.random.PRNGKey(0))
    losses = np.asarray(episode_losses(task, theta, jax.random.PRNGKey(7))).tolist()
    assert losses == REFERENCE["episode_losses"]

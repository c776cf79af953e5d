"""Results unchanged: the first 20 updates of a small fixed-seed Lorenz run, for every
estimator, equal (bit for bit: train_loss and theta as float32) the reference generated
from the code before the speed work (commit eab8261) by tests/data/make_reference_updates.py.
The reference also holds one replayed episode's per-step losses (particles.replay_episode)."""

import json
import pathlib
import sys

import jax
import numpy as np
import pytest

DATA = pathlib.Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
import make_reference_updates as reference  # noqa: E402

REFERENCE = json.loads((DATA / "reference_updates.json").read_text())
FAST = {"nres", "tbptt"}  # the rest are marked slow (each run compiles its own programs)


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow)
                                  for n in reference.RUNS])
def test_first_20_updates_match_the_reference(name):
    expected = REFERENCE["runs"][name]
    assert expected["settings"] == reference.RUNS[name] and REFERENCE["base"] == reference.BASE
    got = reference.run(reference.RUNS[name])
    assert got["train_loss"] == expected["train_loss"], f"{name}: train_loss differs from the reference"
    assert got["theta"] == expected["theta"], f"{name}: theta differs from the reference"


def test_replayed_episode_matches_the_reference():
    from nres.config import resolve_config
    from nres.particles import episode_losses
    from nres.training import build_task

    task = build_task(resolve_config({}, {**reference.BASE, "estimator": "nres"}))
    theta = task.init_theta(jax.random.PRNGKey(0))
    losses = np.asarray(episode_losses(task, theta, jax.random.PRNGKey(7))).tolist()
    assert losses == REFERENCE["episode_losses"]

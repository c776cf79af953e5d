"""Writes tests/data/reference_updates.json: the first 20 updates of a small fixed-seed
Lorenz run for every estimator (train_loss and theta per update, float32 values stored
exactly), plus the per-step losses of one replayed Lorenz episode.

The stored file was generated from the code at commit eab8261 (before the per-window
data mechanism, the lazy Lorenz test set and the batched logging) with
``python tests/data/make_reference_updates.py``; tests/test_reference_updates.py checks
that the current code reproduces it bit for bit.
"""

import json
import pathlib

import jax
import numpy as np

from nres.build import resolve_config
from nres.particles import episode_losses
from nres.training import Trainer

HERE = pathlib.Path(__file__).parent
UPDATES = 20
# T = 50, W = 10: every particle ends an episode within the 20 updates (reset rule covered);
# gpes K = 15 takes the per-step window path, pes/nres/tes the window-aligned one.
BASE = {"task": "lorenz", "num_particles": 4, "unroll_length": 10, "horizon": 50, "sigma": 0.04,
        "lr": 1e-5, "seed": 3, "eval_every": 0, "task_options": {"num_test_starts": 8}}
RUNS = {
    "fulles": {"estimator": "fulles"},
    "tes": {"estimator": "tes"},
    "pes": {"estimator": "pes"},
    "gpes": {"estimator": "gpes", "noise_period": 15},
    "gpes_aligned": {"estimator": "gpes", "noise_period": 20},
    "nres": {"estimator": "nres"},
    "nres_adam": {"estimator": "nres", "optimizer": "adam", "lr": 1e-3},
    "bptt": {"estimator": "bptt"},
    "tbptt": {"estimator": "tbptt"},
    "uoro": {"estimator": "uoro"},
    "dodge": {"estimator": "dodge"},
}


def run(settings: dict) -> dict:
    config = resolve_config({}, {**BASE, **settings})
    trainer = Trainer(config)
    learner, counters = trainer.init()
    _, steps = trainer.update_many(learner, counters, UPDATES)
    return {
        "train_loss": [float(info.train_loss) for _, info, _ in steps],
        "theta": [np.asarray(theta, np.float32).tolist() for _, _, theta in steps],
    }


def main() -> None:
    reference = {"base": BASE, "runs": {name: {"settings": s, **run(s)} for name, s in RUNS.items()}}
    config = resolve_config({}, {**BASE, "estimator": "nres"})
    trainer = Trainer(config)
    theta = trainer.task.init_theta(jax.random.PRNGKey(0))
    reference["episode_losses"] = np.asarray(episode_losses(trainer.task, theta, jax.random.PRNGKey(7))).tolist()
    (HERE / "reference_updates.json").write_text(json.dumps(reference) + "\n")


if __name__ == "__main__":
    main()

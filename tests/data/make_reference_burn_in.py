"""Writes tests/data/reference_burn_in.json: every estimator state right after the
burn-in (``Trainer.init``) of the small fixed-seed Lorenz runs of
make_reference_updates.py, leaf by leaf (float32 values stored exactly, keys as ints).

The stored file was generated from the code at commit bf67f16, the last one with the
per-step burn-in over groups of pairs, with ``python tests/data/make_reference_burn_in.py``;
tests/test_reference_burn_in.py checks that the burn-in in windows of the update
program reaches the same states.
"""

import json
import pathlib

import jax
import numpy as np

from make_reference_updates import BASE, RUNS
from nres.build import resolve_config
from nres.training import Trainer

HERE = pathlib.Path(__file__).parent


def burned_in(settings: dict) -> dict:
    """Leaf paths and values of the estimator state after ``Trainer.init``."""
    trainer = Trainer(resolve_config({}, {**BASE, **settings}))
    learner, counters = trainer.init()
    state = jax.device_get(trainer.engine.host(learner).estimator_state)
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {"total_env_steps": counters.total_env_steps,
            "leaves": {jax.tree_util.keystr(path): np.asarray(x).tolist() for path, x in leaves}}


def main() -> None:
    reference = {"base": BASE, "runs": {name: {"settings": s, **burned_in(s)} for name, s in RUNS.items()}}
    (HERE / "reference_burn_in.json").write_text(json.dumps(reference) + "\n")


if __name__ == "__main__":
    main()

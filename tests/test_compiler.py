"""nres.compiler: the ``compile_for`` setting reaches every training program's compilation,
is part of the stored programs' key, and (on the Lorenz task, whose default is ``start``)
leaves the results bit for bit as they are under XLA's defaults."""

import os

import jax
import numpy as np
import pytest

from nres import compilation_cache
from nres.build import resolve_config
from nres.compiler import compiler_options
from nres.config import ConfigError
from nres.training import Trainer

SMALL = {"task": "lorenz", "num_particles": 4, "unroll_length": 10, "horizon": 50,
         "task_options": {"num_test_starts": 8}}
CLASSIC = {"xla_cpu_use_fusion_emitters": False}


def test_each_setting_names_its_xla_options():
    assert compiler_options("steps") == {}
    assert compiler_options("start") == (CLASSIC if jax.default_backend() == "cpu" else {})
    with pytest.raises(ValueError, match="compile_for"):
        compiler_options("fast")


def test_lorenz_compiles_for_its_start_other_tasks_for_their_steps():
    assert resolve_config({"task": "lorenz"}).compile_for == "start"
    assert resolve_config({"task": "linear"}).compile_for == "steps"
    assert resolve_config({"task": "lorenz", "compile_for": "steps"}).compile_for == "steps"
    with pytest.raises(ConfigError, match="unknown compile_for 'fast'; choose one of steps, start"):
        resolve_config({"task": "lorenz", "compile_for": "fast"})


def test_the_setting_reaches_both_programs_and_keys_them_apart(tmp_path):
    """Init and update chunk carry the options; a run for each setting stores its own
    executables, and XLA compiled them differently (their optimised programs differ)."""
    compilation_cache.enable(str(tmp_path))
    try:
        texts = {}
        for setting in ("start", "steps"):
            trainer = Trainer(resolve_config({**SMALL, "compile_for": setting}))
            assert trainer._init.compiler_options == trainer.engine._chunk.compiler_options == compiler_options(setting)
            before = set(os.listdir(tmp_path / compilation_cache.EXECUTABLES)) if setting == "steps" else set()
            learner, counters = trainer.init()
            trainer.update_many(learner, counters, 1)
            stored = set(os.listdir(tmp_path / compilation_cache.EXECUTABLES)) - before
            assert len(stored) == 2, f"{setting}: expected the init and the chunk stored anew, got {sorted(stored)}"
            texts[setting] = sorted(compilation_cache.Program._load(tmp_path / compilation_cache.EXECUTABLES / name)
                                    .as_text() for name in stored)
        if jax.default_backend() == "cpu":
            assert texts["start"] != texts["steps"], "the classic emitters' options did not reach XLA"
    finally:
        compilation_cache.enable()


@pytest.mark.parametrize("estimator", ["nres", "pes"])
def test_the_default_lorenz_run_has_the_same_bits_for_start_and_steps(estimator):
    """The issue's benchmark setting (N = 200, W = 100, T = 2000): three updates after
    the burn-in, theta and every logged value equal bit for bit."""
    results = {}
    for setting in ("start", "steps"):
        trainer = Trainer(resolve_config({"task": "lorenz", "estimator": estimator, "eval_every": 0,
                                          "compile_for": setting}))
        learner, counters = trainer.init()
        _, steps = trainer.update_many(learner, counters, 3)
        results[setting] = [(np.asarray(theta), tuple(np.asarray(v) for v in info)) for _, info, theta in steps]
    for (theta_a, info_a), (theta_b, info_b) in zip(results["start"], results["steps"]):
        np.testing.assert_array_equal(theta_a, theta_b)
        for a, b in zip(info_a, info_b):
            np.testing.assert_array_equal(a, b)

"""Each environment's own training defaults for the ``rl`` task (``--env NAME`` picks them).

``nres train --task rl --env NAME`` starts from ``DEFAULTS[NAME]``: training settings
(``N``, ``W``, ``sigma``, optimiser, budget) and task options (policy, its initial scale,
observation normalisation, ``T``); every config file and flag still wins over them.

* Swimmer-v5: the paper's settings (SPEC section 6).
* The others, HalfCheetah-v5 included: settings measured to raise the return on a 2-core
  CPU within a short budget (``experiments/rl_defaults/measure.py``, results in
  ``docs/results/rl_defaults``).
* An environment with no entry (one added to ``envs.SUPPORTED`` without measuring its
  own) gets :data:`FALLBACK` (Hopper's and Walker2d's), named as such in the line
  printed at start.
"""

from __future__ import annotations

from typing import Any, Mapping

from nres.tasks import TaskDefaults

# The paper's Swimmer NRES settings (SPEC section 6); also the rl task's ``training_defaults``.
SWIMMER = {"estimator": "nres", "num_particles": 30, "unroll_length": 100, "sigma": 0.3,
           "optimizer": "sgd", "lr": 3.0, "iterations": 300, "eval_every": 25}

_MEASURED = "measured on a 2-core CPU: docs/results/rl_defaults"

DEFAULTS: dict[str, TaskDefaults] = {
    "Swimmer-v5": TaskDefaults(
        SWIMMER, {"policy": "linear", "init": "zeros", "obs_normalize": False, "horizon": 1000},
        "Swimmer-v5 (the paper's settings)"),
}

# Early-terminating locomotion (Hopper, Walker2d): a linear policy from zero, scale-free
# steps (each window's gradient divided by the spread of the pairs' loss differences).
# Chosen from the runs in docs/results/rl_defaults/sweep.jsonl (measure.py, seed 0, 30
# updates): SGD 0.002 raised Hopper from 167 to 338 and Walker2d from 96 to 322; Hopper at
# 0.005: 313. --obs-normalize (fixed statistics of random-action episodes, which fall at
# once) lowered Hopper's return instead (to 82, 105 and 128 at 0.0005, 0.002 and 0.01).
_LOCOMOTION = {"estimator": "nres", "num_particles": 30, "unroll_length": 100, "sigma": 0.025,
               "optimizer": "sgd", "lr": 0.002, "loss_normalize": True, "iterations": 300, "eval_every": 25}
_LINEAR_FROM_ZERO = {"policy": "linear", "init": "zeros", "obs_normalize": False, "horizon": 1000}

# HalfCheetah: the same. The paper's recipe (N = 300, W = 20, sigma = 0.004, SGD 3e-5,
# the reference's init: --init variance_scaling --init-scale 0.03) learns only from an
# initial policy that already moves: from a still one (the cheetah rests, the loss is
# flat at sigma = 0.004) it stays there. Seeds 0, 1, 2, 100 updates: -220 -> -0.7 (to a
# standstill), -0.04 -> -0.04, -877 -> 423; this setting: -0.2 -> 1095, -0.04 -> 790,
# -0.5 -> 1001 in 60 updates (docs/results/rl_defaults/sweep.jsonl).
DEFAULTS["HalfCheetah-v5"] = TaskDefaults(_LOCOMOTION, _LINEAR_FROM_ZERO, f"HalfCheetah-v5 ({_MEASURED})")
DEFAULTS["Hopper-v5"] = TaskDefaults(_LOCOMOTION, _LINEAR_FROM_ZERO, f"Hopper-v5 ({_MEASURED})")
DEFAULTS["Walker2d-v5"] = TaskDefaults(_LOCOMOTION, _LINEAR_FROM_ZERO, f"Walker2d-v5 ({_MEASURED})")
# Balance: the same at SGD 0.01 (seed 0, 20 updates: 23 -> 148; at 0.002: 72; at 0.03: 128).
DEFAULTS["InvertedPendulum-v5"] = TaskDefaults({**_LOCOMOTION, "lr": 0.01}, _LINEAR_FROM_ZERO,
                                               f"InvertedPendulum-v5 ({_MEASURED})")
# InvertedDoublePendulum: Hopper's as they are (seed 0, 20 updates: 88 -> 175).
DEFAULTS["InvertedDoublePendulum-v5"] = TaskDefaults(_LOCOMOTION, _LINEAR_FROM_ZERO,
                                                     f"InvertedDoublePendulum-v5 ({_MEASURED})")
# Ant: standing still already scores about 1000 (the healthy reward); Hopper's settings
# (SGD 0.002 or 0.0005, or with running observation statistics) lowered it to 566, 943
# and -63 in 20 updates (seed 0). More pairs and smaller steps raise it: N = 100,
# sigma = 0.01, SGD 0.0005: 992 -> 1431 in 20 updates (20,000 env steps per update).
DEFAULTS["Ant-v5"] = TaskDefaults({**_LOCOMOTION, "num_particles": 100, "sigma": 0.01, "lr": 0.0005},
                                  _LINEAR_FROM_ZERO, f"Ant-v5 ({_MEASURED})")
# Reacher: gymnasium's episode of 50 steps, one window per episode (seed 0, 20 updates:
# -10.4 -> -9.1; lr 0.005 and 0.01: -9.6 and -9.1; at T = 1000: -208 -> -157).
DEFAULTS["Reacher-v5"] = TaskDefaults({**_LOCOMOTION, "unroll_length": 50}, {**_LINEAR_FROM_ZERO, "horizon": 50},
                                      f"Reacher-v5 ({_MEASURED})")

# Humanoid: Hopper's with the action clipped to the action space ([-0.4, 0.4]). Unclipped,
# the linear policy's actions grow with Humanoid's large observations and gymnasium charges
# the control cost on them: every unclipped setting tried lowered the return (seed 0,
# Hopper's: 202 -> -696 in 10 updates; sweep.jsonl). Clipped (seeds 0 and 1, 20 updates):
# 202 -> 332 and 199 -> 447, above the start at every evaluation; SGD 0.005: 440 and 268
# (seed 1 falling back from 551), 0.01: 334 (98 after 10 updates).
DEFAULTS["Humanoid-v5"] = TaskDefaults(_LOCOMOTION, {**_LINEAR_FROM_ZERO, "action_clip": True},
                                       f"Humanoid-v5 ({_MEASURED})")
FALLBACK = TaskDefaults(_LOCOMOTION, _LINEAR_FROM_ZERO, "")


def defaults_for(options: Mapping[str, Any]) -> TaskDefaults:
    """The defaults of the environment ``options["env"]`` (default ``Swimmer-v5``)."""
    env = options.get("env", "Swimmer-v5")
    if env in DEFAULTS:
        return DEFAULTS[env]
    if not isinstance(env, str):
        return TaskDefaults()  # the task names the bad value when it is built
    return FALLBACK._replace(source=f"{env} (no settings of its own: those of Hopper-v5 and Walker2d-v5)")

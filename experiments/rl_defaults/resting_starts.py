"""How many initial HalfCheetah policies leave the cheetah resting, per initialisation.

For keys 0..K-1: the initial theta of ``--init variance_scaling`` (the reference code's
distribution) and of ``--init truncated_normal`` (both at ``--init-scale 0.03``), each
evaluated over 3 episodes of T = 1000 steps (evaluation key 1). A start "rests" when its
mean return lies within 5 of 0 (a moving cheetah scores hundreds either way). Writes
``docs/results/rl_defaults/resting_starts.json``.

    PYTHONPATH=. python experiments/rl_defaults/resting_starts.py [--keys 20]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from measure import _commit  # this folder's measure.py: HEAD, "+dirty" with uncommitted changes

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "results" / "rl_defaults" / "resting_starts.json"
RESTING = 5.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    import jax

    from nres.tasks.rl import RLConfig, make_rl_task

    result = {"commit": _commit(),
              "env": "HalfCheetah-v5", "init_scale": 0.03, "episodes": 3, "resting_if_abs_return_below": RESTING,
              "inits": {}}
    for init in ("variance_scaling", "truncated_normal"):
        task = make_rl_task(RLConfig(env="HalfCheetah-v5", init=init, init_scale=0.03, num_eval_episodes=3,
                                     num_threads=1))
        evaluate = jax.jit(task.evaluate)
        returns = [round(float(evaluate(task.init_theta(jax.random.PRNGKey(k)), jax.random.PRNGKey(1))
                               ["test_return"]), 2) for k in range(args.keys)]
        result["inits"][init] = {"returns": returns, "resting": sum(abs(r) < RESTING for r in returns)}
        print(init, result["inits"][init], flush=True)
    path = pathlib.Path(args.out)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measure each MuJoCo environment's default settings (``nres/tasks/rl/defaults.py``).

For every environment and seed: resolve ``nres train --task rl --env ENV --seed S`` with
nothing else changed except the budget (``--iterations``), one physics thread per run and
the evaluation's episode count; evaluate the initial policy, train, evaluate after every
``--eval-every`` updates (same evaluation episodes each time: key ``seed + 1``). Writes
``docs/results/rl_defaults/returns.json``: per environment its defaults, the budget, per
seed the return at start and after each evaluated update, whether every training loss
stayed finite, and the wall time; the commit measured at and the machine's load.
``report.py`` then renders the README table from that summary.

    PYTHONPATH=. python experiments/rl_defaults/measure.py            # every environment, 2 seeds: ~20 min here
    PYTHONPATH=. python experiments/rl_defaults/measure.py --envs Hopper-v5 --set lr=0.01 --out -

``--set`` (exploring other settings) prints the result without writing the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Not summary.json: that name marks a comparison of `nres compare` with a README block of its own.
SUMMARY = ROOT / "docs" / "results" / "rl_defaults" / "returns.json"

# Updates per run; every environment's defaults step 60 environments x 100 steps per
# update (6,000 env steps; Reacher 60 x 50; Ant 200 x 100). HalfCheetah rests near 0 for
# its first 10-20 updates.
BUDGETS = {"Swimmer-v5": 20, "HalfCheetah-v5": 60, "Hopper-v5": 30, "Walker2d-v5": 30, "InvertedPendulum-v5": 20,
           "InvertedDoublePendulum-v5": 20, "Reacher-v5": 20, "Ant-v5": 20, "Humanoid-v5": 20}
EVAL_EVERY = {"HalfCheetah-v5": 10}


def _commit() -> str:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return head + ("+dirty" if dirty else "")


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def measure(env: str, seed: int, updates: int, eval_every: int, episodes: int, overrides: dict) -> dict:
    """One run: returns at start and every ``eval_every`` updates, loss finiteness, times."""
    import numpy as np

    from nres.build import resolve_config
    from nres.training import Trainer

    settings = {k: v for k, v in overrides.items() if not k.startswith("task_options.")}
    options = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("task_options.")}
    config = resolve_config({"task": "rl", "seed": seed, "iterations": updates,
                             "task_options": {"env": env, "num_threads": 1, "num_eval_episodes": episodes}},
                            {**settings, "task_options": options})
    started = time.perf_counter()
    trainer = Trainer(config)
    learner, counters = trainer.init()
    returns = {0: trainer.evaluate(learner.theta)["test_return"]}
    losses, train_s = [], 0.0
    done = 0
    while done < updates:
        count = min(eval_every, updates - done, trainer.max_chunk)
        tick = time.perf_counter()
        learner, rows = trainer.update_many(learner, counters, count)
        train_s += time.perf_counter() - tick
        counters = rows[-1][0]
        losses += [float(info.train_loss) for _, info, _ in rows]
        done += count
        if done % eval_every == 0 or done == updates:
            returns[done] = trainer.evaluate(learner.theta)["test_return"]
    return {"seed": seed, "returns": {str(k): round(float(v), 3) for k, v in returns.items()},
            "start": round(float(returns[0]), 3), "end": round(float(returns[updates]), 3),
            "losses_finite": bool(np.all(np.isfinite(losses))), "first_loss": losses[0], "last_loss": losses[-1],
            "env_steps": int(counters.total_env_steps), "train_s": round(train_s, 1),
            "total_s": round(time.perf_counter() - started, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(BUDGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--updates", type=int, help="every environment's budget (default: BUDGETS)")
    parser.add_argument("--episodes", type=int, default=5, help="evaluation episodes")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override a setting (task options as task_options.NAME); prints only")
    parser.add_argument("--out", default=str(SUMMARY), help="summary file, or - to print only")
    args = parser.parse_args(argv)
    overrides = {k: _value(v) for k, _, v in (s.partition("=") for s in args.set)}
    from nres.tasks import get_task_entry

    entry = get_task_entry("rl")
    commit, load_before = _commit(), os.getloadavg()
    envs = {}
    for env in args.envs:
        updates = args.updates or BUDGETS.get(env, 20)
        every = min(EVAL_EVERY.get(env, 5), updates)
        defaults = entry.defaults({"env": env})
        runs = []
        for seed in args.seeds:
            runs.append(measure(env, seed, updates, every, args.episodes, overrides))
            print(json.dumps({"env": env, **runs[-1]}), flush=True)
        envs[env] = {"defaults": {"training": dict(defaults.training), "options": dict(defaults.options),
                                  "source": defaults.source},
                     "updates": updates, "eval_every": every, "runs": runs}
    summary = {"commit": commit, "overrides": overrides, "seeds": args.seeds, "eval_episodes": args.episodes,
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
                          "shared with other jobs; one physics thread per run, runs one after another",
               "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()],
               "date": time.strftime("%Y-%m-%d"), "envs": envs}
    if overrides or args.out == "-":
        print(json.dumps(summary, indent=1))
        return 0
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

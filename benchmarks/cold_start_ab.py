"""Cold start of two source trees, interleaved: the training clock through update 1.

Each sample is a fresh process that builds the default run of ``--task`` from the tree on
its ``PYTHONPATH``, runs ``Trainer.init`` and one update, and prints ``wall_time_s`` of
update 1 (compilation, burn-in and the update). ``--cache off`` (default): the compilation
cache off; ``--cache fresh``: on, in a new empty directory per sample (a user's cold start:
programs are compiled and stored). The two trees alternate, the first of each pair
switching sides every pair, ``--pairs`` times; printed: each pair and the median ratio B / A.

Usage: python benchmarks/cold_start_ab.py TREE_A TREE_B [--task lorenz] [--pairs 5] [--cache off|fresh]
(a tree: a checkout of nres, e.g. ``git worktree add /tmp/before COMMIT``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import sys
import nres.compilation_cache as cc
from nres.build import resolve_config
from nres.training import Trainer
cc.enable(sys.argv[2])
trainer = Trainer(resolve_config({"task": sys.argv[1], "seed": 0, "eval_every": 0}))
learner, counters = trainer.init()
learner, steps = trainer.update_many(learner, counters, 1)
print(steps[-1][0].wall_time_s)
"""


def clock(tree: str, task: str, cache: str) -> float:
    env = {**os.environ, "PYTHONPATH": tree}
    with tempfile.TemporaryDirectory() as fresh:
        setting = fresh if cache == "fresh" else "off"
        out = subprocess.run([sys.executable, "-c", CHILD, task, setting], env=env, capture_output=True, text=True,
                             check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree_a")
    parser.add_argument("tree_b")
    parser.add_argument("--task", default="lorenz")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--cache", choices=("off", "fresh"), default="off")
    args = parser.parse_args()
    ratios = []
    for i in range(args.pairs):
        if i % 2:
            b, a = clock(args.tree_b, args.task, args.cache), clock(args.tree_a, args.task, args.cache)
        else:
            a, b = clock(args.tree_a, args.task, args.cache), clock(args.tree_b, args.task, args.cache)
        ratios.append(b / a)
        print(f"pair {i}: A {a:.2f} s, B {b:.2f} s, B/A {b / a:.2f}; load average {os.getloadavg()[0]:.1f}",
              flush=True)
    print(f"{args.task}: median B/A {statistics.median(ratios):.2f} over {args.pairs} pairs "
          f"({sum(r < 1 for r in ratios)} below 1)")


if __name__ == "__main__":
    main()

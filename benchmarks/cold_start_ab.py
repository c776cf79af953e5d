"""Cold start of two source trees, interleaved: the training clock through update 1.

Each sample is a fresh process with JAX's compilation cache off that builds the default
run of ``--task`` from the tree on its ``PYTHONPATH``, runs ``Trainer.init`` and one
update, and prints ``wall_time_s`` of update 1 (compilation, burn-in and the update). The
two trees alternate, ``--pairs`` times; printed: each pair and the median ratio B / A.

Usage: python benchmarks/cold_start_ab.py TREE_A TREE_B [--task lorenz] [--pairs 5]
(a tree: a checkout of nres, e.g. ``git worktree add /tmp/before COMMIT``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import sys
import nres.compilation_cache as cc
from nres.build import resolve_config
from nres.training import Trainer
cc.enable("off")
trainer = Trainer(resolve_config({"task": sys.argv[1], "seed": 0, "eval_every": 0}))
learner, counters = trainer.init()
learner, steps = trainer.update_many(learner, counters, 1)
print(steps[-1][0].wall_time_s)
"""


def clock(tree: str, task: str) -> float:
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run([sys.executable, "-c", CHILD, task], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree_a")
    parser.add_argument("tree_b")
    parser.add_argument("--task", default="lorenz")
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    ratios = []
    for i in range(args.pairs):
        a, b = clock(args.tree_a, args.task), clock(args.tree_b, args.task)
        ratios.append(b / a)
        print(f"pair {i}: A {a:.2f} s, B {b:.2f} s, B/A {b / a:.2f}; load average {os.getloadavg()[0]:.1f}",
              flush=True)
    print(f"{args.task}: median B/A {statistics.median(ratios):.2f} over {args.pairs} pairs "
          f"({sum(r < 1 for r in ratios)} below 1)")


if __name__ == "__main__":
    main()

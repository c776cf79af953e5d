"""Cold start of two source trees, interleaved: the training clock through update 1.

Each sample is a fresh process that builds the default run of ``--task`` from the tree on
its ``PYTHONPATH``, runs ``Trainer.init`` and one update, and prints ``wall_time_s`` of
update 1 (compilation, burn-in and the update) and the process's CPU seconds over the same
span (every thread: XLA compiles kernels on several). ``--cache off`` (default): the compilation
cache off; ``--cache fresh``: on, in a new empty directory per sample (a user's cold start:
programs are compiled and stored). The two trees alternate, the first of each pair
switching sides every pair, ``--pairs`` times; printed: each pair and the median ratios B / A
of the clock and of the CPU seconds.

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
import sys, time
import nres
import nres.compilation_cache as cc
from nres.build import resolve_config
from nres.training import Trainer
cc.enable(sys.argv[2])
trainer = Trainer(resolve_config({"task": sys.argv[1], "seed": 0, "eval_every": 0}))
cpu = time.process_time()
learner, counters = trainer.init()
learner, steps = trainer.update_many(learner, counters, 1)
print(nres.__file__)
print(steps[-1][0].wall_time_s, time.process_time() - cpu)
"""


def clock(tree: str, task: str, cache: str) -> tuple[float, float]:
    """Training clock through update 1 and CPU seconds of one fresh process of ``tree``."""
    env = {**os.environ, "PYTHONPATH": tree}
    with tempfile.TemporaryDirectory() as fresh:
        setting = os.path.join(fresh, "cache") if cache == "fresh" else "off"
        # run in the empty directory: `python -c` puts the working directory first on sys.path,
        # where a checkout of nres (the one this script is started from) would shadow ``tree``
        out = subprocess.run([sys.executable, "-c", CHILD, task, setting], env=env, cwd=fresh, capture_output=True,
                             text=True, check=True)
    *_, imported, line = out.stdout.strip().splitlines()
    if os.path.commonpath([os.path.realpath(imported), os.path.realpath(tree)]) != os.path.realpath(tree):
        raise SystemExit(f"the child imported nres from {imported}, not from the tree {tree}")
    wall, cpu = line.split()
    return float(wall), float(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree_a")
    parser.add_argument("tree_b")
    parser.add_argument("--task", default="lorenz")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--cache", choices=("off", "fresh"), default="off")
    args = parser.parse_args()
    ratios, cpu_ratios = [], []
    for i in range(args.pairs):
        order = (0, 1) if i % 2 == 0 else (1, 0)  # the first of each pair switches sides
        times = {side: clock((args.tree_a, args.tree_b)[side], args.task, args.cache) for side in order}
        (a, a_cpu), (b, b_cpu) = times[0], times[1]
        ratios.append(b / a)
        cpu_ratios.append(b_cpu / a_cpu)
        print(f"pair {i}: A {a:.2f} s ({a_cpu:.2f} s CPU), B {b:.2f} s ({b_cpu:.2f} s CPU), B/A {b / a:.2f} "
              f"(CPU {b_cpu / a_cpu:.2f}); load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"{args.task}: median B/A {statistics.median(ratios):.2f} over {args.pairs} pairs "
          f"({sum(r < 1 for r in ratios)} below 1); CPU seconds {statistics.median(cpu_ratios):.2f} "
          f"({sum(r < 1 for r in cpu_ratios)} below 1)")


if __name__ == "__main__":
    main()

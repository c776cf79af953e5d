"""Updates per second and bytes sent per update against workers/processes (1, 2).

For each task (Lorenz, the learned optimizer, CPU-MuJoCo Swimmer; small settings so it
runs on a laptop) it measures, interleaved in rounds so drift hits every engine alike:

* ``local``: one process (the baseline; every ratio is against it, same round),
* ``ray-1``, ``ray-2``: 1 and 2 Ray actors on a local Ray instance,
* ``dist-2``: 2 ``jax.distributed`` CPU processes on 127.0.0.1 (one process is timed;
  both run the same updates).

Compilation and the burn-in are excluded: each engine is warmed up, then ``--updates``
updates are timed. Bytes per update are what crosses engines per update: Ray sends
``theta`` to each actor (``K * 4 d``) and gets ``25 N`` bytes of scalars back; the
distributed engine all-gathers ``25 N`` bytes. Beside them: what shipping a gradient
(``4 d`` per worker) or the noise (``4 N d``) would cost.

Usage: python benchmarks/scaling.py [--rounds 3] [--updates 20] [--tasks lorenz,lopt,swimmer]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import jax

from nres.build import resolve_config
from nres.engines import EngineOptions
from nres.estimators.scalars import scalar_bytes
from nres.training import Trainer

TASKS = {
    "lorenz": {"task": "lorenz", "num_particles": 200, "unroll_length": 100, "horizon": 2000},
    "lopt": {"task": "lopt", "num_particles": 20, "unroll_length": 10, "horizon": 100},
    "swimmer": {"task": "rl", "num_particles": 8, "unroll_length": 50, "horizon": 200,
                "task_options": {"num_threads": 1}},
}

WORKER = r"""
import json, sys, time
import jax
from nres.engines.distributed import initialize
initialize()
from nres.build import resolve_config
from nres.engines import EngineOptions
from nres.training import Trainer
settings, updates, rounds = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
trainer = Trainer(resolve_config(settings), engine=EngineOptions(distributed=True))
learner, counters = trainer.init()
learner, _ = trainer.update_many(learner, counters, 1)
for _ in range(rounds):
    start = time.perf_counter()
    learner, _ = trainer.update_many(learner, counters, updates)
    if jax.process_index() == 0:
        print("RATE", updates / (time.perf_counter() - start), flush=True)
"""


def _rate(trainer, learner, counters, updates):
    start = time.perf_counter()
    learner, _ = trainer.update_many(learner, counters, updates)
    return learner, updates / (time.perf_counter() - start)


def _distributed_rates(settings, updates, rounds):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2")
    args = [sys.executable, "-c", WORKER, json.dumps(settings), str(updates), str(rounds)]
    procs = [subprocess.Popen(args, env={**env, "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE, text=True)
             for i in range(2)]
    out = [p.communicate(timeout=1800)[0] for p in procs]
    return [float(line.split()[1]) for line in out[0].splitlines() if line.startswith("RATE")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--tasks", default=",".join(TASKS))
    args = parser.parse_args()
    import ray

    # 3 actors live at once (ray-1 and ray-2); they take turns, so the CPUs may be oversubscribed
    ray.init(num_cpus=max(3, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    try:
        for name in args.tasks.split(","):
            settings = TASKS[name]
            config = resolve_config(settings)
            engines = {"local": EngineOptions(), "ray-1": EngineOptions("ray", 1), "ray-2": EngineOptions("ray", 2)}
            runs = {}
            for label, options in engines.items():
                trainer = Trainer(config, engine=options)
                learner, counters = trainer.init()
                learner, _ = trainer.update_many(learner, counters, 1)  # compile
                runs[label] = [trainer, learner, counters, []]
            for _ in range(args.rounds):  # interleaved rounds
                for label, run in runs.items():
                    run[1], rate = _rate(run[0], run[1], run[2], args.updates)
                    run[3].append(rate)
            dist = _distributed_rates(settings, args.updates, args.rounds)
            n = config.num_particles
            d = sum(x.size for x in jax.tree_util.tree_leaves(runs["local"][1].theta))
            base = statistics.median(runs["local"][3])
            print(f"\n{name}: N={n}, W={config.unroll_length}, T={config.horizon or 'task'}, d={d}, "
                  f"{args.rounds} rounds x {args.updates} updates (medians)")
            print(f"{'engine':8} {'updates/s':>10} {'vs local':>9} {'bytes/update':>13}")
            for label, run in runs.items():
                engine = run[0].engine
                sent = getattr(engine, "bytes_to_workers", 0) + getattr(engine, "bytes_from_workers", 0)
                done = args.updates * args.rounds + 1
                rate = statistics.median(run[3])
                print(f"{label:8} {rate:10.2f} {rate / base:9.2f} {sent / done:13.0f}")
                engine.close()
            if dist:
                rate = statistics.median(dist)
                print(f"{'dist-2':8} {rate:10.2f} {rate / base:9.2f} {scalar_bytes(n):13.0f}")
            print(f"(per update, a gradient per worker would be {4 * d} B, the pairs' noise {4 * n * d} B)")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

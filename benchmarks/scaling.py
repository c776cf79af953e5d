"""Per-update time of the Ray and ``--distributed`` engines against one process, where
Ray's time goes, and a model of updates per second against workers and hosts.

For each task it measures, interleaved in rounds so drift and other jobs' load hit
every engine alike (ratios are against ``local`` *in the same round*, then the median):

* ``local``: one process (the baseline),
* ``ray-1``, ``ray-2``: 1 and 2 Ray actors on one local Ray instance,
* ``dist-2``: 2 ``jax.distributed`` CPU processes on 127.0.0.1 (not interleaved: run
  after the others, one process timed; only with ``--distributed``).

Tasks: ``lorenz``, ``lopt``, ``swimmer`` (small settings, cheap windows) and the
paper's CPU-MuJoCo settings ``swimmer-paper`` (N = 30, W = 100, T = 1000) and
``halfcheetah-paper`` (N = 300, W = 20, T = 1000, sigma = 0.004). Compilation and the
burn-in are excluded: each engine is warmed up, then ``--updates`` updates are timed
per round.

Ray's time per update is split (:meth:`nres.engines.ray.RayDriver.profile`):
``window``, the slowest actor's time in its window; ``round trip``, the rest of the
time from sending ``theta`` to holding every actor's scalars (Ray's calls, transport,
waking the actors); ``learner``, rebuilding the gradient and the optax step;
``run<->driver``, the remainder (the run process's one message per chunk to the driver
process, stacking results). Each window is one Ray call per actor, ``theta`` sent by
value (29 bytes per pair come back), every actor's result fetched by one ``ray.get``.

The model (:func:`predict`): with ``K`` actors of ``threads`` simulator threads each
(CPU MuJoCo's ``num_threads``; 0 means every CPU) on ``H`` hosts of ``C`` cores, an
update costs ``t = c N / min(K threads, H C) + r + (K - 1) s + a`` seconds: ``c`` is one
pair's window in core-seconds (from ``ray-1``'s actor), ``r`` the round trip with one
actor, ``s`` what each further actor adds (``ray-2``'s minus ``ray-1``'s), ``a`` the
learner's step; hosts add their network's round trip (``--network-ms``, an assumption,
not measured here). It is checked against every measured point (``local`` as
``c N / threads + a``) and then tabulated for more workers and hosts.

Usage: python benchmarks/scaling.py [--rounds 5] [--updates 5] [--tasks swimmer-paper,halfcheetah-paper]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time

import jax

from nres.build import resolve_config
from nres.engines import EngineOptions
from nres.engines.ray import WORKER_NICENESS_ENV
from nres.estimators.scalars import scalar_bytes
from nres.training import Trainer

TASKS = {
    "lorenz": {"task": "lorenz", "num_particles": 200, "unroll_length": 100, "horizon": 2000},
    "lopt": {"task": "lopt", "num_particles": 20, "unroll_length": 10, "horizon": 100},
    "swimmer": {"task": "rl", "num_particles": 8, "unroll_length": 50, "horizon": 200,
                "task_options": {"num_threads": 1}},
    "swimmer-paper": {"task": "rl", "num_particles": 30, "unroll_length": 100,
                      "task_options": {"env": "Swimmer-v5"}},
    "halfcheetah-paper": {"task": "rl", "num_particles": 300, "unroll_length": 20, "sigma": 0.004,
                          "task_options": {"env": "HalfCheetah-v5"}},
}
RAY_WORKERS = (1, 2)

WORKER = r"""
import json, sys, time
import jax
from nres.engines.distributed import initialize
initialize()
from nres.build import resolve_config
from nres.engines import EngineOptions
from nres.engines.ray import WORKER_NICENESS_ENV
from nres.training import Trainer
settings, updates, rounds = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
trainer = Trainer(resolve_config(settings), engine=EngineOptions(distributed=True))
learner, counters = trainer.init()
learner, _ = trainer.update_many(learner, counters, 1)
for _ in range(rounds):
    start = time.perf_counter()
    learner, _ = trainer.update_many(learner, counters, updates)
    if jax.process_index() == 0:
        print("SECONDS", (time.perf_counter() - start) / updates, flush=True)
"""


def _distributed_seconds(settings, updates, rounds) -> list[float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2")
    args = [sys.executable, "-c", WORKER, json.dumps(settings), str(updates), str(rounds)]
    procs = [subprocess.Popen(args, env={**env, "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE, text=True)
             for i in range(2)]
    out = [p.communicate(timeout=3600)[0] for p in procs]
    return [float(line.split()[1]) for line in out[0].splitlines() if line.startswith("SECONDS")]


class Engine:
    """One engine under test: a trainer warmed up (compiled, burnt in, one update run)."""

    def __init__(self, label: str, config, options: EngineOptions):
        self.label = label
        self.trainer = Trainer(config, engine=options)
        self.learner, self.counters = self.trainer.init()
        self.learner, _ = self.trainer.update_many(self.learner, self.counters, 1)
        self.seconds: list[float] = []  # per update, each round
        self.parts: list[dict] = []  # Ray: per-update split, each round

    def time_round(self, updates: int) -> None:
        profile = getattr(self.trainer.engine, "profile", None)
        before = profile() if profile else None
        start = time.perf_counter()
        self.learner, _ = self.trainer.update_many(self.learner, self.counters, updates)
        seconds = (time.perf_counter() - start) / updates
        self.seconds.append(seconds)
        if profile:
            after = profile()
            windows = after["windows"] - before["windows"]
            window = max(b - a for a, b in zip(before["busy_s"], after["busy_s"])) / windows
            gather = (after["gather_s"] - before["gather_s"]) / windows
            apply = (after["apply_s"] - before["apply_s"]) / windows
            self.parts.append({"window": window, "round trip": gather - window, "learner": apply,
                               "run<->driver": seconds - gather - apply})

    def median_part(self, name: str) -> float:
        return statistics.median(p[name] for p in self.parts)

    def close(self) -> None:
        self.trainer.engine.close()


def predict(core_s: float, num_pairs: int, workers: int, threads: int, cores_per_host: int, round_trip_s: float,
            per_actor_s: float, learner_s: float, network_s: float = 0.0, hosts: int | None = None
            ) -> tuple[float, int]:
    """``(seconds per update, hosts)`` with ``workers`` Ray actors of ``threads`` simulator
    threads each, on ``hosts`` hosts of ``cores_per_host`` cores (default: as many as give
    every thread a core)::

        t = c N / min(K threads, H cores) + r + (K - 1) s + a (+ the network's round trip if H > 1)

    ``c``: core-seconds of one pair's window; ``r``: the round trip with one actor; ``s``:
    what each further actor adds to it; ``a``: the learner's step."""
    hosts = hosts or max(1, math.ceil(workers * threads / cores_per_host))
    cores = min(workers * threads, hosts * cores_per_host)
    seconds = core_s * num_pairs / cores + round_trip_s + (workers - 1) * per_actor_s + learner_s
    return seconds + (network_s if hosts > 1 else 0.0), hosts


def _quantiles(values: list[float]) -> str:
    """Median and the range of the middle half (the interquartile range) of ``values``."""
    if len(values) < 4:
        return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return f"{q2:.2f} [{q1:.2f}, {q3:.2f}]"


def _commit() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def run_task(name: str, args, address: str) -> None:
    settings = TASKS[name]
    config = resolve_config(settings)
    n = config.num_particles
    load_before = _load()
    engines = [Engine("local", config, EngineOptions())]
    engines += [Engine(f"ray-{k}", config, EngineOptions("ray", k, address)) for k in RAY_WORKERS if n % k == 0]
    for _ in range(args.rounds):  # interleaved rounds
        for engine in engines:
            engine.time_round(args.updates)
    dist = _distributed_seconds(settings, args.updates, args.rounds) if args.distributed else []
    d = sum(x.size for x in jax.tree_util.tree_leaves(engines[0].learner.theta))
    horizon = config.horizon or config.task_options.get("horizon", "task")
    print(f"\n{name}: N={n}, W={config.unroll_length}, T={horizon}, sigma={config.sigma}, d={d}; "
          f"{args.rounds} interleaved rounds x {args.updates} updates; load average {load_before} before, "
          f"{_load()} after")
    local = engines[0].seconds
    print(f"{'engine':8} {'ms/update':>10} {'x local: median [IQR] of rounds':>34} {'bytes/update':>13}")
    for engine in engines:
        ratios = [s / b for s, b in zip(engine.seconds, local)]
        ray = engine.trainer.engine
        sent = ((ray.bytes_to_workers + ray.bytes_from_workers) / ray.profile()["windows"]) if engine.parts else 0
        print(f"{engine.label:8} {1e3 * statistics.median(engine.seconds):10.2f} {_quantiles(ratios):>34} "
              f"{sent:13.0f}")
    if dist:
        print(f"{'dist-2':8} {1e3 * statistics.median(dist):10.2f} "
              f"{statistics.median(dist) / statistics.median(local):>25.2f} (not interleaved) {scalar_bytes(n):13.0f}")
    print(f"(per update, a gradient per worker would be {4 * d} B, the pairs' noise {4 * n * d} B)")
    rays = [e for e in engines if e.parts]
    if rays:
        print("Ray, ms per update (medians of rounds):")
        names = ("window", "round trip", "learner", "run<->driver")
        print(f"{'engine':8} " + " ".join(f"{p:>12}" for p in names))
        for engine in rays:
            print(f"{engine.label:8} " + " ".join(f"{1e3 * engine.median_part(p):12.2f}" for p in names))
        threads = config.task_options.get("num_threads", 0) if config.task == "rl" else 1
        _model(rays, engines[0], n, threads or os.cpu_count() or 1, args)
    for engine in engines:
        engine.close()


def _model(rays: list, local: "Engine", n: int, threads: int, args) -> None:
    """The model's inputs from ray-1 and ray-2, checked at every measured point, then tabulated."""
    cores = args.cores_per_host
    used = min(threads, cores)  # cores one actor's simulator threads use
    by_k = {int(e.label.split("-")[1]): e for e in rays}
    one = by_k[1]
    core_s = one.median_part("window") * used / n
    overhead = {k: e.median_part("round trip") + e.median_part("run<->driver") for k, e in by_k.items()}
    per_actor = max(0.0, overhead.get(2, overhead[1]) - overhead[1])
    learner = statistics.median(e.median_part("learner") for e in rays)
    print(f"model: t = c N / min(K threads, H cores) + r + (K - 1) s + a; from the medians: c = "
          f"{1e3 * core_s:.4f} core-ms per pair-window (ray-1's actor, {used} threads), r = {1e3 * overhead[1]:.2f} ms "
          f"(ray-1's round trip + run<->driver), s = {1e3 * per_actor:.2f} ms (ray-2's minus ray-1's), "
          f"a = {1e3 * learner:.2f} ms (learner); threads = {threads}, {cores} cores per host")
    print(f"{'point':8} {'predicted ms (this host)':>25} {'measured ms':>12} {'measured/predicted':>19}")
    points = [(e.label, predict(core_s, n, k, threads, cores, overhead[1], per_actor, learner, hosts=1)[0],
               e.seconds) for k, e in by_k.items()]  # measured on this one host
    points.append(("local", core_s * n / used + learner, local.seconds))  # one process, the same threads
    for label, predicted, seconds in points:
        measured = statistics.median(seconds)
        print(f"{label:8} {1e3 * predicted:25.2f} {1e3 * measured:12.2f} {measured / predicted:19.2f}")
    print(f"predicted, every simulator thread on a core of its own, {args.network_ms:g} ms more per round trip "
          f"once the actors span hosts (assumed, not measured):")
    print(f"{'workers':>8} {'hosts':>6} {'updates/s':>10} {'x local':>8}")
    local_s = statistics.median(local.seconds)
    for k in (1, 2, 4, 8, 16, 32):
        if n % k == 0:
            seconds, hosts = predict(core_s, n, k, threads, cores, overhead[1], per_actor, learner,
                                     args.network_ms / 1e3)
            print(f"{k:8d} {hosts:6d} {1 / seconds:10.1f} {local_s / seconds:8.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--tasks", default="swimmer-paper,halfcheetah-paper")
    parser.add_argument("--distributed", action="store_true", help="also time 2 jax.distributed processes")
    parser.add_argument("--cores-per-host", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--network-ms", type=float, default=0.5)
    args = parser.parse_args()
    import ray

    print(f"commit {_commit()}; {os.cpu_count()} CPUs; python benchmarks/scaling.py {' '.join(sys.argv[1:])}")
    # ray-1 and ray-2 live at once (3 actors); they take turns, so the CPUs may be oversubscribed.
    # Actors at niceness 0, as in a local Ray instance that nres starts (Ray's default is 15).
    os.environ.setdefault(WORKER_NICENESS_ENV, "0")
    ray.init(num_cpus=max(3, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    try:
        for name in args.tasks.split(","):
            run_task(name, args, ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

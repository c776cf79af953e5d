"""End to end: a whole ``nres train`` process against a bare hand-written JAX loop.

Lorenz (default): the default run (NRES, N = 200, W = 100, T = 2000, sigma = 0.04,
lr = 1e-5, 5000 updates, evaluation off) is launched as ``nres train`` with a cold
compilation cache (a fresh empty directory) and a warm one (the directory the cold run
filled), interleaved with a bare step-locked NRES written in plain JAX below (100
updates per jitted call, no logging, no checkpoints), each as its own process. Printed:

* whole-process wall time, medians over the repetitions and the ratios to the bare loop;
* time to first update (cold, warm): from launch to the first update's TensorBoard event
  (its ``wall_time``; the first compiled call runs one update);
* time to test loss <= 50: thetas every 100 updates of both runs are evaluated after
  training with the same evaluator (the Lorenz test loss over ``--test-starts`` perturbed
  starts; the task's own test set has 10,000), and the time of the first one at or
  below 50 is taken from launch;
* the logging ratio: the training loop of ``nres train`` (rows, metrics.jsonl,
  TensorBoard, thetas) against the same pipelined compiled chunks and checkpoints with
  no logging, in one process, interleaved (the final plot, drawn once, is not included);
* the window ratio: per update, the step-unlocked NRES update against the same update
  with every pair step-locked (same 2N particles, same W steps), in one process;
* the training clock: ``wall_time_s`` over updates 1..5000 of the default run with
  evaluation every 250 updates against evaluation off (``--clock-only`` for just this),
  interleaved processes: evaluation is not training, the ratio should be near 1.

``--task lopt`` / ``--task rl`` report the start-up of a short run of the task's default
configuration, cold and warm: time to first update from launch, the training clock
through it (``wall_time_s`` of ``metrics.jsonl``), the time per update after it and the
whole process; and the logging ratio. Those tasks are slow on a CPU, so keep
``--repeats`` and ``--updates`` small.

Usage: python benchmarks/end_to_end.py [--task lorenz|lopt|rl] [--repeats 3] [--updates N]
       [--test-starts 256] [--skip-processes] [--skip-in-process]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve()
LORENZ = {"num_particles": 200, "unroll_length": 100, "horizon": 2000, "sigma": 0.04, "lr": 1e-5,
          "updates": 5000, "dt": 0.005, "start": (1.2, 1.3, 1.6), "theta": (3.116, 3.7)}
UPDATES_PER_CALL = 100


# -- the bare loop (what a competent JAX user writes; runs in its own process) -------------
def bare_loop(out: str, updates: int, seed: int) -> None:
    import jax
    import jax.numpy as jnp

    n, w, horizon, sigma, lr, dt = (LORENZ[k] for k in ("num_particles", "unroll_length", "horizon", "sigma",
                                                         "lr", "dt"))
    start = jnp.asarray(LORENZ["start"], jnp.float32)

    def euler(theta, s):  # theta [.., 2], s [.., 3]
        a, r = jnp.exp(theta[..., 0]), jnp.exp(theta[..., 1])
        x, y, z = s[..., 0], s[..., 1], s[..., 2]
        return jnp.stack([x + a * (y - x) * dt, y + (x * (r - z) - y) * dt, z + (x * y - 8.0 / 3.0 * z) * dt], -1)

    true_theta = jnp.log(jnp.asarray([10.0, 28.0]))
    z_true = jax.lax.scan(lambda s, _: (euler(true_theta, s), euler(true_theta, s)[2]), start, None,
                          length=horizon)[1]

    def update(carry, _):
        theta, eps, states, t, key = carry
        key, sub = jax.random.split(key)
        new_episode = t == 0  # every pair at the same step: one noise per episode, shared reset
        eps = jnp.where(new_episode, sigma * jax.random.normal(sub, (n, 2)), eps)
        states = jnp.where(new_episode, jnp.broadcast_to(start, (2 * n, 3)), states)
        thetas = jnp.concatenate([theta + eps, theta - eps])

        def step(c, s):
            states, total = c
            states = euler(thetas, states)
            return (states, total + (states[:, 2] - z_true[t + s]) ** 2), None

        (states, losses), _ = jax.lax.scan(step, (states, jnp.zeros(2 * n)), jnp.arange(w))
        grad = (losses[:n] - losses[n:]) @ eps / (2 * sigma**2 * n * w)
        return (theta - lr * grad, eps, states, (t + w) % horizon, key), jnp.mean(losses) / w

    run = jax.jit(lambda carry: jax.lax.scan(update, carry, None, length=UPDATES_PER_CALL))
    carry = (jnp.asarray(LORENZ["theta"], jnp.float32), jnp.zeros((n, 2)), jnp.zeros((2 * n, 3)),
             jnp.asarray(0), jax.random.PRNGKey(seed))
    times, thetas = [], []
    for _ in range(updates // UPDATES_PER_CALL):
        carry, losses = run(carry)
        thetas.append(jax.device_get(carry[0]).tolist())
        times.append(time.time())
    pathlib.Path(out).write_text(json.dumps({"times": times, "thetas": thetas}))


# -- helpers ------------------------------------------------------------------------------
def read_events(directory: pathlib.Path) -> dict[str, list[tuple[int, float, float]]]:
    """``{tag: [(step, wall_time, value)]}`` from the TensorBoard event files of a run."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list] = {}
    for file in sorted(directory.iterdir()):
        data, pos = file.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, event.wall_time, value.simple_value))
    return scalars


def launch(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run a process to completion; returns ``(launch time (epoch s), wall seconds)``."""
    launched, start = time.time(), time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return launched, time.perf_counter() - start


def nres_train(out: pathlib.Path, cache: pathlib.Path, extra: list[str]) -> dict:
    """One ``nres train`` process: wall seconds, time to first update and per-update times
    from launch (TensorBoard events), and the training clock (``wall_time_s`` of
    ``metrics.jsonl``, from the start of ``Trainer.init``) per update."""
    from nres.rundir import read_metrics

    cmd = [sys.executable, "-m", "nres.cli", "train", "--no-progress", "--eval-every", "0", "--no-eval-at-end",
           "--out", str(out), "--compilation-cache", str(cache), *extra]
    launched, wall = launch(cmd)
    events = read_events(out / "tensorboard")["train/train_loss"]
    clock = {row["iteration"]: row["wall_time_s"] for row in read_metrics(out, having="train_loss")}
    return {"wall": wall, "first_update": events[0][1] - launched,
            "at_update": {step: t - launched for step, t, _ in events}, "clock": clock}


def median(values):
    return statistics.median(values) if values else float("nan")


def summary(label: str, values: list[float], base: list[float] | None = None) -> str:
    text = f"{label:<40} median {median(values):8.2f} s   (" + ", ".join(f"{v:.2f}" for v in values) + ")"
    if base:
        ratios = [v / b for v, b in zip(values, base)]
        text += f"   ratio to bare: median {median(ratios):.2f}x (" + ", ".join(f"{r:.2f}" for r in ratios) + ")"
    return text


def time_to_target(points: list[tuple[int, float, list]], evaluate, target: float) -> tuple[float, int]:
    """First ``(seconds, update)`` among ``(update, seconds, theta)`` whose test loss <= target."""
    for update, seconds, theta in points:
        if evaluate(theta) <= target:
            return seconds, update
    return float("nan"), -1


def lorenz_evaluator(num_starts: int):
    import jax
    import jax.numpy as jnp

    from nres.tasks.lorenz import INITIAL_STATE, test_loss

    starts = jnp.asarray(INITIAL_STATE, jnp.float32) + jax.random.normal(jax.random.PRNGKey(0), (num_starts, 3))
    evaluate = jax.jit(lambda theta: test_loss(theta, starts, LORENZ["horizon"], LORENZ["dt"]))
    return lambda theta: float(evaluate(jnp.asarray(theta, jnp.float32)))


# -- whole processes ----------------------------------------------------------------------
def lorenz_processes(args) -> None:
    import numpy as np

    updates, work = args.updates or LORENZ["updates"], pathlib.Path(tempfile.mkdtemp(prefix="nres-e2e-"))
    extra = ["--iterations", str(updates)]
    walls = {"bare": [], "cold": [], "warm": []}
    first = {"cold": [], "warm": []}
    to_target = {"bare": [], "cold": [], "warm": []}
    evaluate = lorenz_evaluator(args.test_starts)
    for rep in range(args.repeats):
        cache = work / f"cache{rep}"  # cold: a fresh, empty directory; warm: the same one again
        order = ["bare", "cold", "warm"] if rep % 2 == 0 else ["cold", "warm", "bare"]
        results = {}
        for kind in order:
            if kind == "bare":
                out = work / f"bare{rep}.json"
                launched, wall = launch([sys.executable, str(HERE), "--bare-loop", str(out), "--updates", str(updates)])
                data = json.loads(out.read_text())
                points = [((i + 1) * UPDATES_PER_CALL, t - launched, th) for i, (t, th) in
                          enumerate(zip(data["times"], data["thetas"]))]
                results[kind] = (wall, points)
            else:
                run = work / f"{kind}{rep}"
                got = nres_train(run, cache, extra)
                first[kind].append(got["first_update"])
                with np.load(run / "thetas.npz") as saved:
                    thetas = dict(zip(saved["iteration"].tolist(), saved["theta"]))
                points = [(u, got["at_update"][u], thetas[u]) for u in range(UPDATES_PER_CALL, updates + 1,
                                                                              UPDATES_PER_CALL)]
                results[kind] = (got["wall"], points)
            print(f"  rep {rep} {kind}: {results[kind][0]:.2f} s", flush=True)
        for kind, (wall, points) in results.items():
            walls[kind].append(wall)
            to_target[kind].append(time_to_target(points, evaluate, 50.0))
    print(f"\nLorenz default NRES run, {updates} updates, evaluation off; {args.repeats} interleaved repetitions")
    print(summary("bare step-locked JAX loop", walls["bare"]))
    print(summary("nres train, cold cache", walls["cold"], walls["bare"]))
    print(summary("nres train, warm cache", walls["warm"], walls["bare"]))
    print(summary("time to first update, cold", first["cold"]))
    print(summary("time to first update, warm", first["warm"]))
    print(f"time to test loss <= 50 ({args.test_starts} test starts, thetas every {UPDATES_PER_CALL} updates, "
          "seconds from launch [update]):")
    for kind in walls:
        pairs = to_target[kind]
        print(f"  {kind:<5} median {median([s for s, _ in pairs]):.2f} s   "
              + ", ".join(f"{s:.2f} [{u}]" for s, u in pairs))


def task_processes(args) -> None:
    """Start-up of the task's default run, cold then warm cache: time to first update from
    launch, the training clock through it, the per-update time after it, whole process."""
    work = pathlib.Path(tempfile.mkdtemp(prefix=f"nres-e2e-{args.task}-"))
    updates = args.updates or 5
    figures = {name: {"cold": [], "warm": []} for name in ("first", "clock", "per_update", "wall")}
    for rep in range(args.repeats):
        cache = work / f"cache{rep}"
        for kind in ("cold", "warm"):
            got = nres_train(work / f"{kind}{rep}", cache, ["--task", args.task, "--iterations", str(updates)])
            clock = got["clock"]
            per_update = (clock[updates] - clock[1]) / (updates - 1) if updates > 1 else float("nan")
            for name, value in (("first", got["first_update"]), ("clock", clock[1]), ("per_update", per_update),
                                ("wall", got["wall"])):
                figures[name][kind].append(value)
            print(f"  rep {rep} {kind}: first update after {got['first_update']:.2f} s (training clock "
                  f"{clock[1]:.2f} s), then {per_update * 1e3:.1f} ms per update, whole {got['wall']:.2f} s; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"\n{args.task} default run, {updates} updates, evaluation off; {args.repeats} repetition(s)")
    for kind in ("cold", "warm"):
        print(summary(f"time to first update, {kind}", figures["first"][kind]))
        print(summary(f"training clock through update 1, {kind}", figures["clock"][kind]))
        per_update = [v * 1e3 for v in figures["per_update"][kind]]
        print(f"{'per update after the first, ' + kind:<40} median {median(per_update):8.1f} ms  ("
              + ", ".join(f"{v:.1f}" for v in per_update) + ")")
        print(summary(f"whole process, {kind}", figures["wall"][kind]))


# -- in one process -----------------------------------------------------------------------
def logging_ratio(args) -> None:
    """The training loop with logging against the same compiled updates without it."""
    from nres import run as run_module
    from nres.build import resolve_config
    from nres.plotting import pyplot as _pyplot

    _pyplot()  # the run imports matplotlib in the background for its final plot: not timed here
    defaults = {"lorenz": 5000, "lopt": 4, "rl": 4}
    updates = args.log_updates or defaults[args.task]
    config = resolve_config({}, {"task": args.task, "iterations": updates, "eval_every": 0, "eval_at_end": False})
    work = pathlib.Path(tempfile.mkdtemp(prefix="nres-e2e-log-"))

    class Quiet(run_module.Run):
        def plot(self, rows=None):  # drawn once per run, not per update: timed apart below
            pass

    template = Quiet(work / "template", config)
    template.path.mkdir(parents=True)
    learner0, counters0 = template.trainer.init()
    template.trainer.update_many(learner0, counters0, 1)  # compile outside the timings
    template.trainer.update_many(learner0, counters0, min(template.trainer.max_chunk, updates))

    from nres.loop import Schedule, train_loop

    class Checkpoints:  # the loop's callbacks with only the checkpoints: no rows, TensorBoard or thetas
        def steps(self, steps, end):
            pass

        def evaluate(self, learner, counters):
            pass

        def checkpoint(self, learner, counters):
            template.save_checkpoint(learner, counters)

        def stop_signal(self):
            return None

    def without_logging():  # the same loop: pipelined chunks, boundaries and checkpoints
        train_loop(template.trainer, learner0, counters0, Schedule.of(config), Checkpoints())

    runs = []
    for index in range(args.log_repeats):  # built before timing (building a task is not logging)
        run = Quiet(work / f"run{index}", config)
        run.trainer = template.trainer  # the same compiled updates
        run.path.mkdir(parents=True)
        runs.append(run)

    def with_logging():
        runs.pop().train(learner0, counters0, progress=False)

    off, on = [], []
    for _ in range(args.log_repeats):
        for fn, times in ((without_logging, off), (with_logging, on)):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) / updates * 1e3)
    ratios = [b / a for a, b in zip(off, on)]
    print(f"\nlogging ({args.task}, {updates} updates, {args.log_repeats} interleaved pairs, ms per update):")
    print(f"  without logging  median {median(off):.4f}  ({', '.join(f'{v:.4f}' for v in off)})")
    print(f"  with logging     median {median(on):.4f}  ({', '.join(f'{v:.4f}' for v in on)})")
    print(f"  ratio            median {median(ratios):.3f}x ({', '.join(f'{r:.3f}' for r in ratios)}); target <= 1.1x")


def training_clock(updates: int, metrics: pathlib.Path) -> float:
    """``wall_time_s`` of update ``updates`` minus that of update 1 (train rows of a run)."""
    wall = {}
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        if "train_loss" in row:
            wall[row["iteration"]] = row["wall_time_s"]
    return wall[updates] - wall[1]


def clock_ratio(args) -> None:
    """The training clock with evaluation on (every 250 updates, the default) against
    off: the default run's ``wall_time_s`` over updates 1..N, interleaved processes
    (warm cache), target <= 1.2x: evaluation must not be counted as training."""
    updates = args.updates or LORENZ["updates"]
    work = pathlib.Path(tempfile.mkdtemp(prefix="nres-e2e-clock-"))
    cache = work / "cache"
    clocks: dict[str, list[float]] = {"off": [], "on": []}
    for index in range(args.clock_repeats + 1):  # the first pair warms the cache: not counted
        for name, every in (("off", "0"), ("on", "250")):
            out = work / f"{name}{index}"
            launch([sys.executable, "-m", "nres.cli", "train", "--task", args.task, "--no-progress",
                    "--iterations", str(updates), "--eval-every", every, "--out", str(out),
                    "--compilation-cache", str(cache)])
            if index:
                clocks[name].append(training_clock(updates, out / "metrics.jsonl"))
    ratios = [on / off for on, off in zip(clocks["on"], clocks["off"])]
    print(f"\ntraining clock ({args.task}, wall_time_s over updates 1..{updates}, {args.clock_repeats} "
          "interleaved pairs, seconds):")
    print(f"  evaluation off        median {median(clocks['off']):.3f}  ({', '.join(f'{v:.3f}' for v in clocks['off'])})")
    print(f"  evaluation every 250  median {median(clocks['on']):.3f}  ({', '.join(f'{v:.3f}' for v in clocks['on'])})")
    print(f"  ratio                 median {median(ratios):.3f}x ({', '.join(f'{r:.3f}' for r in ratios)}); "
          "target <= 1.2x")


def window_ratio(args) -> None:
    """Per update: step-unlocked NRES against the same NRES with every pair step-locked."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from nres.build import resolve_config
    from nres.training import Trainer

    from nres.engines.local import LocalEngine
    from nres.engines.base import Job
    from nres.step import make_step

    unlocked = Trainer(resolve_config({}, {"eval_every": 0}))
    estimator = dataclasses.replace(unlocked.estimator, step_unlocked=False)
    step = make_step(unlocked.task, estimator, unlocked.optimizer)
    locked = LocalEngine(Job(step, estimator, unlocked.config, unlocked.template, lambda name: None))
    from nres.build import seed_key

    learners = {"unlocked": unlocked.init()[0], "locked": locked.place(jax.jit(step.init)(seed_key(0))[0])}
    engines = {"unlocked": unlocked.engine, "locked": locked}
    count = jnp.asarray(UPDATES_PER_CALL, jnp.int32)
    for name in engines:
        jax.block_until_ready(engines[name].run_chunk(learners[name], count, unlocked.no_hold))
    times = {name: [] for name in engines}
    for _ in range(args.window_repeats):
        for name, engine in engines.items():
            start = time.perf_counter()
            for _ in range(5):
                learners[name] = engine.run_chunk(learners[name], count, unlocked.no_hold)[0]
            jax.block_until_ready(learners[name])
            times[name].append((time.perf_counter() - start) / (5 * UPDATES_PER_CALL) * 1e3)
    ratios = [u / l for u, l in zip(times["unlocked"], times["locked"])]
    print(f"\nNRES update (N = 200 pairs, W = 100), {args.window_repeats} interleaved pairs, ms per update:")
    print(f"  step-unlocked  median {median(times['unlocked']):.4f}")
    print(f"  step-locked    median {median(times['locked']):.4f}")
    print(f"  ratio          median {median(ratios):.3f}x ({', '.join(f'{r:.3f}' for r in ratios)}); "
          "target <= 1.2x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("lorenz", "lopt", "rl"), default="lorenz")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved process repetitions")
    parser.add_argument("--updates", type=int, default=None, help="updates per process (default: the run's own)")
    parser.add_argument("--test-starts", type=int, default=256, help="Lorenz test starts of the evaluator")
    parser.add_argument("--log-updates", type=int, default=None, help="updates per logging-ratio timing")
    parser.add_argument("--log-repeats", type=int, default=9)
    parser.add_argument("--window-repeats", type=int, default=7)
    parser.add_argument("--clock-repeats", type=int, default=3, help="interleaved pairs of the clock ratio")
    parser.add_argument("--clock-only", action="store_true", help="only the training clock, evaluation on and off")
    parser.add_argument("--skip-processes", action="store_true", help="only the in-process measurements")
    parser.add_argument("--skip-in-process", action="store_true", help="only the whole-process measurements")
    parser.add_argument("--bare-loop", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_loop:
        bare_loop(args.bare_loop, args.updates or LORENZ["updates"], seed=0)
        return
    print(f"nres end-to-end benchmark, task {args.task}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs", flush=True)
    if args.clock_only:
        clock_ratio(args)
        return
    if not args.skip_processes:
        (lorenz_processes if args.task == "lorenz" else task_processes)(args)
    if not args.skip_in_process:
        logging_ratio(args)
        if args.task == "lorenz":
            window_ratio(args)
            clock_ratio(args)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

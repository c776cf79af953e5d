"""Side by side: ``nres train`` against evosax's ``NoiseReuseES`` and ``PersistentES``.

The Lorenz setting of the end-to-end benchmark (N = 200 pairs, W = 100, T = 2000,
sigma = 0.04, SGD lr = 1e-5, 5000 updates, evaluation off). For each estimator (NRES
against ``NoiseReuseES``, PES against ``PersistentES``) and each seed, five processes
run interleaved (the order of the sides flips every seed; six since ``compile_for``):

* ``nres train --estimator E --seed S``, **cold**: a fresh, empty compilation-cache
  directory (``--compilation-cache DIR``); **warm**: the same directory again; **new
  seed**: the same directory with ``--seed S+1000`` (a researcher's next seed). These
  compile for the task's default, ``--compile-for start`` (:mod:`nres.compiler`);
  **steps cold**: ``--compile-for steps`` (XLA's default emitters) in another fresh
  directory, to show what that choice trades;
* evosax in a fused loop written below (one jitted call per update: ``ask``, the
  population's window of W steps, ``tell``; step-locked, as evosax's online ES are:
  every member resets together), optimising the nres task's own ``step`` and ``loss``
  (``fitness`` = the window's mean per-step loss, so evosax's gradient
  ``fitness @ pert / (sigma^2 2N)`` is nres's ``(L+ - L-) @ eps / (2 sigma^2 N W)``);
  **cold**: JAX's persistent cache off (evosax's own way); **warm**: JAX's persistent
  cache on (with nres's settings, :func:`nres.compilation_cache.enable`), in a
  directory one untimed evosax process of the same estimator (seed 0) filled beforehand:
  evosax's programs take the seed as data, so this is its warm start for every seed.

After training, the thetas of both every ``--record-every`` updates are evaluated by one
evaluator (the end-to-end benchmark's: nres's Lorenz test loss over ``--test-starts``
perturbed starts). Printed per estimator, medians over the seeds (each seed's value in
brackets):

* updates to test loss <= 50 (the first recorded theta at or below it);
* steady time per update: the training clock from update U/5 to U, per update;
* training clock through the first update (nres: ``wall_time_s`` of the first row of
  ``metrics.jsonl``, counted from the start of ``Trainer.init``; evosax: from after the
  imports, the task and evosax's object, through the population's start states and
  ``init``, until the first update's theta is on the host);
* training clock to test loss <= 50;
* whole process (launch to exit);
* mean test loss over the recorded thetas of the last fifth (updates 4000-5000).

Usage: python benchmarks/peer_evosax.py [--seeds 5] [--updates 5000] [--estimators nres,pes]
       [--test-starts 256] [--record-every 50] [--quick]
Needs evosax (``pip install 'nres[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from end_to_end import LORENZ, launch, lorenz_evaluator, median  # noqa: E402

HERE = pathlib.Path(__file__).resolve()
TARGET = 50.0
PEERS = {"nres": "NoiseReuseES", "pes": "PersistentES"}  # nres estimator -> evosax class
KINDS = {"nres": ("cold", "warm", "new seed", "steps cold"), "evosax": ("cold", "warm")}  # processes per seed and side
NEW_SEED = 1000  # "new seed": seed S + NEW_SEED on the cache seed S's cold run filled
ROWS = (("updates", "updates to test loss <= 50", "{:.0f}"),
        ("per_update_ms", "steady time per update (ms)", "{:.4f}"),
        ("first_update", "training clock through update 1 (s)", "{:.2f}"),
        ("to_target", "training clock to test loss <= 50 (s)", "{:.2f}"),
        ("whole", "whole process (s)", "{:.2f}"),
        ("late_loss", "mean test loss, last fifth", "{:.1f}"))


# -- evosax's side: the fused loop ----------------------------------------------------------
def evosax_loop(estimator: str, settings: dict, updates: int, seed: int, record_every: int) -> dict:
    """Train with evosax's peer of ``estimator`` in a fused loop; returns the records.

    ``settings``: ``num_particles`` (N pairs, population 2N), ``unroll_length`` (W),
    ``horizon`` (T), ``sigma``, ``lr`` (SGD). Returns ``{"clock": {update: seconds},
    "theta": {update: [log a, log r]}}`` at update 1 and every ``record_every`` updates
    (the training clock starts after the imports, the task and evosax's object, before the
    population's start states and evosax's ``init``).
    """
    from evosax import algorithms
    import jax
    import jax.numpy as jnp
    import optax

    from nres.tasks.lorenz import LorenzConfig, make_lorenz_task

    n, w, sigma = settings["num_particles"], settings["unroll_length"], settings["sigma"]
    task = make_lorenz_task(LorenzConfig(horizon=settings["horizon"]))
    theta0 = task.init_theta(None)
    es = getattr(algorithms, PEERS[estimator])(2 * n, theta0, optimizer=optax.sgd(settings["lr"]),
                                           std_schedule=optax.constant_schedule(sigma))
    params = es.default_params.replace(T=task.horizon, K=w)
    start = time.perf_counter()  # the training clock: what nres's Trainer.init and updates time
    start_states = jax.vmap(task.init_state)(jnp.zeros((2 * n, 2), jnp.uint32))
    step = jax.vmap(task.step, (0, 0, None, None, None))
    loss = jax.vmap(task.loss, (0, 0, None, None))

    def strong(state):
        # evosax's init and tell give some leaves (std, best fitness, counters) weak types,
        # not the same ones: made strong, the fused step compiles once, not at updates 1 and 2.
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.asarray(x).dtype), state)

    def update(carry):
        state, states, key = carry
        key, k_ask, k_tell, k_data = jax.random.split(key, 4)
        t = state.inner_step_counter  # every member at the same step (step-locked)
        states = jax.tree_util.tree_map(lambda a, b: jnp.where(t == 0, a, b), start_states, states)
        population, state = es.ask(k_ask, state, params)
        batches = task.window_batches(jax.random.split(k_data, w), t, w)

        def inner(c, s):
            states, total = c
            states = step(population, states, t + s, k_data, batches[s])
            return (states, total + loss(population, states, t + s, batches[s])), None

        (states, total), _ = jax.lax.scan(inner, (states, jnp.zeros(2 * n)), jnp.arange(w))
        state, _ = es.tell(k_tell, population, total / w, state, params)
        return strong(state), states, key

    fused = jax.jit(update)
    records = {"clock": {}, "theta": {}}
    key, k_init = jax.random.split(jax.random.PRNGKey(seed))
    carry = (strong(es.init(k_init, theta0, params)), start_states, key)
    for u in range(1, updates + 1):
        carry = fused(carry)
        if u == 1 or u % record_every == 0:
            theta = jax.device_get(carry[0].mean).tolist()
            records["clock"][u], records["theta"][u] = time.perf_counter() - start, theta
    return records


def evosax_child(args) -> None:
    """The child process: the cache setting, the loop, its records written as JSON."""
    from nres import compilation_cache

    compilation_cache.enable(args.cache)
    records = evosax_loop(args.estimator, LORENZ, args.updates, args.seed, args.record_every)
    pathlib.Path(args.evosax_child).write_text(json.dumps(records))


def evosax_process(out: pathlib.Path, estimator: str, updates: int, seed: int, record_every: int,
                   cache: str) -> dict:
    """One evosax process (``cache``: a directory or ``off``); records plus ``whole`` seconds."""
    _, whole = launch([sys.executable, str(HERE), "--evosax-child", str(out), "--estimator", estimator,
                       "--updates", str(updates), "--seed", str(seed), "--record-every", str(record_every),
                       "--cache", cache])
    records = json.loads(out.read_text())
    return {"clock": {int(u): s for u, s in records["clock"].items()},
            "theta": {int(u): th for u, th in records["theta"].items()}, "whole": whole}


# -- nres's side -----------------------------------------------------------------------------
def nres_process(out: pathlib.Path, estimator: str, updates: int, seed: int, record_every: int, cache: str,
                 settings: dict | None = None, compile_for: str | None = None) -> dict:
    """One ``nres train`` process; the same records as :func:`evosax_process` from its run."""
    import numpy as np

    from nres.rundir import read_metrics

    settings = settings or LORENZ
    flags = {"--estimator": estimator, "--seed": seed, "--iterations": updates,
             "--num-particles": settings["num_particles"], "--unroll-length": settings["unroll_length"],
             "--horizon": settings["horizon"], "--sigma": settings["sigma"], "--lr": settings["lr"],
             "--compilation-cache": cache, "--out": out}
    if compile_for:
        flags["--compile-for"] = compile_for
    cmd = [sys.executable, "-m", "nres.cli", "train", "--no-progress", "--eval-every", "0", "--no-eval-at-end",
           "--optimizer", "sgd", *(str(x) for kv in flags.items() for x in kv)]
    _, whole = launch(cmd)
    clock = {row["iteration"]: row["wall_time_s"] for row in read_metrics(out, having="train_loss")}
    with np.load(out / "thetas.npz") as saved:
        thetas = dict(zip(saved["iteration"].tolist(), saved["theta"].tolist()))
    kept = [u for u in clock if u == 1 or u % record_every == 0]
    return {"clock": {u: clock[u] for u in kept}, "theta": {u: thetas[u] for u in kept}, "whole": whole}


# -- figures -----------------------------------------------------------------------------------
def figures(run: dict, evaluate, updates: int) -> dict:
    """The printed figures of one process's records (``evaluate(theta) -> test loss``)."""
    recorded = sorted(run["theta"])
    hit = next((u for u in recorded if u > 1 and evaluate(run["theta"][u]) <= TARGET), None)
    late = [evaluate(run["theta"][u]) for u in recorded if u >= updates - updates // 5]
    steady_from = max(u for u in recorded if u <= updates // 5)
    return {"updates": float("nan") if hit is None else hit,
            "per_update_ms": (run["clock"][updates] - run["clock"][steady_from]) / (updates - steady_from) * 1e3,
            "first_update": run["clock"][1],
            "to_target": float("nan") if hit is None else run["clock"][hit],
            "whole": run["whole"],
            "late_loss": sum(late) / len(late)}


def memoized(evaluate):
    """``evaluate`` once per distinct theta (cold and warm runs train the same thetas)."""
    seen = {}

    def once(theta):
        key = tuple(theta)
        if key not in seen:
            seen[key] = evaluate(theta)
        return seen[key]

    return once


def table(estimator: str, results: dict) -> str:
    """``results[side][kind]``: one figures dict per seed; the medians and ratios as text."""
    kinds = [(side, kind) for side in KINDS for kind in KINDS[side]]
    head = f"{'':<40}" + "".join(f"{s + ' ' + k:>17}" for s, k in kinds) + f"{'evosax/nres cold':>18}{'warm':>8}"
    lines = [f"{estimator} against evosax {PEERS[estimator]} (medians over {len(results['nres']['cold'])} seeds)",
             head]
    for key, label, fmt in ROWS:  # a seed that never reached the target counts out of its medians
        meds = {sk: median([f[key] for f in results[sk[0]][sk[1]] if f[key] == f[key]]) for sk in kinds}
        line = f"{label:<40}" + "".join(f"{fmt.format(meds[sk]):>17}" for sk in kinds)
        if key not in ("updates", "late_loss"):
            line += f"{meds[('evosax', 'cold')] / meds[('nres', 'cold')]:>18.2f}"
            line += f"{meds[('evosax', 'warm')] / meds[('nres', 'warm')]:>8.2f}"
        lines.append(line)
    reached = {sk: sum(f["updates"] == f["updates"] for f in results[sk[0]][sk[1]]) for sk in kinds}
    lines.append(f"{'seeds reaching test loss <= 50':<40}" + "".join(f"{reached[sk]:>17}" for sk in kinds))
    lines.append("per seed (nan: not reached):")
    for key, label, fmt in ROWS:
        for side, kind in kinds:
            values = ", ".join(fmt.format(f[key]) for f in results[side][kind])
            lines.append(f"  {label:<40}{side + ' ' + kind:<17}{values}")
    return "\n".join(lines)


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def side_by_side(args) -> None:
    work = pathlib.Path(tempfile.mkdtemp(prefix="nres-peer-"))
    evaluate = memoized(lorenz_evaluator(args.test_starts))
    for estimator in args.estimators:
        evosax_cache = work / f"evosax-cache-{estimator}"  # filled once, untimed: evosax warm
        evosax_process(work / f"prime-{estimator}.json", estimator, args.record_every, 0, args.record_every,
                       str(evosax_cache))
        results = {side: {kind: [] for kind in kinds} for side, kinds in KINDS.items()}
        for seed in range(args.seeds):
            cache = work / f"cache-{estimator}-{seed}"  # nres cold: fresh and empty; warm: the same again

            def one(side, kind):
                if side == "nres":
                    steps = kind == "steps cold"
                    return nres_process(work / f"{estimator}-nres-{kind}-{seed}".replace(" ", "-"), estimator,
                                        args.updates, seed + NEW_SEED * (kind == "new seed"), args.record_every,
                                        str(cache) + "-steps" * steps, compile_for="steps" if steps else None)
                return evosax_process(work / f"{estimator}-evosax-{kind}-{seed}.json", estimator, args.updates,
                                      seed, args.record_every, "off" if kind == "cold" else str(evosax_cache))

            order = ["nres", "evosax"] if seed % 2 == 0 else ["evosax", "nres"]
            for side in order:
                for kind in KINDS[side]:
                    results[side][kind].append(figures(one(side, kind), evaluate, args.updates))
                    got = results[side][kind][-1]
                    print(f"  {estimator} seed {seed} {side} {kind}: first update {got['first_update']:.2f} s, "
                          f"whole {got['whole']:.2f} s; {load()}", flush=True)
        print("\n" + table(estimator, results) + "\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. S-1")
    parser.add_argument("--updates", type=int, default=LORENZ["updates"])
    parser.add_argument("--estimators", type=lambda s: s.split(","), default=["nres", "pes"])
    parser.add_argument("--test-starts", type=int, default=256, help="Lorenz test starts of the evaluator")
    parser.add_argument("--record-every", type=int, default=50, help="updates between evaluated thetas")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 seeds, 1000 updates, NRES only")
    parser.add_argument("--evosax-child", metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument("--estimator", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.evosax_child:
        evosax_child(args)
        return
    if args.quick:
        args.seeds, args.updates, args.estimators, args.test_starts = 2, 1000, ["nres"], 64
    commit = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    from importlib.metadata import version

    print(f"nres against evosax {version('evosax')} (JAX {version('jax')}), commit {commit}, "
          f"{os.cpu_count()} CPUs; {load()}")
    print(f"Lorenz: N = {LORENZ['num_particles']}, W = {LORENZ['unroll_length']}, T = {LORENZ['horizon']}, "
          f"sigma = {LORENZ['sigma']}, SGD {LORENZ['lr']}, {args.updates} updates, evaluation off; "
          f"{args.seeds} seeds; thetas every {args.record_every} updates, {args.test_starts} test starts", flush=True)
    side_by_side(args)
    print(f"at the end: {load()}")


if __name__ == "__main__":
    main()

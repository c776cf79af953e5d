"""Particle-steps per second of every ES estimator on the Lorenz paper configuration.

For each estimator, the compiled updates ``nres train`` runs (the whole window of ``2N``
particles, the estimate and the SGD step, 100 updates per call) are timed, and its particle-steps per second are compared
with a floor: a bare jitted ``lax.scan`` of the same ``2N`` Lorenz particles over
``W`` steps with no estimator logic (no noise, no loss, no accumulation). The ratio
``floor rate / estimator rate`` is the estimator's overhead; the target is <= 1.5x.
A second reference, the task unroll, adds only the per-step loss every method needs,
so ``unroll/estimator`` isolates what the estimator itself costs. FullES (W = T) is
listed for completeness; the target concerns the online estimators.

The estimators' programs are compiled as ``nres train`` compiles them: for the Lorenz
task's default ``--compile-for start`` unless ``--compile-for steps`` is given
(:mod:`nres.compiler`; the floor and the unroll always use XLA's defaults).

Usage: python benchmarks/throughput.py [--num-particles 200] [--unroll-length 100]
       [--horizon 2000] [--repeats 200] [--compile-for start|steps]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from nres.build import resolve_config
from nres.tasks.lorenz import lorenz_step
from nres.training import Trainer


def _rate(fn, args, steps_per_call: int, repeats: int, trials: int = 5) -> float:
    """Median particle-steps/s over ``trials`` batches of ``repeats`` calls."""
    out = fn(*args)
    jax.block_until_ready(out)
    rates = []
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn(*args)
        jax.block_until_ready(out)
        rates.append(steps_per_call * repeats / (time.perf_counter() - start))
    return statistics.median(rates)


def floor_rate(num_particles: int, unroll_length: int, dt: float, repeats: int) -> float:
    thetas = jnp.tile(jnp.asarray([3.116, 3.7]), (2 * num_particles, 1))
    states = jnp.tile(jnp.asarray([1.2, 1.3, 1.6]), (2 * num_particles, 1))

    @jax.jit
    def unroll(thetas, states):
        def body(s, _):
            return jax.vmap(lambda th, x: lorenz_step(th, x, dt))(thetas, s), None

        return jax.lax.scan(body, states, None, length=unroll_length)[0]

    return _rate(unroll, (thetas, states), 2 * num_particles * unroll_length, repeats)


def task_unroll_rate(num_particles: int, unroll_length: int, horizon: int, repeats: int) -> float:
    """The same unroll through the task API with the per-step loss (still no estimator logic)."""
    from nres.particles import init_particles, step_pairs
    from nres.tasks.lorenz import LorenzConfig, make_lorenz_task

    task = make_lorenz_task(LorenzConfig(horizon=horizon, num_test_starts=1))
    particles = init_particles(task, jax.random.PRNGKey(0), num_particles)
    thetas = jnp.tile(jnp.asarray([3.116, 3.7]), (2, num_particles, 1))

    @jax.jit
    def unroll(thetas, particles):
        def body(carry, s):
            inner, total = carry
            inner, losses = step_pairs(task, thetas, particles._replace(inner=inner, tau=particles.tau + s))
            return (inner, total + losses), None

        init = (particles.inner, jnp.zeros((2, num_particles)))
        return jax.lax.scan(body, init, jnp.arange(unroll_length))[0]

    return _rate(unroll, (thetas, particles), 2 * num_particles * unroll_length, repeats)


def estimator_rate(name: str, num_particles: int, unroll_length: int, horizon: int, repeats: int,
                   compile_for: str | None = None) -> float:
    settings = dict(task="lorenz", estimator=name, num_particles=num_particles, unroll_length=unroll_length,
                    horizon=horizon, noise_period=2 * unroll_length if name == "gpes" else None)
    if compile_for:
        settings["compile_for"] = compile_for
    trainer = Trainer(resolve_config(settings))
    learner, _ = trainer.init()
    # As `nres train` runs it: many updates per compiled call (Trainer.update_many).
    count = jnp.asarray(trainer.max_chunk, jnp.int32)
    steps_per_call = trainer.estimator.env_steps_per_update * trainer.max_chunk
    calls = max(1, repeats * unroll_length // (trainer.estimator.unroll_length * trainer.max_chunk))
    return _rate(trainer.engine.run_chunk, (learner, count, trainer.no_hold), steps_per_call, calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-particles", type=int, default=200)
    parser.add_argument("--unroll-length", type=int, default=100)
    parser.add_argument("--horizon", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--fulles-particles", type=int, default=10, help="FullES N (paper: 10)")
    parser.add_argument("--compile-for", choices=("start", "steps"), help="default: the Lorenz task's (start)")
    args = parser.parse_args()
    n, w = args.num_particles, args.unroll_length
    compile_for = args.compile_for or resolve_config({"task": "lorenz"}).compile_for
    print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}); Lorenz N={n} W={w} T={args.horizon}; "
          f"estimators compiled for {compile_for}")
    floors, unrolls = {}, {}
    worst = 0.0
    for name in ("nres", "pes", "gpes", "tes", "fulles"):
        particles = args.fulles_particles if name == "fulles" else n
        window = args.horizon if name == "fulles" else w
        if (particles, window) not in floors:  # the floor of the same 2N particles over the same W steps
            floors[particles, window] = floor_rate(particles, window, 0.005, args.repeats)
            unrolls[particles, window] = task_unroll_rate(particles, window, args.horizon, args.repeats)
            floor, unroll = floors[particles, window], unrolls[particles, window]
            print(f"{'floor: bare scan, 2N=%d, W=%d' % (2 * particles, window):34s} {floor / 1e6:9.2f} M particle-steps/s")
            print(f"{'task unroll (step + per-step loss)':34s} {unroll / 1e6:9.2f} M particle-steps/s"
                  f"   floor/unroll = {floor / unroll:5.2f}x")
        floor, unroll = floors[particles, window], unrolls[particles, window]
        rate = estimator_rate(name, particles, w, args.horizon, args.repeats, compile_for)
        ratio = floor / rate
        label = f"{name} (N={particles}" + (", K=2W)" if name == "gpes" else ")")
        verdict = "ok" if ratio <= 1.5 else "ABOVE 1.5x TARGET"
        if name != "fulles":
            worst = max(worst, ratio)
        print(f"{label:34s} {rate / 1e6:9.2f} M particle-steps/s   floor/estimator = {ratio:5.2f}x  {verdict}"
              f"   (unroll/estimator = {unroll / rate:4.2f}x)")
    print(f"worst online-estimator overhead: {worst:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()

"""Inner steps per second of NRES meta-training a learned optimizer (Fashion-MNIST setting).

The paper's Fashion-MNIST configuration (SPEC section 6): images resized to 8x8, an
MLP 32-32-32 GELU inner model, batch 128, ``T = 1000``; NRES with ``N = 100`` pairs
and ``W = 1`` (and ``W = 10``). One compiled NRES window advances ``2N`` inner
training runs by ``W`` steps each (inner gradient, learned-optimizer update,
validation loss, noise and gradient accumulation, resets). Rows:

* ``floor: vmapped Adam``: the same ``2N`` inner training runs in one compiled
  ``lax.scan`` of ``W`` steps with a fixed hand-designed optimizer (Adam) and no
  estimator logic -- the floor the issue asks for;
* ``reference: vmapped lopt, fixed theta``: the same, with the learned optimizer under
  one fixed ``theta`` instead of Adam (the MLP's per-parameter cost, no estimator);
* ``NRES window``: the estimator (pairs start at ``tau = 0``: no burn-in).

Every rate is an inner training step of one model per second; ``x floor`` is
floor rate / rate (the target is <= 1.5). Timings are medians over repeats, taken
interleaved so a busy machine slows every row alike. Fashion-MNIST is read from
``$NRES_DATA_DIR/fashion_mnist`` when its files are there; otherwise random images of
the same shapes stand in (the rates do not depend on pixel values) and the output
says so.

Usage: python benchmarks/lopt_throughput.py [--num-particles 100]
       [--unroll-lengths 1 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from nres.estimators import make_estimator
from nres.tasks.lopt import LoptConfig, build_problem, make_lopt_task
from nres.tasks.lopt.baselines import hand_designed
from nres.tasks.lopt.datasets import DatasetError, load_dataset, split_dataset
from nres.tasks.lopt.task import learned_optimizer


def fashion_mnist_or_stand_in(image_size: int):
    try:
        return load_dataset("fashion_mnist", "", image_size), "Fashion-MNIST files"
    except DatasetError:
        rng = np.random.default_rng(0)
        images = lambda n: rng.integers(0, 256, (n, image_size, image_size, 1), dtype=np.uint8)
        labels = lambda n: rng.integers(0, 10, n).astype(np.int32)
        data = split_dataset(images(60000), labels(60000), images(10000), labels(10000), "fashion_mnist")
        return data, "RANDOM stand-in data of Fashion-MNIST's shapes (real files not found)"


def vmapped_training(problem, optimizer, num_runs: int, unroll_length: int):
    """``(init, run)``: ``num_runs`` inner trainings advanced ``W`` steps per call, no estimator."""

    def init(key):
        return jax.vmap(lambda k: problem.init_state(k, optimizer))(jax.random.split(key, num_runs))

    def run(states, key):
        def body(states, t):
            batches = jax.vmap(problem.sample_batch)(jax.random.split(jax.random.fold_in(key, t), num_runs))
            states = jax.vmap(lambda s, b: problem.inner_step(optimizer, s, b))(states, batches)
            losses = jax.vmap(lambda s, b: problem.outer_loss(s.params, b.outer_images, b.outer_labels))(
                states, batches)
            return states, jnp.mean(losses)

        return jax.lax.scan(body, states, jnp.arange(unroll_length))

    return jax.jit(init), jax.jit(run)


def timed(call, repeats_done: list):
    start = time.perf_counter()
    jax.block_until_ready(call())
    repeats_done.append(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-particles", type=int, default=100)
    parser.add_argument("--unroll-lengths", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row (median reported)")
    args = parser.parse_args()

    config = LoptConfig(dataset="fashion_mnist", horizon=1000)  # the paper's setting
    data, source = fashion_mnist_or_stand_in(config.image_size)
    problem = build_problem(config, data)
    task = make_lopt_task(config, problem)
    theta = task.init_theta(jax.random.PRNGKey(0))
    n, runs = args.num_particles, 2 * args.num_particles
    print(f"data: {source}; inner model {problem.model.name} ({problem.num_params} parameters), batch "
          f"{config.batch_size}, T={config.horizon}; theta d=1762; N={n} pairs = {runs} inner runs; "
          f"{os.cpu_count()} CPUs, JAX backend {jax.default_backend()}")
    print(f"{'':38s} {'inner steps/s':>14s} {'x floor':>8s}")
    for w in args.unroll_lengths:
        rows = {}
        for name, optimizer in [("floor: vmapped Adam", hand_designed("adam", 1e-3)),
                                ("reference: vmapped lopt, fixed theta", learned_optimizer(theta, problem.sizes))]:
            init, run = vmapped_training(problem, optimizer, runs, w)
            state = {"s": init(jax.random.PRNGKey(1))}

            def call(run=run, state=state):
                state["s"], loss = run(state["s"], jax.random.PRNGKey(2))
                return loss

            rows[name] = (call, [])
        estimator = make_estimator("nres", task, num_particles=n, unroll_length=w, sigma=0.01, step_unlocked=False)
        est = {"s": jax.jit(estimator.init)(jax.random.PRNGKey(3), theta)}
        estimate = jax.jit(estimator.estimate)

        def call_nres():
            grad, est["s"], _ = estimate(est["s"], theta)
            return grad

        rows[f"NRES window (W={w})"] = (call_nres, [])
        compile_s = {}
        for name, (call, _) in rows.items():  # compile and warm up
            start = time.perf_counter()
            jax.block_until_ready(call())
            compile_s[name] = time.perf_counter() - start
        for _ in range(args.repeats):  # interleaved
            for call, times in rows.values():
                timed(call, times)
        rates = {name: runs * w / statistics.median(times) for name, (_, times) in rows.items()}
        floor = rates["floor: vmapped Adam"]
        print(f"-- W = {w}")
        for name, rate in rates.items():
            print(f"{name:38s} {rate:14.0f} {floor / rate:8.2f}   (first call {compile_s[name]:.1f} s)")


if __name__ == "__main__":
    main()

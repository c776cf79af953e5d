"""Environment steps per second of the rl task's physics, against a raw MuJoCo floor.

Rows (all on the same ``2N`` environments, ``N`` antithetic pairs):

* ``floor: mj_step loop``: one MjData per environment, a Python loop setting
  ``ctrl`` and calling ``mujoco.mj_step(model, data, frame_skip)`` -- the reference
  code's way of stepping;
* ``gymnasium SyncVectorEnv``: gymnasium's vector environment (for comparison);
* ``mujoco.batch``: the batched, multithreaded stepping the rl task uses (state rows
  in, state rows out, observation and reward computed);
* ``NRES window, CPU MuJoCo``: the whole compiled estimator window (policy, noise,
  physics through ``pure_callback``, accumulation, resets);
* ``NRES window, MJX``: the same window with MuJoCo XLA physics on JAX's default
  backend (compile time printed separately; skip with ``--skip-mjx``).

The ratio column is rate / floor. Usage:
  python benchmarks/rl_throughput.py [--env Swimmer-v5] [--num-particles 30]
         [--unroll-length 100] [--steps 200] [--skip-mjx]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import mujoco
import numpy as np


def floor_rate(spec, num_envs: int, steps: int, actions: np.ndarray) -> float:
    model = spec.model
    datas = [mujoco.MjData(model) for _ in range(num_envs)]
    start = time.perf_counter()
    for s in range(steps):
        for data, action in zip(datas, actions[s]):
            data.ctrl[:] = action
            mujoco.mj_step(model, data, spec.frame_skip)
    return num_envs * steps / (time.perf_counter() - start)


def gym_vector_rate(env_id: str, num_envs: int, steps: int, actions: np.ndarray) -> float:
    import gymnasium as gym

    from nres.tasks.rl.envs import quiet_make

    envs = gym.vector.SyncVectorEnv([lambda: quiet_make(env_id) for _ in range(num_envs)])
    envs.reset(seed=0)
    start = time.perf_counter()
    for s in range(steps):
        envs.step(actions[s])
    rate = num_envs * steps / (time.perf_counter() - start)
    envs.close()
    return rate


def batch_rate(spec, num_envs: int, steps: int, actions: np.ndarray, threads: int) -> float:
    from nres.tasks.rl.cpu_physics import CpuPhysics

    physics = CpuPhysics(spec, num_threads=threads)
    rows = physics.initial_rows(np.tile(spec.init_qpos, (num_envs, 1)), np.tile(spec.init_qvel, (num_envs, 1)))
    physics.step_rows(rows, actions[0])  # build the batch outside the timing
    start = time.perf_counter()
    for s in range(steps):
        rows, _, _, _ = physics.step_rows(rows, actions[s])
    return num_envs * steps / (time.perf_counter() - start)


def window_rate(env_id: str, physics: str, num_particles: int, unroll_length: int, windows: int):
    """(env steps/s, compile seconds) of a jitted NRES window (no burn-in)."""
    from nres.estimators import make_estimator
    from nres.tasks.rl import RLConfig, make_rl_task

    task = make_rl_task(RLConfig(env=env_id, physics=physics))
    estimator = make_estimator("nres", task, num_particles=num_particles, unroll_length=unroll_length, sigma=0.3,
                               step_unlocked=False)
    theta = task.init_theta(jax.random.PRNGKey(0))
    state = jax.jit(estimator.init)(jax.random.PRNGKey(1), theta)
    estimate = jax.jit(estimator.estimate)
    start = time.perf_counter()
    grad, state, _ = estimate(state, theta)
    jax.block_until_ready(grad)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(windows):
        grad, state, _ = estimate(state, theta)
    jax.block_until_ready(grad)
    return estimator.env_steps_per_update * windows / (time.perf_counter() - start), compile_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="Swimmer-v5")
    parser.add_argument("--num-particles", type=int, default=30)
    parser.add_argument("--unroll-length", type=int, default=100)
    parser.add_argument("--steps", type=int, default=200, help="environment steps per timed stepping loop")
    parser.add_argument("--windows", type=int, default=3, help="timed NRES windows")
    parser.add_argument("--threads", type=int, default=0, help="mujoco.batch threads (0: every CPU)")
    parser.add_argument("--skip-mjx", action="store_true")
    args = parser.parse_args()

    from nres.tasks.rl.envs import load_env

    spec = load_env(args.env)
    num_envs = 2 * args.num_particles
    actions = np.random.default_rng(0).uniform(-1, 1, (args.steps, num_envs, spec.action_dim))
    print(f"{args.env}: {num_envs} environments (N={args.num_particles} pairs), frame_skip {spec.frame_skip}, "
          f"{os.cpu_count()} CPUs, JAX backend {jax.default_backend()}")
    floor = floor_rate(spec, num_envs, args.steps, actions)
    rows = [("floor: mj_step loop", floor, ""),
            ("gymnasium SyncVectorEnv", gym_vector_rate(args.env, num_envs, args.steps, actions), ""),
            ("mujoco.batch, 1 thread", batch_rate(spec, num_envs, args.steps, actions, 1), ""),
            (f"mujoco.batch, {args.threads or os.cpu_count()} threads",
             batch_rate(spec, num_envs, args.steps, actions, args.threads), "")]
    rate, compile_s = window_rate(args.env, "mujoco", args.num_particles, args.unroll_length, args.windows)
    rows.append((f"NRES window W={args.unroll_length}, CPU MuJoCo", rate, f"compile {compile_s:.1f} s"))
    if not args.skip_mjx:
        rate, compile_s = window_rate(args.env, "mjx", args.num_particles, args.unroll_length, args.windows)
        rows.append((f"NRES window W={args.unroll_length}, MJX", rate, f"compile {compile_s:.1f} s"))
    print(f"{'':40s} {'env steps/s':>12s} {'x floor':>8s}")
    for name, rate, note in rows:
        print(f"{name:40s} {rate:12.0f} {rate / floor:8.2f}  {note}")


if __name__ == "__main__":
    main()

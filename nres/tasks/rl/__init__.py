"""MuJoCo policy learning (SPEC section 6): a policy's return as an unrolled graph.

One trajectory is an episode of a gymnasium ``-v5`` locomotion environment: the
inner state ``s_t`` is the physics state plus the observation ``o_t``; a step applies
the deterministic policy ``a_t = pi_theta(o_t)`` (:mod:`.policies`) and advances the
physics one environment step; the per-step loss is ``L_t = -r_t``, minus the reward.
Both physics back ends give a real :class:`nres.Task`, so every ES estimator
(FullES, TES, PES, GPES, NRES) runs on them unchanged, a whole window per compiled
call:

* ``physics="mujoco"``: real MuJoCo on the CPU, batched over all ``2N`` environments
  per step (:mod:`.cpu_physics`), full integration state copied exactly;
* ``physics="mjx"``: MuJoCo XLA, the physics itself in JAX (:mod:`.mjx_physics`).

Observation normalisation (``obs_norm``): ``off``; ``fixed`` (the same as
``obs_normalize``): a mean and std measured once on random-action episodes, so theta
alone defines the policy; ``running``: running mean and variance of the observations
the training visits (:class:`~nres.tasks.rl.policies.ObsStats`), the task's shared
state (:class:`nres.task.Shared`): neither perturbed nor trained, checkpointed with the
learner, the same for every member of every pair within a window, and merged once per
update, between windows, with the observations all ``2N`` trajectories end the window
in (those that ended early excluded). Each state carries the scale it steps with
(``RLState.scale``); the evaluation uses the current statistics.

``evaluate`` returns the mean undiscounted return of the unperturbed policy over
``num_eval_episodes`` episodes of ``T`` steps (``test_return``) and
``test_loss = -test_return / T``, the SPEC's ``L(theta)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nres.task import Shared, Task
from nres.tasks import TaskEntry
from nres.tasks.rl.defaults import SWIMMER, defaults_for
from nres.tasks.rl.envs import EnvSpec, load_env
from nres.tasks.rl.policies import ObsScale, ObsScaler, Policy, empty_stats, merge_stats, scale_obs, stats_scale

PHYSICS = ("mujoco", "mjx")
OBS_NORM = ("off", "fixed", "running")


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """Options of the ``rl`` task (each is a ``nres train --flag``).

    Attributes:
      env: gymnasium id, one of ``nres.tasks.rl.envs.SUPPORTED`` (e.g. ``Swimmer-v5``, ``Ant-v5``).
      physics: ``mujoco`` (CPU MuJoCo, batched) or ``mjx`` (MuJoCo XLA).
      policy: ``linear`` (``a = M o``, no bias; the paper's) or ``mlp`` (one tanh layer).
      hidden: hidden units of the ``mlp`` policy.
      init: ``zeros``, ``truncated_normal`` or ``variance_scaling`` initial theta
        (:mod:`.policies`).
      init_scale: the truncated normal's scale, or the variance scale of
        ``variance_scaling`` (the reference code's HalfCheetah: 0.03).
      obs_normalize: standardise observations with a fixed mean and std measured once
        on ``obs_norm_episodes`` CPU MuJoCo episodes under uniform random actions (the
        same as ``obs_norm = "fixed"``).
      obs_norm_episodes: episodes of that measurement.
      horizon: ``T``, environment steps per episode.
      num_eval_episodes: episodes averaged by the evaluation.
      num_threads: threads of the CPU physics (0: every CPU).
      obs_norm_seed: seed of the observation-statistics episodes.
      obs_norm: ``off``, ``fixed`` (as ``obs_normalize``) or ``running``: running mean
        and variance of the observations training visits, updated once per update and
        kept in the checkpoint (see the module docstring).
      action_clip: clip the policy's action to the environment's action space
        (gymnasium's ``action_space``, MuJoCo's ``actuator_ctrlrange``) before each step,
        so that the control cost, charged on the action as given, stays bounded.
    """

    env: str = "Swimmer-v5"
    physics: str = "mujoco"
    policy: str = "linear"
    hidden: int = 32
    init: str = "zeros"
    init_scale: float = 0.03
    obs_normalize: bool = False
    obs_norm_episodes: int = 8
    horizon: int = 1000
    num_eval_episodes: int = 20
    num_threads: int = 0
    obs_norm_seed: int = 0
    obs_norm: str = "off"
    action_clip: bool = False


class RLState(NamedTuple):
    """One environment: ``physics`` (back-end state), ``obs [obs_dim]``, last ``reward []``,
    ``done []`` (bool: the episode has terminated; None for environments that never do)
    and ``scale`` (the :class:`~nres.tasks.rl.policies.ObsScale` the policy reads, mean and
    std ``[obs_dim]``; None unless ``obs_norm = "running"``)."""

    physics: Any
    obs: jax.Array
    reward: jax.Array
    done: Optional[jax.Array] = None
    scale: Optional[ObsScale] = None


def make_physics(spec: EnvSpec, physics: str, num_threads: int = 0):
    """The back end named ``physics`` (``mujoco`` or ``mjx``) for ``spec``."""
    if physics == "mujoco":
        from nres.tasks.rl.cpu_physics import CpuPhysics

        return CpuPhysics(spec, num_threads)
    if physics == "mjx":
        from nres.tasks.rl.mjx_physics import MjxPhysics

        return MjxPhysics(spec)
    raise ValueError(f"unknown physics {physics!r}; choose one of {', '.join(PHYSICS)}")


def observation_statistics(spec: EnvSpec, episodes: int, horizon: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std ``[obs_dim]`` of observations under uniform random actions (CPU MuJoCo)."""
    from nres.tasks.rl.cpu_physics import CpuPhysics

    physics = CpuPhysics(spec, num_threads=1)
    keys = jax.random.split(jax.random.PRNGKey(seed), episodes)
    qpos, qvel = jax.vmap(spec.reset_noise)(keys)
    rows = physics.initial_rows(np.asarray(qpos, np.float64), np.asarray(qvel, np.float64))
    rng = np.random.default_rng(seed)
    total, total_sq = np.zeros(spec.obs_dim), np.zeros(spec.obs_dim)
    for _ in range(horizon):
        rows, obs, _, _ = physics.step_rows(rows, rng.uniform(-1.0, 1.0, (episodes, spec.action_dim)))
        total += obs.sum(0)
        total_sq += (obs * obs).sum(0)
    count = episodes * horizon
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0)) + 1e-3
    return mean, std


def make_policy(config: RLConfig, spec: EnvSpec) -> tuple[Policy, ObsScaler]:
    """The policy of ``config`` and the observation scaling in front of it."""
    policy = Policy(config.policy, spec.obs_dim, spec.action_dim, config.hidden, config.init, config.init_scale,
                    spec.action_bounds if config.action_clip else None)
    if obs_norm_mode(config) != "fixed":
        return policy, ObsScaler()
    if config.obs_norm_episodes <= 0:
        raise ValueError(f"obs_norm_episodes must be positive, got {config.obs_norm_episodes!r}")
    stats = observation_statistics(spec, config.obs_norm_episodes, config.horizon, config.obs_norm_seed)
    return policy, ObsScaler(*stats)


def obs_norm_mode(config: RLConfig) -> str:
    """``off``, ``fixed`` or ``running`` from ``obs_norm`` and ``obs_normalize`` (raises
    ``ValueError`` on an unknown value or on ``obs_normalize`` with ``running``)."""
    if config.obs_norm not in OBS_NORM:
        raise ValueError(f"unknown obs_norm {config.obs_norm!r}; choose one of {', '.join(OBS_NORM)}")
    if config.obs_normalize and config.obs_norm == "running":
        raise ValueError("obs_normalize (fixed statistics) and obs_norm 'running' exclude each other; pick one")
    return "fixed" if config.obs_normalize else config.obs_norm


def running_obs_norm(spec: EnvSpec) -> Shared:
    """The shared state of ``obs_norm = "running"``: :class:`~nres.tasks.rl.policies.ObsStats`
    ``[obs_dim]``, merged with the observations of the live states ``[M, N]``."""

    def install(stats, state):
        return state._replace(scale=stats_scale(stats))

    def update(stats, states, live):
        obs = states.obs.reshape(-1, spec.obs_dim)
        return merge_stats(stats, obs, None if live is None else live.reshape(-1))

    return Shared(init=lambda: empty_stats(spec.obs_dim), install=install, update=update)


def make_rl_task(config: RLConfig = RLConfig()) -> Task:
    """The :class:`nres.Task` of ``config`` (raises ``ValueError`` naming a bad option)."""
    if isinstance(config.horizon, bool) or not isinstance(config.horizon, int) or config.horizon <= 0:
        raise ValueError(f"horizon must be a positive integer, got {config.horizon!r}")
    if config.num_eval_episodes <= 0:
        raise ValueError(f"num_eval_episodes must be positive, got {config.num_eval_episodes!r}")
    if config.physics not in PHYSICS:
        raise ValueError(f"unknown physics {config.physics!r}; choose one of {', '.join(PHYSICS)}")
    running = obs_norm_mode(config) == "running"
    spec = load_env(config.env)
    policy, scaler = make_policy(config, spec)
    shared = running_obs_norm(spec) if running else None
    identity = ObsScale(jnp.zeros((spec.obs_dim,), jnp.float32), jnp.ones((spec.obs_dim,), jnp.float32))
    physics = make_physics(spec, config.physics, config.num_threads)
    horizon = config.horizon
    terminates = spec.can_terminate

    def init_state(key):
        phys, obs = physics.reset(*spec.reset_noise(key))
        return RLState(phys, obs, jnp.zeros((), jnp.float32), jnp.zeros((), bool) if terminates else None,
                       identity if running else None)

    def step(theta, state, t, key, batch):
        del t, key, batch
        obs = scaler(state.obs) if state.scale is None else scale_obs(state.scale, state.obs)
        action = policy.apply(theta, obs)
        phys, obs, reward, terminated = physics.step(state.physics, action)
        return RLState(phys, obs, reward, terminated if terminates else None, state.scale)

    def loss(theta, state, t, batch):
        del theta, t, batch
        return -state.reward

    def evaluate(theta, key, stats=None):
        start = init_state if stats is None else (lambda k: shared.install(stats, init_state(k)))

        def episode(k):
            def body(state, t):
                new = step(theta, state, t, None, None)
                if not terminates:
                    return new, new.reward
                return jax.tree_util.tree_map(lambda a, b: jnp.where(state.done, b, a), new, state), \
                    jnp.where(state.done, 0.0, new.reward)

            _, rewards = jax.lax.scan(body, start(k), jnp.arange(horizon))
            return jnp.sum(rewards)

        returns = jax.vmap(episode)(jax.random.split(key, config.num_eval_episodes))
        mean = jnp.mean(returns)
        return {"test_return": mean, "test_loss": -mean / horizon}

    return Task(
        init_theta=policy.init_theta,
        init_state=init_state,
        step=step,
        loss=loss,
        horizon=horizon,
        evaluate=evaluate,
        name=f"rl:{spec.env_id}:{config.physics}",
        done=(lambda state: state.done) if terminates else None,
        shared=shared,
    )


# What MJX costs on a CPU against CPU MuJoCo (Swimmer defaults, per update): measured by
# experiments/rl_defaults/mjx_cost.py, docs/results/rl_defaults/mjx_cost.json.
MJX_ON_CPU = {"ratio": 4.5, "cold_start_ratio": 4, "commit": "ee2f68a316fc"}


def start_notes(settings) -> list[str]:
    """A note at the start of an MJX run whose JAX runs on the CPU: what that costs here."""
    if settings.get("task_options", {}).get("physics") != "mjx" or jax.default_backend() != "cpu":
        return []
    return [f"note: MJX on a CPU: about {MJX_ON_CPU['ratio']:g}x slower per update than --physics mujoco, and "
            f"{MJX_ON_CPU['cold_start_ratio']:g}x slower to start (Swimmer on a 2-core CPU, commit "
            f"{MJX_ON_CPU['commit']}; README: MuJoCo policy learning); use --physics mjx on a GPU"]


ENTRY = TaskEntry(
    name="rl",
    config_cls=RLConfig,
    build=make_rl_task,
    training_defaults=SWIMMER,  # the paper's Swimmer NRES settings (SPEC section 6)
    defaults_for=defaults_for,  # each --env its own (nres.tasks.rl.defaults)
    notes=start_notes,
    description="MuJoCo locomotion (gymnasium -v5) with a linear or MLP policy, loss = -reward; "
                "training defaults per --env (printed at start)",
    metrics=("test_return", "test_loss"),
)

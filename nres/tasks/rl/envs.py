"""The MuJoCo environments the ``rl`` task learns on, read from gymnasium.

A :class:`EnvSpec` holds what both physics back ends need from a gymnasium ``-v5``
locomotion or pendulum environment: its compiled ``mujoco.MjModel`` (from the XML gymnasium
ships), the number of MuJoCo substeps per environment step (``frame_skip``), and the
environment's own reward weights and reset-noise scale, read from the gymnasium
object itself. Its three formulas are written once, for numpy and ``jax.numpy``
alike (``xp``), and used by the CPU physics (float64, host) and by MJX (float32):

* observation ``o = concat(qpos[skip:], qvel)`` (``skip`` leading root positions are
  left out, as gymnasium does; Hopper and Walker2d clip ``qvel`` to ``[-10, 10]``),
* health (Hopper, Walker2d: height, angle and, for Hopper, state ranges read from
  gymnasium; InvertedPendulum: finite observation and ``|angle| <= 0.2``),
* reward ``r = (w_fwd * (x_after - x_before) / dt + healthy_reward * healthy) - w_ctrl
  * sum(a^2)`` with ``dt = frame_skip * timestep`` (``a`` is the unclipped action; MuJoCo
  clamps the control to the actuators' ``ctrlrange`` itself); InvertedPendulum:
  ``r = healthy`` (1 per step upright). The SPEC's loss is ``-r``,
* termination: an unhealthy state ends the episode (gymnasium's ``terminated``;
  Swimmer and HalfCheetah never end early),
* reset ``qpos = init_qpos + U(-s, s)``, ``qvel = init_qvel + U(-s, s)`` (Swimmer,
  Hopper, Walker2d, InvertedPendulum) or ``+ s * N(0, 1)`` (HalfCheetah), drawn from a
  JAX key.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class _Locomotion:
    """How one gymnasium environment observes, rewards, terminates and resets."""

    skipped_positions: int  # leading qpos entries left out of the observation
    qvel_noise: str  # "uniform" or "normal" reset noise on qvel
    health: str = "none"  # "none", "hopper", "walker" or "pendulum"
    qvel_clip: Optional[float] = None  # observed qvel clipped to [-c, c]


SUPPORTED = {
    "Swimmer-v5": _Locomotion(skipped_positions=2, qvel_noise="uniform"),
    "HalfCheetah-v5": _Locomotion(skipped_positions=1, qvel_noise="normal"),
    "Hopper-v5": _Locomotion(skipped_positions=1, qvel_noise="uniform", health="hopper", qvel_clip=10.0),
    "Walker2d-v5": _Locomotion(skipped_positions=1, qvel_noise="uniform", health="walker", qvel_clip=10.0),
    "InvertedPendulum-v5": _Locomotion(skipped_positions=0, qvel_noise="uniform", health="pendulum"),
}


@dataclasses.dataclass(frozen=True, eq=False)
class EnvSpec:
    """A supported gymnasium MuJoCo environment (build it with :func:`load_env`).

    Attributes:
      env_id: the gymnasium id, e.g. ``"Swimmer-v5"``.
      model: the environment's ``mujoco.MjModel``.
      frame_skip: MuJoCo substeps per environment step.
      dt: seconds per environment step (``frame_skip * model.opt.timestep``).
      forward_reward_weight, ctrl_cost_weight, reset_noise_scale: gymnasium's values.
      skipped_positions: leading ``qpos`` entries not observed.
      qvel_noise: ``"uniform"`` or ``"normal"`` reset noise on the velocities.
      init_qpos, init_qvel: the model's initial ``qpos`` ``[nq]`` and ``qvel`` ``[nv]``.
      health: ``"none"``, ``"hopper"``, ``"walker"`` or ``"pendulum"`` (see the module).
      qvel_clip: observed velocities are clipped to ``[-qvel_clip, qvel_clip]`` (or None).
      healthy_reward, terminate_when_unhealthy, healthy_state_range, healthy_z_range,
        healthy_angle_range: gymnasium's values (ranges are ``(low, high)`` or None).
    """

    env_id: str
    model: object
    frame_skip: int
    dt: float
    forward_reward_weight: float
    ctrl_cost_weight: float
    reset_noise_scale: float
    skipped_positions: int
    qvel_noise: str
    init_qpos: np.ndarray
    init_qvel: np.ndarray
    health: str = "none"
    qvel_clip: Optional[float] = None
    healthy_reward: float = 0.0
    terminate_when_unhealthy: bool = False
    healthy_state_range: Optional[tuple] = None
    healthy_z_range: Optional[tuple] = None
    healthy_angle_range: Optional[tuple] = None

    @property
    def can_terminate(self) -> bool:
        """True when an episode may end before ``T`` (an unhealthy state terminates)."""
        return self.health != "none" and self.terminate_when_unhealthy

    @property
    def obs_dim(self) -> int:
        return self.model.nq - self.skipped_positions + self.model.nv

    @property
    def action_dim(self) -> int:
        return self.model.nu

    def observe(self, qpos, qvel, xp=np):
        """Observation ``[..., obs_dim]`` from ``qpos [..., nq]`` and ``qvel [..., nv]``."""
        if self.qvel_clip is not None:
            qvel = xp.clip(qvel, -self.qvel_clip, self.qvel_clip)
        return xp.concatenate([qpos[..., self.skipped_positions:], qvel], axis=-1)

    def healthy(self, qpos, qvel, xp=np):
        """Bool ``[...]``: gymnasium's ``is_healthy`` of the state ``qpos [..., nq]``, ``qvel [..., nv]``."""
        inside = lambda x, bounds: (bounds[0] < x) & (x < bounds[1])
        if self.health == "pendulum":
            obs = self.observe(qpos, qvel, xp)
            return xp.all(xp.isfinite(obs), axis=-1) & (xp.abs(obs[..., 1]) <= 0.2)
        ok = xp.ones(qpos.shape[:-1], bool)
        if self.health in ("hopper", "walker"):
            ok = inside(qpos[..., 1], self.healthy_z_range) & inside(qpos[..., 2], self.healthy_angle_range)
        if self.health == "hopper":
            state = xp.concatenate([qpos, qvel], axis=-1)[..., 2:]
            ok = ok & xp.all(inside(state, self.healthy_state_range), axis=-1)
        return ok

    def terminated(self, healthy, xp=np):
        """Bool ``[...]``: the episode ends (an unhealthy state, when gymnasium terminates on it)."""
        return ~healthy if self.can_terminate else xp.zeros(xp.shape(healthy), bool)

    def reward(self, x_before, x_after, action, xp=np, healthy=None):
        """Reward ``[...]`` of one step that moved the root from ``x_before`` to ``x_after``
        into a state whose health is ``healthy`` (needed unless ``health`` is ``"none"``)."""
        if self.health == "pendulum":
            return xp.where(healthy, 1.0, 0.0)
        forward = self.forward_reward_weight * ((x_after - x_before) / self.dt)
        if self.health != "none":
            forward = forward + healthy * self.healthy_reward
        return forward - self.ctrl_cost_weight * xp.sum(xp.square(action), axis=-1)

    def reset_noise(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Initial ``(qpos [nq], qvel [nv])`` of one episode (float32 JAX arrays)."""
        k_pos, k_vel = jax.random.split(key)
        scale = self.reset_noise_scale
        nq, nv = self.model.nq, self.model.nv
        qpos = jnp.asarray(self.init_qpos, jnp.float32) + jax.random.uniform(k_pos, (nq,), minval=-scale, maxval=scale)
        if self.qvel_noise == "normal":
            noise = scale * jax.random.normal(k_vel, (nv,))
        else:
            noise = jax.random.uniform(k_vel, (nv,), minval=-scale, maxval=scale)
        return qpos, jnp.asarray(self.init_qvel, jnp.float32) + noise


def make_gym_env(env_id: str, **kwargs):
    """``gymnasium.make(env_id)`` with a clear ``ValueError`` for an unknown name."""
    import gymnasium as gym

    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as err:
        known = ", ".join(SUPPORTED)
        raise ValueError(f"unknown environment {env_id!r} ({err}); supported: {known}") from None


def quiet_make(env_id: str, **kwargs):
    """``make_gym_env`` without gymnasium's and MuJoCo's compile-time warnings.

    gymnasium's HalfCheetah XML uses an attribute MuJoCo 3.17 deprecates; MuJoCo's
    default handler would append that to ``MUJOCO_LOG.TXT`` in the working directory.
    """
    import mujoco

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda message: None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return make_gym_env(env_id, **kwargs)
    finally:
        mujoco.set_mju_user_warning(previous)


def _range(raw, name: str) -> Optional[tuple]:
    """gymnasium's ``(low, high)`` attribute ``name`` as floats, or None if it has none."""
    value = getattr(raw, name, None)
    return None if value is None else (float(value[0]), float(value[1]))


@functools.lru_cache(maxsize=None)
def load_env(env_id: str) -> EnvSpec:
    """Read a gymnasium environment into an :class:`EnvSpec`; raise ``ValueError`` if unusable.

    Errors name the value: an id gymnasium does not know, an environment whose action
    space is not continuous (``Box``), or a continuous one this task has no reward for.
    """
    import gymnasium as gym

    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"env must be a gymnasium id such as 'Swimmer-v5', got {env_id!r}")
    os.environ.setdefault("MUJOCO_GL", "egl")
    env = quiet_make(env_id)
    try:
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(
                f"environment {env_id!r} has a non-continuous action space {space}; "
                f"policies here output real-valued actions (supported: {', '.join(SUPPORTED)})"
            )
        if env_id not in SUPPORTED:
            raise ValueError(
                f"environment {env_id!r} is continuous but not supported (reward and reset are defined for "
                f"{', '.join(SUPPORTED)})"
            )
        raw = env.unwrapped
        kind = SUPPORTED[env_id]
        return EnvSpec(
            env_id=env_id,
            model=raw.model,
            frame_skip=int(raw.frame_skip),
            dt=float(raw.dt),
            forward_reward_weight=float(getattr(raw, "_forward_reward_weight", 0.0)),
            ctrl_cost_weight=float(getattr(raw, "_ctrl_cost_weight", 0.0)),
            reset_noise_scale=float(raw._reset_noise_scale),
            skipped_positions=kind.skipped_positions,
            qvel_noise=kind.qvel_noise,
            init_qpos=np.array(raw.init_qpos, np.float64),
            init_qvel=np.array(raw.init_qvel, np.float64),
            health=kind.health,
            qvel_clip=kind.qvel_clip,
            healthy_reward=float(getattr(raw, "_healthy_reward", 0.0)),
            terminate_when_unhealthy=bool(getattr(raw, "_terminate_when_unhealthy", kind.health == "pendulum")),
            healthy_state_range=_range(raw, "_healthy_state_range"),
            healthy_z_range=_range(raw, "_healthy_z_range"),
            healthy_angle_range=_range(raw, "_healthy_angle_range"),
        )
    finally:
        env.close()

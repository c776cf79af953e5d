"""The same environments on MuJoCo XLA (MJX): physics as a pure JAX function.

The MJX model is put from the very ``MjModel`` gymnasium compiled (so the XML,
integrator, timestep and actuators are the ones the CPU task steps). The state
carried between steps is the part of ``mjx.Data`` that ``mjx.step`` reads and that
an episode changes: ``qpos [nq]``, ``qvel [nv]``, ``act [na]`` and the solver warm
start ``qacc_warmstart [nv]`` (float32). Everything else is recomputed by the step.
With this module the whole window -- policy, physics, estimator -- is one compiled,
vmapped call, exactly as for Lorenz.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nres.tasks.rl.envs import EnvSpec


def import_mjx():
    """``mujoco.mjx``, without the "Failed to import warp" lines its optional GPU back end prints.

    MJX tries to import NVIDIA Warp at import time and prints to stdout when it is not
    installed; the JAX back end used here never needs it, so that print is only noise.
    """
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        from mujoco import mjx
    return mjx


class MjxState(NamedTuple):
    qpos: jax.Array
    qvel: jax.Array
    act: jax.Array
    qacc_warmstart: jax.Array


class MjxPhysics:
    """``reset`` and ``step`` of one :class:`EnvSpec` on MJX (pure, jittable, vmappable)."""

    def __init__(self, spec: EnvSpec):
        mjx = import_mjx()

        self.spec = spec
        self._mjx = mjx
        self.model = mjx.put_model(spec.model)
        self._data0 = mjx.make_data(self.model)

    def reset(self, qpos: jax.Array, qvel: jax.Array) -> tuple[MjxState, jax.Array]:
        """State and observation ``[obs_dim]`` of an episode starting at ``qpos``, ``qvel``."""
        state = MjxState(
            qpos=qpos.astype(jnp.float32),
            qvel=qvel.astype(jnp.float32),
            act=jnp.zeros_like(self._data0.act),
            qacc_warmstart=jnp.zeros_like(self._data0.qacc_warmstart),
        )
        return state, self.spec.observe(state.qpos, state.qvel, jnp)

    def step(self, state: MjxState, action: jax.Array) -> tuple[MjxState, jax.Array, jax.Array, jax.Array]:
        """One environment step (``frame_skip`` MJX substeps): ``(state, obs, reward, terminated)``."""
        spec = self.spec
        data = self._data0.replace(
            qpos=state.qpos, qvel=state.qvel, act=state.act, qacc_warmstart=state.qacc_warmstart,
            ctrl=action.astype(jnp.float32),
        )
        data = jax.lax.fori_loop(0, spec.frame_skip, lambda _, d: self._mjx.step(self.model, d), data)
        new = MjxState(data.qpos, data.qvel, data.act, data.qacc_warmstart)
        healthy = spec.healthy(new.qpos, new.qvel, jnp)
        reward = spec.reward(state.qpos[0], new.qpos[0], action, jnp, healthy=healthy).astype(jnp.float32)
        return new, spec.observe(new.qpos, new.qvel, jnp), reward, spec.terminated(healthy, jnp)

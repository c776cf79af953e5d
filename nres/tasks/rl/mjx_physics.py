"""The same environments on MuJoCo XLA (MJX): physics as a pure JAX function.

The MJX model is put from the very ``MjModel`` gymnasium compiled (so the XML,
integrator, timestep and actuators are the ones the CPU task steps). The state
carried between steps is the part of ``mjx.Data`` that ``mjx.step`` reads and that
an episode changes: ``qpos [nq]``, ``qvel [nv]``, ``act [na]`` and the solver warm
start ``qacc_warmstart [nv]`` (float32), plus Ant's carried progress position (see
:mod:`.envs`). Everything else is recomputed by the step; ``cfrc_ext`` by
``mjx.rne_postconstraint`` after it, as gymnasium calls ``mj_rnePostConstraint``.
With this module the whole window -- policy, physics, estimator -- is one compiled,
vmapped call, exactly as for Lorenz.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

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


def _field(data, name: str):
    """A field of ``mjx.Data``; those of its back-end part (``cfrc_ext``) read there, as MJX asks."""
    impl = data._impl
    return getattr(impl, name) if name in getattr(type(impl), "__dataclass_fields__", {}) else getattr(data, name)


class MjxState(NamedTuple):
    """``qpos [nq]``, ``qvel [nv]``, ``act [na]``, ``qacc_warmstart [nv]`` (float32), and for
    Ant (``spec.carries_progress``) the progress position ``[]`` the last step left (else None)."""

    qpos: jax.Array
    qvel: jax.Array
    act: jax.Array
    qacc_warmstart: jax.Array
    progress: Optional[jax.Array] = None


class MjxPhysics:
    """``reset`` and ``step`` of one :class:`EnvSpec` on MJX (pure, jittable, vmappable).

    Raises ``ValueError`` naming the environment when MJX cannot run its model (Humanoid:
    gymnasium's XML asks for the PGS solver, which MJX does not implement).
    """

    def __init__(self, spec: EnvSpec):
        mjx = import_mjx()

        self.spec = spec
        self._mjx = mjx
        try:
            self.model = mjx.put_model(spec.model)
        except NotImplementedError as err:
            raise ValueError(f"environment {spec.env_id!r} cannot run on physics 'mjx': MJX does not implement "
                             f"{err} (from gymnasium's XML); use physics 'mujoco'") from None
        self._data0 = mjx.make_data(self.model)

    def _fields(self, data) -> dict:
        """``qpos``, ``qvel`` and the derived fields the spec reads, from ``mjx.Data``."""
        return {name: _field(data, name) for name in ("qpos", "qvel") + self.spec.derived}

    def _state(self, data) -> MjxState:
        progress = self.spec.progress_position(self._fields(data), jnp) if self.spec.carries_progress else None
        return MjxState(data.qpos, data.qvel, data.act, data.qacc_warmstart, progress)

    def reset(self, qpos: jax.Array, qvel: jax.Array) -> tuple[MjxState, jax.Array]:
        """State and observation ``[obs_dim]`` of an episode starting at ``qpos``, ``qvel``
        (after ``mjx.forward`` when the observation reads derived fields, as gymnasium's reset)."""
        data = self._data0.replace(qpos=qpos.astype(jnp.float32), qvel=qvel.astype(jnp.float32))
        if self.spec.derived:
            # mjx.forward writes back normalised free-joint quaternions; mj_forward leaves qpos as set
            data = self._mjx.forward(self.model, data).replace(qpos=data.qpos)
        return self._state(data), self.spec.observe(self._fields(data), jnp)

    def step(self, state: MjxState, action: jax.Array) -> tuple[MjxState, jax.Array, jax.Array, jax.Array]:
        """One environment step (``frame_skip`` MJX substeps): ``(state, obs, reward, terminated)``."""
        spec = self.spec
        data = self._data0.replace(
            qpos=state.qpos, qvel=state.qvel, act=state.act, qacc_warmstart=state.qacc_warmstart,
            ctrl=action.astype(jnp.float32),
        )
        data = jax.lax.fori_loop(0, spec.frame_skip, lambda _, d: self._mjx.step(self.model, d), data)
        if "cfrc_ext" in spec.derived:  # as gymnasium's mj_rnePostConstraint after mj_step
            data = self._mjx.rne_postconstraint(self.model, data)
        fields = self._fields(data)
        before = state.progress if spec.carries_progress else spec.progress_position({"qpos": state.qpos}, jnp)
        healthy = spec.healthy(fields, jnp)
        reward = spec.reward(before, spec.progress_position(fields, jnp), action, jnp, healthy=healthy, d=fields)
        return self._state(data), spec.observe(fields, jnp), jnp.asarray(reward, jnp.float32), spec.terminated(healthy, jnp)

"""Real MuJoCo on the CPU, batched with ``mujoco.batch`` and called from JAX.

The physics state of one environment is its complete MuJoCo integration state, the
``mjSTATE_INTEGRATION`` row (time, ``qpos``, ``qvel``, actuator activations, history,
the solver's warm start ``qacc_warmstart``, controls, applied forces, mocap and
plugin state: everything ``mj_step`` reads). Copying the row copies the world, so
the two members of an antithetic pair that hold the same row see the same physics.

JAX arrays are 32-bit here, so the float64 row travels through JAX as its bit
pattern, ``uint32 [nstate, 2]`` (``CpuState.bits``): exact through ``lax.scan``,
``tree_where`` and ``.npz`` checkpoints. MuJoCo has no random number generator in
its state for these models; every random draw (the reset noise) comes from the
episode's JAX key, so both members of a pair reset to the same state.

:class:`CpuPhysics` exposes ``reset`` and ``step`` as pure JAX functions written for
one environment. Both call the host through ``jax.pure_callback`` with
``vmap_method="broadcast_all"``: under the library's ``vmap`` over particles and pair
members one call receives every environment at once (``[2, N, ...]``) and steps them
all on ``mujoco.batch.Batch``'s thread pool, which is bit-identical to stepping each
environment alone with ``mj_step``. A whole truncation window therefore stays one
compiled call, with one host round trip per environment step.
"""

from __future__ import annotations

import functools
import threading
from typing import NamedTuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import batch as mj_batch

from nres.config import ConfigError
from nres.tasks.rl.envs import EnvSpec

STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION


class CpuState(NamedTuple):
    """``bits``: the ``mjSTATE_INTEGRATION`` row as ``uint32 [nstate, 2]`` (float64 bits)."""

    bits: jax.Array


def rows_to_bits(rows: np.ndarray) -> np.ndarray:
    """float64 ``[..., nstate]`` -> uint32 ``[..., nstate, 2]`` (same bytes)."""
    rows = np.ascontiguousarray(rows, np.float64)
    return rows.view(np.uint32).reshape(rows.shape + (2,))


def bits_to_rows(bits) -> np.ndarray:
    """uint32 ``[..., nstate, 2]`` -> float64 ``[..., nstate]`` (same bytes)."""
    bits = np.ascontiguousarray(bits, np.uint32)
    return bits.view(np.float64).reshape(bits.shape[:-1])


class CpuPhysics:
    """Batched CPU MuJoCo for one :class:`EnvSpec`.

    Args:
      spec: the environment.
      num_threads: threads of the batch's pool (0: every CPU).
    """

    def __init__(self, spec: EnvSpec, num_threads: int = 0):
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
            raise ValueError(f"num_threads must be an integer >= 0, got {num_threads!r}")
        self.spec = spec
        self.num_threads = num_threads
        model = spec.model
        self.nstate = mujoco.mj_stateSize(model, STATE_SPEC)
        self._qpos_at = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_TIME)
        self._qvel_at = self._qpos_at + model.nq
        data = mujoco.MjData(model)
        mujoco.mj_resetData(model, data)
        self._template = np.empty(self.nstate)
        mujoco.mj_getState(model, data, self._template, STATE_SPEC)
        self._batches: dict[int, mj_batch.Batch] = {}
        self._lock = threading.Lock()

    # -- host side (numpy, float64) ------------------------------------------------------
    def batch(self, nsim: int) -> mj_batch.Batch:
        """The cached ``mujoco.batch.Batch`` of ``nsim`` simulations."""
        if nsim not in self._batches:
            self._batches[nsim] = mj_batch.Batch(self.spec.model, nsim, nthread=self.num_threads)
        return self._batches[nsim]

    def initial_rows(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Rows ``[n, nstate]`` of freshly reset environments at ``qpos [n, nq]``, ``qvel [n, nv]``.

        As gymnasium's ``reset``: ``mj_resetData`` (zero time, controls, warm start),
        then the given positions and velocities.
        """
        rows = np.tile(self._template, (qpos.shape[0], 1))
        rows[:, self._qpos_at:self._qvel_at] = qpos
        rows[:, self._qvel_at:self._qvel_at + self.spec.model.nv] = qvel
        return rows

    def step_rows(self, rows: np.ndarray, actions: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One environment step of every row: returns ``(rows, obs, reward, terminated)``.

        ``rows [n, nstate]``, ``actions [n, nu]`` -> new rows ``[n, nstate]``,
        observations ``[n, obs_dim]`` and rewards ``[n]`` (float64), and gymnasium's
        ``terminated`` ``[n]`` (bool).
        """
        spec = self.spec
        with self._lock:
            sims = self.batch(rows.shape[0])
            sims.state[:] = rows
            qpos, qvel = sims.bind("qpos"), sims.bind("qvel")
            sims.bind("ctrl")[:] = actions
            x_before = qpos[:, 0].copy()
            sims.step(nstep=spec.frame_skip)
            healthy = spec.healthy(qpos, qvel)
            reward = spec.reward(x_before, qpos[:, 0], actions, healthy=healthy)
            return sims.state.copy(), spec.observe(qpos, qvel), reward, spec.terminated(healthy)

    def _host_reset(self, qpos, qvel):
        shape = qpos.shape[:-1]
        rows = self.initial_rows(np.reshape(qpos, (-1, qpos.shape[-1])), np.reshape(qvel, (-1, qvel.shape[-1])))
        obs = self.spec.observe(rows[:, self._qpos_at:self._qvel_at], rows[:, self._qvel_at:self._qvel_at + qvel.shape[-1]])
        return rows_to_bits(rows).reshape(shape + (self.nstate, 2)), obs.astype(np.float32).reshape(shape + (-1,))

    def _host_step(self, bits, actions):
        shape = actions.shape[:-1]
        rows = bits_to_rows(bits).reshape(-1, self.nstate)
        rows, obs, reward, terminated = self.step_rows(rows, np.asarray(actions, np.float64).reshape(rows.shape[0], -1))
        return (
            rows_to_bits(rows).reshape(shape + (self.nstate, 2)),
            obs.astype(np.float32).reshape(shape + (-1,)),
            reward.astype(np.float32).reshape(shape),
            terminated.reshape(shape),
        )

    # -- JAX side (one environment; vmapped by the library) -------------------------------
    def reset(self, qpos: jax.Array, qvel: jax.Array) -> tuple[CpuState, jax.Array]:
        """State and observation ``[obs_dim]`` of an episode starting at ``qpos``, ``qvel``."""
        out = (
            jax.ShapeDtypeStruct((self.nstate, 2), jnp.uint32),
            jax.ShapeDtypeStruct((self.spec.obs_dim,), jnp.float32),
        )
        bits, obs = jax.pure_callback(self._host_reset, out, qpos, qvel, vmap_method="broadcast_all")
        return CpuState(bits), obs

    def step(self, state: CpuState, action: jax.Array) -> tuple[CpuState, jax.Array, jax.Array, jax.Array]:
        """One environment step under ``action [nu]``: ``(state, obs [obs_dim], reward [], terminated [])``.

        CPU MuJoCo is a black box to JAX: differentiating through it (the autodiff
        baselines) raises :class:`nres.config.ConfigError` pointing to MJX instead.
        """
        bits, obs, reward, terminated = self._callback_step(state.bits, action.astype(jnp.float32))
        return CpuState(bits), obs, reward, terminated

    @functools.cached_property
    def _callback_step(self):
        out = (
            jax.ShapeDtypeStruct((self.nstate, 2), jnp.uint32),
            jax.ShapeDtypeStruct((self.spec.obs_dim,), jnp.float32),
            jax.ShapeDtypeStruct((), jnp.float32),
            jax.ShapeDtypeStruct((), jnp.bool_),
        )

        @jax.custom_jvp
        def host_step(bits, action):
            return jax.pure_callback(self._host_step, out, bits, action, vmap_method="broadcast_all")

        @host_step.defjvp
        def no_derivative(primals, tangents):
            raise ConfigError(
                "physics 'mujoco' (CPU MuJoCo) has no derivatives; use an ES estimator "
                "(fulles, tes, pes, gpes, nres) or --physics mjx for autodiff methods"
            )

        return host_step

    def positions(self, state: CpuState) -> np.ndarray:
        """Host helper: ``qpos`` ``[..., nq]`` (float64) of states."""
        rows = bits_to_rows(np.asarray(state.bits))
        return rows[..., self._qpos_at:self._qvel_at]

    def time(self, state: CpuState) -> np.ndarray:
        """Host helper: simulation time ``[...]`` (seconds) of states."""
        return bits_to_rows(np.asarray(state.bits))[..., 0]

"""Real MuJoCo on the CPU, batched with ``mujoco.batch`` and called from JAX.

The physics state of one environment is its complete MuJoCo integration state, the
``mjSTATE_INTEGRATION`` row (time, ``qpos``, ``qvel``, actuator activations, history,
the solver's warm start ``qacc_warmstart``, controls, applied forces, mocap and
plugin state: everything ``mj_step`` reads), followed for Ant and Humanoid by the
progress position the last step left (see :mod:`.envs`). Copying the row copies the
world, so the two members of an antithetic pair that hold the same row see the same
physics.

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
environment alone with ``mj_step`` (or, for environments that read ``cfrc_ext``, on
one ``MjData`` per thread, ``mj_step`` then ``mj_rnePostConstraint`` as gymnasium calls
them). A whole truncation window therefore stays one compiled call, with one host
round trip per environment step.
"""

from __future__ import annotations

import functools
import os
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
    """``bits``: the row (``mjSTATE_INTEGRATION`` [+ progress]) as ``uint32 [nrow, 2]`` (float64 bits)."""

    bits: jax.Array


def rows_to_bits(rows: np.ndarray) -> np.ndarray:
    """float64 ``[..., nstate]`` -> uint32 ``[..., nstate, 2]`` (same bytes)."""
    rows = np.ascontiguousarray(rows, np.float64)
    return rows.view(np.uint32).reshape(rows.shape + (2,))


def bits_to_rows(bits) -> np.ndarray:
    """uint32 ``[..., nstate, 2]`` -> float64 ``[..., nstate]`` (same bytes)."""
    bits = np.ascontiguousarray(bits, np.uint32)
    return bits.view(np.float64).reshape(bits.shape[:-1])


class _BatchEngine:
    """``mujoco.batch.Batch``: the fields ``mj_step``/``mj_forward`` compute, on the batch's thread pool."""

    def __init__(self, spec: EnvSpec, num_threads: int):
        self.spec, self.num_threads = spec, num_threads
        self._batches: dict[int, mj_batch.Batch] = {}

    def batch(self, nsim: int) -> mj_batch.Batch:
        """The cached ``mujoco.batch.Batch`` of ``nsim`` simulations, its derived fields bound
        (a field bound after a call would read zero until the next one)."""
        if nsim not in self._batches:
            sims = mj_batch.Batch(self.spec.model, nsim, nthread=self.num_threads)
            for name in self.spec.derived:
                sims.bind(name)
            self._batches[nsim] = sims
        return self._batches[nsim]

    def run(self, rows: np.ndarray, nstep: int) -> tuple[np.ndarray, dict]:
        """``nstep`` substeps of every row ``[n, nstate]`` (0: ``mj_forward`` only): new rows and fields."""
        sims = self.batch(rows.shape[0])
        sims.state[:] = rows
        if nstep:
            sims.step(nstep=nstep)
        else:
            sims.forward()
        fields = {name: np.array(sims.bind(name)) for name in ("qpos", "qvel") + self.spec.derived}
        return sims.state.copy(), fields


class _LoopEngine:
    """One ``MjData`` per thread, called exactly as gymnasium calls it: ``mj_step`` then
    ``mj_rnePostConstraint`` (which computes ``cfrc_ext``; ``mj_step`` does not, and the
    batch cannot run it), or ``mj_resetData``, the state and ``mj_forward`` at a reset."""

    def __init__(self, spec: EnvSpec, num_threads: int):
        self.spec = spec
        self.threads = num_threads or os.cpu_count() or 1
        self._datas = [mujoco.MjData(spec.model) for _ in range(self.threads)]
        self._pool = None

    def _work(self, data, rows, out, fields, nstep, ids):
        model = self.spec.model
        for i in ids:
            if not nstep:
                mujoco.mj_resetData(model, data)
            mujoco.mj_setState(model, data, rows[i], STATE_SPEC)
            if nstep:
                mujoco.mj_step(model, data, nstep=nstep)
                mujoco.mj_rnePostConstraint(model, data)
            else:
                mujoco.mj_forward(model, data)
            mujoco.mj_getState(model, data, out[i], STATE_SPEC)
            for name, values in fields.items():
                values[i] = getattr(data, name)

    def run(self, rows: np.ndarray, nstep: int) -> tuple[np.ndarray, dict]:
        """``nstep`` substeps of every row ``[n, nstate]`` (0: a reset's ``mj_forward``): new rows and fields."""
        n = rows.shape[0]
        out = np.empty_like(rows)
        template = self.spec.fields(self._datas[0])
        fields = {name: np.empty((n,) + value.shape) for name, value in template.items()}
        chunks = [c for c in np.array_split(np.arange(n), self.threads) if len(c)]
        if len(chunks) == 1:
            self._work(self._datas[0], rows, out, fields, nstep, chunks[0])
        else:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="nres-mujoco")
            jobs = [self._pool.submit(self._work, data, rows, out, fields, nstep, ids)
                    for data, ids in zip(self._datas, chunks)]
            for job in jobs:
                job.result()
        return out, fields


class CpuPhysics:
    """Batched CPU MuJoCo for one :class:`EnvSpec`.

    A row is the ``mjSTATE_INTEGRATION`` state (``nstate`` numbers), followed, for Ant and
    Humanoid (``spec.carries_progress``), by the progress position the last step left
    (``nrow = nstate + 1``). Environments whose formulas read ``cfrc_ext`` step with
    :class:`_LoopEngine`, the others with ``mujoco.batch`` (:class:`_BatchEngine`); both
    are bit-identical to gymnasium's own ``MjData``.

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
        self.nrow = self.nstate + int(spec.carries_progress)
        self._qpos_at = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_TIME)
        self._qvel_at = self._qpos_at + model.nq
        self._ctrl_at = self._component_at(mujoco.mjtState.mjSTATE_CTRL)
        data = mujoco.MjData(model)
        mujoco.mj_resetData(model, data)
        self._template = np.empty(self.nstate)
        mujoco.mj_getState(model, data, self._template, STATE_SPEC)
        engine = _LoopEngine if "cfrc_ext" in spec.derived else _BatchEngine
        self._engine = engine(spec, num_threads)
        self._lock = threading.Lock()

    def _component_at(self, component) -> int:
        """Offset of a state component inside the ``mjSTATE_INTEGRATION`` row."""
        below = int(STATE_SPEC) & (int(component) - 1)
        return mujoco.mj_stateSize(self.spec.model, below)

    # -- host side (numpy, float64) ------------------------------------------------------
    def batch(self, nsim: int) -> mj_batch.Batch:
        """The cached ``mujoco.batch.Batch`` of ``nsim`` simulations (batch-stepped environments)."""
        return self._engine.batch(nsim)

    def _with_progress(self, rows: np.ndarray, fields: dict) -> np.ndarray:
        """State rows ``[n, nstate]`` -> rows ``[n, nrow]`` (the progress position appended if carried)."""
        if not self.spec.carries_progress:
            return rows
        return np.concatenate([rows, self.spec.progress_position(fields)[:, None]], axis=1)

    def reset_rows(self, qpos: np.ndarray, qvel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``[n, nrow]`` and observations ``[n, obs_dim]`` (float64) of freshly reset
        environments at ``qpos [n, nq]``, ``qvel [n, nv]``.

        As gymnasium's ``reset``: ``mj_resetData`` (zero time, controls, warm start), the
        given positions and velocities, and ``mj_forward`` (run only when the observation
        or the carried position reads derived fields).
        """
        rows = np.tile(self._template, (qpos.shape[0], 1))
        rows[:, self._qpos_at:self._qvel_at] = qpos
        rows[:, self._qvel_at:self._qvel_at + self.spec.model.nv] = qvel
        if self.spec.derived:
            with self._lock:
                _, fields = self._engine.run(rows, 0)
        else:
            fields = {"qpos": qpos, "qvel": qvel}
        return self._with_progress(rows, fields), self.spec.observe(fields)

    def initial_rows(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Rows ``[n, nrow]`` of freshly reset environments (see :meth:`reset_rows`)."""
        return self.reset_rows(qpos, qvel)[0]

    def row_of(self, data) -> np.ndarray:
        """The row ``[nrow]`` of a gymnasium environment's ``MjData`` as its ``step`` left it."""
        row = np.empty(self.nstate)
        mujoco.mj_getState(self.spec.model, data, row, STATE_SPEC)
        fields = {name: value[None] for name, value in self.spec.fields(data).items()}
        return self._with_progress(row[None], fields)[0]

    def step_rows(self, rows: np.ndarray, actions: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One environment step of every row: returns ``(rows, obs, reward, terminated)``.

        ``rows [n, nrow]``, ``actions [n, nu]`` -> new rows ``[n, nrow]``,
        observations ``[n, obs_dim]`` and rewards ``[n]`` (float64), and gymnasium's
        ``terminated`` ``[n]`` (bool).
        """
        spec = self.spec
        state = np.array(rows[:, :self.nstate])
        state[:, self._ctrl_at:self._ctrl_at + spec.model.nu] = actions
        if spec.carries_progress:
            before = rows[:, self.nstate]
        else:
            before = spec.progress_position({"qpos": state[:, self._qpos_at:self._qvel_at]})
        with self._lock:
            state, fields = self._engine.run(state, spec.frame_skip)
        healthy = spec.healthy(fields)
        reward = spec.reward(before, spec.progress_position(fields), actions, healthy=healthy, d=fields)
        return self._with_progress(state, fields), spec.observe(fields), reward, spec.terminated(healthy)

    def _host_reset(self, qpos, qvel):
        shape = qpos.shape[:-1]
        rows, obs = self.reset_rows(np.asarray(qpos, np.float64).reshape(-1, qpos.shape[-1]),
                                    np.asarray(qvel, np.float64).reshape(-1, qvel.shape[-1]))
        return rows_to_bits(rows).reshape(shape + (self.nrow, 2)), obs.astype(np.float32).reshape(shape + (-1,))

    def _host_step(self, bits, actions):
        shape = actions.shape[:-1]
        rows = bits_to_rows(bits).reshape(-1, self.nrow)
        rows, obs, reward, terminated = self.step_rows(rows, np.asarray(actions, np.float64).reshape(rows.shape[0], -1))
        return (
            rows_to_bits(rows).reshape(shape + (self.nrow, 2)),
            obs.astype(np.float32).reshape(shape + (-1,)),
            reward.astype(np.float32).reshape(shape),
            terminated.reshape(shape),
        )

    # -- JAX side (one environment; vmapped by the library) -------------------------------
    def reset(self, qpos: jax.Array, qvel: jax.Array) -> tuple[CpuState, jax.Array]:
        """State and observation ``[obs_dim]`` of an episode starting at ``qpos``, ``qvel``."""
        out = (
            jax.ShapeDtypeStruct((self.nrow, 2), jnp.uint32),
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
            jax.ShapeDtypeStruct((self.nrow, 2), jnp.uint32),
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

"""``jax.distributed`` engine: the particles sharded over every device of every process.

Every process runs the same program (multi-controller JAX). The estimator state is
sharded along the particle axis over the global device mesh; ``theta`` and the
optimiser state are replicated. Each update runs the window of every device's own
pairs (``shard_map`` of :meth:`OnlineES.window`, so host callbacks such as CPU MuJoCo
see only local pairs), then gathers the per-pair scalars (29 bytes per pair: the only
data that crosses devices and processes) and rebuilds the gradient from the episode
keys on every device (:meth:`OnlineES.gradient`), so the optax step needs no further
communication. A whole chunk of updates stays one compiled call; the burn-in is one
call of the same program, each device running its own pairs.

Process 0 writes the run directory; the others run the identical loop and write into
a private temporary directory that is deleted at the end (see :mod:`nres.cli`).
"""

from __future__ import annotations

import functools
import os
from typing import Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nres.compiler import compiler_options
from nres.config import ConfigError
from nres.engines import check_scalar_engine
from nres.engines.base import Job
from nres.engines.peers import Agreement, Watchdog, peer_timeout
from nres.estimators.scalars import WindowScalars
from nres.particles import map_particle_axis

ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, timeout_s: int = 300) -> None:
    """Start ``jax.distributed`` from flags, else the ``JAX_*`` environment variables,
    else JAX's own cluster detection (Slurm, Open MPI, cloud TPU). Call before any JAX work."""
    settings = {"coordinator_address": coordinator_address, "num_processes": num_processes,
                "process_id": process_id}
    for name, var in ENV.items():
        if settings[name] is None and os.environ.get(var):
            value = os.environ[var]
            if name != "coordinator_address":
                try:
                    value = int(value)
                except ValueError:
                    raise ConfigError(f"environment variable {var} must be an integer, got {value!r}") from None
            settings[name] = value
    given = {k: v for k, v in settings.items() if v is not None}
    if given and len(given) < 3:
        missing = ", ".join(f"--{k.replace('_', '-')} (or {ENV[k]})" for k in settings if k not in given)
        raise ConfigError(f"--distributed needs all of the coordinator settings; missing {missing}")
    if given and not 0 <= given["process_id"] < given["num_processes"]:
        raise ConfigError(f"process id {given['process_id']} is not in [0, {given['num_processes']})")
    try:
        jax.distributed.initialize(**given, initialization_timeout=timeout_s)
    except Exception as err:  # RuntimeError / ValueError / XlaRuntimeError from the coordinator
        text = str(err).strip().splitlines()
        raise ConfigError(f"cannot start jax.distributed: {text[0] if text else type(err).__name__}") from None


def _client():
    """The distributed runtime's client (key-value store) of this process."""
    from jax._src import distributed

    return distributed.global_state.client


def watch(before_exit=lambda: None) -> Watchdog:
    """Start this process's :class:`~nres.engines.peers.Watchdog` (after :func:`initialize`)."""
    return Watchdog(_client(), jax.process_index(), jax.process_count(), peer_timeout(), before_exit).start()


def _particle_spec(x, axis: int) -> PartitionSpec:
    return PartitionSpec(*([None] * axis + ["particles"]))


class DistributedEngine:
    """Particles over the global device mesh of ``jax.distributed`` (module docstring)."""

    def __init__(self, job: Job):
        estimator = job.estimator
        check_scalar_engine(estimator, "--distributed")
        devices = jax.devices()
        n = job.config.num_particles
        if n % len(devices):
            raise ConfigError(f"--distributed: the {len(devices)} devices of {jax.process_count()} processes "
                              f"do not divide the {n} particle pairs (N)")
        self.is_writer = jax.process_index() == 0
        self.mesh = mesh = Mesh(np.asarray(devices), ("particles",))
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.state_specs = map_particle_axis(_particle_spec, job.template.estimator_state)
        scalar_specs = WindowScalars(*([PartitionSpec("particles")] * len(WindowScalars._fields)))
        window = jax.shard_map(estimator.window, mesh=mesh,
                               in_specs=(self.state_specs, PartitionSpec(), PartitionSpec()),
                               out_specs=(scalar_specs, self.state_specs), check_vma=False)

        def estimate(state, theta, burn_in):
            scalars, state = window(state, theta, burn_in)
            scalars = jax.lax.with_sharding_constraint(scalars, self.replicated)  # N scalars cross devices
            grad, info = estimator.gradient(scalars, theta)
            return grad, state, info

        self._chunk = jax.jit(functools.partial(job.step.chunk, estimate=estimate),
                              compiler_options=compiler_options(job.config.compile_for))
        self.agree = Agreement(_client(), jax.process_index(), jax.process_count())
        self._gather = jax.jit(lambda x: x, out_shardings=self.replicated)

    def _global(self, x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    def place(self, learner):
        host = jax.device_get(learner)
        shardings = jax.tree_util.tree_map(lambda spec: NamedSharding(self.mesh, spec), self.state_specs)
        state = jax.tree_util.tree_map(self._global, host.estimator_state, shardings)
        replicate = lambda tree: jax.tree_util.tree_map(lambda x: self._global(x, self.replicated), tree)
        return learner._replace(theta=replicate(host.theta), opt_state=replicate(host.opt_state),
                                estimator_state=state)

    def host(self, learner):
        """Every process gets the whole learner (a collective: all processes call it)."""
        return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), self._gather(learner))

    def prepare(self):  # its programs are built where they run
        pass

    def run_chunk(self, learner, count, hold):
        return self._chunk(learner, count, self._global(hold, self.replicated))

    def close(self) -> None:
        pass

"""The default engine: every update of a chunk in one compiled call in this process."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from nres.compilation_cache import Program
from nres.compiler import compiler_options
from nres.engines.base import Job
from nres.particles import map_particle_axis
from nres.step import Learner


def particle_devices(num_particles: int) -> int:
    """How many local devices the particles are spread over: all ``D`` of them when
    ``D > 1`` divides ``N``, else one."""
    count = jax.local_device_count()
    return count if count > 1 and num_particles % count == 0 else 1


class LocalEngine:
    """One compiled ``fori_loop`` per chunk (``Step.chunk``), stored whole in the
    compilation cache so a later run loads it without tracing; particles spread over
    this process's devices when their count divides ``N`` (:meth:`place`)."""

    is_writer = True

    def __init__(self, job: Job):
        self.job = job
        self.num_particles = job.config.num_particles
        self.no_hold = np.zeros((self.num_particles,), np.int32)
        self._chunk = Program(job.step.chunk, lambda: job.identity("chunk"), compiler_options(job.config.compile_for))

    def placement(self, learner: Learner) -> Learner | None:
        """The sharding of every leaf of ``learner`` (arrays or shapes) as :meth:`place`
        puts it, or None when nothing moves (one device, or ``D`` not dividing ``N``).

        With ``D > 1`` devices and ``D`` dividing ``N``, every estimator-state leaf is
        sharded along its particle axis, so each compiled window runs ``N / D`` pairs per
        device and XLA sums the gradient across devices; theta and the optimiser state
        are replicated.
        """
        n = self.num_particles
        if particle_devices(n) == 1:
            return None
        mesh = Mesh(np.asarray(jax.local_devices()), ("particles",))

        def shard(x, axis):
            if len(x.shape) <= axis or x.shape[axis] != n:
                return NamedSharding(mesh, PartitionSpec())
            spec = [None] * len(x.shape)
            spec[axis] = "particles"
            return NamedSharding(mesh, PartitionSpec(*spec))

        replicated = jax.tree_util.tree_map(lambda _: NamedSharding(mesh, PartitionSpec()),
                                            (learner.theta, learner.opt_state))
        shared = jax.tree_util.tree_map(lambda _: NamedSharding(mesh, PartitionSpec()), learner.shared)
        return Learner(*replicated, map_particle_axis(shard, learner.estimator_state), shared)

    def place(self, learner: Learner) -> Learner:
        """Spread the particles over every local device (see :meth:`placement`)."""
        shardings = self.placement(learner)
        return learner if shardings is None else jax.device_put(learner, shardings)

    def placed_template(self) -> Learner:
        """The job's template with the shardings a placed learner has."""
        template = self.job.template
        shardings = self.placement(template)
        if shardings is None:  # where a compiled program leaves its results
            shardings = jax.tree_util.tree_map(lambda _: SingleDeviceSharding(jax.local_devices()[0]), template)
        return jax.tree_util.tree_map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s, weak_type=x.weak_type), template, shardings)

    def host(self, learner):
        return learner

    def prepare(self):
        self._chunk.prepare(self.placed_template(), np.int32(1), self.no_hold)

    def run_chunk(self, learner, count, hold):
        return self._chunk(learner, count, hold)

    def agree(self, count, signum):  # one driver process decides alone
        return count, signum

    def close(self) -> None:
        pass

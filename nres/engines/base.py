"""The one small interface through which a run executes its training step.

An engine is built from a :class:`Job`: the pure step functions (:mod:`nres.step`),
the estimator, the config and a learner template, never from a trainer. It decides
*where* the particles live and *who* runs their windows; the estimator math, the
optimiser and the run directory stay the same. Engines:

* :class:`nres.engines.local.LocalEngine`: one process, one compiled call per chunk of
  updates; particles spread over the process's devices (:meth:`LocalEngine.place`).
* :class:`nres.engines.distributed.DistributedEngine`: ``jax.distributed`` processes
  (one or many hosts); particles sharded over the global device mesh, only per-pair
  scalars cross devices and processes.
* :class:`nres.engines.ray.RayEngine`: Ray actors each own a shard of the particles
  and return per-pair scalars each window; the driver rebuilds the gradient.

A learner handed to an engine may hold its estimator state remotely (Ray);
:meth:`Engine.host` returns it as arrays a checkpoint can store.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Protocol

import jax

from nres.config import TrainConfig
from nres.estimators.base import Estimator
from nres.step import Learner, Step


class Job(NamedTuple):
    """What an engine runs.

    ``step``: the pure step functions; ``estimator``: their estimator; ``config``: the
    run's settings (remote workers rebuild the estimator from them); ``template``: the
    learner's shapes and dtypes (``jax.ShapeDtypeStruct`` leaves, no shardings);
    ``identity(name)``: what determines compiled program ``name`` for stored executables
    (:func:`nres.build.program_identity`), or None.
    """

    step: Step
    estimator: Estimator
    config: TrainConfig
    template: Learner
    identity: Callable[[str], Optional[dict]]


class Engine(Protocol):
    """How a chunk of updates runs (see the module docstring)."""

    #: True in the one process that writes the run directory (logs, checkpoints).
    is_writer: bool

    def place(self, learner):
        """A learner of host or device arrays (fresh or from a checkpoint) -> engine-held."""

    def host(self, learner):
        """The engine-held learner as arrays with the full population (for checkpoints)."""

    def prepare(self) -> None:
        """Start building what :meth:`run_chunk` runs for a placed learner, in the
        background; may do nothing."""

    def run_chunk(self, learner, count: jax.Array, hold):
        """``count`` windows, burn-in windows first (``hold`` ``[N]``, host int32, zeros in
        training): returns ``(learner, infos, thetas)`` as ``Step.chunk`` (infos: rows of
        :func:`nres.step.pack_info`)."""

    def agree(self, count: int, signum):
        """The training loop's decision ``(count, signum)`` (next call's updates, stop
        signal or None) as every process of the run takes it: unchanged in a
        one-process engine, process 0's in a multi-process one."""

    def close(self) -> None:
        """Release workers and connections (idempotent)."""

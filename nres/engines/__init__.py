"""Execution engines: where a run's particles live and who runs their windows.

Every engine runs the same pure step (:mod:`nres.step`) handed to it as a
:class:`~nres.engines.base.Job` (see :mod:`nres.engines.base`); for a fixed seed they
give the same theta trajectory up to float32 rounding. :func:`make_engine` picks one
from :class:`EngineOptions` (the ``nres train`` flags ``--backend``, ``--num-workers``,
``--ray-address`` and ``--distributed``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from nres.config import ConfigError
from nres.engines.base import Engine, Job
from nres.estimators.base import WindowEstimator

BACKENDS = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """How to execute a run; none of it changes the results.

    Attributes:
      backend: ``local`` (this process, or ``jax.distributed`` processes with
        ``distributed``) or ``ray`` (Ray actors own shards of the particles).
      num_workers: Ray actors (must divide ``N``).
      ray_address: join this Ray cluster (``None``: start a local one, shut it down
        at the end; ``auto``: the cluster this machine belongs to).
      distributed: particles sharded over every device of every ``jax.distributed``
        process (initialised by :func:`nres.engines.distributed.initialize`).
    """

    backend: str = "local"
    num_workers: Optional[int] = None
    ray_address: Optional[str] = None
    distributed: bool = False


def check_scalar_engine(estimator, what: str) -> None:
    """Engines that ship scalars need an ES estimator with window-aligned windows."""
    if not isinstance(estimator, WindowEstimator):
        raise ConfigError(f"{what} runs the ES estimators (they send one scalar per pair), not {estimator.name!r}")
    if not estimator.window_aligned:
        raise ConfigError(estimator.not_aligned_message(what))


def make_engine(job: Job, options: EngineOptions) -> Engine:
    """The engine ``options`` name, running ``job`` (validated before anything starts)."""
    if options.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {options.backend!r}; choose one of {', '.join(BACKENDS)}")
    if getattr(job.estimator.task, "shared", None) is not None and (options.backend == "ray" or options.distributed):
        raise ConfigError("--backend ray and --distributed do not carry a task's shared state (e.g. --obs-norm "
                          "running) yet; use the local engine (it spreads the particles over local devices)")
    if options.backend == "ray":
        if options.distributed:
            raise ConfigError("--distributed and --backend ray are two ways to scale out; pick one")
        from nres.engines.ray import RayEngine

        return RayEngine(job, options.num_workers, options.ray_address)
    if options.num_workers is not None or options.ray_address is not None:
        raise ConfigError("--num-workers and --ray-address need --backend ray")
    if options.distributed:
        from nres.engines.distributed import DistributedEngine

        return DistributedEngine(job)
    from nres.engines.local import LocalEngine

    return LocalEngine(job)

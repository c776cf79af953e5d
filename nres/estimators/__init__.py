"""Gradient estimators for unrolled computation graphs.

Every estimator has ``init(key, theta) -> state`` and
``estimate(state, theta) -> (grad, state, info)``; ``grad`` is a pytree shaped like
``theta`` that any optax ``GradientTransformation`` consumes. ``init`` is
``start(key, theta) -> (state, hold)`` (every pair at ``tau = 0``) followed by the
burn-in's ``hold`` windows (:func:`nres.particles.burn_in`).

ES family (SPEC section 2), all one implementation (:class:`OnlineES`):
``fulles``, ``tes``, ``pes``, ``gpes`` (needs ``noise_period`` K) and ``nres``.

Autodiff baselines (SPEC section 3, :mod:`nres.estimators.autodiff`): ``bptt``,
``tbptt``, ``uoro`` and ``dodge`` (forward mode, ``noise_period`` K, default ``W``).
"""

from __future__ import annotations

from typing import Optional

from nres.estimators.autodiff import AUTODIFF_ESTIMATORS
from nres.estimators.base import WindowInfo
from nres.estimators.online_es import OnlineES, OnlineESState
from nres.task import Task


def gpes(task: Task, num_particles: int, unroll_length: int, sigma: float, noise_period: int, **options) -> OnlineES:
    """Generalised PES: fresh noise every ``K = noise_period`` steps, accumulated."""
    return OnlineES(task, num_particles, unroll_length, sigma, noise_period, name="gpes", **options)


def pes(task: Task, num_particles: int, unroll_length: int, sigma: float, **options) -> OnlineES:
    """Persistent ES (Vicol et al. 2021) = GPES with ``K = W``."""
    return OnlineES(task, num_particles, unroll_length, sigma, unroll_length, name="pes", **options)


def nres(task: Task, num_particles: int, unroll_length: int, sigma: float, **options) -> OnlineES:
    """Noise-Reuse ES = GPES with ``K >= T``: one noise per episode."""
    return OnlineES(task, num_particles, unroll_length, sigma, task.horizon, name="nres", **options)


def fulles(task: Task, num_particles: int, sigma: float, **options) -> OnlineES:
    """Offline ES: every pair unrolls a whole episode from ``tau = 0`` (``W = T``)."""
    return OnlineES(task, num_particles, task.horizon, sigma, task.horizon, step_unlocked=False, name="fulles",
                    **options)


def tes(task: Task, num_particles: int, unroll_length: int, sigma: float, **options) -> OnlineES:
    """Truncated ES (biased): fresh noise every window, no memory of earlier noise."""
    return OnlineES(task, num_particles, unroll_length, sigma, None, name="tes", **options)


ES_ESTIMATORS = ("fulles", "tes", "pes", "gpes", "nres")


def _build_gpes(task, *, num_particles, unroll_length, sigma, noise_period, **options):
    if noise_period is None:
        raise ValueError("estimator 'gpes' needs noise_period (K)")
    return gpes(task, num_particles, unroll_length, sigma, noise_period, **options)


def _without_noise_period(builder, name):
    def build(task, *, num_particles, unroll_length, sigma, noise_period, **options):
        if noise_period is not None:
            raise ValueError(f"noise_period (K) applies only to 'gpes', not to {name!r}")
        return builder(task, num_particles=num_particles, unroll_length=unroll_length, sigma=sigma, **options)

    return build


def _build_fulles(task, *, num_particles, unroll_length, sigma, **options):
    del unroll_length  # FullES always unrolls whole episodes: W = T
    return fulles(task, num_particles, sigma, **options)


# name -> builder(task, *, num_particles, unroll_length, sigma, noise_period, **options).
# Every estimator built here has start/init/estimate, env_steps_per_update,
# sequential_steps_per_update, burn_in_env_steps(state) and name; options are
# estimator-specific switches such as loss_normalize.
ESTIMATORS = {
    "fulles": _without_noise_period(_build_fulles, "fulles"),
    "tes": _without_noise_period(tes, "tes"),
    "pes": _without_noise_period(pes, "pes"),
    "gpes": _build_gpes,
    "nres": _without_noise_period(nres, "nres"),
}
ESTIMATORS.update(AUTODIFF_ESTIMATORS)  # autodiff baselines (SPEC section 3): bptt, tbptt, uoro, dodge


def estimator_names() -> tuple[str, ...]:
    return tuple(ESTIMATORS)


def make_estimator(
    name: str,
    task: Task,
    *,
    num_particles: int,
    unroll_length: int,
    sigma: float,
    noise_period: Optional[int] = None,
    **options,
):
    """Build an estimator by name (a key of :data:`ESTIMATORS`)."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name](
        task, num_particles=num_particles, unroll_length=unroll_length, sigma=sigma, noise_period=noise_period,
        **options,
    )


__all__ = [
    "ESTIMATORS",
    "ES_ESTIMATORS",
    "OnlineES",
    "OnlineESState",
    "WindowInfo",
    "estimator_names",
    "fulles",
    "gpes",
    "make_estimator",
    "nres",
    "pes",
    "tes",
]

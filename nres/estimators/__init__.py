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

Every constructor (:data:`CONSTRUCTORS`) takes the core keywords ``num_particles``,
``unroll_length``, ``sigma`` and ``noise_period``; one that does not apply to the method
is a ``ValueError`` naming it, unless its value is what the method does anyway
(``unroll_length=T`` for ``fulles``/``bptt``, ``noise_period=W`` for ``pes``, ``K >= T``
for ``nres``/``fulles``). :func:`make_estimator` (the command line's route) instead
drops the settings a training config always carries that the method has no use for.
"""

from __future__ import annotations

from typing import Optional

from nres.estimators.autodiff import bptt, dodge, tbptt, uoro
from nres.estimators.base import WindowInfo, reject_keyword
from nres.estimators.online_es import OnlineES, OnlineESState
from nres.task import Task

_ONLY_GPES = "a chosen noise period K applies only to 'gpes' (and 'dodge')"


def gpes(task: Task, num_particles: int, unroll_length: int, sigma: float, noise_period: Optional[int] = None,
         **options) -> OnlineES:
    """Generalised PES: fresh noise every ``K = noise_period`` steps, accumulated."""
    if noise_period is None:
        raise ValueError("estimator 'gpes' needs noise_period (K)")
    return OnlineES(task, num_particles, unroll_length, sigma, noise_period, name="gpes", **options)


def pes(task: Task, num_particles: int, unroll_length: int, sigma: float, *, noise_period: Optional[int] = None,
        **options) -> OnlineES:
    """Persistent ES (Vicol et al. 2021) = GPES with ``K = W`` (``noise_period``, if
    given, must be ``W``)."""
    reject_keyword("pes", "noise_period", noise_period, f"PES draws a fresh noise every window (K = W); "
                   f"{_ONLY_GPES}", fits=lambda k: k == unroll_length)
    return OnlineES(task, num_particles, unroll_length, sigma, unroll_length, name="pes", **options)


def nres(task: Task, num_particles: int, unroll_length: int, sigma: float, *, noise_period: Optional[int] = None,
         **options) -> OnlineES:
    """Noise-Reuse ES = GPES with ``K >= T``: one noise per episode (``noise_period``, if
    given, must be ``>= T``)."""
    reject_keyword("nres", "noise_period", noise_period, f"NRES draws one noise per episode (K >= T={task.horizon}); "
                   f"{_ONLY_GPES}", fits=lambda k: k >= task.horizon)
    return OnlineES(task, num_particles, unroll_length, sigma, task.horizon, name="nres", **options)


def fulles(task: Task, num_particles: int, sigma: Optional[float] = None, *, unroll_length: Optional[int] = None,
           noise_period: Optional[int] = None, **options) -> OnlineES:
    """Offline ES: every pair unrolls a whole episode from ``tau = 0`` (``W = T``;
    ``unroll_length``, if given, must be ``T``, ``noise_period`` ``>= T``)."""
    if sigma is None:
        raise ValueError("estimator 'fulles' needs sigma")
    reject_keyword("fulles", "unroll_length", unroll_length,
                   f"FullES unrolls whole episodes, W = T = {task.horizon}", fits=lambda w: w == task.horizon)
    reject_keyword("fulles", "noise_period", noise_period, f"FullES draws one noise per episode (K >= T="
                   f"{task.horizon}); {_ONLY_GPES}", fits=lambda k: k >= task.horizon)
    return OnlineES(task, num_particles, task.horizon, sigma, task.horizon, step_unlocked=False, name="fulles",
                    **options)


def tes(task: Task, num_particles: int, unroll_length: int, sigma: float, *, noise_period: Optional[int] = None,
        **options) -> OnlineES:
    """Truncated ES (biased): fresh noise every window, no memory of earlier noise."""
    reject_keyword("tes", "noise_period", noise_period, f"TES keeps no memory of earlier noise; {_ONLY_GPES}")
    return OnlineES(task, num_particles, unroll_length, sigma, None, name="tes", **options)


ES_ESTIMATORS = ("fulles", "tes", "pes", "gpes", "nres")

# Every public constructor, by name: ``constructor(task, num_particles=..., unroll_length=...,
# sigma=..., noise_period=..., **options)`` with the keywords that apply to it.
CONSTRUCTORS = {"fulles": fulles, "tes": tes, "pes": pes, "gpes": gpes, "nres": nres,
                "bptt": bptt, "tbptt": tbptt, "uoro": uoro, "dodge": dodge}

# Settings a training config always carries that an estimator has no use for (the
# command line's W for the whole-episode methods, its sigma for the autodiff ones).
_UNUSED_SETTINGS = {"fulles": ("unroll_length",), "bptt": ("unroll_length", "sigma"),
                    **{name: ("sigma",) for name in ("tbptt", "uoro", "dodge")}}


def unused_settings(name: str) -> tuple[str, ...]:
    """The training settings estimator ``name`` has no use for (``fulles``: ``unroll_length``,
    it unrolls whole episodes; the autodiff methods: ``sigma``, they perturb nothing)."""
    return _UNUSED_SETTINGS.get(name, ())


def _from_settings(name: str):
    def build(task, *, num_particles, unroll_length, sigma, noise_period, **options):
        settings = dict(num_particles=num_particles, unroll_length=unroll_length, sigma=sigma,
                        noise_period=noise_period)
        for keyword in _UNUSED_SETTINGS.get(name, ()):
            del settings[keyword]
        return CONSTRUCTORS[name](task, **settings, **options)

    return build


# name -> builder(task, *, num_particles, unroll_length, sigma, noise_period, **options).
# Every estimator built here has start/init/estimate, env_steps_per_update,
# sequential_steps_per_update, burn_in_env_steps(state) and name; options are
# estimator-specific switches such as loss_normalize.
ESTIMATORS = {name: _from_settings(name) for name in CONSTRUCTORS}


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
    "CONSTRUCTORS",
    "ESTIMATORS",
    "ES_ESTIMATORS",
    "OnlineES",
    "OnlineESState",
    "WindowInfo",
    "bptt",
    "dodge",
    "estimator_names",
    "fulles",
    "gpes",
    "make_estimator",
    "nres",
    "pes",
    "tbptt",
    "tes",
    "unused_settings",
    "uoro",
]

"""What every gradient estimator returns besides its gradient, and config checks."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from nres.particles import burn_in, unlocked_windows
from nres.task import validate_task


class WindowInfo(NamedTuple):
    """Per-update diagnostics, all JAX scalars.

    ``train_loss``: mean per-step loss over the window's particles and steps.
    ``num_nonfinite``: particles whose loss turned non-finite in this window; when it is
    positive the gradient must not be applied (the training loop skips the update).
    ``env_steps``: int32, environment steps really taken in the window: the estimator's
    ``env_steps_per_update`` unless trajectories ended early (the task's ``done``; the
    steps a finished trajectory idles to the window's end are not counted).
    """

    train_loss: jax.Array
    num_nonfinite: jax.Array
    env_steps: Optional[jax.Array] = None


@runtime_checkable
class Estimator(Protocol):
    """What the training step and the engines need of every gradient estimator.

    ``start(key, theta) -> (state, hold)``: the state with every pair at ``tau = 0`` and
    each pair's burn-in windows ``hold`` ``[N]`` int32; ``estimate(state, theta,
    burn_in=False) -> (grad, state, WindowInfo)``: one window (``grad`` shaped like
    ``theta``); ``burn_in_env_steps(state)``: the environment steps the burn-in took;
    ``env_steps_per_update`` and ``sequential_steps_per_update``: what one update costs.
    """

    name: str
    num_particles: int
    unroll_length: int
    env_steps_per_update: int
    sequential_steps_per_update: int

    def start(self, key: jax.Array, theta) -> tuple[Any, jax.Array]: ...

    def estimate(self, state, theta, burn_in=False) -> tuple[Any, Any, WindowInfo]: ...

    def burn_in_env_steps(self, state) -> int: ...


@runtime_checkable
class WindowEstimator(Estimator, Protocol):
    """An estimator whose window reduces to per-pair scalars (the ES family): engines that
    run windows elsewhere ship only those scalars.

    ``window(state, theta, burn_in=False) -> (WindowScalars, state)`` runs the pairs of
    ``state`` (any slice of the population); ``gradient(scalars, theta, weights=None) ->
    (grad, WindowInfo)`` rebuilds the gradient from all ``N`` pairs' scalars.
    ``window_aligned``: windows start at multiples of ``W`` (what those engines need;
    ``not_aligned_message(what)`` says why not).
    """

    window_aligned: bool

    def window(self, state, theta, burn_in=False) -> tuple[Any, Any]: ...

    def gradient(self, scalars, theta, weights: Optional[Any] = None) -> tuple[Any, WindowInfo]: ...

    def not_aligned_message(self, what: str) -> str: ...


class Unrolled:
    """Start and burn-in shared by every estimator (fields ``task``, ``num_particles``,
    ``unroll_length``, ``step_unlocked``; methods ``start`` and ``estimate``).

    ``start(key, theta) -> (state, hold)`` gives the state with every pair at ``tau = 0``
    and the burn-in windows ``hold`` ``[N]`` each pair runs to reach its step-unlocked
    position ``tau_i = hold[i] W`` (:func:`nres.particles.burn_in_select`);
    :meth:`init` runs them.
    """

    def burn_in_windows(self, key: jax.Array) -> jax.Array:
        if not self.step_unlocked:
            return jnp.zeros((self.num_particles,), jnp.int32)
        return unlocked_windows(key, self.num_particles, self.task.horizon, self.unroll_length)

    def init(self, key: jax.Array, theta):
        """The state after the burn-in: pairs at step-unlocked positions reached by really
        unrolling under ``theta``."""
        state, hold = self.start(key, theta)
        return burn_in(self.estimate, state, theta, hold, self.unroll_length)


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_positive_float(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number


def check_window(task, num_particles, unroll_length) -> None:
    """Validate a task and the ``N``/``W`` every estimator shares (``0 < W <= T``)."""
    validate_task(task)
    check_positive_int("num_particles (N)", num_particles)
    check_positive_int("unroll_length (W)", unroll_length)
    if unroll_length > task.horizon:
        raise ValueError(f"unroll_length (W) must not exceed the horizon T={task.horizon}, got {unroll_length}")


def reject_keyword(estimator: str, keyword: str, value, why: str, fits=lambda value: False) -> None:
    """Raise a ``ValueError`` naming ``keyword`` when it was given (not None) to an
    estimator it does not apply to, unless ``fits(value)``: the value agrees with what
    the estimator does anyway (e.g. ``unroll_length=T`` for FullES)."""
    if value is not None and not fits(value):
        raise ValueError(f"{keyword}={value!r} does not apply to {estimator!r}: {why}")

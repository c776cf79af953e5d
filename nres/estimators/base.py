"""What every gradient estimator returns besides its gradient, and config checks."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from nres.particles import burn_in, unlocked_windows
from nres.task import validate_task


class WindowInfo(NamedTuple):
    """Per-update diagnostics, all JAX scalars.

    ``train_loss``: mean per-step loss over the window's particles and steps.
    ``num_nonfinite``: particles whose loss turned non-finite in this window; when it is
    positive the gradient must not be applied (the training loop skips the update).
    """

    train_loss: jax.Array
    num_nonfinite: jax.Array


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

"""The task API: one unrolled computation graph, written for a single trajectory.

A task describes one episode ``s_0 -> s_1 -> ... -> s_T`` of SPEC section 1:

* ``init_state(key) -> s_0``: the inner state at the start of an episode.
* ``step(theta, state, t, key, batch) -> s_{t+1}``: one inner step under ``theta``
  (``t`` is the 0-based index of the step being taken, an int32 scalar).
* ``loss(theta, state, t, batch) -> L_{t+1}``: the per-step loss of the state that
  step ``t`` produced (a float scalar).
* ``horizon``: the episode length ``T``; after ``T`` steps the library re-initialises.
* ``sample_batch(key, t) -> batch`` (optional): the data of step ``t``. The library
  draws it once per antithetic pair, so ``theta + eps`` and ``theta - eps`` see the
  same data, and passes it to both ``step`` and ``loss``.
* ``window_batches(keys, t0, length) -> batches`` (optional, with ``sample_batch``): the
  batches of ``length`` consecutive steps ``t0 .. t0 + length - 1`` at once, stacked on a
  leading ``[length]`` axis; ``keys`` ``[length, 2]`` are those steps' batch keys. It must
  equal stacking ``sample_batch(keys[s], t0 + s)`` exactly. Window-aligned estimators
  then draw each particle's data once per window instead of once per step (cheaper
  when every particle sits at its own step ``t``, e.g. a lookup in a fixed table).
* ``init_theta(key) -> theta``: the starting meta-parameters (any pytree).
* ``evaluate(theta, key) -> dict`` (optional): held-out metrics of an unperturbed
  ``theta`` such as ``{"test_loss": ...}``.

Everything is written for one trajectory; the library vectorises it over particles
with ``jax.vmap`` and compiles whole truncation windows with ``lax.scan``, so every
function must be a pure JAX function of its arguments.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax

from nres.tree import PyTree

Batch = Any


class Task(NamedTuple):
    """An unrolled computation graph (see the module docstring for each field)."""

    init_theta: Callable[[jax.Array], PyTree]
    init_state: Callable[[jax.Array], PyTree]
    step: Callable[[PyTree, PyTree, jax.Array, jax.Array, Batch], PyTree]
    loss: Callable[[PyTree, PyTree, jax.Array, Batch], jax.Array]
    horizon: int
    sample_batch: Optional[Callable[[jax.Array, jax.Array], Batch]] = None
    evaluate: Optional[Callable[[PyTree, jax.Array], Mapping[str, jax.Array]]] = None
    name: str = "task"
    window_batches: Optional[Callable[[jax.Array, jax.Array, int], Batch]] = None

    def batch(self, key: jax.Array, t: jax.Array) -> Batch:
        """The data batch of step ``t`` (``None`` for data-free tasks)."""
        return None if self.sample_batch is None else self.sample_batch(key, t)


def validate_task(task: Task) -> Task:
    """Check the static parts of a task and return it unchanged."""
    if not isinstance(task, Task):
        raise TypeError(f"expected an nres.Task, got {type(task).__name__}")
    if not isinstance(task.horizon, int) or isinstance(task.horizon, bool) or task.horizon <= 0:
        raise ValueError(f"task horizon T must be a positive int, got {task.horizon!r}")
    for field in ("init_theta", "init_state", "step", "loss"):
        if not callable(getattr(task, field)):
            raise TypeError(f"task field {field!r} must be callable")
    if task.window_batches is not None and task.sample_batch is None:
        raise TypeError("task field 'window_batches' needs 'sample_batch' (the per-step form of the same data)")
    return task

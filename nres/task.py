"""The task API: one unrolled computation graph, written for a single trajectory.

A task describes one episode ``s_0 -> s_1 -> ... -> s_T`` of SPEC section 1:

* ``init_state(key) -> s_0``: the inner state at the start of an episode.
* ``step(theta, state, t, key, batch) -> s_{t+1}``: one inner step under ``theta``
  (``t`` is the 0-based index of the step being taken, an int32 scalar).
* ``loss(theta, state, t, batch) -> L_{t+1}``: the per-step loss of the state that
  step ``t`` produced (a float scalar).
* ``horizon``: the episode length ``T``; after ``T`` steps the library re-initialises.
* ``done(state) -> bool`` (optional; default: never): early termination. True when the
  trajectory that reached ``state`` has ended (a robot fell): the loss of the step that
  reached it still counts; from then on the trajectory is not stepped and its losses
  are zero, and the episode ends as at ``T`` once both members of an antithetic pair
  are done (:mod:`nres.particles`). An episode's initial state must not be done. A task
  that needs ``t`` or a step count to decide keeps it in its state.
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
  ``theta`` such as ``{"test_loss": ...}`` (``evaluate(theta, key, shared)`` for a task
  with ``shared``).
* ``shared`` (optional, a :class:`Shared`): state of the task that every trajectory
  reads but that is neither perturbed nor trained, e.g. running observation statistics.
  The library keeps it beside theta (:attr:`nres.step.Learner.shared`, checkpointed),
  installs it in every trajectory's state before each window and updates it once per
  update, between windows, from the states the window ended in (:mod:`nres.shared`).

Everything is written for one trajectory; the library vectorises it over particles
with ``jax.vmap`` and compiles whole truncation windows with ``lax.scan``, so every
function must be a pure JAX function of its arguments.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp

from nres.tree import PyTree

Batch = Any


class Shared(NamedTuple):
    """A task's shared, untrained state ``S`` (any pytree of arrays of fixed shapes).

    * ``init() -> S``: its value before training.
    * ``install(S, state) -> state``: one trajectory's inner state reading ``S`` (the
      task's ``step`` must take what it reads of ``S`` from its state and carry it on).
    * ``update(S, states, live) -> S``: ``S`` after a window, from the inner states
      ``[M, N, ...]`` the window's trajectories ended in; ``live`` bool ``[M, N]`` marks
      those that have not ended early (None: all).

    All three are pure JAX functions; they run inside the compiled update.
    """

    init: Callable[[], PyTree]
    install: Callable[[PyTree, PyTree], PyTree]
    update: Callable[[PyTree, PyTree, Optional[jax.Array]], PyTree]


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
    done: Optional[Callable[[PyTree], jax.Array]] = None
    shared: Optional[Shared] = None

    def batch(self, key: jax.Array, t: jax.Array) -> Batch:
        """The data batch of step ``t`` (``None`` for data-free tasks)."""
        return None if self.sample_batch is None else self.sample_batch(key, t)


class TaskShapeError(ValueError):
    """A task function returned the wrong structure, shape or dtype (one-line message)."""


def validate_task(task: Task) -> Task:
    """Check the static parts of a task and its shapes (:func:`check_shapes`); return it unchanged."""
    if not isinstance(task, Task):
        raise TypeError(f"expected an nres.Task, got {type(task).__name__}")
    if not isinstance(task.horizon, int) or isinstance(task.horizon, bool) or task.horizon <= 0:
        raise ValueError(f"task horizon T must be a positive int, got {task.horizon!r}")
    for field in ("init_theta", "init_state", "step", "loss"):
        if not callable(getattr(task, field)):
            raise TypeError(f"task field {field!r} must be callable")
    if task.done is not None and not callable(task.done):
        raise TypeError("task field 'done' must be callable or None")
    if task.shared is not None and not isinstance(task.shared, Shared):
        raise TypeError("task field 'shared' must be an nres.task.Shared or None")
    if task.window_batches is not None and task.sample_batch is None:
        raise TypeError("task field 'window_batches' needs 'sample_batch' (the per-step form of the same data)")
    check_shapes(task)
    return task


_CHECKED: set = set()


def _describe(tree) -> str:
    """``float32[3]`` for one array, ``{path: dtype[shape], ...}`` for a pytree."""
    short = lambda v: f"{jnp.dtype(v.dtype).name}[{','.join(str(n) for n in v.shape)}]"
    if jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(tree)) and tree is not None:
        return short(tree)
    return "{" + ", ".join(f"{jax.tree_util.keystr(k)}: {short(v)}"
                           for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]) + "}"


def check_shapes(task: Task) -> None:
    """Trace each task function once with ``jax.eval_shape`` (nothing runs or compiles).

    Checks that ``init_theta`` gives floating leaves, ``step`` returns the structure,
    shapes and dtypes of ``init_state``, and ``loss`` returns a float scalar. A mismatch
    (or an error while tracing) raises :class:`TaskShapeError` with one line naming the
    function and what it returned. Each task is checked once per process.
    """
    try:
        if task in _CHECKED:
            return
    except TypeError:  # an unhashable field: check every time
        pass
    name = f"task {task.name!r}"
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    t = jax.ShapeDtypeStruct((), jnp.int32)

    def trace(function: str, *args):
        try:
            return jax.eval_shape(getattr(task, function), *args)
        except TaskShapeError:
            raise
        except Exception as err:  # tracing errors are the user's bug; keep the first line
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise TaskShapeError(f"{name}: {function} failed when traced with the shapes of the other task "
                                 f"functions: {type(err).__name__}: {first}") from None

    theta = trace("init_theta", key)
    bad = [v for v in jax.tree_util.tree_leaves(theta) if not jnp.issubdtype(v.dtype, jnp.floating)]
    if not jax.tree_util.tree_leaves(theta) or bad:
        raise TaskShapeError(f"{name}: init_theta returned {_describe(theta)}; theta needs floating-point leaves")
    state = trace("init_state", key)
    batch = trace("sample_batch", key, t) if task.sample_batch is not None else None
    new_state = trace("step", theta, state, t, key, batch)
    spec = lambda tree: (jax.tree_util.tree_structure(tree),
                         [(v.shape, jnp.dtype(v.dtype)) for v in jax.tree_util.tree_leaves(tree)])
    if spec(new_state) != spec(state):
        raise TaskShapeError(f"{name}: step returned {_describe(new_state)}, but init_state gives "
                             f"{_describe(state)}; step must return a state of the same structure, shapes and dtypes")
    loss = trace("loss", theta, new_state, t, batch)
    leaves = jax.tree_util.tree_leaves(loss)
    if (len(leaves) != 1 or leaves[0].shape != () or not jnp.issubdtype(leaves[0].dtype, jnp.floating)
            or not jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(loss))):
        raise TaskShapeError(f"{name}: loss returned {_describe(loss)}; it must return a float scalar (shape ())")
    if task.done is not None:
        done = trace("done", state)
        leaves = jax.tree_util.tree_leaves(done)
        if len(leaves) != 1 or leaves[0].shape != () or leaves[0].dtype != jnp.bool_:
            raise TaskShapeError(f"{name}: done returned {_describe(done)}; it must return a bool scalar (shape ())")
    try:
        _CHECKED.add(task)
    except TypeError:
        pass


def theta_size(task: Task) -> int:
    """``d``: the number of scalars in ``theta`` (shapes only; nothing runs or compiles)."""
    shapes = jax.eval_shape(task.init_theta, jax.ShapeDtypeStruct((2,), jnp.uint32))
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes))

"""The outer optimiser, with its learning rate and schedule as data.

The learning rate, the piecewise schedule's decay factor and its boundaries are not
baked into the compiled programs: they live in the optimiser state (optax's
``inject_hyperparams``), so runs that differ only in them share their compiled
programs (a learning-rate sweep compiles once), with the same bits as constants would
give. What stays structure: the optimiser (``sgd`` or ``adam``), global-norm clipping
and the *number* of schedule boundaries.

* :func:`schedule`: ``count -> learning rate`` of ``lr``, ``decay`` and ``boundaries``.
* :func:`outer_optimizer`: the optax transformation (hyperparameters injected).
* :func:`hyperparameters`: a config's values, as the arrays the state holds.
* :func:`with_hyperparameters`: an optimiser state with those values put in.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax.numpy as jnp
import numpy as np
import optax

from nres.config import OPTIMIZERS

HYPERPARAMETERS = ("lr", "lr_decay", "lr_boundaries")  # config settings held as data


def schedule(lr, lr_decay, lr_boundaries) -> Callable[[Any], Any]:
    """``count -> lr * lr_decay ** (number of boundaries <= count)``, as optax's
    ``piecewise_constant_schedule`` computes it (same operations, same order, so the same
    bits whether the values are constants or arrays). ``lr_boundaries``: ``[k]`` int32,
    ascending (``k`` static); ``k = 0`` is a constant learning rate."""

    def value(count):
        v = lr
        for i in range(len(lr_boundaries)):
            indicator = jnp.maximum(0.0, jnp.sign(lr_boundaries[i] - count))
            v = v * indicator + (1 - indicator) * lr_decay * v
        return v

    return value


def _transformation(name: str, grad_clip: Optional[float]) -> Callable[..., optax.GradientTransformation]:
    def build(lr, lr_decay, lr_boundaries) -> optax.GradientTransformation:
        rate = schedule(lr, lr_decay, lr_boundaries)
        base = optax.sgd(rate) if name == "sgd" else optax.adam(rate)
        return base if grad_clip is None else optax.chain(optax.clip_by_global_norm(grad_clip), base)

    return build


def hyperparameters(lr: float, lr_decay: float = 0.1, lr_boundaries: Sequence[int] = ()) -> dict:
    """The values the optimiser state holds: ``lr`` and ``lr_decay`` float32 scalars,
    ``lr_boundaries`` int32 ``[k]``."""
    return {"lr": np.asarray(lr, np.float32), "lr_decay": np.asarray(lr_decay, np.float32),
            "lr_boundaries": np.asarray(tuple(lr_boundaries), np.int32)}


def outer_optimizer(name: str, lr: float, lr_decay: float = 0.1, lr_boundaries: Sequence[int] = (),
                    grad_clip: Optional[float] = None) -> optax.GradientTransformation:
    """``name`` (``sgd`` or ``adam``) on the schedule of ``lr``, ``lr_decay`` and
    ``lr_boundaries`` (updates), after optional global-norm clipping to ``grad_clip``.

    Its state holds the three values (``state.hyperparams``); ``init`` puts in the ones
    given here, and :func:`with_hyperparameters` replaces them, so a compiled ``init``
    serves every value."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    injected = optax.inject_hyperparams(_transformation(name, grad_clip))
    return injected(**hyperparameters(lr, lr_decay, lr_boundaries))


def with_hyperparameters(opt_state, values: Optional[dict]):
    """``opt_state`` of :func:`outer_optimizer` holding ``values`` (a dict as from
    :func:`hyperparameters`, arrays or tracers) instead of the ones it was made with;
    any other optax state is returned as it is (``values`` must then be None)."""
    if values is None:
        return opt_state
    held = opt_state.hyperparams
    if set(values) != set(held):
        raise ValueError(f"hyperparameters {sorted(values)} do not match the optimiser's {sorted(held)}")
    return opt_state._replace(hyperparams={k: jnp.asarray(values[k], held[k].dtype).reshape(held[k].shape)
                                           for k in held})

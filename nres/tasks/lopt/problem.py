"""The inner problem: training a classifier on device-resident images with any update rule.

An :class:`InnerProblem` holds the dataset as device arrays (closure constants of every
compiled function that uses them), the inner model and the outer loss. Inner
parameters are one flat vector ``params [P]``; ``sizes`` lists the sizes of the
model's tensors in that vector (what the learned optimizer normalises over).

An *inner optimizer* (:class:`InnerOptimizer`) is any update rule on flat parameters:
the learned optimizer under some ``theta`` (:mod:`nres.tasks.lopt.task`) or a
hand-designed optax rule (:mod:`nres.tasks.lopt.baselines`). One inner step draws a
:class:`Batch`, takes the gradient of the mean cross-entropy on its training half and
applies the optimizer; the outer loss of that step is measured on its outer half (a
batch of the validation split during meta-training, of the test split in evaluation).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from nres.tasks.lopt.datasets import ImageDataset
from nres.tasks.lopt.inner_models import OUTER_LOSSES, InnerModel, cross_entropy

_INIT, _BATCH = 0, 1
EVAL_CHUNK = 1000  # test-set images per forward pass in test_accuracy


class Batch(NamedTuple):
    """Images ``uint8 [B, S, S, C]`` and labels ``int32 [B]``: inner-training half, outer half."""

    train_images: jax.Array
    train_labels: jax.Array
    outer_images: jax.Array
    outer_labels: jax.Array


class InnerOptimizer(NamedTuple):
    """``init(params [P]) -> opt_state``; ``update(opt_state, params, grad) -> (params, opt_state)``."""

    init: Callable[[jax.Array], Any]
    update: Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]


class InnerState(NamedTuple):
    """Flat inner parameters ``[P]`` and the inner optimizer's state."""

    params: jax.Array
    opt_state: Any


@dataclasses.dataclass(frozen=True, eq=False)
class InnerProblem:
    """A dataset (on device), an inner model, the batch size and the outer loss's name."""

    dataset: ImageDataset
    model: InnerModel
    batch_size: int
    outer_loss_name: str = "ce"

    def __post_init__(self):
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.outer_loss_name not in OUTER_LOSSES:
            raise ValueError(f"unknown outer_loss {self.outer_loss_name!r}; choose one of {', '.join(OUTER_LOSSES)}")
        arrays = {f: jnp.asarray(getattr(self.dataset, f)) for f in ImageDataset._fields if f != "name"}
        # The parameter layout from shapes alone (nothing runs or compiles): ravel_pytree's
        # unravel depends only on the tree structure, shapes and dtypes, not on values.
        layout = {}

        def flat_params(key):
            params = self.model.init(key)
            layout["sizes"] = tuple(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params))
            flat, layout["unravel"] = ravel_pytree(params)
            return flat

        jax.eval_shape(flat_params, jax.ShapeDtypeStruct((2,), jnp.uint32))
        unravel, sizes = layout["unravel"], layout["sizes"]
        object.__setattr__(self, "arrays", arrays)
        object.__setattr__(self, "unravel", unravel)
        object.__setattr__(self, "sizes", sizes)

    @property
    def num_params(self) -> int:
        """``P``, the inner model's parameter count."""
        return sum(self.sizes)

    def init_params(self, key: jax.Array) -> jax.Array:
        return ravel_pytree(self.model.init(key))[0]

    def logits(self, params: jax.Array, images: jax.Array) -> jax.Array:
        return self.model.apply(self.unravel(params), images.astype(jnp.float32) / 255.0)

    def train_loss(self, params: jax.Array, images: jax.Array, labels: jax.Array) -> jax.Array:
        """Mean cross-entropy of a batch: what the inner optimizer descends."""
        return jnp.mean(cross_entropy(self.logits(params, images), labels))

    def outer_loss(self, params: jax.Array, images: jax.Array, labels: jax.Array) -> jax.Array:
        """The per-step outer loss (``ce``, ``accuracy`` = error rate, or ``clipped_ce``)."""
        return OUTER_LOSSES[self.outer_loss_name](self.logits(params, images), labels)

    def sample_batch(self, key: jax.Array, outer_split: str = "valid") -> Batch:
        """Uniform draws (with replacement) from the training and the ``outer_split`` split."""
        k_train, k_outer = jax.random.split(key)
        train_x, train_y = self.arrays["train_images"], self.arrays["train_labels"]
        outer_x, outer_y = self.arrays[f"{outer_split}_images"], self.arrays[f"{outer_split}_labels"]
        i = jax.random.randint(k_train, (self.batch_size,), 0, train_x.shape[0])
        j = jax.random.randint(k_outer, (self.batch_size,), 0, outer_x.shape[0])
        return Batch(train_x[i], train_y[i], outer_x[j], outer_y[j])

    def init_state(self, key: jax.Array, optimizer: InnerOptimizer) -> InnerState:
        params = self.init_params(key)
        return InnerState(params, optimizer.init(params))

    def inner_step(self, optimizer: InnerOptimizer, state: InnerState, batch: Batch) -> InnerState:
        """One inner training step on ``batch``'s training half."""
        grad = jax.grad(self.train_loss)(state.params, batch.train_images, batch.train_labels)
        params, opt_state = optimizer.update(state.opt_state, state.params, grad)
        return InnerState(params, opt_state)

    def test_accuracy(self, params: jax.Array) -> jax.Array:
        """Accuracy on the whole test split (in chunks of ``EVAL_CHUNK`` images)."""
        images, labels = self.arrays["test_images"], self.arrays["test_labels"]
        n = labels.shape[0]
        chunks = -(-n // EVAL_CHUNK)
        pad = chunks * EVAL_CHUNK - n  # padded images get label -1, which no prediction matches
        images = jnp.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1))
        labels = jnp.pad(labels, (0, pad), constant_values=-1)

        def correct(chunk):
            x, y = chunk
            return jnp.sum(jnp.argmax(self.logits(params, x), axis=1) == y)

        chunked = (images.reshape((chunks, EVAL_CHUNK) + images.shape[1:]), labels.reshape(chunks, EVAL_CHUNK))
        return jnp.sum(jax.lax.map(correct, chunked)) / n

    def rollout(self, optimizer: InnerOptimizer, key: jax.Array, horizon: int, outer_split: str = "test") -> dict:
        """A whole inner training run of ``horizon`` steps from an initialisation drawn from ``key``.

        Returns ``{"<outer_split>_loss": mean over steps of the outer loss on batches of
        ``outer_split``, "test_accuracy": accuracy of the final parameters on the test split}``.
        """
        batch_keys = jax.random.fold_in(key, _BATCH)

        def body(state, t):
            batch = self.sample_batch(jax.random.fold_in(batch_keys, t), outer_split)
            state = self.inner_step(optimizer, state, batch)
            return state, self.outer_loss(state.params, batch.outer_images, batch.outer_labels)

        state, losses = jax.lax.scan(body, self.init_state(jax.random.fold_in(key, _INIT), optimizer),
                                     jnp.arange(horizon))
        return {f"{outer_split}_loss": jnp.mean(losses), "test_accuracy": self.test_accuracy(state.params)}


def mean_rollout(problem: InnerProblem, optimizer: InnerOptimizer, key: jax.Array, horizon: int,
                 num_runs: int, outer_split: str = "test") -> dict:
    """Metrics of :meth:`InnerProblem.rollout` averaged over ``num_runs`` runs (vmapped over seeds)."""
    rollout = lambda k: problem.rollout(optimizer, k, horizon, outer_split)
    runs = jax.vmap(rollout)(jax.random.split(key, num_runs))
    return {name: jnp.mean(value) for name, value in runs.items()}

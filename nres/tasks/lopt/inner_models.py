"""The inner models a learned optimizer trains (SPEC section 6), and their losses.

An :class:`InnerModel` maps images ``float32 [B, S, S, C]`` (pixels in ``[0, 1]``) to
logits ``[B, 10]``. Its parameters are a pytree (``init(key)``); the task keeps them as
one flat vector, see :mod:`nres.tasks.lopt.problem`.

* :func:`mlp`: flatten, then dense layers of ``hidden_sizes`` with ``activation``, then a
  linear layer to 10 logits (default 32-32-32 GELU).
* :func:`cnn`: per entry of ``channels``: 3x3 convolution (stride 1, SAME padding),
  ReLU, 2x2 average pooling with stride 2 (SAME padding, so a 1x1 map stays 1x1);
  then flatten and a linear layer to 10 logits (default 4 x 32 channels).

Weights are drawn from a truncated normal with std ``1/sqrt(fan_in)``; biases are zero.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "gelu": jax.nn.gelu,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "swish": jax.nn.swish,
}
NUM_CLASSES = 10
CLIP_CE = 1.5 * math.log(NUM_CLASSES)  # per-example cross-entropy clip of the CIFAR setting


class InnerModel(NamedTuple):
    """``init(key) -> params`` and ``apply(params, images [B, S, S, C]) -> logits [B, 10]``."""

    init: Callable[[jax.Array], dict]
    apply: Callable[[dict, jax.Array], jax.Array]
    name: str


def _dense_init(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    return jax.random.truncated_normal(key, -2.0, 2.0, shape) / jnp.sqrt(fan_in)


def mlp(image_shape: Sequence[int], hidden_sizes: Sequence[int] = (32, 32, 32), activation: str = "gelu") -> InnerModel:
    """A fully connected classifier on flattened images."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    if any(h <= 0 for h in hidden_sizes):
        raise ValueError(f"hidden sizes must be positive, got {list(hidden_sizes)}")
    act = ACTIVATIONS[activation]
    sizes = (math.prod(image_shape),) + tuple(hidden_sizes) + (NUM_CLASSES,)

    def init(key):
        params = {}
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            key, sub = jax.random.split(key)
            params[f"layer{i}"] = {"w": _dense_init(sub, (fan_in, fan_out), fan_in), "b": jnp.zeros((fan_out,))}
        return params

    def apply(params, images):
        x = images.reshape(images.shape[0], -1)
        for i in range(len(sizes) - 1):
            layer = params[f"layer{i}"]
            x = x @ layer["w"] + layer["b"]
            if i < len(sizes) - 2:
                x = act(x)
        return x

    return InnerModel(init, apply, f"mlp{'-'.join(map(str, hidden_sizes))}-{activation}")


def _avg_pool(x: jax.Array) -> jax.Array:
    """2x2 average pooling, stride 2, SAME padding (padded cells do not count)."""
    window, strides = (1, 2, 2, 1), (1, 2, 2, 1)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, "SAME")
    count = jax.lax.reduce_window(jnp.ones_like(x[:1, ..., :1]), 0.0, jax.lax.add, window, strides, "SAME")
    return total / count


def cnn(image_shape: Sequence[int], channels: Sequence[int] = (32, 32, 32, 32)) -> InnerModel:
    """Blocks of [3x3 conv, ReLU, 2x2 avg-pool], then a linear layer (SPEC's CIFAR-10 CNN)."""
    if any(c <= 0 for c in channels):
        raise ValueError(f"conv channels must be positive, got {list(channels)}")
    height, width, in_channels = image_shape
    for _ in channels:
        height, width = -(-height // 2), -(-width // 2)
    flat = height * width * (channels[-1] if channels else in_channels)
    dims = ("NHWC", "HWIO", "NHWC")

    def init(key):
        params, c_in = {}, in_channels
        for i, c_out in enumerate(channels):
            key, sub = jax.random.split(key)
            params[f"conv{i}"] = {"w": _dense_init(sub, (3, 3, c_in, c_out), 9 * c_in), "b": jnp.zeros((c_out,))}
            c_in = c_out
        key, sub = jax.random.split(key)
        params["out"] = {"w": _dense_init(sub, (flat, NUM_CLASSES), flat), "b": jnp.zeros((NUM_CLASSES,))}
        return params

    def apply(params, images):
        x = images
        for i in range(len(channels)):
            layer = params[f"conv{i}"]
            x = jax.lax.conv_general_dilated(x, layer["w"], (1, 1), "SAME", dimension_numbers=dims) + layer["b"]
            x = _avg_pool(jax.nn.relu(x))
        x = x.reshape(x.shape[0], -1)
        return x @ params["out"]["w"] + params["out"]["b"]

    return InnerModel(init, apply, f"cnn{'-'.join(map(str, channels))}")


# -- losses: logits [B, 10], labels int [B] -> scalar -----------------------------------
def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy ``[B]`` (natural log)."""
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)[:, 0]


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits, axis=1) == labels)


OUTER_LOSSES = {
    "ce": lambda logits, labels: jnp.mean(cross_entropy(logits, labels)),
    "accuracy": lambda logits, labels: 1.0 - accuracy(logits, labels),  # error rate: a loss to minimise
    "clipped_ce": lambda logits, labels: jnp.mean(jnp.minimum(cross_entropy(logits, labels), CLIP_CE)),
}

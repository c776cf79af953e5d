"""The per-parameter MLP learned optimizer of SPEC section 6 (``theta``, d = 1762).

The inner model's parameters are handled as one flat vector ``p`` of ``P`` scalars,
made of tensors whose sizes ``sizes`` (a static tuple summing to ``P``) say where each
tensor starts and ends. Per step, with gradient ``g`` and the step count ``t`` (the
number of updates taken so far, starting at 0):

1. momenta ``m_k <- beta_k m_k + (1 - beta_k) g`` for ``beta`` in :data:`DECAYS`
   (code: ``momenta [P, 6]``);
2. features (19 per parameter, :func:`features`): ``g``, ``p`` and the 6 momenta, each
   normalised per tensor by ``x / sqrt(1e-5 + mean_tensor x^2)``, then the 11 time
   features ``tanh(t / tau - 1)`` for ``tau`` in :data:`TIMESCALES`;
3. an MLP 19 -> 32 -> 32 -> 2 (ReLU) gives ``(dir, mag)`` per parameter;
4. ``p <- p - 0.001 * dir * exp(0.001 * mag)``.

``theta = {"w1": [19, 32], "b1": [32], "w2": [32, 32], "b2": [32], "w3": [32, 2],
"b3": [2]}``: 608 + 32 + 1024 + 32 + 64 + 2 = 1762 scalars.

The time features are the same for every parameter, so :func:`update` applies the
first layer to them once per step (``time @ w1[8:] + b1``) instead of once per
parameter; the result equals ``mlp(theta, features(...))`` exactly in real arithmetic.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

DECAYS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5)
NUM_TENSOR_FEATURES = 2 + len(DECAYS)  # g, p and the momenta: normalised per tensor
NUM_FEATURES = NUM_TENSOR_FEATURES + len(TIMESCALES)  # 19
HIDDEN_SIZES = (32, 32)
NUM_OUTPUTS = 2  # direction, magnitude
STEP_MULT = 1e-3
EXP_MULT = 1e-3
NORM_EPS = 1e-5


class LOptState(NamedTuple):
    """The optimizer's part of the inner state: ``momenta [P, 6]`` and ``step`` (int32 [])."""

    momenta: jax.Array
    step: jax.Array


def init_theta(key: jax.Array) -> dict:
    """MLP weights ~ truncated normal with std ``1/sqrt(fan_in)``, biases zero."""
    sizes = (NUM_FEATURES,) + HIDDEN_SIZES + (NUM_OUTPUTS,)
    theta = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        key, sub = jax.random.split(key)
        theta[f"w{i}"] = jax.random.truncated_normal(sub, -2.0, 2.0, (fan_in, fan_out)) / jnp.sqrt(fan_in)
        theta[f"b{i}"] = jnp.zeros((fan_out,))
    return theta


def init_state(params: jax.Array) -> LOptState:
    """Zero momenta and step count 0 for flat parameters ``[P]``."""
    return LOptState(jnp.zeros(params.shape + (len(DECAYS),), params.dtype), jnp.zeros((), jnp.int32))


def update_momenta(momenta: jax.Array, grad: jax.Array) -> jax.Array:
    """``m_k <- beta_k m_k + (1 - beta_k) g``; ``momenta [P, 6]``, ``grad [P]``."""
    decays = jnp.asarray(DECAYS, momenta.dtype)
    return decays * momenta + (1.0 - decays) * grad[:, None]


def time_features(step: jax.Array) -> jax.Array:
    """``tanh(t / tau - 1)`` for every timescale ``tau``: shape ``[11]``."""
    return jnp.tanh(jnp.asarray(step, jnp.float32) / jnp.asarray(TIMESCALES, jnp.float32) - 1.0)


def normalize_per_tensor(x: jax.Array, sizes: Sequence[int]) -> jax.Array:
    """``x / sqrt(1e-5 + mean x^2)`` per tensor and column; ``x [P, F]``, ``sum(sizes) == P``."""
    parts, start = [], 0
    for size in sizes:
        block = x[start:start + size]
        parts.append(block * jax.lax.rsqrt(NORM_EPS + jnp.mean(jnp.square(block), axis=0, keepdims=True)))
        start += size
    if start != x.shape[0]:
        raise ValueError(f"tensor sizes {tuple(sizes)} sum to {start}, but there are {x.shape[0]} parameters")
    return jnp.concatenate(parts, axis=0)


def tensor_features(grad: jax.Array, params: jax.Array, momenta: jax.Array, sizes: Sequence[int]) -> jax.Array:
    """The 8 normalised features ``[g, p, m_1..m_6]`` per parameter: ``[P, 8]``."""
    return normalize_per_tensor(jnp.concatenate([grad[:, None], params[:, None], momenta], axis=1), sizes)


def features(grad: jax.Array, params: jax.Array, momenta: jax.Array, step: jax.Array,
             sizes: Sequence[int]) -> jax.Array:
    """All 19 inputs of the MLP per parameter, ``[P, 19]`` (``momenta`` already updated)."""
    per_tensor = tensor_features(grad, params, momenta, sizes)
    time = jnp.broadcast_to(time_features(step), (params.shape[0], len(TIMESCALES)))
    return jnp.concatenate([per_tensor, time], axis=1)


def _hidden_to_output(theta: dict, h1: jax.Array) -> jax.Array:
    h2 = jax.nn.relu(h1 @ theta["w2"] + theta["b2"])
    return h2 @ theta["w3"] + theta["b3"]


def mlp(theta: dict, inputs: jax.Array) -> jax.Array:
    """The MLP on full feature rows: ``[P, 19] -> [P, 2]`` (direction, magnitude)."""
    return _hidden_to_output(theta, jax.nn.relu(inputs @ theta["w1"] + theta["b1"]))


def step_size(outputs: jax.Array) -> jax.Array:
    """The update rule: ``0.001 * dir * exp(0.001 * mag)`` from outputs ``[P, 2]``."""
    return STEP_MULT * outputs[:, 0] * jnp.exp(EXP_MULT * outputs[:, 1])


def update(theta: dict, state: LOptState, params: jax.Array, grad: jax.Array,
           sizes: Sequence[int]) -> tuple[jax.Array, LOptState]:
    """One learned-optimizer step on flat ``params [P]`` with gradient ``grad [P]``."""
    momenta = update_momenta(state.momenta, grad)
    per_tensor = tensor_features(grad, params, momenta, sizes)
    w1 = theta["w1"]
    time_bias = time_features(state.step) @ w1[NUM_TENSOR_FEATURES:] + theta["b1"]  # [32], once per step
    h1 = jax.nn.relu(per_tensor @ w1[:NUM_TENSOR_FEATURES] + time_bias)
    new_params = params - step_size(_hidden_to_output(theta, h1))
    return new_params, LOptState(momenta, state.step + 1)

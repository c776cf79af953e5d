"""Deterministic policies ``action = pi_theta(observation)`` and observation scaling.

* ``linear``: the paper's policy without bias, ``a = M o``; ``theta = {"M": [act, obs]}``.
* ``mlp``: one hidden tanh layer, ``a = W2 tanh(W1 o + b1) + b2``;
  ``theta = {"W1": [h, obs], "b1": [h], "W2": [act, h], "b2": [act]}``.

Initialisation ``zeros`` (the paper's Swimmer start) or ``truncated_normal``: every
entry ``init_scale * z`` with ``z`` a standard normal truncated to ``[-2, 2]`` (the
paper's HalfCheetah start, scale 0.03). All functions act on one observation
``[obs_dim]`` and are vmapped by the library.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from nres.tree import PyTree

POLICIES = ("linear", "mlp")
INITS = ("zeros", "truncated_normal")


@dataclasses.dataclass(frozen=True)
class Policy:
    """A policy architecture over ``obs_dim`` inputs and ``action_dim`` outputs."""

    kind: str
    obs_dim: int
    action_dim: int
    hidden: int = 32
    init: str = "zeros"
    init_scale: float = 0.03

    def __post_init__(self):
        if self.kind not in POLICIES:
            raise ValueError(f"unknown policy {self.kind!r}; choose one of {', '.join(POLICIES)}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose one of {', '.join(INITS)}")
        if not self.init_scale >= 0:
            raise ValueError(f"init_scale must be >= 0, got {self.init_scale!r}")
        if self.kind == "mlp" and self.hidden <= 0:
            raise ValueError(f"hidden must be a positive integer, got {self.hidden!r}")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        o, a, h = self.obs_dim, self.action_dim, self.hidden
        if self.kind == "linear":
            return {"M": (a, o)}
        return {"W1": (h, o), "b1": (h,), "W2": (a, h), "b2": (a,)}

    def init_theta(self, key: jax.Array) -> PyTree:
        """Initial parameters (float32), zeros or scaled truncated normals."""
        shapes = self.shapes()
        keys = jax.random.split(key, len(shapes))
        if self.init == "zeros":
            return {name: jnp.zeros(shape, jnp.float32) for name, shape in shapes.items()}
        return {
            name: self.init_scale * jax.random.truncated_normal(k, -2.0, 2.0, shape, jnp.float32)
            for k, (name, shape) in zip(keys, shapes.items())
        }

    def apply(self, theta: PyTree, obs: jax.Array) -> jax.Array:
        """Action ``[action_dim]`` for one (already scaled) observation ``[obs_dim]``."""
        if self.kind == "linear":
            return theta["M"] @ obs
        hidden = jnp.tanh(theta["W1"] @ obs + theta["b1"])
        return theta["W2"] @ hidden + theta["b2"]


@dataclasses.dataclass(frozen=True, eq=False)
class ObsScaler:
    """``(o - mean) / std`` with fixed statistics (identity when both are None)."""

    mean: object = None
    std: object = None

    def __call__(self, obs: jax.Array) -> jax.Array:
        if self.mean is None:
            return obs
        return (obs - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)

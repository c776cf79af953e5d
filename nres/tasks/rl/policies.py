"""Deterministic policies ``action = pi_theta(observation)`` and observation scaling.

Observation scaling: :class:`ObsScaler` (fixed statistics, or none) or running
statistics (:class:`ObsStats`, merged once per update by :func:`merge_stats` and read
through :func:`stats_scale`).

* ``linear``: the paper's policy without bias, ``a = M o``; ``theta = {"M": [act, obs]}``.
* ``mlp``: one hidden tanh layer, ``a = W2 tanh(W1 o + b1) + b2``;
  ``theta = {"W1": [h, obs], "b1": [h], "W2": [act, h], "b2": [act]}``.

Initialisation: ``zeros`` (the paper's Swimmer start); ``truncated_normal``: every
entry ``init_scale * z`` with ``z`` a standard normal truncated to ``[-2, 2]``;
``variance_scaling``: the reference code's HalfCheetah start (haiku's
``VarianceScaling(init_scale, "fan_in", "truncated_normal")``): every weight
``sqrt(init_scale / fan_in) / 0.8796 * z``, so its variance is ``init_scale / fan_in``
(0.8796 is the std of ``z``), biases zero. All functions act on one observation
``[obs_dim]`` and are vmapped by the library.

Action bounds (``action_bounds``, optional): the action is clipped to the environment's
action space, ``low <= a <= high`` per coordinate, before the environment sees it, as
ES implementations on MuJoCo usually do: gymnasium's control cost is charged on the
action as given, so an unclipped linear policy with large observations pays costs
without bound (Humanoid), while MuJoCo clamps the control itself.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from typing import NamedTuple, Optional

from nres.tree import PyTree

POLICIES = ("linear", "mlp")
INITS = ("zeros", "truncated_normal", "variance_scaling")

# Standard deviation of a standard normal truncated to [-2, 2].
_TRUNCATED_STD = 0.87962566103423978


@dataclasses.dataclass(frozen=True)
class Policy:
    """A policy architecture over ``obs_dim`` inputs and ``action_dim`` outputs."""

    kind: str
    obs_dim: int
    action_dim: int
    hidden: int = 32
    init: str = "zeros"
    init_scale: float = 0.03
    action_bounds: Optional[tuple[tuple[float, ...], tuple[float, ...]]] = None  # (low, high), each [action_dim]

    def __post_init__(self):
        if self.kind not in POLICIES:
            raise ValueError(f"unknown policy {self.kind!r}; choose one of {', '.join(POLICIES)}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose one of {', '.join(INITS)}")
        if not self.init_scale >= 0:
            raise ValueError(f"init_scale must be >= 0, got {self.init_scale!r}")
        if self.kind == "mlp" and self.hidden <= 0:
            raise ValueError(f"hidden must be a positive integer, got {self.hidden!r}")
        if self.action_bounds is not None and any(len(b) != self.action_dim for b in self.action_bounds):
            raise ValueError(f"action_bounds must be (low, high) of {self.action_dim} values each")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        o, a, h = self.obs_dim, self.action_dim, self.hidden
        if self.kind == "linear":
            return {"M": (a, o)}
        return {"W1": (h, o), "b1": (h,), "W2": (a, h), "b2": (a,)}

    def init_theta(self, key: jax.Array) -> PyTree:
        """Initial parameters (float32): zeros or scaled truncated normals."""
        shapes = self.shapes()
        keys = jax.random.split(key, len(shapes))
        if self.init == "zeros":
            return {name: jnp.zeros(shape, jnp.float32) for name, shape in shapes.items()}

        def scale(shape):
            if self.init == "truncated_normal":
                return self.init_scale
            if len(shape) == 1:
                return 0.0  # biases start at zero, as haiku's
            return (self.init_scale / shape[1]) ** 0.5 / _TRUNCATED_STD  # [out, in]: fan_in = in

        return {
            name: scale(shape) * jax.random.truncated_normal(k, -2.0, 2.0, shape, jnp.float32)
            for k, (name, shape) in zip(keys, shapes.items())
        }

    def apply(self, theta: PyTree, obs: jax.Array) -> jax.Array:
        """Action ``[action_dim]`` for one (already scaled) observation ``[obs_dim]``,
        clipped to ``action_bounds`` when the policy has them."""
        if self.kind == "linear":
            action = theta["M"] @ obs
        else:
            action = theta["W2"] @ jnp.tanh(theta["W1"] @ obs + theta["b1"]) + theta["b2"]
        if self.action_bounds is None:
            return action
        low, high = (jnp.asarray(b, action.dtype) for b in self.action_bounds)
        return jnp.clip(action, low, high)


@dataclasses.dataclass(frozen=True, eq=False)
class ObsScaler:
    """``(o - mean) / std`` with fixed statistics (identity when both are None)."""

    mean: object = None
    std: object = None

    def __call__(self, obs: jax.Array) -> jax.Array:
        if self.mean is None:
            return obs
        return (obs - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)


class ObsStats(NamedTuple):
    """Running observation statistics: ``count`` (int32 ``[]``), ``mean`` and ``m2`` (the
    sum of squared deviations from the mean; float32 ``[obs_dim]``)."""

    count: jax.Array
    mean: jax.Array
    m2: jax.Array


class ObsScale(NamedTuple):
    """What a policy reads of the statistics: ``(o - mean) / std``, both float32 ``[obs_dim]``."""

    mean: jax.Array
    std: jax.Array


OBS_CLIP = 10.0  # running-normalised observations are clipped to [-10, 10] (rare coordinates)
MIN_STD = 1e-6  # a coordinate whose std is below this is left unscaled (std = 1), as ARS does


def empty_stats(obs_dim: int) -> ObsStats:
    """No observation seen yet (its scale is the identity)."""
    zeros = jnp.zeros((obs_dim,), jnp.float32)
    return ObsStats(jnp.zeros((), jnp.int32), zeros, zeros)


def merge_stats(stats: ObsStats, obs: jax.Array, weight: Optional[jax.Array] = None) -> ObsStats:
    """``stats`` merged with the observations ``obs`` ``[n, obs_dim]`` whose ``weight`` ``[n]``
    (bool; None: all) is set: Chan et al.'s parallel form of Welford's update.

    The batch is first shifted by the running mean, ``y = o - mean_a`` (small once the
    mean has settled, so float32 sums lose little), its own mean ``delta = mean_b - mean_a``
    and squared deviations ``m2_b`` are computed in two passes, then merged:
    ``mean = mean_a + delta n_b / n``, ``m2 = m2_a + m2_b + delta^2 n_a n_b / n`` -- no
    large sums of squares are subtracted, so float32 keeps the variance accurate.
    """
    w = jnp.ones(obs.shape[:1], jnp.float32) if weight is None else weight.astype(jnp.float32)
    n_b = jnp.sum(w)
    shifted = obs - stats.mean
    delta = jnp.sum(w[:, None] * shifted, axis=0) / jnp.maximum(n_b, 1.0)
    m2_b = jnp.sum(w[:, None] * jnp.square(shifted - delta), axis=0)
    n_a = stats.count.astype(jnp.float32)
    n = n_a + n_b
    share = n_b / jnp.maximum(n, 1.0)
    mean = stats.mean + delta * share
    m2 = stats.m2 + m2_b + jnp.square(delta) * n_a * share
    added = obs.shape[0] if weight is None else jnp.sum(weight, dtype=jnp.int32)
    return ObsStats(stats.count + added, mean, m2)


def stats_scale(stats: ObsStats) -> ObsScale:
    """Mean and std (population variance ``m2 / count``) of ``stats``; the identity
    (mean 0, std 1) before any observation, std 1 where it is below :data:`MIN_STD`."""
    var = stats.m2 / jnp.maximum(stats.count, 1).astype(jnp.float32)
    std = jnp.sqrt(jnp.maximum(var, 0.0))
    return ObsScale(stats.mean, jnp.where(std < MIN_STD, 1.0, std))


def scale_obs(scale: ObsScale, obs: jax.Array) -> jax.Array:
    """``(obs - mean) / std`` of one observation ``[obs_dim]``, clipped to ``+-OBS_CLIP``."""
    return jnp.clip((obs - scale.mean) / scale.std, -OBS_CLIP, OBS_CLIP)

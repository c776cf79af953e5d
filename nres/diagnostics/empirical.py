"""Empirical mean and total variance ``tr Cov`` of gradient estimators, with intervals.

A *sample* is one independent estimate: ``estimator.init(key_m, theta)`` (fresh noise,
fresh step-unlocked positions and a fresh burn-in) followed by one
``estimator.estimate``; ``M`` samples use ``M`` keys split from one key. Samples are
computed ``chunk_size`` at a time (``jax.vmap`` over keys, one compiled call per chunk)
to bound memory, and returned flattened to ``[M, d]`` float64.

Intervals for ``tr Cov`` (``confidence`` two-sided):

* ``"bootstrap"`` (default): percentile bootstrap over the samples. Estimates are
  products of Gaussians and heavy-tailed, and the bootstrap follows the skew of the
  sampling distribution of the variance, unlike a chi-square interval (which assumes
  Gaussian estimates and is far too narrow here).
* ``"clt"``: ``tr Cov`` is the mean of the per-sample squared deviations
  ``q_m = ||g_m - mean||^2 M/(M-1)``; a normal interval ``mean(q) +- z sd(q)/sqrt(M)``.

The equal-compute comparison of SPEC section 5 is :func:`equal_compute`.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from nres.estimators import OnlineES, fulles
from nres.estimators.base import check_positive_int
from nres.task import Task
from nres.tree import PyTree

INTERVALS = ("bootstrap", "clt")


@dataclasses.dataclass(frozen=True)
class VarianceEstimate:
    """Summary of ``M`` samples of one estimator at one ``theta``.

    Attributes:
      num_samples: finite samples used (``M``); ``num_nonfinite`` were dropped.
      mean, mean_se: the sample mean ``[d]`` and its per-coordinate standard error.
      total_variance: unbiased ``tr Cov`` (sum of per-coordinate variances, ``ddof=1``).
      interval: ``(low, high)`` for ``tr Cov`` at ``confidence`` by ``method``.
    """

    num_samples: int
    num_nonfinite: int
    mean: np.ndarray
    mean_se: np.ndarray
    total_variance: float
    interval: tuple[float, float]
    confidence: float
    method: str

    def to_dict(self) -> dict:
        return {
            "num_samples": self.num_samples,
            "num_nonfinite": self.num_nonfinite,
            "mean": self.mean.tolist(),
            "mean_se": self.mean_se.tolist(),
            "mean_norm": float(np.linalg.norm(self.mean)),
            "total_variance": self.total_variance,
            "interval": list(self.interval),
            "confidence": self.confidence,
            "interval_method": self.method,
        }


def _normal_quantile(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)


def iter_chunks(fn: Callable, keys: jax.Array, chunk_size: int, *args):
    """Yield ``fn(keys_chunk, *args)`` (host arrays) over fixed-size chunks of ``keys``
    ``[M, 2]``; the last chunk is padded by repeating a key (one compilation serves every
    chunk) and its outputs are cut back to the real rows."""
    check_positive_int("chunk_size", chunk_size)
    for start in range(0, keys.shape[0], chunk_size):
        chunk = keys[start : start + chunk_size]
        valid = chunk.shape[0]
        if valid < chunk_size:
            chunk = jnp.concatenate([chunk, jnp.broadcast_to(chunk[-1:], (chunk_size - valid, 2))])
        yield [np.asarray(x)[:valid] for x in jax.device_get(fn(chunk, *args))]


def map_chunks(fn: Callable, keys: jax.Array, chunk_size: int, *args) -> list[np.ndarray]:
    """:func:`iter_chunks` with every output concatenated over chunks (``M`` rows)."""
    return [np.concatenate(parts) for parts in zip(*iter_chunks(fn, keys, chunk_size, *args))]


class EstimateSampler:
    """Independent estimates of one estimator; compiled once, reused for every ``theta``."""

    def __init__(self, estimator, chunk_size: int = 64):
        self.estimator = estimator
        self.chunk_size = check_positive_int("chunk_size", chunk_size)

        def one(key, theta):
            grad, _, info = estimator.estimate(estimator.init(key, theta), theta)
            flat = ravel_pytree(grad)[0]
            return flat, (info.num_nonfinite > 0) | ~jnp.all(jnp.isfinite(flat))

        self._chunk = jax.jit(jax.vmap(one, in_axes=(0, None)))

    def __call__(self, theta: PyTree, key: jax.Array, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """``(samples [M, d] float64, nonfinite [M] bool)``."""
        check_positive_int("num_samples (M)", num_samples)
        keys = jax.random.split(key, num_samples)
        samples, bad = map_chunks(self._chunk, keys, self.chunk_size, theta)
        return samples.astype(np.float64), bad.astype(bool)


def total_variance(samples: np.ndarray) -> float:
    """Unbiased ``tr Cov`` of samples ``[M, d]``."""
    return float(np.sum(np.var(samples, axis=0, ddof=1)))


def total_variance_interval(
    samples: np.ndarray, confidence: float = 0.95, method: str = "bootstrap", num_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Two-sided interval for ``tr Cov`` of samples ``[M, d]`` (see the module docstring)."""
    z = _normal_quantile(confidence)
    m = samples.shape[0]
    if m < 2:
        return (float("nan"), float("nan"))
    if method == "clt":
        q = np.sum((samples - samples.mean(axis=0)) ** 2, axis=1) * m / (m - 1)
        half = z * q.std(ddof=1) / np.sqrt(m)
        return (max(0.0, float(q.mean() - half)), float(q.mean() + half))  # a variance is >= 0
    if method != "bootstrap":
        raise ValueError(f"unknown interval method {method!r}; choose one of {', '.join(INTERVALS)}")
    rng = np.random.default_rng(seed)
    squares = np.sum(samples**2, axis=1)
    stats = []
    for start in range(0, num_resamples, 250):  # bounded memory: 250 x M counts at a time
        counts = rng.multinomial(m, np.full(m, 1.0 / m), size=min(250, num_resamples - start)) / m
        means = counts @ samples
        stats.append((counts @ squares - np.sum(means**2, axis=1)) * m / (m - 1))
    stats = np.concatenate(stats)
    alpha = (1.0 - confidence) / 2.0
    return (float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha)))


def summarize(
    samples: np.ndarray, nonfinite: Optional[np.ndarray] = None, confidence: float = 0.95,
    method: str = "bootstrap", seed: int = 0,
) -> VarianceEstimate:
    """Mean, ``tr Cov`` and its interval from samples ``[M, d]``, dropping non-finite rows."""
    bad = np.zeros(len(samples), bool) if nonfinite is None else np.asarray(nonfinite, bool)
    bad = bad | ~np.all(np.isfinite(samples), axis=1)
    good = samples[~bad]
    m = good.shape[0]
    if m < 2:
        nan = np.full(samples.shape[1], np.nan)
        return VarianceEstimate(m, int(bad.sum()), nan, nan, float("nan"), (float("nan"),) * 2, confidence, method)
    return VarianceEstimate(
        num_samples=m,
        num_nonfinite=int(bad.sum()),
        mean=good.mean(axis=0),
        mean_se=good.std(axis=0, ddof=1) / np.sqrt(m),
        total_variance=total_variance(good),
        interval=total_variance_interval(good, confidence, method, seed=seed),
        confidence=confidence,
        method=method,
    )


@dataclasses.dataclass(frozen=True)
class EqualCompute:
    """FullES with one worker against ``(W/T) sum_i NRES_i``, ``n = T/W`` workers, one per window.

    ``g_i`` is window ``i``'s estimate of one NRES worker (``W`` steps, its own noise,
    state unrolled from ``tau = 0`` under that noise); FullES is ``(1/n) sum_i g_i`` with
    *one* noise. With independent workers::

        tr Cov(FullES) - tr Cov((1/n) sum_i NRES_i) = (1/n^2) sum_{i != j} tr Cov(g_i, g_j)

    (SPEC section 5 with ``g_i`` scaled by ``W/T``). ``cross`` is the right side,
    computed directly from the samples' window pieces.

    Attributes:
      fulles: summary of the FullES samples (bootstrap or CLT interval).
      combo_variance: ``(1/n^2) sum_i tr Cov(g_i)``, the variance of the independent
        workers' average, and ``combo_interval`` (normal, per-sample squared
        deviations around a pilot mean; see :func:`equal_compute`).
      cross: ``(1/n^2) sum_{i != j} tr Cov(g_i, g_j)``.
      window_variances: ``tr Cov(g_i)`` per window ``[n]``.
      fulles_mismatch: largest ``|FullES - (1/n) sum_i g_i|`` over samples, relative to
        the largest ``|FullES|`` (the estimator run separately with the same keys).
    """

    num_windows: int
    fulles: VarianceEstimate
    combo_variance: float
    combo_interval: tuple[float, float]
    cross: float
    window_variances: np.ndarray
    fulles_mismatch: float

    @property
    def ratio(self) -> float:
        return self.fulles.total_variance / self.combo_variance

    def to_dict(self) -> dict:
        return {
            "num_windows": self.num_windows,
            "fulles": self.fulles.to_dict(),
            "combo_variance": self.combo_variance,
            "combo_interval": list(self.combo_interval),
            "cross_covariance_sum": self.cross,
            "variance_ratio_fulles_over_combo": self.ratio,
            "window_variances": self.window_variances.tolist(),
            "fulles_mismatch": self.fulles_mismatch,
        }


def equal_compute(
    task: Task, theta: PyTree, unroll_length: int, sigma: float, num_samples: int, key: jax.Array,
    chunk_size: int = 16, confidence: float = 0.95, method: str = "bootstrap",
) -> EqualCompute:
    """Sample the equal-compute comparison of SPEC section 5 (one pair per worker).

    Each sample unrolls one NRES worker (``N = 1``, ``K >= T``) from ``tau = 0`` through
    all ``n = T/W`` windows, giving ``g_1 .. g_n`` with one noise. Streaming sums over
    samples give ``tr Cov(g_i)`` (memory ``n d``, never ``M n d``); the interval of the
    combination's variance is a normal one on ``r_m = (1/n^2) sum_i ||g_im - c_i||^2``
    with pilot centres ``c_i`` (the first chunk's means) and the exact correction
    ``(1/n^2) sum_i ||mean_i - c_i||^2``. The FullES estimator itself is sampled with
    the same keys, and must equal ``(1/n) sum_i g_i``.
    """
    horizon = task.horizon
    check_positive_int("num_samples (M)", num_samples)
    if num_samples < 2:
        raise ValueError(f"num_samples (M) must be at least 2, got {num_samples}")
    if horizon % unroll_length:
        raise ValueError(f"equal-compute needs W to divide T: W={unroll_length}, T={horizon}")
    n = horizon // unroll_length
    worker = OnlineES(task, 1, unroll_length, sigma, horizon, step_unlocked=False, name="nres")
    offline = fulles(task, 1, sigma)

    def windows(key, theta):  # [n, d]
        def body(state, _):
            grad, state, _ = worker.estimate(state, theta)
            return state, ravel_pytree(grad)[0]

        return jax.lax.scan(body, worker.init(key, theta), None, length=n)[1]

    def full(key, theta):
        return ravel_pytree(offline.estimate(offline.init(key, theta), theta)[0])[0]

    @jax.jit
    def chunk(keys, theta):
        return jax.vmap(windows, in_axes=(0, None))(keys, theta), jax.vmap(full, in_axes=(0, None))(keys, theta)

    m = num_samples
    center = None
    sums, squares, pair_sums, mismatch = 0.0, 0.0, 0.0, 0.0
    spreads, offline_samples = [], []
    for g, off in iter_chunks(chunk, jax.random.split(key, m), chunk_size, theta):
        g = g.astype(np.float64)  # [c, n, d]
        center = g.mean(axis=0) if center is None else center
        spreads.append(np.sum((g - center) ** 2, axis=(1, 2)) / n**2)
        sums = sums + g.sum(axis=0)
        squares = squares + np.sum(g**2, axis=(0, 2))
        pair_sums = pair_sums + np.sum(g.sum(axis=1) ** 2)
        offline_samples.append(off.astype(np.float64))
        mismatch = max(mismatch, float(np.max(np.abs(off - g.mean(axis=1)))))
    spreads, offline_samples = np.concatenate(spreads), np.concatenate(offline_samples)
    means = sums / m
    window_variances = (squares - m * np.sum(means**2, axis=1)) / (m - 1)
    combo = float(window_variances.sum()) / n**2
    off_diagonal = (pair_sums - squares.sum()) - m * (np.sum(means.sum(axis=0) ** 2) - np.sum(means**2))
    cross = float(off_diagonal) / (m - 1) / n**2
    correction = float(np.sum((means - center) ** 2)) / n**2
    half = _normal_quantile(confidence) * spreads.std(ddof=1) / np.sqrt(m) * m / (m - 1)
    centre = (spreads.mean() - correction) * m / (m - 1)
    fulles_summary = summarize(offline_samples, confidence=confidence, method=method)
    mismatch /= max(float(np.max(np.abs(offline_samples))), 1e-30)
    return EqualCompute(
        num_windows=n,
        fulles=fulles_summary,
        combo_variance=combo,
        combo_interval=(max(0.0, float(centre - half)), float(centre + half)),  # a variance is >= 0
        cross=cross,
        window_variances=window_variances,
        fulles_mismatch=mismatch,
    )

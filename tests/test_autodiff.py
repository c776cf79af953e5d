"""Autodiff baselines: BPTT is the exact gradient, TBPTT(W = T) is BPTT, UORO and DODGE
are unbiased on the linear-quadratic task, and all of them train through the CLI.

Unbiasedness: M = 20000 independent estimates (fresh keys, so fresh step-unlocked
positions, signs and directions), one trajectory each; every coordinate of the mean
must lie within Z = 4.5 standard errors of ``jax.grad`` of the horizon loss
(two-sided false-alarm rate below 1e-5 per coordinate, 3 coordinates per check).
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nres
from nres.cli import main
from nres.config import TrainConfig
from nres.estimators.autodiff import bptt, dodge, float_part, tbptt, uoro
from nres.tasks.linear import horizon_loss
from nres.tasks.lorenz import LorenzConfig, make_lorenz_task
from nres.training import Trainer

W = 4
M = 20000
Z = 4.5


def _estimate(est, theta, key):
    return est.estimate(est.init(key, theta), theta)


def _grads(est, theta, keys):
    """Estimates for a batch of keys ``[M, 2]`` in one compiled call."""
    return np.asarray(jax.jit(jax.vmap(lambda k: _estimate(est, theta, k)[0]))(keys), np.float64)


@pytest.fixture(scope="module")
def true_grad(linear_task, linear_theta):
    return np.asarray(jax.grad(lambda th: horizon_loss(linear_task, th))(linear_theta), np.float64)


def test_bptt_is_jax_grad_of_the_horizon_loss(linear_task, linear_theta, true_grad):
    grad, state, info = jax.jit(bptt(linear_task, 3).estimate)(bptt(linear_task, 3).init(jax.random.PRNGKey(0),
                                                                                           linear_theta), linear_theta)
    np.testing.assert_allclose(grad, true_grad, rtol=1e-5)
    np.testing.assert_array_equal(state.particles.tau, 0)  # whole episodes: back at the start
    np.testing.assert_allclose(info.train_loss, horizon_loss(linear_task, linear_theta), rtol=1e-5)


def test_bptt_on_a_chaotic_task_matches_jax_grad():
    task = make_lorenz_task(LorenzConfig(horizon=300, num_test_starts=1))
    theta = task.init_theta(None)
    expected = jax.grad(lambda th: horizon_loss(task, th))(theta)
    grad, _, _ = jax.jit(_estimate, static_argnums=0)(bptt(task, 1), theta, jax.random.PRNGKey(0))
    np.testing.assert_allclose(grad, expected, rtol=1e-4)


def test_tbptt_with_w_equal_t_is_bptt(linear_task, linear_theta):
    key = jax.random.PRNGKey(5)
    full, _, _ = _estimate(tbptt(linear_task, 2, linear_task.horizon), linear_theta, key)
    exact, _, _ = _estimate(bptt(linear_task, 2), linear_theta, key)
    np.testing.assert_array_equal(full, exact)


def test_tbptt_differentiates_only_the_window(linear_task, linear_theta):
    """From each carried state s_tau, the gradient of the next W losses, by hand."""
    est = tbptt(linear_task, 4, W)
    state = est.init(jax.random.PRNGKey(7), linear_theta)
    taus, starts = [int(t) for t in state.particles.tau], state.particles.inner[0]
    assert len(set(taus)) > 1, "the particles should sit at different positions"

    def window_loss(theta):
        total = 0.0
        for tau, s in zip(taus, starts):
            for t in range(tau, tau + W):
                s = linear_task.step(theta, s, t, None, None)
                total += linear_task.loss(theta, s, t, None)
        return total / (len(taus) * W)

    grad, new_state, _ = est.estimate(state, linear_theta)
    np.testing.assert_allclose(grad, jax.grad(window_loss)(linear_theta), rtol=1e-5)
    np.testing.assert_array_equal(new_state.particles.tau, (np.array(taus) + W) % linear_task.horizon)


def _draw(est, theta, seed=11):
    return _grads(est, theta, jax.random.split(jax.random.PRNGKey(seed), M))


@pytest.mark.parametrize("name, build", [
    ("uoro", lambda task: uoro(task, 1, W)),
    ("dodge_K1", lambda task: dodge(task, 1, W, 1)),
    ("dodge_K=W", lambda task: dodge(task, 1, W)),
    ("dodge_K>=T", lambda task: dodge(task, 1, W, 16)),
])
def test_online_forward_methods_are_unbiased(linear_task, linear_theta, true_grad, name, build):
    g = _draw(build(linear_task), linear_theta)
    se = g.std(axis=0, ddof=1) / np.sqrt(M)
    err = np.abs(g.mean(axis=0) - true_grad)
    assert np.all(err < Z * se), f"{name}: |mean - grad| = {err} exceeds {Z} se = {Z * se} (M={M})"
    assert np.all(se > 0), f"{name} should be a random estimate"


@pytest.mark.parametrize("k", [1, W, 8, 16])
def test_dodge_is_gpes_on_a_quadratic_task(linear_task, linear_theta, k):
    """Same keys => same blocks and directions; antithetic ES is exact on quadratics."""
    gpes = nres.make_estimator("gpes", linear_task, num_particles=2, unroll_length=W, sigma=0.1, noise_period=k)
    fwd = dodge(linear_task, 2, W, k)
    keys = jax.random.split(jax.random.PRNGKey(k), 8)
    np.testing.assert_allclose(_grads(fwd, linear_theta, keys), _grads(gpes, linear_theta, keys), rtol=2e-4, atol=1e-4)


def test_dodge_keeps_an_accumulator_only_when_directions_change(linear_task, linear_theta):
    assert dodge(linear_task, 1, W, 16).init(jax.random.PRNGKey(0), linear_theta).xi is None
    assert dodge(linear_task, 1, W, 8).init(jax.random.PRNGKey(0), linear_theta).xi is not None


def test_same_seed_same_estimates(linear_task, linear_theta):
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    keys = jnp.stack([keys[0], keys[0], keys[1]])
    for est in (uoro(linear_task, 2, W), dodge(linear_task, 2, W, 8), tbptt(linear_task, 2, W)):
        a, b, c = _grads(est, linear_theta, keys)
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c), f"{est.name}: another key should give another estimate"


def test_step_counting(linear_task, linear_theta):
    est = tbptt(linear_task, 5, W)
    state = est.init(jax.random.PRNGKey(0), linear_theta)
    assert (est.env_steps_per_update, est.sequential_steps_per_update) == (5 * W, W)
    assert est.burn_in_env_steps(state) == int(np.sum(state.particles.tau)) > 0
    full = bptt(linear_task, 5)
    assert (full.env_steps_per_update, full.sequential_steps_per_update) == (5 * 16, 16)
    assert full.burn_in_env_steps(full.init(jax.random.PRNGKey(0), linear_theta)) == 0


def test_integer_state_leaves_are_carried_not_differentiated(linear_theta):
    """A state with a step counter (int) next to floats: forward modes skip the int."""

    def step(theta, state, t, key, batch):
        return {"x": 0.5 * state["x"] + theta, "count": state["count"] + 1}

    task = nres.Task(
        init_theta=lambda k: jnp.zeros(3), init_state=lambda k: {"x": jnp.zeros(3), "count": jnp.int32(0)},
        step=step, loss=lambda theta, s, t, b: jnp.sum((s["x"] - 1.0) ** 2), horizon=6,
    )
    floats, rebuild = float_part(task.init_state(None))
    assert len(floats) == 1 and rebuild(floats)["count"].dtype == jnp.int32
    expected = jax.grad(lambda th: horizon_loss(task, th))(linear_theta)
    for est in (uoro(task, 1, 6), dodge(task, 1, 6, 1), bptt(task, 1)):
        est = dataclasses.replace(est, step_unlocked=False)
        g = _grads(est, linear_theta, jax.random.split(jax.random.PRNGKey(0), 200)).mean(axis=0)
        assert np.all(np.isfinite(g)) and np.linalg.norm(g - expected) < 0.5 * np.linalg.norm(expected), (
            f"{est.name}: mean of 200 estimates {g} far from {expected}")


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="dodge", noise_period=0), "noise_period"),
    (dict(name="bptt", noise_period=4), "noise_period"),
    (dict(name="uoro", unroll_length=17), "unroll_length"),
    (dict(name="tbptt", num_particles=0), "num_particles"),
    (dict(name="uoro", loss_normalize=True), "loss_normalize"),
])
def test_bad_configuration_raises_naming_the_value(linear_task, kwargs, match):
    settings = dict(num_particles=1, unroll_length=W, sigma=0.1, noise_period=None) | kwargs
    with pytest.raises(ValueError, match=match):
        nres.make_estimator(settings.pop("name"), linear_task, **settings)


def test_bptt_explodes_on_lorenz_and_the_loop_skips_it():
    """At the paper's start the exact gradient is huge: the first step throws theta
    where the loss is non-finite, and later windows are skipped, not crashed on."""
    config = TrainConfig(task="lorenz", estimator="bptt", num_particles=2, lr=3e-4, iterations=4,
                         task_options={"num_test_starts": 1})
    trainer = Trainer(config)
    learner, counters = trainer.init()
    infos = []
    for _ in range(4):
        learner, counters, info = trainer.update(learner, counters)
        infos.append(info)
    assert float(infos[0].grad_norm) > 1e4, f"BPTT gradient norm on Lorenz: {float(infos[0].grad_norm)}"
    assert not all(bool(i.applied) for i in infos), "some window should be non-finite and skipped"
    assert counters.nonfinite_windows >= 1 and np.all(np.isfinite(learner.theta))


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["bptt", "tbptt", "uoro", "dodge"])
def test_train_cli_runs_every_baseline(tmp_path, estimator):
    out = tmp_path / estimator
    window = [] if estimator == "bptt" else ["--unroll-length", "10"]  # bptt unrolls T: the flag is refused
    code = main(["train", "--task", "lorenz", "--estimator", estimator, "--horizon", "100", *window,
                 "--num-particles", "2", "--lr", "1e-6", "--iterations", "5", "--num-test-starts", "4",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train_loss" in r]
    assert [r["iteration"] for r in train] == [1, 2, 3, 4, 5]
    per_update = 2 * 100 if estimator == "bptt" else 2 * 10
    assert train[-1]["total_env_steps"] - train[-2]["total_env_steps"] == per_update
    assert any("test_loss" in r for r in rows) and (out / "curves.png").is_file()

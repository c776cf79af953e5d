import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nres
from nres.config import resolve_config
from nres.task import Task
from nres.training import Trainer, learning_rate, make_optimizer


def test_piecewise_schedule_as_pes_uses_it():
    config = resolve_config({"lr": 1e-5, "lr_schedule": "piecewise", "lr_boundaries": [1000], "lr_decay": 0.1})
    schedule = learning_rate(config)
    assert schedule(999) == pytest.approx(1e-5) and schedule(1000) == pytest.approx(1e-6)


def test_grad_clip_bounds_the_step():
    config = resolve_config({"optimizer": "sgd", "lr": 1.0, "grad_clip": 2.0})
    opt = make_optimizer(config)
    grad = jnp.array([30.0, 40.0])
    updates, _ = opt.update(grad, opt.init(grad), grad)
    np.testing.assert_allclose(updates, -2.0 * grad / 50.0, rtol=1e-6)


def test_adam_is_optax_adam():
    config = resolve_config({"optimizer": "adam", "lr": 0.1})
    grad = jnp.array([1.0, -2.0])
    ours = make_optimizer(config)
    ref = optax.adam(0.1)
    np.testing.assert_allclose(ours.update(grad, ours.init(grad))[0], ref.update(grad, ref.init(grad))[0])


def test_loss_normalize_makes_the_step_scale_free(linear_task, linear_theta):
    scaled = linear_task._replace(loss=lambda th, s, t, b: 100.0 * linear_task.loss(th, s, t, b))
    grads = []
    for task in (linear_task, scaled):
        est = nres.nres(task, 8, 4, 0.1, loss_normalize=True)
        grads.append(est.estimate(est.init(jax.random.PRNGKey(0), linear_theta), linear_theta)[0])
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4)
    plain = nres.nres(linear_task, 8, 4, 0.1)
    g = plain.estimate(plain.init(jax.random.PRNGKey(0), linear_theta), linear_theta)[0]
    cos = float(jnp.dot(g, grads[0]) / jnp.linalg.norm(g) / jnp.linalg.norm(grads[0]))
    assert cos == pytest.approx(1.0, abs=1e-5)  # same direction, different length


def _blow_up_task(threshold):
    """Linear growth whose loss turns infinite once theta exceeds ``threshold``."""

    def loss(theta, s, t, batch):
        return jnp.where(theta[0] > threshold, jnp.inf, (s[0] - 3.0) ** 2)

    return Task(
        init_theta=lambda k: jnp.array([0.0]),
        init_state=lambda k: jnp.zeros(1),
        step=lambda theta, s, t, k, b: s + theta,
        loss=loss,
        horizon=8,
    )


def test_nonfinite_window_is_not_applied_and_counted():
    config = resolve_config({"task": "linear", "estimator": "nres", "num_particles": 4, "unroll_length": 2,
                             "sigma": 0.01, "lr": 0.01})
    trainer = Trainer(config, task=_blow_up_task(threshold=0.5))
    learner, counters = trainer.init()
    learner = learner._replace(theta=jnp.array([1.0]))  # beyond the threshold: every loss is inf
    theta0 = np.asarray(learner.theta)
    learner, counters, info = trainer.update(learner, counters)
    assert not bool(info.applied) and int(info.num_nonfinite) > 0
    np.testing.assert_array_equal(learner.theta, theta0)
    assert counters.consecutive_nonfinite == 1 and counters.nonfinite_windows == 1
    assert counters.iteration == 1


def test_finite_window_is_applied_and_counters_advance():
    config = resolve_config({"task": "linear", "num_particles": 4, "unroll_length": 2, "sigma": 0.01, "lr": 0.01})
    trainer = Trainer(config, task=_blow_up_task(threshold=1e9))
    learner, counters = trainer.init()
    burn_in = counters.total_env_steps
    assert burn_in == 2 * int(np.sum(learner.estimator_state.particles.tau))
    new, counters, info = trainer.update(learner, counters)
    assert bool(info.applied) and float(new.theta[0]) > float(learner.theta[0])  # moves towards s = 3
    assert counters.total_env_steps == burn_in + 2 * 4 * 2 and counters.sequential_steps == 2


def test_same_seed_same_trajectory():
    config = resolve_config({"task": "linear", "iterations": 5, "seed": 3})

    def run():
        trainer = Trainer(config)
        learner, counters = trainer.init()
        for _ in range(5):
            learner, counters, _ = trainer.update(learner, counters)
        return np.asarray(learner.theta)

    np.testing.assert_array_equal(run(), run())


def test_burn_in_keeps_positions_aligned_when_losses_blow_up():
    """Pairs whose loss turns non-finite during burn-in restart and wait at tau = 0."""
    task = _blow_up_task(threshold=0.2)
    est = nres.nres(task, 64, 2, 0.5)
    state = est.init(jax.random.PRNGKey(0), jnp.array([0.0]))
    tau = np.asarray(state.particles.tau)
    assert np.all(tau % 2 == 0), tau
    assert np.any(tau == 0) and np.any(tau > 0)


def test_loss_normalize_is_refused_for_autodiff_estimators():
    from nres.config import ConfigError
    from nres.training import build_estimator, build_task

    config = resolve_config({"task": "linear", "estimator": "bptt", "loss_normalize": True})
    with pytest.raises(ConfigError, match="loss_normalize applies to the ES estimators.*'bptt'"):
        build_estimator(config, build_task(config))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_update_that_would_make_theta_or_optimizer_state_nonfinite_is_not_applied(optimizer):
    """Finite losses and gradient (~1e30), but SGD's step overflows theta and Adam's second
    moment (~1e60) overflows its state: the window is skipped, nothing changes."""
    config = resolve_config({"task": "linear", "num_particles": 4, "unroll_length": 2, "sigma": 0.01,
                             "lr": 1e38, "optimizer": optimizer})
    steep = Task(init_theta=lambda k: jnp.array([0.0]), init_state=lambda k: jnp.zeros(1),
                 step=lambda theta, s, t, k, b: s + 1.0, loss=lambda theta, s, t, b: 1e30 * theta[0], horizon=8)
    trainer = Trainer(config, task=steep)
    learner, counters = trainer.init()
    before = jax.device_get(learner)
    learner, counters, info = trainer.update(learner, counters)
    assert not bool(info.applied) and int(info.num_nonfinite) == 0 and np.isfinite(float(info.train_loss))
    assert counters.nonfinite_windows == 1
    for got, want in zip(jax.tree_util.tree_leaves(learner[:2]), jax.tree_util.tree_leaves(before[:2])):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31 - 1, 2**31, 2**32 - 1])
def test_seed_key_is_jax_prng_key(seed):
    from nres.training import seed_key

    key = seed_key(seed)
    assert np.asarray(key).dtype == np.uint32
    np.testing.assert_array_equal(np.asarray(key), np.asarray(jax.random.PRNGKey(seed)))

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nres
from nres.build import resolve_config
from nres.task import Task
from nres.build import learning_rate, make_optimizer
from nres.training import Counters, Trainer


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
    start, hold = est.start(jax.random.PRNGKey(0), jnp.array([0.0]))
    state = est.init(jax.random.PRNGKey(0), jnp.array([0.0]))
    tau = np.asarray(state.particles.tau)
    assert np.all(tau % 2 == 0), tau
    assert np.any(tau == 0) and np.any(tau > 0)
    reset = np.any(np.asarray(state.particles.episode_key) != np.asarray(start.particles.episode_key), axis=1)
    assert np.all(tau[reset] == 0) and np.all(tau[~reset] == 2 * np.asarray(hold)[~reset])
    assert np.any(reset & (np.asarray(hold) > 1)), "some pair should have burn-in windows left when it reset"


def test_burn_in_windows_are_not_counted_as_skipped_updates():
    config = resolve_config({"task": "linear", "estimator": "nres", "num_particles": 64, "unroll_length": 2,
                             "sigma": 0.5})
    trainer = Trainer(config, task=_blow_up_task(threshold=0.2))
    learner, counters = trainer.init()
    tau = np.asarray(learner.estimator_state.particles.tau)
    assert np.any(tau == 0) and np.any(tau > 0)
    assert counters == Counters(total_env_steps=2 * int(tau.sum()), wall_time_s=counters.wall_time_s)


def _late_blow_up_task():
    """s_t = 0.01 t under theta = 0; the loss is NaN from s > 0.5 on (steps t >= 50 of 64)."""
    return Task(init_theta=lambda k: jnp.array([0.0]), init_state=lambda k: jnp.zeros(1),
                step=lambda theta, s, t, k, b: s + theta + 0.01,
                loss=lambda theta, s, t, b: jnp.where(jnp.abs(s[0]) > 0.5, jnp.nan, s[0] ** 2), horizon=64)


def test_burn_in_reset_within_a_per_step_window_stops_in_the_new_episode():
    """With per-step rules (here TBPTT) an episode that ends mid-window goes on in the new
    episode to the window's end; the pair then stops there (tau < W; 1 here), off the grid
    of multiples of W like any per-step pair after a reset."""
    task, W = _late_blow_up_task(), 4
    est = nres.make_estimator("tbptt", task, num_particles=32, unroll_length=W, sigma=0.1)
    theta = jnp.array([0.0])
    start, hold = est.start(jax.random.PRNGKey(0), theta)
    state = est.init(jax.random.PRNGKey(0), theta)
    hold, tau = np.asarray(hold), np.asarray(state.particles.tau)
    late = hold * W > 50  # these reach the NaN at step 50, the third step of window 12
    assert np.any(late) and np.any(~late)
    np.testing.assert_array_equal(tau[~late], W * hold[~late])
    np.testing.assert_array_equal(tau[late], 1)
    next_keys = jax.vmap(lambda k: jax.random.fold_in(k, 4))(start.particles.episode_key)
    np.testing.assert_array_equal(state.particles.episode_key[late], np.asarray(next_keys)[late])


@pytest.fixture
def chunk_traces(monkeypatch):
    """Counts the traces of the step's chunk function (each is one compiled update
    program); compiled calls hold at most 3 updates."""
    from nres import step as step_module
    from nres import training

    traces = []
    monkeypatch.setattr(step_module, "MAX_UPDATES_PER_CALL", 3)
    make_step = step_module.make_step

    def counted_make_step(*args, **kwargs):
        step = make_step(*args, **kwargs)

        def chunk(*chunk_args, **chunk_kwargs):
            traces.append(1)
            return step.chunk(*chunk_args, **chunk_kwargs)

        return step._replace(chunk=chunk)

    monkeypatch.setattr(training, "make_step", counted_make_step)
    return traces


@pytest.mark.parametrize("name, options", [("nres", {}), ("tes", {}), ("gpes", {"noise_period": 3}),
                                           ("tbptt", {}), ("uoro", {}), ("dodge", {})])
def test_burn_in_runs_in_the_update_program(linear_task, chunk_traces, name, options):
    """Trainer.init brings the pairs to their positions with one call of the update
    program (more windows than max_chunk here): the same states as the estimator's own
    init, no update applied or counted, and training reuses that one program."""
    config = resolve_config({"task": "linear", "estimator": name, "num_particles": 8, "unroll_length": 2,
                             "seed": 1, **options})
    trainer = Trainer(config, task=linear_task)  # the burn-in runs up to 7 windows, max_chunk is 3
    learner, counters = trainer.init()
    k_theta, k_est = jax.random.split(jax.random.PRNGKey(config.seed))
    theta = linear_task.init_theta(k_theta)
    expected = jax.jit(trainer.estimator.init)(k_est, theta)
    tau = np.asarray(learner.estimator_state.particles.tau)
    assert tau.max() > 2 * trainer.max_chunk
    for got, want in zip(jax.tree_util.tree_leaves(learner.estimator_state), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(learner.theta, theta)
    members = 2 if name in nres.ES_ESTIMATORS else 1
    assert counters == Counters(total_env_steps=members * int(tau.sum()), wall_time_s=counters.wall_time_s)
    learner, steps = trainer.update_many(learner, counters, 3)
    assert all(bool(info.applied) for _, info, _ in steps)
    assert len(chunk_traces) == 1, "burn-in and training must share one compiled update program"


def test_loss_normalize_is_refused_for_autodiff_estimators():
    from nres.config import ConfigError
    from nres.build import build_estimator, build_task

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
    from nres.build import seed_key

    key = seed_key(seed)
    assert np.asarray(key).dtype == np.uint32
    np.testing.assert_array_equal(np.asarray(key), np.asarray(jax.random.PRNGKey(seed)))

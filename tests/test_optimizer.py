"""The outer optimiser with its learning rate and schedule as data (nres.optimizer):
the same bits as optax with constants, one compiled program for every value."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nres.build import program_identity, resolve_config, build_estimator, build_task
from nres.optimizer import hyperparameters, outer_optimizer, with_hyperparameters

STEPS = 12
GRADS = jax.random.normal(jax.random.PRNGKey(0), (STEPS, 5)) * jnp.arange(1.0, 6.0)


def _trajectory(opt, hyper=None):
    """Params after each of STEPS updates with the fixed gradients ``GRADS`` (one jitted scan)."""

    def run(hyper):
        params = jnp.linspace(-1.0, 1.0, 5)
        state = opt.init(params) if hyper is None else with_hyperparameters(opt.init(params), hyper)

        def body(carry, grad):
            params, state = carry
            updates, state = opt.update(grad * (1.0 + params), state, params)
            params = optax.apply_updates(params, updates)
            return (params, state), params

        return jax.lax.scan(body, (params, state), GRADS)[1]

    return np.asarray(jax.jit(run)(hyper))


@pytest.mark.parametrize("name,clip,boundaries", [("sgd", None, ()), ("sgd", None, (3, 7)), ("adam", None, (5,)),
                                                  ("adam", 0.5, (2, 4, 9)), ("sgd", 1.0, ())])
def test_the_same_bits_as_optax_with_constants(name, clip, boundaries):
    lr, decay = 0.03, 0.3
    rate = optax.piecewise_constant_schedule(lr, {b: decay for b in boundaries}) if boundaries \
        else optax.constant_schedule(lr)
    ref = optax.sgd(rate) if name == "sgd" else optax.adam(rate)
    ref = ref if clip is None else optax.chain(optax.clip_by_global_norm(clip), ref)
    ours = _trajectory(outer_optimizer(name, lr, decay, boundaries, clip))
    np.testing.assert_array_equal(ours, _trajectory(ref))


def test_one_compiled_init_and_update_serve_every_value():
    traces = []
    opt = outer_optimizer("sgd", 0.1, 0.5, (4,))

    @jax.jit
    def run(hyper):
        traces.append(1)  # runs only while JAX traces
        params = jnp.ones(5)
        state = with_hyperparameters(opt.init(params), hyper)
        return jax.lax.scan(lambda c, g: ((optax.apply_updates(c[0], opt.update(g, c[1], c[0])[0]),
                                            opt.update(g, c[1], c[0])[1]), None), (params, state), GRADS)[0][0]

    for lr, decay, boundary in [(0.1, 0.5, 4), (0.02, 0.1, 9)]:
        made = outer_optimizer("sgd", lr, decay, (boundary,))
        expected = jax.jit(lambda: jax.lax.scan(
            lambda c, g: ((optax.apply_updates(c[0], made.update(g, c[1], c[0])[0]), made.update(g, c[1], c[0])[1]),
                          None), (jnp.ones(5), made.init(jnp.ones(5))), GRADS)[0][0])()
        np.testing.assert_array_equal(run(hyperparameters(lr, decay, (boundary,))), expected)
    assert len(traces) == 1, f"traced {len(traces)} times for two sets of values"


def test_with_hyperparameters_refuses_values_of_another_optimiser():
    opt = outer_optimizer("adam", 0.1)
    with pytest.raises(ValueError, match="do not match"):
        with_hyperparameters(opt.init(jnp.ones(2)), {"lr": 0.1})
    assert with_hyperparameters(optax.sgd(0.1).init(jnp.ones(2)), None) == optax.sgd(0.1).init(jnp.ones(2))


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        outer_optimizer("rmsprop", 0.1)


def _identity(**settings):
    config = resolve_config({"task": "lorenz", "horizon": 40, "num_particles": 4, "unroll_length": 10, **settings})
    return program_identity(config, build_estimator(config, build_task(config)), "chunk")


def test_learning_rate_values_do_not_key_the_programs_but_the_schedule_shape_does():
    base = _identity(lr=1e-5, lr_schedule="piecewise", lr_boundaries=[10], lr_decay=0.1)
    assert _identity(lr=3e-4, lr_schedule="piecewise", lr_boundaries=[20], lr_decay=0.5) == base
    assert _identity(lr=1e-5, lr_schedule="piecewise", lr_boundaries=[10, 20], lr_decay=0.1) != base
    assert _identity(lr=1e-5, optimizer="adam", lr_schedule="piecewise", lr_boundaries=[10]) != base

"""The inner problem: batches, inner steps, test accuracy and whole rollouts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nres.tasks.lopt.baselines import hand_designed
from nres.tasks.lopt.datasets import load_dataset
from nres.tasks.lopt.inner_models import accuracy, mlp
from nres.tasks.lopt.problem import InnerProblem


@pytest.fixture(scope="module")
def problem():
    data = load_dataset("digits")
    return InnerProblem(data, mlp(data.image_shape, (16,)), batch_size=32)


def test_layout(problem):
    # leaf order: layer0 b, layer0 w, layer1 b, layer1 w
    assert problem.sizes == (16, 64 * 16, 10, 16 * 10) and problem.num_params == 1210
    assert problem.init_params(jax.random.PRNGKey(0)).shape == (1210,)


def test_batches_are_deterministic_and_from_the_right_split(problem):
    key = jax.random.PRNGKey(3)
    a, b = problem.sample_batch(key), problem.sample_batch(key)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert a.train_images.shape == (32, 8, 8, 1) and a.outer_labels.shape == (32,)
    valid = {bytes(x) for x in np.asarray(problem.dataset.valid_images)}
    assert all(bytes(x) in valid for x in np.asarray(a.outer_images))
    test = problem.sample_batch(key, outer_split="test")
    test_set = {bytes(x) for x in np.asarray(problem.dataset.test_images)}
    assert all(bytes(x) in test_set for x in np.asarray(test.outer_images))


def test_inner_step_with_sgd_is_a_gradient_step(problem):
    params = problem.init_params(jax.random.PRNGKey(0))
    batch = problem.sample_batch(jax.random.PRNGKey(1))
    sgd = hand_designed("sgd", 0.5)
    state = problem.inner_step(sgd, problem.init_state(jax.random.PRNGKey(0), sgd), batch)
    grad = jax.grad(problem.train_loss)(params, batch.train_images, batch.train_labels)
    np.testing.assert_allclose(state.params, params - 0.5 * grad, rtol=1e-5, atol=1e-7)
    before = problem.train_loss(params, batch.train_images, batch.train_labels)
    assert problem.train_loss(state.params, batch.train_images, batch.train_labels) < before


def test_test_accuracy_covers_the_whole_split(problem):
    params = problem.init_params(jax.random.PRNGKey(2))
    data = problem.dataset
    direct = accuracy(problem.logits(params, jnp.asarray(data.test_images)), jnp.asarray(data.test_labels))
    assert float(problem.test_accuracy(params)) == pytest.approx(float(direct), abs=1e-6)


def test_rollout_with_a_zero_learning_rate_keeps_the_initial_model(problem):
    key = jax.random.PRNGKey(4)
    frozen = jax.jit(lambda k: problem.rollout(hand_designed("sgd", 0.0), k, 5))(key)
    params = problem.init_params(jax.random.fold_in(key, 0))
    assert float(frozen["test_accuracy"]) == pytest.approx(float(problem.test_accuracy(params)), abs=1e-6)
    trained = jax.jit(lambda k: problem.rollout(hand_designed("adam", 0.03), k, 5))(key)
    assert float(trained["test_loss"]) < float(frozen["test_loss"]) - 0.05, (trained, frozen)

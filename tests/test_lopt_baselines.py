"""Hand-designed baselines: the update rules and learning-rate tuning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nres.tasks.lopt import LoptConfig, build_problem
from nres.tasks.lopt.baselines import BASELINES, format_table, hand_designed, main, sweep, tune


def test_update_rules_by_hand():
    params, grad = jnp.asarray([1.0, -2.0, 0.5]), jnp.asarray([0.5, -4.0, 0.0])
    sgd = hand_designed("sgd", 0.1)
    new, _ = sgd.update(sgd.init(params), params, grad)
    np.testing.assert_allclose(new, params - 0.1 * grad, rtol=1e-6)
    momentum = hand_designed("momentum", 0.1)
    state = momentum.init(params)
    p1, state = momentum.update(state, params, grad)
    p2, _ = momentum.update(state, p1, grad)
    np.testing.assert_allclose(p2, p1 - 0.1 * (0.9 * grad + grad), rtol=1e-6)  # heavy ball: v = 0.9 v + g
    adam = hand_designed("adam", 0.01)
    new, _ = adam.update(adam.init(params), params, grad)
    np.testing.assert_allclose(new, params - 0.01 * np.sign(grad), atol=1e-6)  # first Adam step ~ lr * sign(g)
    with pytest.raises(ValueError, match="unknown baseline 'rmsprop'"):
        hand_designed("rmsprop", 0.1)


@pytest.fixture(scope="module")
def problem():
    return build_problem(LoptConfig(hidden_sizes="16", batch_size=32))


def test_tuning_picks_the_best_rate_of_the_grid(problem):
    rates = (1e-4, 1e-2, 0.3)
    key = jax.random.PRNGKey(0)
    (result,) = tune(problem, horizon=15, key=key, num_runs=2, names=("sgd",), learning_rates=rates)
    grid = sweep(problem, "sgd", rates, jax.random.split(key)[0], 15, 2)["valid_loss"]
    assert result.learning_rate == rates[int(np.argmin(grid))] == 0.3, grid
    assert result.valid_loss == pytest.approx(float(np.min(grid)), rel=1e-5)
    # 1e-4 barely moves an untrained model: its loss stays near ln 10
    assert grid[0] == pytest.approx(np.log(10), abs=0.15) and result.valid_loss < grid[0] - 0.1
    assert 0.0 <= result.test_accuracy <= 1.0
    assert "| sgd | 0.3 |" in format_table([result])
    with pytest.raises(ValueError, match="positive"):
        tune(problem, 15, key, learning_rates=(0.1, -1.0))


def test_command_line_reports_bad_input(capsys):
    assert main(["--dataset", "mnist"]) == 2
    assert "unknown dataset 'mnist'" in capsys.readouterr().err
    assert set(BASELINES) == {"sgd", "momentum", "adam"}

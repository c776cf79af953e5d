import jax.numpy as jnp
import pytest

from nres.task import Task, validate_task


def _task(horizon):
    return Task(
        init_theta=lambda k: jnp.zeros(2),
        init_state=lambda k: jnp.zeros(1),
        step=lambda th, s, t, k, b: s + 1,
        loss=lambda th, s, t, b: jnp.sum(s),
        horizon=horizon,
    )


def test_valid_task_passes_and_batch_defaults_to_none():
    task = validate_task(_task(5))
    assert task.batch(None, 0) is None


@pytest.mark.parametrize("horizon", [0, -3, 2.5, True])
def test_bad_horizon_is_named(horizon):
    with pytest.raises(ValueError, match="horizon"):
        validate_task(_task(horizon))


def test_non_callable_field_is_named():
    with pytest.raises(TypeError, match="'step'"):
        validate_task(_task(5)._replace(step=3))

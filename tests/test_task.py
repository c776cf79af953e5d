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


@pytest.mark.parametrize("field, bad, message", [
    ("loss", lambda th, s, t, b: jnp.stack([s[0], s[0], s[0]]),
     "task 'task': loss returned float32[3]; it must return a float scalar (shape ())"),
    ("loss", lambda th, s, t, b: jnp.sum(s).astype(jnp.int32), "task 'task': loss returned int32[]"),
    ("step", lambda th, s, t, k, b: jnp.concatenate([s, s]),
     "task 'task': step returned float32[2], but init_state gives float32[1]"),
    ("init_theta", lambda k: jnp.zeros(2, jnp.int32), "task 'task': init_theta returned int32[2]"),
    ("step", lambda th, s, t, k, b: s @ jnp.ones((5, 5)), "task 'task': step failed when traced"),
])
def test_shape_mistakes_are_one_line_naming_the_function(field, bad, message):
    from nres.task import TaskShapeError

    with pytest.raises(TaskShapeError) as caught:
        validate_task(_task(5)._replace(**{field: bad}))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value), str(caught.value)


def test_a_vector_loss_from_the_command_line_is_one_error_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from nres.cli import main

    (tmp_path / "vector_loss_task.py").write_text(
        "import dataclasses\nimport jax.numpy as jnp\nimport nres\nfrom nres.tasks import TaskEntry\n\n"
        "@dataclasses.dataclass(frozen=True)\nclass Options:\n    horizon: int = 10\n\n"
        "task = nres.Task(lambda k: jnp.zeros(2), lambda k: jnp.zeros(3), lambda th, s, t, k, b: s + th[0],\n"
        "                 lambda th, s, t, b: (s - 1.0) ** 2, horizon=10, name='vector-loss')\n"
        "ENTRY = TaskEntry('vector', Options, lambda o: task._replace(horizon=o.horizon))\n")
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--task", "vector_loss_task:ENTRY", "--num-particles", "2", "--unroll-length", "5",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("nres: error: task 'vector-loss': loss returned float32[3]"), err
    assert not (tmp_path / "run").exists()

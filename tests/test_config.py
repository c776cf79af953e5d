import pytest

from nres.config import ConfigError, TrainConfig, load_config_file
from nres.build import resolve_config


def test_task_defaults_then_file_then_flags():
    config = resolve_config({"lr": 0.5}, {"lr": 0.25, "task_options": {"dt": 0.01}})
    assert config.lr == 0.25
    assert config.num_particles == 200 and config.unroll_length == 100  # Lorenz paper settings
    assert config.task_options == {"dt": 0.01}


def test_linear_task_defaults_apply():
    config = resolve_config({"task": "linear"})
    assert config.num_particles == 8 and config.unroll_length == 4


@pytest.mark.parametrize(
    "layer, match",
    [
        ({"learning_rate": 1.0}, "unknown setting 'learning_rate'"),
        ({"lr": "fast"}, "'lr' must be a number, got 'fast'"),
        ({"iterations": 2.5}, "'iterations' must be an integer"),
        ({"loss_normalize": "yes"}, "'loss_normalize' must be true or false"),
        ({"estimator": "sgd"}, "unknown estimator 'sgd'"),
        ({"optimizer": "lion"}, "unknown optimizer 'lion'"),
        ({"task": "pong"}, "unknown task 'pong'"),
        ({"sigma": -0.1}, "'sigma' must be positive, got -0.1"),
        ({"num_particles": 0}, "'num_particles' must be positive, got 0"),
        ({"horizon": 50, "unroll_length": 100}, "'unroll_length' W=100 exceeds the horizon T=50"),
        ({"task_options": {"gravity": 1}}, "unknown option 'gravity' for task 'lorenz'"),
        ({"task_options": {"dt": "small"}}, "'dt' must be a number"),
        ({"lr_boundaries": [0]}, "lr_boundaries"),
        ({"lr": float("inf")}, "'lr' must be finite, got inf"),
        ({"lr": float("nan")}, "'lr' must be positive, got nan"),
        ({"sigma": float("inf")}, "'sigma' must be finite"),
        ({"grad_clip": float("inf")}, "'grad_clip' must be finite"),
        ({"lr_decay": 0.0}, "'lr_decay' must be positive"),
        ({"lr_boundaries": [1000]}, r"'lr_boundaries' \[1000\] needs lr_schedule 'piecewise', got 'constant'"),
        ({"lr_schedule": "piecewise", "lr_boundaries": [500, 100]}, r"'lr_boundaries' must increase, got \[500, 100\]"),
        ({"lr_schedule": "piecewise", "lr_boundaries": [500, 500]}, "'lr_boundaries' must increase"),
    ],
)
def test_bad_settings_are_named(layer, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config(layer)


def test_toml_and_yaml_files(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('estimator = "pes"\nnum-particles = 10\n[task_options]\ndt = 0.01\n')
    yaml = tmp_path / "run.yaml"
    yaml.write_text("estimator: tes\nsigma: 0.5\ntask_options:\n  num_test_starts: 5\n")
    a = resolve_config(load_config_file(toml))
    b = resolve_config(load_config_file(yaml))
    assert (a.estimator, a.num_particles, a.task_options["dt"]) == ("pes", 10, 0.01)
    assert (b.estimator, b.sigma, b.task_options["num_test_starts"]) == ("tes", 0.5, 5)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("estimator = \n")
    with pytest.raises(ConfigError, match="bad.toml.*not valid"):
        load_config_file(bad)
    other = tmp_path / "run.ini"
    other.write_text("x=1")
    with pytest.raises(ConfigError, match="must end in .toml"):
        load_config_file(other)


def test_defaults_are_a_valid_config():
    assert resolve_config().estimator == TrainConfig().estimator == "nres"

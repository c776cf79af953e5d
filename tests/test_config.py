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


# -- defaults that depend on the task's options (the rl task's --env) ------------------------
def test_rl_env_picks_its_own_defaults():
    cheetah = resolve_config({"task": "rl", "task_options": {"env": "HalfCheetah-v5"}})
    assert (cheetah.num_particles, cheetah.unroll_length, cheetah.sigma, cheetah.optimizer, cheetah.lr,
            cheetah.loss_normalize) == (30, 100, 0.025, "sgd", 0.002, True)  # measured (nres/tasks/rl/defaults.py)
    assert {k: cheetah.task_options[k] for k in ("policy", "init", "horizon")} == \
        {"policy": "linear", "init": "zeros", "horizon": 1000}
    pendulum = resolve_config({"task": "rl", "task_options": {"env": "InvertedPendulum-v5"}})
    assert pendulum.lr == 0.01 and pendulum.sigma == 0.025
    swimmer = resolve_config({"task": "rl"})
    assert (swimmer.num_particles, swimmer.unroll_length, swimmer.sigma, swimmer.lr) == (30, 100, 0.3, 3.0)
    assert swimmer.task_options["init"] == "zeros"


def test_flags_and_files_win_over_env_defaults():
    file = {"task": "rl", "sigma": 0.01, "task_options": {"env": "HalfCheetah-v5", "init_scale": 0.1}}
    config = resolve_config(file, {"num_particles": 10, "horizon": 500, "task_options": {"init": "zeros"}})
    assert (config.num_particles, config.sigma, config.horizon) == (10, 0.01, 500)
    assert (config.unroll_length, config.lr) == (100, 0.002)  # the rest stays HalfCheetah's
    assert (config.task_options["init"], config.task_options["init_scale"]) == ("zeros", 0.1)
    # the env the last layer names picks the defaults
    pendulum = resolve_config(file, {"task_options": {"env": "InvertedPendulum-v5"}})
    assert pendulum.sigma == 0.01 and pendulum.task_options["init_scale"] == 0.1  # the file's own settings
    assert pendulum.lr == 0.01  # InvertedPendulum's, not HalfCheetah's 0.002


def test_a_recorded_config_resolves_to_itself():
    """config.json holds every setting, so resume never re-applies an env's defaults."""
    from nres.config import config_to_dict

    config = resolve_config({"task": "rl", "task_options": {"env": "HalfCheetah-v5"}}, {"lr": 1e-3})
    assert resolve_config(config_to_dict(config)) == config
    swapped = dict(config_to_dict(config), task_options={**config.task_options, "env": "Swimmer-v5"})
    assert resolve_config(swapped).sigma == 0.025  # recorded settings win over Swimmer's defaults (0.3)


def test_defaults_line_names_the_env_and_what_was_changed():
    from nres.config import config_to_dict
    from nres.tasks import get_task_entry

    config = resolve_config({"task": "rl", "task_options": {"env": "HalfCheetah-v5"}}, {"lr": 1e-3, "horizon": 100})
    line = get_task_entry("rl").defaults_line(config_to_dict(config))
    assert line.startswith("rl defaults for HalfCheetah-v5 (measured")
    assert "num_particles=30" in line and "sigma=0.025" in line and "init=zeros" in line
    assert "changed: lr=0.001 (default 0.002), horizon=100 (default 1000)" in line
    assert get_task_entry("lorenz").defaults_line(config_to_dict(resolve_config())) is None


def test_every_supported_env_has_defaults_and_another_gets_the_fallback_named():
    from nres.tasks.rl.defaults import DEFAULTS, FALLBACK, defaults_for
    from nres.tasks.rl.envs import SUPPORTED

    assert set(SUPPORTED) == set(DEFAULTS)
    chosen = defaults_for({"env": "Pusher-v5"})  # not supported: the task then refuses it by name
    assert chosen.training == FALLBACK.training and "Pusher-v5 (no settings of its own" in chosen.source

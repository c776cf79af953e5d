import dataclasses

import jax
import numpy as np
import pytest

from nres import sizes
from nres.config import ConfigError, TrainConfig

GIB = 2**30


def test_a_setting_that_cannot_fit_is_one_line_naming_it_and_the_size():
    with pytest.raises(ConfigError) as info:
        sizes.check_fits("--num-samples", 10**13, 8 * 10**13, "8 bytes per sample", available=16 * GIB)
    message = str(info.value)
    assert message == ("--num-samples 10000000000000 needs at least 72.8 TiB of memory (8 bytes per sample), "
                       "more than the 16.0 GiB available; lower it")


def test_what_fits_passes():
    sizes.check_fits("--num-particles", 10, 16 * GIB, "x", available=16 * GIB)  # exactly fits
    with pytest.raises(ConfigError):
        sizes.check_fits("--num-particles", 10, 16 * GIB + 1, "x", available=16 * GIB)


def test_a_count_past_int32_is_refused_naming_the_setting():
    sizes.check_count("--num-particles", 10, 2**31 - 1, "environment steps per update")  # the largest that fits
    with pytest.raises(ConfigError) as info:
        sizes.check_count("--num-particles", 300_000_000, 2 * 300_000_000 * 100, "environment steps per update")
    assert str(info.value) == ("--num-particles 300000000 gives 60,000,000,000 environment steps per update, more "
                               "than the 2,147,483,647 a step counter holds; lower it")


def test_available_memory_is_known_on_this_machine():
    available = sizes.available_bytes()
    assert available is None or available > 0


@pytest.mark.parametrize("changes, setting", [
    ({"num_particles": 10**10}, "--num-particles 10000000000"),
    ({"num_particles": 99999999999999999999}, "--num-particles 99999999999999999999"),
    ({"task_options": {"num_test_starts": 10**12}}, "--num-test-starts 1000000000000"),
])
def test_train_settings_are_checked_before_any_task_is_built(changes, setting):
    config = dataclasses.replace(TrainConfig(task="lorenz"), **changes)
    with pytest.raises(ConfigError) as info:
        sizes.check_train(config, available=16 * GIB)
    assert str(info.value).startswith(setting + " needs at least"), info.value
    sizes.check_train(TrainConfig(task="lorenz", num_particles=1000), available=16 * GIB)  # the usual sizes pass


def test_tree_bytes_counts_shapes_without_arrays():
    tree = {"a": jax.ShapeDtypeStruct((3, 4), np.float32), "b": np.zeros((5,), np.int64)}
    assert sizes.tree_bytes(tree) == 3 * 4 * 4 + 5 * 8


def test_human_sizes():
    assert [sizes.human(n) for n in (5, 2048, 37.3 * GIB)] == ["5 B", "2.0 KiB", "37.3 GiB"]

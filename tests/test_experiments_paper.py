"""experiments/paper/: every method resolves to the reference scripts' settings, number for number.

The expected values are typed from OscarcarLi/Noise-Reuse-Evolution-Strategies, ``scripts/``
(lorenz_script.sh, rl_swimmer_script.sh, rl_halfcheetah_script.sh,
lopt_fashion_mnist_mlp_script.sh, lopt_cifar10_cnn_script.sh). The ``-quick`` files keep every
per-method setting and change only updates, seeds and evaluation.
"""

import pathlib

import pytest

from nres.experiments import spec

PAPER = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "paper"

# method -> (estimator, N, W, K, sigma, optimizer, lr, lr schedule, updates); W None: FullES/BPTT (whole episode)
LORENZ = {
    "nres": ("nres", 200, 100, None, 0.04, "sgd", 1e-5, "constant", 5000),
    "pes": ("pes", 200, 100, None, 0.04, "sgd", 1e-5, ("piecewise", (1000,), 0.1), 10000),
    "tes": ("tes", 200, 100, None, 0.04, "sgd", 3e-4, "constant", 5000),
    "fulles": ("fulles", 10, None, None, 0.04, "sgd", 3e-5, "constant", 2000),
    "tbptt": ("tbptt", 200, 100, None, None, "sgd", 3e-4, "constant", 10000),
    "uoro": ("uoro", 200, 100, None, None, "sgd", 1e-13, "constant", 5000),
    "dodge": ("dodge", 200, 100, 2000, None, "sgd", 1e-10, "constant", 5000),
    "bptt": ("bptt", 1, None, None, None, "sgd", 1e-8, "constant", 1000),
}
SWIMMER = {
    "nres": ("nres", 30, 100, None, 0.3, "sgd", 3.0, "constant", 200),
    "pes": ("pes", 30, 100, None, 0.3, "sgd", 1.0, "constant", 200),
    "tes": ("tes", 30, 100, None, 0.3, "sgd", 30.0, "constant", 200),
    "fulles": ("fulles", 3, None, None, 0.3, "sgd", 1.0, "constant", 200),
}
HALFCHEETAH = {
    "nres": ("nres", 300, 20, None, 0.004, "sgd", 3e-5, "constant", 1000),
    "pes": ("pes", 300, 20, None, 0.004, "sgd", 3e-6, "constant", 30000),
    "tes": ("tes", 300, 20, None, 0.004, "sgd", 3e-5, "constant", 1000),
    "fulles": ("fulles", 6, None, None, 0.004, "sgd", 3e-5, "constant", 1000),
}
FASHION_MNIST = {
    "nres": ("nres", 100, 1, None, 0.01, "adam", 3e-4, "constant", 240000),
    "pes": ("pes", 100, 1, None, 0.01, "adam", 3e-4, "constant", 240000),
    **{f"gpes{k}": ("gpes", 100, 1, k, 0.01, "adam", 3e-4, "constant", 240000) for k in (4, 16, 64, 256)},
    "tes": ("tes", 100, 1, None, 0.01, "adam", 1e-3, "constant", 180000),
    "fulles": ("fulles", 10, None, None, 0.01, "adam", 3e-2, "constant", 5000),
    "tbptt": ("tbptt", 100, 1, None, None, "sgd", 1e-2, "constant", 320000),
    "uoro": ("uoro", 100, 1, None, None, "adam", 3e-5, "constant", 260000),
    "dodge": ("dodge", 100, 1, 1001, None, "adam", 1e-5, "constant", 290000),
    "bptt": ("bptt", 1, None, None, None, "adam", 3e-4, "constant", 2000),
}
CIFAR10 = {
    "nres": ("nres", 10, 100, None, 0.01, "adam", 3e-4, "constant", 20000),
    "pes": ("pes", 10, 100, None, 0.01, "adam", 3e-4, "constant", 20000),
    "tes": ("tes", 10, 100, None, 0.01, "adam", 1e-3, "constant", 20000),
    "fulles": ("fulles", 1, None, None, 0.01, "adam", 1e-3, "constant", 20000),
}
# file -> (seeds, horizon T, task options that must hold, methods)
FILES = {
    "lorenz": ((101, 103, 107, 109, 113), 2000, {}, LORENZ),
    "swimmer": ((23, 29, 31, 37, 41), 1000, {"env": "Swimmer-v5", "policy": "linear", "init": "zeros"}, SWIMMER),
    "halfcheetah": ((83, 89, 97, 101, 103), 1000, {"env": "HalfCheetah-v5", "policy": "linear",
                                                   "init": "variance_scaling", "init_scale": 0.03}, HALFCHEETAH),
    "lopt_fashion_mnist": ((53, 59, 61, 67, 71), 1000, {
        "dataset": "fashion_mnist", "image_size": 8, "inner_model": "mlp", "hidden_sizes": "32,32,32",
        "activation": "gelu", "batch_size": 128, "outer_loss": "ce", "single_sequence": True, "sequence_seed": 88},
        FASHION_MNIST),
    "lopt_cifar10": ((23, 29, 31, 37, 41), 1000, {
        "dataset": "cifar10", "image_size": 32, "inner_model": "cnn", "conv_channels": "32,32,32,32",
        "activation": "relu", "batch_size": 32, "outer_loss": "clipped_ce", "single_sequence": True,
        "sequence_seed": 66}, CIFAR10),
}
# settings a -quick file may change (besides updates, seeds and the evaluation stride)
QUICK_MAY_CHANGE = ("checkpoint_every", "num_test_starts", "num_eval_episodes")


def resolved(method, seed):
    config = method.config(seed)
    schedule = (config.lr_schedule if config.lr_schedule == "constant"
                else (config.lr_schedule, tuple(config.lr_boundaries), config.lr_decay))
    window = None if config.estimator in ("fulles", "bptt") else config.unroll_length
    es = config.estimator in ("nres", "pes", "gpes", "tes", "fulles")
    return (config.estimator, config.num_particles, window, config.noise_period, config.sigma if es else None,
            config.optimizer, config.lr, schedule, method.iterations), config


@pytest.mark.parametrize("stem", sorted(FILES))
def test_paper_files_hold_the_reference_settings(stem):
    seeds, horizon, options, expected = FILES[stem]
    experiment = spec.load(PAPER / f"{stem}.toml")
    assert experiment.seeds == seeds
    assert [m.name for m in experiment.methods] == list(expected)
    for method in experiment.methods:
        got, config = resolved(method, seeds[0])
        assert got == expected[method.name], f"{stem}.toml, methods.{method.name}"
        assert config.horizon in (None, horizon) and method.settings.get("task_options", {}).get("horizon",
                                                                                                horizon) == horizon
        assert not config.loss_normalize and config.grad_clip is None, method.name
        for key, value in options.items():
            assert config.task_options[key] == value, f"{stem}.toml, methods.{method.name}: {key}"


@pytest.mark.parametrize("stem", ["lorenz", "swimmer", "halfcheetah", "lopt_fashion_mnist"])
def test_quick_files_keep_every_per_method_setting(stem):
    full, quick = spec.load(PAPER / f"{stem}.toml"), spec.load(PAPER / f"{stem}-quick.toml")
    assert quick.seeds == full.seeds[: len(quick.seeds)] and quick.targets == full.targets
    assert [m.name for m in quick.methods] == [m.name for m in full.methods]
    for f, q in zip(full.methods, quick.methods):
        assert q.iterations < f.iterations, q.name
        strip = lambda s: {k: v for k, v in s.items() if k not in QUICK_MAY_CHANGE + ("task_options",)}
        assert strip(q.settings) == strip(f.settings), q.name
        assert strip(q.settings["task_options"]) == strip(f.settings["task_options"]), q.name
        assert resolved(q, quick.seeds[0])[0][:-1] == resolved(f, full.seeds[0])[0][:-1], q.name

"""Learned-optimizer meta-training on real image data (SPEC section 6).

``nres train --task lopt`` meta-trains the per-parameter MLP optimizer of
:mod:`~nres.tasks.lopt.learned_optimizer` (``theta``, d = 1762) to train a small
classifier (:mod:`~nres.tasks.lopt.inner_models`) on digits, Fashion-MNIST or CIFAR-10
(:mod:`~nres.tasks.lopt.datasets`). :mod:`~nres.tasks.lopt.baselines` runs SGD,
momentum and Adam with tuned learning rates on the same inner problem for comparison.
"""

from nres.tasks import TaskEntry
from nres.tasks.lopt.task import LoptConfig, build_problem, make_lopt_task


def _data_files(options) -> list:
    """The dataset files the task reads (their sizes and times), for stored compiled programs."""
    from nres.tasks.lopt.datasets import files_fingerprint

    defaults = LoptConfig()
    return files_fingerprint(options.get("dataset", defaults.dataset), options.get("data_dir", defaults.data_dir))


ENTRY = TaskEntry(
    name="lopt",
    config_cls=LoptConfig,
    build=make_lopt_task,
    # A problem that visibly meta-learns in a few minutes on 2 CPU cores (T = 100 from
    # LoptConfig). The paper's settings (T = 1000, N = 100, W = 1, Adam 3e-4) are
    # examples/lopt_paper.toml.
    training_defaults={
        "num_particles": 20,
        "unroll_length": 10,
        "sigma": 0.01,
        "optimizer": "adam",
        "lr": 1e-2,
        "iterations": 300,
        "eval_every": 50,
        "checkpoint_every": 50,
    },
    description="learned-optimizer meta-training, theta = per-parameter MLP (d = 1762)",
    fingerprint=_data_files,
    metrics=("test_loss", "test_accuracy"),
)

__all__ = ["ENTRY", "LoptConfig", "build_problem", "make_lopt_task"]

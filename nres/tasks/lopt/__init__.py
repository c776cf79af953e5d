"""Learned-optimizer meta-training on real image data (SPEC section 6).

``nres train --task lopt`` meta-trains the per-parameter MLP optimizer of
:mod:`~nres.tasks.lopt.learned_optimizer` (``theta``, d = 1762) to train a small
classifier (:mod:`~nres.tasks.lopt.inner_models`) on digits, Fashion-MNIST or CIFAR-10
(:mod:`~nres.tasks.lopt.datasets`). :mod:`~nres.tasks.lopt.baselines` runs SGD,
momentum and Adam with tuned learning rates on the same inner problem for comparison.
"""

from nres.tasks import TaskEntry
from nres.tasks.lopt.task import LoptConfig, build_problem, make_lopt_task

ENTRY = TaskEntry(
    name="lopt",
    config_cls=LoptConfig,
    build=make_lopt_task,
    training_defaults={
        "num_particles": 100,
        "unroll_length": 1,
        "sigma": 0.01,
        "optimizer": "adam",
        "lr": 3e-4,
        "iterations": 100,
        "checkpoint_every": 50,
    },
    description="learned-optimizer meta-training, theta = per-parameter MLP (d = 1762)",
)

__all__ = ["ENTRY", "LoptConfig", "build_problem", "make_lopt_task"]

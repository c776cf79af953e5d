"""Learned-optimizer meta-training as an nres :class:`~nres.Task` (SPEC section 6).

* ``theta``: the learned optimizer's MLP (:mod:`nres.tasks.lopt.learned_optimizer`, d = 1762).
* inner state ``s_t`` (:class:`~nres.tasks.lopt.problem.InnerState`): the inner model's
  flat parameters ``[P]`` and the optimizer's momenta ``[P, 6]`` and step counter.
* ``step``: one inner training step (mean cross-entropy gradient on a training batch,
  then the learned update under ``theta``); ``loss``: the outer loss of the new
  parameters on a validation batch. Both members of an antithetic pair share the batch.
* ``T`` = ``horizon`` inner steps per episode (1000 in the paper).
* single-sequence mode: the inner initialisation and the batch of step ``t`` come from
  ``sequence_seed`` instead of the episode key, so every episode trains the same
  initial model on the same batch order.
* ``evaluate(theta, key)``: ``eval_runs`` whole ``T``-step inner runs under the
  unperturbed ``theta`` from fresh seeds (vmapped): ``test_loss`` = mean outer loss on
  test-split batches over the run, ``test_accuracy`` = final accuracy on the test split.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax

from nres.task import Task
from nres.tasks.lopt import learned_optimizer as lopt
from nres.tasks.lopt.datasets import DATASETS, ImageDataset, load_dataset
from nres.tasks.lopt.inner_models import ACTIVATIONS, OUTER_LOSSES, InnerModel, cnn, mlp
from nres.tasks.lopt.problem import InnerOptimizer, InnerProblem, InnerState, mean_rollout

INNER_MODELS = ("mlp", "cnn")


def parse_sizes(name: str, text: str) -> tuple[int, ...]:
    """``"32,32,32" -> (32, 32, 32)``; a clear error for anything else."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or any(s <= 0 for s in sizes):
        raise ValueError(f"{name} must be comma-separated positive integers such as '32,32,32', got {text!r}")
    return sizes


@dataclasses.dataclass(frozen=True)
class LoptConfig:
    """Options of the learned-optimizer task (each is a ``nres train`` flag).

    Attributes:
      dataset: ``digits`` (bundled with scikit-learn), ``fashion_mnist`` or ``cifar10``.
      data_dir: folder holding ``fashion_mnist/`` or ``cifar-10-batches-py/``; empty means
        ``$NRES_DATA_DIR``, else ``~/.cache/nres/data``.
      image_size: images are resized to ``image_size x image_size`` pixels.
      inner_model: ``mlp`` or ``cnn``.
      hidden_sizes: the MLP's hidden widths, comma-separated.
      activation: the MLP's activation (gelu, relu, tanh, sigmoid, swish).
      conv_channels: the CNN's channels per conv block, comma-separated.
      batch_size: images per inner training batch and per outer (validation) batch.
      outer_loss: ``ce``, ``accuracy`` (error rate) or ``clipped_ce`` (per-example CE
        clipped at ``1.5 ln 10``).
      single_sequence: fix the inner initialisation and batch order by ``sequence_seed``.
      sequence_seed: seed of the single sequence.
      horizon: ``T``, inner training steps per episode (the paper's is 1000; 100 here so
        the default run meta-learns in minutes).
      eval_runs: inner training runs (fresh seeds) averaged by the evaluation.
    """

    dataset: str = "digits"
    data_dir: str = ""
    image_size: int = 8
    inner_model: str = "mlp"
    hidden_sizes: str = "32,32,32"
    activation: str = "gelu"
    conv_channels: str = "32,32,32,32"
    batch_size: int = 128
    outer_loss: str = "ce"
    single_sequence: bool = False
    sequence_seed: int = 0
    horizon: int = 100
    eval_runs: int = 4

    def __post_init__(self):
        choices = {"dataset": DATASETS, "inner_model": INNER_MODELS, "activation": tuple(ACTIVATIONS),
                   "outer_loss": tuple(OUTER_LOSSES)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        for name in ("image_size", "batch_size", "horizon", "eval_runs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        parse_sizes("hidden_sizes", self.hidden_sizes)
        parse_sizes("conv_channels", self.conv_channels)


def build_inner_model(config: LoptConfig, image_shape: Sequence[int]) -> InnerModel:
    if config.inner_model == "cnn":
        return cnn(image_shape, parse_sizes("conv_channels", config.conv_channels))
    return mlp(image_shape, parse_sizes("hidden_sizes", config.hidden_sizes), config.activation)


def build_problem(config: LoptConfig, dataset: Optional[ImageDataset] = None) -> InnerProblem:
    """The inner problem of ``config``; ``dataset`` replaces loading ``config.dataset``."""
    if dataset is None:
        dataset = load_dataset(config.dataset, config.data_dir, config.image_size)
    return InnerProblem(dataset, build_inner_model(config, dataset.image_shape), config.batch_size, config.outer_loss)


def learned_optimizer(theta: dict, sizes: Sequence[int]) -> InnerOptimizer:
    """The learned optimizer under ``theta`` as an update rule on flat parameters."""
    return InnerOptimizer(lopt.init_state, lambda state, params, grad: lopt.update(theta, state, params, grad, sizes))


def make_lopt_task(config: LoptConfig = LoptConfig(), problem: Optional[InnerProblem] = None) -> Task:
    """The meta-training task; ``problem`` (see :func:`build_problem`) skips loading data."""
    problem = build_problem(config) if problem is None else problem
    sizes, horizon = problem.sizes, config.horizon
    sequence_key = jax.random.PRNGKey(config.sequence_seed) if config.single_sequence else None

    def init_state(key) -> InnerState:
        if sequence_key is not None:
            key = jax.random.fold_in(sequence_key, 0)
        params = problem.init_params(key)
        return InnerState(params, lopt.init_state(params))

    def sample_batch(key, t):
        if sequence_key is not None:
            key = jax.random.fold_in(jax.random.fold_in(sequence_key, 1), t)
        return problem.sample_batch(key, outer_split="valid")

    def step(theta, state, t, key, batch):
        del t, key  # the step count lives in state.opt_state.step
        return problem.inner_step(learned_optimizer(theta, sizes), state, batch)

    def loss(theta, state, t, batch):
        del theta, t
        return problem.outer_loss(state.params, batch.outer_images, batch.outer_labels)

    def evaluate(theta, key):
        return mean_rollout(problem, learned_optimizer(theta, sizes), key, horizon, config.eval_runs)

    name = f"lopt-{problem.dataset.name}-{problem.model.name}"
    return Task(lopt.init_theta, init_state, step, loss, horizon, sample_batch=sample_batch, evaluate=evaluate, name=name)

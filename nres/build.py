"""From settings to objects: the one place a run's config becomes a task, an estimator
and an optimiser.

* :func:`resolve_config`: setting layers (defaults < the task's paper defaults, which may
  depend on its options < a config file < flags) merged into a validated :class:`nres.config.TrainConfig`.
* :func:`task_options`: the task's options of a config (the options dataclass filled
  in, ``horizon`` applied); :func:`build_task` builds the task from them.
* :func:`build_estimator`, :func:`make_optimizer`: the gradient estimator and the optax
  optimiser of a config.
* :func:`program_identity`: what of a config determines the compiled programs (for
  :class:`nres.compilation_cache.Program`); run-time settings (seed, budget, schedules
  of evaluation and checkpoints) are left out, so a new seed loads stored programs.

Dependencies point down: this module imports :mod:`nres.config`, :mod:`nres.tasks` and
:mod:`nres.estimators`; nothing it imports imports it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import jax
import numpy as np
import optax

from nres.config import TRAIN_FIELDS, ConfigError, TrainConfig, coerce, config_to_dict, validate
from nres.estimators import ES_ESTIMATORS, estimator_names, make_estimator
from nres.shared import check_estimator
from nres.optimizer import HYPERPARAMETERS, hyperparameters, outer_optimizer, schedule
from nres.task import Task
from nres.tasks import get_task_entry

# Settings read only by the host loop (or by arguments of the programs): changing them
# never changes a compiled program.
RUNTIME_SETTINGS = ("seed", "iterations", "eval_every", "eval_at_end", "checkpoint_every", "max_nonfinite")


def resolve_config(*layers: Mapping[str, Any]) -> TrainConfig:
    """Merge setting layers (later wins) into a validated :class:`TrainConfig`.

    Under every layer lie the task's paper defaults (:meth:`nres.tasks.TaskEntry.defaults`
    of the options the layers give: settings and options).
    Unknown keys, wrong types and bad values raise :class:`ConfigError` naming them.
    """
    merged: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key == "task_options":
                if not isinstance(value, Mapping):
                    raise ConfigError(f"setting 'task_options' must be a table, got {value!r}")
                options.update({k.replace("-", "_"): v for k, v in value.items()})
            elif key not in TRAIN_FIELDS:
                raise ConfigError(f"unknown setting {key!r}")
            else:
                merged[key] = coerce(key, value, TRAIN_FIELDS[key].type)
    task_name = merged.get("task", TrainConfig.task)
    try:
        entry = get_task_entry(task_name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    option_fields = {f.name: f for f in dataclasses.fields(entry.config_cls)}
    for key, value in options.items():
        if key not in option_fields:
            known = ", ".join(option_fields) or "none"
            raise ConfigError(f"unknown option {key!r} for task {task_name!r} (its options: {known})")
        options[key] = coerce(key, value, option_fields[key].type)
    defaults = entry.defaults(options)  # may depend on the options given (the rl task's --env)
    base = {k: coerce(k, v, TRAIN_FIELDS[k].type) for k, v in defaults.training.items()}
    merged = {**base, **merged}
    options = {**{k: coerce(k, v, option_fields[k].type) for k, v in defaults.options.items()}, **options}
    config = TrainConfig(**merged, task_options=options)
    validate(config, estimator_names())
    return config


def task_options(config: TrainConfig):
    """The task's options dataclass of ``config``: its ``task_options`` over the
    dataclass's defaults, with ``config.horizon`` as the ``horizon`` option."""
    entry = get_task_entry(config.task)
    options = dict(config.task_options)
    if config.horizon is not None:
        if "horizon" not in {f.name for f in dataclasses.fields(entry.config_cls)}:
            raise ConfigError(f"task {config.task!r} has a fixed horizon; remove setting 'horizon'")
        options["horizon"] = config.horizon
    try:
        return entry.config_cls(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"task {config.task!r}: {err}") from None


def build_task(config: TrainConfig) -> Task:
    """The task of a config, with ``config.horizon`` overriding the task's own ``T``."""
    options = task_options(config)
    try:
        return get_task_entry(config.task).build(options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"task {config.task!r}: {err}") from None


def resolved_config(config: TrainConfig, task: Task) -> TrainConfig:
    """``config`` with all task options (defaults included) and the task's ``T`` as ``horizon``.

    Tasks whose options have no ``horizon`` field keep ``horizon`` unset (their ``T`` is
    fixed). Building a task from the result gives the same task.
    """
    options = dataclasses.asdict(task_options(dataclasses.replace(config, horizon=None)))
    has_horizon = "horizon" in options
    options.pop("horizon", None)
    return dataclasses.replace(config, task_options=options, horizon=task.horizon if has_horizon else config.horizon)


def build_estimator(config: TrainConfig, task: Task):
    """The gradient estimator of a config, for ``task``."""
    # ES-only switches, passed only when changed from their defaults
    options = {name: getattr(config, name) for name in ("loss_normalize", "store_noise")
               if getattr(config, name) != getattr(TrainConfig, name)}
    for name in options:
        if config.estimator not in ES_ESTIMATORS:
            raise ConfigError(
                f"{name} applies to the ES estimators ({', '.join(ES_ESTIMATORS)}), not to {config.estimator!r}"
            )
    try:
        estimator = make_estimator(
            config.estimator,
            task,
            num_particles=config.num_particles,
            unroll_length=config.unroll_length,
            sigma=config.sigma,
            noise_period=config.noise_period,
            **options,
        )
        check_estimator(task, estimator)  # a task's shared state needs window-aligned ES windows
        return estimator
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None


def optimizer_hyperparameters(config: TrainConfig) -> dict:
    """The values :func:`make_optimizer`'s state holds for ``config`` (an input of the
    init program, see :func:`nres.step.make_step`); a constant schedule has no boundaries."""
    boundaries = config.lr_boundaries if config.lr_schedule == "piecewise" else ()
    return hyperparameters(config.lr, config.lr_decay, boundaries)


def learning_rate(config: TrainConfig) -> optax.Schedule:
    """``count -> learning rate`` of a config (constant or piecewise)."""
    return schedule(**optimizer_hyperparameters(config))


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The outer optimiser (:func:`nres.optimizer.outer_optimizer`): optional global-norm
    clipping, then SGD or Adam, its learning rate and schedule held as data."""
    return outer_optimizer(config.optimizer, grad_clip=config.grad_clip, **optimizer_hyperparameters(config))


def seed_key(seed: int):
    """``jax.random.PRNGKey(seed)``, built on the host when that is exact (no program runs
    for it): the default threefry key of a seed in ``[0, 2**32)`` is ``[0, seed]``."""
    if jax.config.jax_default_prng_impl != "threefry2x32" or not 0 <= seed < 2**32:
        return jax.random.PRNGKey(seed)
    return np.asarray([0, seed], np.uint32)


def program_identity(config: TrainConfig, estimator, name: str) -> Optional[dict]:
    """What determines the compiled program ``name`` of a run beside nres's code: the
    config without :data:`RUNTIME_SETTINGS` and without the optimiser's hyperparameters
    (data of the programs, :mod:`nres.optimizer`; only the number of schedule boundaries
    counts), the estimator's settings, and the task's data where it reads files. None (never stored) for a task from a module of your own,
    whose code nres cannot fingerprint."""
    if ":" in config.task:
        return None
    entry = get_task_entry(config.task)
    data = entry.fingerprint(config.task_options) if entry.fingerprint else None
    settings = {k: v for k, v in config_to_dict(config).items() if k not in RUNTIME_SETTINGS + HYPERPARAMETERS}
    settings["lr_boundaries_count"] = len(optimizer_hyperparameters(config)["lr_boundaries"])  # the schedule's structure; its values are data
    fields = {f.name: repr(getattr(estimator, f.name)) for f in dataclasses.fields(estimator) if f.name != "task"}
    return {"program": name, "config": settings, "estimator": fields, "data": data}

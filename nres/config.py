"""The resolved settings of a training run, and loading them from TOML/YAML files.

Precedence: global defaults < the task's paper defaults (``TaskEntry.training_defaults``)
< the config file < command-line flags; :func:`nres.build.resolve_config` merges them
(it knows the tasks and estimators, which this module does not import). Task options
live in ``task_options`` and are checked against the task's own options dataclass.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
import typing
from typing import Any, Mapping, Optional

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "piecewise")
COMPILE_FOR = ("steps", "start")  # what the training programs are compiled for (nres.compiler)


class ConfigError(ValueError):
    """A bad setting; the message names the setting and the value."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of ``nres train``.

    Attributes:
      task: application name (``nres.tasks``).
      estimator: gradient estimator name (``nres.estimators.ESTIMATORS``).
      num_particles: ``N`` antithetic pairs.
      unroll_length: ``W`` steps per update (FullES uses ``T``).
      horizon: ``T``; ``None`` keeps the task's own.
      sigma: ES noise scale.
      noise_period: ``K`` of GPES_K (only for ``gpes``).
      optimizer, lr: the outer optax optimiser and its learning rate.
      lr_schedule: ``constant`` or ``piecewise`` (multiply by ``lr_decay`` at each of
        ``lr_boundaries``, in updates), as the paper's PES runs do.
      grad_clip: clip the gradient to this global norm (``None``: off).
      loss_normalize: divide each window's gradient by the standard deviation over
        pairs of the pairs' mean antithetic loss difference (scale-free steps).
      store_noise: keep each ES pair's noise in the estimator state; ``False`` keeps
        none and regenerates it from the episode keys (same gradient, ``O(N)`` instead
        of ``O(N d)`` state; needs W dividing T and K a multiple of W or >= T).
      iterations: number of updates.
      seed: PRNG seed of everything random in the run.
      eval_every: evaluate the unperturbed ``theta`` every this many updates (0: never
        during training); evaluation time is excluded from ``wall_time_s``.
      eval_at_end: evaluate the final ``theta`` when training ends (turn off to defer
        all evaluation to ``nres eval``).
      checkpoint_every: checkpoint every this many updates (and at the end).
      max_nonfinite: stop after this many consecutive windows with non-finite losses.
      compile_for: ``steps`` (the fastest updates) or ``start`` (the shortest compile of
        the training programs on CPU, slower updates); see :mod:`nres.compiler`.
      task_options: the task's own options (fields of its options dataclass).
    """

    task: str = "lorenz"
    estimator: str = "nres"
    num_particles: int = 200
    unroll_length: int = 100
    horizon: Optional[int] = None
    sigma: float = 0.04
    noise_period: Optional[int] = None
    optimizer: str = "sgd"
    lr: float = 1e-5
    lr_schedule: str = "constant"
    lr_boundaries: tuple = ()
    lr_decay: float = 0.1
    grad_clip: Optional[float] = None
    loss_normalize: bool = False
    store_noise: bool = True
    iterations: int = 1000
    seed: int = 0
    eval_every: int = 0
    eval_at_end: bool = True
    checkpoint_every: int = 500
    max_nonfinite: int = 20
    compile_for: str = "steps"
    task_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def coerce(name: str, value: Any, annotation) -> Any:
    """Check ``value`` against a field annotation, converting losslessly; raise ConfigError."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"Optional": Optional, "Any": Any, "Mapping": Mapping, "tuple": tuple})
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        annotation = next(a for a in args if a is not type(None))
        origin = typing.get_origin(annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"setting {name!r} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"setting {name!r} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"setting {name!r} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"setting {name!r} must be a string, got {value!r}")
    if annotation is tuple or origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(value)
        raise ConfigError(f"setting {name!r} must be a list, got {value!r}")
    return value


def load_config_file(path: str | pathlib.Path) -> dict:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file into a flat dict.

    Top-level keys are ``TrainConfig`` fields (dashes or underscores); a ``[task_options]``
    table (or ``task_options:`` mapping) holds the task's options.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a directory")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from None
    try:
        if path.suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover
                import tomli as tomllib
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {str(path)!r} must end in .toml, .yaml, .yml or .json")
    except ConfigError:
        raise
    except Exception as err:  # the parsers' own error types differ
        raise ConfigError(f"config file {str(path)!r} is not valid: {_parse_error(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a table of settings")
    return {key.replace("-", "_"): value for key, value in data.items()}


def _parse_error(err: Exception) -> str:
    """A parser's error on one line: YAML's several lines become ``problem at line L,
    column C`` (1-based); TOML's and JSON's are one line already."""
    mark = getattr(err, "problem_mark", None)
    if mark is not None and getattr(err, "problem", None):
        return f"{err.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(err).split())


def validate(config: TrainConfig, estimators) -> None:
    """Value checks that need no task (the task and estimator check the rest)."""

    def positive(name, allow_none=False):
        value = getattr(config, name)
        if value is None and allow_none:
            return
        if not value > 0:
            raise ConfigError(f"setting {name!r} must be positive, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"setting {name!r} must be finite, got {value!r}")

    if config.estimator not in estimators:
        raise ConfigError(f"unknown estimator {config.estimator!r}; choose one of {', '.join(estimators)}")
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {config.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if config.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"unknown lr_schedule {config.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    if config.compile_for not in COMPILE_FOR:
        raise ConfigError(f"unknown compile_for {config.compile_for!r}; choose one of {', '.join(COMPILE_FOR)}")
    for name in ("num_particles", "unroll_length", "sigma", "lr", "lr_decay", "iterations", "checkpoint_every",
                 "max_nonfinite"):
        positive(name)
    for name in ("horizon", "noise_period", "grad_clip"):
        positive(name, allow_none=True)
    if not 0 <= config.seed < 2**32:
        raise ConfigError(f"setting 'seed' must be in [0, 2**32 - 1], got {config.seed}")
    if config.eval_every < 0:
        raise ConfigError(f"setting 'eval_every' must be >= 0, got {config.eval_every}")
    if config.horizon is not None and config.unroll_length > config.horizon and config.estimator != "fulles":
        raise ConfigError(f"setting 'unroll_length' W={config.unroll_length} exceeds the horizon T={config.horizon}")
    boundaries = list(config.lr_boundaries)
    if any(not isinstance(b, int) or isinstance(b, bool) or b <= 0 for b in boundaries):
        raise ConfigError(f"setting 'lr_boundaries' must be positive update counts, got {boundaries}")
    if any(a >= b for a, b in zip(boundaries, boundaries[1:])):
        raise ConfigError(f"setting 'lr_boundaries' must increase, got {boundaries}")
    if boundaries and config.lr_schedule != "piecewise":
        raise ConfigError(f"setting 'lr_boundaries' {boundaries} needs lr_schedule 'piecewise', got "
                          f"{config.lr_schedule!r}")


def config_to_dict(config: TrainConfig) -> dict:
    data = dataclasses.asdict(config)
    data["lr_boundaries"] = list(config.lr_boundaries)
    data["task_options"] = dict(config.task_options)
    return data

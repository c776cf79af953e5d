"""An experiment file: methods x seeds of one task, a budget, an evaluation schedule, targets.

The file is TOML (see ``experiments/*.toml``)::

    name = "lorenz"                      # optional; default: the file's stem
    description = "..."                  # optional, one line
    seeds = [0, 1, 2, 3, 4]              # or a count: seeds = 5 (seeds 0..4; the default)
    metric = "test_loss"                 # an evaluation metric of the task
    goal = "min"                         # "min" (a loss) or "max" (a return)
    targets = [100.0, 50.0]              # levels of the metric to reach
    threads_per_run = 1                  # CPU threads each run may use (sets --jobs' default)

    [budget]                             # one of: iterations, env_steps (per method)
    iterations = 5000

    [evaluation]
    every = 250                          # deferred evaluation of every this many saved thetas

    [settings]                           # `nres train` settings shared by every method
    task = "lorenz"
    num_particles = 200
    [settings.task_options]
    num_test_starts = 1000

    [methods.nres]                       # one table per method; `estimator` defaults to the name
    [methods.pes]
    lr_schedule = "piecewise"
    lr_boundaries = [1000]

    [reference]                          # optional, lopt only: tuned hand-designed optimizers
    lopt_baselines = ["sgd", "momentum", "adam"]

A method table holds ``nres train`` settings (the ``TrainConfig`` fields) that replace the
shared ones, plus ``estimator``, ``label`` and its own ``[budget]``/``every`` overrides.
Every error is one line naming the offending key (``methods.pes.lr``).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import sys
from typing import Any, Mapping, Optional

from nres.config import TRAIN_FIELDS, ConfigError, TrainConfig, coerce
from nres.build import resolve_config

GOALS = ("min", "max")
BUDGET_KEYS = ("iterations", "env_steps")
# Settings a comparison decides itself: evaluation is deferred and the seed comes from `seeds`.
RESERVED = ("seed", "eval_every", "eval_at_end", "iterations")
TOP_KEYS = ("name", "description", "seeds", "metric", "goal", "targets", "threads_per_run", "budget",
            "evaluation", "settings", "methods", "reference")
METHOD_KEYS = ("estimator", "label", "budget", "every")
REFERENCE_KEYS = ("lopt_baselines", "num_runs")


class ExperimentError(ConfigError):
    """A bad experiment file; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Method:
    """One curve of the comparison.

    Attributes:
      name: the method's key in the file (and its directory under the output).
      label: legend text.
      settings: ``nres train`` settings of its runs (seed and iterations excluded).
      iterations: updates per run (from the budget).
      eval_every: deferred evaluation of every this many saved thetas.
      env_steps_per_update: environment steps one update spends (burn-in excluded).
    """

    name: str
    label: str
    settings: Mapping[str, Any]
    iterations: int
    eval_every: int
    env_steps_per_update: int

    def config(self, seed: int) -> TrainConfig:
        """The resolved ``TrainConfig`` of seed ``seed``: evaluation deferred to ``nres eval``."""
        return resolve_config(self.settings, {"seed": seed, "iterations": self.iterations, "eval_every": 0,
                                              "eval_at_end": False})


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A parsed experiment file (see the module docstring)."""

    name: str
    description: str
    task: str
    seeds: tuple[int, ...]
    metric: str
    goal: str
    targets: tuple[float, ...]
    threads_per_run: int
    methods: tuple[Method, ...]
    lopt_baselines: tuple[str, ...] = ()
    reference_runs: int = 4
    source: Optional[str] = None

    def reached(self, value: float, target: float) -> bool:
        """Whether a metric value meets a target (``<=`` for ``min``, ``>=`` for ``max``)."""
        return value <= target if self.goal == "min" else value >= target

    def with_seeds(self, count: int) -> "Experiment":
        return dataclasses.replace(self, seeds=tuple(range(count)))

    def only(self, names) -> "Experiment":
        known = [m.name for m in self.methods]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ExperimentError(f"--methods: {unknown[0]!r} is not a method of {self.name!r} ({', '.join(known)})")
        return dataclasses.replace(self, methods=tuple(m for m in self.methods if m.name in names))


def _table(data: Any, key: str) -> dict:
    if not isinstance(data, dict):
        raise ExperimentError(f"key {key!r} must be a table, got {data!r}")
    return data


def _check_keys(data: Mapping, allowed, where: str) -> None:
    for key in data:
        if key not in allowed:
            raise ExperimentError(f"unknown key {where + key!r}")


def _typed(key: str, value: Any, annotation) -> Any:
    try:
        return coerce(key, value, annotation)
    except ConfigError as err:
        raise ExperimentError(str(err).replace("setting ", "key ", 1)) from None


def _positive_int(key: str, value: Any) -> int:
    value = _typed(key, value, int)
    if value <= 0:
        raise ExperimentError(f"key {key!r} must be positive, got {value}")
    return value


def _settings(data: Mapping, where: str) -> dict:
    """``nres train`` settings of a table, checked key by key."""
    out = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        full = where + raw_key
        if key in RESERVED:
            raise ExperimentError(f"key {full!r} is set by the comparison (seeds, budget, evaluation), remove it")
        if key == "task_options":
            out[key] = {k.replace("-", "_"): v for k, v in _table(value, full).items()}
        elif key in TRAIN_FIELDS:
            out[key] = _typed(full, value, TRAIN_FIELDS[key].type)
        else:
            raise ExperimentError(f"unknown key {full!r}")
    return out


def _horizon(settings: Mapping) -> int:
    from nres.tasks import get_task_entry

    if settings.get("horizon") is not None:
        return settings["horizon"]
    entry = get_task_entry(settings.get("task", TrainConfig.task))
    return settings.get("task_options", {}).get("horizon") or entry.config_cls().horizon


def env_steps_per_update(config: TrainConfig, horizon: int) -> int:
    """Environment steps of one update (SPEC section 4): ``2 N W`` for ES, ``2 N T`` for FullES,
    ``N W`` for the autodiff baselines (``N T`` for BPTT)."""
    from nres.estimators import ES_ESTIMATORS

    window = horizon if config.estimator in ("fulles", "bptt") else config.unroll_length
    pairs = 2 if config.estimator in ES_ESTIMATORS else 1
    return pairs * config.num_particles * window


def _budget(data: Mapping, where: str, default: Optional[dict]) -> dict:
    table = _table(data, where.rstrip("."))
    _check_keys(table, BUDGET_KEYS, where)
    if len(table) != 1:
        if not table and default is not None:
            return default
        raise ExperimentError(f"key {where.rstrip('.')!r} must set exactly one of {', '.join(BUDGET_KEYS)}")
    (key, value), = table.items()
    return {key: _positive_int(where + key, value)}


def parse(data: Mapping, name: str = "experiment", source: Optional[str] = None) -> Experiment:
    """Check an experiment table (a parsed TOML file) and resolve every method's settings."""
    from nres.estimators import estimator_names

    _check_keys(data, TOP_KEYS, "")
    for required in ("methods", "budget", "targets"):
        if required not in data:
            raise ExperimentError(f"missing key {required!r}")
    name = _typed("name", data.get("name", name), str)
    description = _typed("description", data.get("description", ""), str)
    seeds_value = data.get("seeds", 5)
    if isinstance(seeds_value, int) and not isinstance(seeds_value, bool):
        seeds = tuple(range(_positive_int("seeds", seeds_value)))
    else:
        seeds = tuple(_typed(f"seeds[{i}]", s, int) for i, s in enumerate(_typed("seeds", seeds_value, tuple)))
        if not seeds:
            raise ExperimentError("key 'seeds' is empty")
        if len(set(seeds)) != len(seeds):
            raise ExperimentError(f"key 'seeds' repeats a seed: {list(seeds)}")
    metric = _typed("metric", data.get("metric", "test_loss"), str)
    goal = _typed("goal", data.get("goal", "min"), str)
    if goal not in GOALS:
        raise ExperimentError(f"key 'goal' must be one of {', '.join(GOALS)}, got {goal!r}")
    targets = tuple(_typed(f"targets[{i}]", t, float) for i, t in enumerate(_typed("targets", data["targets"], tuple)))
    if any(not math.isfinite(t) for t in targets):
        raise ExperimentError(f"key 'targets' must be finite numbers, got {list(targets)}")
    threads = _positive_int("threads_per_run", data.get("threads_per_run", 1))
    budget = _budget(data["budget"], "budget.", None)
    evaluation = _table(data.get("evaluation", {}), "evaluation")
    _check_keys(evaluation, ("every",), "evaluation.")
    every = _positive_int("evaluation.every", evaluation.get("every", 1))
    shared = _settings(_table(data.get("settings", {}), "settings"), "settings.")
    task = shared.get("task", TrainConfig.task)

    methods_table = _table(data["methods"], "methods")
    if not methods_table:
        raise ExperimentError("key 'methods' is empty: name at least one method ([methods.nres])")
    methods = []
    for method_name, body in methods_table.items():
        where = f"methods.{method_name}."
        body = dict(_table(body, where.rstrip(".")))
        if not method_name.replace("_", "").replace("-", "").isalnum():
            raise ExperimentError(f"key {where.rstrip('.')!r}: method names are letters, digits, - and _")
        explicit = "estimator" in body
        estimator = _typed(where + "estimator", body.pop("estimator", method_name), str)
        if estimator not in estimator_names():
            key = where + "estimator" if explicit else where.rstrip(".")
            hint = "" if explicit else " (or set its `estimator`)"
            raise ExperimentError(f"key {key!r}: unknown method {estimator!r}; choose one of "
                                  f"{', '.join(estimator_names())}{hint}")
        label = _typed(where + "label", body.pop("label", method_name), str)
        method_budget = _budget(body.pop("budget"), where + "budget.", budget) if "budget" in body else budget
        method_every = _positive_int(where + "every", body.pop("every")) if "every" in body else every
        own = _settings(body, where)
        settings = {**shared, **own, "estimator": estimator,
                    "task_options": {**shared.get("task_options", {}), **own.get("task_options", {})}}
        try:
            config = resolve_config(settings, {"iterations": 1})
        except ConfigError as err:
            raise ExperimentError(f"{where.rstrip('.')}: {err}") from None
        steps = env_steps_per_update(config, config.horizon or _horizon(settings))
        iterations = method_budget.get("iterations") or max(1, math.ceil(method_budget["env_steps"] / steps))
        methods.append(Method(method_name, label, settings, iterations, method_every, steps))

    _check_metric(metric, task)
    reference = _table(data.get("reference", {}), "reference")
    _check_keys(reference, REFERENCE_KEYS, "reference.")
    baselines = tuple(_typed("reference.lopt_baselines", reference.get("lopt_baselines", []), tuple))
    if baselines:
        from nres.tasks.lopt.baselines import BASELINES

        if task != "lopt":
            raise ExperimentError("key 'reference.lopt_baselines' applies only to task 'lopt'")
        for b in baselines:
            if b not in BASELINES:
                raise ExperimentError(f"key 'reference.lopt_baselines': unknown optimizer {b!r}; choose from "
                                      f"{', '.join(BASELINES)}")
    reference_runs = _positive_int("reference.num_runs", reference.get("num_runs", 4))
    return Experiment(name, description, task, seeds, metric, goal, targets, threads, tuple(methods),
                      baselines, reference_runs, source)


def _check_metric(metric: str, task: str) -> None:
    """``metric`` must be one the runs report: ``train_loss`` or one of the task's evaluation
    metrics (``TaskEntry.metrics``; a task that declares none is not checked)."""
    from nres.tasks import get_task_entry

    declared = get_task_entry(task).metrics
    valid = ("train_loss", *declared)
    if declared and metric not in valid:
        raise ExperimentError(f"key 'metric': no run of task {task!r} reports {metric!r}; choose one of "
                              f"{', '.join(valid)}")


def load(path: str | pathlib.Path) -> Experiment:
    """Read and check an experiment file (TOML)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ExperimentError(f"experiment file {str(path)!r} does not exist")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ExperimentError(f"experiment file {str(path)!r} is not valid TOML: {err}") from None
    return parse(data, name=path.stem, source=str(path))


def check_data(experiment: Experiment) -> None:
    """Fail early (one line) when a learned-optimizer experiment's dataset files are missing."""
    if experiment.task != "lopt":
        return
    from nres.tasks.lopt.datasets import DatasetError, load_dataset
    from nres.tasks.lopt.task import LoptConfig

    seen = set()
    for method in experiment.methods:
        options = {**dataclasses.asdict(LoptConfig()), **method.settings.get("task_options", {})}
        key = (options["dataset"], options["data_dir"], options["image_size"])
        if key in seen or key[0] == "digits":  # digits ship with scikit-learn
            continue
        seen.add(key)
        try:
            load_dataset(*key)
        except DatasetError as err:
            raise ExperimentError(f"methods.{method.name}: {err}") from None

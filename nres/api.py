"""Runs from Python: what ``nres train``, ``nres eval``, ``nres plot`` and ``nres compare``
do, with the same run directories.

* :func:`train` starts (or with ``resume=`` continues) a run and returns its
  :class:`RunView`; settings are a :class:`~nres.config.TrainConfig`, a dict of settings
  (the names of a config file), a TOML/YAML file, and/or keyword arguments, resolved
  exactly as the command line resolves its config file and flags.
* :func:`load_run` opens an existing run directory: config, metrics (rows or NumPy
  columns), the saved thetas, deferred evaluation and the curves.
* :func:`compare` runs an experiment (a file or a :class:`nres.experiments.spec.Experiment`)
  as ``nres compare`` does.

Everything is built on :mod:`nres.run` and :mod:`nres.rundir`, which the command line
uses too, so a run started here and the same run started by ``nres train`` write the
same files (every metrics row but its wall-clock time, the thetas, the checkpoint).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from nres import rundir
from nres.build import resolve_config
from nres.config import TRAIN_FIELDS, TrainConfig, config_to_dict, load_config_file
from nres.tasks import get_task_entry, is_custom, task_label

PathLike = str | pathlib.Path


# -- what the start of a run prints and where it goes ------------------------------------
def default_out(config: TrainConfig) -> pathlib.Path:
    """``runs/TASK-ESTIMATOR-YYYYMMDD-HHMMSS``, TASK the task's name (a custom entry's
    ``TaskEntry.name``, not its ``module:ENTRY``)."""
    from nres.run import default_out_dir

    return default_out_dir(dataclasses.replace(config, task=task_label(config.task)))


def custom_task_defaults(config: TrainConfig) -> Optional[str]:
    """One line of what a custom task (``module:ENTRY``, ``file.py:ENTRY``) leaves to nres's
    defaults: how and when ``theta`` is evaluated and the training budget; None for
    the registered tasks."""
    if not is_custom(config.task):
        return None
    from nres.task import validate_task
    from nres.build import build_task
    from nres.evaluation import EVAL_EPISODES

    defaults = get_task_entry(config.task).defaults(config.task_options).training

    def origin(name: str) -> str:
        value = getattr(config, name)
        if name in defaults and value == defaults[name]:
            return f"{name}={value}, the task's default"
        return f"{name}={value}, nres's default" if value == getattr(TrainConfig, name) else f"{name}={value}, set"

    task = validate_task(build_task(config))  # a broken task fails here, before this line is printed
    how = ("its evaluate()" if task.evaluate is not None else
           f"test_loss = mean per-step loss of {EVAL_EPISODES} unperturbed held-out episodes (it has no evaluate)")
    when = [f"every {config.eval_every} updates"] if config.eval_every else []
    when += ["at the end"] if config.eval_at_end else []
    return (f"task {task_label(config.task)!r} ({config.task}): evaluation by {how}, "
            f"{' and '.join(when) or 'never'} ({origin('eval_every')}); "
            f"budget {config.iterations} updates ({origin('iterations')})")


def announce_custom_task(config: TrainConfig, print_fn=print) -> None:
    line = custom_task_defaults(config)
    if line:
        print_fn(line)


# -- training ----------------------------------------------------------------------------
def resolve(config: TrainConfig | Mapping[str, Any] | PathLike | None = None, **settings) -> TrainConfig:
    """A :class:`TrainConfig` from a config, a dict of settings or a TOML/YAML file, with
    ``settings`` on top (as flags over a config file). Keywords that are not training
    settings are the task's options (``nres.resolve(task="lorenz", dt=0.01)``)."""
    if isinstance(config, TrainConfig):
        base = config_to_dict(config)
    elif isinstance(config, (str, pathlib.Path)):
        base = load_config_file(config)
    else:
        base = {k.replace("-", "_"): v for k, v in dict(config or {}).items()}
    options = {k: v for k, v in settings.items() if k not in TRAIN_FIELDS}
    flags = {k: v for k, v in settings.items() if k in TRAIN_FIELDS}
    return resolve_config(base, {**flags, "task_options": {**flags.pop("task_options", {}), **options}})


def train(config: TrainConfig | Mapping[str, Any] | PathLike | None = None, *, out: Optional[PathLike] = None,
          resume: Optional[PathLike] = None, overwrite: bool = False, progress: bool = True, engine=None,
          compilation_cache: Optional[str] = None, callback=None, **settings) -> "RunView":
    """Train a run into ``out`` (default :func:`default_out`) as ``nres train`` does, or
    continue the run in ``resume`` (only ``iterations=`` may change); returns its view.

    Args:
      config: see :func:`resolve`; ``settings`` override it.
      engine: a :class:`nres.engines.EngineOptions` (default: this process).
      compilation_cache: as ``--compilation-cache`` (a directory or ``"off"``).
      callback: ``callback(rows)`` while training: each chunk's train rows and each
        evaluation row, as dicts of ``metrics.jsonl`` (the ``progress_fn`` of brax's
        trainers); stopping or plotting live is up to it.

    Raises the command line's errors (``ConfigError``, ``RunDirError``, ...; one line
    each) and :class:`nres.run.RunStopped` when training stops early.
    """
    from nres import compilation_cache as cache
    from nres.run import resume_run, start_run

    cache.enable(compilation_cache)
    if resume is not None:
        extra = sorted(set(settings) - {"iterations"})
        if config is not None or out is not None or extra:
            raise ValueError("resume= takes only iterations= (the run's other settings are fixed)")
        return load_run(resume_run(resume, settings.get("iterations"), progress=progress, engine=engine,
                                   callback=callback))
    config = resolve(config, **settings)
    announce_custom_task(config)
    return load_run(start_run(config, str(out) if out is not None else str(default_out(config)), overwrite=overwrite,
                              progress=progress, engine=engine, callback=callback))


def compare(experiment, out: Optional[PathLike] = None, *, seeds: Optional[int] = None,
            methods: Optional[Sequence[str]] = None, jobs: Optional[int] = None, backend: str = "local",
            ray_address: Optional[str] = None, summary_only: bool = False) -> dict:
    """``nres compare``: every method x seed of ``experiment`` (a TOML file or an
    :class:`~nres.experiments.spec.Experiment`) into ``out``; returns ``summary.json``'s
    contents. Raises :class:`nres.run.RunStopped` with ``nres compare``'s exit code when
    runs failed or it was interrupted."""
    import json

    from nres.experiments import spec
    from nres.experiments.cli import resume_flags, run_experiment
    from nres.run import RunStopped

    file = str(experiment) if isinstance(experiment, (str, pathlib.Path)) else "FILE"
    if isinstance(experiment, (str, pathlib.Path)):
        experiment = spec.load(experiment)
    if seeds is not None:
        experiment = experiment.with_seeds(seeds)
    if methods:
        experiment = experiment.only(list(methods))
    out = pathlib.Path(out or f"runs/compare-{experiment.name}")
    code = run_experiment(experiment, out, jobs, backend, ray_address, summary_only, file,
                          resume_flags(seeds, methods, jobs, backend, ray_address))
    if code:
        raise RunStopped(f"nres compare ended with exit code {code}; see {out}/logs/", code)
    return json.loads((out / "summary.json").read_text())


# -- reading a run -----------------------------------------------------------------------
def columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Rows as NumPy columns over the union of their keys: numbers as ``float64`` (ints
    as ``int64`` when every row has them), a missing or ``null`` value as NaN."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    out = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            out[key] = np.asarray(values, np.int64)
        elif all(v is None or isinstance(v, (int, float)) for v in values):
            out[key] = np.asarray([np.nan if v is None else v for v in values], np.float64)
        else:
            out[key] = np.asarray(values, object)
    return out


class RunView:
    """A run directory read from Python (nothing is built until asked for).

    Attributes:
      path: the run directory.
      config: every resolved setting, as ``config.json`` records it (a dict).
      facts: ``theta_size``, ``horizon``, devices and versions from ``config.json``.
    """

    def __init__(self, path: PathLike):
        self.path = pathlib.Path(path)
        stored = rundir.read_config(self.path)
        self.config: dict = stored["config"]
        self.facts: dict = {k: v for k, v in stored.items() if k != "config"}

    def __repr__(self) -> str:
        return f"RunView({str(self.path)!r}: {self.config.get('estimator')} on {self.config.get('task')})"

    @property
    def train_config(self) -> TrainConfig:
        """The run's settings as a :class:`TrainConfig` (what ``--resume`` trains with)."""
        try:
            return resolve_config(self.config)
        except Exception as err:
            raise rundir.RunDirError(f"{str(self.path)!r} holds an unusable config: {err}") from None

    def rows(self, which: str = "all") -> list[dict]:
        """``metrics.jsonl`` as dicts: ``"all"`` rows, the ``"train"`` rows (one per update)
        or the ``"eval"`` rows (``test_loss`` and the task's other test metrics)."""
        if which not in ("all", "train", "eval"):
            raise ValueError(f"which must be 'all', 'train' or 'eval', got {which!r}")
        rows = rundir.read_metrics(self.path)
        return rows if which == "all" else [r for r in rows if rundir.is_eval_row(r) == (which == "eval")]

    def metrics(self, which: str = "train") -> dict[str, np.ndarray]:
        """The rows of :meth:`rows` as NumPy columns (``m["train_loss"]`` ``[updates]``)."""
        return columns(self.rows(which))

    def thetas(self) -> tuple[np.ndarray, list]:
        """The saved trajectory: ``(iterations [M], [theta, ...])``, each theta a pytree of
        NumPy arrays shaped like the task's ``init_theta``."""
        import jax

        from nres.build import build_task

        task = build_task(self.train_config)
        template = jax.eval_shape(task.init_theta, jax.ShapeDtypeStruct((2,), np.uint32))
        return rundir.load_thetas(self.path, template)

    def evaluate(self, every_saved: bool = False, stride: int = 1) -> list[dict]:
        """``nres eval``: evaluate the final (or every ``stride``-th saved) theta; the rows
        are added to ``metrics.jsonl`` (replacing earlier ones of the same updates) and returned."""
        from nres.run import evaluate_run

        if stride <= 0:
            raise ValueError(f"stride must be positive, got {stride}")
        return evaluate_run(self.path, every_saved=every_saved, stride=stride)

    def plot(self, out: Optional[PathLike] = None) -> pathlib.Path:
        """Draw the run's curves to ``out`` (default: the run's own ``curves.png``); returns the file."""
        from nres.plotting import plot_run_curves, run_label

        file = pathlib.Path(out) if out is not None else self.path / rundir.CURVES
        title = f"{self.config.get('task')}: {run_label(self.config)}"
        plot_run_curves(self.rows(), file, title=title)
        return file


def load_run(path: PathLike) -> RunView:
    """Open the run directory ``path`` (``RunDirError`` if it holds no run)."""
    return RunView(path)

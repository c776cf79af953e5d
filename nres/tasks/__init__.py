"""Registry of the applications ``nres train --task NAME`` knows.

Each application module defines ``ENTRY``, a :class:`TaskEntry`: its options dataclass
(every field becomes a ``--flag`` of ``nres train``), a builder from options to a
:class:`nres.Task`, and the paper's training settings for it (optionally depending on
the task's own options: :class:`TaskDefaults`). Modules are imported only when asked
for, so heavy dependencies (MuJoCo, datasets) load on demand.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

from nres.task import Task


class TaskDefaults(NamedTuple):
    """Defaults a task picks from its own options (e.g. the ``rl`` task from ``--env``).

    Attributes:
      training: training settings over ``TaskEntry.training_defaults``.
      options: task options over the options dataclass's defaults.
      source: where they come from, for the line ``nres train`` prints at start.
    """

    training: Mapping[str, Any] = {}
    options: Mapping[str, Any] = {}
    source: str = ""


@dataclasses.dataclass(frozen=True)
class TaskEntry:
    """How the command line builds one application.

    Attributes:
      name: the ``--task`` value.
      config_cls: a dataclass whose fields (with defaults) are the task's options.
      build: ``config -> Task``.
      training_defaults: settings of ``nres train`` this task changes from the global
        defaults (e.g. the paper's ``num_particles``, ``sigma``, ``lr`` for it).
      description: one line for ``--help``.
      defaults_for: ``task options -> TaskDefaults`` (the options given by the user's
        layers, before defaults), or None. What it returns lies over ``training_defaults``
        and the options' own defaults, under every config file and flag.
      notes: ``resolved settings -> lines`` printed at start (costs, advice), or None.
      fingerprint: ``task options -> JSON-able value`` that changes whenever the data
        files the task reads change (e.g. their sizes and modification times); None for
        tasks whose programs follow from their options and nres's code alone. Compiled
        programs are stored under it (:mod:`nres.compilation_cache`).
      metrics: the names of the metrics the task's evaluation reports (every one of them,
        e.g. ``("test_loss",)``); empty: not declared (a custom task), so not checked.
        ``nres compare`` refuses a ``metric`` outside them; a resume refuses evaluation
        rows with other metrics.
    """

    name: str
    config_cls: type
    build: Callable[[Any], Task]
    training_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    fingerprint: Optional[Callable[[Mapping[str, Any]], Any]] = None
    metrics: tuple[str, ...] = ()
    defaults_for: Optional[Callable[[Mapping[str, Any]], TaskDefaults]] = None
    notes: Optional[Callable[[Mapping[str, Any]], Sequence[str]]] = None

    def start_lines(self, settings: Mapping[str, Any]) -> list[str]:
        """What ``nres train`` prints about a resolved config's ``settings`` (as
        :func:`nres.config.config_to_dict` gives them) at start: :meth:`defaults_line`
        and the entry's own ``notes``."""
        line = self.defaults_line(settings)
        return ([line] if line else []) + list(self.notes(settings) if self.notes else [])

    def defaults(self, options: Mapping[str, Any]) -> TaskDefaults:
        """The defaults under a user's ``options``: ``training_defaults`` with
        ``defaults_for(options)`` over them."""
        chosen = self.defaults_for(options) if self.defaults_for else TaskDefaults()
        return chosen._replace(training={**self.training_defaults, **chosen.training})

    def defaults_line(self, settings: Mapping[str, Any]) -> Optional[str]:
        """One line naming the option-dependent defaults of a resolved config's
        ``settings`` (:func:`nres.config.config_to_dict`) and which of them the user
        changed; None for entries without ``defaults_for``."""
        if self.defaults_for is None:
            return None
        options = dict(settings.get("task_options", {}))
        if settings.get("horizon") is not None:  # T is a training setting once resolved
            options["horizon"] = settings["horizon"]
        chosen = self.defaults_for(options)
        pairs = [(k, v, settings.get(k)) for k, v in chosen.training.items()]
        pairs += [(k, v, options.get(k, v)) for k, v in chosen.options.items()]
        if not pairs:
            return None
        shown = [f"{k}={v}" for k, v, now in pairs if now == v]
        changed = [f"{k}={now} (default {v})" for k, v, now in pairs if now != v]
        return (f"{self.name} defaults{' for ' + chosen.source if chosen.source else ''}: {', '.join(shown)}"
                + (f"; changed: {', '.join(changed)}" if changed else ""))


_MODULES = {
    "lorenz": "nres.tasks.lorenz",
    "linear": "nres.tasks.linear",
    "lopt": "nres.tasks.lopt",
    "rl": "nres.tasks.rl",
}


# Tasks whose dependencies are optional extras: ``name -> (extra, (module, ...))``.
_EXTRAS = {
    "rl": ("rl", ("mujoco", "gymnasium")),
    "lopt": ("lopt", ("sklearn",)),
}


def task_names() -> tuple[str, ...]:
    return tuple(_MODULES)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a broken or blocked install counts as missing
        return False


def require_extra(name: str) -> None:
    """Raise a one-line ``ValueError`` naming ``pip install 'nres[EXTRA]'`` if task ``name`` lacks its modules."""
    if name not in _EXTRAS:
        return
    extra, modules = _EXTRAS[name]
    missing = [m for m in modules if not _installed(m)]
    if missing:
        raise ValueError(f"task {name!r} needs {', '.join(missing)}, which the core install leaves out: "
                         f"pip install 'nres[{extra}]'")


def is_custom(name: str) -> bool:
    """True for a task given as ``package.module:ENTRY`` or ``path/to/file.py:ENTRY``."""
    return ":" in name


def _is_path(module: str) -> bool:
    return module.endswith(".py") or "/" in module or os.sep in module


def task_file(name: str) -> Optional[str]:
    """The absolute path of the file of a task given as ``path/to/file.py:ENTRY`` (from the
    working directory now), else None: a run records it, so that a relative path still
    finds the file from another directory (:func:`nres.rundir.read_config`)."""
    if not is_custom(name):
        return None
    module = name.rpartition(":")[0]
    return os.path.abspath(module) if _is_path(module) else None


def located(name: str, recorded_file: Optional[str]) -> str:
    """``name``, or the same entry in ``recorded_file`` (a run's :func:`task_file`) when
    ``name``'s file is not found from the working directory but the recorded one exists."""
    if not is_custom(name) or not recorded_file:
        return name
    module, _, entry = name.rpartition(":")
    if _is_path(module) and not os.path.exists(module) and os.path.isfile(recorded_file):
        return f"{recorded_file}:{entry}"
    return name


_LOADED: dict[str, TaskEntry] = {}  # custom entries, loaded (and their files run) once per process


def _load_module(module: str):
    """Import ``module`` (a dotted name, or a ``.py`` file relative to the working directory)."""
    if not _is_path(module):
        if "" not in sys.path and os.getcwd() not in sys.path:  # console scripts omit the cwd
            sys.path.insert(0, os.getcwd())
        return importlib.import_module(module)
    file = os.path.abspath(module)
    if not os.path.isfile(file):
        raise ImportError(f"no file {module!r}" + ("" if module.endswith(".py") else " (a task file ends in .py)"))
    # A module name of its own, registered so dataclasses and pickling find the module.
    module_name = "nres_user_task_" + "".join(c if c.isalnum() else "_" for c in file)
    spec = importlib.util.spec_from_file_location(module_name, file)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = loaded
    folder = os.path.dirname(file)
    if folder not in sys.path:  # the file's own imports of its neighbours work as with `python file.py`
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(loaded)
    except BaseException:
        del sys.modules[module_name]
        raise
    return loaded


def _named(entry: TaskEntry) -> TaskEntry:
    """``entry`` whose tasks carry the entry's name (a task left at ``Task``'s default name)."""
    if not entry.name:
        return entry
    build = entry.build

    def named_build(options):
        task = build(options)
        unnamed = isinstance(task, Task) and task.name == Task._field_defaults["name"]
        return task._replace(name=entry.name) if unnamed else task

    return dataclasses.replace(entry, build=named_build)


def get_task_entry(name: str) -> TaskEntry:
    """The entry of a registered task, or of your own: ``"package.module:ATTRIBUTE"``
    (importable from the working directory or ``PYTHONPATH``) or
    ``"path/to/file.py:ATTRIBUTE"`` (a file, relative to the working directory).

    The tasks an own entry builds are named after ``entry.name`` unless they name
    themselves (``nres.Task(..., name=...)``), so errors say ``task 'spring'``.
    """
    if is_custom(name):
        module_name, _, attribute = name.rpartition(":")
        key = f"{os.path.abspath(module_name)}:{attribute}" if _is_path(module_name) else name
        if key in _LOADED:
            return _LOADED[key]
        try:
            module = _load_module(module_name)
        except ImportError as err:
            raise ValueError(f"cannot load task {name!r}: {err}") from None
        except Exception as err:  # the user's module failed while importing
            raise ValueError(f"cannot load task {name!r}: importing {module_name!r} raised "
                             f"{type(err).__name__}: {err}") from None  # __context__ keeps the traceback
        if not hasattr(module, attribute):
            raise ValueError(f"cannot load task {name!r}: {module_name!r} defines no {attribute!r}")
        entry = getattr(module, attribute)
        if not isinstance(entry, TaskEntry):
            raise ValueError(f"task {name!r} is a {type(entry).__name__}, not an nres.tasks.TaskEntry")
        _LOADED[key] = _named(entry)
        return _LOADED[key]
    if name not in _MODULES:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(_MODULES)} (or module:ENTRY, "
                         "or path/to/file.py:ENTRY)")
    require_extra(name)
    return importlib.import_module(_MODULES[name]).ENTRY


def task_label(name: str) -> str:
    """What a task is called in run names and messages: its entry's ``name`` (for your own
    ``module:ENTRY`` or ``file.py:ENTRY``), else ``name`` itself."""
    return (get_task_entry(name).name or name) if is_custom(name) else name


"""Registry of the applications ``nres train --task NAME`` knows.

Each application module defines ``ENTRY``, a :class:`TaskEntry`: its options dataclass
(every field becomes a ``--flag`` of ``nres train``), a builder from options to a
:class:`nres.Task`, and the paper's training settings for it. Modules are imported
only when asked for, so heavy dependencies (MuJoCo, datasets) load on demand.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
from typing import Any, Callable, Mapping, Optional

from nres.task import Task


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
      fingerprint: ``task options -> JSON-able value`` that changes whenever the data
        files the task reads change (e.g. their sizes and modification times); None for
        tasks whose programs follow from their options and nres's code alone. Compiled
        programs are stored under it (:mod:`nres.compilation_cache`).
    """

    name: str
    config_cls: type
    build: Callable[[Any], Task]
    training_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    fingerprint: Optional[Callable[[Mapping[str, Any]], Any]] = None


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


def get_task_entry(name: str) -> TaskEntry:
    """The entry of a registered task, or of ``"package.module:ATTRIBUTE"`` (your own)."""
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        if "" not in sys.path and os.getcwd() not in sys.path:  # console scripts omit the cwd
            sys.path.insert(0, os.getcwd())
        try:
            entry = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"cannot load task {name!r}: {err}") from None
        except Exception as err:  # the user's module failed while importing
            raise ValueError(f"cannot load task {name!r}: importing {module_name!r} raised "
                             f"{type(err).__name__}: {err}") from None
        if not isinstance(entry, TaskEntry):
            raise ValueError(f"task {name!r} is a {type(entry).__name__}, not an nres.tasks.TaskEntry")
        return entry
    if name not in _MODULES:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(_MODULES)} (or module:ENTRY)")
    require_extra(name)
    return importlib.import_module(_MODULES[name]).ENTRY

"""The ``nres`` command line: ``train``, ``eval`` and ``plot``.

Every :class:`nres.config.TrainConfig` field is a ``--flag`` of ``nres train`` and
every field of the chosen task's options dataclass is one too (``--task lorenz
--dt 0.01``). Bad input ends with a one-line ``nres: error: ...`` and exit code 2.
"""

from __future__ import annotations

import os
import sys

from nres import interrupts

if __name__ == "__main__" or os.path.basename(sys.argv[0] if sys.argv else "") == "nres":
    # The command itself (console script or ``python -m nres.cli``): from its first line a
    # stop signal is recorded, never lost and never a traceback (see :mod:`nres.interrupts`).
    interrupts.record_stop_signals()

import argparse
import dataclasses
import errno
import pathlib
import typing
from typing import Any, Optional, Sequence

from nres.config import (
    COMPILE_FOR,
    LR_SCHEDULES,
    OPTIMIZERS,
    TRAIN_FIELDS,
    ConfigError,
    TrainConfig,
    coerce,
    load_config_file,
)
EXIT_BAD_INPUT = 2

HELP = {
    "task": "application: lorenz, linear, lopt, rl, or your own package.module:ENTRY",
    "estimator": "gradient estimator",
    "num_particles": "N, antithetic particle pairs",
    "unroll_length": "W, steps per truncation window (= per update)",
    "horizon": "T, episode length (default: the task's own)",
    "sigma": "ES perturbation scale",
    "noise_period": "K of GPES_K (gpes only)",
    "optimizer": "outer optimiser",
    "lr": "outer learning rate",
    "lr_schedule": "learning-rate schedule",
    "lr_boundaries": "piecewise schedule: updates at which the lr is multiplied by --lr-decay",
    "lr_decay": "piecewise schedule: factor applied at each boundary",
    "grad_clip": "clip the gradient to this global norm",
    "loss_normalize": "divide each gradient by the std of the pairs' loss differences",
    "store_noise": "keep each pair's noise in memory (--no-store-noise regenerates it from keys: the same run bit "
                   "for bit for nres, fulles and tes; pes/gpes gradients to float32 rounding)",
    "iterations": "number of updates",
    "seed": "PRNG seed",
    "eval_every": "evaluate theta every this many updates (0: not during training)",
    "eval_at_end": "evaluate the final theta (--no-eval-at-end defers it to `nres eval`)",
    "checkpoint_every": "checkpoint every this many updates",
    "max_nonfinite": "stop after this many consecutive non-finite windows",
    "compile_for": "compile the training programs for the fastest steps, or (CPU) the shortest start at slower "
                   "steps",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _arg_type(annotation):
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        annotation = next(a for a in args if a is not type(None))
    return annotation


def _add_dataclass_flags(group, fields, help_texts: dict, defaults: dict, choices: dict) -> None:
    for field in fields:
        tp = _arg_type(field.type if not isinstance(field.type, str) else eval(field.type, {"Optional": Optional, "Any": Any, "tuple": tuple, "typing": typing}))
        default = defaults.get(field.name, field.default)
        help_text = help_texts.get(field.name, field.name.replace("_", " "))
        if default is not dataclasses.MISSING and default is not None and default != ():
            help_text += f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            group.add_argument(_flag(field.name), action=argparse.BooleanOptionalAction, **kwargs)
        elif tp is tuple:
            group.add_argument(_flag(field.name), nargs="+", type=int, metavar="N", **kwargs)
        elif tp in (int, float, str):
            group.add_argument(_flag(field.name), type=tp, choices=choices.get(field.name), **kwargs)


def train_parser(task: str) -> argparse.ArgumentParser:
    from nres.estimators import estimator_names
    from nres.tasks import get_task_entry

    entry = get_task_entry(task)
    parser = _Parser(prog="nres train", description="Train theta with a gradient estimator; writes a run directory. "
                     f"{_task_header(task, entry).replace('options of task', 'Task', 1)}.")
    parser.add_argument("--config", metavar="FILE", help="TOML or YAML file of settings; flags override it")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/TASK-ESTIMATOR-TIME)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--compilation-cache", metavar="DIR|off", default=None,
                        help="persistent compilation cache directory, or off (default: $NRES_COMPILATION_CACHE, "
                             "else $XDG_CACHE_HOME/nres/jax)")
    _add_engine_flags(parser.add_argument_group("scaling out (same results on every engine; README: Scaling out)"))
    fields = [f for f in dataclasses.fields(TrainConfig) if f.name != "task_options"]
    choices = {"estimator": estimator_names(), "optimizer": OPTIMIZERS,
               "lr_schedule": LR_SCHEDULES, "compile_for": COMPILE_FOR}
    _add_dataclass_flags(parser.add_argument_group("training"), fields, HELP, dict(entry.training_defaults), choices)
    task_group = parser.add_argument_group(_task_header(task, entry))
    task_fields = [f for f in dataclasses.fields(entry.config_cls) if f.name != "horizon"]
    clashes = sorted({f.name for f in task_fields} & set(TRAIN_FIELDS))
    if clashes:
        raise ConfigError(f"task {task!r} has options named like training settings: {', '.join(clashes)}")
    _add_dataclass_flags(task_group, task_fields, attribute_docs(entry.config_cls), {}, {})
    return parser


def _task_header(task: str, entry) -> str:
    """``options of task 'spring' (from path/spring.py:ENTRY): its description``."""
    from nres.tasks import task_label

    header = f"options of task {task_label(task)!r}" + (f" (from {task})" if task_label(task) != task else "")
    return header + (f": {entry.description}" if entry.description else "")


ENGINE_FLAGS = ("backend", "num_workers", "ray_address", "distributed", "coordinator_address", "num_processes",
                "process_id")


def _add_engine_flags(group) -> None:
    group.add_argument("--backend", choices=("local", "ray"), default="local",
                       help="local: this process (or --distributed processes); ray: Ray actors own the particles")
    group.add_argument("--num-workers", type=int, metavar="K", help="Ray actors, each with N/K particle pairs")
    group.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster (default: start a local one)")
    group.add_argument("--distributed", action="store_true",
                       help="shard the particles over every jax.distributed process (coordinator from the flags "
                            "below, JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID, or Slurm)")
    group.add_argument("--coordinator-address", metavar="HOST:PORT", help="with --distributed: process 0's address")
    group.add_argument("--num-processes", type=int, metavar="P", help="with --distributed: number of processes")
    group.add_argument("--process-id", type=int, metavar="I", help="with --distributed: this process's index")


def _engine_session(flags: dict, out: Optional[str], resume: Optional[str]):
    """Engine options from the flags; starts ``jax.distributed`` when asked.

    Returns ``(options, out, resume, cleanup, writer)``: a ``--distributed`` process other
    than process 0 (``writer`` False) trains into a private temporary copy of the run
    directory instead.
    """
    from nres.engines import EngineOptions

    coordinator = {k: flags[k] for k in ("coordinator_address", "num_processes", "process_id")}
    if not flags["distributed"] and any(v is not None for v in coordinator.values()):
        raise ConfigError("--coordinator-address, --num-processes and --process-id need --distributed")
    options = EngineOptions(flags["backend"], flags["num_workers"], flags["ray_address"], flags["distributed"])
    if not options.distributed:
        return options, out, resume, lambda: None, True
    if options.backend != "local":
        raise ConfigError("--distributed and --backend ray are two ways to scale out; pick one")
    import shutil
    import tempfile

    import jax

    from nres.engines.distributed import initialize, watch

    initialize(**coordinator)
    scratch = None
    if jax.process_index() != 0:  # trains into a private copy; process 0 writes the run directory
        scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"nres-process{jax.process_index()}-"))
        if resume:  # the run directory must be readable here (shared file system or a copy)
            shutil.copytree(resume, scratch / "run")
    cleanup = (lambda: shutil.rmtree(scratch, ignore_errors=True)) if scratch else (lambda: None)
    watchdog = watch(before_exit=cleanup)  # a lost peer ends this process with one line

    def finish():
        watchdog.stop()
        cleanup()

    finish.settle = watchdog.settle  # a failed collective: first see whether a peer is gone

    if scratch is None:
        return options, out, resume, finish, True
    return options, str(scratch / "run"), resume and str(scratch / "run"), finish, False


def attribute_docs(cls) -> dict[str, str]:
    """Field descriptions from a dataclass docstring's ``Attributes:`` section."""
    docs: dict[str, str] = {}
    lines = (cls.__doc__ or "").splitlines()
    if not any(line.strip() == "Attributes:" for line in lines):
        return docs
    names: list[str] = []
    for line in lines[[line.strip() for line in lines].index("Attributes:") + 1 :]:
        text = line.strip()
        if not text:
            break
        head, sep, rest = text.partition(": ")
        candidates = [n.strip() for n in head.split(",")]
        if sep and all(n.isidentifier() for n in candidates):
            names = candidates
            for name in names:
                docs[name] = rest
        elif names:
            for name in names:
                docs[name] += " " + text
    return docs


def _task_of(argv: Sequence[str]) -> str:
    pre = _Parser(prog="nres train", add_help=False)
    pre.add_argument("--task")
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.task:
        return known.task
    if known.config:
        return coerce("task", load_config_file(known.config).get("task", TrainConfig.task), str)
    return TrainConfig.task


def parse_train(argv: Sequence[str]) -> tuple[dict, Optional[TrainConfig], dict]:
    """``nres train`` arguments as ``(control, config, args)``; raises ConfigError.

    ``control`` holds ``config``, ``out``, ``overwrite``, ``resume``, ``no_progress``,
    ``compilation_cache`` and ``engine`` (the scaling-out flags); ``config`` is the
    resolved :class:`TrainConfig` of a new run (None with ``--resume``).
    """
    from nres.tasks import get_task_entry

    task = _task_of(argv)
    try:
        get_task_entry(task)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    args = vars(train_parser(task).parse_args(argv))
    control = {k: args.pop(k, None) for k in ("config", "out", "overwrite", "resume", "no_progress",
                                              "compilation_cache")}
    control["engine"] = {k: args.pop(k, None) for k in ENGINE_FLAGS}
    if control["resume"] is not None:
        if not control["resume"].strip():
            raise ConfigError("--resume needs a run directory, got an empty name")
        extra = sorted(set(args) - {"iterations"})
        if extra or control["config"] or control["out"]:
            raise ConfigError("--resume takes only --iterations and the scaling-out flags "
                              "(the run's other settings are fixed)")
        return control, None, args
    option_names = {f.name for f in dataclasses.fields(get_task_entry(task).config_cls)}
    flags = {k: v for k, v in args.items() if k in TRAIN_FIELDS}
    task_flags = {k: v for k, v in args.items() if k in option_names}
    file_layer = load_config_file(control["config"]) if control["config"] else {}
    from nres.build import resolve_config  # imports JAX: after the command has started

    config = resolve_config(file_layer, {**flags, "task_options": task_flags})
    _check_flags_apply(flags, config)
    return control, config, args


def _check_flags_apply(flags: dict, config: TrainConfig) -> None:
    """A flag given on the command line that the run would ignore is an error (a default
    or a config file's shared setting is not): e.g. ``--sigma`` for an autodiff method."""
    from nres.estimators import unused_settings

    for name in unused_settings(config.estimator):
        if name in flags:
            raise ConfigError(f"{_flag(name)} does not apply to estimator {config.estimator!r}, which has no use "
                              f"for {name}; remove it")
    if "lr_decay" in flags and config.lr_schedule != "piecewise":
        raise ConfigError(f"--lr-decay applies to --lr-schedule piecewise, not {config.lr_schedule!r}")


def cmd_train(argv: Sequence[str]) -> int:
    from nres.run import resume_run, start_run

    interrupts.check()  # a stop deferred while JAX was imported
    control, config, args = parse_train(argv)
    if config is not None:
        from nres import sizes

        sizes.check_train(config)
    progress = not control["no_progress"]
    _enable_compilation_cache(control["compilation_cache"])
    engine, out, resume, cleanup, writer = _engine_session(control["engine"], control["out"], control["resume"])
    try:
        if config is None:
            path = resume_run(resume, args.get("iterations"), progress=progress and writer, engine=engine)
        else:
            from nres.api import announce_custom_task, default_out

            announce_custom_task(config)
            path = start_run(config, out or default_out(config), overwrite=control["overwrite"],
                             progress=progress and writer, engine=engine)
    except _run_stopped_error() as stop:
        if not writer:  # name the run directory of process 0, not this process's private copy
            private, shared = (out, control["out"]) if config is not None else (resume, control["resume"])
            stop.args = (str(stop).replace(str(private), str(shared or "the run directory")),)
        raise
    except Exception:
        if hasattr(cleanup, "settle"):  # --distributed: an error here may be a peer's death
            cleanup.settle()
        raise
    finally:
        cleanup()
    if not writer:
        return 0  # a --distributed process other than 0: its private copy is gone, process 0 reports
    from nres import rundir
    from nres.run_info import summary

    result = summary(rundir.read_metrics(path, having="test_loss"))  # the evaluation rows
    if result:
        print(result)
    print(f"done: results in {path}/ (metrics.jsonl, curves.png, thetas.npz, tensorboard/)")
    return 0


def _enable_compilation_cache(setting: Optional[str] = None) -> None:
    from nres import compilation_cache

    try:
        compilation_cache.enable(setting)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def cmd_eval(argv: Sequence[str]) -> int:
    from nres.run import evaluate_run

    parser = _Parser(prog="nres eval", description="Evaluate saved thetas of a run on the task's test set.")
    parser.add_argument("run", metavar="DIR")
    parser.add_argument("--all", action="store_true", help="every saved theta, not only the final one")
    parser.add_argument("--stride", type=int, default=1, help="with --all: every this many saved thetas")
    args = parser.parse_args(argv)
    if args.stride <= 0:
        raise ConfigError(f"--stride must be positive, got {args.stride}")
    _enable_compilation_cache()
    for row in evaluate_run(args.run, every_saved=args.all, stride=args.stride):
        metrics = ", ".join(f"{k}={v:.6g}" for k, v in row.items() if k not in ("iteration", "wall_time_s",
                            "total_env_steps", "sequential_steps") and isinstance(v, (int, float)))
        print(f"update {row['iteration']}: {metrics}")
    return 0


def cmd_plot(argv: Sequence[str]) -> int:
    from nres import rundir
    from nres.plotting import X_AXES, image_format, plot_comparison, run_label

    parser = _Parser(prog="nres plot", description="Compare runs: one curve per run.")
    parser.add_argument("runs", nargs="+", metavar="DIR")
    parser.add_argument("--x", choices=tuple(X_AXES), default="updates", help="x axis")
    parser.add_argument("--metric", default=None, help="y axis: test_loss if every run has it, else train_loss")
    parser.add_argument("--out", default="comparison.png", metavar="FILE.png")
    args = parser.parse_args(argv)
    runs = []
    for path in args.runs:
        config = rundir.read_config(path)["config"]
        try:
            label = run_label(config)
        except (KeyError, TypeError, ValueError) as err:
            raise rundir.RunDirError(f"{str(path)!r} holds an unusable config: {err!r}") from None
        runs.append((label, rundir.read_metrics(path)))
    metric = args.metric
    if metric is None:
        metric = "test_loss" if all(any("test_loss" in r for r in rows) for _, rows in runs) else "train_loss"
    present = sorted({k for _, rows in runs for r in rows for k, v in r.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)}
                     - {key for key, _ in X_AXES.values()})
    if metric not in present:
        raise ConfigError(f"no run has metric {metric!r}; metrics present: {', '.join(present) or 'none'}")
    out = pathlib.Path(args.out)
    try:
        image_format(out)
    except ValueError as err:
        raise ConfigError(f"--out {args.out!r}: {err}") from None
    if out.is_dir():
        raise ConfigError(f"--out {args.out!r} is a directory; give a file name such as cmp.png")
    check_parents(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    curves = plot_comparison(runs, args.out, args.x, metric)
    print(f"wrote {args.out}: {curves} curves of {metric} against {args.x}")
    return 0


def check_parents(out: pathlib.Path) -> None:
    """ConfigError when a parent of the ``--out`` path is a file (it could never be made)."""
    if any(parent.exists() and not parent.is_dir() for parent in out.parents):
        raise ConfigError(f"--out {str(out)!r}: a parent of it is a file, not a directory")


# Commands defined elsewhere are imported only when used: "module:function".
COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "plot": cmd_plot,
    "variance": "nres.diagnostics.cli:cmd_variance",
    "rollout": "nres.tasks.rl.rollout:cmd_rollout",
    "compare": "nres.experiments.cli:cmd_compare",
}


def _command(name: str):
    command = COMMANDS[name]
    if isinstance(command, str):
        import importlib

        module, function = command.split(":")
        command = getattr(importlib.import_module(module), function)
    return command


EXIT_OS_ERROR = 1


def _bad_input_errors() -> tuple[type, ...]:
    """The error types that mean bad input, from the modules loaded so far (a module that
    was never imported cannot have raised its error; importing it here could be slow)."""
    names = {"nres.rundir": "RunDirError", "nres.checkpoint": "CheckpointError", "nres.task": "TaskShapeError"}
    return (ConfigError,) + tuple(getattr(sys.modules[m], n) for m, n in names.items() if m in sys.modules)


# What a full disk left behind, and how to go on, for each command (files are written whole or not at all).
DISK_FULL_ADVICE = {
    "train": "the last checkpoint is intact, free space and resume",
    "eval": "the run's files are each intact (old or new), free space and run `nres eval` again",
    "plot": "nothing was written, free space and run `nres plot` again",
    "variance": "the results written so far are whole files, free space and run `nres variance` again with "
                "--overwrite",
    "compare": "finished runs are kept, free space and run `nres compare` again to resume the others",
}


def _os_error_message(err: OSError, command: str = "train") -> str:
    where = f" {err.filename!r}" if err.filename else ""
    what = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = DISK_FULL_ADVICE.get(command, "files are written whole or not at all, free space and run it again")
        return f"cannot write{where}: {what}; {advice}"
    return f"cannot access{where}: {what}"


def _command_name(argv: Sequence[str]) -> str:
    """The command ``argv`` runs (flags alone train)."""
    return argv[0] if argv and argv[0] in COMMANDS else "train"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; every failure the user can fix ends as one line and an exit code:
    0 ok, 1 the system refused (disk full, read-only, permissions), 2 bad input,
    3 non-finite or diverged, 128 + signal for SIGINT (130), SIGTERM (143), SIGUSR1 (138).

    A stop signal at any instant ends with its code, never 0 (:mod:`nres.interrupts`)."""
    code = _guarded(argv)
    signum = interrupts.pending()  # acted on now, or recorded after the last safe point
    interrupts.clear()
    if signum is not None and code == 0:
        print(f"nres: aborted by {interrupts.Interrupted(signum)}", file=sys.stderr)
        return interrupts.exit_code(signum)
    return code


def _guarded(argv: Optional[Sequence[str]]) -> int:
    from nres.tracebacks import debug_enabled

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or debug_enabled()  # any command: full tracebacks of errors
    argv = [a for a in argv if a != "--debug"]
    try:
        with interrupts.stop_signals_raise():
            interrupts.check()  # a stop recorded while the command started
            code = _main(argv)
            interrupts.check()  # one deferred by an import or dropped by a callback
            return code
    except interrupts.Interrupted as stop:  # a second stop signal, or one outside the training loop
        print(f"nres: aborted by {stop} (the last checkpoint, if any, is intact)", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("nres: aborted (the last checkpoint, if any, is intact)", file=sys.stderr)
        return 130
    except OSError as err:
        print(f"nres: error: {_os_error_message(err, _command_name(argv))}", file=sys.stderr)
        return EXIT_OS_ERROR
    except Exception as err:
        lost = getattr(sys.modules.get("nres.engines.peers"), "PeerLost", ())
        if isinstance(err, lost):  # a process the run needs is gone: one line, its exit code
            print(f"nres: error: {err}", file=sys.stderr)
            return err.exit_code
        return _report_error(err, debug)


def _report_error(err: Exception, debug: bool) -> int:
    """One line for bad input and for errors in the user's own task code (with the file
    and line of the user's last frame); the whole traceback too with ``debug``. Any
    other error is nres's bug and is raised with its traceback."""
    from nres import tracebacks

    frame = tracebacks.user_frame(err)
    bad_input = isinstance(err, _bad_input_errors())
    if not bad_input and frame is None:
        raise
    if debug:
        tracebacks.print_traceback(err)
    message = str(err) if bad_input else f"{type(err).__name__}: {err}"
    if frame is not None:
        hint = "" if debug else f"; --debug or {tracebacks.DEBUG_ENV}=1 for the traceback"
        message += f" (at {tracebacks.location(frame)}{hint})"
    print(f"nres: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _main(argv: Optional[Sequence[str]]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        from nres import __version__

        print(f"nres {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        # Bare `nres` only shows the commands (a training of thousands of updates is `nres train`).
        print("usage: nres [--version] [--debug] {train,eval,plot,variance,rollout,compare} ...\n\n"
              "  train     train theta (default: NRES on Lorenz)\n"
              "  eval      evaluate a run's saved thetas\n"
              "  plot      compare runs\n"
              "  variance  mean and total variance of estimators\n"
              "  rollout   watch a learned policy (rl task)\n"
              "  compare   methods x seeds of an experiment file: figures, summary, verdict\n\n"
              "  --debug   (anywhere; or NRES_DEBUG=1) print the whole traceback of an error\n",
              file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_BAD_INPUT
    from nres import progress

    progress.interval_s()  # a bad $NRES_PROGRESS_INTERVAL: one line before the command starts
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        if command.startswith("-"):
            command, rest = "train", argv
        else:
            print(f"nres: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        command = _command(command)
        interrupts.check()  # a stop deferred while the command's modules were imported
        return command(rest)
    except _run_stopped_error() as stop:
        print(f"nres: {stop}", file=sys.stderr)
        return stop.exit_code


def _run_stopped_error() -> type:
    run = sys.modules.get("nres.run")
    return run.RunStopped if run else ()


# Python's cyclic garbage collector in the command's process: a start-up allocates about a
# million objects (JAX's modules, traced and lowered programs), almost all long-lived or
# freed by reference counting. At the default threshold (700) the collector runs about
# 400 times per Lorenz run and scans the whole heap three times: 0.2-0.3 s of a 1.3 s
# warm run. At 100,000 it runs a few times; cycles are still collected.
GC_THRESHOLD = (100_000, 10, 10)


def run() -> None:
    """The ``nres`` command (console script and ``python -m nres.cli``): :func:`main`, then
    a prompt exit.

    Every file a command writes is closed before :func:`main` returns, so the process
    then only flushes its standard streams, runs the ``atexit`` handlers (Ray and
    ``jax.distributed`` shut down there) and leaves with ``os._exit``: the interpreter's
    own teardown (freeing every module, the compiled programs and the XLA runtime, about
    0.4 s after a Lorenz run) has nothing left to save. The garbage collector runs less
    often (:data:`GC_THRESHOLD`). An exception leaves the usual way,
    and so does every command under a profiler or tracer (``python -m cProfile``, a
    debugger), which writes its results after the command returns.
    """
    import gc

    interrupts.record_stop_signals()  # (already, when this module was the first to load)
    gc.set_threshold(*GC_THRESHOLD)
    code = _with_late_stop(main())
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    import atexit

    _flush()
    atexit._run_exitfuncs()
    code = _with_late_stop(code)  # one that arrived while flushing or in the exit handlers
    _flush()
    os._exit(code or 0)


def _with_late_stop(code: int) -> int:
    """From the end of :func:`main` stop signals are only recorded: one that arrived still
    sets the exit code of a command that would exit 0."""
    if interrupts.pending() is not None and code == 0:
        print(f"nres: aborted by {interrupts.Interrupted(interrupts.pending())}", file=sys.stderr)
        return interrupts.exit_code(interrupts.pending())
    return code


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more to say there
            pass


if __name__ == "__main__":
    run()

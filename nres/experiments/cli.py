"""``nres compare FILE --out DIR``: every method x seed of an experiment, then the verdict.

Writes ``DIR/<method>/seed<k>/`` (ordinary run directories), ``DIR/summary.md``,
``DIR/summary.json``, ``DIR/comparison.png`` and ``DIR/<metric>-vs-<axis>.png``.
Running it again resumes: finished runs are skipped, unfinished ones resumed.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import shlex
import signal
import sys
from typing import Sequence

from nres import rundir
from nres.checkpoint import atomic_write
from nres.config import ConfigError
from nres.experiments import figures, spec
from nres.experiments.scheduler import Scheduler, check_existing, default_jobs, jobs_of, run_path, run_reference
from nres.experiments.summary import curve, markdown, summarize

EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}
# Only one `nres compare` at a time may fill an output directory (a lock on DIR/.lock).
BUSY = "{path!r} is in use by another `nres compare` (pid {pid}); wait for it or stop it first"


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_note(out: pathlib.Path, experiment: spec.Experiment, jobs: int, backend: str) -> str:
    """CPU, cores, the runs' JAX backend/devices (from their config.json), and the parallelism."""
    backends = set()
    for method in experiment.methods:
        for seed in experiment.seeds:
            path = run_path(out, method.name, seed)
            if rundir.is_run(path):
                stored = rundir.read_config(path)
                devices = stored.get("devices") or stored.get("config", {}).get("devices")
                backend_name = stored.get("versions", {}).get("backend", "?")
                backends.add(f"{backend_name}" + (f" ({devices})" if devices else ""))
    cores = os.cpu_count()
    parallel = (f"{jobs} runs at a time on {cores} cores" if backend == "local"
                else "runs as Ray tasks")
    return (f"{_cpu_model()}, {cores} CPU cores; JAX backend of the runs: {', '.join(sorted(backends)) or '?'}; "
            f"{parallel}, {experiment.threads_per_run} thread(s) per run. Wall-clock is each run's training "
            f"time alone (compilation included, evaluation excluded); runs sharing cores slow each other.")


def source_commit() -> str | None:
    """The git commit of the nres source these runs were measured at (``+dirty`` with uncommitted
    changes to tracked files); ``None`` outside a git checkout."""
    import subprocess

    root = pathlib.Path(__file__).resolve().parent.parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


MEASURED_AT = "measured_at"  # DIR/measured_at: the commit of the latest `nres compare` that trained runs


def measured_at(out: pathlib.Path, commit: str | None = None) -> str | None:
    """The commit the runs were measured at. ``commit`` (the source's commit when this call started
    training runs) is recorded in ``DIR/measured_at``; without it (nothing trained, e.g.
    ``--summary-only``) the recorded one is kept, else today's."""
    path = out / MEASURED_AT
    if commit is not None:
        atomic_write(path, lambda h: h.write(commit + "\n"), mode="w")
        return commit
    if path.is_file():
        return path.read_text().strip() or None
    return source_commit()


def collect(out: pathlib.Path, experiment: spec.Experiment) -> list[dict]:
    """Every method's curves (one per seed that has evaluation rows)."""
    methods = []
    for method in experiment.methods:
        curves = []
        for seed in experiment.seeds:
            rows = rundir.read_metrics(run_path(out, method.name, seed))
            points = curve(rows, experiment.metric, method.env_steps_per_update)
            if points:
                curves.append(points)
        methods.append({"name": method.name, "label": method.label, "curves": curves,
                        "iterations": method.iterations, "env_steps_per_update": method.env_steps_per_update})
    return methods


def write_outputs(out: pathlib.Path, experiment: spec.Experiment, jobs: int, backend: str,
                  trained_at: str | None = None) -> dict:
    """``summary.md``, ``summary.json`` and the figures from the runs in ``out``; ``trained_at``: the
    commit this call trained runs at (``None``: it trained none)."""
    methods = collect(out, experiment)
    summary = summarize(methods, experiment.targets, experiment.goal)
    reference_data = run_reference(experiment, out)
    reference = reference_data["baselines"] if reference_data else None
    hardware = hardware_note(out, experiment, jobs, backend)
    notes = [experiment.description] if experiment.description else []
    notes.append("Runs: " + "; ".join(f"{m.label}: {m.iterations} updates x {m.env_steps_per_update} env steps, "
                                      f"evaluated every {m.eval_every}" for m in experiment.methods))
    missing = [f"{m['label']} ({len(m['curves'])}/{len(experiment.seeds)} seeds)" for m in methods
               if len(m["curves"]) < len(experiment.seeds)]
    if missing:
        notes.append("Incomplete: " + ", ".join(missing) + "; run `nres compare` again to finish them.")
    commit = measured_at(out, trained_at)
    notes.append(f"Measured at nres commit {commit or 'unknown (not a git checkout)'}.")
    title = f"{experiment.name}: {experiment.metric} over {len(experiment.seeds)} seeds"
    text = markdown(summary, title, experiment.metric, hardware, notes, reference)
    data = {"experiment": experiment.name, "source": experiment.source, "metric": experiment.metric,
            "hardware": hardware, "commit": commit, "seeds": list(experiment.seeds), **summary,
            "runs": {m["name"]: {"iterations": m["iterations"], "env_steps_per_update": m["env_steps_per_update"],
                                 "curves": m["curves"]} for m in methods},
            "reference": reference}
    lines = [{"label": f"{r['name']} (tuned lr {r['learning_rate']:.3g})", "value": r[experiment.metric]}
             for r in (reference or []) if experiment.metric in r]
    data["figures"] = figures.plot_comparison(methods, out, experiment.metric, title, lines, summary)
    atomic_write(out / "summary.md", lambda h: h.write(text), mode="w")
    atomic_write(out / "summary.json", lambda h: h.write(json.dumps(data, indent=1) + "\n"), mode="w")
    return data


def cmd_compare(argv: Sequence[str]) -> int:
    from nres.cli import _Parser

    parser = _Parser(prog="nres compare", description="Run every method x seed of an experiment file, "
                     "evaluate, and write figures, summary.md/json and the verdict.")
    parser.add_argument("file", metavar="FILE", help="experiment file (TOML), e.g. experiments/paper/lorenz-quick.toml")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: runs/compare-<name>)")
    parser.add_argument("--seeds", type=int, metavar="S", help="use seeds 0..S-1 instead of the file's")
    parser.add_argument("--methods", metavar="A,B", help="only these methods of the file (comma-separated)")
    parser.add_argument("--jobs", type=int, metavar="J", help="runs at a time (default: cores // threads_per_run)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local processes, or one Ray task per run")
    parser.add_argument("--ray-address", metavar="ADDR", help="with --backend ray: an existing cluster "
                        "(default: $RAY_ADDRESS, else a local one)")
    parser.add_argument("--summary-only", action="store_true", help="rewrite the outputs from the runs there are")
    args = parser.parse_args(argv)
    experiment = spec.load(args.file)
    if args.seeds is not None:
        if args.seeds <= 0:
            raise ConfigError(f"--seeds must be positive, got {args.seeds}")
        experiment = experiment.with_seeds(args.seeds)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    if methods:
        experiment = experiment.only(methods)
    return run_experiment(experiment, args.out, args.jobs, args.backend, args.ray_address, args.summary_only,
                          args.file, resume_flags(args.seeds, methods, args.jobs, args.backend, args.ray_address))


def resume_flags(seeds=None, methods=None, jobs=None, backend: str = "local", ray_address=None) -> list[str]:
    """The flags that select what an ``nres compare`` runs and how, for the command that
    resumes it: the same runs, on the same engine (``--out`` is added by the caller)."""
    flags = [] if seeds is None else ["--seeds", str(seeds)]
    flags += ["--methods", ",".join(methods)] if methods else []
    flags += [] if jobs is None else ["--jobs", str(jobs)]
    flags += [] if backend == "local" else ["--backend", backend]
    return flags + ([] if ray_address is None else ["--ray-address", ray_address])


def run_experiment(experiment: spec.Experiment, out=None, jobs=None, backend: str = "local", ray_address=None,
                   summary_only: bool = False, file: str = "FILE", flags: Sequence[str] = ()) -> int:
    """Every method x seed of ``experiment`` into ``out`` (default ``runs/compare-<name>``),
    then the outputs; returns the exit code of ``nres compare`` (``file`` and ``flags``,
    from :func:`resume_flags`, make the command its messages suggest for resuming). The
    Python API (:func:`nres.compare`) calls it too."""
    if jobs is not None and jobs <= 0:
        raise ConfigError(f"--jobs must be positive, got {jobs}")
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("--backend ray needs Ray: pip install nres[ray]") from None
    if not summary_only:
        spec.check_data(experiment)
    out = pathlib.Path(out or f"runs/compare-{experiment.name}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} exists and is not a directory")
    jobs = jobs or default_jobs(experiment)
    all_jobs = jobs_of(experiment, out)
    if not summary_only:
        check_existing(all_jobs)  # reads only: a refusal leaves everything as it was
    out.mkdir(parents=True, exist_ok=True)
    with rundir.RunLock(out, BUSY):  # one `nres compare` at a time in a directory
        resume = shlex.join(["nres", "compare", file, "--out", str(out), *flags])
        return _run_locked(experiment, out, all_jobs, jobs, backend, ray_address, summary_only, resume)


def _run_locked(experiment, out, all_jobs, jobs, backend, ray_address, summary_only, resume: str) -> int:
    scheduler = Scheduler(experiment, out, jobs, backend, ray_address or os.environ.get("RAY_ADDRESS"))
    if not summary_only:
        pending = scheduler.prepare(all_jobs)
        print(f"{experiment.name}: {len(all_jobs)} runs ({len(experiment.methods)} methods x "
              f"{len(experiment.seeds)} seeds), {len(pending)} to do, {jobs} at a time ({backend}); in {out}/",
              flush=True)
        trained_at = (source_commit() or "unknown") if pending else None
        codes = scheduler.run(pending)
        if scheduler.stop_signal is not None:
            write_outputs(out, experiment, jobs, backend, trained_at)
            print(f"nres: interrupted; partial summary in {out}/summary.md; `{resume}` resumes", file=sys.stderr)
            return EXIT_INTERRUPTED.get(scheduler.stop_signal, 130)
        failed = [k for k, c in codes.items() if c not in (0, 3)]
    else:
        trained_at, failed = None, []
    write_outputs(out, experiment, jobs, backend, trained_at)
    print(f"wrote {out}/summary.md, summary.json, comparison.png and {experiment.metric}-vs-*.png")
    if failed:
        print(f"nres: error: {len(failed)} run(s) failed ({', '.join(failed)}); see {out}/logs/", file=sys.stderr)
        return 1
    return 0

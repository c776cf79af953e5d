"""Running every method x seed of an experiment as ordinary run directories, and resuming.

``OUT/<method>/seed<k>/`` is a run directory made by ``nres train`` (so ``nres train
--resume``, ``nres eval`` and ``nres plot`` work on it). Each run is one subprocess
(:mod:`nres.experiments.worker`): it trains with evaluation deferred (``eval_every = 0``,
no final evaluation), so its ``wall_time_s`` times training alone, then evaluates every
``every``-th saved ``theta`` (``nres eval --all --stride every``). Runs are isolated from
each other and from this process; the environment (``NRES_COMPILATION_CACHE``,
``XLA_FLAGS``, ...) is passed through, so they share the persistent compilation cache.

State lives in the run directories themselves: a run whose checkpoint is at its budget
and whose last saved ``theta`` has been evaluated is finished and skipped; a run with an
earlier checkpoint is resumed; a missing one is started. ``OUT/compare.json`` records
runs that stopped on their own (non-finite losses, exit code 3) so they are not retried.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Optional

import numpy as np

from nres import interrupts, rundir
from nres.checkpoint import atomic_write
from nres.config import config_to_dict
from nres.progress import interval_s
from nres.experiments.spec import Experiment, ExperimentError, Method

STATE = "compare.json"
LOGS = "logs"
EXIT_DIVERGED = 3


@dataclasses.dataclass(frozen=True)
class Job:
    """One method x seed: where it lives and what it must reach."""

    method: Method
    seed: int
    path: pathlib.Path
    config_file: pathlib.Path
    log_file: pathlib.Path

    @property
    def key(self) -> str:
        return f"{self.method.name}/seed{self.seed}"


def run_path(out: pathlib.Path, method: str, seed: int) -> pathlib.Path:
    return out / method / f"seed{seed}"


def jobs_of(experiment: Experiment, out: pathlib.Path) -> list[Job]:
    """Every method x seed, seed-major (every method's first seed before any second seed)."""
    return [Job(m, s, run_path(out, m.name, s), out / "configs" / f"{m.name}-seed{s}.json",
                out / LOGS / f"{m.name}-seed{s}.log")
            for s in experiment.seeds for m in experiment.methods]


def gpu_count() -> int:
    """NVIDIA GPUs on this machine (device files; JAX is not started in this process)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len(list(pathlib.Path("/dev").glob("nvidia[0-9]*")))


def default_jobs(experiment: Experiment) -> int:
    """Runs that fit the machine: one per GPU if there are GPUs, else ``cpu_count // threads_per_run``."""
    return gpu_count() or max(1, (os.cpu_count() or 1) // experiment.threads_per_run)


# -- what a run directory says about itself ------------------------------------------------
def _read_npz(file: pathlib.Path, read):
    """``read(arrays)`` of an ``.npz`` file (without JAX), ``None`` if it is missing or unreadable
    (an unreadable file is left for ``nres train --resume`` to report)."""
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as data:
            return read(data)
    except Exception:
        return None


def checkpoint_iteration(path: pathlib.Path) -> Optional[int]:
    """The update count of a run's checkpoint (read without JAX), ``None`` if there is none."""
    return _read_npz(path / rundir.CHECKPOINT,
                     lambda data: int(json.loads(str(data["metadata"]))["counters"]["iteration"]))


def last_saved_iteration(path: pathlib.Path) -> Optional[int]:
    """The update of the last saved ``theta``, ``None`` if there is none."""
    return _read_npz(path / rundir.THETAS,
                     lambda data: int(data["iteration"][-1]) if len(data["iteration"]) else None)


def evaluated(path: pathlib.Path, metric: str) -> bool:
    """Whether the last saved ``theta`` has an evaluation row with ``metric``."""
    last = last_saved_iteration(path)
    if last is None:
        return False
    return any(r.get("iteration") == last for r in rundir.read_metrics(path, having=metric))


def _differences(stored: dict, expected: dict) -> list[str]:
    diffs = []
    for key, value in expected.items():
        if key in ("iterations",) or value is None:  # None: the task's default, stored resolved
            continue
        if key == "task_options":
            got = stored.get(key) or {}
            diffs += [f"task_options.{k}: {got.get(k)!r} here, {v!r} in the file" for k, v in value.items()
                      if got.get(k) != v]
        elif stored.get(key) != value:
            diffs.append(f"{key}: {stored.get(key)!r} here, {value!r} in the file")
    return diffs


def check_existing(jobs: list[Job]) -> None:
    """Refuse to resume into run directories made with other settings (before any work)."""
    for job in jobs:
        if not rundir.is_run(job.path):
            continue
        try:
            stored = rundir.read_config(job.path)["config"]
        except (rundir.RunDirError, KeyError) as err:
            raise ExperimentError(f"{str(job.path)!r} is not a usable run: {err}") from None
        expected = json.loads(json.dumps(config_to_dict(job.method.config(job.seed))))
        diffs = _differences(stored, expected)
        if diffs:
            raise ExperimentError(f"{str(job.path)!r} holds a run with other settings ({diffs[0]}); "
                                  "use another --out or remove it")


def status(job: Job, metric: str, stopped: dict) -> str:
    """``new``, ``partial`` (train more), ``trained`` (evaluate), ``done`` or ``stopped``."""
    if job.key in stopped:
        return "stopped" if evaluated(job.path, metric) else "trained"
    if not rundir.is_run(job.path):
        return "new"
    iteration = checkpoint_iteration(job.path)
    if iteration is None or iteration < job.method.iterations:
        return "partial"
    return "done" if evaluated(job.path, metric) else "trained"


def latest_update(path: pathlib.Path) -> Optional[int]:
    """The update of the last train row in a run's ``metrics.jsonl`` (its tail only), or None."""
    try:
        with open(path / rundir.METRICS, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines[1:] if len(lines) > 1 else lines):  # the first may be cut
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "train_loss" in row and isinstance(row.get("iteration"), int):
            return row["iteration"]
    return None


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


# -- running --------------------------------------------------------------------------------
def worker_command(job: Job, step: str) -> list[str]:
    """The subprocess of one run: ``python -m nres.experiments.worker STEP ...``."""
    return [sys.executable, "-m", "nres.experiments.worker", step, str(job.path), "--config", str(job.config_file),
            "--iterations", str(job.method.iterations), "--stride", str(job.method.eval_every)]


def child_environment(threads_per_run: int, jobs: int = 1) -> dict:
    """This process's environment, plus a one-thread limit for XLA when ``threads_per_run == 1``
    and, when several runs share a GPU, no up-front grab of its memory by each."""
    env = dict(os.environ)
    if jobs > 1 and gpu_count() and jobs > gpu_count():
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if threads_per_run == 1:
        flags = env.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            env["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, str(threads_per_run))
    return env


def run_subprocess(command: list[str], log_file: str, env: dict, register: Optional[Callable] = None) -> int:
    """Run ``command`` with stdout/stderr appended to ``log_file``; its exit code. The run
    stops (SIGTERM, at its last checkpoint) if this process dies first
    (:func:`nres.interrupts.end_with_parent`)."""
    env = {**env, interrupts.PARENT_ENV: str(os.getpid())}
    with open(log_file, "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if register is not None:
            register(process)
        return process.wait()


class Scheduler:
    """Runs the jobs of an experiment over local processes or Ray tasks."""

    def __init__(self, experiment: Experiment, out: pathlib.Path, jobs: int, backend: str = "local",
                 ray_address: Optional[str] = None, echo: Callable[[str], None] = functools.partial(print, flush=True)):
        self.experiment, self.out, self.jobs, self.backend = experiment, out, jobs, backend
        self.ray_address, self.echo = ray_address, echo
        self.children: list[subprocess.Popen] = []
        self.running: dict[str, tuple[Job, str]] = {}  # key -> (job, "run" or "evaluate"), for progress lines
        self.finished = 0
        self.lock = threading.Lock()
        self.stop_signal: Optional[int] = None
        self.env = child_environment(experiment.threads_per_run, jobs)

    # -- bookkeeping --
    def _stopped(self) -> dict:
        file = self.out / STATE
        return json.loads(file.read_text()).get("stopped", {}) if file.is_file() else {}

    def _record_stopped(self, job: Job, code: int) -> None:
        with self.lock:
            stopped = self._stopped()
            stopped[job.key] = {"exit_code": code}
            text = json.dumps({"stopped": stopped}, indent=2) + "\n"
            atomic_write(self.out / STATE, lambda h: h.write(text), mode="w")

    def prepare(self, all_jobs: list[Job]) -> list[Job]:
        """Write per-run config files; the jobs that still have work."""
        check_existing(all_jobs)
        (self.out / "configs").mkdir(parents=True, exist_ok=True)
        (self.out / LOGS).mkdir(parents=True, exist_ok=True)
        pending, stopped = [], self._stopped()
        for job in all_jobs:
            text = json.dumps(config_to_dict(job.method.config(job.seed)), indent=2) + "\n"
            if not job.config_file.is_file() or job.config_file.read_text() != text:
                atomic_write(job.config_file, lambda h: h.write(text), mode="w")
            state = status(job, self.experiment.metric, stopped)
            if state in ("done", "stopped"):
                self.echo(f"{job.key}: finished earlier, skipped")
            else:
                pending.append(job)
        return pending

    # -- local --
    def _register(self, process: subprocess.Popen) -> None:
        with self.lock:
            self.children.append(process)
            if self.stop_signal is not None:
                process.send_signal(self.stop_signal)

    def _run_local(self, job: Job) -> int:
        if self.stop_signal is not None:
            return -1
        state = status(job, self.experiment.metric, self._stopped())
        self.echo(f"{job.key}: {'starting' if state == 'new' else 'resuming' if state == 'partial' else 'evaluating'}")
        started = time.perf_counter()
        step = "run" if state in ("new", "partial") else "evaluate"
        with self.lock:
            self.running[job.key] = (job, step)
        try:
            code = run_subprocess(worker_command(job, step), str(job.log_file), self.env, self._register)
        finally:
            with self.lock:
                del self.running[job.key]
                self.finished += 1
        self._report(job, code, time.perf_counter() - started)
        return code

    def progress_line(self, total: int, seconds: float) -> str:
        """``nres compare: F of TOTAL runs finished, R running (KEY at update U of I, ...), W waiting; TIME``."""
        with self.lock:
            running, finished = list(self.running.values()), self.finished
        details = []
        for job, step in running:
            update = latest_update(job.path) if step == "run" else None
            details.append(f"{job.key} " + ("evaluating" if step == "evaluate" else "starting" if update is None
                                            else f"at update {update} of {job.method.iterations}"))
        inside = f" ({', '.join(details)})" if details else ""
        return (f"nres compare: {finished} of {total} runs finished, {len(running)} running{inside}, "
                f"{total - finished - len(running)} waiting; {_duration(seconds)}")

    def _report(self, job: Job, code: int, seconds: float) -> None:
        if code == 0:
            self.echo(f"{job.key}: done ({seconds:.0f} s)")
        elif code == EXIT_DIVERGED:
            self._record_stopped(job, code)
            self.echo(f"{job.key}: stopped on non-finite losses (exit 3); its curve ends there (see {job.log_file})")
        elif self.stop_signal is None:
            self.echo(f"{job.key}: failed with exit code {code}; see {job.log_file}")

    def _forward(self, signum, frame) -> None:
        with self.lock:
            if self.stop_signal is None:
                self.echo("stopping: every running run saves a checkpoint; `nres compare` again resumes")
            self.stop_signal = signum
            for process in self.children:
                if process.poll() is None:
                    process.send_signal(signum)

    def run(self, pending: list[Job]) -> dict[str, int]:
        """Run ``pending``; the exit code per job key. After SIGINT/SIGTERM (forwarded to every running
        run, which checkpoints) no new run starts and ``stop_signal`` says which signal it was."""
        if not pending:
            return {}
        if self.backend == "ray":
            return self._run_ray(pending)
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            for s in previous:
                signal.signal(s, self._forward)
        try:
            started = last = time.perf_counter()
            every = interval_s()
            with concurrent.futures.ThreadPoolExecutor(max_workers=self.jobs) as pool:
                futures = {job.key: pool.submit(self._run_local, job) for job in pending}
                while not all(f.done() for f in futures.values()):
                    time.sleep(0.2)  # stay responsive to signals in the main thread
                    if time.perf_counter() - last >= every and self.stop_signal is None:
                        last = time.perf_counter()
                        print(self.progress_line(len(pending), last - started), file=sys.stderr, flush=True)
                return {key: f.result() for key, f in futures.items()}
        finally:
            if in_main:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    # -- ray --
    def _run_ray(self, pending: list[Job]) -> dict[str, int]:
        try:
            import ray
        except ImportError:
            raise ExperimentError("--backend ray needs Ray: pip install nres[ray]") from None
        ray.init(address=self.ray_address, ignore_reinit_error=True, log_to_driver=False,
                 **({} if self.ray_address else {"num_cpus": os.cpu_count()}))
        remote = ray.remote(num_cpus=self.experiment.threads_per_run, max_retries=0)(run_subprocess)
        try:
            refs = {}
            stopped = self._stopped()
            for job in pending:
                self.echo(f"{job.key}: submitted to Ray")
                step = "run" if status(job, self.experiment.metric, stopped) in ("new", "partial") else "evaluate"
                refs[job.key] = (job, time.perf_counter(),
                                 remote.remote(worker_command(job, step), str(job.log_file), self.env))
            codes = {}
            for key, (job, started, ref) in refs.items():
                codes[key] = ray.get(ref)
                self._report(job, codes[key], time.perf_counter() - started)
            return codes
        finally:
            if not self.ray_address:
                ray.shutdown()


def run_reference(experiment: Experiment, out: pathlib.Path, echo: Callable[[str], None] = print) -> Optional[dict]:
    """Tune the hand-designed optimizers of ``[reference]`` once (``OUT/reference.json``)."""
    if not experiment.lopt_baselines:
        return None
    file = out / "reference.json"
    method = experiment.methods[0]
    request = {"task_options": dict(method.settings.get("task_options", {})),
               "horizon": method.config(experiment.seeds[0]).horizon,
               "baselines": list(experiment.lopt_baselines), "num_runs": experiment.reference_runs}
    if file.is_file():
        stored = json.loads(file.read_text())
        if stored.get("request") == request:
            return stored
    request_file = out / "configs" / "reference-request.json"
    atomic_write(request_file, lambda h: h.write(json.dumps(request)), mode="w")
    echo("reference: tuning " + ", ".join(experiment.lopt_baselines))
    command = [sys.executable, "-m", "nres.experiments.worker", "reference", str(file), "--config", str(request_file)]
    code = run_subprocess(command, str(out / LOGS / "reference.log"), child_environment(experiment.threads_per_run))
    if code != 0:
        echo(f"reference: failed with exit code {code}; see {out / LOGS / 'reference.log'}")
        return None
    return json.loads(file.read_text())

"""Ray engine: ``K`` actors each own ``N / K`` particle pairs; the driver is the learner.

Every window the driver puts ``theta`` in Ray's object store once; each actor runs the
window of its pairs (:meth:`nres.estimators.OnlineES.window`, one compiled call, CPU
MuJoCo included) and returns their :class:`~nres.estimators.scalars.WindowScalars`
(29 bytes per pair). The driver concatenates them in pair order, rebuilds the gradient
from the episode keys (:meth:`OnlineES.gradient`) and applies the optax step with the
same non-finite guard as the local engine. Logging, checkpoints and resume are the
local run directory's.

Shards are exact slices: the driver builds all ``N`` pairs at ``tau = 0`` (the same
compiled init as one process) and hands actor ``k`` pairs ``k N/K .. (k+1) N/K - 1``,
which then run their burn-in windows like any window (with the burn-in's per-pair
selection, :func:`nres.particles.burn_in_select`), so every pair sees the same keys and
positions as in a one-process run.

Failures: at every checkpoint the driver keeps each shard's state (it fetches them to
save the checkpoint anyway) and from then on the ``theta`` of every window. When an
actor dies, a new actor starts from its shard's saved state and replays the windows
since the checkpoint under their recorded ``theta``, which reproduces the lost state
exactly; the run then goes on unchanged. A failure costs: starting one actor (its JAX
import and compilation) plus re-running at most ``checkpoint_every`` windows of one
shard, and the driver holds up to ``checkpoint_every`` copies of ``theta``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from nres.config import ConfigError, config_to_dict
from nres.engines import check_scalar_engine
from nres.engines.base import Job
from nres.estimators.scalars import WindowScalars, scalar_bytes
from nres.particles import burn_in_select, map_particle_axis

MAX_RESTARTS_PER_WINDOW = 3


class _Worker:
    """One Ray actor: a shard of the particles and the compiled window (runs remotely)."""

    def __init__(self, config: dict, state, index: int):
        from nres.build import build_estimator, build_task, resolve_config  # the worker builds what the driver built

        config = resolve_config(config)
        self.index = index
        estimator = self.estimator = build_estimator(config, build_task(config))
        self.no_hold = np.zeros((config.num_particles,), np.int32)
        size = len(state.particles.tau)
        pairs = slice(index * size, (index + 1) * size)

        def window(state, theta, hold, index):
            burning = index < jnp.max(hold)  # hold: every pair's, so all actors agree
            scalars, new = estimator.window(state, theta, burning)
            return scalars, burn_in_select(new, state, hold[pairs], index, estimator.unroll_length, burning)

        self._window = jax.jit(window)
        self.state = jax.device_put(state)

    def pid(self) -> int:
        return os.getpid()

    def window(self, theta, hold=None, index=0):
        """Window ``index`` of a chunk with burn-in windows ``hold`` (all ``N``; None: none)."""
        hold = self.no_hold if hold is None else hold
        scalars, self.state = self._window(self.state, theta, hold, np.int32(index))
        return jax.device_get(scalars)

    def replay(self, windows) -> int:
        """Rerun windows given as the ``(theta, hold, index)`` of :meth:`window`."""
        for theta, hold, index in windows:
            self.window(theta, hold, index)
        jax.block_until_ready(self.state)
        return len(windows)

    def get_state(self):
        return jax.device_get(self.state)

    def set_state(self, state) -> None:
        self.state = jax.device_put(state)


class _RemoteState:
    """Stands in for the estimator state while the actors hold it: the state after
    ``position`` windows since the learner was placed (the actors may be further on)."""

    def __init__(self, position: int = 0):
        self.position = position

    def __repr__(self):
        return f"<estimator state held by Ray actors, after window {self.position}>"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'nres[ray]'") from None
    return ray


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (Ray itself retries for minutes) unless ``HOST:PORT`` accepts connections."""
    if address == "auto":
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--ray-address must be HOST:PORT, ray://HOST:PORT or auto, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {err.strerror or err}") from None


def _start_reaper(ray) -> Optional[subprocess.Popen]:
    """The watcher that ends this driver's local Ray instance if the driver is killed
    (:mod:`nres.engines.ray_reaper`); None where Ray does not say which processes it started."""
    try:
        processes = ray._private.worker._global_node.all_processes
        roots = [str(info.process.pid) for infos in processes.values() for info in infos]
    except Exception:  # a Ray without this (private) record: nothing to watch
        return None
    script = os.path.join(os.path.dirname(__file__), "ray_reaper.py")
    bundled = os.path.join(os.path.dirname(ray.__file__), "thirdparty_files")  # Ray's own psutil
    return subprocess.Popen([sys.executable, script, bundled, *roots], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)


def _stop_reaper(reaper: subprocess.Popen) -> None:
    """Ray was shut down: the watcher ends without touching anything."""
    try:
        reaper.stdin.write("done\n")
        reaper.stdin.close()
        reaper.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        reaper.kill()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class RayEngine:
    """Particles on ``num_workers`` Ray actors (see the module docstring)."""

    is_writer = True

    def __init__(self, job: Job, num_workers: Optional[int], address: Optional[str] = None):
        n = job.config.num_particles
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ConfigError(f"--backend ray needs --num-workers K >= 1, got {num_workers!r}")
        if n % num_workers:
            raise ConfigError(f"--num-workers {num_workers} does not divide the {n} particle pairs (N)")
        check_scalar_engine(job.estimator, "--backend ray")
        ray = self.ray = _import_ray()
        self.num_particles, self.num_workers, self.shard = n, num_workers, n // num_workers
        self._owns_ray = False
        self._reaper = None
        self.actors: list = []
        if not ray.is_initialized():
            try:
                if address is None:
                    ray.init(num_cpus=max(num_workers, os.cpu_count() or 1), include_dashboard=False,
                             log_to_driver=False, configure_logging=False)
                else:
                    check_address(address)
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
            except ConfigError:
                raise
            except Exception as err:  # Ray raises ConnectionError, ValueError, RuntimeError, ...
                where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
                raise ConfigError(f"cannot start or join {where}: {_first_line(err)}") from None
            self._owns_ray = True
            if address is None:
                self._reaper = _start_reaper(ray)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < num_workers:  # the actors would wait for CPUs forever
            self.close()
            raise ConfigError(f"--num-workers {num_workers} needs {num_workers} CPUs in the Ray cluster, "
                              f"which has {cpus}")
        self._actor_class = ray.remote(num_cpus=1, max_restarts=0)(_Worker)
        self._token = uuid.uuid4().hex[:8]  # actors are named nres-worker-<token>-<k> (see `ray list actors`)
        self._config = config_to_dict(job.config)
        self._snapshot: list = []  # each shard's state at the last checkpoint (host arrays)
        self._replay: list = []  # (theta, hold, index) of every window since then
        self._base = 0  # windows run (since the learner was placed) when the snapshot was taken
        self.restarts = 0
        self.bytes_to_workers = self.bytes_from_workers = 0
        estimator, step = job.estimator, job.step

        def apply(theta, opt_state, scalars, burn_in):
            grad, info = estimator.gradient(scalars, theta)
            return step.apply(theta, opt_state, grad, info, burn_in)

        self._apply = jax.jit(apply)

    # -- placement ---------------------------------------------------------------------
    def _shards(self, state) -> list:
        host = jax.device_get(state)
        cut = lambda k: lambda x, axis: np.take(x, np.arange(k * self.shard, (k + 1) * self.shard), axis=axis)
        return [map_particle_axis(cut(k), host) for k in range(self.num_workers)]

    def place(self, learner):
        if isinstance(learner.estimator_state, _RemoteState):
            return learner
        self._snapshot, self._replay, self._base = self._shards(learner.estimator_state), [], 0
        if self.actors:
            self.ray.get([a.set_state.remote(s) for a, s in zip(self.actors, self._snapshot)])
        else:
            self.actors = [self._new_actor(k) for k in range(self.num_workers)]
        return learner._replace(theta=jax.device_put(learner.theta), estimator_state=_RemoteState(0))

    def _new_actor(self, k: int, attempt: int = 0):
        name = f"nres-worker-{self._token}-{k}" + (f"-restart{attempt}" if attempt else "")
        return self._actor_class.options(name=name).remote(self._config, self._snapshot[k], k)

    def host(self, learner):
        """The particles' state *of this learner*: when the actors already ran further
        (a chunk launched after it), they go back to the last snapshot and replay the
        windows up to it, so a checkpoint's particles always match its theta."""
        if not isinstance(learner.estimator_state, _RemoteState):
            return learner
        position = learner.estimator_state.position
        if not self._base <= position <= self._base + len(self._replay):
            raise RuntimeError(f"the Ray workers no longer hold the particle states of window {position}")
        if position < self._base + len(self._replay):
            self._rewind(position - self._base)
        shards = self._gather(lambda a: a.get_state.remote())
        self._snapshot, self._replay, self._base = shards, [], position
        axes = map_particle_axis(lambda x, axis: axis, shards[0])
        state = jax.tree_util.tree_map(lambda axis, *xs: np.concatenate(xs, axis=axis), axes, *shards)
        return learner._replace(estimator_state=state)

    def _rewind(self, windows: int) -> None:
        """Every actor back to the snapshot, then its first ``windows`` windows again."""
        self._replay = self._replay[:windows]
        self.ray.get([a.set_state.remote(s) for a, s in zip(self.actors, self._snapshot)])
        self.ray.get([a.replay.remote(self._replay) for a in self.actors])

    # -- windows -----------------------------------------------------------------------
    def _gather(self, call) -> list:
        """``call(actor)`` on every actor; a dead actor is rebuilt and asked again."""
        futures = [call(a) for a in self.actors]
        results = []
        for k, future in enumerate(futures):
            for attempt in range(MAX_RESTARTS_PER_WINDOW + 1):
                try:
                    results.append(self.ray.get(future))
                    break
                except self.ray.exceptions.RayActorError as err:
                    if attempt == MAX_RESTARTS_PER_WINDOW:
                        raise RuntimeError(f"Ray worker {k} died {attempt + 1} times in one window: "
                                           f"{_first_line(err)}") from None
                    self._restart(k, err)
                    future = call(self.actors[k])
        return results

    def _restart(self, k: int, err: BaseException) -> None:
        start = time.perf_counter()
        try:
            self.ray.kill(self.actors[k])
        except Exception:
            pass
        actor = self._new_actor(k, attempt=self.restarts + 1)
        self.ray.get(actor.replay.remote(self._replay))
        self.actors[k] = actor
        self.restarts += 1
        print(f"nres: Ray worker {k} died ({_first_line(err)}); restarted from the last checkpoint's particle "
              f"states and replayed {len(self._replay)} windows in {time.perf_counter() - start:.1f} s",
              file=sys.stderr)

    def prepare(self):  # its programs are built where they run
        pass

    def run_chunk(self, learner, count, hold):
        theta, opt_state = learner.theta, learner.opt_state
        infos, thetas = [], []
        hold = np.asarray(hold) if np.any(hold) else None  # None: a training chunk
        for index in range(int(count)):
            burning = hold is not None and index < hold.max()
            theta_host = jax.device_get(theta)
            ref = self.ray.put(theta_host)
            args = (hold, index) if burning else (None, 0)
            parts = self._gather(lambda a: a.window.remote(ref, *args))
            self._replay.append((theta_host, *args))
            scalars = WindowScalars(*(jnp.concatenate(xs) for xs in zip(*parts)))
            theta, opt_state, info = self._apply(theta, opt_state, scalars, np.bool_(burning))
            infos.append(info)
            thetas.append(theta)
            size = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(theta_host))
            self.bytes_to_workers += size * self.num_workers
            self.bytes_from_workers += scalar_bytes(self.num_particles)
        stack = lambda *xs: jnp.stack(xs)
        infos = jax.tree_util.tree_map(stack, *infos)
        thetas = jax.tree_util.tree_map(stack, *thetas)
        position = self._base + len(self._replay)
        return learner._replace(theta=theta, opt_state=opt_state, estimator_state=_RemoteState(position)), infos, thetas

    def agree(self, count, signum):  # one driver process decides alone
        return count, signum

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:
                pass
        self.actors = []
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()
            self._owns_ray = False
        if self._reaper is not None:
            _stop_reaper(self._reaper)
            self._reaper = None

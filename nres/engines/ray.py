"""Ray engine: ``K`` actors each own ``N / K`` particle pairs; a driver process is the learner.

Processes: the run's process holds a :class:`RayEngine`, which starts one *driver
process* (``python -m nres.engines.ray_driver``) that starts or joins Ray and runs
:class:`RayDriver`; the two exchange one message each way per chunk of updates (host
arrays over a socket pair; the driver starts up while the run compiles its init). The
run's process is not itself a Ray driver because Ray ends a driver at once (exit 1, no
Python code runs) when the raylet it is connected to dies (the Ray head killed, the
node lost). Kept apart, the run sees its driver end and raises
:class:`~nres.engines.peers.PeerLost`: one line ``nres: error: lost the Ray cluster
...``, exit 4, the last checkpoint intact. And a killed run process (SIGKILL) leaves the
driver at the end of its input, which shuts its Ray instance down, so no Ray process
(dashboard or runtime-env agent, actor) outlives the run.

Every window the driver sends ``theta`` to every actor in the same call (by value
when small, else put once in the object store and shared), each actor runs the window
of its pairs (:meth:`nres.estimators.OnlineES.window`, one compiled call, CPU MuJoCo
included) and returns their :class:`~nres.estimators.scalars.WindowScalars` (29 bytes
per pair), and one ``ray.get`` fetches all of them. The driver concatenates them in
pair order, rebuilds the gradient from the episode keys (:meth:`OnlineES.gradient`) and
applies the optax step with the same non-finite guard as the local engine. That is one
round trip per update, the least there can be: window ``k + 1`` needs the ``theta``
that every pair's scalars of window ``k`` make. Logging, checkpoints and resume are the
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
shard, and the driver holds up to ``checkpoint_every`` copies of ``theta``. The same
snapshot and replay make a checkpoint of an earlier learner exact (:meth:`RayDriver.host`).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import socket
import subprocess
import sys
import time
import uuid
from multiprocessing.connection import Connection
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from nres.compiler import compiler_options
from nres.config import ConfigError, config_to_dict
from nres.engines import check_scalar_engine
from nres.engines.base import Job
from nres.engines.peers import EXIT_PEER_LOST, PeerLost
from nres.estimators.scalars import WindowScalars, scalar_bytes
from nres.step import pack_info
from nres.particles import burn_in_select, map_particle_axis

MAX_RESTARTS_PER_WINDOW = 3
INLINE_BYTES = 100_000  # Ray's limit for arguments sent inside the call (max_direct_call_object_size)
CLOSE_TIMEOUT_S = 60.0
# Ray starts its workers at niceness 15; the actors are this run's compute (the local
# engine's work runs at the run's own niceness), so a local Ray instance nres starts
# runs them at 0 unless this is set. A joined cluster keeps its own setting.
WORKER_NICENESS_ENV = "RAY_worker_niceness"


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

        self._window = jax.jit(window, compiler_options=compiler_options(config.compile_for))
        self.state = jax.device_put(state)
        self.busy_s = 0.0  # seconds spent in windows (see RayDriver.profile)

    def pid(self) -> int:
        return os.getpid()

    def window(self, theta, hold=None, index=0):
        """Window ``index`` of a chunk with burn-in windows ``hold`` (all ``N``; None: none)."""
        start = time.perf_counter()
        hold = self.no_hold if hold is None else hold
        scalars, self.state = self._window(self.state, theta, hold, np.int32(index))
        scalars = jax.device_get(scalars)
        self.busy_s += time.perf_counter() - start
        return scalars

    def busy(self) -> float:
        return self.busy_s

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


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _where(address: Optional[str]) -> str:
    return f"the Ray cluster at {address!r}" if address else "the local Ray instance"


# -- the run's side --------------------------------------------------------------------
class RayEngine:
    """Particles on ``num_workers`` Ray actors, driven from a driver process (see the
    module docstring). The learner's ``theta`` and optimiser state stay here; its
    estimator state is held by the actors (a :class:`_RemoteState`)."""

    is_writer = True

    def __init__(self, job: Job, num_workers: Optional[int], address: Optional[str] = None):
        n = job.config.num_particles
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ConfigError(f"--backend ray needs --num-workers K >= 1, got {num_workers!r}")
        if n % num_workers:
            raise ConfigError(f"--num-workers {num_workers} does not divide the {n} particle pairs (N)")
        check_scalar_engine(job.estimator, "--backend ray")
        if importlib.util.find_spec("ray") is None:
            raise ConfigError("--backend ray needs Ray: pip install 'nres[ray]'")
        if address is not None:
            check_address(address)
        self.num_particles, self.num_workers, self.address = n, num_workers, address
        self.restarts = self.bytes_to_workers = self.bytes_from_workers = 0
        self._proc, self._conn = _start_driver()
        # The driver imports JAX, builds the task and starts or joins Ray while this
        # process compiles its init; its answer is read by the first call that needs it.
        self._conn.send(("start", (config_to_dict(job.config), num_workers, address)))
        self._starting = True

    def _call(self, method: str, *args):
        """``RayDriver.method(*args)`` in the driver process."""
        if self._starting:
            self._starting = False
            self._reply()
        if self._conn is None:  # closed after the driver was lost
            self._lost()
        try:
            self._conn.send((method, args))
        except OSError:  # the driver is gone
            self._lost()
        return self._reply()

    def _reply(self):
        if self._conn is None:
            self._lost()
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError):
            self._lost()
        if status == "ok":
            return value
        if status == "bad input":
            self.close()
            raise ConfigError(value)
        raise RuntimeError(value)

    def _lost(self) -> None:
        """The driver process is gone: raise :class:`PeerLost` (one line, exit 4)."""
        try:
            code = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        if self._conn is not None:
            self._drop()
        how = "stopped answering" if code is None else f"ended (exit {code})"
        raise PeerLost(f"lost {_where(self.address)}: the Ray driver process {how}, as Ray does when the raylet it is "
                       f"connected to dies (the Ray head or this node gone); the last checkpoint is intact, continue "
                       f"with nres train --resume DIR (on any engine) (exit {EXIT_PEER_LOST})") from None

    def place(self, learner):
        if isinstance(learner.estimator_state, _RemoteState):
            return learner
        self._call("place", jax.device_get(learner.estimator_state))
        return learner._replace(estimator_state=_RemoteState(0))

    def host(self, learner):
        """The particles' state *of this learner* (:meth:`RayDriver.host`)."""
        if not isinstance(learner.estimator_state, _RemoteState):
            return learner
        return learner._replace(estimator_state=self._call("host", learner.estimator_state.position))

    def prepare(self):  # its programs are built where they run
        pass

    def run_chunk(self, learner, count, hold):
        theta, opt_state, position, infos, thetas, stats = self._call(
            "run_chunk", jax.device_get(learner.theta), jax.device_get(learner.opt_state),
            learner.estimator_state.position, int(count), np.asarray(hold))
        self.restarts, self.bytes_to_workers, self.bytes_from_workers = stats
        return learner._replace(theta=theta, opt_state=opt_state, estimator_state=_RemoteState(position)), infos, thetas

    def agree(self, count, signum):  # one driver process decides alone
        return count, signum

    def profile(self) -> dict:
        """Where the windows' time went (:meth:`RayDriver.profile`)."""
        return self._call("profile")

    def close(self) -> None:
        """Shut the driver down (it shuts down a Ray instance it started)."""
        if self._conn is None:
            return
        try:
            self._conn.send(("close", ()))
            if self._conn.poll(CLOSE_TIMEOUT_S):
                self._conn.recv()
        except (EOFError, OSError):
            pass
        self._drop()

    def _drop(self) -> None:
        self._conn.close()
        self._conn = None
        try:
            self._proc.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _start_driver() -> tuple[subprocess.Popen, Connection]:
    """The driver process, connected by a socket pair; it can import this package (and
    so can the Ray workers it starts) wherever nres was imported from."""
    ours, theirs = socket.socketpair()
    root = str(pathlib.Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "nres.engines.ray_driver", str(theirs.fileno())],
                            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
    theirs.close()
    return proc, Connection(ours.detach())


# -- the driver process's side -----------------------------------------------------------
class RayDriver:
    """The Ray driver: actors, snapshots and replay, the learner's gradient step (runs in
    the driver process, :mod:`nres.engines.ray_driver`; arguments and results are host
    arrays)."""

    def __init__(self, config: dict, num_workers: int, address: Optional[str] = None):
        from nres.build import build_estimator, build_task, make_optimizer, resolve_config
        from nres.step import make_step

        try:
            import ray
        except ImportError:
            raise ConfigError("--backend ray needs Ray: pip install 'nres[ray]'") from None
        self.ray, self._config = ray, config
        resolved = resolve_config(config)
        task = build_task(resolved)
        estimator = build_estimator(resolved, task)
        step = make_step(task, estimator, make_optimizer(resolved))
        n = self.num_particles = resolved.num_particles
        self.num_workers, self.shard = num_workers, n // num_workers
        self._owns_ray = False
        self.actors: list = []
        if not ray.is_initialized():
            try:
                if address is None:
                    os.environ.setdefault(WORKER_NICENESS_ENV, "0")  # read by the raylet this starts
                    ray.init(num_cpus=max(num_workers, os.cpu_count() or 1), include_dashboard=False,
                             log_to_driver=False, configure_logging=False)
                else:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
            except Exception as err:  # Ray raises ConnectionError, ValueError, RuntimeError, ...
                hint = ("; a cluster started by `ray start` expects its token: RAY_AUTH_MODE=token"
                        if address and not os.environ.get("RAY_AUTH_MODE") else "")
                raise ConfigError(f"cannot start or join {_where(address)}: {_first_line(err)}{hint}") from None
            self._owns_ray = True
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < num_workers:  # the actors would wait for CPUs forever
            self.close()
            raise ConfigError(f"--num-workers {num_workers} needs {num_workers} CPUs in the Ray cluster, "
                              f"which has {cpus}")
        self._actor_class = ray.remote(num_cpus=1, max_restarts=0)(_Worker)
        self._token = uuid.uuid4().hex[:8]  # actors are named nres-worker-<token>-<k> (see `ray list actors`)
        self._snapshot: list = []  # each shard's state at the last checkpoint (host arrays)
        self._replay: list = []  # (theta, hold, index) of every window since then
        self._base = 0  # windows run (since the learner was placed) when the snapshot was taken
        self.restarts = 0
        self.bytes_to_workers = self.bytes_from_workers = 0
        self._clock = {"windows": 0, "gather_s": 0.0, "apply_s": 0.0}

        def apply(theta, opt_state, scalars, burn_in):  # the update's info as a chunk's row
            grad, info = estimator.gradient(scalars, theta)
            theta, opt_state, info = step.apply(theta, opt_state, grad, info, burn_in)
            return theta, opt_state, pack_info(info)

        self._apply = jax.jit(apply, compiler_options=compiler_options(resolved.compile_for))

    # -- placement ---------------------------------------------------------------------
    def _shards(self, state) -> list:
        cut = lambda k: lambda x, axis: np.take(x, np.arange(k * self.shard, (k + 1) * self.shard), axis=axis)
        return [map_particle_axis(cut(k), state) for k in range(self.num_workers)]

    def place(self, state) -> None:
        """Hand every actor its shard of ``state`` (the whole population, host arrays)."""
        self._snapshot, self._replay, self._base = self._shards(state), [], 0
        if self.actors:
            self.ray.get([a.set_state.remote(s) for a, s in zip(self.actors, self._snapshot)])
        else:
            self.actors = [self._new_actor(k) for k in range(self.num_workers)]

    def _new_actor(self, k: int, attempt: int = 0):
        name = f"nres-worker-{self._token}-{k}" + (f"-restart{attempt}" if attempt else "")
        return self._actor_class.options(name=name).remote(self._config, self._snapshot[k], k)

    def host(self, position: int):
        """The particles' state after window ``position``: when the actors already ran
        further (a chunk launched after that learner), they go back to the last snapshot
        and replay the windows up to it, so a checkpoint's particles always match its theta."""
        if not self._base <= position <= self._base + len(self._replay):
            raise RuntimeError(f"the Ray workers no longer hold the particle states of window {position}")
        if position < self._base + len(self._replay):
            self._rewind(position - self._base)
        shards = self._gather(lambda a: a.get_state.remote())
        self._snapshot, self._replay, self._base = shards, [], position
        axes = map_particle_axis(lambda x, axis: axis, shards[0])
        return jax.tree_util.tree_map(lambda axis, *xs: np.concatenate(xs, axis=axis), axes, *shards)

    def _rewind(self, windows: int) -> None:
        """Every actor back to the snapshot, then its first ``windows`` windows again."""
        self._replay = self._replay[:windows]
        self.ray.get([a.set_state.remote(s) for a, s in zip(self.actors, self._snapshot)])
        self.ray.get([a.replay.remote(self._replay) for a in self.actors])

    # -- windows -----------------------------------------------------------------------
    def _gather(self, call) -> list:
        """``call(actor)`` on every actor, fetched together; a dead actor is rebuilt and
        asked again."""
        futures = [call(a) for a in self.actors]
        try:
            return self.ray.get(futures)
        except self.ray.exceptions.RayActorError:
            pass
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
              file=sys.stderr, flush=True)

    def run_chunk(self, theta, opt_state, position: int, count: int, hold):
        """``count`` windows from the state after window ``position`` (burn-in windows
        ``hold``, zeros in training). Returns ``(theta, opt_state, position, infos, thetas,
        (restarts, bytes to workers, bytes from workers))``, infos (rows of
        :func:`nres.step.pack_info`) and thetas stacked per update, all on the host."""
        if position != self._base + len(self._replay):
            raise RuntimeError(f"the Ray workers are after window {self._base + len(self._replay)}, "
                               f"not {position}")
        hold = hold if np.any(hold) else None  # None: a training chunk
        theta_host = theta
        size = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(theta_host))
        infos, thetas = [], []
        for index in range(count):
            burning = hold is not None and index < hold.max()
            args = (hold, index) if burning else (None, 0)
            start = time.perf_counter()
            shared = theta_host if size <= INLINE_BYTES else self.ray.put(theta_host)
            parts = self._gather(lambda a: a.window.remote(shared, *args))
            gathered = time.perf_counter()
            self._replay.append((theta_host, *args))
            scalars = WindowScalars(*(np.concatenate(xs) for xs in zip(*parts)))
            theta, opt_state, info = self._apply(theta, opt_state, scalars, np.bool_(burning))
            theta_host = jax.device_get(theta)
            self._clock["windows"] += 1
            self._clock["gather_s"] += gathered - start
            self._clock["apply_s"] += time.perf_counter() - gathered
            infos.append(info)
            thetas.append(theta_host)
            self.bytes_to_workers += size * self.num_workers
            self.bytes_from_workers += scalar_bytes(self.num_particles)
        stack = lambda *xs: np.stack(xs)
        infos = np.stack(jax.device_get(infos))
        thetas = jax.tree_util.tree_map(stack, *thetas)
        stats = (self.restarts, self.bytes_to_workers, self.bytes_from_workers)
        return theta_host, jax.device_get(opt_state), position + count, infos, thetas, stats

    def profile(self) -> dict:
        """Where the windows' time went, in seconds since the actors started:
        ``windows`` run; ``gather_s``, from sending ``theta`` to having every actor's
        scalars (a window's round trip, actors' work included); ``apply_s``, the
        learner's gradient and step; ``busy_s``, each actor's time in its windows."""
        return {**self._clock, "busy_s": self.ray.get([a.busy.remote() for a in self.actors])}

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

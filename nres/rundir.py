"""A run directory: everything one training run writes, and reading it back.

Layout of ``DIR/``:

* ``config.json``: every resolved setting (task options and ``horizon`` included), the
  size ``theta_size`` of theta, devices and process count, and library versions.
* ``metrics.jsonl``: one JSON object per logged update (``iteration``,
  ``wall_time_s`` of training only, ``total_env_steps``, ``sequential_steps``,
  ``train_loss``, ...); evaluation rows carry ``test_loss`` instead of ``train_loss``,
  at most one per iteration, after that iteration's train row. Strictly valid JSON:
  a non-finite number is written as ``null`` and its key listed in the row's
  ``nonfinite`` (files of older versions with ``NaN``/``Infinity`` still read).
* ``tensorboard/``: TensorBoard event files with the same scalars.
* ``thetas.npz``: the ``theta`` trajectory: ``iteration`` ``[M]`` and one array
  ``theta`` (or ``theta/<path>`` per pytree leaf) with a leading ``[M]`` axis;
  plain NumPy, readable without this library.
* ``checkpoint.npz``: the latest checkpoint (see :mod:`nres.checkpoint`).
* ``curves.png``: loss against updates, total env steps and wall-clock.
* ``.lock``: held (``flock``) by the one process writing the run; the kernel drops the
  lock when that process ends, however it ends.

Write order keeps the files consistent at every instant: ``config.json`` first, then
``thetas.npz`` with ``theta_0`` and the iteration-0 evaluation row, then the first
``checkpoint.npz``. A directory with ``config.json`` but no ``checkpoint.npz`` is
*half-made* (killed during start-up): ``--resume`` starts it from scratch and ``--out``
replaces it. Rows and thetas past the checkpoint are dropped on resume and recomputed.
"""

from __future__ import annotations

import errno
import json
import math
import os
import pathlib
import platform
import shutil
from typing import Iterable

import jax
import numpy as np

from nres import tensorboard
from nres.checkpoint import atomic_write
from nres.tasks import located
from nres.tree import PyTree

CONFIG = "config.json"
METRICS = "metrics.jsonl"
THETAS = "thetas.npz"
CHECKPOINT = "checkpoint.npz"
CURVES = "curves.png"
TENSORBOARD = tensorboard.DIRECTORY
LOCK = ".lock"
RUN_FILES = (CONFIG, METRICS, THETAS, CHECKPOINT, CURVES, TENSORBOARD)


class RunDirError(ValueError):
    """A directory that is not a run, already holds one, is unreadable or is in use."""


def versions() -> dict:
    import optax

    import nres

    return {
        "nres": nres.__version__,
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or _dist_version("jaxlib"),
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
    }


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def is_run(path: str | pathlib.Path) -> bool:
    return (pathlib.Path(path) / CONFIG).is_file()


def remove_if_unstarted(path: str | pathlib.Path) -> None:
    """Remove a directory a stopped ``nres train`` created but wrote no ``config.json`` into
    (only its lock file and temporary files); anything else is left as it is."""
    path = pathlib.Path(path)
    if not path.is_dir() or is_run(path):
        return
    leftovers = [p for p in path.iterdir() if p.name != LOCK and not (p.name.startswith(".") and p.name.endswith(".tmp"))]
    if leftovers:
        return
    for p in path.iterdir():
        p.unlink(missing_ok=True)
    path.rmdir()


def is_half_made(path: str | pathlib.Path) -> bool:
    """A run killed during start-up: ``config.json`` but no first checkpoint yet."""
    return is_run(path) and not (pathlib.Path(path) / CHECKPOINT).is_file()


def _read_text(file: pathlib.Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RunDirError(f"{str(file)!r} is not UTF-8 text") from None


def read_config(path: str | pathlib.Path) -> dict:
    """``config.json`` of the run at ``path``. A task given by a relative path
    (``--task mytasks/spring.py:ENTRY``) that is not found from the working directory is
    named by the absolute path the run recorded (``task_file``), so ``--resume``, ``nres
    eval`` and the rest work from any directory."""
    path = pathlib.Path(path)
    if not is_run(path):
        raise RunDirError(f"{str(path)!r} is not a run directory (no {CONFIG})")
    try:
        stored = json.loads(_read_text(path / CONFIG))
    except json.JSONDecodeError as err:
        raise RunDirError(f"{str(path / CONFIG)!r} is not valid JSON: {err}") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
        raise RunDirError(f"{str(path / CONFIG)!r} has no 'config' table of settings")
    task, file = stored["config"].get("task"), stored.get("task_file")
    if isinstance(task, str) and isinstance(file, str):  # a relative path typed elsewhere
        stored["config"]["task"] = located(task, file)
    return stored


COUNTERS = ("iteration", "wall_time_s", "total_env_steps", "sequential_steps")  # in every row, beside its metrics


def is_eval_row(row: dict) -> bool:
    """Evaluation rows carry the task's test metrics instead of ``train_loss``."""
    return "train_loss" not in row


def read_metrics(path: str | pathlib.Path, having: str | None = None) -> list[dict]:
    """The rows of ``metrics.jsonl`` (``having``: only those with that key, the others
    not even parsed)."""
    file = pathlib.Path(path) / METRICS
    if not file.is_file():
        return []
    wanted = None if having is None else json.dumps(having) + ":"
    lines = [line for line in _read_text(file).splitlines() if line.strip() and (wanted is None or wanted in line)]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # a row cut short by a crash: the resume rewrites the file
                break
            raise RunDirError(f"{str(file)!r} line {number} is not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("iteration"), int):
            raise RunDirError(f"{str(file)!r} line {number} is not a row with an integer 'iteration'")
        rows.append(row)
    return rows


def json_row(row: dict) -> str:
    """One line of strictly valid JSON: non-finite floats become ``null`` and their keys
    are listed under ``nonfinite``."""
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        row = {**{k: (None if k in bad else v) for k, v in row.items()}, "nonfinite": bad}
    return _JSON.encode(row) + "\n"


_JSON = json.JSONEncoder(allow_nan=False)  # built once: json.dumps(..., allow_nan=False) builds one per call

# A chunk's usual train rows (every value finite, every update applied), as columns.
TRAIN_COLUMNS = ("iteration", "wall_time_s", "total_env_steps", "sequential_steps", "train_loss", "grad_norm")
_INT_COLUMNS = ("iteration", "total_env_steps", "sequential_steps")
# The line :func:`json_row` writes for such a row (json writes ints with %d, floats with repr).
_COLUMN_LINE = "{" + ", ".join(f'"{k}": %{"d" if k in _INT_COLUMNS else "r"}' for k in TRAIN_COLUMNS) + "}\n"


def column_lines(columns: list[list]) -> str:
    """The lines of rows given as :data:`TRAIN_COLUMNS` columns of finite Python numbers:
    the same text as :func:`json_row` of each row, without building the rows."""
    return "".join(_COLUMN_LINE % row for row in zip(*columns))


def column_rows(columns: list[list]) -> list[dict]:
    """The rows of :data:`TRAIN_COLUMNS` columns."""
    return [dict(zip(TRAIN_COLUMNS, values)) for values in zip(*columns)]


def tidy_rows(rows: Iterable[dict]) -> list[dict]:
    """One train and one evaluation row per iteration (a later row replaces an earlier
    one), sorted by iteration with each iteration's train row first."""
    unique = {(r["iteration"], is_eval_row(r)): r for r in rows}
    return [unique[key] for key in sorted(unique)]


def write_metrics(path: str | pathlib.Path, rows: Iterable[dict]) -> None:
    text = "".join(json_row(row) for row in rows)
    atomic_write(pathlib.Path(path) / METRICS, lambda h: h.write(text), mode="w")


class RunLock:
    """Exclusive ownership of a run directory by this process.

    An advisory ``flock`` on ``DIR/.lock``: the kernel releases it when the process
    ends (SIGKILL included), so a lock is never stale. The holder's pid is written into
    the file for the error message of a second writer. Taking the lock also removes the
    temporary files that a killed writer can leave (``.NAME.XXXX.tmp``).
    """

    BUSY = "{path!r} is being trained by pid {pid}; wait for it or stop it first"

    def __init__(self, path: str | pathlib.Path, busy: str = BUSY):
        self.path = pathlib.Path(path)
        self.busy = busy  # the error when another process holds it ({path!r}, {pid})
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            return self
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _flock(fd, fcntl.LOCK_EX, self.path, self.busy)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:  # a full disk: the lock holds all the same; a second writer's message lacks the pid
            pass
        for stale in self.path.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def _flock(fd: int, kind: int, path: pathlib.Path, busy: str) -> None:
    """``flock(fd, kind)`` without waiting; RunDirError(``busy``) naming the holder's pid if taken."""
    import fcntl

    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunDirError(busy.format(path=str(path), pid=holder)) from None
        raise


def check_free(path: str | pathlib.Path, busy: str = RunLock.BUSY) -> None:
    """Raise RunDirError at once if another process holds ``path``'s :class:`RunLock`, so a
    command refuses before it spends time building its task (reads only; the command takes
    the lock itself before it writes)."""
    path = pathlib.Path(path)
    try:
        import fcntl

        fd = os.open(path / LOCK, os.O_RDONLY)
    except (ImportError, OSError):  # not POSIX, or no lock file: nobody holds it
        return
    try:
        _flock(fd, fcntl.LOCK_SH, path, busy)  # a shared lock conflicts only with a holder's exclusive one
    finally:
        os.close(fd)


def check_out(path: str | pathlib.Path, overwrite: bool) -> None:
    """Raise unless ``path`` can receive a new run (reads only).

    A half-made run (no checkpoint yet) may be replaced without ``overwrite``.
    """
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output path {str(path)!r} exists and is not a directory")
    if is_run(path) and not overwrite and not is_half_made(path):
        raise RunDirError(
            f"output directory {str(path)!r} already holds a run; "
            "use --resume to continue it or --overwrite to replace it"
        )


def remove_run_files(path: str | pathlib.Path, keep: Iterable[str] = ()) -> None:
    """Delete the files a run writes (other files in the directory stay)."""
    for name in set(RUN_FILES) - set(keep):
        target = pathlib.Path(path) / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def prepare(path: str | pathlib.Path, overwrite: bool) -> pathlib.Path:
    """Make ``path`` ready for a new run (see :func:`check_out`), removing an old one."""
    path = pathlib.Path(path)
    check_out(path, overwrite)
    remove_run_files(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_config(path: pathlib.Path, config: dict, facts: dict | None = None) -> None:
    """``config.json``: the resolved settings, facts about the run (``d``, ``T``, devices) and versions."""
    text = json.dumps({"config": config, **(facts or {}), "versions": versions()}, indent=2) + "\n"
    atomic_write(path / CONFIG, lambda h: h.write(text), mode="w")


def _theta_arrays(stacked: PyTree) -> dict[str, np.ndarray]:
    """The npz arrays of a stacked theta (leaves ``[M, ...]``): ``theta`` or ``theta/<path>``."""
    flat = jax.tree_util.tree_flatten_with_path(stacked)[0]
    if len(flat) == 1 and not flat[0][0]:
        return {"theta": np.asarray(flat[0][1])}
    return {"theta/" + jax.tree_util.keystr(key).strip("[]'.").replace("']['", "/"): np.asarray(leaf)
            for key, leaf in flat}


class ThetaTrajectory:
    """The saved ``theta`` of every update, buffered in memory and flushed atomically
    (at checkpoints and at the end) to ``thetas.npz``.

    Thetas arrive in blocks (a chunk's updates at once); a flush stacks only the new ones.
    """

    def __init__(self, path: pathlib.Path):
        self.file = path / THETAS
        self.iterations: list[int] = []
        self._pending: list[dict[str, np.ndarray]] = []
        self._stacked: dict[str, np.ndarray] = {}

    def extend(self, iterations, stacked: PyTree) -> None:
        """Buffer the thetas of ``iterations`` ``[M]``: ``stacked`` has leaves ``[M, ...]``."""
        iterations = np.asarray(iterations, np.int64).tolist()
        if iterations:
            self.iterations += iterations
            self._pending.append(_theta_arrays(stacked))

    def append(self, iteration: int, theta: PyTree) -> None:
        """Buffer one ``theta`` (host or device arrays)."""
        self.extend([iteration], jax.tree_util.tree_map(lambda x: np.asarray(x)[None], theta))

    def truncate(self, iteration: int, template: PyTree) -> None:
        """Load the saved trajectory up to ``iteration`` (for a resumed run)."""
        iterations, thetas = load_thetas(self.file.parent, template)
        keep = [i for i, it in enumerate(iterations) if it <= iteration]
        self.iterations, self._pending, self._stacked = [], [], {}
        if keep:
            stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *[thetas[i] for i in keep])
            self.extend(iterations[keep], stacked)

    def flush(self, writer=None) -> None:
        """Write the trajectory (``writer``: a :class:`nres.checkpoint.BackgroundWriter`
        that writes the file later; the arrays are taken now)."""
        if not self.iterations:
            return
        if self._pending:
            blocks = ([self._stacked] if self._stacked else []) + self._pending
            self._stacked = {k: np.concatenate([block[k] for block in blocks]) for k in blocks[0]}
            self._pending = []
        arrays = {"iteration": np.asarray(self.iterations, np.int64), **self._stacked}
        job = lambda: atomic_write(self.file, lambda h: np.savez(h, **arrays))
        writer.submit(job) if writer is not None else job()


def load_thetas(path: str | pathlib.Path, template: PyTree) -> tuple[np.ndarray, list[PyTree]]:
    """The saved trajectory as ``(iterations [M], [theta_1, ..., theta_M])``."""
    file = pathlib.Path(path) / THETAS
    if not file.is_file():
        return np.zeros((0,), np.int64), []
    try:
        with np.load(file, allow_pickle=False) as data:
            iterations = data["iteration"]
            leaves_by_name = {k: data[k] for k in data.files if k != "iteration"}
    except Exception as err:  # zip, key and format errors all mean an unreadable file
        raise RunDirError(f"{str(file)!r} is unreadable: {err}") from None
    names = list(_theta_arrays(jax.tree_util.tree_map(lambda x: np.asarray(x)[None], template)))
    treedef = jax.tree_util.tree_structure(template)
    if iterations.ndim != 1 or set(names) != set(leaves_by_name):
        raise RunDirError(f"{str(file)!r} holds {sorted(leaves_by_name)}, this run's theta is {names}")
    for name, want in zip(names, jax.tree_util.tree_leaves(template)):
        got = leaves_by_name[name]
        if got.shape != (len(iterations), *want.shape) or got.dtype != np.dtype(want.dtype):
            raise RunDirError(f"{str(file)!r} array {name!r} is {got.dtype}{list(got.shape)}, this run "
                              f"needs {np.dtype(want.dtype)}{[len(iterations), *want.shape]}")
    thetas = [
        jax.tree_util.tree_unflatten(treedef, [leaves_by_name[name][m] for name in names])
        for m in range(len(iterations))
    ]
    return iterations, thetas

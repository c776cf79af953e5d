"""A run directory: everything one training run writes, and reading it back.

Layout of ``DIR/``:

* ``config.json``: every resolved setting (task options and ``horizon`` included), the
  size ``theta_size`` of theta, devices and process count, and library versions.
* ``metrics.jsonl``: one JSON object per logged update (``iteration``,
  ``wall_time_s`` of training only, ``total_env_steps``, ``sequential_steps``,
  ``train_loss``, ...); evaluation rows carry ``test_loss`` instead of ``train_loss``.
* ``tensorboard/``: TensorBoard event files with the same scalars.
* ``thetas.npz``: the ``theta`` trajectory: ``iteration`` ``[M]`` and one array
  ``theta`` (or ``theta/<path>`` per pytree leaf) with a leading ``[M]`` axis;
  plain NumPy, readable without this library.
* ``checkpoint.npz``: the latest checkpoint (see :mod:`nres.checkpoint`).
* ``curves.png``: loss against updates, total env steps and wall-clock.
"""

from __future__ import annotations

import json
import pathlib
import platform
import shutil
from typing import Any, Iterable

import jax
import numpy as np

from nres.checkpoint import atomic_write
from nres.tree import PyTree

CONFIG = "config.json"
METRICS = "metrics.jsonl"
THETAS = "thetas.npz"
CHECKPOINT = "checkpoint.npz"
CURVES = "curves.png"
TENSORBOARD = "tensorboard"
RUN_FILES = (CONFIG, METRICS, THETAS, CHECKPOINT, CURVES, TENSORBOARD)


class RunDirError(ValueError):
    """A directory that is not a run, or already holds one."""


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


def read_config(path: str | pathlib.Path) -> dict:
    path = pathlib.Path(path)
    if not is_run(path):
        raise RunDirError(f"{str(path)!r} is not a run directory (no {CONFIG})")
    try:
        return json.loads((path / CONFIG).read_text())
    except json.JSONDecodeError as err:
        raise RunDirError(f"{str(path / CONFIG)!r} is not valid JSON: {err}") from None


def read_metrics(path: str | pathlib.Path) -> list[dict]:
    file = pathlib.Path(path) / METRICS
    if not file.is_file():
        return []
    lines = [line for line in file.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # a row cut short by a crash: the resume rewrites the file
                break
            raise RunDirError(f"{str(file)!r} line {number} is not JSON") from None
    return rows


def write_metrics(path: str | pathlib.Path, rows: Iterable[dict]) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    atomic_write(pathlib.Path(path) / METRICS, lambda h: h.write(text), mode="w")


def prepare(path: str | pathlib.Path, overwrite: bool) -> pathlib.Path:
    """Make ``path`` ready for a new run; refuse to clobber a run unless ``overwrite``."""
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output path {str(path)!r} exists and is not a directory")
    if is_run(path):
        if not overwrite:
            raise RunDirError(
                f"output directory {str(path)!r} already holds a run; "
                "use --resume to continue it or --overwrite to replace it"
            )
        for name in RUN_FILES:
            target = path / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_config(path: pathlib.Path, config: dict, facts: dict | None = None) -> None:
    """``config.json``: the resolved settings, facts about the run (``d``, ``T``, devices) and versions."""
    text = json.dumps({"config": config, **(facts or {}), "versions": versions()}, indent=2) + "\n"
    atomic_write(path / CONFIG, lambda h: h.write(text), mode="w")


def _theta_arrays(thetas: list[PyTree]) -> dict[str, np.ndarray]:
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *thetas)
    flat = jax.tree_util.tree_flatten_with_path(stacked)[0]
    if len(flat) == 1 and not flat[0][0]:
        return {"theta": flat[0][1]}
    return {"theta/" + jax.tree_util.keystr(key).strip("[]'.").replace("']['", "/"): leaf for key, leaf in flat}


class ThetaTrajectory:
    """The saved ``theta`` of every update, flushed atomically to ``thetas.npz``."""

    def __init__(self, path: pathlib.Path):
        self.file = path / THETAS
        self.iterations: list[int] = []
        self.thetas: list[PyTree] = []

    def append(self, iteration: int, theta: PyTree) -> None:
        self.iterations.append(iteration)
        self.thetas.append(jax.device_get(theta))

    def truncate(self, iteration: int, template: PyTree) -> None:
        """Load the saved trajectory up to ``iteration`` (for a resumed run)."""
        iterations, thetas = load_thetas(self.file.parent, template)
        keep = [i for i, it in enumerate(iterations) if it <= iteration]
        self.iterations = [int(iterations[i]) for i in keep]
        self.thetas = [thetas[i] for i in keep]

    def flush(self) -> None:
        if not self.thetas:
            return
        arrays = {"iteration": np.asarray(self.iterations, np.int64), **_theta_arrays(self.thetas)}
        atomic_write(self.file, lambda h: np.savez(h, **arrays))


def load_thetas(path: str | pathlib.Path, template: PyTree) -> tuple[np.ndarray, list[PyTree]]:
    """The saved trajectory as ``(iterations [M], [theta_1, ..., theta_M])``."""
    file = pathlib.Path(path) / THETAS
    if not file.is_file():
        return np.zeros((0,), np.int64), []
    with np.load(file, allow_pickle=False) as data:
        iterations = data["iteration"]
        leaves_by_name = {k: data[k] for k in data.files if k != "iteration"}
    names = list(_theta_arrays([template]))
    treedef = jax.tree_util.tree_structure(template)
    thetas = [
        jax.tree_util.tree_unflatten(treedef, [leaves_by_name[name][m] for name in names])
        for m in range(len(iterations))
    ]
    return iterations, thetas


class TensorBoardLog:
    """Scalars as TensorBoard event files (tensorboardX; no TensorFlow needed)."""

    def __init__(self, path: pathlib.Path, purge_step: int | None = None):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(path / TENSORBOARD), purge_step=purge_step, flush_secs=30)

    def scalars(self, row: dict[str, Any], prefix: str) -> None:
        step = row["iteration"]
        for key, value in row.items():
            if key != "iteration" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{key}", value, global_step=step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()

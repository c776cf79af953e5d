"""Atomic, pickle-free checkpoints of pytrees of arrays.

A checkpoint is one ``.npz`` file: the leaves of a pytree as ``leaf_00000`` ...
plus a JSON ``metadata`` string. It is written to a temporary file in the same
directory, flushed to disk and renamed over the target, so a crash leaves either the
old or the new checkpoint, never a torn one. Restoring needs a template pytree of the
same structure (e.g. from ``jax.eval_shape``), and checks every shape and dtype.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any, Callable

import jax
import numpy as np

from nres.tree import PyTree


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or does not fit the run."""


def atomic_write(path: str | pathlib.Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(fileobj)`` on a temporary file, fsync it, and rename it to ``path``."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:  # a failed write names no file: name the target
            err.filename = str(path)
        raise


class BackgroundWriter:
    """Runs file writes in submission order on one background thread.

    Writing and fsyncing a checkpoint waits on the disk (milliseconds locally, much more
    on a network file system); here training goes on meanwhile. Each job is atomic on
    its own (:func:`atomic_write`), and jobs run in order, so the files on disk are
    always those of some prefix of the submitted jobs. The first error a job raises is
    raised again in the caller's thread by the next :meth:`submit` or by :meth:`wait`;
    later jobs are dropped.

    At most :data:`MAX_PENDING` jobs wait: a caller that checkpoints faster than the disk
    writes waits in :meth:`submit` (each job holds its own copy of what it writes, so an
    unbounded queue would grow without limit: a run checkpointing every 2 updates of a
    fast task once reached 18 GB).
    """

    MAX_PENDING = 2

    def __init__(self):
        import queue
        import threading

        self._jobs: "queue.Queue" = queue.Queue(maxsize=self.MAX_PENDING)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nres-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job()
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                self._error = err
            finally:
                self._jobs.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, job: Callable[[], None]) -> None:
        self._raise()
        self._jobs.put(job)

    def wait(self) -> None:
        """Block until every submitted job has run; raise the first error of one."""
        self._jobs.join()
        self._raise()

    def close(self) -> None:
        """Wait for the jobs and stop the thread (errors are raised as by :meth:`wait`)."""
        try:
            self.wait()
        finally:
            self._jobs.put(None)
            self._thread.join()


def save_pytree(path: str | pathlib.Path, tree: PyTree, metadata: dict) -> None:
    """Write the leaves of ``tree`` (any arrays) and ``metadata`` (JSON) atomically."""
    leaves = jax.tree_util.tree_leaves(jax.device_get(tree))
    arrays = {f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays["metadata"] = np.asarray(json.dumps(metadata))
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def load_pytree(path: str | pathlib.Path, template: PyTree) -> tuple[PyTree, dict]:
    """Read a checkpoint into the structure of ``template``; returns ``(tree, metadata)``."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            metadata = json.loads(str(data["metadata"]))
            stored = [data[f"leaf_{i:05d}"] for i in range(len(data.files) - 1)]
    except Exception as err:  # zip, key and JSON errors all mean an unreadable file
        raise CheckpointError(f"checkpoint {str(path)!r} is unreadable: {err}") from None
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = [leaf for _, leaf in with_paths]
    if len(stored) != len(leaves):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds {len(stored)} arrays but this run needs {len(leaves)}"
        )
    for i, (got, want) in enumerate(zip(stored, leaves)):
        if tuple(got.shape) != tuple(want.shape) or np.dtype(got.dtype) != np.dtype(want.dtype):
            raise CheckpointError(
                f"checkpoint {str(path)!r} array {i} ({jax.tree_util.keystr(with_paths[i][0])}) is "
                f"{got.dtype}{list(got.shape)}, "
                f"this run needs {np.dtype(want.dtype)}{list(want.shape)}"
            )
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(x) for x in stored]), metadata

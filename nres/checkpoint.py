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
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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

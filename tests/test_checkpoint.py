import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nres.checkpoint import CheckpointError, atomic_write, load_pytree, save_pytree


def _tree():
    return {"theta": jnp.arange(3.0), "state": (jnp.ones((2, 2), jnp.int32), jax.random.PRNGKey(4)), "none": None}


def test_round_trip_preserves_values_and_dtypes(tmp_path):
    path = tmp_path / "ck.npz"
    save_pytree(path, _tree(), {"iteration": 7})
    tree, meta = load_pytree(path, jax.eval_shape(_tree))
    assert meta == {"iteration": 7}
    for got, want in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(_tree())):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert tree["none"] is None


def test_no_pickles_inside(tmp_path):
    path = tmp_path / "ck.npz"
    save_pytree(path, _tree(), {})
    with np.load(path, allow_pickle=False) as data:  # would raise on object arrays
        assert all(data[k].dtype != object for k in data.files)


def test_shape_mismatch_and_garbage_are_clear_errors(tmp_path):
    path = tmp_path / "ck.npz"
    save_pytree(path, _tree(), {})
    other = {"theta": jnp.arange(4.0), "state": (jnp.ones((2, 2), jnp.int32), jax.random.PRNGKey(0)), "none": None}
    with pytest.raises(CheckpointError, match=r"array \d+ \(\['theta'\]\) is float32\[3\].*float32\[4\]"):
        load_pytree(path, other)
    path.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_pytree(path, _tree())
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_pytree(tmp_path / "absent.npz", _tree())


def test_crash_while_writing_keeps_the_old_file(tmp_path):
    path = tmp_path / "ck.npz"
    save_pytree(path, _tree(), {"iteration": 1})
    before = path.read_bytes()

    def explode(handle):
        handle.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(path, explode)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ck.npz"]  # no temporary left behind


def test_background_writes_run_in_order_and_errors_reach_the_caller(tmp_path):
    from nres.checkpoint import BackgroundWriter, atomic_write

    writer = BackgroundWriter()
    done = []
    for i in range(20):
        writer.submit(lambda i=i: (atomic_write(tmp_path / "f", lambda h: h.write(str(i).encode())), done.append(i)))
    writer.wait()
    assert done == list(range(20)) and (tmp_path / "f").read_text() == "19"

    def full_disk():
        raise OSError(28, "No space left on device", str(tmp_path / "f"))

    writer.submit(full_disk)
    writer.submit(lambda: done.append("after the error"))  # dropped: files stay those of a prefix of the jobs
    with pytest.raises(OSError, match="No space left"):
        writer.wait()
    assert done[-1] == 19
    writer.close()


def test_the_background_writer_holds_at_most_max_pending_jobs():
    """A caller that checkpoints faster than the disk writes waits in submit instead of
    queueing copies without limit (memory once grew to 18 GB)."""
    import threading

    from nres.checkpoint import BackgroundWriter

    writer, gate, done = BackgroundWriter(), threading.Event(), []
    writer.submit(lambda: (gate.wait(), done.append(0)))  # the disk is stuck on this one

    def producer():
        for i in range(1, BackgroundWriter.MAX_PENDING + 3):
            writer.submit(lambda i=i: done.append(i))

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    thread.join(timeout=1.0)
    assert thread.is_alive(), "submit must wait while MAX_PENDING jobs are queued"
    assert writer._jobs.qsize() == BackgroundWriter.MAX_PENDING
    gate.set()
    thread.join(timeout=30)
    writer.close()
    assert done == list(range(BackgroundWriter.MAX_PENDING + 3)), "every job runs, in order"

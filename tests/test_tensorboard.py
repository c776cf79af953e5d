"""TensorBoard event files (:mod:`nres.tensorboard`) that the protobuf readers parse,
with checksums and headers equal to tensorboardX's."""

import os
import pathlib
import struct
import sys

import numpy as np
import pytest

from nres import rundir, tensorboard

sys.path.insert(0, str(pathlib.Path(__file__).parent / "data"))
from events import read_events  # noqa: E402


@pytest.mark.parametrize("lengths", [[0, 1, 7, 8, 9], [150] * 40 + [151, 3000]])
def test_vectorised_checksum_equals_tensorboardx(lengths):
    from tensorboardX.record_writer import masked_crc32c

    rng = np.random.default_rng(len(lengths))
    records = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in lengths]
    assert tensorboard.masked_crc32c(records).tolist() == [masked_crc32c(r) for r in records]


def test_varints_built_as_arrays_equal_the_per_value_encoding():
    rng = np.random.default_rng(1)
    edges = np.array([0, 1, 127, 128, 16383, 16384, 2**63 - 1, 2**64 - 1], np.uint64)
    values = np.sort(np.concatenate([edges, rng.integers(0, 2**62, 50, dtype=np.uint64)]))
    runs = tensorboard._varint_rows(values)
    assert b"".join(digits.tobytes() for _, digits in runs) == b"".join(tensorboard._varint(int(v)) for v in values)
    assert [rows.stop for rows, _ in runs][-1] == len(values) and len({d.shape[1] for _, d in runs}) == len(runs)


def test_a_chunk_of_rows_is_one_event_per_row(tmp_path):
    log = tensorboard.TensorBoardLog(tmp_path)
    rows = [{"iteration": i, "train_loss": 0.5 * i, "total_env_steps": 800 * i, "ok": True} for i in range(1, 101)]
    log.scalars(rows, "train")
    log.scalars({"iteration": 100, "test_loss": 3.25, "skipped": None}, "test")
    log.close()
    scalars = read_events(tmp_path / rundir.TENSORBOARD)
    assert sorted(scalars) == ["test/test_loss", "train/total_env_steps", "train/train_loss"]
    assert scalars["train/train_loss"] == {i: 0.5 * i for i in range(1, 101)}
    assert scalars["train/total_env_steps"][100] == 80000.0 and scalars["test/test_loss"] == {100: 3.25}


def test_file_header_and_purge_events_are_what_tensorboardx_writes(tmp_path):
    from tensorboardX.proto import event_pb2

    tensorboard.TensorBoardLog(tmp_path, purge_step=12).close()
    (name,) = os.listdir(tmp_path / rundir.TENSORBOARD)
    data, events, pos = (tmp_path / rundir.TENSORBOARD / name).read_bytes(), [], 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        events.append(event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length]))
        pos += 16 + length
    assert [e.file_version for e in events] == ["brain.Event:2", "brain.Event:2", ""]
    assert [e.step for e in events] == [0, 12, 12] and all(e.wall_time > 1e9 for e in events)
    assert events[2].session_log.status == event_pb2.SessionLog.START

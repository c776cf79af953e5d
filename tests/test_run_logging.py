"""Per-chunk logging: TensorBoard event files that the protobuf readers parse (with
checksums equal to tensorboardX's), and chunked metric writes that survive SIGKILL."""

import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from nres import rundir
from nres.cli import main


def read_events(directory):
    """``{tag: {step: value}}`` as TensorBoard reads it: a ``SessionLog.START`` at step ``s``
    (a resumed run) drops the events at ``step >= s`` read before it. Checks every CRC."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    scalars = {}
    for name in sorted(os.listdir(directory), key=lambda n: os.path.getmtime(os.path.join(directory, n))):
        data, pos = open(os.path.join(directory, name), "rb").read(), 0
        while pos < len(data):
            header = data[pos : pos + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[pos + 8 : pos + 12])[0] == masked_crc32c(header)
            payload = data[pos + 12 : pos + 12 + length]
            assert struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])[0] == masked_crc32c(payload)
            pos += 16 + length
            event = event_pb2.Event.FromString(payload)
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                for values in scalars.values():
                    for step in [s for s in values if s >= event.step]:
                        del values[step]
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


@pytest.mark.parametrize("lengths", [[0, 1, 7, 8, 9], [150] * 40 + [151, 3000]])
def test_vectorised_checksum_equals_tensorboardx(lengths):
    from tensorboardX.record_writer import masked_crc32c

    rng = np.random.default_rng(len(lengths))
    records = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in lengths]
    assert rundir.masked_crc32c(records).tolist() == [masked_crc32c(r) for r in records]


def test_varints_built_as_arrays_equal_the_per_value_encoding():
    rng = np.random.default_rng(1)
    edges = np.array([0, 1, 127, 128, 16383, 16384, 2**63 - 1, 2**64 - 1], np.uint64)
    values = np.sort(np.concatenate([edges, rng.integers(0, 2**62, 50, dtype=np.uint64)]))
    runs = rundir._varint_rows(values)
    assert b"".join(digits.tobytes() for _, digits in runs) == b"".join(rundir._varint(int(v)) for v in values)
    assert [rows.stop for rows, _ in runs][-1] == len(values) and len({d.shape[1] for _, d in runs}) == len(runs)


def test_a_chunk_of_rows_is_one_event_per_row(tmp_path):
    log = rundir.TensorBoardLog(tmp_path)
    rows = [{"iteration": i, "train_loss": 0.5 * i, "total_env_steps": 800 * i, "ok": True} for i in range(1, 101)]
    log.scalars(rows, "train")
    log.scalars({"iteration": 100, "test_loss": 3.25, "skipped": None}, "test")
    log.close()
    scalars = read_events(tmp_path / rundir.TENSORBOARD)
    assert sorted(scalars) == ["test/test_loss", "train/total_env_steps", "train/train_loss"]
    assert scalars["train/train_loss"] == {i: 0.5 * i for i in range(1, 101)}
    assert scalars["train/total_env_steps"][100] == 80000.0 and scalars["test/test_loss"] == {100: 3.25}


TINY = ["--task", "lorenz", "--horizon", "40", "--unroll-length", "10", "--num-particles", "4",
        "--num-test-starts", "8", "--checkpoint-every", "7", "--seed", "4", "--no-progress"]


def _rows(path):
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rundir.read_metrics(path)]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "nres.cli", "train", *TINY, "--out", str(out), "--iterations", "1000000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(rundir.read_metrics(out)) < 40 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    written = len(rundir.read_metrics(out))
    assert written >= 40, proc.stderr.read()
    total = written + 9  # past the kill point and past the next checkpoint boundary
    assert main(["train", "--resume", str(out), "--iterations", str(total), "--no-progress"]) == 0
    ref = tmp_path / "ref"
    assert main(["train", *TINY, "--out", str(ref), "--iterations", str(total)]) == 0
    assert _rows(out) == _rows(ref)
    with np.load(ref / "thetas.npz") as a, np.load(out / "thetas.npz") as b:
        np.testing.assert_array_equal(a["theta"], b["theta"])
        assert list(b["iteration"]) == list(range(total + 1))
    killed, uninterrupted = read_events(out / "tensorboard"), read_events(ref / "tensorboard")
    assert sorted(killed["train/train_loss"]) == list(range(1, total + 1))
    assert killed["train/train_loss"] == uninterrupted["train/train_loss"]


def test_file_header_and_purge_events_are_what_tensorboardx_writes(tmp_path):
    from tensorboardX.proto import event_pb2

    rundir.TensorBoardLog(tmp_path, purge_step=12).close()
    (name,) = os.listdir(tmp_path / rundir.TENSORBOARD)
    data, events, pos = (tmp_path / rundir.TENSORBOARD / name).read_bytes(), [], 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        events.append(event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length]))
        pos += 16 + length
    assert [e.file_version for e in events] == ["brain.Event:2", "brain.Event:2", ""]
    assert [e.step for e in events] == [0, 12, 12] and all(e.wall_time > 1e9 for e in events)
    assert events[2].session_log.status == event_pb2.SessionLog.START


def test_a_chunk_written_as_columns_equals_the_same_rows_written_one_by_one(tmp_path):
    """The fast path of a chunk of finite, applied updates (a format string per JSON line,
    summaries packed as one array) writes what the per-row path writes."""
    from nres import run
    from nres.training import Counters, Steps, UpdateInfo

    n = 300  # iterations cross 128 and 16384, where the step's varint grows to two and three bytes
    rng = np.random.default_rng(0)
    info = UpdateInfo(rng.random(n).astype(np.float32) * 1e3, rng.random(n).astype(np.float32),
                      np.ones(n, bool), np.zeros(n, np.int32))
    iterations = np.concatenate([np.arange(1, 151), np.arange(16300, 16450)])
    steps = Steps(iterations, np.cumsum(rng.random(n)) / 7, 800 * np.arange(1, n + 1),
                  100 * np.arange(1, n + 1), np.zeros(n, np.int64), info, {}, Counters())
    rows = run._train_rows(steps)
    columns = run._plain_columns(steps)
    assert "".join(run._PLAIN_ROW % row for row in zip(*columns)) == "".join(rundir.json_row(r) for r in rows)
    for name, write in (("rows", lambda log: log.scalars(rows, "train")),
                        ("columns", lambda log: log.columns(steps.iteration, dict(zip(run._PLAIN_KEYS[1:], columns[1:])),
                                                            "train"))):
        log = rundir.TensorBoardLog(tmp_path / name)
        write(log)
        log.close()
    assert read_events(tmp_path / "rows" / rundir.TENSORBOARD) == read_events(tmp_path / "columns" / rundir.TENSORBOARD)
    assert len(read_events(tmp_path / "columns" / rundir.TENSORBOARD)["train/train_loss"]) == n


def test_the_rows_kept_for_the_curves_are_the_rows_on_disk(tmp_path, monkeypatch):
    """Run.train draws its curves (and checks divergence) from rows it kept while logging;
    they equal metrics.jsonl read back, evaluation rows included."""
    from nres import run

    drawn = []
    monkeypatch.setattr(run.Run, "plot", lambda self, rows=None: drawn.append(rows() if callable(rows) else rows))
    out = tmp_path / "run"
    assert main(["train", "--task", "lorenz", "--horizon", "40", "--unroll-length", "10", "--num-particles", "4",
                 "--num-test-starts", "8", "--iterations", "30", "--eval-every", "10", "--lr", "1e-3",
                 "--no-progress", "--out", str(out)]) == 0
    (rows,) = drawn
    assert rows == rundir.read_metrics(out)
    assert len([r for r in rows if "test_loss" in r]) == 4 and len([r for r in rows if "train_loss" in r]) == 30

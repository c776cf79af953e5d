"""The run log (:mod:`nres.runlog`): chunked metric and TensorBoard writes equal to
row-by-row ones, the rows kept for the curves, and chunked writes that survive SIGKILL."""

import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nres import rundir, tensorboard
from nres.cli import main

sys.path.insert(0, str(pathlib.Path(__file__).parent / "data"))
from events import read_events  # noqa: E402


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


def test_a_chunk_written_as_columns_equals_the_same_rows_written_one_by_one(tmp_path):
    """The fast path of a chunk of finite, applied updates (a format string per JSON line,
    summaries packed as one array) writes what the per-row path writes."""
    from nres import runlog
    from nres.counters import Counters, Steps
    from nres.step import UpdateInfo

    n = 300  # iterations cross 128 and 16384, where the step's varint grows to two and three bytes
    rng = np.random.default_rng(0)
    info = UpdateInfo(rng.random(n).astype(np.float32) * 1e3, rng.random(n).astype(np.float32),
                      np.ones(n, bool), np.zeros(n, np.int32), np.full(n, 800, np.int32))
    iterations = np.concatenate([np.arange(1, 151), np.arange(16300, 16450)])
    steps = Steps(iterations, np.cumsum(rng.random(n)) / 7, 800 * np.arange(1, n + 1),
                  100 * np.arange(1, n + 1), np.zeros(n, np.int64), info, {}, Counters())
    rows = runlog.train_rows(steps)
    columns = runlog.train_columns(steps)
    assert rundir.column_lines(columns) == "".join(rundir.json_row(r) for r in rows)
    for name, write in (("rows", lambda log: log.scalars(rows, "train")),
                        ("columns", lambda log: log.columns(steps.iteration, dict(zip(rundir.TRAIN_COLUMNS[1:], columns[1:])),
                                                            "train"))):
        log = tensorboard.TensorBoardLog(tmp_path / name)
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

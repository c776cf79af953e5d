"""End-to-end runs of the ``nres`` command line on tiny Lorenz budgets."""

import json
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

TINY = [
    "--task", "lorenz", "--horizon", "40", "--unroll-length", "10", "--num-particles", "4",
    "--num-test-starts", "8", "--checkpoint-every", "3", "--no-progress",
]


def train(out, *extra):
    return main(["train", *TINY, "--out", str(out), *extra])


def without_wall_time(rows):
    return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in rows]


def read_event_scalars(directory):
    """Parse TensorBoard event files (TFRecord of Event protos) into {tag: [(step, value)]}."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    for name in os.listdir(directory):
        data = open(os.path.join(directory, name), "rb").read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "a"
    assert train(out, "--iterations", "6", "--seed", "3") == 0
    return out


def test_train_writes_every_file(run_a):
    config = json.loads((run_a / "config.json").read_text())
    assert config["config"]["estimator"] == "nres" and config["config"]["horizon"] == 40
    assert {"nres", "jax", "jaxlib", "optax", "python"} <= set(config["versions"])
    rows = rundir.read_metrics(run_a)
    train_rows = [r for r in rows if "train_loss" in r]
    assert [r["iteration"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    burn_in = train_rows[0]["total_env_steps"] - 2 * 4 * 10
    assert burn_in >= 0 and burn_in % 20 == 0  # 2 * sum(tau_i), tau_i multiples of W
    for i, row in enumerate(train_rows):
        assert row["total_env_steps"] == burn_in + (i + 1) * 2 * 4 * 10
        assert row["sequential_steps"] == (i + 1) * 10
        assert np.isfinite(row["train_loss"]) and row["wall_time_s"] > 0
    assert all(b["wall_time_s"] >= a["wall_time_s"] for a, b in zip(train_rows, train_rows[1:]))
    assert "test_loss" in rows[-1] and rows[-1]["iteration"] == 6
    with np.load(run_a / "thetas.npz") as thetas:  # plain numpy
        assert list(thetas["iteration"]) == list(range(7))
        assert thetas["theta"].shape == (7, 2)
    with np.load(run_a / "checkpoint.npz") as ck:
        assert json.loads(str(ck["metadata"]))["counters"]["iteration"] == 6
    assert (run_a / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scalars = read_event_scalars(run_a / "tensorboard")
    assert [step for step, _ in scalars["train/train_loss"]] == [1, 2, 3, 4, 5, 6]
    assert scalars["test/test_loss"][-1][0] == 6
    np.testing.assert_allclose([v for _, v in scalars["train/train_loss"]], [r["train_loss"] for r in train_rows],
                               rtol=1e-6)


def test_same_seed_same_metrics(run_a, tmp_path):
    assert train(tmp_path / "b", "--iterations", "6", "--seed", "3") == 0
    assert without_wall_time(rundir.read_metrics(run_a)) == without_wall_time(rundir.read_metrics(tmp_path / "b"))
    assert train(tmp_path / "c", "--iterations", "6", "--seed", "4") == 0
    assert without_wall_time(rundir.read_metrics(run_a)) != without_wall_time(rundir.read_metrics(tmp_path / "c"))


def test_resume_equals_uninterrupted(run_a, tmp_path):
    out = tmp_path / "r"
    assert train(out, "--iterations", "4", "--seed", "3") == 0
    assert main(["train", "--resume", str(out), "--iterations", "6", "--no-progress"]) == 0
    with np.load(run_a / "thetas.npz") as a, np.load(out / "thetas.npz") as b:
        np.testing.assert_array_equal(a["theta"], b["theta"])
    train_rows = lambda path: [r for r in rundir.read_metrics(path) if "train_loss" in r]
    assert without_wall_time(train_rows(run_a)) == without_wall_time(train_rows(out))


def test_eval_replaces_test_rows_one_per_iteration_sorted(run_a, tmp_path, capsys):
    import shutil

    out = tmp_path / "e"
    shutil.copytree(run_a, out)
    before = rundir.read_metrics(out)
    assert main(["eval", str(out)]) == 0
    assert rundir.read_metrics(out) == before  # the final row is recomputed in place, identical
    for _ in range(2):  # twice: the second replaces the first
        assert main(["eval", str(out), "--all", "--stride", "3"]) == 0
    rows = rundir.read_metrics(out)
    evals = [r for r in rows if "test_loss" in r]
    assert [r["iteration"] for r in evals] == sorted({0, 3, 6} | {r["iteration"] for r in before if "test_loss" in r})
    assert [r["iteration"] for r in rows] == sorted(r["iteration"] for r in rows)
    assert [r for r in rows if "train_loss" in r] == [r for r in before if "train_loss" in r]
    zero = evals[0]
    assert zero["wall_time_s"] == 0.0 and zero["sequential_steps"] == 0
    assert zero["total_env_steps"] == rows[1]["total_env_steps"] - 2 * 4 * 10  # the burn-in's steps
    assert "update 6: test_loss=" in capsys.readouterr().out


def test_plot_compares_runs(run_a, tmp_path, capsys):
    other = tmp_path / "pes"
    assert train(other, "--iterations", "3", "--estimator", "pes") == 0
    png = tmp_path / "cmp.png"
    for axis in ("updates", "env-steps", "sequential-steps", "wall-clock"):
        assert main(["plot", str(run_a), str(other), "--x", axis, "--out", str(png)]) == 0
        assert f"2 curves of test_loss against {axis}" in capsys.readouterr().out
        assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--bogus-flag", "1"], "unrecognized arguments: --bogus-flag"),
        (["train", "--estimator", "sgd"], "invalid choice: 'sgd'"),
        (["train", "--num-particles", "-3"], "'num_particles' must be positive, got -3"),
        (["train", "--sigma", "abc"], "invalid float value: 'abc'"),
        (["train", "--task", "pong"], "unknown task 'pong'"),
        (["train", "--estimator", "gpes"], "needs noise_period"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["train", "--lr", "inf"], "'lr' must be finite, got inf"),
        (["train", "--lr", "nan"], "'lr' must be positive, got nan"),
        (["train", "--lr", "0"], "'lr' must be positive, got 0.0"),
        # a flag the chosen estimator would ignore (its default, or a config file's shared value, is fine)
        (["train", "--estimator", "tbptt", "--sigma", "0.5"], "--sigma does not apply to estimator 'tbptt'"),
        (["train", "--estimator", "fulles", "--unroll-length", "50"],
         "--unroll-length does not apply to estimator 'fulles'"),
        (["train", "--lr-decay", "0.5"], "--lr-decay applies to --lr-schedule piecewise, not 'constant'"),
        (["train", "--lr-boundaries", "1000"], "'lr_boundaries' [1000] needs lr_schedule 'piecewise'"),
        (["train", "--lr-schedule", "piecewise", "--lr-boundaries", "500", "100"],
         "'lr_boundaries' must increase, got [500, 100]"),
    ],
)
def test_bad_flags_give_one_line_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main([*args, "--out", str(out)] if args[0] == "train" else args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("nres: error:") and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_bad_config_files(tmp_path, capsys):
    out = tmp_path / "never"
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("estimater = 'nres'\n")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("iterations: many\n")
    for path, message in ((unknown, "unknown setting 'estimater'"), (wrong, "'iterations' must be an integer")):
        assert main(["train", "--config", str(path), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
        assert not out.exists()


def test_resume_of_a_non_run_and_clobbering_are_refused(run_a, tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    before = {p.name: p.stat().st_mtime_ns for p in run_a.iterdir()}
    assert train(run_a, "--iterations", "2") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in run_a.iterdir()} == before
    assert main(["train", "--resume", str(run_a), "--sigma", "0.1"]) == 2
    assert "--resume takes only --iterations" in capsys.readouterr().err


def test_overwrite_replaces_a_run(tmp_path):
    out = tmp_path / "o"
    assert train(out, "--iterations", "4") == 0
    assert train(out, "--iterations", "2", "--overwrite") == 0
    assert [r["iteration"] for r in rundir.read_metrics(out) if "train_loss" in r] == [1, 2]


def test_nonfinite_losses_stop_cleanly_with_a_readable_checkpoint(tmp_path, capsys):
    from nres.run import load_run

    out = tmp_path / "nan"
    code = train(out, "--iterations", "50", "--lr", "1000", "--max-nonfinite", "3", "--checkpoint-every", "1")
    assert code == 3
    err = capsys.readouterr().err
    assert "3 consecutive windows were non-finite" in err
    rows = [r for r in rundir.read_metrics(out) if "train_loss" in r]
    skipped = [r for r in rows if r.get("skipped_nonfinite")]
    assert len(skipped) == 3 and skipped[-1]["iteration"] == rows[-1]["iteration"]
    learner, counters = load_run(out).load_checkpoint()
    assert counters.iteration == rows[-1]["iteration"] - 3
    assert np.all(np.isfinite(np.asarray(learner.theta)))


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resume_matches(tmp_path):
    out = tmp_path / "int"
    cmd = [sys.executable, "-m", "nres.cli", "train", *TINY, "--out", str(out), "--iterations", "100000",
           "--checkpoint-every", "100000", "--seed", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(rundir.read_metrics(out)) < 20:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err and "Traceback" not in err
    done = json.loads(str(np.load(out / "checkpoint.npz")["metadata"]))["counters"]["iteration"]
    assert done >= 20
    total = done + 5
    assert main(["train", "--resume", str(out), "--iterations", str(total), "--no-progress"]) == 0
    ref = tmp_path / "ref"
    assert train(ref, "--iterations", str(total), "--seed", "5", "--checkpoint-every", "100000") == 0
    with np.load(ref / "thetas.npz") as a, np.load(out / "thetas.npz") as b:
        np.testing.assert_array_equal(a["theta"], b["theta"])
        assert list(b["iteration"]) == list(range(total + 1))


def test_the_command_exits_promptly_with_everything_written(run_a, tmp_path):
    """``python -m nres.cli`` leaves with ``os._exit`` after a command: its output through
    a pipe, its exit code and every file of the run are complete, equal to an in-process run."""
    out = tmp_path / "cmd"
    cmd = [sys.executable, "-m", "nres.cli", "train", *TINY, "--out", str(out), "--iterations", "6", "--seed", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith(f"done: results in {out}/ (metrics.jsonl, curves.png, thetas.npz, tensorboard/)")
    assert without_wall_time(rundir.read_metrics(out)) == without_wall_time(rundir.read_metrics(run_a))
    with np.load(out / "thetas.npz") as a, np.load(run_a / "thetas.npz") as b:
        np.testing.assert_array_equal(a["theta"], b["theta"])
    scalars = lambda run: {k: v for k, v in read_event_scalars(run / "tensorboard").items() if "wall_time" not in k}
    assert scalars(out) == scalars(run_a) and len(scalars(out)["train/train_loss"]) == 6
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([*cmd[:4], "--lr", "-1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("nres: error:") and bad.stderr.count("\n") == 1, bad.stderr


def test_the_command_collects_garbage_less_often():
    """The ``nres`` process raises the collector's thresholds before running a command
    (``GC_THRESHOLD``; the default collects about 400 times per start-up)."""
    from nres.cli import GC_THRESHOLD

    code = "import gc, nres.cli as c; c.main = lambda: print(gc.get_threshold()) or 0; c.run()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(GC_THRESHOLD)


def test_help_lists_the_tasks_own_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--task", "lorenz", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--num-test-starts" in out and "perturbed initial states in the test set" in out
    assert "--estimator" in out and "nres" in out


def test_every_registered_task_builds_its_flags():
    from nres.cli import train_parser
    from nres.tasks import task_names

    for task in task_names():
        parser = train_parser(task)
        assert parser.parse_args(["--iterations", "3"]).iterations == 3


def test_linear_task_trains_from_the_command_line(tmp_path):
    out = tmp_path / "lin"
    assert main(["train", "--task", "linear", "--iterations", "60", "--out", str(out), "--no-progress"]) == 0
    rows = rundir.read_metrics(out)
    evals = [r["test_loss"] for r in rows if "test_loss" in r]
    assert evals[-1] < rows[0]["train_loss"]


def test_divergence_is_reported_and_exits_3(tmp_path, capsys):
    out = tmp_path / "lr1"
    assert train(out, "--iterations", "40", "--lr", "1", "--max-nonfinite", "5") == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("nres: stopped: 5 consecutive windows were non-finite"), err
    lines = (out / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON token {c}")) for line in lines]
    assert any(r.get("skipped_nonfinite") for r in rows)


def test_divergence_rule():
    from nres.run import divergence

    train = lambda *losses: [{"iteration": i + 1, "train_loss": v} for i, v in enumerate(losses)]
    assert divergence(train(None, float("nan"))) == "the train loss was never finite"
    assert "exploded from 2 to 3e+07" in divergence(train(2.0, 5.0, 3e7))
    assert divergence(train(2.0, 1e6, 1.0)) is None  # a spike that recovered
    assert divergence(train(-0.01, -1e5)) is None  # a reward-like loss improving by decades
    assert divergence([{"iteration": 0, "test_loss": None}]) is None  # nothing trained yet
    # train rows also given as (iterations, losses) columns: ordered by iteration across both
    assert "exploded from 2 to 3e+07" in divergence(train(5.0, 3e7)[1:], [([1], [2.0]), ([3], [float("nan")])])
    assert divergence(train(3e7), [([2, 3], [1.0, 2.0])]) is None  # 3e7 at update 1 is the first loss


def test_bare_nres_lists_the_commands_and_trains_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("usage: nres") and "train" in captured.err
    assert not list(tmp_path.iterdir()), "bare nres wrote something (a run?)"
    assert main(["--help"]) == 0 and capsys.readouterr().out.startswith("usage: nres")


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_bad_progress_interval_is_one_line_before_anything_starts(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("NRES_PROGRESS_INTERVAL", value)
    out = tmp_path / "never"
    assert main(["train", "--task", "linear", "--iterations", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"nres: error: NRES_PROGRESS_INTERVAL={value!r} must be a number of seconds >= 0 (default 30)\n"
    assert not out.exists()


def test_settings_an_estimator_ignores_are_fine_from_defaults_and_config_files(tmp_path):
    shared = tmp_path / "shared.toml"
    shared.write_text("sigma = 0.5\nunroll_length = 4\n")  # e.g. settings shared by several methods
    from nres.cli import parse_train

    for estimator in ("tbptt", "fulles"):
        _, config, _ = parse_train(["--task", "linear", "--estimator", estimator, "--config", str(shared)])
        assert config.estimator == estimator and config.sigma == 0.5

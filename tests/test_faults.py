"""Fault injection on run directories.

Runs killed (SIGKILL), interrupted (SIGINT) and preempted (SIGTERM, SIGUSR1) at start-up,
mid-training, during a checkpoint write and during an evaluation, then resumed (or
re-run), must equal the uninterrupted run row for row (evaluation rows included),
theta for theta and in the final checkpoint. A second writer, a full disk, a read-only
disk and every bad input end with one ``nres: error:`` line and change no file.

The killed runs are subprocesses (``tests/inject_fault.py`` sends the signal from inside
at an exact point); everything else runs in-process to keep the test time small.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nres import rundir
from nres.cli import main

TINY = ["--task", "lorenz", "--num-particles", "10", "--unroll-length", "20", "--horizon", "400",
        "--num-test-starts", "16", "--no-progress"]
# 12 updates, a checkpoint every 4, an evaluation every 3 (at 0, 3, 6, 9, 12).
RUN = [*TINY, "--iterations", "12", "--checkpoint-every", "4", "--eval-every", "3", "--seed", "7"]
INJECT = pathlib.Path(__file__).with_name("inject_fault.py")


def snapshot(path: pathlib.Path) -> dict:
    """Every file under ``path`` (hidden ones included) with its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def rows_without_wall_time(path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in rundir.read_metrics(path)]


def assert_same_run(got: pathlib.Path, want: pathlib.Path) -> None:
    assert rows_without_wall_time(got) == rows_without_wall_time(want)
    with np.load(got / rundir.THETAS) as a, np.load(want / rundir.THETAS) as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    with np.load(got / rundir.CHECKPOINT) as a, np.load(want / rundir.CHECKPOINT) as b:
        meta = lambda d: {k: v for k, v in json.loads(str(d["metadata"]))["counters"].items() if k != "wall_time_s"}
        assert meta(a) == meta(b)
        for name in a.files:
            if name != "metadata":
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert not list(got.glob(".*.tmp")), "stale temporary files"


@pytest.fixture(scope="module")
def subprocess_env(tmp_path_factory):
    """The killed runs share one JAX compilation cache (they compile the same functions)."""
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax-cache")),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def inject(env: dict, target: str, nth: int, signame: str, when: str, args: list, match: str = ""):
    cmd = [sys.executable, str(INJECT), target, str(nth), signame, when, *([match] if match else []), "--", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", *RUN, "--out", str(out)]) == 0
    return out


# (name, target, nth call, signal, before/after, match, exit code, how to continue)
FAULTS = [
    ("start-up SIGINT in the burn-in", "nres.training:Trainer.init", 1, "SIGINT", "before", "", 130, "rerun"),
    ("start-up SIGKILL after config.json", "nres.rundir:write_config", 1, "SIGKILL", "after", "", -9, "resume"),
    ("start-up SIGTERM after config.json", "nres.rundir:write_config", 1, "SIGTERM", "after", "", 143, "rerun"),
    ("SIGKILL during the first checkpoint write", "os:replace", 1, "SIGKILL", "before", "checkpoint.npz", -9,
     "resume"),
    ("SIGKILL during a checkpoint write", "os:replace", 2, "SIGKILL", "before", "checkpoint.npz", -9, "resume"),
    ("SIGINT during a checkpoint write", "os:replace", 2, "SIGINT", "before", "checkpoint.npz", 130, "resume"),
    ("SIGTERM mid-training", "nres.training:Trainer.collect", 3, "SIGTERM", "before", "", 143, "resume"),
    ("SIGUSR1 mid-training", "nres.training:Trainer.collect", 2, "SIGUSR1", "after", "", 138, "resume"),
    ("SIGKILL during an evaluation", "nres.training:Trainer.evaluate", 3, "SIGKILL", "before", "", -9, "resume"),
    ("SIGTERM during the final evaluation", "nres.training:Trainer.evaluate", 5, "SIGTERM", "before", "", 143,
     "resume"),
    # Where Python cannot raise (the exception would be printed and dropped) or must not
    # (a half-imported extension crashes): the stop is deferred to the next safe point.
    ("SIGTERM in a garbage-collection callback at start-up", "nres.training:Trainer.init", 1, "SIGTERM", "gc", "",
     143, "rerun"),
    ("SIGUSR1 in a garbage-collection callback mid-training", "nres.training:Trainer.collect", 2, "SIGUSR1", "gc",
     "", 138, "resume"),
    ("SIGUSR1 while jaxlib's extension is imported", "import:jaxlib._jax", 1, "SIGUSR1", "before", "", 138,
     "rerun"),
    ("SIGINT while numpy's extension is imported", "import:numpy._core._multiarray_umath", 1, "SIGINT", "before",
     "", 130, "rerun"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, target, nth, signame, when, match, code, then", FAULTS, ids=[f[0] for f in FAULTS])
def test_interrupted_run_resumes_to_the_uninterrupted_one(reference, subprocess_env, tmp_path, name, target, nth,
                                                          signame, when, match, code, then):
    out = tmp_path / "run"
    proc = inject(subprocess_env, target, nth, signame, when, ["train", *RUN, "--out", str(out)], match)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    if code > 0:
        assert proc.stderr.strip().splitlines()[-1].startswith("nres: "), proc.stderr
    if then == "resume":
        assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    else:
        assert main(["train", *RUN, "--out", str(out)]) == 0
    assert_same_run(out, reference)
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0  # resuming a finished run adds nothing
    assert_same_run(out, reference)


def _handlers_installed(pid: int) -> bool:
    """Whether process ``pid`` catches SIGTERM: ``nres``'s first line installs its handlers."""
    try:
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def _start_nres(env: dict, argv: list) -> tuple[subprocess.Popen, float]:
    """``nres`` in a subprocess, once it runs its first line; returns it and that instant."""
    proc = subprocess.Popen([sys.executable, "-m", "nres.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    while not _handlers_installed(proc.pid) and proc.poll() is None:
        time.sleep(0.001)
    return proc, time.perf_counter()


@pytest.mark.slow
@pytest.mark.skipif(not pathlib.Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_a_stop_at_a_random_instant_ends_with_its_code_and_resumes_to_the_same_run(reference, subprocess_env,
                                                                                 tmp_path):
    from nres.interrupts import exit_code

    # The instants are fractions (fixed seed) of an uninterrupted run, counted from nres's
    # first line (its signal handlers installed; before it, the interpreter's own start-up
    # is not nres's to handle): most land in the imports (JAX's included) and the
    # compilation, the rest in training, evaluation and plotting.
    # The length of an uninterrupted run: the shorter of two, as the trials run (the first may
    # compile what the later ones load from the cache: a fraction of a cold run's length
    # once landed after a warm trial's last stop check, and it exited 0 at 0.87).
    durations = []
    for name in ("whole", "whole-again"):
        proc, started = _start_nres(subprocess_env, ["train", *RUN, "--out", str(tmp_path / name)])
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
        durations.append(time.perf_counter() - started)
    whole = min(durations)
    rng = np.random.default_rng(24)
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    for trial in range(20):
        fraction, signum = float(rng.uniform(0.0, 1.0)), stops[int(rng.integers(len(stops)))]
        out = tmp_path / f"trial{trial}"
        proc, started = _start_nres(subprocess_env, ["train", *RUN, "--out", str(out)])
        time.sleep(max(0.0, started + fraction * whole - time.perf_counter()))
        if proc.poll() is not None:  # this run was faster than the first: nothing to stop
            assert proc.returncode == 0, proc.stderr.read()
            continue
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=300)
        what = f"trial {trial}: {signal.Signals(signum).name} at {fraction:.2f} of {whole:.2f} s; stderr: {err}"
        if proc.returncode == 0 and fraction > 0.9:
            # The last instants of a process come after its final check of stop signals (its
            # work all written, exiting): a signal there cannot change the code. Only then is
            # exit 0 right, and only with the whole run written.
            assert not err.strip() and out.exists(), what
            assert_same_run(out, reference)
            continue
        assert proc.returncode == exit_code(signum), what
        assert "Traceback" not in err and "Exception ignored" not in err, what
        assert err.strip().splitlines()[-1].startswith("nres: "), what
        if out.exists():  # a checkpoint, or a half-made run that starts over
            assert main(["train", "--resume", str(out), "--no-progress"]) == 0, what
        else:
            assert main(["train", *RUN, "--out", str(out)]) == 0, what
        assert_same_run(out, reference)


@pytest.mark.slow
def test_ctrl_c_while_importing_jax_ends_cleanly(subprocess_env, tmp_path):
    out = tmp_path / "never"
    proc = inject(subprocess_env, "import:jax", 1, "SIGINT", "before", ["train", *RUN, "--out", str(out)])
    assert proc.returncode == 130 and proc.stderr.strip().startswith("nres: aborted"), proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.slow
def test_a_second_writer_is_refused_while_the_first_trains(subprocess_env, tmp_path, capsys):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nres.cli", "train", *TINY, "--iterations", "1000000",
           "--checkpoint-every", "1000000", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(rundir.read_metrics(out)) < 3:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        config = (out / rundir.CONFIG).read_bytes()
        for argv in (["train", *TINY, "--out", str(out), "--overwrite"],
                     ["train", "--resume", str(out), "--no-progress"],
                     ["eval", str(out)]):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip()
            assert err == (f"nres: error: {str(out)!r} is being trained by pid {proc.pid}; "
                           "wait for it or stop it first"), err
        assert (out / rundir.CONFIG).read_bytes() == config
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143 and "SIGTERM: stopped at update" in err, err
    done = rundir.read_metrics(out)[-1]["iteration"]
    # The lock died with its process: the run continues, and its rows are unique and sorted.
    assert main(["train", "--resume", str(out), "--iterations", str(done + 2), "--no-progress"]) == 0
    rows = rundir.read_metrics(out)
    assert [r["iteration"] for r in rows if "train_loss" in r] == list(range(1, done + 3))
    assert [r["iteration"] for r in rows] == sorted(r["iteration"] for r in rows)


def test_a_run_held_by_another_process_is_refused_before_its_task_is_built(reference, tmp_path, capsys,
                                                                            monkeypatch):
    import nres.run

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom nres import rundir\n"
                               "with rundir.RunLock(sys.argv[1]):\n print('held', flush=True); sys.stdin.read()",
                               str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run)

        def build(*args, **kwargs):  # building a task (a learned optimizer's: 44 s) comes after the check
            raise AssertionError("the task was built before the lock was checked")

        monkeypatch.setattr(nres.run.Run, "__init__", build)
        for argv in (["train", *RUN, "--out", str(run), "--overwrite"],
                     ["train", "--resume", str(run), "--no-progress"],
                     ["eval", str(run)]):
            assert main(argv) == 2, argv
            err = capsys.readouterr().err.strip()
            assert err == (f"nres: error: {str(run)!r} is being trained by pid {holder.pid}; "
                           "wait for it or stop it first"), err
        assert snapshot(run) == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


@contextlib.contextmanager
def tmpfs(path: pathlib.Path, size: str):
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: pathlib.Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


@pytest.mark.slow
def test_a_full_disk_ends_with_one_line_and_an_intact_checkpoint(tmp_path, capsys):
    from nres.run import load_run

    with tmpfs(tmp_path / "disk", "96k") as disk:
        out = disk / "run"
        code = main(["train", *TINY, "--iterations", "1000000", "--checkpoint-every", "25", "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1, err
        assert err.startswith("nres: error: cannot write") and "No space left on device" in err, err
        learner, counters = load_run(out).load_checkpoint()  # the previous checkpoint is intact
        assert counters.iteration > 0 and np.all(np.isfinite(np.asarray(learner.theta)))
        remount(disk, "size=8m")
        total = counters.iteration + 3
        assert main(["train", "--resume", str(out), "--iterations", str(total), "--no-progress"]) == 0
        ref = tmp_path / "ref"
        assert main(["train", *TINY, "--iterations", str(total), "--checkpoint-every", "25", "--out", str(ref)]) == 0
        assert_same_run(out, ref)


@pytest.mark.slow
def test_a_read_only_disk_ends_with_one_line_and_changes_nothing(reference, tmp_path, capsys):
    with tmpfs(tmp_path / "disk", "8m") as disk:
        run = disk / "run"
        shutil.copytree(reference, run)
        remount(disk, "ro")
        before = snapshot(run)
        for argv in (["train", "--resume", str(run), "--iterations", "20", "--no-progress"],
                     ["train", *RUN, "--out", str(disk / "new")],
                     ["eval", str(run)],
                     ["plot", str(run), "--out", str(disk / "cmp.png")]):
            assert main(argv) == 1, argv
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and "Read-only file system" in err, err
            assert err.startswith("nres: error: cannot"), err
        assert snapshot(run) == before


def fill(disk: pathlib.Path) -> None:
    """Use up every free byte of ``disk``."""
    with open(disk / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass


@pytest.mark.slow
def test_a_full_disk_is_one_line_in_each_commands_words_and_leaves_no_partial_file(reference, tmp_path, capsys):
    experiment = tmp_path / "tiny.toml"
    experiment.write_text('seeds = 1\ntargets = [1.0]\n[budget]\niterations = 2\n[settings]\ntask = "linear"\n'
                          '[methods.nres]\n')
    with tmpfs(tmp_path / "disk", "8m") as disk:
        run = disk / "run"
        shutil.copytree(reference, run)
        assert main(["plot", str(run), "--out", str(disk / "old.png")]) == 0  # an image to replace
        capsys.readouterr()
        fill(disk)
        before = snapshot(disk)
        for argv, advice in (
                (["plot", str(run), "--out", str(disk / "old.png")], "nothing was written, free space and run "
                 "`nres plot` again"),
                (["eval", str(run)], "the run's files are each intact (old or new), free space and run `nres eval` "
                 "again"),
                (["variance", "--task", "linear", "--estimators", "nres", "--num-samples", "4", "--out",
                  str(disk / "old.png.d" / "var")], "free space and run `nres variance` again with --overwrite"),
                (["compare", str(experiment), "--out", str(disk / "cmp")], "finished runs are kept, free space and "
                 "run `nres compare` again to resume the others")):
            assert main(argv) == 1, argv
            lines = capsys.readouterr().err.strip().splitlines()
            if argv[0] == "variance":  # its progress lines, then the error
                lines = [line for line in lines if not line.startswith("nres variance: ")]
            err = "\n".join(lines)
            assert len(lines) == 1 and "No space left on device" in err and err.endswith(advice), err
            assert err.startswith(f"nres: error: cannot write '{disk}/"), err
            assert "the last checkpoint" not in err
            after = snapshot(disk)
            assert {k: after.get(k) for k in before} == before, argv  # every file as it was
            assert all(not after[k] for k in set(after) - set(before)), argv  # at most an empty lock file
            assert not list(disk.rglob(".*.tmp")), "a partial file was left"


def _corrupt(name: str, data: bytes | None = None, truncate: int | None = None):
    def apply(run: pathlib.Path) -> None:
        file = run / name
        file.write_bytes(data if data is not None else file.read_bytes()[:truncate])
    return apply


def _wrong_theta_shape(run: pathlib.Path) -> None:
    with np.load(run / rundir.THETAS) as data:
        arrays = dict(data)
    arrays["theta"] = np.zeros((len(arrays["iteration"]), 5), np.float32)
    with open(run / rundir.THETAS, "wb") as handle:
        np.savez(handle, **arrays)


def _raising_task_module(run: pathlib.Path) -> None:
    (run.parent / "nres_test_raising_task.py").write_text("raise RuntimeError('broken on purpose')\n")


def _config_file(name: str, data: bytes):
    def apply(run: pathlib.Path) -> None:
        (run.parent / name).write_bytes(data)
    return apply


def _checkpoint_counters(**changes):
    """Rewrite checkpoint.npz's counters (a value None removes the counter)."""
    def apply(run: pathlib.Path) -> None:
        with np.load(run / rundir.CHECKPOINT) as data:
            arrays = dict(data)
        metadata = json.loads(str(arrays["metadata"]))
        metadata["counters"].update(changes)
        metadata["counters"] = {k: v for k, v in metadata["counters"].items() if v is not None}
        arrays["metadata"] = np.asarray(json.dumps(metadata))
        with open(run / rundir.CHECKPOINT, "wb") as handle:
            np.savez(handle, **arrays)
    return apply


def _delete(name: str):
    return lambda run: (run / name).unlink()


def _foreign_rows(run: pathlib.Path) -> None:
    """metrics.jsonl of another run: its updates count twice the env steps, ending at the same total."""
    rows = rundir.read_metrics(run)
    end = rows[-1]["total_env_steps"]
    for row in rows:
        row["total_env_steps"] = end - 2 * (end - row["total_env_steps"])
    rundir.write_metrics(run, rows)


def _rows_of_another_task(run: pathlib.Path) -> None:
    """metrics.jsonl of a learned-optimizer run with the same N, W, T: the counts agree, the
    evaluation rows hold its metrics (test_loss and test_accuracy)."""
    rows = rundir.read_metrics(run)
    rundir.write_metrics(run, [row | {"test_accuracy": 0.5} if rundir.is_eval_row(row) else row for row in rows])


def _other_final_theta(run: pathlib.Path) -> None:
    with np.load(run / rundir.THETAS) as data:
        arrays = dict(data)
    arrays["theta"][-1] += 1.0
    with open(run / rundir.THETAS, "wb") as handle:
        np.savez(handle, **arrays)


RESUME = ["train", "--resume", "RUN_DIR", "--no-progress"]
# A resume trusts nothing it has not checked: each damaged file is refused, nothing changed.
DAMAGED = [
    ("checkpoint without counters.iteration", _checkpoint_counters(iteration=None), RESUME, 2,
     "counter 'iteration' is missing"),
    ("checkpoint at update 99999", _checkpoint_counters(iteration=99999), RESUME, 2,
     "is at update 99999, past the run's 12 updates"),
    ("checkpoint at update 99999, --iterations 100000", _checkpoint_counters(iteration=99999),
     [*RESUME, "--iterations", "100000"], 2, "is at update 99999, past the run's 12 updates"),
    ("checkpoint counter of the wrong type", _checkpoint_counters(total_env_steps="many"), RESUME, 2,
     "counter 'total_env_steps' is 'many'"),
    ("empty metrics.jsonl", _corrupt("metrics.jsonl", b""), RESUME, 2, "lacks the train rows of 12 of the 12"),
    ("deleted metrics.jsonl", _delete("metrics.jsonl"), RESUME, 2, "lacks the train rows of 12 of the 12"),
    ("metrics.jsonl of another run", _foreign_rows, RESUME, 2, "the files are not of one run"),
    ("metrics.jsonl of another task", _rows_of_another_task, RESUME, 2, "row of update 0 holds the metrics "
     "test_accuracy, test_loss, not this task's (test_loss): the rows are of another task"),
    ("deleted thetas.npz", _delete("thetas.npz"), RESUME, 2, "lacks the theta of update 12"),
    ("thetas.npz of another run", _other_final_theta, RESUME, 2, "differs from checkpoint.npz's"),
    ("deleted checkpoint.npz with thetas", _delete("checkpoint.npz"), RESUME, 2,
     "is missing, but thetas.npz holds updates up to 12"),
    ("--iterations below the current update", None, [*RESUME, "--iterations", "5"], 2,
     "--iterations 5 is below update 12"),
    ("--resume ''", None, ["train", "--resume", ""], 2, "--resume needs a run directory"),
]


# (name, setup of the copied run directory RUN_DIR, argv with RUN_DIR/HERE placeholders, exit code, message)
BAD_INPUTS = [
    ("non-UTF-8 config.json (eval)", _corrupt("config.json", b"\xff\xfe{}"), ["eval", "RUN_DIR"], 2, "not UTF-8"),
    ("non-UTF-8 config.json (resume)", _corrupt("config.json", b"\xff\xfe{}"), ["train", "--resume", "RUN_DIR"], 2,
     "not UTF-8"),
    ("non-UTF-8 metrics.jsonl (plot)", _corrupt("metrics.jsonl", b'{"iteration": 1}\n\xff\xff\n{"a": 1}\n'),
     ["plot", "RUN_DIR", "--out", "HERE/c.png"], 2, "not UTF-8"),
    ("non-UTF-8 metrics.jsonl (resume)", _corrupt("metrics.jsonl", b"\xff\xff\n"), ["train", "--resume", "RUN_DIR"],
     2, "not UTF-8"),
    ("truncated thetas.npz (eval)", _corrupt("thetas.npz", truncate=100), ["eval", "RUN_DIR"], 2, "is unreadable"),
    ("truncated thetas.npz (resume --iterations)", _corrupt("thetas.npz", truncate=100),
     ["train", "--resume", "RUN_DIR", "--iterations", "20"], 2, "is unreadable"),
    ("truncated checkpoint.npz (resume --iterations)", _corrupt("checkpoint.npz", truncate=200),
     ["train", "--resume", "RUN_DIR", "--iterations", "20"], 2, "is unreadable"),
    ("malformed config.json (plot)", _corrupt("config.json", b"[1, 2]"), ["plot", "RUN_DIR", "--out", "HERE/c.png"],
     2, "has no 'config' table"),
    ("config.json without settings (plot)", _corrupt("config.json", b'{"config": {"seed": 1}}'),
     ["plot", "RUN_DIR", "--out", "HERE/c.png"], 2, "unusable config"),
    ("metrics row that is not a row", _corrupt("metrics.jsonl", b'[1]\n{"iteration": 1}\n'), ["eval", "RUN_DIR"], 2,
     "not a row"),
    ("thetas of the wrong shape (eval)", _wrong_theta_shape, ["eval", "RUN_DIR"], 2, "this run needs float32[13, 2]"),
    ("a task module that raises on import", _raising_task_module,
     ["train", "--task", "nres_test_raising_task:ENTRY", "--out", "HERE/new"], 2,
     "raised RuntimeError: broken on purpose"),
    ("--seed 2**70", None, ["train", *TINY, "--seed", str(2**70), "--out", "HERE/new"], 2, "must be in [0, 2**32 - 1]"),
    ("--seed -1", None, ["train", *TINY, "--seed", "-1", "--out", "HERE/new"], 2, "must be in [0, 2**32 - 1]"),
    ("binary config file", _config_file("bin.toml", bytes(range(256))), ["train", "--config", "HERE/bin.toml"], 2,
     "not UTF-8"),
    ("YAML config file with a tab", _config_file("tab.yaml", b"task: lorenz\n\tlr: 0.1\n"),
     ["train", "--config", "HERE/tab.yaml"], 2, "tab.yaml' is not valid: found character '\\t' that cannot start "
     "any token at line 2, column 1"),
    ("task = 5 in a config file", _config_file("five.toml", b"task = 5\n"), ["train", "--config", "HERE/five.toml"],
     2, "'task' must be a string"),
    ("--config DIR", None, ["train", "--config", "HERE"], 2, "is a directory"),
    ("nres plot --out EXISTING_FILE/x.png", _config_file("afile", b"x"),
     ["plot", "RUN_DIR", "--out", "HERE/afile/x.png"], 2, "is a file"),
    ("nres plot --out x.bogusext", None, ["plot", "RUN_DIR", "--out", "HERE/x.bogusext"], 2,
     "cannot write '.bogusext' images; give a file name ending in "),
    ("nres plot --metric bogus", None, ["plot", "RUN_DIR", "--metric", "bogus", "--out", "HERE/c.png"], 2,
     "metrics present: grad_norm"),
    ("--task rl --estimator bptt", None, ["train", "--task", "rl", "--estimator", "bptt", "--out", "HERE/new"], 2,
     "has no derivatives"),
    ("--out holding a run", None, ["train", *RUN, "--out", "RUN_DIR"], 2, "already holds a run"),
    ("--resume of a non-run", None, ["train", "--resume", "HERE/nothing"], 2, "is not a run directory"),
    *DAMAGED,
    # Sizes that cannot fit: refused up front, before any directory or allocation.
    ("--num-particles 10**20", None, ["train", *TINY, "--num-particles", str(10**20 - 1), "--out", "HERE/new"], 2,
     "--num-particles 99999999999999999999 needs at least"),
    ("--num-test-starts 10**12", None, ["train", *TINY, "--num-test-starts", str(10**12), "--out", "HERE/new"], 2,
     "--num-test-starts 1000000000000 needs at least"),
    ("2 N W past int32", None, ["train", "--task", "lorenz", "--num-particles", "600", "--horizon", "2000000",
                                "--unroll-length", "2000000", "--num-test-starts", "2", "--out", "HERE/new"], 2,
     "--num-particles 600 gives 2,400,000,000 environment steps per update, more than the 2,147,483,647"),
    ("nres variance --num-samples 10**13", None, ["variance", "--num-samples", str(10**13), "--out", "HERE/var"], 2,
     "--num-samples 10000000000000 needs at least"),
]


@pytest.mark.parametrize("name, setup, argv, code, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_and_changes_nothing(reference, tmp_path, monkeypatch, capsys, name, setup, argv,
                                                   code, message):
    if "rl" in argv:
        pytest.importorskip("mujoco")
    here = tmp_path / "here"
    run = here / "run"
    shutil.copytree(reference, run)
    if setup:
        setup(run)
    monkeypatch.syspath_prepend(str(here))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    before = snapshot(here)
    argv = [a.replace("RUN_DIR", str(run)).replace("HERE", str(here)) for a in argv]
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("nres: error:") and len(err.splitlines()) == 1 and message in err, err
    assert snapshot(here) == before

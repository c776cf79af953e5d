"""`nres compare` end to end on a tiny linear experiment (2 methods x 2 seeds), resuming,
the Ray backend, and the quick Lorenz experiment CI runs."""

import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nres import rundir
from nres.cli import main

TINY = """
name = "tiny"
seeds = 2
targets = [6.0, 4.0]
[budget]
iterations = {iterations}
[evaluation]
every = 2
[settings]
task = "linear"
num_particles = 4
unroll_length = 4
checkpoint_every = 2
[methods.nres]
[methods.fulles]
label = "FullES"
num_particles = 1
"""
AXES = ("wall-clock", "sequential-steps", "env-steps")
FIGURES = ["comparison.png"] + [f"test_loss-vs-{axis}.png" for axis in AXES]


def experiment(tmp_path, iterations=6, name="tiny.toml"):
    path = tmp_path / name
    path.write_text(TINY.format(iterations=iterations))
    return path


def table(text, heading):
    """The body rows of the markdown table under ``heading``."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| method")
            and not line.startswith("| x axis")]


def mtimes(out):
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.glob("*/seed*/*")) if p.is_file()}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    out = tmp / "out"
    assert main(["compare", str(experiment(tmp)), "--out", str(out), "--jobs", "2"]) == 0
    return tmp, out


def test_every_output_with_one_curve_and_row_per_method(compared):
    _, out = compared
    for method in ("nres", "fulles"):
        for seed in (0, 1):
            path = out / method / f"seed{seed}"
            assert rundir.is_run(path)  # an ordinary run directory
            rows = rundir.read_metrics(path)
            tests = sorted(r["iteration"] for r in rows if "test_loss" in r)
            assert tests == [0, 2, 4, 6], tests  # deferred evaluation, every 2nd saved theta
            assert all("test_loss" not in r for r in rows if "train_loss" in r)
            assert rundir.read_config(path)["config"]["seed"] == seed
    for name in FIGURES + ["summary.md", "summary.json"]:
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "summary.json").read_text())
    assert data["figures"] == {name: 2 for name in FIGURES}  # one curve per method in every figure
    assert [m["name"] for m in data["methods"]] == ["nres", "fulles"]
    assert all(m["seeds"] == 2 for m in data["methods"])
    assert all(len(c) == 4 for m in data["runs"].values() for c in m["curves"])
    import jax

    assert "CPU cores" in data["hardware"] and f"JAX backend of the runs: {jax.default_backend()}" in data["hardware"]
    text = (out / "summary.md").read_text()
    assert text.count("Hardware: ") == 1
    for target in ("6", "4"):
        rows = table(text, f"## test_loss <= {target}\n")
        assert [r.split(" | ")[0] for r in rows] == ["| nres", "| FullES"], rows
    assert len(table(text, "## Final and best")) == 2
    verdict = table(text, "## Verdict")
    assert len(verdict) == len(AXES) * 2, verdict
    for row in verdict:  # | axis | target | verdict | NRES's place |
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] in ("nres first", "FullES first", "tied: nres, FullES", "tied: FullES, nres",
                            "not reached"), row
        assert cells[3] in ("first", "tied with FullES", "behind FullES", "not reached"), row
    assert "sustained crossing" in text and "2 seeds: 1st smallest to 1st largest, coverage 50%" in text
    assert data["commit"] and (out / "measured_at").read_text().strip() == data["commit"]


def test_time_to_target_in_the_summary_matches_the_runs(compared):
    _, out = compared
    data = json.loads((out / "summary.json").read_text())
    for method in data["methods"]:
        firsts = []
        for seed in (0, 1):
            rows = rundir.read_metrics(out / method["name"] / f"seed{seed}")
            train = {r["iteration"]: r for r in rows if "train_loss" in r}
            hit = [r["iteration"] for r in rows if "test_loss" in r and r["test_loss"] <= 6.0]
            firsts.append(None if not hit else 0 if min(hit) == 0 else train[min(hit)]["sequential_steps"])
        stats = method["to_target"]["6.0"]["sequential-steps"]
        assert stats["reached"] == sum(f is not None for f in firsts)
        if all(f is not None for f in firsts):
            assert stats["median"] == np.median(firsts) and stats["low"] == min(firsts)


def test_resume_skips_finished_runs_and_resumes_unfinished_ones(compared, tmp_path, capsys):
    tmp, original = compared
    out = tmp_path / "out"
    shutil.copytree(original, out)
    reference = np.load(out / "fulles" / "seed1" / rundir.THETAS)["theta"]
    shutil.rmtree(out / "fulles" / "seed1")  # as if the comparison had stopped before this run
    (out / "logs" / "fulles-seed1.log").unlink()
    before = mtimes(out)
    # a shorter budget first: fulles/seed1 trains to 3 updates; the others are already past it
    assert main(["compare", str(experiment(tmp_path, 3)), "--out", str(out)]) == 0
    assert "3 to do" not in capsys.readouterr().out
    assert mtimes(out) | before == mtimes(out) and {k: mtimes(out)[k] for k in before} == before
    assert (np.load(out / "fulles" / "seed1" / rundir.CHECKPOINT)["metadata"].item().count('"iteration": 3'))
    # the full budget: only fulles/seed1 runs, resumed from update 3 (`nres train --resume`)
    assert main(["compare", str(experiment(tmp_path, 6)), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 to do" in printed and printed.count("finished earlier, skipped") == 3, printed
    assert {k: mtimes(out)[k] for k in before} == before  # finished runs untouched
    log = (out / "logs" / "fulles-seed1.log").read_text()
    assert log.count("$ ") == 2 and "update 6: test_loss" in log
    # resumed = uninterrupted, theta for theta
    np.testing.assert_array_equal(np.load(out / "fulles" / "seed1" / rundir.THETAS)["theta"], reference)
    assert main(["compare", str(experiment(tmp_path, 6)), "--out", str(out)]) == 0  # nothing left to do
    assert "0 to do" in capsys.readouterr().out


def test_a_different_setting_in_an_existing_output_is_refused(compared, tmp_path, capsys):
    tmp, out = compared
    changed = tmp_path / "changed.toml"
    changed.write_text(TINY.format(iterations=6).replace("unroll_length = 4", "unroll_length = 2"))
    before = mtimes(out)
    assert main(["compare", str(changed), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other settings (unroll_length: 4 here, 2 in the file)" in err, err
    assert mtimes(out) == before


def test_failed_runs_are_reported_on_stderr(compared, tmp_path, capsys):
    tmp, original = compared
    out = tmp_path / "out"
    shutil.copytree(original, out)
    damaged = out / "fulles" / "seed1" / rundir.CHECKPOINT
    damaged.write_bytes(damaged.read_bytes()[:100])  # the resume refuses it: exit 2 in the run's log
    assert main(["compare", str(experiment(tmp_path)), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "run(s) failed" not in captured.out, captured.out
    assert captured.err == f"nres: error: 1 run(s) failed (fulles/seed1); see {out}/logs/\n", captured.err
    assert "is unreadable" in (out / "logs" / "fulles-seed1.log").read_text()


def test_a_directory_in_use_by_another_compare_is_refused_at_once(compared, tmp_path, capsys):
    _, original = compared
    out = tmp_path / "out"
    shutil.copytree(original, out)
    # another process holds the directory's lock, as a running `nres compare` does
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from nres.experiments.cli import BUSY; "
                               "from nres.rundir import RunLock; lock = RunLock(sys.argv[1], BUSY).__enter__(); "
                               "print('held', flush=True); sys.stdin.read()", str(out)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {str(p): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        for extra in ([], ["--summary-only"]):
            assert main(["compare", str(experiment(tmp_path)), "--out", str(out), *extra]) == 2
            captured = capsys.readouterr()
            assert captured.out == "" and captured.err == (
                f"nres: error: {str(out)!r} is in use by another `nres compare` (pid {holder.pid}); wait for it or "
                "stop it first\n"), captured
        assert {str(p): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert main(["compare", str(experiment(tmp_path)), "--out", str(out)]) == 0  # free again


def test_progress_lines_on_stderr_while_runs_train(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NRES_PROGRESS_INTERVAL", "0.5")
    out = tmp_path / "out"
    assert main(["compare", str(experiment(tmp_path)), "--out", str(out), "--seeds", "1", "--methods", "nres"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    # while the run trains; a tick that falls between its end and the command's shows it finished
    running = [line for line in lines if line.startswith("nres compare: 0 of 1 runs finished, 1 running (nres/seed0 ")]
    ended = [line for line in lines if line.startswith("nres compare: 1 of 1 runs finished, 0 running, 0 waiting; ")]
    assert running and len(running) + len(ended) == len(lines) and len(ended) <= 1, captured.err
    assert all(line.endswith(" s") for line in lines), captured.err
    assert any("at update " in line and " of 6)" in line for line in lines) or len(lines) < 3, lines
    assert "nres/seed0: done" in captured.out


def start_long_compare(tmp_path):
    """`nres compare` of one run with far more updates than a test waits for, in a
    subprocess, once it says the run starts: ``(experiment file, output directory, process)``."""
    path = experiment(tmp_path, iterations=100_000)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "nres.cli", "compare", str(path), "--out", str(out),
                                "--seeds", "1", "--methods", "nres"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = [process.stdout.readline() for _ in range(2)]
    if lines[1].strip() != "nres/seed0: starting":
        process.kill()
        pytest.fail(f"nres compare did not start its run: {lines}")
    return path, out, process


@pytest.mark.slow
def test_a_second_compare_is_refused_and_an_interrupt_suggests_the_same_selection(tmp_path, capsys):
    """Two `nres compare` on one directory: the second is refused with one line while the first
    goes on; the first, interrupted, suggests a command that resumes the same methods and seeds."""
    path, out, first = start_long_compare(tmp_path)
    try:
        assert main(["compare", str(path), "--out", str(out)]) == 2  # every method: refused, not run
        err = capsys.readouterr().err
        assert f"is in use by another `nres compare` (pid {first.pid})" in err and err.count("\n") == 1, err
        assert not (out / "fulles").exists() and first.poll() is None
        first.send_signal(signal.SIGINT)
        try:
            _, err = first.communicate(timeout=300)
        except subprocess.TimeoutExpired:  # say where the run was, so a hang can be told from a slow machine
            log = out / "logs" / "nres-seed0.log"
            pytest.fail("no exit 300 s after SIGINT; the run's log ends:\n"
                        + (log.read_text()[-3000:] if log.is_file() else "(no log)"))
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err
    hint = err.strip().splitlines()[-1]
    assert hint.startswith("nres: interrupted; partial summary") and hint.endswith("` resumes"), err
    command = shlex.split(hint.split("`")[1])
    assert command == ["nres", "compare", str(path), "--out", str(out), "--seeds", "1", "--methods", "nres"], hint
    assert "failed" not in err


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_a_sigkilled_compare_leaves_no_run_training(tmp_path):
    """SIGKILL cannot be forwarded: each run's process asks the kernel for a SIGTERM when
    `nres compare` dies, stops at its checkpoint as on any SIGTERM and releases its run."""
    import psutil

    _, out, first = start_long_compare(tmp_path)
    try:
        run = out / "nres" / "seed0"
        deadline = time.monotonic() + 120
        while not (run / rundir.METRICS).is_file():  # the run trains: its first metrics are written
            assert first.poll() is None and time.monotonic() < deadline, "the run wrote no metrics in 120 s"
            time.sleep(0.2)
        workers = psutil.Process(first.pid).children(recursive=True)
        assert workers, "no run process under nres compare"
        first.kill()
        first.wait(timeout=30)
        gone, alive = psutil.wait_procs(workers, timeout=120)
        assert not alive, f"run processes still alive 120 s after nres compare was killed: {alive}"
    finally:
        if first.poll() is None:
            first.kill()
    rundir.check_free(run)  # released: `nres compare` again (or `nres train --resume`) can continue it
    assert rundir.is_run(run)


@pytest.mark.slow
def test_ray_backend_runs_each_run_as_a_ray_task(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "out"
    assert main(["compare", str(experiment(tmp_path, 2)), "--out", str(out), "--backend", "ray",
                 "--seeds", "1", "--methods", "nres"]) == 0
    rows = rundir.read_metrics(out / "nres" / "seed0")
    assert sorted(r["iteration"] for r in rows if "test_loss" in r) == [0, 2]
    assert json.loads((out / "summary.json").read_text())["figures"]["comparison.png"] == 1


@pytest.mark.slow
def test_lorenz_quick(tmp_path):
    """The quick Lorenz experiment CI runs: every method, one seed, and NRES ahead of FullES in
    sequential steps (FullES spends T = 2000 sequential steps per update, NRES W = 100)."""
    repo = pathlib.Path(__file__).parent.parent
    out = tmp_path / "out"
    assert main(["compare", str(repo / "experiments" / "matched" / "lorenz-quick.toml"), "--out", str(out), "--seeds", "1"]) == 0
    data = json.loads((out / "summary.json").read_text())
    assert data["figures"]["comparison.png"] == 7
    by_name = {m["name"]: m for m in data["methods"]}
    start = data["runs"]["nres"]["curves"][0][0]["value"]
    assert 250 < start < 400, start  # the paper's start theta: test loss about 313
    nres, fulles = (by_name[n]["to_target"]["100.0"]["sequential-steps"]["median"] for n in ("nres", "fulles"))
    assert nres is not None and fulles is not None and nres < fulles, (nres, fulles)
    assert by_name["nres"]["best"]["median"] < start / 3

"""The persistent compilation cache: where it lives, how to move or disable it, and that
runs with it (cold or warm) and without it give identical metrics."""

import json
import os
import subprocess
import sys

import pytest

from nres import compilation_cache, rundir
from nres.cli import main

TINY = ["--task", "lorenz", "--horizon", "40", "--unroll-length", "10", "--num-particles", "4",
        "--num-test-starts", "8", "--iterations", "12", "--seed", "2", "--no-progress"]


def test_default_directory_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv(compilation_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation_cache.resolve() == tmp_path / "xdg" / "nres" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compilation_cache.resolve() == tmp_path / "home" / ".cache" / "nres" / "jax"


def test_environment_and_flag_move_or_disable_it(monkeypatch, tmp_path):
    monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / "env"))
    assert compilation_cache.resolve() == tmp_path / "env"
    assert compilation_cache.resolve(str(tmp_path / "flag")) == tmp_path / "flag"  # the flag wins
    assert compilation_cache.resolve("off") is None and compilation_cache.resolve("OFF") is None
    monkeypatch.setenv(compilation_cache.ENV, "off")
    assert compilation_cache.resolve() is None
    assert compilation_cache.resolve(str(tmp_path / "flag")) == tmp_path / "flag"


def test_an_unusable_flag_directory_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out), "--compilation-cache", str(blocker / "jax")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nres: error: --compilation-cache") and len(err.splitlines()) == 1
    assert not out.exists()


def _rows(path):
    return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in rundir.read_metrics(path)]


@pytest.mark.slow
def train_in_a_process(out, setting) -> str:
    """``nres train`` in a fresh process (nothing compiled in memory); its stderr."""
    cmd = [sys.executable, "-m", "nres.cli", "train", *TINY, "--out", str(out), "--compilation-cache", setting]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_cache_cold_warm_and_off_give_identical_metrics(tmp_path):
    cache = tmp_path / "cache"

    def train(name, setting):
        train_in_a_process(tmp_path / name, setting)

    train("cold", str(cache))
    entries = sorted(os.listdir(cache))
    programs = sorted(os.listdir(cache / compilation_cache.EXECUTABLES))  # the init and the update chunk
    assert len(programs) == 2, programs
    train("warm", str(cache))
    train("off", "off")
    assert sorted(os.listdir(cache)) == entries, "the warm run compiled programs the cold run had cached"
    assert sorted(os.listdir(cache / compilation_cache.EXECUTABLES)) == programs
    cold = _rows(tmp_path / "cold")
    assert len([r for r in cold if "train_loss" in r]) == 12
    assert _rows(tmp_path / "warm") == cold and _rows(tmp_path / "off") == cold
    assert json.loads((tmp_path / "off" / "config.json").read_text())["config"] == \
        json.loads((tmp_path / "cold" / "config.json").read_text())["config"]


def test_a_garbled_or_read_only_cache_is_one_warning_line_and_the_run_goes_on(tmp_path):
    cache = tmp_path / "cache"

    def train(name, setting):
        return train_in_a_process(tmp_path / name, setting)

    assert "warning" not in train("cold", str(cache))
    entries = [p for p in cache.rglob("*") if p.is_file()]
    assert len(entries) > 10, entries
    for entry in entries:
        entry.write_bytes(b"garbage")
    err = train("garbled", str(cache))
    assert err.count("\n") == 1 and err.startswith(f"nres: warning: cannot read the compilation cache {str(cache)!r} ("), err
    assert "compiling anew (deleting the directory is safe); NRES_COMPILATION_CACHE=off turns the cache off" in err
    assert _rows(tmp_path / "garbled") == _rows(tmp_path / "cold")
    empty = tmp_path / "empty"
    empty.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(empty)],
                      capture_output=True).returncode:
        return  # a read-only directory needs a mount (root ignores permissions); the garbled case is checked
    try:
        err = train("read-only", str(empty))
    finally:
        subprocess.run(["umount", "-l", str(empty)], check=False)
    assert err.count("\n") == 1 and "nres: warning: cannot write the compilation cache" in err, err
    assert "Read-only file system" in err and "the run goes on, its programs are not stored" in err, err
    assert _rows(tmp_path / "read-only") == _rows(tmp_path / "cold")


RELAY = r"""
import logging, sys, threading, time, warnings
from nres import compilation_cache
compilation_cache._quiet_cache_warnings()
message = "Error reading persistent compilation cache entry for 'jit_f': error: incorrect header check"
# matplotlib's way, without timing: a warning recorded under catch_warnings, then logged
with warnings.catch_warnings(record=True) as recorded:
    warnings.warn(message)
logging.getLogger("matplotlib.style").warning("In %s: %s", "classic.mplstyle", recorded[0].message)
# the real race: a compile thread warning while matplotlib reads its style files
done = threading.Event()
def compile_thread():
    while not done.is_set():
        warnings.warn(message)
        time.sleep(0.0005)
thread = threading.Thread(target=compile_thread)
thread.start()
import matplotlib.pyplot
done.set()
thread.join()
warnings.warn("another warning")
"""


def test_a_cache_warning_held_by_matplotlibs_style_reader_is_still_the_one_line():
    """matplotlib records every thread's warnings while it reads its style files (nres
    imports it beside compilation) and logs them as ``In FILE: ...``: a JAX cache warning
    among them is the same one line, and other warnings are untouched."""
    proc = subprocess.run([sys.executable, "-W", "always", "-c", RELAY], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("nres: warning: cannot read the compilation cache "), proc.stderr
    assert "incorrect header check" in lines[0] and "In " not in proc.stderr, proc.stderr
    assert sum("nres: warning" in line for line in lines) == 1 and "another warning" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_run_time_settings_do_not_change_the_stored_programs(tmp_path):
    """Seed, budget, evaluation schedule, output directory and the learning rate are not
    part of a compiled program: a run that changes all of them loads the programs a first
    run stored (nothing new in the cache), and equals the same run with the cache off."""
    cache = tmp_path / "cache"

    def train(name, setting, *extra):
        cmd = [sys.executable, "-m", "nres.cli", "train", *TINY, "--out", str(tmp_path / name),
               "--compilation-cache", setting, *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr

    train("first", str(cache))
    entries = sorted(os.listdir(cache))
    programs = sorted(os.listdir(cache / compilation_cache.EXECUTABLES))
    other = ("--seed", "5", "--iterations", "15", "--eval-every", "4", "--checkpoint-every", "6", "--lr", "3e-5")
    train("other-seed", str(cache), *other)
    assert sorted(os.listdir(cache / compilation_cache.EXECUTABLES)) == programs, "a new seed compiled again"
    assert sorted(os.listdir(cache)) == entries, "a new seed compiled programs JAX had cached"
    train("other-seed-off", "off", *other)
    loaded = _rows(tmp_path / "other-seed")
    assert len([r for r in loaded if "train_loss" in r]) == 15
    assert loaded == _rows(tmp_path / "other-seed-off")


@pytest.fixture
def stored(tmp_path):
    """The cache on in ``tmp_path`` for this test; the session's setting afterwards."""
    compilation_cache.enable(str(tmp_path))
    yield tmp_path / compilation_cache.EXECUTABLES
    compilation_cache.enable()


def _counting(traces):
    import jax.numpy as jnp

    def fn(x, n):
        traces.append(1)  # runs only while JAX traces fn
        return jnp.cumsum(x) * n

    return fn


def test_a_stored_program_is_loaded_without_tracing(stored):
    import numpy as np

    traces = []
    x = np.arange(5, dtype=np.float32)
    first = compilation_cache.Program(_counting(traces), {"program": "cumsum"})(x, np.int32(3))
    assert len(traces) == 1 and len(os.listdir(stored)) == 1
    again = compilation_cache.Program(_counting(traces), {"program": "cumsum"})(x, np.int32(3))
    assert len(traces) == 1, "a second process-like Program traced instead of loading the stored executable"
    np.testing.assert_array_equal(np.asarray(again), np.asarray(first))
    # another identity or another argument shape is another program
    compilation_cache.Program(_counting(traces), {"program": "other"})(x, np.int32(3))
    compilation_cache.Program(_counting(traces), {"program": "cumsum"})(np.ones(4, np.float32), np.int32(3))
    assert len(traces) == 3 and len(os.listdir(stored)) == 3


def test_a_stored_executable_of_another_program_is_compiled_anew(stored):
    import numpy as np

    traces = []
    small, large = np.arange(3, dtype=np.float32), np.arange(4, dtype=np.float32)
    compilation_cache.Program(_counting(traces), {"program": "p"})(small, np.int32(2))
    compilation_cache.Program(_counting(traces), {"program": "p"})(large, np.int32(2))
    first, second = sorted(stored.iterdir(), key=lambda f: f.stat().st_mtime_ns)
    first.write_bytes(second.read_bytes())  # the float32[3] program's file holds the float32[4] one
    out = compilation_cache.Program(_counting(traces), {"program": "p"})(small, np.int32(2))
    assert np.asarray(out).tolist() == [0.0, 2.0, 6.0] and len(traces) == 3  # no TypeError: traced again
    out = compilation_cache.Program(_counting(traces), {"program": "p"})(small, np.int32(2))
    assert len(traces) == 3, "the file was not stored again with the right program"


def test_unreadable_or_unnamed_programs_are_compiled(stored):
    import numpy as np

    traces = []
    x = np.arange(3, dtype=np.float32)
    compilation_cache.Program(_counting(traces), {"program": "p"})(x, np.int32(2))
    (file,) = stored.iterdir()
    file.write_bytes(b"half a file")  # e.g. a disk that filled up mid-write
    out = compilation_cache.Program(_counting(traces), {"program": "p"})(x, np.int32(2))
    assert len(traces) == 2 and np.asarray(out).tolist() == [0.0, 2.0, 6.0]
    assert file.read_bytes() != b"half a file"  # stored again
    compilation_cache.Program(_counting(traces), None)(x, np.int32(2))  # None: never stored
    assert len(traces) == 3 and len(os.listdir(stored)) == 1


def test_programs_are_not_stored_with_the_cache_off(tmp_path):
    import numpy as np

    compilation_cache.enable("off")
    try:
        traces = []
        for _ in range(2):
            compilation_cache.Program(_counting(traces), {"program": "q"})(np.ones(2, np.float32), np.int32(1))
        assert len(traces) == 2
    finally:
        compilation_cache.enable()


def test_the_stored_executables_keep_the_most_recently_used_within_the_limit(stored, monkeypatch):
    import time

    import numpy as np

    x = np.arange(3, dtype=np.float32)
    programs = [compilation_cache.Program(_counting([]), {"program": f"p{i}"}) for i in range(3)]
    for i, program in enumerate(programs[:2]):
        program(x, np.int32(1))
        (newest,) = [f for f in stored.iterdir() if f.stat().st_mtime >= max(g.stat().st_mtime for g in stored.iterdir())]
        os.utime(newest, (time.time() - 100 + i, time.time() - 100 + i))  # p0 older than p1
    first, second = sorted(stored.iterdir(), key=lambda f: f.stat().st_mtime)
    compilation_cache.Program(_counting([]), {"program": "p0"})(x, np.int32(1))  # a load: p0 is now the newest
    assert first.stat().st_mtime > second.stat().st_mtime
    stale = stored / "killed.123.tmp"
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    size = first.stat().st_size  # the three programs have the same shapes: about the same size
    monkeypatch.setattr(compilation_cache, "MAX_STORED_BYTES", 2 * size + size // 2)
    programs[2](x, np.int32(1))  # a third executable: the least recently used one (p1) goes
    names = {f.name for f in stored.iterdir()}
    assert first.name in names and second.name not in names and stale.name not in names and len(names) == 2, names


def test_a_prepared_program_is_built_once_in_the_background(stored):
    import jax
    import numpy as np

    traces = []
    x = np.arange(4, dtype=np.float32)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    program = compilation_cache.Program(_counting(traces), {"program": "prepared"})
    program.prepare(jax.ShapeDtypeStruct((4,), np.float32, sharding=device), np.int32(1))
    program.prepare(jax.ShapeDtypeStruct((4,), np.float32, sharding=device), np.int32(1))  # already under way
    out = program(jax.device_put(x, device), np.int32(2))
    assert len(traces) == 1, "the call traced again instead of waiting for the prepared executable"
    assert np.asarray(out).tolist() == [0.0, 2.0, 6.0, 12.0] and len(os.listdir(stored)) == 1
    # a later process loads what the background thread stored
    again = compilation_cache.Program(_counting(traces), {"program": "prepared"})(jax.device_put(x, device), np.int32(2))
    assert len(traces) == 1 and np.asarray(again).tolist() == [0.0, 2.0, 6.0, 12.0]


def test_a_prepared_program_that_fails_raises_where_it_is_called(stored):
    import jax
    import numpy as np

    def broken(x):
        raise RuntimeError("a task bug seen while tracing")

    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    program = compilation_cache.Program(broken, {"program": "broken"})
    program.prepare(jax.ShapeDtypeStruct((2,), np.float32, sharding=device))
    with pytest.raises(RuntimeError, match="a task bug seen while tracing"):
        program(jax.device_put(np.ones(2, np.float32), device))
    assert not stored.exists() or not os.listdir(stored)

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
def test_cache_cold_warm_and_off_give_identical_metrics(tmp_path):
    cache = tmp_path / "cache"

    def train(name, setting):  # a fresh process: nothing compiled in memory
        cmd = [sys.executable, "-m", "nres.cli", "train", *TINY, "--out", str(tmp_path / name),
               "--compilation-cache", setting]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr

    train("cold", str(cache))
    entries = sorted(os.listdir(cache))
    assert any("chunk" in name for name in entries) and any("init" in name for name in entries)
    train("warm", str(cache))
    train("off", "off")
    assert sorted(os.listdir(cache)) == entries, "the warm run compiled programs the cold run had cached"
    cold = _rows(tmp_path / "cold")
    assert len([r for r in cold if "train_loss" in r]) == 12
    assert _rows(tmp_path / "warm") == cold and _rows(tmp_path / "off") == cold
    assert json.loads((tmp_path / "off" / "config.json").read_text())["config"] == \
        json.loads((tmp_path / "cold" / "config.json").read_text())["config"]

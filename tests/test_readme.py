"""The README's commands work as written.

Every ```bash block of README.md is tagged by the HTML comment just above it:

* ``<!-- readme-test: run -->``: its commands run in order, in one scratch directory
  (a copy of ``examples/`` beside it), through ``nres.cli.main`` with tiny budgets
  appended (flags given later win): fewer updates, particles, samples and a shorter
  horizon (:data:`SMALL`). ``cd DIR &&`` changes directory for the rest of the block.
  ``--at`` updates are first checked against the run's budget as written, then mapped
  onto the shrunk run.
* ``<!-- readme-test: parse -->``: each ``nres train``/``nres variance`` command is parsed
  and resolved by the real parsers (flags, values, config) without running; other
  ``nres`` commands must list every flag used in their ``--help``; a ``python``
  command's script or module must exist.
* ``<!-- readme-test: processes -->``: the scale-out commands, each run as its own process
  in order, in one scratch directory (its own ``HOME``), ``nres train`` with the tiny
  budgets of ``run`` blocks: a line ending in ``&`` runs in the background until
  ``wait``; ``export NAME=VALUE`` sets the environment of the lines after it; every port
  is swapped for a free one; ``ray start`` gets its own temporary directory, and ``ray
  stop`` (which would stop every Ray instance on the machine) ends just the processes of
  the block's own ``ray start``.
* ``<!-- readme-test: skip (reason) -->``: installs and other shell commands.

A ```toml block tagged ``run`` is written to the file that the following run block's
``--config`` names.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from nres.cli import main, parse_train
from nres.diagnostics.cli import parse_variance

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(?:<!-- readme-test: (\w+)[^>]*-->\n)?```(\w+)\n(.*?)```", re.S)

ITERATIONS = 3  # updates of every shrunk training run (and +2 for a resumed one)
SMALL = {  # appended to `nres train` and `nres variance` per task
    "lorenz": ["--horizon", "40", "--unroll-length", "10", "--num-particles", "4", "--num-test-starts", "8"],
    "linear": ["--horizon", "8", "--unroll-length", "2"],
    "lopt": ["--horizon", "6", "--unroll-length", "2", "--num-particles", "2", "--hidden-sizes", "8",
             "--batch-size", "8", "--eval-runs", "1"],
    "rl": ["--horizon", "10", "--unroll-length", "5", "--num-particles", "2", "--num-eval-episodes", "1"],
}


def blocks() -> list[tuple[str | None, str, str]]:
    """``(tag, language, body)`` of every fenced block."""
    return [(tag or None, lang, body) for tag, lang, body in BLOCK.findall(README.read_text())]


def commands(body: str) -> list[list[str]]:
    """Shell lines of a block (comments dropped, continuations joined) as argv lists."""
    text = body.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            out.append(argv)
    return out


def _value(argv: list[str], flag: str, default=None):
    return argv[argv.index(flag) + 1] if flag in argv else default


def _task(argv: list[str], runs: dict) -> str:
    if "--task" in argv:
        return argv[argv.index("--task") + 1]
    if "--theta-from" in argv:
        return runs[os.path.normpath(_value(argv, "--theta-from"))]["task"]
    return "lorenz"


def test_every_bash_block_is_tagged_and_the_readme_cites_nothing_users_cannot_see():
    found = blocks()
    bash = [(tag, body) for tag, lang, body in found if lang == "bash"]
    assert len(bash) >= 8, "expected the README's command blocks"
    untagged = [body.splitlines()[0] for tag, body in bash if tag not in ("run", "parse", "processes", "skip")]
    assert not untagged, f"bash blocks without a readme-test tag: {untagged}"
    text = README.read_text()
    for word in ("SPEC", "the issue"):
        assert word not in text, f"README cites {word!r}, which users cannot see"


def test_parse_blocks_are_valid_commands(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # paths such as examples/lopt_paper.toml are relative to a fresh clone
    checked = 0
    for tag, lang, body in blocks():
        if tag != "parse" or lang != "bash":
            continue
        for argv in commands(body):
            if argv[0] == "python":
                target = argv[2] if argv[1] == "-m" else argv[1]
                ok = importlib.util.find_spec(target) is not None if argv[1] == "-m" else (ROOT / target).is_file()
                assert ok, f"{shlex.join(argv)}: {target} does not exist"
            elif argv[:2] == ["nres", "train"]:
                control, config, _ = parse_train(argv[2:])  # raises on any bad flag, value or setting
                assert config is not None, shlex.join(argv)
            elif argv[:2] == ["nres", "variance"]:
                parse_variance(argv[2:])
            elif argv[0] == "nres":  # other commands: each flag used must be one the command's --help lists
                with pytest.raises(SystemExit) as exit:
                    main([argv[1], "--help"])
                assert exit.value.code == 0, shlex.join(argv)
                listed = capsys.readouterr().out
                for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
                    assert flag in listed, f"{shlex.join(argv)}: {flag} is not an option of nres {argv[1]}"
            else:
                pytest.fail(f"no parse check for {shlex.join(argv)}")
            checked += 1
    assert checked >= 5


def _shrink(argv: list[str], runs: dict, cwd: pathlib.Path) -> list[str]:
    """The command with tiny budgets appended; records/validates runs by their --out."""
    command = argv[1]
    if command == "train" and "--resume" in argv:
        written = int(_value(argv, "--iterations"))
        assert written > runs[os.path.normpath(_value(argv, "--resume"))]["iterations"], shlex.join(argv)
        return [a if a != _value(argv, "--iterations") else str(ITERATIONS + 2) for a in argv[1:]]
    if command == "train" and "--help" not in argv:
        _, config, _ = parse_train(argv[2:])
        out = _value(argv, "--out")  # None: the default runs/TASK-ESTIMATOR-TIME (checked after the run)
        runs[os.path.normpath(out) if out else None] = {"task": config.task, "iterations": config.iterations}
        small = SMALL.get(config.task, [])
        return argv[1:] + small + ["--iterations", str(ITERATIONS), "--eval-every", "2", "--no-progress"]
    if command == "variance":
        small = SMALL.get(_task(argv, runs), [])
        extra = ["--num-samples", "4"]
        if "--at" in argv:
            run = runs[os.path.normpath(_value(argv, "--theta-from"))]
            wanted = [int(x) for x in _value(argv, "--at").split(",")]
            assert max(wanted) <= run["iterations"], f"{shlex.join(argv)}: the run has {run['iterations']} updates"
            extra += ["--at", ",".join(str(x) for x in sorted({min(x, ITERATIONS) for x in wanted}))]
        if "--theta-from" in argv:
            small = []  # the run's own (shrunk) settings
        if "--out" not in argv:
            extra += ["--out", str(cwd / "variance-out")]
        return argv[1:] + small + extra
    if command == "rollout":
        return argv[1:] + ["--steps", "5", "--width", "64", "--height", "48"]
    return argv[1:]


@pytest.mark.slow
def test_run_blocks_run_as_written_with_tiny_budgets(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    runs: dict = {}
    pending_toml = None
    ran = 0
    for tag, lang, body in blocks():
        if tag != "run":
            continue
        if lang == "toml":
            pending_toml = body
            continue
        cwd = tmp_path
        for argv in commands(body):
            if argv[0] == "cd":
                assert argv[2] == "&&", shlex.join(argv)
                cwd = cwd / argv[1]
                argv = argv[3:]
            assert argv[0] == "nres", f"run blocks hold nres commands only: {shlex.join(argv)}"
            if "--config" in argv:
                assert pending_toml is not None, "a --config command needs the TOML block above it"
                (cwd / _value(argv, "--config")).write_text(pending_toml)
            monkeypatch.chdir(cwd)
            full = _shrink(argv, runs, cwd)
            try:
                code = main(full)
            except SystemExit as exit:  # --help
                code = exit.code
            assert code == 0, f"README command failed: {shlex.join(argv)} (ran as nres {shlex.join(full)})"
            if argv[1] == "train" and not {"--out", "--help", "--resume"} & set(argv):
                made = sorted(p.name for p in (cwd / "runs").iterdir())
                assert any(re.fullmatch(r"[\w.-]+-\d{8}-\d{6}", name) for name in made), made
            ran += 1
    assert ran >= 12


PROCESS_TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_free_ports(body: str) -> str:
    """Every port of the block (``HOST:PORT``, ``--port PORT``) swapped for a free one."""
    ports = set(re.findall(r"(?:localhost|127\.0\.0\.1|--port) ?:?(\d{4,5})\b", body))
    for port in ports:
        body = re.sub(rf"\b{port}\b", str(_free_port()), body)
    return body


def _ray_head(temp: str) -> list:
    """The processes of the Ray instance whose temporary directory is ``temp`` (with children)."""
    import psutil

    found = [p for p in psutil.process_iter(["cmdline"]) if temp in " ".join(p.info["cmdline"] or [])]
    for p in list(found):
        try:
            found += p.children(recursive=True)
        except psutil.Error:
            pass
    return found


@pytest.mark.slow
def test_scale_out_blocks_run_on_one_machine_as_written(tmp_path):
    scale_out = [body for tag, lang, body in blocks() if tag == "processes"]
    assert scale_out, "the README's scale-out commands are tagged readme-test: processes"
    env = dict(os.environ, HOME=str(tmp_path / "home"), JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    (tmp_path / "home").mkdir()
    temp = tempfile.mkdtemp(prefix="nres-ray-")  # short: Ray's socket paths must fit 107 bytes
    background, runs, ran = [], {}, []
    bin_dir = os.path.dirname(sys.executable)
    try:
        for body in scale_out:
            for argv in commands(_with_free_ports(body)):
                if argv[0] == "export":
                    env.update(a.split("=", 1) for a in argv[1:])
                    continue
                if argv == ["wait"]:
                    for proc, line in background:
                        out, err = proc.communicate(timeout=PROCESS_TIMEOUT_S)
                        assert proc.returncode == 0, f"README command failed: {line}\n{err[-3000:]}"
                    background = []
                    continue
                line, detach = shlex.join(argv), argv[-1] == "&"
                argv = argv[:-1] if detach else argv
                if argv[:2] == ["ray", "stop"]:
                    for p in _ray_head(temp):
                        p.kill()
                    ran.append(line)
                    continue
                if argv[0] == "nres":
                    full = [sys.executable, "-m", "nres.cli", *_shrink(argv, runs, tmp_path)]
                elif argv[0] == "ray":
                    extra = ["--temp-dir", temp, "--num-cpus", "2", "--include-dashboard", "false",
                             "--disable-usage-stats"] if argv[1] == "start" else []
                    full = [os.path.join(bin_dir, "ray"), *argv[1:], *extra]
                else:
                    pytest.fail(f"no way to run {line}")
                proc = subprocess.Popen(full, cwd=tmp_path, env=dict(env), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
                ran.append(line)
                if detach:
                    background.append((proc, line))
                    continue
                out, err = proc.communicate(timeout=PROCESS_TIMEOUT_S)
                assert proc.returncode == 0, f"README command failed: {line} (ran as {shlex.join(full)})\n{err[-3000:]}"
        assert not background, "a background command without a wait after it"
    finally:
        for proc, _ in background:
            proc.kill()
        for p in _ray_head(temp):
            p.kill()
        shutil.rmtree(temp, ignore_errors=True)
    assert any("--backend ray" in line for line in ran) and any("--distributed" in line for line in ran), ran

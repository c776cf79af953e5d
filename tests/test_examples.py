"""The README's custom-task example runs and learns, through the API and the CLI."""

import importlib.util
import pathlib

import pytest

from nres import rundir
from nres.cli import main

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "custom_task.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("custom_task", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_example_trains_with_the_python_api(example):
    start, end = example.main(iterations=300)
    assert end < start / 5, f"train loss {start:.4f} -> {end:.4f}: expected a 5x drop"


def test_example_trains_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(EXAMPLE.parent)
    out = tmp_path / "run"
    assert main(["train", "--task", "custom_task:ENTRY", "--iterations", "150", "--out", str(out), "--no-progress"]) == 0
    rows = rundir.read_metrics(out)
    assert rows[-1]["iteration"] == 150 and "test_loss" in rows[-1]
    first = rows[0]["train_loss"]
    assert rows[-1]["test_loss"] < first / 5, (first, rows[-1]["test_loss"])


def test_readme_embeds_the_example_verbatim():
    readme = (EXAMPLE.parent.parent / "README.md").read_text()
    body = EXAMPLE.read_text()
    start = body.index("T = 60")
    assert body[start : body.index("def main")].strip() in readme
    entry = body[body.index("# For the command line") : body.index("if __name__")].strip()
    assert entry in readme, "the README shows the example's TaskEntry verbatim"

"""Tasks given by path (``--task path/to/file.py:ENTRY``) and named by their entry, and
errors in the user's own task code pointing at its file and line (nres/tracebacks.py)."""

import json
import pathlib
import textwrap

import pytest

from nres import tracebacks
from nres.cli import main
from nres.tasks import get_task_entry, task_label

SPRING = textwrap.dedent('''
    import dataclasses

    import jax.numpy as jnp

    import nres
    from nres.tasks import TaskEntry


    def init_theta(key):
        return jnp.array([0.5, 0.1])


    def init_state(key):
        return jnp.array([1.0, 0.0])


    def step(theta, s, t, key, batch):
        x, v = s
        return jnp.stack([x + 0.1 * v, v - 0.1 * (theta[0] * x + theta[1] * v)])


    def loss(theta, s, t, batch):
        return s[0] ** 2


    @dataclasses.dataclass(frozen=True)
    class Options:
        """A damped spring.

        Attributes:
          horizon: T, steps per episode.
          stiffness_scale: an option of the task.
        """

        horizon: int = 20
        stiffness_scale: float = 1.0


    ENTRY = TaskEntry(name="spring", config_cls=Options,
                      build=lambda o: nres.Task(init_theta, init_state, step, loss, horizon=o.horizon),
                      training_defaults={"num_particles": 4, "unroll_length": 5, "sigma": 0.05, "lr": 0.01,
                                         "iterations": 3})
''')

BROKEN_STEP_LINE = "    raise ValueError('my step is broken')"


@pytest.fixture()
def task_dir(tmp_path, monkeypatch):
    folder = tmp_path / "mytasks"
    folder.mkdir()
    (folder / "spring.py").write_text(SPRING)
    broken = SPRING.replace("def step(theta, s, t, key, batch):\n", "def step(theta, s, t, key, batch):\n"
                            + BROKEN_STEP_LINE + "\n")
    assert broken != SPRING
    (folder / "broken_spring.py").write_text(broken.replace('name="spring"', 'name="broken"'))
    monkeypatch.chdir(tmp_path)
    return folder


def _line_of(file: pathlib.Path, text: str) -> int:
    return file.read_text().splitlines().index(text) + 1


def test_a_task_file_loads_once_and_is_named_by_its_entry(task_dir):
    entry = get_task_entry("mytasks/spring.py:ENTRY")
    assert entry is get_task_entry(str(task_dir / "spring.py") + ":ENTRY"), "one load per file, however named"
    assert task_label("mytasks/spring.py:ENTRY") == "spring" and task_label("lorenz") == "lorenz"
    task = entry.build(entry.config_cls())
    assert task.name == "spring", "a task left unnamed takes its entry's name (errors say task 'spring')"


@pytest.mark.parametrize("spec, match", [
    ("mytasks/nothere.py:ENTRY", "cannot load task 'mytasks/nothere.py:ENTRY': no file"),
    ("mytasks/spring.py:NOPE", "'mytasks/spring.py' defines no 'NOPE'"),
    ("mytasks/spring.py:Options", "is a type, not an nres.tasks.TaskEntry"),
])
def test_bad_task_paths_are_one_line_errors(task_dir, capsys, spec, match):
    assert main(["train", "--task", spec, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nres: error: ") and match in err and "\n" not in err, err


def test_a_run_of_a_task_by_relative_path_resumes_from_another_directory(task_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--task", "mytasks/spring.py:ENTRY", "--no-progress", "--iterations", "2",
                 "--out", str(run)]) == 0
    stored = json.loads((run / "config.json").read_text())
    assert stored["config"]["task"] == "mytasks/spring.py:ENTRY"  # as typed
    assert stored["task_file"] == str(task_dir / "spring.py")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # mytasks/spring.py is not found from here
    assert main(["train", "--resume", str(run), "--iterations", "3", "--no-progress"]) == 0
    from nres import rundir

    assert max(row["iteration"] for row in rundir.read_metrics(run)) == 3
    assert main(["eval", str(run)]) == 0


def test_a_task_by_path_trains_through_the_cli_into_a_run_named_after_it(task_dir, capsys):
    assert main(["train", "--task", "mytasks/spring.py:ENTRY", "--no-progress", "--stiffness-scale", "2"]) == 0
    out = capsys.readouterr().out
    runs = list(pathlib.Path("runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("spring-nres-"), runs
    config = json.loads((runs[0] / "config.json").read_text())["config"]
    assert config["task"] == "mytasks/spring.py:ENTRY" and config["task_options"]["stiffness_scale"] == 2.0
    assert config["iterations"] == 3, "the entry's training_defaults apply"
    defaults = out.splitlines()[0]
    assert defaults.startswith("task 'spring' (mytasks/spring.py:ENTRY): evaluation by test_loss = mean per-step "
                               "loss of 8 unperturbed held-out episodes"), out
    assert "eval_every=0, nres's default" in defaults and "budget 3 updates (iterations=3, the task's default)" in \
        defaults, defaults


def test_the_help_header_names_the_task(task_dir, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--task", "mytasks/spring.py:ENTRY", "--help"])
    out = capsys.readouterr().out
    assert "Task 'spring' (from mytasks/spring.py:ENTRY)" in out.replace("\n", " ")
    assert "options of task 'spring' (from mytasks/spring.py:ENTRY): " not in out  # no description: no colon
    assert "options of task 'spring' (from mytasks/spring.py:ENTRY)" in out and "--stiffness-scale" in out


def test_a_failing_user_step_names_its_file_and_line(task_dir, capsys, monkeypatch):
    monkeypatch.delenv(tracebacks.DEBUG_ENV, raising=False)
    assert main(["train", "--task", "mytasks/broken_spring.py:ENTRY", "--no-progress", "--out", "run"]) == 2
    err = capsys.readouterr().err.strip()
    line = _line_of(task_dir / "broken_spring.py", BROKEN_STEP_LINE)
    assert err.startswith("nres: error: task 'broken': step failed") and "ValueError: my step is broken" in err, err
    assert f"(at mytasks/broken_spring.py:{line}, in step; --debug or NRES_DEBUG=1 for the traceback)" in err, err
    assert "\n" not in err and "Traceback" not in err
    assert not pathlib.Path("run").exists(), "bad input writes nothing"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_prints_the_whole_traceback(task_dir, capsys, monkeypatch, how):
    argv = ["train", "--task", "mytasks/broken_spring.py:ENTRY", "--no-progress"]
    if how == "flag":
        argv.insert(1, "--debug")
    else:
        monkeypatch.setenv(tracebacks.DEBUG_ENV, "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    line = _line_of(task_dir / "broken_spring.py", BROKEN_STEP_LINE)
    assert err.startswith("Traceback (most recent call last):"), err[:200]
    assert f'broken_spring.py", line {line}, in step' in err and "ValueError: my step is broken" in err
    assert err.strip().splitlines()[-1].startswith("nres: error: task 'broken'"), "the one line still ends it"


def test_an_error_while_importing_the_task_file_names_its_line(task_dir, capsys):
    (task_dir / "bad_import.py").write_text("import nres\n\nraise RuntimeError('oops at import')\n")
    assert main(["train", "--task", "mytasks/bad_import.py:ENTRY"]) == 2
    err = capsys.readouterr().err.strip()
    assert "raised RuntimeError: oops at import (at mytasks/bad_import.py:3, in <module>" in err, err


def test_user_frame_follows_the_suppressed_context():
    def user_code():
        return {}["missing"]

    try:
        try:
            user_code()
        except KeyError:
            raise ValueError("one line") from None
    except ValueError as err:
        frame = tracebacks.user_frame(err)
    assert frame is not None and frame.name == "user_code" and frame.filename == __file__
    assert tracebacks.user_frame(ValueError("never raised")) is None
    assert not tracebacks.is_user_file(tracebacks.__file__) and not tracebacks.is_user_file(json.__file__)


@pytest.mark.parametrize("name", ["lorenz", "linear", "lopt", "rl"])
def test_each_task_declares_exactly_the_metrics_its_evaluation_reports(name):
    """``TaskEntry.metrics`` (checked by ``nres compare`` and on resume) is what ``evaluate`` returns."""
    if name == "rl":
        pytest.importorskip("mujoco")
    if name == "lopt":
        pytest.importorskip("sklearn")
    import jax

    from nres.build import build_task, resolve_config

    task = build_task(resolve_config({"task": name}))
    theta = task.init_theta(jax.random.PRNGKey(0))
    reported = jax.eval_shape(task.evaluate, theta, jax.random.PRNGKey(1))  # traced, not run
    assert sorted(reported) == sorted(get_task_entry(name).metrics), (sorted(reported), get_task_entry(name).metrics)

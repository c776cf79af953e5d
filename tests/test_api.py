"""The Python API (nres/api.py): a run through ``nres.train`` is the run ``nres train``
writes, file for file, and ``nres.load_run`` reads it back."""

import json
import pathlib

import numpy as np
import pytest

import nres
from nres import api, rundir
from nres.cli import main
from nres.config import ConfigError

SETTINGS = dict(task="linear", estimator="pes", num_particles=4, unroll_length=4, sigma=0.1, lr=0.01, iterations=6,
                eval_every=3, checkpoint_every=4, seed=3)
FLAGS = ["--task", "linear", "--estimator", "pes", "--num-particles", "4", "--unroll-length", "4", "--sigma", "0.1",
         "--lr", "0.01", "--iterations", "6", "--eval-every", "3", "--checkpoint-every", "4", "--seed", "3",
         "--state-dim", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    assert main(["train", *FLAGS, "--out", str(root / "cli"), "--no-progress"]) == 0
    reported = []
    view = nres.train(SETTINGS, out=root / "api", progress=False, state_dim=2,  # a task option as a keyword
                      callback=reported.extend)
    view.reported = reported
    return root / "cli", view


def _npz(file: pathlib.Path) -> dict:
    with np.load(file, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def test_the_python_run_equals_the_cli_run_file_for_file(runs):
    cli, view = runs
    assert isinstance(view, api.RunView) and view.path.name == "api"
    assert sorted(p.name for p in cli.iterdir()) == sorted(p.name for p in view.path.iterdir())
    assert json.loads((cli / rundir.CONFIG).read_text()) == json.loads((view.path / rundir.CONFIG).read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]
    cli_rows, api_rows = rundir.read_metrics(cli), rundir.read_metrics(view.path)
    assert len(cli_rows) == 6 + 3 and strip(cli_rows) == strip(api_rows), "every row but its wall time"
    for name in (rundir.THETAS, rundir.CHECKPOINT):
        a, b = _npz(cli / name), _npz(view.path / name)
        assert a.keys() == b.keys(), name
        for key in a:
            if key == "metadata":  # the counters, wall time aside
                ma, mb = json.loads(str(a[key])), json.loads(str(b[key]))
                ma["counters"].pop("wall_time_s"), mb["counters"].pop("wall_time_s")
                assert ma == mb
            else:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")


def test_the_callback_reports_every_row_as_the_file_holds_it(runs):
    """``callback(rows)`` sees each train row and each evaluation row once, in order,
    equal to metrics.jsonl (which tidies each iteration's train row before its test row)."""
    _, view = runs
    assert rundir.tidy_rows(view.reported) == rundir.read_metrics(view.path)
    assert [r["iteration"] for r in view.reported if "train_loss" in r] == list(range(1, 7))


def test_load_run_round_trips(runs):
    cli, _ = runs
    view = nres.load_run(cli)
    assert view.config == json.loads((cli / rundir.CONFIG).read_text())["config"]
    assert view.config["task_options"]["state_dim"] == 2 and view.facts["theta_size"] == 3
    assert view.train_config.estimator == "pes" and view.train_config.iterations == 6
    assert view.rows() == rundir.read_metrics(cli)
    with pytest.raises(ValueError, match="which must be 'all', 'train' or 'eval'"):
        view.rows("test")
    train, evals = view.metrics("train"), view.metrics("eval")
    np.testing.assert_array_equal(train["iteration"], np.arange(1, 7))
    assert train["train_loss"].dtype == np.float64 and train["iteration"].dtype == np.int64
    np.testing.assert_array_equal(evals["iteration"], [0, 3, 6])
    assert [r["test_loss"] for r in view.rows("eval")] == evals["test_loss"].tolist()
    iterations, thetas = view.thetas()
    np.testing.assert_array_equal(iterations, np.arange(7))
    saved = _npz(cli / rundir.THETAS)
    np.testing.assert_array_equal(np.stack(thetas), saved["theta"])


def test_evaluate_and_plot(tmp_path, runs):
    cli, view = runs
    rows = view.evaluate()
    assert [r["iteration"] for r in rows] == [6]
    assert rows[0]["test_loss"] == view.metrics("eval")["test_loss"][-1], "re-evaluating theta_6 gives its row"
    out = view.plot(tmp_path / "curves.png")
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"


def test_resume_through_the_api_continues_the_run(tmp_path, runs):
    cli, _ = runs
    first = nres.train(SETTINGS, out=tmp_path / "run", progress=False, state_dim=2, iterations=3)
    resumed = nres.train(resume=first.path, iterations=6, progress=False)
    assert resumed.path == first.path
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]
    assert strip(resumed.rows()) == strip(rundir.read_metrics(cli)), "3 + 3 updates = the 6-update run"


@pytest.mark.parametrize("call, match", [
    (lambda: nres.train(task="linear", nope=1), "unknown option 'nope' for task 'linear'"),
    (lambda: nres.train(estimator="adamw"), "unknown estimator 'adamw'"),
    (lambda: nres.train(resume="x", sigma=0.1), "resume= takes only iterations="),
    (lambda: nres.load_run("/nonexistent/run"), "is not a run directory"),
])
def test_bad_input_is_a_one_line_error(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_resolve_layers_like_the_command_line(tmp_path):
    file = tmp_path / "run.toml"
    file.write_text('estimator = "gpes"\nnoise-period = 4\n[task_options]\nstate_dim = 2\n')
    config = api.resolve(file, task="linear", sigma=0.2, theta_dim=4)
    assert (config.estimator, config.noise_period, config.sigma) == ("gpes", 4, 0.2)
    assert dict(config.task_options) == {"state_dim": 2, "theta_dim": 4} and config.task == "linear"
    with pytest.raises(ConfigError, match="unknown option 'state_dim' for task 'lorenz'"):
        api.resolve(file, sigma=0.2)  # lorenz has no state_dim: the file names a linear option


TINY = {"name": "tiny", "seeds": 1, "targets": [6.0], "budget": {"iterations": 4}, "evaluation": {"every": 2},
        "settings": {"task": "linear", "num_particles": 4, "unroll_length": 4}, "methods": {"nres": {}}}


@pytest.mark.slow
def test_compare_runs_an_experiment_object_as_nres_compare_does(tmp_path):
    from nres.experiments import spec

    summary = nres.compare(spec.parse(TINY, name="tiny"), out=tmp_path / "out", jobs=1)
    assert summary["experiment"] == "tiny" and (tmp_path / "out" / "summary.md").is_file()
    run = nres.load_run(tmp_path / "out" / "nres" / "seed0")
    assert run.metrics("train")["iteration"].tolist() == [1, 2, 3, 4]
    assert nres.compare(spec.parse(TINY, name="tiny"), out=tmp_path / "out", jobs=1, summary_only=True) == summary


def test_the_notebook_example_runs(tmp_path):
    import importlib.util

    file = pathlib.Path(__file__).resolve().parent.parent / "examples" / "python_api.py"
    spec = importlib.util.spec_from_file_location("python_api_example", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = module.main(tmp_path, iterations=20)
    assert run.metrics("train")["iteration"].tolist() == list(range(1, 21)), "10 updates, resumed to 20"
    assert run.config["task"].endswith("custom_task.py:ENTRY") and run.path.name == "custom-pes"
    assert (run.path / rundir.CURVES).is_file()

"""Experiment files: what they resolve to, and one-line errors naming the bad key."""

import pytest

from nres.cli import main
from nres.experiments import spec

GOOD = """
seeds = [3, 5]
targets = [1.0]
[budget]
env_steps = 1000
[evaluation]
every = 2
[settings]
task = "linear"
num_particles = 4
unroll_length = 4
[methods.nres]
[methods.fast]
estimator = "fulles"
label = "FullES, N=1"
num_particles = 1
every = 3
[methods.tbptt]
lr = 0.01
"""


def write(tmp_path, text, name="exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_file_resolves_to_methods_with_budget_in_updates(tmp_path):
    experiment = spec.load(write(tmp_path, GOOD))
    assert experiment.name == "exp" and experiment.seeds == (3, 5) and experiment.task == "linear"
    nres, fast, tbptt = experiment.methods
    # env steps per update: 2 N W = 32 (NRES), 2 N T = 2 * 1 * 16 = 32 (FullES, T = 16), N W = 16 (TBPTT)
    assert (nres.env_steps_per_update, fast.env_steps_per_update, tbptt.env_steps_per_update) == (32, 32, 16)
    assert (nres.iterations, fast.iterations, tbptt.iterations) == (32, 32, 63)  # ceil(1000 / steps)
    assert (nres.eval_every, fast.eval_every) == (2, 3)
    config = fast.config(5)
    assert (config.estimator, config.num_particles, config.seed, config.iterations) == ("fulles", 1, 5, 32)
    assert config.eval_every == 0 and config.eval_at_end is False  # evaluation is deferred
    assert tbptt.config(3).lr == 0.01 and nres.config(3).lr == 0.05  # the task's default
    assert fast.label == "FullES, N=1"


@pytest.mark.parametrize("edit, key", [
    (("[methods.nres]", "[methods.nres]\nestimator = \"nress\""), "methods.nres.estimator"),  # unknown method
    (("[methods.tbptt]", "[methods.bogus]"), "methods.bogus"),  # a method name that is no estimator
    (("[methods.nres]", "[methods.nres]\nsigmaa = 0.1"), "methods.nres.sigmaa"),  # unknown key
    (("seeds = [3, 5]", "seeds = [3, 5]\nbudgett = 3"), "budgett"),  # unknown top-level key
    (("every = 2", "every = \"2\""), "evaluation.every"),  # wrong type
    (("num_particles = 4", "num_particles = 4.5"), "settings.num_particles"),  # wrong type of a train setting
    (("lr = 0.01", "lr = \"fast\""), "methods.tbptt.lr"),  # wrong type in a method
    (("seeds = [3, 5]", "seeds = []"), "seeds"),
    (("env_steps = 1000", "env_steps = 1000\niterations = 5"), "budget"),
    (("[settings]", "[settings]\nseed = 4"), "settings.seed"),  # the comparison sets seeds
    (("seeds = [3, 5]", "seeds = [3, 5]\nmetric = \"test_bogus\""), "metric"),  # no run reports it
])
def test_bad_files_give_one_line_naming_the_key(tmp_path, capsys, edit, key):
    path = write(tmp_path, GOOD.replace(*edit))
    out = tmp_path / "out"
    assert main(["compare", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nres: error: ") and repr(key) in err, err
    assert not out.exists()


def test_a_metric_no_run_reports_names_the_tasks_metrics(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("seeds = [3, 5]", "seeds = [3, 5]\nmetric = \"test_bogus\""))
    assert main(["compare", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no run of task 'linear' reports 'test_bogus'; choose one of train_loss, test_loss" in err, err
    assert not (tmp_path / "out").exists()


def test_empty_method_list(tmp_path, capsys):
    text = GOOD.split("[methods.nres]")[0] + "[methods]\n"
    assert main(["compare", str(write(tmp_path, text)), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'methods' is empty" in err, err


def test_unknown_methods_filter_and_missing_file(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert main(["compare", str(path), "--methods", "nres,pes", "--out", str(tmp_path / "o")]) == 2
    assert "'pes' is not a method" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_every_shipped_experiment_file_parses():
    import pathlib

    files = sorted((pathlib.Path(__file__).parent.parent / "experiments").glob("*/*.toml"))
    assert len(files) >= 16, files  # experiments/matched/ and experiments/paper/
    for file in files:
        experiment = spec.load(file)
        assert experiment.methods and experiment.targets, file
        if file.stem.endswith("-quick"):
            full = spec.load(file.with_name(file.stem[: -len("-quick")] + ".toml"))
            assert [m.name for m in experiment.methods] == [m.name for m in full.methods], file


def test_missing_dataset_files_stop_before_anything_is_written(tmp_path, capsys, monkeypatch):
    import pathlib

    monkeypatch.setenv("NRES_DATA_DIR", str(tmp_path / "empty"))
    file = pathlib.Path(__file__).parent.parent / "experiments" / "matched" / "lopt_fashion_mnist-quick.toml"
    assert main(["compare", str(file), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "methods.nres: Fashion-MNIST files missing" in err, err
    assert not (tmp_path / "out").exists()

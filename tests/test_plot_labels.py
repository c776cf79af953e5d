"""Run labels tell runs apart: schedule, clipping and seed are in the legend text."""

from nres.plotting import distinct, run_label

BASE = {"estimator": "pes", "num_particles": 200, "unroll_length": 100, "noise_period": None, "sigma": 0.04,
        "optimizer": "sgd", "lr": 1e-5, "lr_schedule": "constant", "lr_boundaries": [], "lr_decay": 0.1,
        "grad_clip": None, "seed": 0}


def test_two_seeds_and_two_schedules_get_different_labels():
    piecewise = BASE | {"lr_schedule": "piecewise", "lr_boundaries": [1000, 3000]}
    labels = [run_label(BASE), run_label(BASE | {"seed": 1}), run_label(piecewise), run_label(BASE | {"grad_clip": 1.0})]
    assert len(set(labels)) == 4, labels
    assert labels[0] == "pes N=200 W=100 sigma=0.04 sgd lr=1e-05 seed=0"
    assert labels[2] == "pes N=200 W=100 sigma=0.04 sgd lr=1e-05 x0.1 at 1000,3000 seed=0"
    assert labels[3].endswith("clip=1 seed=0")


def test_repeated_labels_are_numbered():
    assert distinct(["a", "b", "a", "a"]) == ["a [1]", "b", "a [2]", "a [3]"]
    assert distinct(["a", "b"]) == ["a", "b"]

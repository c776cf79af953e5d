from nres.plotting import X_AXES, plot_comparison, plot_run_curves, run_label

ROWS = [{"iteration": i, "wall_time_s": 0.1 * i, "total_env_steps": 10 * i, "sequential_steps": 5 * i,
         "train_loss": 100.0 / i} for i in range(1, 11)] + [{"iteration": 10, "wall_time_s": 1.0,
         "total_env_steps": 100, "sequential_steps": 50, "test_loss": 9.0}]


def test_run_curves_png(tmp_path):
    out = tmp_path / "curves.png"
    plot_run_curves(ROWS, out, title="t")
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 10_000


def test_comparison_counts_runs_with_the_metric(tmp_path):
    out = tmp_path / "cmp.png"
    runs = [("a", ROWS), ("b", ROWS[:5]), ("c", [])]
    for axis in X_AXES:
        assert plot_comparison(runs, out, axis, "train_loss") == 2
    assert plot_comparison(runs, out, "updates", "test_loss") == 1


def test_labels_name_estimator_and_settings():
    config = {"estimator": "gpes", "num_particles": 5, "unroll_length": 10, "noise_period": 20, "sigma": 0.1,
              "optimizer": "sgd", "lr": 0.01}
    assert run_label(config) == "gpes N=5 W=10 K=20 sigma=0.1 sgd lr=0.01"
    assert "W=" not in run_label(config | {"estimator": "fulles", "noise_period": None})

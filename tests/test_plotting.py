import pytest

from nres.plotting import X_AXES, image_format, plot_comparison, plot_run_curves, run_label

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


def test_an_image_is_written_whole_in_the_format_of_its_extension_or_not_at_all(tmp_path):
    for name, magic in (("c.pdf", b"%PDF"), ("c.svg", b"<?xml"), ("c.png", b"\x89PNG"), ("c", b"\x89PNG")):
        plot_comparison([("a", ROWS)], tmp_path / name, "updates", "train_loss")
        assert (tmp_path / name).read_bytes()[:len(magic)] == magic, name
    with pytest.raises(ValueError, match=r"cannot write '.bogusext' images; .* ending in .*\.pdf, .*\.png, .*\.svg"):
        image_format(tmp_path / "x.bogusext")
    with pytest.raises(ValueError):
        plot_comparison([("a", ROWS)], tmp_path / "x.bogusext", "updates", "train_loss")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "c.pdf", "c.png", "c.svg"]  # no partial file


def test_labels_name_estimator_and_settings():
    config = {"estimator": "gpes", "num_particles": 5, "unroll_length": 10, "noise_period": 20, "sigma": 0.1,
              "optimizer": "sgd", "lr": 0.01}
    assert run_label(config) == "gpes N=5 W=10 K=20 sigma=0.1 sgd lr=0.01"
    assert "W=" not in run_label(config | {"estimator": "fulles", "noise_period": None})


def _rows_as_written_after_resume_and_eval():
    """Train rows, then test rows appended out of order with a duplicate (as older runs hold)."""
    train = [{"iteration": i, "wall_time_s": 5.0 + 0.01 * i, "total_env_steps": 100 * i, "sequential_steps": 10 * i,
              "train_loss": 1000.0 * 0.99**i * (1.5 if i % 2 else 0.5)} for i in range(1, 401)]
    test = [{"iteration": it, "wall_time_s": 5.0 + 0.01 * it, "total_env_steps": 100 * it,
             "sequential_steps": 10 * it, "test_loss": 900.0 * 0.99**it} for it in (0, 100, 200, 300, 400)]
    return train + test[2:] + test[:3] + [dict(test[-1], test_loss=1.0)]


def test_curves_are_monotone_in_x_with_one_point_per_x_and_log_scaled():
    from nres.plotting import pyplot, run_curves_figure

    fig = run_curves_figure(_rows_as_written_after_resume_and_eval())
    try:
        for ax in fig.axes:
            assert ax.get_yscale() == "log", "losses span 3 decades: log axis expected"
            for line in ax.get_lines():
                xs = list(line.get_xdata())
                if len(set(xs)) > 1:  # (the wall-clock panel's vertical marker at 0 has one x)
                    assert all(a < b for a, b in zip(xs, xs[1:])), f"x not strictly increasing in {line.get_label()}"
        test_line = next(l for l in fig.axes[0].get_lines() if l.get_label() == "test loss")
        assert list(test_line.get_xdata()) == [0, 100, 200, 300, 400]
        assert list(test_line.get_ydata())[-1] == 1.0, "the later row for an update replaces the earlier one"
        labels = [l.get_label() for l in fig.axes[0].get_lines()]
        assert "train loss (smoothed)" in labels and len(fig.axes[0].get_lines()) == 3  # raw, smoothed, test
    finally:
        pyplot().close(fig)


def test_wall_clock_axis_starts_at_the_first_update():
    from nres.plotting import pyplot, run_curves_figure, series, wall_clock_offset

    rows = _rows_as_written_after_resume_and_eval()
    assert wall_clock_offset(rows) == 5.01
    xs, _ = series(rows, "wall_time_s", "train_loss", wall_clock_offset(rows))
    assert xs[0] == 0.0 and abs(xs[-1] - 3.99) < 1e-9
    fig = run_curves_figure(rows)
    try:
        label = fig.axes[2].get_xlabel()
        assert "from the first update" in label and "+5.01 s before the first update" in label, label
    finally:
        pyplot().close(fig)


def test_smoothing_follows_the_trend_and_damps_the_alternation():
    from nres.plotting import smooth

    ys = [10.0 + (1.0 if i % 2 else -1.0) for i in range(1000)]
    smoothed = smooth(ys)
    assert len(smoothed) == len(ys) and smoothed[0] == ys[0]
    assert max(abs(s - 10.0) for s in smoothed[100:]) < 0.2, "alternation of +-1 averaged out over ~20 points"
    assert smooth([1.0, float("nan"), 3.0])[1] == 1.0

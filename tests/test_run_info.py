"""What config.json records, the start-of-run notes and the end-of-train summary."""

import json


from nres.cli import main
from nres.build import resolve_config
from nres.build import resolved_config
from nres.run_info import notes, summary
from nres.build import build_task

TINY = ["--task", "lorenz", "--horizon", "40", "--unroll-length", "10", "--num-particles", "4",
        "--num-test-starts", "8", "--iterations", "4", "--eval-every", "2"]


def _notes(**settings):
    config = resolve_config({"task": "linear", **settings})
    return notes(config, build_task(config))


def test_unusual_settings_get_one_note_each_and_usual_ones_none():
    assert _notes(estimator="pes", unroll_length=4) == []  # T = 16, W = 4
    assert _notes(estimator="gpes", unroll_length=4, noise_period=8) == []
    (line,) = _notes(estimator="gpes", unroll_length=4, noise_period=2)
    assert line.startswith("note: K=2 < W=4")
    (line,) = _notes(estimator="gpes", unroll_length=4, noise_period=6)
    assert line.startswith("note: K=6 is not a multiple of W=4")
    (line,) = _notes(estimator="nres", unroll_length=5)
    assert line.startswith("note: T=16 is not divisible by W=5")
    assert _notes(estimator="fulles", unroll_length=5) == []  # FullES unrolls whole episodes


def test_resolved_config_fills_every_task_option_and_the_horizon():
    config = resolve_config({"task": "lorenz", "task_options": {"dt": 0.01}})
    resolved = resolved_config(config, build_task(config))
    assert resolved.horizon == 2000
    assert dict(resolved.task_options) == {"dt": 0.01, "init_log_a": 3.116, "init_log_r": 3.7,
                                           "num_test_starts": 10000, "test_seed": 0}
    assert build_task(resolved).horizon == build_task(config).horizon


def test_summary_names_final_and_best_test_loss_and_their_updates():
    rows = [{"iteration": 0, "test_loss": 9.0}, {"iteration": 1, "train_loss": 5.0},
            {"iteration": 2, "test_loss": 3.0}, {"iteration": 4, "test_loss": 4.0},
            {"iteration": 2, "test_loss": 2.5}]  # a re-evaluation of update 2 replaces the first
    assert summary(rows) == "final test loss 4 (update 4); best 2.5 (update 2); start 9 (update 0)"
    assert summary([{"iteration": 1, "train_loss": 1.0}]) is None
    assert summary([{"iteration": 3, "test_loss": float("nan")}]) == "final test loss nan (update 3)"


def test_train_records_resolved_settings_reports_progress_in_plain_lines_and_ends_with_the_test_loss(
        tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err, "no tqdm frames when stderr is not a terminal"
    assert "nres on lorenz: 4/4 updates (100%)" in captured.err
    lines = captured.out.splitlines()
    assert lines[0] == "lorenz: theta has d = 2 parameters; T = 40"
    assert lines[-2].startswith("final test loss ") and "(update 4); best " in lines[-2], lines
    stored = json.loads((out / "config.json").read_text())
    assert stored["config"]["horizon"] == 40 and stored["horizon"] == 40 and stored["theta_size"] == 2
    assert stored["config"]["task_options"]["num_test_starts"] == 8
    assert stored["config"]["task_options"]["dt"] == 0.005  # a default, recorded
    assert stored["devices"]["local_count"] >= 1 and stored["devices"]["used_for_particles"] == 1
    assert stored["process_count"] == 1
    assert main(["train", "--resume", str(out), "--iterations", "6", "--no-progress"]) == 0  # resolved config resumes
    assert "(update 6)" in capsys.readouterr().out

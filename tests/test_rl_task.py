"""The rl task end to end: every ES estimator, learning Swimmer, the CLI, resume and rollout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nres import rundir
from nres.cli import main
from nres.build import resolve_config
from nres.estimators import ES_ESTIMATORS
from nres.training import Trainer

@pytest.mark.slow
@pytest.mark.parametrize("estimator", ES_ESTIMATORS)
def test_every_es_estimator_updates_on_cpu_mujoco(estimator):
    extra = {"noise_period": 2} if estimator == "gpes" else {}
    config = resolve_config({"task": "rl", "estimator": estimator, "num_particles": 2, "unroll_length": 4,
                             "iterations": 1, "task_options": {"env": "Swimmer-v5", "horizon": 8}, **extra})
    trainer = Trainer(config)
    learner, counters = trainer.init()
    burn_in = counters.total_env_steps
    taus = np.asarray(learner.estimator_state.particles.tau)
    assert burn_in == (2 * int(taus.sum()) if estimator != "fulles" else 0)
    learner, counters, info = trainer.update(learner, counters)
    steps_per_window = 8 if estimator == "fulles" else 4
    assert counters.total_env_steps == burn_in + 2 * 2 * steps_per_window
    assert counters.sequential_steps == steps_per_window
    assert bool(info.applied) and np.isfinite(float(info.grad_norm)) and float(info.grad_norm) > 0


@pytest.mark.slow
def test_short_nres_run_on_swimmer_beats_the_zero_policy():
    """The paper's Swimmer NRES settings (N=30, W=100, sigma=0.3, SGD 3.0, T=1000), 6 updates."""
    config = resolve_config({"task": "rl", "iterations": 6, "seed": 0, "task_options": {"num_eval_episodes": 4}})
    assert (config.num_particles, config.unroll_length, config.sigma, config.lr) == (30, 100, 0.3, 3.0)
    trainer = Trainer(config)
    learner, counters = trainer.init()
    zero_return = trainer.evaluate(learner.theta)["test_return"]
    assert not np.any(np.asarray(learner.theta["M"]))
    for _ in range(config.iterations):
        learner, counters, info = trainer.update(learner, counters)
    trained_return = trainer.evaluate(learner.theta)["test_return"]
    # The zero policy drifts by ~1 per episode; a linear Swimmer gait earns 100-350. Honest margin: +30.
    assert trained_return > zero_return + 30.0, (zero_return, trained_return)


def _train(out, *extra):
    return main(["train", "--task", "rl", "--horizon", "10", "--unroll-length", "5", "--num-particles", "2",
                 "--num-eval-episodes", "2", "--eval-every", "0", "--no-eval-at-end", "--checkpoint-every", "1", "--no-progress",
                 "--out", str(out), *extra])


@pytest.mark.slow
def test_cli_resume_reproduces_an_uninterrupted_run(tmp_path):
    assert _train(tmp_path / "full", "--iterations", "3") == 0
    assert _train(tmp_path / "part", "--iterations", "1") == 0
    assert main(["train", "--resume", str(tmp_path / "part"), "--iterations", "3", "--no-progress"]) == 0
    template = {"M": np.zeros((2, 8), np.float32)}
    its_full, thetas_full = rundir.load_thetas(tmp_path / "full", template)
    its_part, thetas_part = rundir.load_thetas(tmp_path / "part", template)
    assert list(its_full) == list(its_part) == [0, 1, 2, 3]
    for a, b in zip(thetas_full, thetas_part):
        np.testing.assert_array_equal(a["M"], b["M"])
    assert np.any(np.asarray(thetas_full[-1]["M"]))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # imageio-ffmpeg starts ffmpeg
def test_rollout_writes_a_video_and_a_png_strip(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, "--iterations", "1") == 0
    assert main(["rollout", str(run), "--video", str(tmp_path / "strip.png"), "--steps", "6",
                 "--width", "64", "--height", "48"]) == 0
    import imageio.v2 as imageio

    strip = imageio.imread(tmp_path / "strip.png")
    assert strip.shape == (48, 64 * 7, 3)  # 7 frames (reset + 6 steps), at most 8 in a strip
    assert strip.std() > 1.0  # a rendered scene, not a blank image
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["rollout", str(run), "--video", str(tmp_path / "clip.mp4"), "--steps", "6",
                     "--width", "64", "--height", "48"]) == 0
    assert not [w for w in caught if "os.fork()" in str(w.message)], "encoding the video forked the JAX process"
    assert (tmp_path / "clip.mp4").stat().st_size > 1000
    assert "Swimmer-v5, theta of update 1: return" in capsys.readouterr().out


def test_rollout_rejects_a_run_of_another_task(tmp_path, capsys):
    assert main(["train", "--task", "lorenz", "--horizon", "20", "--unroll-length", "10", "--num-particles", "2",
                 "--num-test-starts", "2", "--iterations", "1", "--out", str(tmp_path / "lorenz"),
                 "--no-progress"]) == 0
    assert main(["rollout", str(tmp_path / "lorenz")]) == 2
    assert "needs an rl run" in capsys.readouterr().err


def test_autodiff_estimators_on_cpu_mujoco_fail_with_a_clear_error(tmp_path, capsys):
    code = main(["train", "--task", "rl", "--estimator", "tbptt", "--horizon", "10", "--unroll-length", "5",
                 "--num-particles", "2", "--iterations", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    assert "physics 'mujoco' (CPU MuJoCo) has no derivatives" in capsys.readouterr().err


def test_mlp_policy_with_observation_normalisation_builds_and_runs():
    from nres.tasks.rl import RLConfig, make_rl_task, observation_statistics
    from nres.tasks.rl.envs import load_env

    mean, std = observation_statistics(load_env("Swimmer-v5"), episodes=2, horizon=8, seed=0)
    assert mean.shape == std.shape == (8,) and np.all(std > 0) and np.all(np.isfinite(mean))
    task = make_rl_task(RLConfig(policy="mlp", hidden=4, init="truncated_normal", obs_normalize=True,
                                 obs_norm_episodes=2, horizon=8, num_eval_episodes=2))
    theta = task.init_theta(jax.random.PRNGKey(0))
    assert {k: v.shape for k, v in theta.items()} == {"W1": (4, 8), "b1": (4,), "W2": (2, 4), "b2": (2,)}
    metrics = task.evaluate(theta, jax.random.PRNGKey(1))
    assert np.isfinite(float(metrics["test_return"]))


def test_action_clip_charges_the_control_cost_of_the_clipped_action():
    """Humanoid's control cost is 0.1 sum(a^2) on the action as given (gymnasium): a policy
    acting far outside [-0.4, 0.4] pays it without bound; with ``action_clip`` the action
    (and the cost: at most 0.1 * 17 * 0.4^2) stays in the action space, and the physics,
    which clamps the control itself, is the same."""
    from nres.tasks.rl import RLConfig, make_rl_task

    tasks = [make_rl_task(RLConfig(env="Humanoid-v5", horizon=2, num_eval_episodes=1, num_threads=1,
                                   action_clip=clip)) for clip in (False, True)]
    theta = {"M": jnp.full(tasks[0].init_theta(jax.random.PRNGKey(0))["M"].shape, 100.0)}
    state = tasks[0].init_state(jax.random.PRNGKey(3))
    free, clipped = (jax.jit(lambda s, task=task: task.step(theta, s, 0, None, None))(state) for task in tasks)
    action = np.asarray(theta["M"] @ state.obs)
    cost = lambda a: 0.1 * float(np.sum(np.square(a)))  # gymnasium's ctrl_cost_weight for Humanoid
    assert cost(np.clip(action, -0.4, 0.4)) <= 0.1 * 17 * 0.16 + 1e-6 < cost(action)
    np.testing.assert_allclose(float(clipped.reward) - float(free.reward),
                               cost(action) - cost(np.clip(action, -0.4, 0.4)), rtol=1e-4)
    np.testing.assert_array_equal(np.asarray(clipped.obs), np.asarray(free.obs))  # MuJoCo clamps ctrl itself


@pytest.mark.slow
def test_short_nres_run_on_mjx_swimmer_beats_the_zero_policy():
    """The same paper settings on MJX physics (one compiled window): it learns too."""
    config = resolve_config({"task": "rl", "iterations": 6, "seed": 0,
                             "task_options": {"physics": "mjx", "num_eval_episodes": 2}})
    trainer = Trainer(config)
    learner, counters = trainer.init()
    zero_return = trainer.evaluate(learner.theta)["test_return"]
    learner, steps = trainer.update_many(learner, counters, config.iterations)
    assert all(bool(info.applied) for _, info, _ in steps)
    trained_return = trainer.evaluate(learner.theta)["test_return"]
    assert trained_return > zero_return + 30.0, (zero_return, trained_return)


def test_hopper_episodes_end_early_and_count_only_steps_taken():
    """Hopper falls under a poor policy: pairs start new episodes before T, and a window
    counts fewer steps than 2 N W (the idle steps after a fall are not taken)."""
    import nres
    from nres.tasks.rl import RLConfig, make_rl_task

    task = make_rl_task(RLConfig(env="Hopper-v5", horizon=40, num_eval_episodes=2, num_threads=1))
    assert task.done is not None
    est = nres.nres(task, num_particles=4, unroll_length=10, sigma=0.5)
    theta = jax.tree_util.tree_map(lambda x: x + 0.5, task.init_theta(jax.random.PRNGKey(0)))
    state, _ = est.start(jax.random.PRNGKey(1), theta)
    estimate = jax.jit(est.estimate)
    early, short = 0, 0
    for _ in range(4):
        tau = np.asarray(state.particles.tau)
        _, state, info = estimate(state, theta)
        early += int(np.sum((np.asarray(state.particles.tau) == 0) & (tau + 10 < 40)))
        short += int(info.env_steps) < est.env_steps_per_update
    assert early > 0 and short > 0, (early, short)


# -- each environment's own defaults -----------------------------------------------------------
@pytest.mark.slow
def test_cli_halfcheetah_defaults_are_announced_recorded_and_resumed(tmp_path, capsys):
    """`--env HalfCheetah-v5` brings its own settings; flags still win; config.json
    records the effective values; resume continues exactly as the uninterrupted run."""
    import json

    def train(out, *extra):
        return main(["train", "--task", "rl", "--env", "HalfCheetah-v5", "--num-particles", "2", "--horizon", "10",
                     "--unroll-length", "5", "--num-eval-episodes", "2", "--eval-every", "0", "--no-eval-at-end",
                     "--checkpoint-every", "1", "--num-threads", "1", "--no-progress", "--out", str(out), *extra])

    assert train(tmp_path / "full", "--iterations", "2") == 0
    out = capsys.readouterr().out
    assert "rl defaults for HalfCheetah-v5 (measured" in out and "sigma=0.025" in out and "lr=0.002" in out
    assert "changed: num_particles=2 (default 30), unroll_length=5 (default 100), iterations=2 (default 300), " \
           "eval_every=0 (default 25), horizon=10 (default 1000)" in out
    recorded = json.loads((tmp_path / "full" / "config.json").read_text())["config"]
    assert (recorded["num_particles"], recorded["sigma"], recorded["lr"], recorded["horizon"]) == (2, 0.025, 0.002, 10)
    assert recorded["loss_normalize"] is True
    assert {k: recorded["task_options"][k] for k in ("env", "init")} == {"env": "HalfCheetah-v5", "init": "zeros"}
    assert train(tmp_path / "part", "--iterations", "1") == 0
    assert main(["train", "--resume", str(tmp_path / "part"), "--iterations", "2", "--no-progress"]) == 0
    assert "rl defaults for HalfCheetah-v5" in capsys.readouterr().out
    template = {"M": np.zeros((6, 17), np.float32)}
    _, thetas_full = rundir.load_thetas(tmp_path / "full", template)
    its_part, thetas_part = rundir.load_thetas(tmp_path / "part", template)
    assert list(its_part) == [0, 1, 2]
    for a, b in zip(thetas_full, thetas_part):
        np.testing.assert_array_equal(a["M"], b["M"])


def test_readme_defaults_table_is_rendered_from_the_committed_summary():
    import importlib.util
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("rl_defaults_report", root / "experiments/rl_defaults/report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    text = (root / "README.md").read_text()
    assert report.BLOCK.search(text), "README.md has no <!-- rl-defaults --> block"
    assert report.render(text) == text, "README's rl-defaults block is stale: python experiments/rl_defaults/report.py"


# Updates each environment's defaults get here: a few, past the first dip the measurements
# show (docs/results/rl_defaults: HalfCheetah's return stays near 0 for 20 updates, then
# rises by hundreds; Hopper's dips after 5 updates).
RAISE_WITHIN = {"HalfCheetah-v5": 30, "Hopper-v5": 10, "Walker2d-v5": 5, "InvertedPendulum-v5": 5,
                "InvertedDoublePendulum-v5": 10, "Reacher-v5": 20, "Ant-v5": 20, "Humanoid-v5": 5}


@pytest.mark.slow
@pytest.mark.parametrize("env", sorted(RAISE_WITHIN))
def test_each_environments_defaults_raise_its_return(env):
    """`--env NAME` alone learns: its own defaults, seed 0, the full horizon T (1000;
    Reacher 50), raise the unperturbed return (3 evaluation episodes, the same before and
    after) by more than 10% of its size (and more than 1) within a few updates, every loss
    finite. (HalfCheetah with Swimmer's settings once diverged: train loss 47 -> 4e23 in 5
    updates; with the paper's recipe from a resting start it did not move in 1000 updates.)
    Swimmer: the test above."""
    from nres.tasks.rl.defaults import DEFAULTS

    assert set(RAISE_WITHIN) | {"Swimmer-v5"} == set(DEFAULTS), "an environment with defaults lacks this test"
    config = resolve_config({"task": "rl", "iterations": RAISE_WITHIN[env],
                             "task_options": {"env": env, "num_eval_episodes": 3, "num_threads": 1}})
    trainer = Trainer(config)
    learner, counters = trainer.init()
    start = float(trainer.evaluate(learner.theta)["test_return"])
    learner, steps = trainer.update_many(learner, counters, config.iterations)
    losses = [float(info.train_loss) for _, info, _ in steps]
    assert all(bool(info.applied) for _, info, _ in steps) and np.all(np.isfinite(losses)), losses
    end = float(trainer.evaluate(learner.theta)["test_return"])
    assert end > start + max(0.1 * abs(start), 1.0), \
        f"{env}: return {start:.2f} -> {end:.2f} after {config.iterations} updates (needs +10%, at least +1)"


def test_an_mjx_run_on_the_cpu_is_told_what_it_costs():
    """The note's figures are those of the committed measurement (mjx_cost.json)."""
    import json
    import pathlib

    from nres.tasks.rl import MJX_ON_CPU, start_notes

    measured = json.loads((pathlib.Path(__file__).resolve().parent.parent /
                           "docs/results/rl_defaults/mjx_cost.json").read_text())
    assert MJX_ON_CPU["ratio"] == round(measured["ratio_mjx_over_mujoco"]["median"], 1)
    assert MJX_ON_CPU["cold_start_ratio"] == round(measured["cold_start_s"]["mjx"] / measured["cold_start_s"]["mujoco"])
    assert measured["commit"].startswith(MJX_ON_CPU["commit"])
    if jax.default_backend() != "cpu":
        pytest.skip("the note is for MJX on a CPU")
    [note] = start_notes({"task_options": {"physics": "mjx"}})
    assert f"about {MJX_ON_CPU['ratio']:g}x slower per update than --physics mujoco" in note and "GPU" in note
    assert start_notes({"task_options": {"physics": "mujoco"}}) == []

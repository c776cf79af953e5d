"""``nres rollout DIR --video out.mp4``: watch a learned policy in the real environment.

The run's final ``theta`` drives one episode of the *gymnasium* environment itself
(``gymnasium.make(env, render_mode="rgb_array")``, CPU MuJoCo, whatever physics the
run trained on), so the video also checks that the policy works outside the
training code. Frames go to an MP4 (imageio + ffmpeg); with a ``.png`` output, or
when no video encoder is available, a strip of evenly spaced frames is written
instead. Rendering uses MuJoCo's OpenGL renderer (``MUJOCO_GL``, default ``egl``).
"""

from __future__ import annotations

import argparse
import os
import pathlib
from typing import Sequence

import jax
import numpy as np

from nres.config import ConfigError

STRIP_FRAMES = 8


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def _load_policy(run_dir: str):
    """``(config, spec, policy, scaler, theta, iteration)`` of a run's final saved theta."""
    from nres import rundir
    from nres.build import resolve_config
    from nres.tasks.rl import RLConfig, make_policy, obs_norm_mode
    from nres.tasks.rl.envs import load_env

    stored = rundir.read_config(run_dir)["config"]
    config = resolve_config(stored)
    if config.task != "rl":
        raise ConfigError(f"run {run_dir!r} trained task {config.task!r}; `nres rollout` needs an rl run")
    options = dict(config.task_options)
    if config.horizon is not None:
        options["horizon"] = config.horizon
    rl_config = RLConfig(**options)
    try:
        if obs_norm_mode(rl_config) == "running":
            raise ValueError(f"run {run_dir!r} trained with --obs-norm running: its saved thetas lack the "
                             f"observation statistics, so `nres rollout` cannot replay its policy yet")
        spec = load_env(rl_config.env)
        policy, scaler = make_policy(rl_config, spec)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    template = jax.eval_shape(policy.init_theta, jax.random.PRNGKey(0))
    iterations, thetas = rundir.load_thetas(run_dir, template)
    if not len(iterations):
        raise ConfigError(f"run {run_dir!r} has no saved thetas")
    return rl_config, spec, policy, scaler, thetas[-1], int(iterations[-1])


def play_episode(env_id: str, act, steps: int, seed: int, width: int, height: int, stride: int = 1):
    """Run ``act(obs) -> action`` in ``gymnasium.make(env_id)``; returns ``(frames, return)``."""
    from nres.tasks.rl.envs import quiet_make

    os.environ.setdefault("MUJOCO_GL", "egl")
    env = quiet_make(env_id, render_mode="rgb_array", width=width, height=height, max_episode_steps=steps)

    def render():
        """A frame with the camera centred on the torso (body 1), so a travelling policy stays in view."""
        renderer = env.unwrapped.mujoco_renderer
        if renderer.viewer is None:
            env.render()  # creates the viewer and its camera
        renderer.viewer.cam.lookat[:] = env.unwrapped.data.xpos[1]
        return env.render()

    from nres.progress import progress

    bar = progress(steps, f"rendering {env_id}", "step")
    try:
        obs, _ = env.reset(seed=seed)
        frames, total = [render()], 0.0
        for t in range(steps):
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            if (t + 1) % stride == 0:
                frames.append(render())
            bar.update(1)
            if terminated or truncated:
                break
        return frames, total
    except Exception as err:  # GL context or renderer failures name the cause
        raise ConfigError(f"could not render {env_id!r} (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {err}") from None
    finally:
        bar.close()
        env.close()


def write_strip(frames: list, path: pathlib.Path, count: int = STRIP_FRAMES) -> None:
    """``count`` evenly spaced frames side by side in one PNG."""
    import imageio.v2 as imageio

    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    imageio.imwrite(path, np.concatenate([frames[i] for i in picks], axis=1))


def write_video(frames: list, path: pathlib.Path, fps: float) -> bool:
    """Encode an MP4; returns False (writing nothing) when no encoder is available."""
    import imageio.v2 as imageio

    try:
        import imageio_ffmpeg  # noqa: F401  (the encoder imageio uses for .mp4)
    except ImportError:
        return False
    # imageio-ffmpeg starts ffmpeg with a preexec_fn (to shield it from Ctrl-C), which makes
    # subprocess fork a multithreaded JAX process (JAX warns of a deadlock); without it
    # Python spawns ffmpeg safely. A Ctrl-C then also stops the encoder, which is fine here.
    os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")
    imageio.mimwrite(path, frames, fps=fps, macro_block_size=1)
    return True


def cmd_rollout(argv: Sequence[str]) -> int:
    parser = _Parser(prog="nres rollout", description="Render the final policy of an rl run in its environment.")
    parser.add_argument("run", metavar="DIR")
    parser.add_argument("--video", default=None, metavar="OUT",
                        help="output .mp4 (or .png for a strip of frames); default: DIR/rollout.mp4")
    parser.add_argument("--steps", type=int, default=None, help="episode length (default: the run's horizon T)")
    parser.add_argument("--seed", type=int, default=0, help="reset seed of the episode")
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--stride", type=int, default=1, help="keep every this many frames")
    args = parser.parse_args(list(argv))
    for name in ("width", "height", "stride"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.steps is not None and args.steps <= 0:
        raise ConfigError(f"--steps must be positive, got {args.steps}")
    config, spec, policy, scaler, theta, iteration = _load_policy(args.run)
    out = pathlib.Path(args.video) if args.video else pathlib.Path(args.run) / "rollout.mp4"
    if out.suffix.lower() not in (".mp4", ".png"):
        raise ConfigError(f"--video must end in .mp4 or .png, got {str(out)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    act = jax.jit(lambda obs: policy.apply(theta, scaler(obs)))
    steps = args.steps or config.horizon
    frames, total = play_episode(spec.env_id, lambda obs: np.asarray(act(obs.astype(np.float32)), np.float64),
                                 steps, args.seed, args.width, args.height, args.stride)
    if out.suffix.lower() == ".mp4" and not write_video(frames, out, fps=1.0 / (spec.dt * args.stride)):
        out = out.with_suffix(".png")
        print("no video encoder (imageio-ffmpeg) found: writing a PNG strip instead")
    if out.suffix.lower() == ".png":
        write_strip(frames, out)
    print(f"{spec.env_id}, theta of update {iteration}: return {total:.2f} over {steps} steps; wrote {out}")
    return 0

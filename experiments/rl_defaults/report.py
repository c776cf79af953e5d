"""The README's per-environment defaults table, rendered from the committed measurements.

``docs/results/rl_defaults/returns.json`` (``measure.py``) and ``mjx_cost.json``
(``mjx_cost.py``) become the block between ``<!-- rl-defaults -->`` and
``<!-- /rl-defaults -->`` in README.md; ``--check`` only reports whether it differs (exit 1).
``tests/test_rl_task.py`` fails when the README's block is not this rendering.

    python experiments/rl_defaults/report.py [--check]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results" / "rl_defaults"
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- rl-defaults -->\n)(.*?)(<!-- /rl-defaults -->)", re.S)
SHORT = {"num_particles": "N", "unroll_length": "W", "sigma": "sigma"}


def _settings(defaults: dict) -> str:
    training, options = defaults["training"], defaults["options"]
    parts = [f"{SHORT[k]} = {training[k]:g}" for k in SHORT]
    parts.append(f"{training['optimizer'].upper() if training['optimizer'] == 'sgd' else 'Adam'} {training['lr']:g}")
    if training.get("loss_normalize"):
        parts.append("loss-normalized")
    init = {"zeros": "zero init", "variance_scaling": f"variance-scaling init {options.get('init_scale', 0.03):g}"}.get(
        options.get("init", "zeros"), f"init {options.get('init_scale', 0.03):g} x trunc. normal")
    parts.append(f"{options.get('policy', 'linear')} policy, {init}")
    if options.get("obs_normalize"):
        parts.append("obs. normalized")
    if options.get("action_clip"):
        parts.append("actions clipped")
    parts.append(f"T = {options.get('horizon', 1000)}")
    return ", ".join(parts)


def table(summary: dict, mjx: dict | None) -> str:
    head = summary["commit"].partition("+")
    lines = [f"Measured at commit `{head[0][:12]}{'+' + head[2] if head[2] else ''}` ({summary['date']}; seeds "
             f"{', '.join(map(str, summary['seeds']))}; {summary['machine']}; load average "
             f"{summary['load_average_before'][0]:g} before, {summary['load_average_after'][0]:g} after): "
             "`docs/results/rl_defaults/returns.json` from `experiments/rl_defaults/measure.py`, rendered by "
             "`experiments/rl_defaults/report.py`. Return: mean over "
             f"{summary['eval_episodes']} evaluation episodes of the unperturbed policy; per seed, start -> after "
             "the budget.", "",
             "| env | defaults | budget: updates (env steps) | return per seed | median change | training s per seed |",
             "|---|---|---|---|---|---|"]
    for env, data in summary["envs"].items():
        runs = data["runs"]
        steps = statistics.median(r["env_steps"] for r in runs)
        per_seed = "; ".join(f"{r['start']:.4g} -> {r['end']:.4g}" + ("" if r["losses_finite"] else " (non-finite loss)")
                             for r in runs)
        change = statistics.median(r["end"] - r["start"] for r in runs)
        seconds = ", ".join(f"{r['train_s']:.0f}" for r in runs)
        lines.append(f"| {env} | {_settings(data['defaults'])} | {data['updates']} ({steps:,.0f}) | {per_seed} | "
                     f"{change:+.4g} | {seconds} |")
    if mjx:
        ratio, times, cold = mjx["ratio_mjx_over_mujoco"], mjx["median_update_s"], mjx["cold_start_s"]
        lines += ["", f"MJX on this CPU (`docs/results/rl_defaults/mjx_cost.json` from "
                  f"`experiments/rl_defaults/mjx_cost.py`, commit `{mjx['commit'][:12]}`, {mjx['env']} defaults, "
                  f"{mjx['rounds']} interleaved updates, load average {mjx['load_average_before'][0]:g}): "
                  f"{times['mjx']:.2f} s per update against {times['mujoco']:.2f} s with `--physics mujoco`, "
                  f"{ratio['median']:g}x (median ratio; {ratio['low']:g}-{ratio['high']:g}, "
                  f"{ratio['coverage']:.0%} interval); cold start (build, burn-in, first compiled update) "
                  f"{cold['mjx']:.0f} s against {cold['mujoco']:.0f} s. `nres train --physics mjx` says so at start "
                  "when JAX runs on the CPU; MJX is meant for a GPU."]
    return "\n".join(lines) + "\n"


def render(text: str, results: pathlib.Path = RESULTS) -> str:
    summary = json.loads((results / "returns.json").read_text())
    mjx_file = results / "mjx_cost.json"
    mjx = json.loads(mjx_file.read_text()) if mjx_file.is_file() else None
    return BLOCK.sub(lambda m: m.group(1) + table(summary, mjx) + m.group(3), text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = README.read_text()
    rendered = render(text)
    if args.check:
        print("README rl-defaults block is " + ("up to date" if rendered == text else "stale"))
        return 0 if rendered == text else 1
    README.write_text(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a run resolves to: the settings and facts ``config.json`` records, the notes
printed at the start of ``nres train`` and the summary printed at its end.

* :func:`facts`: ``d`` (the size of ``theta``), ``T``, the devices and the process count.
* :func:`notes`: one line per valid but unusual setting (GPES's ``K`` against ``W``,
  ``T`` against ``W``, the device split of the particles).
* :func:`summary`: the final and best test loss of a run's metrics and their updates.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax

from nres.config import TrainConfig, config_to_dict
from nres.engines.local import particle_devices
from nres.task import Task, theta_size
from nres.tasks import get_task_entry, task_file


def facts(config: TrainConfig, task: Task) -> dict:
    """``theta_size`` (d), ``horizon`` (T), devices (kind, count, used), process count and,
    for a task given by path, ``task_file`` (its absolute path, :func:`nres.tasks.task_file`)."""
    devices = jax.local_devices()
    file = task_file(config.task)
    return {**({"task_file": file} if file else {}),
        "theta_size": theta_size(task),
        "horizon": task.horizon,
        "devices": {
            "platform": devices[0].platform,
            "kind": devices[0].device_kind,
            "local_count": len(devices),
            "global_count": jax.device_count(),
            "used_for_particles": particle_devices(config.num_particles),
        },
        "process_count": jax.process_count(),
    }


def notes(config: TrainConfig, task: Task) -> list[str]:
    """One line per valid but unusual setting, to print before training starts."""
    out = []
    n, w, t, k = config.num_particles, config.unroll_length, task.horizon, config.noise_period
    online = config.estimator not in ("fulles", "bptt")
    if config.estimator == "gpes" and k is not None:
        if k < w:
            out.append(f"note: K={k} < W={w}: each window draws a fresh noise every {k} steps, "
                       f"so one window spans {math.ceil(w / k)} or more noise blocks")
        elif k % w:
            out.append(f"note: K={k} is not a multiple of W={w}: noise blocks start inside windows "
                       "(valid; GPES stays unbiased)")
        if k >= t:
            out.append(f"note: K={k} >= T={t}: gpes is NRES here (one noise per episode)")
    if online and t % w:
        out.append(f"note: T={t} is not divisible by W={w}: windows straddle episode ends "
                   "(a window's remaining steps start the next episode)")
    count = jax.local_device_count()
    if count > 1:
        used = particle_devices(n)
        if used == 1:
            out.append(f"note: N={n} is not divisible by the {count} local devices: every particle runs on "
                       f"one device (choose N a multiple of {count} to use all)")
        else:
            out.append(f"note: particles split over {used} devices, {n // used} pairs each")
    return out


def announce(config: TrainConfig, task: Task, print_fn=print) -> None:
    """Print ``d``, the task's own lines (its option-dependent defaults:
    :meth:`nres.tasks.TaskEntry.start_lines`) and the notes of :func:`notes` (once, at the
    start of training)."""
    print_fn(f"{config.task}: theta has d = {theta_size(task)} parameters; T = {task.horizon}")
    for line in get_task_entry(config.task).start_lines(config_to_dict(config)) + notes(config, task):
        print_fn(line)


def summary(rows: Sequence[dict]) -> str | None:
    """``final test loss X (update i); best Y (update j)`` from metrics rows, or None."""
    tests = {}
    for row in rows:  # one value per update; a later row (re-evaluation) replaces an earlier one
        value = row.get("test_loss")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            tests[row["iteration"]] = float(value)
    if not tests:
        return None
    last = max(tests)
    finite = {i: v for i, v in tests.items() if math.isfinite(v)}
    text = f"final test loss {tests[last]:.6g} (update {last})"
    if finite:
        best = min(finite, key=lambda i: (finite[i], i))
        text += f"; best {finite[best]:.6g} (update {best})"
    first = min(tests)
    if first != last:
        text += f"; start {tests[first]:.6g} (update {first})"
    return text

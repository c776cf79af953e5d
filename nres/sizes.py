"""Sizes checked before anything is allocated: a setting that cannot fit in memory is one
line naming the setting and the estimated size (:class:`nres.config.ConfigError`, exit 2),
not an allocator's traceback or a C++ abort after the run directory was made.

Estimates are lower bounds from shapes (float32 numbers, 4 bytes), compared with the
memory the machine has available now; an estimate only refuses what certainly cannot fit.
"""

from __future__ import annotations

import os
from typing import Optional

from nres.config import ConfigError

FLOAT_BYTES = 4
# Task options that set an allocation: name -> (what one is, float32 numbers at least per one).
TASK_SIZE_OPTIONS = {"num_test_starts": ("test start", 3)}


def available_bytes() -> Optional[int]:
    """Memory available to this process now (``MemAvailable``; else free pages), or None."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def human(num_bytes: float) -> str:
    """``num_bytes`` in binary units, e.g. ``37.3 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if num_bytes < 1024 or unit == "PiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


def check_fits(setting: str, value, needed: int, what: str, available: Optional[int] = None) -> None:
    """Raise ConfigError if ``needed`` bytes (for ``what``) exceed the memory available."""
    available = available_bytes() if available is None else available
    if available is not None and needed > available:
        raise ConfigError(f"{setting} {value} needs at least {human(needed)} of memory ({what}), more than the "
                          f"{human(available)} available; lower it")


INT32_MAX = 2**31 - 1  # the largest count a compiled program's int32 counter holds


def check_count(setting: str, value, count: int, what: str) -> None:
    """Raise ConfigError if ``count`` (e.g. the environment steps of one update, counted in
    int32 inside the compiled step) exceeds :data:`INT32_MAX`."""
    if count > INT32_MAX:
        raise ConfigError(f"{setting} {value} gives {count:,} {what}, more than the {INT32_MAX:,} a step counter "
                          "holds; lower it")


def check_train(config, available: Optional[int] = None) -> None:
    """The settings of a :class:`nres.config.TrainConfig` that set allocations, before any
    task is built: ``N`` antithetic pairs each hold two particles of at least one number
    (and a burn-in count), every test start at least its state."""
    pairs = config.num_particles
    check_fits("--num-particles", pairs, pairs * (2 * FLOAT_BYTES + 4), "2 particles of at least one float32 "
               "and a counter per pair", available)
    for name, (what, numbers) in TASK_SIZE_OPTIONS.items():
        count = (config.task_options or {}).get(name)
        if isinstance(count, int) and not isinstance(count, bool):
            check_fits("--" + name.replace("_", "-"), count, count * numbers * FLOAT_BYTES,
                       f"{numbers} float32 numbers per {what}", available)


def tree_bytes(tree) -> int:
    """Bytes of every leaf of a pytree of arrays or ``jax.ShapeDtypeStruct``."""
    import jax
    import numpy as np

    return sum(int(np.prod(leaf.shape, dtype=object)) * np.dtype(leaf.dtype).itemsize
               for leaf in jax.tree_util.tree_leaves(tree))

"""What ``--physics mjx`` costs against ``--physics mujoco`` on this machine (Swimmer defaults).

One process builds both runs of ``nres train --task rl`` (Swimmer-v5, the paper's settings:
N = 30, W = 100, T = 1000), each with a physics thread of its own count (``--threads``).
Cold start: from building the trainer to the end of its first update (task, burn-in,
compilation). Then ``--rounds`` interleaved rounds, one update of each back end per round
(order alternating), so both see the same machine load; the ratio per round is MJX's
update time over CPU MuJoCo's. Writes ``docs/results/rl_defaults/mjx_cost.json``: the
median per-update times, the median ratio with an exact order-statistic interval, the
cold starts, the commit and the machine's load.

    PYTHONPATH=. python experiments/rl_defaults/mjx_cost.py          # about 2-3 minutes here
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from measure import ROOT, _commit  # noqa: E402  (the same commit and machine record)

OUT = ROOT / "docs" / "results" / "rl_defaults" / "mjx_cost.json"


def median_interval(values: list[float], coverage: float = 0.95) -> tuple[float, float, float, float]:
    """``(median, low, high, coverage)``: the k-th smallest to k-th largest value, k the largest
    with distribution-free coverage >= ``coverage`` of the median (else the range)."""
    xs, n = sorted(values), len(values)
    median = (xs[(n - 1) // 2] + xs[n // 2]) / 2
    below = lambda k: sum(math.comb(n, i) for i in range(k)) / 2**n  # P(Binomial(n, 1/2) < k)
    k = 1
    while k + 1 <= n // 2 and 1 - 2 * below(k + 1) >= coverage:
        k += 1
    return median, xs[k - 1], xs[n - k], 1 - 2 * below(k)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="CPU MuJoCo threads (MJX uses XLA's)")
    parser.add_argument("--out", default=str(OUT), help="result file, or - to print only")
    args = parser.parse_args(argv)
    import jax

    from nres.build import resolve_config
    from nres.training import Trainer

    commit, load_before = _commit(), os.getloadavg()
    runs, cold = {}, {}
    for physics in ("mujoco", "mjx"):
        config = resolve_config({"task": "rl", "iterations": args.rounds + 1,
                                 "task_options": {"physics": physics, "num_threads": args.threads}})
        tick = time.perf_counter()
        trainer = Trainer(config)
        learner, counters = trainer.init()
        learner, counters, _ = trainer.update(learner, counters)
        jax.block_until_ready(learner.theta)
        cold[physics] = time.perf_counter() - tick
        runs[physics] = [trainer, learner, counters]
    times = {"mujoco": [], "mjx": []}
    for r in range(args.rounds):
        for physics in (("mujoco", "mjx") if r % 2 == 0 else ("mjx", "mujoco")):
            trainer, learner, counters = runs[physics]
            tick = time.perf_counter()
            learner, counters, _ = trainer.update(learner, counters)  # returns host values: finished
            times[physics].append(time.perf_counter() - tick)
            runs[physics][1:] = [learner, counters]
    ratios = [b / a for a, b in zip(times["mujoco"], times["mjx"])]
    ratio, low, high, coverage = median_interval(ratios)
    result = {
        "commit": commit, "date": time.strftime("%Y-%m-%d"), "env": "Swimmer-v5",
        "settings": "the rl task's Swimmer defaults: nres, N = 30, W = 100, T = 1000; "
                    f"CPU MuJoCo with {args.threads} thread(s); MJX on JAX's {jax.default_backend()} backend",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, shared with other jobs",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "rounds": args.rounds,
        "update_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "median_update_s": {k: round(median_interval(v)[0], 4) for k, v in times.items()},
        "cold_start_s": {k: round(v, 1) for k, v in cold.items()},
        "ratio_mjx_over_mujoco": {"median": round(ratio, 2), "low": round(low, 2), "high": round(high, 2),
                                  "coverage": round(coverage, 3)},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out != "-":
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

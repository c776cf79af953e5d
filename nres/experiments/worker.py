"""One process of a comparison: train (or resume) one run, then evaluate its saved thetas.

``python -m nres.experiments.worker run DIR --config FILE --iterations N --stride S`` is
``nres train --config FILE --out DIR`` (or ``nres train --resume DIR --iterations N``
when DIR holds an unfinished run) followed by ``nres eval DIR --all --stride S``, in one
process so the run pays the JAX import once; training time (``wall_time_s``) excludes the
evaluation either way. ``... reference OUT.json --config REQUEST.json`` tunes the
hand-designed optimizers of a learned-optimizer experiment; ``evaluate`` only evaluates
(a run that is trained, or stopped on non-finite losses). The exit code is the
``nres`` command's (3: stopped on non-finite losses; the evaluation still runs).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Optional, Sequence

from nres import interrupts


def run(path: str, config_file: str, iterations: int, stride: int, train: bool = True) -> int:
    from nres import rundir
    from nres.cli import main
    from nres.experiments.scheduler import checkpoint_iteration

    target = pathlib.Path(path)
    if not train:
        code = 0
    elif not rundir.is_run(target):
        code = main(["train", "--config", config_file, "--out", path, "--no-progress"])
    elif (checkpoint_iteration(target) or 0) < iterations:
        code = main(["train", "--resume", path, "--iterations", str(iterations), "--no-progress"])
    else:
        code = 0
    if code not in (0, 3) or not rundir.is_run(target):
        return code
    eval_code = main(["eval", path, "--all", "--stride", str(stride)])
    return code or eval_code


def reference(out: str, request_file: str) -> int:
    import jax

    from nres.checkpoint import atomic_write
    from nres.tasks.lopt.baselines import tune
    from nres.tasks.lopt.task import LoptConfig, build_problem

    request = json.loads(pathlib.Path(request_file).read_text())
    options = dict(request["task_options"])
    if request.get("horizon") is not None:
        options["horizon"] = request["horizon"]
    config = LoptConfig(**options)
    results = tune(build_problem(config), config.horizon, jax.random.PRNGKey(0), request["num_runs"],
                   request["baselines"])
    data = {"request": request, "horizon": config.horizon, "baselines": [r._asdict() for r in results]}
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(pathlib.Path(out), lambda h: h.write(text), mode="w")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nres.experiments.worker")
    parser.add_argument("step", choices=("run", "evaluate", "reference"))
    parser.add_argument("path")
    parser.add_argument("--config", required=True)
    parser.add_argument("--iterations", type=int, default=0)
    parser.add_argument("--stride", type=int, default=1)
    args = parser.parse_args(argv)
    interrupts.end_with_parent()  # a SIGKILLed `nres compare` leaves no run training on
    if args.step in ("run", "evaluate"):
        return run(args.path, args.config, args.iterations, args.stride, train=args.step == "run")
    return reference(args.path, args.config)


if __name__ == "__main__":
    sys.exit(main())

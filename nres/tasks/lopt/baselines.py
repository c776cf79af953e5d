"""Hand-designed comparators for a learned optimizer: SGD, momentum and Adam, tuned.

Each baseline trains the same inner problem as the learned-optimizer task, for the
same ``T`` steps, and is scored the same way (:meth:`InnerProblem.rollout`): mean
outer loss over the run and final test accuracy. :func:`tune` picks each baseline's
learning rate from a log grid by the mean outer loss on *validation* batches (the
meta-training objective), then reports the test metrics of that rate on fresh seeds,
so a learned optimizer's ``test_loss``/``test_accuracy`` from ``nres train --task lopt``
can be read against them. The whole grid runs vmapped in one compiled call.

Command line (every option of the lopt task is a flag)::

    python -m nres.tasks.lopt.baselines --dataset digits --horizon 1000
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nres.tasks.lopt.problem import InnerOptimizer, InnerProblem, mean_rollout

BASELINES = ("sgd", "momentum", "adam")
MOMENTUM = 0.9
DEFAULT_LRS = tuple(float(10.0 ** e) for e in np.arange(-4.0, 1.01, 0.5))  # 1e-4 .. 10, 11 rates


def hand_designed(name: str, learning_rate) -> InnerOptimizer:
    """``sgd``, ``momentum`` (heavy ball, 0.9) or ``adam`` as an update rule on flat parameters.

    ``learning_rate`` may be a traced scalar (so a grid of rates can be vmapped).
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    tx = {
        "sgd": lambda: optax.sgd(learning_rate),
        "momentum": lambda: optax.sgd(learning_rate, momentum=MOMENTUM),
        "adam": lambda: optax.adam(learning_rate),
    }[name]()

    def update(opt_state, params, grad):
        updates, opt_state = tx.update(grad, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return InnerOptimizer(tx.init, update)


def sweep(problem: InnerProblem, name: str, learning_rates: Sequence[float], key: jax.Array, horizon: int,
          num_runs: int, outer_split: str = "valid") -> dict:
    """Metrics (each ``[len(learning_rates)]``) of baseline ``name`` at every rate, same seeds for all."""
    rates = jnp.asarray(learning_rates, jnp.float32)
    one_rate = lambda lr: mean_rollout(problem, hand_designed(name, lr), key, horizon, num_runs, outer_split)
    return jax.device_get(jax.jit(jax.vmap(one_rate))(rates))


class BaselineResult(NamedTuple):
    """A tuned baseline: its rate, validation loss (tuning criterion) and test metrics."""

    name: str
    learning_rate: float
    valid_loss: float
    test_loss: float
    test_accuracy: float


def tune(problem: InnerProblem, horizon: int, key: jax.Array, num_runs: int = 4,
         names: Sequence[str] = BASELINES, learning_rates: Sequence[float] = DEFAULT_LRS) -> list[BaselineResult]:
    """Tune each baseline's rate on validation loss, then score it on the test split with fresh seeds."""
    if not learning_rates or any(not lr > 0 for lr in learning_rates):
        raise ValueError(f"learning rates must be positive, got {list(learning_rates)}")
    k_tune, k_test = jax.random.split(key)
    results = []
    for name in names:
        valid = sweep(problem, name, learning_rates, k_tune, horizon, num_runs)["valid_loss"]
        valid = np.where(np.isfinite(valid), valid, np.inf)
        best = int(np.argmin(valid))
        lr = float(learning_rates[best])
        test = jax.device_get(jax.jit(lambda: mean_rollout(problem, hand_designed(name, lr), k_test, horizon,
                                                            num_runs))())
        results.append(BaselineResult(name, lr, float(valid[best]), float(test["test_loss"]),
                                      float(test["test_accuracy"])))
    return results


def format_table(results: Sequence[BaselineResult]) -> str:
    lines = ["| optimizer | tuned lr | valid loss | test loss | test accuracy |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.learning_rate:.3g} | {r.valid_loss:.4f} | {r.test_loss:.4f} | "
                     f"{r.test_accuracy:.4f} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from nres.tasks.lopt.datasets import DatasetError
    from nres.tasks.lopt.task import LoptConfig, build_problem

    parser = argparse.ArgumentParser(prog="python -m nres.tasks.lopt.baselines", description=__doc__.split("\n")[0])
    for field in dataclasses.fields(LoptConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type in (bool, "bool"):
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            parser.add_argument(flag, dest=field.name, type=type(field.default), default=field.default)
    parser.add_argument("--seed", type=int, default=0, help="seed of the tuning and test runs")
    parser.add_argument("--baselines", nargs="+", choices=BASELINES, default=list(BASELINES))
    parser.add_argument("--lrs", nargs="+", type=float, default=list(DEFAULT_LRS), help="learning-rate grid")
    args = vars(parser.parse_args(argv))
    seed, names, lrs = args.pop("seed"), args.pop("baselines"), args.pop("lrs")
    try:
        config = LoptConfig(**args)
        problem = build_problem(config)
        results = tune(problem, config.horizon, jax.random.PRNGKey(seed), config.eval_runs, names, lrs)
    except (ValueError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{problem.dataset.name}, {problem.model.name}, T={config.horizon}, batch {config.batch_size}, "
          f"outer loss {config.outer_loss}, {config.eval_runs} runs per rate, "
          f"grid {min(lrs):.3g}..{max(lrs):.3g} ({len(lrs)} rates, {math.log10(max(lrs) / min(lrs)):.1f} decades)")
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``nres variance``: mean and total variance of estimators at given thetas.

Examples::

    nres variance --task lorenz --estimators nres,pes,fulles --num-samples 1000 --analytic
    nres variance --task lorenz --estimators nres --sweep-k --analytic --out out/sweep
    nres variance --theta-from runs/lorenz-nres --at 0,1000,5000 --equal-compute

Each estimator is sampled ``M`` times (fresh noise, fresh step-unlocked positions per
sample; :mod:`nres.diagnostics.empirical`). Writes ``variance.json`` and
``variance.png`` to ``--out`` and prints a table. ``--analytic`` adds the first-order
prediction of :mod:`nres.diagnostics.analytic` for the GPES family (PES, GPES, NRES,
FullES) and DODGE; only meaningful when the task's losses are differentiable.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time
from typing import Sequence

import jax
import numpy as np

from nres.build import resolve_config
from nres.checkpoint import atomic_write
from nres.config import ConfigError

HELP = {
    "estimators": "comma-separated estimator names; NAME:K sets K for gpes or dodge (e.g. nres,pes,gpes:400)",
    "num_samples": "M, independent estimates per estimator and theta",
}


def _parser(task: str):
    from nres.cli import _add_dataclass_flags, _Parser, attribute_docs
    from nres.diagnostics.empirical import INTERVALS
    from nres.tasks import get_task_entry, task_names

    entry = get_task_entry(task)
    parser = _Parser(prog="nres variance", description="Mean and total variance tr Cov of gradient estimators.")
    parser.add_argument("--task", help=f"application: {', '.join(task_names())} or package.module:ENTRY "
                        "(default: lorenz, or the run's)")
    parser.add_argument("--estimators", default="nres,pes,fulles", help=HELP["estimators"])
    parser.add_argument("--num-samples", type=int, default=1000, metavar="M", help=HELP["num_samples"])
    parser.add_argument("--num-particles", type=int, default=1, metavar="N", help="pairs per estimate (default 1)")
    parser.add_argument("--unroll-length", type=int, metavar="W", help="W (default: the task's training default)")
    parser.add_argument("--horizon", type=int, metavar="T", help="episode length (default: the task's own)")
    parser.add_argument("--sigma", type=float, help="ES noise scale (default: the task's training default)")
    parser.add_argument("--noise-period", type=int, metavar="K", help="K for gpes/dodge given without :K")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed of the samples (and of the initial theta)")
    parser.add_argument("--theta-from", metavar="RUN_DIR", help="take thetas (and task settings) from a run")
    parser.add_argument("--at", default="last", help="with --theta-from: comma-separated updates, or 'last'")
    parser.add_argument("--analytic", action="store_true", help="add the first-order prediction (differentiable tasks)")
    parser.add_argument("--sweep-k", action="store_true", help="variance of GPES_K against K, from K = W to K = T")
    parser.add_argument("--k-values", help="with --sweep-k: comma-separated K (default: W, 2W, 4W, ..., T)")
    parser.add_argument("--equal-compute", action="store_true",
                        help="FullES (1 worker) against (W/T) sum_i NRES_i (T/W workers, one per window)")
    parser.add_argument("--interval", choices=INTERVALS, default="bootstrap", help="interval for tr Cov")
    parser.add_argument("--confidence", type=float, default=0.95, help="two-sided confidence of the interval")
    parser.add_argument("--chunk-size", type=int, default=64, help="samples computed per compiled call")
    parser.add_argument("--out", default="variance-out", metavar="DIR", help="where variance.json/.png/.txt go "
                        "(default: variance-out)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    taken = {a.dest for a in parser._actions}
    fields = [f for f in dataclasses.fields(entry.config_cls) if f.name not in taken]
    _add_dataclass_flags(parser.add_argument_group(f"options of task {task!r}"), fields,
                         attribute_docs(entry.config_cls), {}, {})
    return parser, {f.name for f in fields}


def _pre(argv: Sequence[str]):
    from nres.cli import _Parser

    pre = _Parser(prog="nres variance", add_help=False)
    pre.add_argument("--task")
    pre.add_argument("--theta-from")
    return pre.parse_known_args(argv)[0]


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{what} is empty")
    return values


def _estimator_specs(text: str, default_k) -> list[tuple[str, str, int | None]]:
    """``[(label, name, K)]`` from ``nres,pes,gpes:8``."""
    from nres.estimators import estimator_names

    specs = []
    for item in [x.strip() for x in text.split(",") if x.strip()]:
        name, _, k = item.partition(":")
        if name not in estimator_names():
            raise ConfigError(f"unknown estimator {name!r} in --estimators; choose from {', '.join(estimator_names())}")
        k = _ints(k, f"K of {item!r}")[0] if k else (default_k if name in ("gpes", "dodge") else None)
        specs.append((item if ":" in item or k is None else f"{name}:{k}", name, k))
    if not specs:
        raise ConfigError("--estimators is empty")
    return specs


def _thetas(args, task, seed) -> list[tuple[str, object]]:
    from nres import rundir

    template = task.init_theta(jax.random.split(jax.random.PRNGKey(seed))[0])
    if not args.theta_from:
        return [("init", template)]
    iterations, thetas = rundir.load_thetas(args.theta_from, template)
    if not len(iterations):
        raise ConfigError(f"{args.theta_from!r} has no saved thetas ({rundir.THETAS})")
    index = {int(it): i for i, it in enumerate(iterations)}
    wanted = [int(iterations[-1])] if args.at == "last" else _ints(args.at, "--at")
    missing = [w for w in wanted if w not in index]
    if missing:
        raise ConfigError(f"--at {missing} not among the run's saved updates ({int(iterations[0])}.."
                          f"{int(iterations[-1])}, {len(iterations)} saved)")
    return [(f"update {w}", jax.tree_util.tree_map(np.asarray, thetas[index[w]])) for w in wanted]


def _config(args, task_flags: dict):
    from nres import rundir

    layers = []
    if args.theta_from:
        layers.append(rundir.read_config(args.theta_from)["config"])
        if args.task and args.task != layers[0]["task"]:
            raise ConfigError(f"--task {args.task!r} differs from the run's task {layers[0]['task']!r}")
    overrides = {"task_options": task_flags}
    for name in ("task", "unroll_length", "horizon", "sigma"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    layers.append(overrides)
    return resolve_config(*layers)


def _check(args) -> None:
    for name in ("num_samples", "num_particles", "chunk_size"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.num_samples < 2:
        raise ConfigError(f"--num-samples must be at least 2, got {args.num_samples}")
    if not 0 < args.confidence < 1:
        raise ConfigError(f"--confidence must lie in (0, 1), got {args.confidence}")
    _check_out(pathlib.Path(args.out), args.overwrite)


OUTPUTS = ("variance.json", "variance.txt", "variance.png")


def _check_out(out: pathlib.Path, overwrite: bool) -> None:
    """``--out`` must be a directory (or not exist yet), and hold nothing unless ``--overwrite``."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} exists and is not a directory")
    from nres.cli import check_parents

    check_parents(out)
    if out.is_dir() and not overwrite and any(out.iterdir()):
        held = [name for name in OUTPUTS if (out / name).exists()]
        what = f"the results of an earlier `nres variance` ({', '.join(held)})" if held else "files"
        raise ConfigError(f"--out {str(out)!r} already holds {what}; use another --out or --overwrite to replace "
                          "them")


def _check_sizes(args, task, num_estimators: int) -> None:
    """The samples every estimator keeps, and the particles of a chunk of them, fit in memory."""
    from nres import sizes
    from nres.task import theta_size

    d = max(1, theta_size(task))
    sizes.check_fits("--num-samples", args.num_samples, args.num_samples * d * sizes.FLOAT_BYTES * num_estimators,
                     f"{num_estimators} estimator(s) x d = {d} float32 numbers per sample")
    sizes.check_fits("--num-particles", args.num_particles,
                     min(args.chunk_size, args.num_samples) * args.num_particles * 2 * d * sizes.FLOAT_BYTES,
                     f"a chunk of samples x 2 particles x d = {d} float32 numbers")


def parse_variance(argv: Sequence[str]):
    """``nres variance`` arguments as ``(args, config)``; raises ConfigError."""
    from nres.tasks import get_task_entry

    pre = _pre(argv)
    task_name = pre.task
    if task_name is None and pre.theta_from:
        from nres import rundir

        task_name = rundir.read_config(pre.theta_from)["config"]["task"]
    task_name = task_name or "lorenz"
    try:
        get_task_entry(task_name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    parser, option_names = _parser(task_name)
    args = parser.parse_args(argv)
    _check(args)
    task_flags = {k: v for k, v in vars(args).items() if k in option_names}
    return args, _config(args, task_flags)


def cmd_variance(argv: Sequence[str]) -> int:
    from nres.diagnostics import analytic
    from nres.diagnostics.empirical import EstimateSampler, equal_compute, summarize
    from nres.diagnostics.report import format_table, plot_variance
    from nres.estimators import make_estimator
    from nres.progress import progress
    from nres.build import build_task
    from nres import compilation_cache

    args, config = parse_variance(argv)
    compilation_cache.enable()
    task = build_task(config)
    horizon, unroll, sigma = task.horizon, config.unroll_length, config.sigma
    specs = _estimator_specs(args.estimators, args.noise_period)

    def build(name, k):
        try:
            return make_estimator(name, task, num_particles=args.num_particles, unroll_length=unroll, sigma=sigma,
                                  noise_period=k)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"estimator {name!r}: {err}") from None

    estimators = [(label, build(name, k)) for label, name, k in specs]
    sweep = []
    if args.sweep_k:
        ks = _ints(args.k_values, "--k-values") if args.k_values else _default_ks(unroll, horizon)
        sweep = [(k, build("gpes", k)) for k in ks]
    if args.equal_compute and horizon % unroll:
        raise ConfigError(f"--equal-compute needs W to divide T: W={unroll}, T={horizon}")
    thetas = _thetas(args, task, config.seed)
    _check_sizes(args, task, len(estimators) + len(sweep))

    key = jax.random.PRNGKey(args.seed)
    rows, extra = [], []
    started = time.perf_counter()
    per_theta = len(estimators) + len(sweep) + (1 if args.equal_compute else 0)
    bar = progress(len(thetas) * per_theta, "nres variance", "measurement")
    for theta_label, theta in thetas:
        cache: dict[int, np.ndarray] = {}

        def blocks_for(k, theta=theta, cache=cache):
            if k not in cache:
                cache[k] = analytic.block_gradients(task, theta, k)
            return cache[k]

        def measure(label, estimator, sample_key, is_sweep=False):
            samples, bad = EstimateSampler(estimator, args.chunk_size)(theta, sample_key, args.num_samples)
            summary = summarize(samples, bad, args.confidence, args.interval, seed=args.seed)
            setting = analytic.gpes_setting(estimator)
            row = {
                "theta": theta_label,
                "estimator": label,
                "unroll_length": estimator.unroll_length,
                "noise_period": None if setting is None else setting[1],
                "num_particles": estimator.num_particles,
                **summary.to_dict(),
                "analytic": analytic.predicted_total_variance(estimator, blocks_for) if args.analytic else None,
            }
            if is_sweep:
                row["sweep"] = True
            if summary.num_nonfinite:
                print(f"warning: {label} at {theta_label}: {summary.num_nonfinite} of {args.num_samples} "
                      "estimates were non-finite and are left out", file=sys.stderr)
            rows.append(row)
            bar.set_postfix(done=f"{label} at {theta_label}")
            bar.update(1)

        for i, (label, estimator) in enumerate(estimators):
            measure(label, estimator, jax.random.fold_in(key, i))
        for k, estimator in sweep:
            measure(f"gpes:{k}", estimator, jax.random.fold_in(key, 1_000_000 + k), is_sweep=True)
        if args.equal_compute:
            result = equal_compute(task, theta, unroll, sigma, args.num_samples, jax.random.fold_in(key, 2_000_000),
                                   chunk_size=args.chunk_size, confidence=args.confidence, method=args.interval)
            predicted = analytic.equal_compute_prediction(blocks_for(horizon), unroll) if args.analytic else None
            extra.append({"theta": theta_label, **result.to_dict(),
                          "analytic": None if predicted is None else {"fulles": predicted[0], "combo": predicted[1]}})
            common = {"theta": theta_label, "unroll_length": unroll, "noise_period": horizon,
                      "num_samples": result.fulles.num_samples, "num_particles": 1}
            rows.append({**common, "estimator": "fulles (1 worker)", "unroll_length": horizon,
                         **result.fulles.to_dict(), "analytic": predicted and predicted[0]})
            rows.append({**common, "estimator": f"(W/T) sum NRES_i ({result.num_windows} workers)",
                         "mean_norm": None, "total_variance": result.combo_variance,
                         "interval": list(result.combo_interval), "analytic": predicted and predicted[1]})
            bar.set_postfix(done=f"equal compute at {theta_label}")
            bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - started

    table = format_table(rows)
    print(f"{task.name}: T={horizon}, W={unroll}, sigma={sigma:g}, M={args.num_samples}, "
          f"{int(100 * args.confidence)}% {args.interval} intervals ({elapsed:.1f} s)")
    print(table)
    for e in extra:
        print(f"equal compute at {e['theta']}: tr Cov FullES / tr Cov (W/T) sum NRES_i = "
              f"{e['variance_ratio_fulles_over_combo']:.3g}; sum_(i!=j) tr Cov(g_i, g_j) / n^2 = "
              f"{e['cross_covariance_sum']:.4g}")
    result = {
        "task": task.name,
        "settings": {"horizon": horizon, "unroll_length": unroll, "sigma": sigma, "num_samples": args.num_samples,
                     "num_particles": args.num_particles, "seed": args.seed, "interval": args.interval,
                     "confidence": args.confidence, "task_options": dict(config.task_options),
                     "theta_from": args.theta_from},
        "rows": rows,
        "equal_compute": extra,
        "seconds": elapsed,
    }
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=_json_default) + "\n"
    atomic_write(out / "variance.json", lambda handle: handle.write(text), mode="w")
    atomic_write(out / "variance.txt", lambda handle: handle.write(table + "\n"), mode="w")
    plot_variance(rows, out / "variance.png", title=f"{task.name}: T={horizon}, W={unroll}, sigma={sigma:g}")
    print(f"wrote {out}/variance.json, {out}/variance.png, {out}/variance.txt")
    return 0


def _default_ks(unroll: int, horizon: int) -> list[int]:
    ks, k = [], unroll
    while k < horizon:
        ks.append(k)
        k *= 2
    return ks + [horizon]


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

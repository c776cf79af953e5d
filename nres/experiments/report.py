"""README result tables rendered from committed comparison summaries, never typed.

A comparison's ``summary.json`` (``nres compare``) is published to
``docs/results/<name>/`` (with its ``summary.md`` and ``comparison.png``); the README holds,
for each published name, a block::

    <!-- results: lorenz-paper-quick -->
    ...tables rendered by :func:`tables`...
    <!-- /results -->

``python -m nres.experiments.report`` rewrites every block from the committed summaries,
``--check`` only reports blocks that differ (exit 1), and ``--publish DIR NAME`` copies a
comparison's outputs to ``docs/results/NAME/`` first. ``tests/test_experiments_report.py``
fails when a README block differs from its summary.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import sys
from typing import Mapping, Optional, Sequence

from nres.experiments.summary import AXES, cell, coverage_note, method_status, verdict_text

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
RESULTS = ROOT / "docs" / "results"
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- results: ([\w.-]+) -->\n)(.*?)(<!-- /results -->)", re.S)
PUBLISHED = ("summary.json", "summary.md", "comparison.png")
AXIS_NAMES = {"wall-clock": "wall-clock (s)", "sequential-steps": "sequential steps", "env-steps": "env steps"}


def tables(summary: Mapping, name: str, claim: str = "nres") -> str:
    """The README block of one summary: provenance, the verdict per axis and target, and per
    method the x-to-target of the hardest target and the final and best values (median [interval])."""
    labels = {m["name"]: m["label"] for m in summary["methods"]}
    sign = "<=" if summary["goal"] == "min" else ">="
    metric = summary.get("metric", "metric")
    commit = summary.get("commit") or "unknown"
    head, _, dirty = commit.partition("+")
    seeds = summary.get("seeds", [])
    lines = [f"Measured at commit `{head[:12]}{'+' + dirty if dirty else ''}` ({len(seeds)} seeds: "
             f"{', '.join(map(str, seeds))}); "
             f"`docs/results/{name}/summary.json`, rendered by `python -m nres.experiments.report`. "
             f"Hardware: {summary.get('hardware', '?').split(';')[0]}.", ""]
    targets = summary["targets"]
    lines += ["| x axis | " + " | ".join(f"to {metric} {sign} {t:g}" for t in targets) + " |",
              "|---|" + "---|" * len(targets)]
    for axis in AXES:
        cells = []
        for t in targets:
            result = summary["verdict"][axis][repr(float(t))]
            text = verdict_text(result, labels)
            if claim in labels and result["status"] not in ("first", "not reached", "no competitor") \
                    and claim not in result["leaders"]:
                text += f" ({labels[claim]}: {method_status(result, claim, labels)})"
            cells.append(text)
        lines.append(f"| {AXIS_NAMES[axis]} | " + " | ".join(cells) + " |")
    last = repr(float(targets[-1]))
    lines += ["", f"To {metric} {sign} {targets[-1]:g}, median [interval] (seeds that reached it / seeds), and the "
              f"final and best {metric}:", "",
              "| method | wall-clock (s) | sequential steps | env steps | final | best |", "|---|---|---|---|---|---|"]
    for m in summary["methods"]:
        cells = [cell(m["to_target"][last][axis]) for axis in AXES]
        cells += [cell(m["final"], "non-finite"), cell(m["best"], "non-finite")]
        lines.append(f"| {m['label']} | " + " | ".join(cells) + " |")
    lines += ["", f"Reached: sustained crossing (the metric stays at or past the target at every later evaluation). "
              f"Intervals: exact order statistics for the median ({coverage_note(summary)}); first = smallest median "
              f"with an interval that overlaps no other method's, tied = overlapping intervals."]
    return "\n".join(lines) + "\n"


def load(name: str, results: pathlib.Path = RESULTS) -> dict:
    path = results / name / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"README block {name!r}: {path} does not exist")
    return json.loads(path.read_text())


def render(text: str, results: pathlib.Path = RESULTS) -> str:
    """``text`` (the README) with every results block rendered from its committed summary."""
    return BLOCK.sub(lambda m: m.group(1) + tables(load(m.group(2), results), m.group(2)) + m.group(4), text)


def blocks(text: str) -> dict[str, str]:
    """Name -> body of every results block of ``text``."""
    return {m.group(2): m.group(3) for m in BLOCK.finditer(text)}


def publish(out: pathlib.Path, name: str, results: pathlib.Path = RESULTS) -> pathlib.Path:
    """Copy a comparison's ``summary.json``, ``summary.md`` and ``comparison.png`` to ``results/name/``.

    The JSON is written compact, each run's curve as columns (``{"iteration": [...], ...}``)
    rounded to 1 ms of wall-clock and 6 significant digits of the metric (the tables come from
    the summary's statistics, not from the curves).
    """
    target = results / name
    target.mkdir(parents=True, exist_ok=True)
    data = json.loads((out / "summary.json").read_text())
    for run in data.get("runs", {}).values():
        run["curves"] = [{"iteration": [p["iteration"] for p in points],
                          "wall_time_s": [round(p["wall_time_s"], 3) for p in points],
                          "sequential_steps": [p["sequential_steps"] for p in points],
                          "total_env_steps": [p["total_env_steps"] for p in points],
                          "value": [float(f"{p['value']:.6g}") for p in points]} for points in run["curves"]]
    (target / "summary.json").write_text(json.dumps(data, separators=(",", ":")) + "\n")
    for file in PUBLISHED[1:]:
        if (out / file).is_file():
            shutil.copyfile(out / file, target / file)
    return target


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nres.experiments.report",
                                     description="Render the README's results blocks from docs/results/*/summary.json.")
    parser.add_argument("--check", action="store_true", help="only report blocks that differ (exit 1 if any)")
    parser.add_argument("--publish", nargs=2, metavar=("DIR", "NAME"), action="append", default=[],
                        help="first copy comparison DIR's outputs to docs/results/NAME/")
    parser.add_argument("--readme", default=str(README), help=argparse.SUPPRESS)
    parser.add_argument("--results", default=str(RESULTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    results = pathlib.Path(args.results)
    for out, name in args.publish:
        if not (pathlib.Path(out) / "summary.json").is_file():
            print(f"nres: error: {out!r} holds no summary.json", file=sys.stderr)
            return 2
        print(f"published {publish(pathlib.Path(out), name, results)}")
    readme = pathlib.Path(args.readme)
    text = readme.read_text()
    try:
        rendered = render(text, results)
    except FileNotFoundError as err:
        print(f"nres: error: {err}", file=sys.stderr)
        return 2
    if args.check:
        stale = [n for n, body in blocks(text).items() if blocks(rendered)[n] != body]
        for n in stale:
            print(f"README block {n!r} differs from docs/results/{n}/summary.json")
        return 1 if stale else 0
    if rendered != text:
        readme.write_text(rendered)
        print(f"rewrote {len(blocks(text))} results block(s) of {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

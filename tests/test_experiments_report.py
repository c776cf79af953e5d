"""The README's result tables are rendered from the committed docs/results/*/summary.json."""

import json

import pytest

from nres.experiments import report
from nres.experiments.summary import curve, summarize


def test_readme_tables_equal_the_committed_summaries():
    text = report.README.read_text()
    found = report.blocks(text)
    published = sorted(p.parent.name for p in report.RESULTS.glob("*/summary.json"))
    assert published, "no docs/results/*/summary.json"
    assert sorted(found) == published, "every published summary has exactly one README block"
    for name, body in found.items():
        assert body == report.tables(report.load(name), name), (
            f"README block {name!r} differs from docs/results/{name}/summary.json; "
            "run `python -m nres.experiments.report`")


def test_every_published_summary_states_its_commit_and_rules():
    for path in report.RESULTS.glob("*/summary.json"):
        data = json.loads(path.read_text())
        assert len(data["commit"].split("+")[0]) == 40, path  # a full git hash: the commit measured at
        assert data["rules"]["crossing"].startswith("sustained crossing"), path
        assert all(m["seeds"] == len(data["seeds"]) for m in data["methods"]), f"{path}: incomplete runs"


def _summary():
    rows = lambda evals: [{"iteration": i, "wall_time_s": float(i), "sequential_steps": 10 * i,
                           "total_env_steps": 20 * i, "train_loss": 1.0} for i in range(1, 5)] + [
        {"iteration": i, "test_loss": v} for i, v in evals]
    fast = curve(rows([(0, 9.0), (2, 4.0), (4, 3.0)]), "test_loss", 20)
    slow = curve(rows([(0, 9.0), (2, 7.0), (4, 4.0)]), "test_loss", 20)
    data = summarize([{"name": "nres", "label": "NRES", "curves": [fast] * 5},
                      {"name": "pes", "label": "PES", "curves": [slow] * 5}], [5.0], "min")
    return {**data, "metric": "test_loss", "commit": "a" * 40, "seeds": [0, 1, 2, 3, 4],
            "hardware": "Some CPU, 2 CPU cores; JAX backend cpu"}


def test_tables_by_hand():
    text = report.tables(_summary(), "x")
    assert text.startswith("Measured at commit `aaaaaaaaaaaa` (5 seeds: 0, 1, 2, 3, 4)")
    assert "Hardware: Some CPU, 2 CPU cores." in text
    assert "| sequential steps | NRES first |" in text  # 20 [20, 20] against 40 [40, 40]
    assert "| NRES | 2 [2, 2] (5/5) | 20 [20, 20] (5/5) | 40 [40, 40] (5/5) | 3 [3, 3] (5/5) | 3 [3, 3] (5/5) |" in text
    assert "5 seeds: 1st smallest to 1st largest, coverage 93.75%" in text


def test_a_stale_block_is_found_and_rewritten(tmp_path):
    results = tmp_path / "results"
    (results / "x").mkdir(parents=True)
    (results / "x" / "summary.json").write_text(json.dumps(_summary()))
    readme = tmp_path / "README.md"
    stale = "intro\n<!-- results: x -->\n| typed | by hand |\n<!-- /results -->\nafter\n"
    rendered = report.render(stale, results)
    assert rendered != stale and rendered.startswith("intro\n<!-- results: x -->\nMeasured at commit")
    assert rendered.endswith("<!-- /results -->\nafter\n")
    assert report.render(rendered, results) == rendered  # rendering is idempotent
    with pytest.raises(FileNotFoundError):
        report.render("<!-- results: missing -->\n<!-- /results -->", results)
    readme.write_text(stale)  # the command line on a real file: --check, then rewrite, then --check
    where = ["--readme", str(readme), "--results", str(results)]
    assert report.main(["--check", *where]) == 1 and readme.read_text() == stale
    assert report.main(where) == 0 and readme.read_text() == rendered
    assert report.main(["--check", *where]) == 0

"""The building blocks of benchmarks/peer_evosax.py on tiny settings (structure, never times)."""

from __future__ import annotations

import math
import pathlib
import sys

import pytest

pytest.importorskip("evosax")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import peer_evosax  # noqa: E402

TINY = {"num_particles": 4, "unroll_length": 10, "horizon": 40, "sigma": 0.04, "lr": 1e-3}
UPDATES, EVERY = 8, 4


@pytest.fixture(scope="module")
def evosax_runs():
    return {est: peer_evosax.evosax_loop(est, TINY, UPDATES, 0, EVERY) for est in peer_evosax.PEERS}


@pytest.fixture(scope="module")
def nres_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("peer") / "run"
    return peer_evosax.nres_process(out, "nres", UPDATES, 0, EVERY, "off", TINY)


@pytest.fixture(scope="module")
def evaluate():
    return peer_evosax.memoized(peer_evosax.lorenz_evaluator(8))


@pytest.mark.parametrize("estimator", sorted(peer_evosax.PEERS))
def test_evosax_loop_records_update_one_and_every_record(evosax_runs, estimator):
    run = evosax_runs[estimator]
    assert sorted(run["clock"]) == sorted(run["theta"]) == [1, 4, 8]
    clocks = [run["clock"][u] for u in (1, 4, 8)]
    assert clocks == sorted(clocks) and clocks[0] > 0
    assert all(len(theta) == 2 and all(math.isfinite(x) for x in theta) for theta in run["theta"].values())
    assert run["theta"][8] != run["theta"][1], "evosax's mean never moved in 8 updates"


def test_nres_process_records_the_same_updates(nres_run):
    assert sorted(nres_run["clock"]) == sorted(nres_run["theta"]) == [1, 4, 8]
    assert nres_run["whole"] > nres_run["clock"][8] > nres_run["clock"][1] > 0
    assert all(len(theta) == 2 for theta in nres_run["theta"].values())


def test_figures_and_table(evosax_runs, nres_run, evaluate):
    evosax_run = dict(evosax_runs["nres"], whole=1.0)
    runs = {"nres": nres_run, "evosax": evosax_run}
    got = {side: peer_evosax.figures(run, evaluate, UPDATES) for side, run in runs.items()}
    keys = {key for key, _, _ in peer_evosax.ROWS}
    for side, fig in got.items():
        assert set(fig) == keys, side
        assert math.isnan(fig["updates"]) or fig["updates"] in (4, 8), side
        assert math.isnan(fig["to_target"]) == math.isnan(fig["updates"]), side
        assert fig["per_update_ms"] > 0, side
        # the last fifth of 8 updates holds the recorded update 8 only
        assert fig["late_loss"] == evaluate(runs[side]["theta"][8]), side
    results = {side: {kind: [got[side]] for kind in kinds} for side, kinds in peer_evosax.KINDS.items()}
    text = peer_evosax.table("nres", results)
    assert "NoiseReuseES" in text
    for _, label, _ in peer_evosax.ROWS:
        assert text.count(label) == 1 + sum(len(k) for k in peer_evosax.KINDS.values()), label  # medians + per kind


def test_memoized_evaluates_each_theta_once():
    calls = []
    evaluate = peer_evosax.memoized(lambda theta: calls.append(tuple(theta)) or float(len(calls)))
    assert [evaluate([1.0, 2.0]), evaluate([1.0, 2.0]), evaluate([0.0, 2.0])] == [1.0, 1.0, 2.0]
    assert calls == [(1.0, 2.0), (0.0, 2.0)]

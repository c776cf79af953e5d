"""The variance diagnostics: empirical tr Cov against the analytic one per K, the
ordering in K, the equal-compute identity of SPEC section 5, intervals, and the CLI.

On the linear-quadratic task (T = 16, W = 4, d = 3) the first-order formula is exact.
Each estimator is sampled M = 4000 times; the standard error of the empirical tr Cov is
the CLT one (sd of the per-sample squared deviations / sqrt(M)), and agreement is
required within Z = 4.5 of them (false-alarm rate below 1e-5 per check).
"""

import json

import jax
import numpy as np
import pytest

import nres
from nres.cli import main
from nres.build import resolve_config
from nres.diagnostics.analytic import (
    block_gradients,
    equal_compute_prediction,
    gpes_total_variance,
    predicted_total_variance,
)
from nres.diagnostics.empirical import EstimateSampler, equal_compute, summarize, total_variance_interval
from nres.run import start_run

W, SIGMA, M, Z = 4, 0.1, 4000, 4.5
CASES = {"pes": ("pes", None), "gpes:8": ("gpes", 8), "nres": ("nres", None), "fulles": ("fulles", None),
         "dodge:8": ("dodge", 8)}


def _se(samples):
    dev2 = np.sum((samples - samples.mean(axis=0)) ** 2, axis=1)
    return dev2.std(ddof=1) / np.sqrt(len(samples))


@pytest.fixture(scope="module")
def measured(linear_task, linear_theta):
    out = {}
    for i, (label, (name, k)) in enumerate(CASES.items()):
        est = nres.make_estimator(name, linear_task, num_particles=1, unroll_length=W, sigma=SIGMA, noise_period=k)
        seed = 11 if label == "dodge:8" else 10 + i  # dodge:8 reuses the keys of gpes:8
        samples, bad = EstimateSampler(est, chunk_size=1000)(linear_theta, jax.random.PRNGKey(seed), M)
        out[label] = (est, samples, summarize(samples, bad))
    return out


@pytest.fixture(scope="module")
def blocks_for(linear_task, linear_theta):
    cache = {}

    def get(k):
        if k not in cache:
            cache[k] = block_gradients(linear_task, linear_theta, k)
        return cache[k]

    return get


@pytest.mark.parametrize("label", list(CASES))
def test_empirical_variance_matches_the_analytic_one(measured, blocks_for, label):
    est, samples, summary = measured[label]
    predicted = predicted_total_variance(est, blocks_for)
    se = _se(samples)
    assert summary.num_samples == M and summary.num_nonfinite == 0
    assert abs(summary.total_variance - predicted) < Z * se, (
        f"{label}: empirical {summary.total_variance:.2f} vs analytic {predicted:.2f}; bound {Z} se = {Z * se:.2f}")
    low, high = summary.interval
    assert low < summary.total_variance < high and high - low < 2 * Z * se, f"{label}: interval {summary.interval}"


def test_prediction_covers_only_the_gpes_family(linear_task, blocks_for):
    for name in ("tes", "uoro", "tbptt", "bptt"):
        est = nres.make_estimator(name, linear_task, num_particles=1, unroll_length=W, sigma=SIGMA)
        assert predicted_total_variance(est, blocks_for) is None, name
    fulles = nres.make_estimator("fulles", linear_task, num_particles=2, unroll_length=W, sigma=SIGMA)
    expected = gpes_total_variance(blocks_for(16), 16, 16, num_particles=2, step_unlocked=False)
    assert predicted_total_variance(fulles, blocks_for) == pytest.approx(expected)


def test_variance_decreases_from_pes_to_nres(measured):
    """K divides K' => Var(GPES_K') <= Var(GPES_K): PES (K = W = 4), K = 8, NRES (K >= T)."""
    order = ["pes", "gpes:8", "nres"]
    for hi, lo in zip(order, order[1:]):
        (_, s_hi, v_hi), (_, s_lo, v_lo) = measured[hi], measured[lo]
        gap = 3 * np.hypot(_se(s_hi), _se(s_lo))
        assert v_hi.total_variance - v_lo.total_variance > gap, (
            f"Var({hi})={v_hi.total_variance:.1f} should exceed Var({lo})={v_lo.total_variance:.1f} by > {gap:.1f}")


def test_dodge_and_gpes_share_the_formula(measured):
    """Forward mode is GPES's first-order term: on a quadratic task, same keys, same samples."""
    np.testing.assert_allclose(measured["dodge:8"][1], measured["gpes:8"][1], rtol=1e-3, atol=1e-3)
    assert measured["dodge:8"][2].total_variance == pytest.approx(measured["gpes:8"][2].total_variance, rel=1e-3)


@pytest.fixture(scope="module")
def equal(linear_task, linear_theta):
    return equal_compute(linear_task, linear_theta, W, SIGMA, M, jax.random.PRNGKey(3), chunk_size=1000)


def test_equal_compute_identity_holds_numerically(equal):
    """tr Cov(FullES) - tr Cov((W/T) sum_i NRES_i) = (1/n^2) sum_{i != j} tr Cov(g_i, g_j), with
    FullES sampled by its own estimator and the windows by NRES workers (same keys)."""
    assert equal.num_windows == 4
    assert equal.fulles_mismatch < 1e-5, f"FullES differs from the mean of its NRES windows: {equal.fulles_mismatch}"
    lhs = equal.fulles.total_variance - equal.combo_variance
    assert lhs == pytest.approx(equal.cross, rel=1e-5), f"{lhs} vs cross-covariance sum {equal.cross}"


def test_equal_compute_matches_the_analytic_one(equal, blocks_for):
    full, combo = equal_compute_prediction(blocks_for(16), W)
    low, high = equal.combo_interval
    half = (high - low) / 2
    assert abs(equal.combo_variance - combo) < Z / 1.96 * half, (
        f"combo: empirical {equal.combo_variance:.2f} vs analytic {combo:.2f} (95% half-width {half:.2f})")
    low, high = equal.fulles.interval
    assert low < full < high or abs(equal.fulles.total_variance - full) < Z / 1.96 * (high - low) / 2, (
        f"FullES: analytic {full:.2f} outside {equal.fulles.interval}")
    assert combo < full and equal.ratio > 1.5, f"NRES workers should win here: ratio {equal.ratio:.2f}"


@pytest.mark.parametrize("method", ["bootstrap", "clt"])
def test_interval_width_for_gaussian_samples(method):
    """For N(0, I_5), Var(tr Cov estimate) = 2 tr(I_5^2) / M = 10 / M: a 95% interval is
    about 2 * 1.96 * sqrt(10 / M) wide (within 15% at M = 4000)."""
    samples = np.random.default_rng(0).normal(size=(4000, 5))
    low, high = total_variance_interval(samples, 0.95, method)
    expected = 2 * 1.96 * np.sqrt(10 / 4000)
    assert abs((high - low) / expected - 1) < 0.15, f"{method}: width {high - low:.4f} vs {expected:.4f}"
    assert low < 5.0 < high + 0.2  # the truth, up to the interval's own error


def test_chunked_jacobian_rows_match_jacrev(linear_task, linear_theta):
    full = block_gradients(linear_task, linear_theta, 4, chunk_size=16)
    chunked = block_gradients(linear_task, linear_theta, 4, chunk_size=3)  # 16 rows in chunks of 3
    np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-6)  # float32 batching order
    assert full.shape == (16, 4, 3)


def test_nonfinite_samples_are_counted_and_left_out():
    samples = np.random.default_rng(1).normal(size=(50, 2))
    samples[3] = np.inf
    summary = summarize(samples, np.arange(50) == 7)
    assert (summary.num_samples, summary.num_nonfinite) == (48, 2) and np.isfinite(summary.total_variance)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("variance")
    code = main(["variance", "--task", "linear", "--horizon", "16", "--unroll-length", "4", "--sigma", "0.1",
                 "--estimators", "nres,pes,dodge:8,uoro", "--num-samples", "300", "--analytic", "--sweep-k",
                 "--equal-compute", "--chunk-size", "300", "--out", str(out)])
    return code, out


@pytest.mark.slow
def test_cli_writes_table_json_and_plot(cli_run, capsys):
    code, out = cli_run
    assert code == 0
    data = json.loads((out / "variance.json").read_text())
    rows = {r["estimator"]: r for r in data["rows"]}
    assert {"nres", "pes", "dodge:8", "uoro", "gpes:4", "gpes:8", "gpes:16", "fulles (1 worker)"} <= set(rows)
    assert rows["nres"]["analytic"] > 0 and rows["uoro"]["analytic"] is None
    assert all(r["num_samples"] == 300 for r in data["rows"])
    assert data["equal_compute"][0]["num_windows"] == 4 and data["equal_compute"][0]["analytic"]["fulles"] > 0
    assert [r["noise_period"] for r in data["rows"] if r.get("sweep")] == [4, 8, 16]
    table = (out / "variance.txt").read_text()
    assert "tr Cov" in table and "nres" in table and "emp/analytic" in table
    png = (out / "variance.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.slow
def test_cli_reads_thetas_from_a_run(tmp_path, capsys):
    config = resolve_config({"task": "linear", "estimator": "nres", "iterations": 3, "num_particles": 2,
                             "checkpoint_every": 1})
    run = start_run(config, str(tmp_path / "run"), progress=False)
    out = tmp_path / "var"
    code = main(["variance", "--theta-from", str(run), "--at", "0,3", "--estimators", "nres", "--num-samples", "20",
                 "--out", str(out)])
    assert code == 0
    thetas = [r["theta"] for r in json.loads((out / "variance.json").read_text())["rows"]]
    assert thetas == ["update 0", "update 3"]
    assert "update 3" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["--estimators", "nres,bogus"], "bogus"),
    (["--num-samples", "1"], "num-samples"),
    (["--confidence", "1.5"], "confidence"),
    (["--horizon", "16", "--unroll-length", "5", "--equal-compute"], "divide"),
    (["--theta-from", "/nonexistent/run"], "run directory"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, match, capsys, tmp_path):
    code = main(["variance", "--task", "linear", *argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and match in err and err.count("\n") == 1, err


def test_cli_refuses_an_out_that_is_a_file_or_holds_results(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    held = tmp_path / "held"
    held.mkdir()
    (held / "variance.json").write_text("{}")
    for out, message in ((afile, "exists and is not a directory"), (afile / "x", "a parent of it is a file"),
                         (held, "already holds the results of an earlier `nres variance` (variance.json); use "
                                "another --out or --overwrite to replace them")):
        assert main(["variance", "--task", "linear", "--num-samples", "4", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"nres: error: --out {str(out)!r}") and message in err and err.count("\n") == 1, err
    assert afile.read_text() == "x" and [p.name for p in held.iterdir()] == ["variance.json"]
    assert (held / "variance.json").read_text() == "{}"
    assert main(["variance", "--task", "linear", "--estimators", "nres", "--num-samples", "4", "--out", str(held),
                 "--overwrite"]) == 0
    assert json.loads((held / "variance.json").read_text())["rows"]

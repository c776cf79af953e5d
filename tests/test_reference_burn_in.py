"""Same states after the burn-in: every estimator state of the small fixed-seed Lorenz
runs right after ``Trainer.init`` equals the reference written by the per-step burn-in
over groups of pairs (commit bf67f16, tests/data/make_reference_burn_in.py), now that
the burn-in runs as masked windows of the update program.

Positions, episode keys, inner states (chaotic: one ulp would grow) and ES noise are
equal bit for bit. The autodiff baselines' derivative states (UORO's ``s~, theta~``,
DODGE's tangent) are exact in real arithmetic but not in float32: XLA compiles the
``jvp``/``linearize`` arithmetic of the per-step program and of the window program
differently (the old code's own init program and a jit of ``estimator.init`` already
disagreed in these bits), which may round each step's result differently, by at most
an ulp of the running value per step; over the ``tau <= STEPS`` burn-in steps that adds
up to ``STEPS * 2**-24`` of the leaf's largest magnitude (the 0.2 time units of Lorenz
dynamics amplify it by less than 2).
"""

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent / "data"))
import references  # noqa: E402

reference, REFERENCE = references.load("burn_in")
FAST = {"nres", "tes", "uoro"}  # the rest are marked slow
DERIVATIVES = {"uoro": (".state_tilde", ".theta_tilde"), "dodge": (".tangent[0]",)}
STEPS = 40  # the largest tau: T = 50, W = 10


@pytest.mark.parametrize("name", references.run_names(reference, FAST))
def test_states_after_burn_in_match_the_reference(name):
    expected = references.expected_run(reference, REFERENCE, name)
    got = reference.burned_in(reference.RUNS[name])
    assert got["total_env_steps"] == expected["total_env_steps"]
    assert list(got["leaves"]) == list(expected["leaves"])
    assert max(got["leaves"][".particles.tau"]) == STEPS or name in ("fulles", "bptt")
    for path, want in expected["leaves"].items():
        have, want = np.asarray(got["leaves"][path]), np.asarray(want)
        if path in DERIVATIVES.get(name, ()):
            bound = STEPS * 2.0**-24 * np.max(np.abs(want))
            np.testing.assert_allclose(have, want, rtol=0, atol=bound, err_msg=f"{name}: {path}")
        else:
            np.testing.assert_array_equal(have, want, err_msg=f"{name}: {path}")

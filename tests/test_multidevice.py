"""Particles sharded over several devices (simulated CPU devices in a subprocess)."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys
import jax, numpy as np
from nres import compilation_cache
from nres.build import resolve_config
from nres.training import Trainer
trainer = Trainer(resolve_config({"task": "lorenz", "num_particles": 8, "unroll_length": 10, "horizon": 40,
                                  "estimator": sys.argv[1]}))
compilation_cache.enable(sys.argv[2])  # stored programs: the update program is prepared from the placed template
learner, counters = trainer.init()
learner, steps = trainer.update_many(learner, counters, 15)
sharding = learner.estimator_state.particles.tau.sharding
print(json.dumps({"devices": jax.device_count(), "shards": len(sharding.device_set),
                  "update_programs": len(trainer.engine._chunk._compiled),
                  "theta": np.asarray(learner.theta).tolist(),
                  "losses": [float(info.train_loss) for _, info, _ in steps]}))
"""


def _run(devices, estimator, cache):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT, estimator, str(cache)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["nres", "tbptt"])
def test_two_devices_split_the_particles_and_agree_with_one(estimator, tmp_path):
    one, two = _run(1, estimator, tmp_path), _run(2, estimator, tmp_path)
    assert (one["devices"], one["shards"]) == (1, 1)
    assert (two["devices"], two["shards"]) == (2, 2), "the particles should live on both devices"
    # the program prepared from the placed template is the one the calls used (no second build)
    assert one["update_programs"] == two["update_programs"] == 1
    # Same math; only the order of the cross-device gradient sum may differ.
    assert two["theta"] == pytest.approx(one["theta"], rel=1e-5)
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-4)

"""The light core install: Lorenz runs without the optional extras, and tasks that need
an extra say which one; ``nres --version``.

A second virtual environment would cost minutes of installs, so the "no MuJoCo, no
gymnasium, no scikit-learn" install is simulated in a subprocess whose import system
refuses those packages (a meta-path finder that raises ModuleNotFoundError for them,
exactly what Python raises when they are not installed). The subprocess also fakes
two CPU devices to check the device note and what ``config.json`` records.
"""

import json
import os
import subprocess
import sys
from importlib import metadata

import pytest

from nres.cli import main

SCRIPT = r"""
import importlib.abc, json, sys

EXTRAS = {"mujoco", "mujoco_mjx", "gymnasium", "sklearn", "imageio", "imageio_ffmpeg", "ray"}


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in EXTRAS:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
from nres.cli import main

codes = {}
for task in ("rl", "lopt"):
    codes[task] = main(["train", "--task", task, "--out", sys.argv[1] + "-" + task])
codes["lorenz"] = main(["train", "--horizon", "40", "--unroll-length", "10", "--num-particles", "3",
                        "--num-test-starts", "8", "--iterations", "2", "--out", sys.argv[1], "--no-progress"])
print(json.dumps({"codes": codes, "loaded": sorted(m for m in sys.modules if m.partition(".")[0] in EXTRAS)}))
"""


@pytest.mark.slow
def test_light_core_runs_lorenz_and_names_the_extra_for_rl_and_lopt(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["codes"] == {"rl": 2, "lopt": 2, "lorenz": 0}, proc.stderr
    assert result["loaded"] == []
    errors = [line for line in proc.stderr.splitlines() if line.startswith("nres: error:")]
    assert errors[0] == ("nres: error: task 'rl' needs mujoco, gymnasium, which the core install leaves out: "
                         "pip install 'nres[rl]'")
    assert errors[1].endswith("pip install 'nres[lopt]'") and "sklearn" in errors[1]
    assert len(errors) == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "run-rl").exists() and not (tmp_path / "run-lopt").exists()
    assert "note: N=3 is not divisible by the 2 local devices" in proc.stdout
    devices = json.loads((out / "config.json").read_text())["devices"]
    assert (devices["local_count"], devices["used_for_particles"]) == (2, 1)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"nres {metadata.version('nres')}"

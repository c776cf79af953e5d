"""nres: online evolution-strategies gradient estimators for unrolled computation graphs."""

import importlib

__version__ = "0.1.0"

# Imported on first use, so `nres` (the command line) starts without loading JAX and a
# Ctrl-C during start-up ends cleanly.
_LAZY = {
    "ES_ESTIMATORS": "nres.estimators",
    "bptt": "nres.estimators",
    "dodge": "nres.estimators",
    "tbptt": "nres.estimators",
    "uoro": "nres.estimators",
    "OnlineES": "nres.estimators",
    "fulles": "nres.estimators",
    "gpes": "nres.estimators",
    "make_estimator": "nres.estimators",
    "nres": "nres.estimators",
    "pes": "nres.estimators",
    "tes": "nres.estimators",
    "antithetic": "nres.noise",
    "sample_noise": "nres.noise",
    "Task": "nres.task",
    "RunView": "nres.api",
    "compare": "nres.api",
    "load_run": "nres.api",
    "train": "nres.api",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nres' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

"""nres: online evolution-strategies gradient estimators for unrolled computation graphs."""

from nres.estimators import ES_ESTIMATORS, OnlineES, fulles, gpes, make_estimator, nres, pes, tes
from nres.noise import antithetic, sample_noise
from nres.task import Task

__version__ = "0.1.0"

__all__ = [
    "ES_ESTIMATORS",
    "OnlineES",
    "Task",
    "antithetic",
    "fulles",
    "gpes",
    "make_estimator",
    "nres",
    "pes",
    "sample_noise",
    "tes",
]

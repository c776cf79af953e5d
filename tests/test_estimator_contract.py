"""The typed estimator contract (:mod:`nres.estimators.base`): every estimator is an
``Estimator``; the ES family, whose windows reduce to per-pair scalars, is a
``WindowEstimator``; engines that ship scalars refuse the others by that type."""

import pytest

from nres.config import ConfigError
from nres.engines import check_scalar_engine
from nres.estimators import ES_ESTIMATORS, ESTIMATORS, make_estimator
from nres.estimators.base import Estimator, WindowEstimator


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_every_estimator_meets_the_contract_and_only_es_ships_scalars(linear_task, name):
    estimator = make_estimator(name, linear_task, num_particles=2, unroll_length=2, sigma=0.1,
                               noise_period=4 if name == "gpes" else None)
    assert isinstance(estimator, Estimator)
    assert isinstance(estimator, WindowEstimator) == (name in ES_ESTIMATORS)
    if name in ES_ESTIMATORS:
        check_scalar_engine(estimator, "--backend ray")
    else:
        with pytest.raises(ConfigError, match=f"--backend ray runs the ES estimators.*not '{name}'"):
            check_scalar_engine(estimator, "--backend ray")

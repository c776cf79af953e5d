"""The estimator constructors: the same core keywords everywhere, and a ValueError naming
any keyword that does not apply (nothing here compiles: constructors only validate)."""

import pytest

import nres
from nres.estimators import CONSTRUCTORS, ES_ESTIMATORS, ESTIMATORS

T = 16  # linear_task's horizon
CORE = dict(num_particles=4, unroll_length=8, sigma=0.05)


def test_every_constructor_is_exported_and_registered():
    for name in CONSTRUCTORS:
        assert name in nres.__all__, f"{name} missing from nres.__all__"
        assert getattr(nres, name) is CONSTRUCTORS[name]
    assert tuple(ESTIMATORS) == tuple(CONSTRUCTORS)


@pytest.mark.parametrize("name, kwargs, expect", [
    ("nres", CORE, dict(unroll_length=8, noise_period=T)),
    ("nres", CORE | dict(noise_period=T), dict(noise_period=T)),
    ("nres", CORE | dict(noise_period=5 * T), dict(noise_period=T)),  # any K >= T is NRES
    ("pes", CORE, dict(noise_period=8)),
    ("pes", CORE | dict(noise_period=8), dict(noise_period=8)),
    ("gpes", CORE | dict(noise_period=4), dict(noise_period=4)),
    ("tes", CORE, dict(noise_period=None)),
    ("fulles", dict(num_particles=4, sigma=0.05), dict(unroll_length=T, step_unlocked=False)),
    ("fulles", dict(num_particles=4, sigma=0.05, unroll_length=T, noise_period=T), dict(unroll_length=T)),
    ("bptt", dict(num_particles=2), dict(unroll_length=T, step_unlocked=False)),
    ("bptt", dict(num_particles=2, unroll_length=T), dict(unroll_length=T)),
    ("tbptt", dict(num_particles=2, unroll_length=8), dict(unroll_length=8)),
    ("uoro", dict(num_particles=2, unroll_length=8), dict(unroll_length=8)),
    ("dodge", dict(num_particles=2, unroll_length=8), dict(noise_period=8)),
    ("dodge", dict(num_particles=2, unroll_length=8, noise_period=4), dict(noise_period=4)),
])
def test_keywords_that_apply_are_accepted(linear_task, name, kwargs, expect):
    est = CONSTRUCTORS[name](linear_task, **kwargs)
    assert est.name == name and est.num_particles == kwargs["num_particles"]
    for attribute, value in expect.items():
        assert getattr(est, attribute) == value, f"{name}({kwargs}).{attribute} = {getattr(est, attribute)}"


@pytest.mark.parametrize("name, kwargs, match", [
    ("fulles", CORE, r"unroll_length=8 does not apply to 'fulles'.*W = T = 16"),  # the raw TypeError
    ("fulles", dict(num_particles=4, sigma=0.05, noise_period=4), r"noise_period=4 does not apply to 'fulles'"),
    ("fulles", dict(num_particles=4), r"'fulles' needs sigma"),
    ("nres", CORE | dict(noise_period=4), r"noise_period=4 does not apply to 'nres'.*K >= T=16.*only to 'gpes'"),
    ("pes", CORE | dict(noise_period=4), r"noise_period=4 does not apply to 'pes'.*K = W"),
    ("tes", CORE | dict(noise_period=8), r"noise_period=8 does not apply to 'tes'"),
    ("gpes", CORE, r"'gpes' needs noise_period"),
    ("bptt", dict(num_particles=2, unroll_length=8), r"unroll_length=8 does not apply to 'bptt'.*W = T = 16"),
    ("bptt", dict(num_particles=2, sigma=0.1), r"sigma=0.1 does not apply to 'bptt'"),
    ("tbptt", CORE, r"sigma=0.05 does not apply to 'tbptt'.*perturb nothing"),
    ("uoro", dict(num_particles=2, unroll_length=8, noise_period=4), r"noise_period=4 does not apply to 'uoro'"),
    ("dodge", CORE, r"sigma=0.05 does not apply to 'dodge'"),
    ("tbptt", dict(num_particles=2, unroll_length=8, loss_normalize=True), r"loss_normalize=True does not apply"),
])
def test_a_keyword_that_does_not_apply_is_named(linear_task, name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CONSTRUCTORS[name](linear_task, **kwargs)


@pytest.mark.parametrize("name", ES_ESTIMATORS)
def test_es_options_pass_through(linear_task, name):
    kwargs = dict(num_particles=4, sigma=0.05) if name == "fulles" else CORE | (
        dict(noise_period=8) if name == "gpes" else {})
    est = CONSTRUCTORS[name](linear_task, **kwargs, loss_normalize=True, store_noise=False)
    assert est.loss_normalize and not est.store_noise


@pytest.mark.parametrize("name", list(CONSTRUCTORS))
def test_the_registry_ignores_settings_a_config_always_carries(linear_task, name):
    """``make_estimator`` (the command line's route) passes W and sigma to every method;
    FullES/BPTT ignore W and the autodiff baselines sigma instead of refusing them."""
    est = nres.make_estimator(name, linear_task, num_particles=2, unroll_length=8, sigma=0.05,
                              noise_period=4 if name == "gpes" else None)
    assert est.name == name
    assert est.unroll_length == (T if name in ("fulles", "bptt") else 8)

"""What the reference tests share: a generator module ``make_reference_<name>.py`` and
the results it stored in ``reference_<name>.json`` (both in this folder)."""

import importlib
import json
import pathlib

import pytest

DATA = pathlib.Path(__file__).parent


def load(name: str):
    """``(generator module, stored results)`` of reference ``name``."""
    return importlib.import_module(f"make_reference_{name}"), json.loads((DATA / f"reference_{name}.json").read_text())


def run_names(module, fast: set) -> list:
    """The module's runs for ``pytest.mark.parametrize``: those not in ``fast`` marked slow
    (each run compiles its own programs)."""
    return [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in module.RUNS]


def expected_run(module, stored: dict, name: str) -> dict:
    """The stored results of run ``name``, after checking they were made with this module's settings."""
    expected = stored["runs"][name]
    assert expected["settings"] == module.RUNS[name] and stored["base"] == module.BASE
    return expected

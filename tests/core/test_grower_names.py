"""Names of ``perforate.grower`` from before it was split keep working: the moved ones warn and
give the very object of their new module; the ones that stayed import silently."""
from __future__ import annotations

import importlib
import warnings

import pytest

import perforate.grower as grower_module

MOVED = {"PHASES": "perforate.grower_state", "STATE_FORMAT": "perforate.writer",
         "RESUME_STEM": "perforate.writer", "BASE_COLUMNS": "perforate.records",
         "budget_log": "perforate.grower_actions"}


@pytest.mark.parametrize("name", sorted(MOVED))
def test_a_moved_name_warns_with_its_new_import_and_is_the_same_object(name):
    with pytest.warns(DeprecationWarning, match=f"from {MOVED[name]} import {name}"):
        old = getattr(grower_module, name)
    assert old is getattr(importlib.import_module(MOVED[name]), name)


def test_from_import_of_a_moved_name_works():
    with pytest.warns(DeprecationWarning, match="perforate.writer"):
        from perforate.grower import RESUME_STEM
    assert RESUME_STEM == "resume"


@pytest.mark.parametrize("name", ["Decision", "GrowerState", "Grower", "LR_SCALE_KEY",
                                  "OptimizerFactory", "SchedulerFactory"])
def test_the_names_that_stayed_import_without_a_warning(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert getattr(grower_module, name) is not None


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NOT_A_NAME'"):
        grower_module.NOT_A_NAME  # noqa: B018
    assert not hasattr(grower_module, "also_not_a_name")

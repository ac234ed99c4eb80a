"""Renamed modules and names keep working: the old module path warns and gives the new module
itself; names taken out of ``perforate.__all__`` stay attributes of the package, silently."""
from __future__ import annotations

import importlib
import sys
import warnings

import pytest

import perforate as pf

RENAMED = {  # old path -> new path
    "perforate.training": "perforate.growth",
    "perforate.training.pb": "perforate.growth.pb",
    "perforate.training.cached": "perforate.growth.cached",
    "perforate.training.gd": "perforate.growth.gd",
    "perforate.report": "perforate.growth_plot",
    "perforate.checks": "perforate.validation",
    "perforate.guards": "perforate.loop_warnings",
    "perforate.exported": "perforate.inference",
}


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_an_old_module_path_warns_and_is_the_new_module(old, monkeypatch):
    top = ".".join(old.split(".")[:2])  # the renamed module or package
    for name in list(sys.modules):  # import afresh: a module warns when it is first imported
        if name == top or name.startswith(top + "."):
            monkeypatch.delitem(sys.modules, name)
    with pytest.warns(DeprecationWarning, match=f"renamed {RENAMED[top]}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(RENAMED[old])


def test_patching_the_old_path_patches_the_new_one(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from perforate.training import cached as old
    from perforate.growth import cached, pb
    monkeypatch.setattr(old, "fit", "patched")
    assert cached.fit == "patched" and pb.cached.fit == "patched"


def test_names_out_of_all_stay_attributes():
    removed = {"ExperimentError", "ExportedDendriticLayer", "GrowerState"}
    assert removed.isdisjoint(pf.__all__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pf.ExperimentError is importlib.import_module("perforate.errors").ExperimentError
        assert pf.ExportedDendriticLayer is importlib.import_module("perforate.inference").ExportedDendriticLayer
        assert pf.GrowerState is type(pf.Grower(_tiny(), pf.Config(), _adam).state)


def _tiny():
    import torch

    return pf.perforate(torch.nn.Sequential(torch.nn.Linear(2, 2)), pf.Config())


def _adam(params):
    import torch

    return torch.optim.Adam(params, lr=1e-3)

"""experiments/ in subpackages per command: the old import paths still work, and both protocols
are built one way (one base, the same results.json as before)."""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import types

import pytest

from perforate.experiments.bench.arms import Protocol
from perforate.experiments.frontier.protocol import FrontierProtocol
from perforate.experiments.harness.protocol import ExperimentProtocol

OLD_PATHS = {"study": "frontier.study", "task": "frontier.task", "datasets": "data.datasets",
             "models": "data.models"}


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_an_old_module_path_is_the_moved_module_itself(old):
    moved = importlib.import_module(f"perforate.experiments.{OLD_PATHS[old]}")
    assert importlib.import_module(f"perforate.experiments.{old}") is moved


@pytest.mark.parametrize("package", ["frontier", "cost"])
def test_a_command_package_still_gives_the_names_of_its_old_module(package):
    pkg = importlib.import_module(f"perforate.experiments.{package}")
    for info in pkgutil.iter_modules(pkg.__path__):  # every submodule loaded: none may shadow a name
        importlib.import_module(f"{pkg.__name__}.{info.name}")
    for name, module in pkg._EXPORTS.items():
        value = getattr(pkg, name)
        assert not isinstance(value, types.ModuleType), name
        assert value is getattr(importlib.import_module(f"{pkg.__name__}.{module}"), name)
    with pytest.raises(AttributeError):
        getattr(pkg, "no_such_name")


# the key order of results.json's "protocol" block, as files written before the base had it
BENCH_ORDER = ["dataset", "model", "width", "max_epochs", "lr", "batch_size", "weight_decay",
               "monitor", "device", "arms", "seeds", "fractions", "fraction_arms", "patience",
               "stopping", "finetune_epochs", "compressed_width", "compressed_mode", "config",
               "latency_repeats", "run_outputs"]
FRONTIER_ORDER = ["dataset", "model", "widths", "grow_widths", "arms", "variants",
                  "reference_widths", "seeds", "max_epochs", "patience", "stopping", "lr",
                  "batch_size", "weight_decay", "config", "run_outputs", "metric", "direction",
                  "custom_arms", "controls", "control_inputs", "control_widths"]


@pytest.mark.parametrize("cls, order", [(Protocol, BENCH_ORDER), (FrontierProtocol, FRONTIER_ORDER)])
def test_both_protocols_are_built_one_way_and_write_the_same_file(cls, order):
    assert issubclass(cls, ExperimentProtocol)
    protocol = cls(seeds=[0, 1])
    assert list(protocol.to_dict()) == order
    assert cls.from_dict({**protocol.to_dict(), "from_a_newer_version": 1}) == protocol
    with pytest.raises(dataclasses.FrozenInstanceError):
        protocol.seeds = [2]
    with pytest.raises(TypeError):
        cls("mnist1d")  # keyword-only
    assert not set(cls.KEY_OMITS) & set(protocol.key())


def test_the_shared_fields_are_declared_once_in_the_base():
    shared = {f.name for f in dataclasses.fields(ExperimentProtocol)}
    assert {"dataset", "model", "max_epochs", "lr", "batch_size", "weight_decay", "patience",
            "stopping", "config"} <= shared
    for cls in (Protocol, FrontierProtocol):
        own = set(cls.__dict__.get("__annotations__", {}))
        # a subclass re-declares a shared field only to give it its own default
        assert own & shared <= {"arms", "seeds", "run_outputs"}, cls

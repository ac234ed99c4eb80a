"""Fixtures shared by the whole suite. Plain helpers (small models, data, drivers) that test
modules import by name are in :mod:`tests.helpers`; test modules never import each other."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Deterministic and quick on small shared machines: one seed, one intra-op thread."""
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """perforatedai compat: run in tmp_path with default settings and no tracker; the capacity
    test off as in real runs, and no graph drawn (tests that look at PAI.png turn it on)."""
    from perforate.compat.perforatedai import globals_perforatedai as GPA
    from perforate.compat.perforatedai import reset

    monkeypatch.chdir(tmp_path)
    reset()
    GPA.pc.set_testing_dendrite_capacity(False)
    GPA.pc.set_drawing_pai(False)
    yield tmp_path
    reset()

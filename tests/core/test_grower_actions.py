"""What the grower's actions leave behind: frozen keyword-only decisions that say truthfully
whether the epoch improved, and history rows that are complete when appended."""
import copy
import dataclasses

import pytest
import torch
from torch import nn

import perforate as pf

SPIKE = [0.5, 0.9, 0.1, 0.1, 0.95]  # smoothing 3, patience 3: the plateau comes at a new best


def grower(**fields) -> pf.Grower:
    torch.manual_seed(0)
    config = pf.Config(**{"mode": "gd", "patience": 3, "smoothing": 3, **fields})
    return pf.Grower(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), config,
                     lambda p: torch.optim.SGD(p, lr=0.1))


def test_decisions_are_frozen_and_built_with_keywords():
    with pytest.raises(TypeError):
        pf.Decision(True, False, "neuron")
    decision = pf.Decision(restructured=True, done=False, phase="neuron", event="grow")
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.done = True
    assert (decision.improved, decision.epoch, decision.reason) == (False, 0, "")


@pytest.mark.parametrize("fields,event", [({}, "grow"), ({"max_dendrites": 0}, "done")])
def test_a_grow_or_done_decision_says_its_epoch_improved(fields, event):
    g = grower(**fields)
    decisions = [g.step(score) for score in SPIKE]
    assert [d.event for d in decisions] == ["", "", "", "", event]
    assert [d.improved for d in decisions] == [True, True, False, False, True]


def test_the_decision_that_spends_the_budget_says_its_epoch_improved():
    g = grower(max_epochs=3)
    decisions = [g.step(score) for score in [0.5, 0.6, 0.7]]
    assert decisions[-1].event == "done" and decisions[-1].improved


def test_history_rows_are_not_edited_after_they_are_appended():
    g = grower(max_epochs=20)
    seen = []
    for score in SPIKE + [0.95, 0.95]:
        g.step(score, train_acc=0.5)
        seen.append((g.history[-1], copy.deepcopy(g.history[-1])))
    assert g.history[4]["event"] == "grow" and g.history[4]["reason"].startswith("no improvement on")
    last = g.history[-1]
    g.add_dendrites()  # between epochs: the last row is replaced by a marked copy
    g.finish()
    assert g.history[-1] is not last and g.history[-1]["event"] == "grow+done"
    assert list(g.history[-1])[:len(last)] == list(last)  # same columns, in the same order
    for row, then in seen:
        assert row == then

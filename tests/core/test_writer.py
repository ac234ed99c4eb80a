"""The run writer on its own: it writes what frozen records hold, decides the cadence itself,
and never reads (or calls into) a grower. No Grower is built here."""
import ast
import csv
import json
from pathlib import Path

import pytest
import torch

import perforate as pf
from perforate import writer as writer_module
from perforate.records import BestModel, EpochRecord, frozen_rows
from perforate.writer import STATE_FORMAT, RunWriter, load_grower_state

WRITER_SOURCE = Path(writer_module.__file__).read_text()
CALLS_INTO_A_GROWER = {"state_dict", "summary"}  # what the writer called back on the grower


def grower_references(source: str) -> list[str]:
    """Where ``source`` imports perforate.grower (even under TYPE_CHECKING), or, in a class,
    names a grower or calls what a writer used to call back on one."""
    tree, found = ast.parse(source), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "grower":
            found.append(f"line {node.lineno}: imports {node.module}")
        if isinstance(node, ast.Import) and any(a.name.endswith(".grower") for a in node.names):
            found.append(f"line {node.lineno}: imports perforate.grower")
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for node in ast.walk(cls):
            name = (node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute)
                    else node.arg if isinstance(node, ast.arg) else None)
            if name is not None and name.lower() in ("grower", "plot_grower"):
                found.append(f"line {node.lineno}: {cls.name} names {name}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in CALLS_INTO_A_GROWER:
                found.append(f"line {node.lineno}: {cls.name} calls .{node.func.attr}()")
    return found


def test_the_writer_never_refers_to_a_grower():
    assert grower_references(WRITER_SOURCE) == []
    # the check sees the old shape: a writer handed the grower, calling back into it
    old = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .grower import Grower\n"
           "class RunWriter:\n    def epoch_end(self, grower: 'Grower') -> None:\n"
           "        write(grower.state_dict())\n")
    assert len(grower_references(old)) >= 4


def _row(epoch, score, event="", reason=""):
    row = {"epoch": epoch, "phase": "neuron", "score": score, "lr": 0.1, "params": 12,
           "dendrites": 0, "seconds": 0.01, "event": event}
    if reason:
        row["reason"] = reason
    return row


def _state(epoch, weight, best=None, version=0):
    """A grower state dict as ``Grower.state_dict()`` shapes it (tensors by reference)."""
    return {"format": STATE_FORMAT, "config": {}, "state": {"epoch": epoch}, "history": [],
            "structure": {}, "best": best, "best_version": version, "trial": None, "before": None,
            "model": {"w": weight}}


def _history(path):
    return [(int(r["epoch"]), r["event"]) for r in csv.DictReader(open(path))]


def test_a_hand_built_run_writes_history_summary_state_and_best(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "WRITE_INTERVAL_S", 0.0)  # every epoch's files go out
    cfg = pf.Config(plots=False, checkpoint_every=2)
    writer, weight = RunWriter(tmp_path), torch.zeros(3)
    best = {"structure": {}, "state": {"w": torch.ones(3)}}

    needs = writer.needs("epoch", 1, cfg)  # epoch 0 ends: no resume state due (every 2)
    assert (needs.action, needs.rows_from, needs.submit, needs.state) == ("epoch", 0, True, False)
    writer.write(EpochRecord(needs, 1, frozen_rows([_row(0, 0.5)])))
    needs = writer.needs("epoch", 2, cfg)
    assert needs.rows_from == 1 and needs.state
    writer.write(EpochRecord(needs, 2, frozen_rows([_row(1, 0.6)]), state=_state(2, weight)))
    weight += 5  # training goes on: the background write holds its own copy
    writer.flush()
    assert _history(tmp_path / "history.csv") == [(0, ""), (1, "")]
    saved = load_grower_state(tmp_path / "state")
    assert saved["state"] == {"epoch": 2} and torch.equal(saved["model"]["w"], torch.zeros(3))
    assert not (tmp_path / "summary.json").exists()

    assert writer.needs("epoch", 3, cfg, event="hold").action == "epoch"  # a hold is an ordinary epoch
    needs = writer.needs("epoch", 3, cfg, event="grow")
    assert needs.action == "outputs" and needs.summary and needs.best and needs.state and not needs.graph
    grow = _row(2, 0.4, "grow", "patience ran out")
    writer.write(EpochRecord(needs, 3, frozen_rows([grow]), event="grow", state=_state(3, weight, best, 1),
                             best=BestModel(best, 1, 0.6), summary={"epochs": 3, "done": False}))
    assert _history(tmp_path / "history.csv") == [(0, ""), (1, ""), (2, "grow")]
    assert json.loads((tmp_path / "summary.json").read_text()) == {"epochs": 3, "done": False}
    assert pf.read_checkpoint_meta(tmp_path / "best.pt")["extra"]["best_score"] == 0.6
    assert load_grower_state(tmp_path / "state")["best"]["state"]["w"].tolist() == [1.0, 1.0, 1.0]
    assert not writer.ended and (tmp_path / ".perforate.lock").exists()

    needs = writer.needs("end", 3, cfg)  # the "done" event marks the row already written
    assert needs.rows_from == 2
    done = {**grow, "event": "grow+done", "reason": "patience ran out; finish() was called"}
    writer.write(EpochRecord(needs, 3, frozen_rows([done]), state=_state(3, weight, best, 1),
                             best=BestModel(best, 1, 0.6), summary={"epochs": 3, "done": True}))
    assert writer.ended and not (tmp_path / ".perforate.lock").exists()
    assert _history(tmp_path / "history.csv") == [(0, ""), (1, ""), (2, "grow+done")]
    assert json.loads((tmp_path / "summary.json").read_text())["done"] is True


def test_the_writer_asks_for_what_the_cadence_makes_due(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "WRITE_INTERVAL_S", 3600.0)
    cfg = pf.Config(plots=True, checkpoint_best="disk")
    writer, best = RunWriter(tmp_path), {"structure": {}, "state": {"w": torch.ones(2)}}
    needs = writer.needs("epoch", 1, cfg)  # the first epoch's files go out at once
    assert needs.submit and needs.state and needs.best and needs.best_held == 0
    writer.write(EpochRecord(needs, 1, frozen_rows([_row(0, 0.5)]), state=_state(1, torch.zeros(2), best, 1),
                             best=BestModel(best, 1, 0.5)))
    needs = writer.needs("epoch", 2, cfg)  # held back by the interval: only the row comes
    assert (needs.submit, needs.state, needs.best, needs.state_due) == (False, False, False, True)
    writer.write(EpochRecord(needs, 2, frozen_rows([_row(1, 0.6)])))
    writer.flush()  # waits only
    assert _history(tmp_path / "history.csv") == [(0, "")]
    needs = writer.needs("flush", 2, cfg)  # a flush hands over what was held back
    assert needs.submit and needs.state and needs.best and needs.best_held == 1
    writer.write(EpochRecord(needs, 2, (), state=_state(2, torch.zeros(2), best, 1)))
    assert _history(tmp_path / "history.csv") == [(0, ""), (1, "")]
    assert load_grower_state(tmp_path / "state")["state"]["epoch"] == 2
    assert not writer.needs("flush", 2, cfg).submit  # nothing owed
    assert writer.needs("between", 2, cfg).graph  # config.plots: an event draws growth.png

    needs = writer.needs("restart", 1, cfg)  # a loaded state: its history replaces the file's
    assert needs.rows_from == 0
    writer.write(EpochRecord(needs, 1, frozen_rows([_row(0, 0.7)])))
    assert [r["score"] for r in csv.DictReader(open(tmp_path / "history.csv"))] == ["0.7"]
    with pytest.raises(pf.GrowthError, match="moment"):
        writer.needs("later", 1, cfg)


def test_a_failed_rewrite_is_tried_again_by_the_next_write(tmp_path, monkeypatch):
    """A rewrite that failed (disk full) leaves the file as it was; the next write, even a
    plain append, rewrites it, so a row marked after it was written is not lost."""
    path = tmp_path / "history.csv"
    history = writer_module.HistoryWriter(path)
    rows = [{"epoch": 0, "score": 1.0, "event": ""}, {"epoch": 1, "score": 2.0, "event": ""}]
    history.write(rows)
    marked = [rows[0], {**rows[1], "event": "grow"}]

    def disk_full(_path):
        raise OSError("No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(writer_module, "atomic_path", disk_full)
        with pytest.raises(OSError):
            history.write(marked, rewrite=True)
    history.write(marked + [{"epoch": 2, "score": 3.0, "event": ""}])
    with open(path, newline="") as f:
        events = [row["event"] for row in csv.DictReader(f)]
    assert events == ["", "grow", ""]

"""The run writer off the training thread: what is on disk after flush and finish, the resume
state's cadence, errors reaching the training thread, and a bounded backlog."""
import csv
import threading

import pytest
import torch
from torch import nn

import perforate as pf
from perforate import writer as writer_module
from perforate.writer import load_grower_state


def _grower(tmp_path, **config):
    torch.manual_seed(0)
    cfg = pf.Config(patience=100, plots=False, **config)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    return pf.Grower(model, cfg, lambda p: torch.optim.SGD(p, lr=0.1), out_dir=tmp_path)


def _train(grower, scores):
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    for score in scores:
        grower.optimizer.zero_grad()
        grower.model(x).pow(2).mean().backward()
        grower.optimizer.step()
        grower.step(score)


def test_flush_leaves_current_files_and_finish_ends_the_thread(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "WRITE_INTERVAL_S", 3600.0)  # only the first epoch's files
    grower = _grower(tmp_path)
    _train(grower, [0.1, 0.2, 0.3, 0.4])
    grower.flush()
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [r["score"] for r in rows] == ["0.1", "0.2", "0.3", "0.4"]
    saved = load_grower_state(tmp_path / "state")  # what was held back is written by flush
    assert saved["state"] == grower.state.to_dict() and saved["state"]["epoch"] == 4
    assert all(torch.equal(saved["model"][k], v) for k, v in grower.model.state_dict().items())
    grower.finish()
    assert grower.writer._background._thread is None  # no thread outlives the run


def test_files_are_handed_over_at_most_once_per_interval(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "WRITE_INTERVAL_S", 3600.0)
    taken = []
    save = writer_module.save_grower_state
    monkeypatch.setattr(writer_module, "save_grower_state",
                        lambda folder, state, *a, **kw: (taken.append(state["state"]["epoch"]),
                                                         save(folder, state, *a, **kw)))
    grower = _grower(tmp_path)
    _train(grower, [0.1, 0.2, 0.3])
    grower.writer.flush()  # waits, without handing over what the interval held back
    assert taken == [1]
    assert [r["score"] for r in csv.DictReader(open(tmp_path / "history.csv"))] == ["0.1"]
    monkeypatch.setattr(writer_module, "WRITE_INTERVAL_S", 0.0)
    _train(grower, [0.4, 0.5])
    grower.writer.flush()
    assert taken[0] == 1 and taken[-1] == 5 and set(taken) <= {1, 4, 5}  # 4 may be superseded
    grower.finish()


def test_a_failed_background_write_is_raised_on_the_training_thread(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise pf.CheckpointError("disk full")

    monkeypatch.setattr(writer_module, "save_grower_state", fail)
    grower = _grower(tmp_path)
    _train(grower, [0.1])  # its state write fails in the background
    with pytest.raises(pf.CheckpointError, match="disk full"):
        grower.flush()
    monkeypatch.undo()
    grower.flush()  # reported once; the run goes on
    _train(grower, [0.2])
    grower.finish()
    assert load_grower_state(tmp_path / "state")["state"]["epoch"] == 2


class _Job:
    def __init__(self, name, log, state=True, gate=None):
        self.name, self.log, self.gate = name, log, gate
        self.state, self.best = ({} if state else None), None

    def covers(self, older):
        return writer_module._EpochWrite.covers(self, older)

    def __call__(self):
        if self.gate is not None:
            self.gate.wait(timeout=10)
        self.log.append(self.name)


def test_waiting_writes_collapse_into_the_newest_that_covers_them():
    worker, log, gate = writer_module._Worker(), [], threading.Event()
    worker.submit(_Job("running", log, gate=gate))
    while not worker._busy:  # the first job has started and waits at the gate
        threading.Event().wait(0.001)
    worker.submit(_Job("a", log, state=True))
    worker.submit(_Job("b", log, state=False))  # "a" waits on: "b" holds no resume state
    worker.submit(_Job("c", log, state=True))  # replaces "b"
    gate.set()
    worker.close()
    assert log == ["running", "a", "c"]
    assert worker._thread is None


def test_a_growth_forced_between_epochs_is_in_the_history_file_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "WRITE_INTERVAL_S", 0.0)
    grower = _grower(tmp_path)
    _train(grower, [0.1, 0.2])
    grower.flush()  # the row of epoch 2 is on disk, without an event
    grower.add_dendrites()  # marks that row: the file must say so now, not only at finish()
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [r["event"] for r in rows] == ["", "grow"]
    saved = load_grower_state(tmp_path / "state")
    assert saved["state"]["dendrites"] == grower.state.level == 1  # the grown model can be resumed


def test_background_rows_are_copies_the_next_decision_cannot_change(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "WRITE_INTERVAL_S", 0.0)
    grower = _grower(tmp_path)
    submitted = []
    submit = grower.writer._background.submit
    monkeypatch.setattr(grower.writer._background, "submit",
                        lambda job: (submitted.append(job), submit(job)))
    _train(grower, [0.1])
    grower.history[-1]["event"] = "changed later"
    assert submitted[-1].rows[-1]["event"] == ""

"""Where the grower keeps its rollback snapshots (Config.snapshot_device)."""
import gc
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import perforate as pf
from perforate import snapshots


def _run(place, scores=(0.5, 0.6) + (0.55,) * 10):
    """A gd run whose growth does not pay (rolled back to the model from before it)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    cfg = pf.Config(mode="gd", patience=2, max_epochs=len(scores), snapshot_device=place)
    model = pf.perforate(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), cfg)
    grower = pf.Grower(model, cfg, optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-2))
    held = []
    for score in scores:
        loss = F.cross_entropy(grower.model(x), y)
        grower.optimizer.zero_grad()
        loss.backward()
        grower.optimizer.step()
        decision = grower.step(score)
        held.append({key: snapshots.nbytes(getattr(grower, key))[1]
                     for key in ("_best", "_trial", "_before") if getattr(grower, key) is not None})
        if decision.done:
            break
    grower.finish()
    return grower, held


def test_every_place_gives_the_same_run():
    reference, held = _run("model")
    assert any(len(h) == 3 for h in held)  # best, before-growth and trial snapshots at once
    events = [row["event"] for row in reference.history]
    assert "grow" in events
    for place in ("cpu", "disk"):
        grower, held = _run(place)
        assert [row["event"] for row in grower.history] == events
        assert {w for h in held for w in h.values()} == {place}
        for key, value in reference.model.state_dict().items():
            assert torch.equal(grower.model.state_dict()[key], value), (place, key)


def test_a_disk_snapshot_holds_no_tensors_and_its_file_goes_with_it():
    model = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2))
    model[1].weight = nn.Parameter(torch.randn(2, 5, dtype=torch.bfloat16))
    snap = snapshots.take(model, "disk")
    state = snap["state"]
    assert isinstance(state, snapshots.DiskState) and not any(
        isinstance(v, torch.Tensor) for v in vars(state).values())
    path = state.path
    assert os.path.getsize(path) > state.nbytes == sum(t.numel() * t.element_size()
                                                         for t in model.state_dict().values())
    with torch.no_grad():
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        for p in model.parameters():
            p.add_(1.0)
    pf.checkpoint.restore(model, snap)
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]) and value.dtype == saved[key].dtype
    memory = snapshots.in_memory(snap)
    assert all(torch.equal(memory["state"][k], v) for k, v in saved.items())
    del snap, state, memory
    gc.collect()
    assert not os.path.exists(path)


def test_auto_keeps_small_cpu_models_in_place_and_sends_large_ones_to_disk(monkeypatch):
    model = nn.Linear(16, 16)
    assert pf.Config().snapshot_device == "auto"
    assert snapshots.where(model, "auto") == "model"
    monkeypatch.setattr(snapshots, "AUTO_DISK_BYTES", 16 * 16 * 4)
    assert snapshots.where(model, "auto") == "disk"
    assert snapshots.where(model, "cpu") == "cpu"
    with pytest.raises(pf.ConfigError, match="snapshot_device"):
        pf.Config(snapshot_device="gpu")


def test_a_grower_with_disk_snapshots_saves_and_resumes_its_state():
    grower, _ = _run("disk", scores=(0.5, 0.6, 0.6, 0.6))
    sd = grower.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in sd["best"]["state"].values())
    assert type(sd["best"]["state"]) is dict
    other, _ = _run("disk", scores=(0.5,))
    other.load_state_dict(sd)
    for key, value in grower.model.state_dict().items():
        assert torch.equal(other.model.state_dict()[key], value)

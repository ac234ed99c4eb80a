"""GrowthLogger writes per-epoch scores, phase, dendrites, params and the graph to an offline run."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from torch import nn

import perforate as pf

wandb = pytest.importorskip("wandb")
from perforate.integrations.wandb import GrowthLogger  # noqa: E402


def _records(path):
    """Decode a ``.wandb`` transaction log (LevelDB-style 32 KiB blocks of protobuf Records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(chunks)
            out.append(rec)
            chunks = b""
    return out


def _items(items):
    """Record items as a dict; media values arrive split over nested keys."""
    out: dict = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return out


def test_offline_run_holds_growth_history_graph_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 2))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    cfg = pf.Config(patience=1, max_dendrites=1, improvement_threshold_abs=0.01)
    grower = pf.Grower(model, cfg, lambda p: torch.optim.SGD(p, lr=0.1), out_dir=tmp_path / "out")
    run = wandb.init(project="perforate-test", dir=str(tmp_path), mode="offline")
    wb = GrowthLogger(run)
    scores = [0.5, 0.6, 0.9, 0.9, 0.9]  # scripted; growth forced at epoch 1, best at epoch 2
    states, opt_has_dendrites = [], []
    for epoch, score in enumerate(scores):
        in_opt = {id(p) for group in grower.optimizer.param_groups for p in group["params"]}
        dend = [p for n, p in model.named_parameters() if "dendrite" in n or "output_weight" in n]
        opt_has_dendrites.append(bool(dend) and all(id(p) in in_opt for p in dend))
        for i in range(0, 64, 16):
            grower.optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 16]), y[i:i + 16]).backward()
            grower.optimizer.step()
        with torch.no_grad():
            acc = float((model(x).argmax(1) == y).float().mean())
        d = grower.step(score, val_acc=acc)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        if epoch == 1:
            grower.add_dendrites()
        wb.log_epoch(grower, d)
        if d.done:
            break
    grower.finish()
    wb.log_final(grower)
    run_dir = run.dir
    run.finish()
    # finish() returns before the wandb service has closed the run's stream, and the .wandb
    # transaction log holds only its 7-byte header until that close flushes the records (the
    # service is told to close it without waiting). Under load the file was read first.
    # teardown() waits for the service process to exit, after it closed every stream.
    wandb.teardown()

    assert opt_has_dendrites == [False, False, True, True]
    assert torch.count_nonzero(states[2]["0.output_weight"]) > 0  # new dendrites trained
    assert all(torch.equal(v, states[2][k]) for k, v in model.state_dict().items())  # best restored
    reloaded = pf.load(tmp_path / "out" / "best.pt", nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 2)))
    assert torch.equal(reloaded(x), model(x))

    files = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    records = _records(files[0])
    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    epochs = [h for h in history if "perforate/score" in h]
    assert [h["perforate/epoch"] for h in epochs] == [0, 1, 2, 3]
    assert [h["perforate/score"] for h in epochs] == scores[:4]
    assert [h["perforate/dendrites"] for h in epochs] == [0, 0, 1, 1]
    assert [h["perforate/event"] for h in epochs] == ["", "grow", "", "done"]
    assert [h["perforate/phase"] for h in epochs] == ["neuron"] * 4
    assert all("perforate/val_acc" in h and "perforate/params" in h for h in epochs)
    assert epochs[2]["perforate/params"] > epochs[0]["perforate/params"]
    graphs = [h["perforate/growth"] for h in history if "perforate/growth" in h]
    assert len(graphs) == 3 and all(gr["_type"] == "image-file" for gr in graphs)  # grow, done, final
    images = list((tmp_path / "wandb").glob("offline-run-*/files/media/images/**/*.png"))
    assert len(images) == 3
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(_items(r.summary.update))
    assert summary["perforate/best_epoch"] == 2 and summary["perforate/best_dendrites"] == 1
    assert summary["perforate/best_score"] == 0.9
    assert summary["perforate/dendrites_by_layer"] == {"0": 1, "2": 1}
    assert run_dir


def test_needs_a_run(monkeypatch):
    if wandb.run is not None:  # pragma: no cover
        pytest.skip("a wandb run is active")
    with pytest.raises(pf.GrowthError, match="wandb.init"):
        GrowthLogger()

"""Save/load, export and honest measurements."""
import json

import pytest
import torch
from torch import nn

import perforate as pf
from tests.helpers.models import ConvBN


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = ConvBN(1, 3)
        self.grouped = nn.Conv2d(3, 3, 3, padding=1, groups=3)
        self.head = nn.Linear(3 * 6 * 6, 4)

    def forward(self, x):
        x = torch.relu(self.grouped(torch.relu(self.block(x))))
        return self.head(x.flatten(1))


def grown(mode="gd", dendrites=2):
    torch.manual_seed(0)
    model = pf.perforate(Net(), pf.Config(mode=mode), blocks=[ConvBN])
    gen = torch.Generator().manual_seed(1)
    for layer in pf.dendritic_layers(model).values():
        layer.add_dendrites(dendrites, gen)
        layer.freeze_dendrites(mode == "pb")  # as the pb grower leaves them
        with torch.no_grad():
            layer.output_weight.normal_()
            if layer.cascade_weight is not None:
                layer.cascade_weight.normal_()
    # give batch-norm running stats non-default values
    model.train()
    model(torch.randn(8, 1, 6, 6))
    return model.eval()


@pytest.mark.parametrize("mode", ["gd", "pb"])
def test_save_load_gives_identical_outputs(tmp_path, mode):
    model = grown(mode)
    x = torch.randn(5, 1, 6, 6)
    path = tmp_path / "ckpt.pt"
    pf.save(model, path, history=[{"epoch": 0, "score": 1.0}])
    restored = pf.load(path, Net()).eval()
    assert torch.equal(restored(x), model(x))
    assert {n: l.num_dendrites for n, l in pf.dendritic_layers(restored).items()} == \
        {"block": 2, "grouped": 2, "head": 2}
    assert pf.read_checkpoint_meta(path)["history"] == [{"epoch": 0, "score": 1.0}]
    # the file is safetensors (an 8-byte header length then JSON), never a pickle
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8:8 + header_len])["__metadata__"]["perforate"]
    frozen = [p.requires_grad for p in pf.dendritic_layers(restored)["head"].dendrite_parameters()]
    assert frozen == [mode == "gd"] * len(frozen)


def test_load_errors_are_clear(tmp_path):
    model = grown()
    pf.save(model, tmp_path / "m.pt")
    with pytest.raises(pf.CheckpointError, match="lacks"):
        pf.load(tmp_path / "m.pt", nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(pf.CheckpointError, match="no checkpoint"):
        pf.load(tmp_path / "missing.pt", Net())
    (tmp_path / "junk.pt").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(pf.CheckpointError, match="not a perforate checkpoint"):
        pf.load(tmp_path / "junk.pt", Net())


def test_tied_weights_roundtrip(tmp_path):
    shared = nn.Linear(4, 4)
    model = pf.perforate(nn.Sequential(shared, nn.Tanh(), shared), pf.Config())
    model[0].add_dendrites(1, torch.Generator().manual_seed(0))
    pf.save(model, tmp_path / "tied.pt")
    restored = pf.load(tmp_path / "tied.pt", (lambda s: nn.Sequential(s, nn.Tanh(), s))(nn.Linear(4, 4)))
    x = torch.randn(2, 4)
    assert torch.equal(restored(x), model(x))


@pytest.mark.parametrize("mode", ["gd", "pb"])
def test_export_is_plain_and_matches(mode):
    model = grown(mode)
    x = torch.randn(7, 1, 6, 6)
    plain = pf.export(model).eval()
    assert not pf.dendritic_layers(plain)
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in plain.modules())
    torch.testing.assert_close(plain(x), model(x), atol=1e-5, rtol=1e-5)
    traced = torch.jit.trace(plain, x)
    torch.testing.assert_close(traced(x), model(x), atol=1e-5, rtol=1e-5)
    # layers without dendrites export to the original module
    bare = pf.export(pf.perforate(nn.Sequential(nn.Linear(3, 2)), pf.Config()))
    assert type(bare[0]) is nn.Linear


def test_count_parameters_and_flops():
    model = pf.perforate(nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 2)), pf.Config())
    x = torch.randn(4, 10)
    assert pf.count_parameters(model) == 10 * 8 + 8 + 8 * 2 + 2
    base_flops = pf.flops_per_sample(model, x)
    assert base_flops == 2 * (10 * 8 + 8 * 2)
    for layer in pf.dendritic_layers(model).values():
        layer.add_dendrites(1, torch.Generator().manual_seed(0))
    assert pf.flops_per_sample(model, x) == 2 * base_flops
    breakdown = pf.parameter_breakdown(model)
    assert breakdown["total"] == pf.count_parameters(model)
    assert breakdown["dendrite"] == (10 * 8 + 8 + 8) + (8 * 2 + 2 + 2)


def test_remaining_error_reduction():
    assert pf.remaining_error_reduction(90.0, 95.0) == pytest.approx(0.5)
    assert pf.remaining_error_reduction(90.0, 85.0) == pytest.approx(-0.5)
    assert pf.remaining_error_reduction(100.0, 99.0) == 0.0


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    import os
    import stat

    old = os.umask(umask)
    try:
        pf.save(nn.Linear(2, 2), tmp_path / "model.safetensors")  # safetensors alone writes 0600
        grower = pf.Grower(nn.Sequential(nn.Linear(2, 2)), pf.Config(plots=False),
                           lambda p: torch.optim.SGD(p, lr=0.1), out_dir=tmp_path / "run")
        grower.step(1.0)
        grower.finish()
    finally:
        os.umask(old)
    files = [tmp_path / "model.safetensors", *(tmp_path / "run").rglob("*.*")]
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: mode for f in files}
    assert {f.name for f in files} >= {"best.pt", "history.csv", "summary.json", "resume.safetensors"}


# ---------------------------------------------------------------------- damaged and hostile files
def _rewrite(path, edit_doc=None, edit_tensors=None, digest=True):
    """Rewrite a checkpoint with its JSON document and tensors edited, as a hostile or older
    writer would (with a digest that matches the edits, or none)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from perforate.checkpoint import DIGEST_KEY, DOC_KEY, _digest

    with safe_open(str(path), framework="pt") as f:
        doc = json.loads(f.metadata()[DOC_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    doc = edit_doc(doc) if edit_doc else doc
    tensors = edit_tensors(tensors) if edit_tensors else tensors
    text = json.dumps(doc)
    save_file(tensors, str(path), metadata={DOC_KEY: text, **({DIGEST_KEY: _digest(text, tensors)} if digest else {})})


def test_a_flipped_bit_in_tensor_data_is_reported_not_loaded(tmp_path):
    model = grown()
    path = tmp_path / "m.pt"
    pf.save(model, path)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x04  # inside the last tensor's data
    path.write_bytes(bytes(raw))
    with pytest.raises(pf.CheckpointError, match="corrupted.*digest"):
        pf.load(path, Net())


def test_files_without_a_digest_still_load(tmp_path, caplog):
    model = grown()
    pf.save(model, tmp_path / "old.pt")
    _rewrite(tmp_path / "old.pt", digest=False)  # as written before files carried a digest
    with caplog.at_level("INFO", logger="perforate"):
        restored = pf.load(tmp_path / "old.pt", Net()).eval()
    x = torch.randn(2, 1, 6, 6)
    assert torch.equal(restored(x), model(x)) and "no digest" in caplog.text


@pytest.mark.parametrize("field,value", [("num_dendrites", 3000), ("num_dendrites", 100_000),
                                         ("candidates", 10**7), ("num_dendrites", 3)])
def test_sizes_that_disagree_with_the_files_tensors_are_refused_before_allocating(
        tmp_path, monkeypatch, field, value):
    model = grown()
    pf.save(model, tmp_path / "m.pt")
    _rewrite(tmp_path / "m.pt", lambda d: {**d, "structure": {
        n: {**s, field: value} if n == "head" else s for n, s in d["structure"].items()}})
    asked = []
    monkeypatch.setattr(pf.DendriticLayer, "set_num_dendrites", lambda self, k: asked.append(k))
    with pytest.raises(pf.CheckpointError, match="'head'.*claims"):
        pf.load(tmp_path / "m.pt", Net())
    assert all(k <= 2 for k in asked)  # nothing sized from the claim


@pytest.mark.parametrize("edit", [
    lambda d: [],
    lambda d: {**d, "structure": None},
    lambda d: {**d, "structure": ["head"]},
    lambda d: {**d, "structure": {"head": 3}},
    lambda d: {**d, "structure": {"../../etc": {}}},
    lambda d: {**d, "aliases": {"x": "nope"}},
    lambda d: {**d, "aliases": []},
    *[lambda d, key=key, bad=bad: {**d, "structure": {n: {**s, key: bad} for n, s in d["structure"].items()}}
      for key, bad in [("num_dendrites", "2"), ("num_dendrites", -1), ("num_dendrites", 2.0),
                       ("candidates", None), ("activation", "swish"), ("activation", 3),
                       ("kind", "laser"), ("kind", []), ("neuron_axis", "1"), ("perforated", "no"),
                       ("init_scale", float("nan")), ("init_scale", -1), ("frozen", 1)]],
])
def test_metadata_of_the_wrong_json_type_raises_checkpoint_error(tmp_path, edit):
    pf.save(grown(), tmp_path / "m.pt")
    _rewrite(tmp_path / "m.pt", edit)
    with pytest.raises(pf.CheckpointError):
        pf.load(tmp_path / "m.pt", Net())


def test_damaged_resume_files_raise_checkpoint_errors(tmp_path):
    grower = pf.Grower(grown(), pf.Config(patience=1, plots=False),
                       lambda p: torch.optim.Adam(p, lr=1e-3), out_dir=tmp_path)
    for score in [0.1, 0.2]:
        grower.step(score)
    grower.flush()  # its files are written in the background
    state = tmp_path / "state" / "resume.safetensors"
    original = state.read_bytes()
    for edit in [lambda d: {**d, "best_file": "../../../m.pt"},
                 lambda d: {**d, "has_model": "yes"},
                 lambda d: {**d, "optim": {"__dict__": [["optimizer", {"__tensor__": "nope"}]]}},
                 lambda d: {**d, "optim": {"__list__": 3}},
                 lambda d: {**d, "config": {**d["config"], "mode": "bogus"}},
                 lambda d: {**d, "optimizer_params": [["0.main.weight"]]},
                 lambda d: {**d, "state": {**d["state"], "phase": "bogus"}}]:
        state.write_bytes(original)
        _rewrite(state, edit)
        with pytest.raises(pf.CheckpointError):
            pf.Grower.resume(tmp_path, Net(), lambda p: torch.optim.Adam(p, lr=1e-3))

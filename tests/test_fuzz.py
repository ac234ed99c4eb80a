"""Property tests: fuzzed configs and damaged or hostile files give typed errors, never raw ones.

Hypothesis runs derandomized (the same examples every run) with no example database. The fast
suite tries a few dozen examples per property; ``-m slow`` runs the same properties on
thousands (the figures in issue 11's closing note; ``-s`` prints the counts).
"""
import dataclasses
import json
from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import perforate as pf
from perforate.checkpoint import DIGEST_KEY, DOC_KEY, _digest
from perforate.config import RENAMED_VALUES
from perforate.errors import MAX_MESSAGE

COUNTS: Counter = Counter()
FIELDS = {f.name: f for f in dataclasses.fields(pf.Config)}
DEFAULTS = pf.Config().to_dict()
CHOICES = ["gd", "pb", "sigmoid", "tanh", "relu", "memory", "disk", "max", "min", "bogus", "", "*", "0.*"]


def _settings(examples):
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck), print_blob=False)


SCALARS = st.one_of(
    st.none(), st.booleans(), st.sampled_from(CHOICES), st.text(max_size=6),
    st.integers(-3, 40), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-2.0, 2.0), st.sampled_from([1e300, 2**45]))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                   st.dictionaries(st.text(max_size=4), SCALARS, max_size=2))


def _near(name):
    """Values of the field's own type, mostly valid: accepted configs come up often."""
    default = DEFAULTS.get(name)
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(-1, 40) | st.sampled_from([2**32 - 1, 2**32, 2**63 - 1, 2**63])
    if isinstance(default, float):
        return st.floats(-0.5, 2.0) | st.sampled_from([0.0, 0.999, 1e3, 1.5e3, 1e6, 1e7])
    if isinstance(default, str):
        return st.sampled_from(CHOICES)
    if isinstance(default, list):
        return st.lists(st.sampled_from(["*", "0", "2", "x.*"]), max_size=2) | st.sampled_from(["*", "0"])
    return st.dictionaries(st.sampled_from(["0", "*"]), st.integers(-2, 1), max_size=1)


CONFIGS = st.lists(st.sampled_from([*FIELDS, "patiense"]).flatmap(
    lambda name: st.tuples(st.just(name), st.one_of(_near(name), _near(name), _near(name), VALUES))),
    max_size=4).map(dict)


# ---------------------------------------------------------------------- configs
def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def check_config(data, tmp_path):
    """A mapping either becomes a config that survives its files and grows to finite outputs, or
    raises a short ConfigError naming a field it holds."""
    COUNTS["configs"] += 1
    try:
        cfg = pf.Config.from_dict(data)
    except pf.ConfigError as exc:
        message = str(exc)
        assert len(message) <= MAX_MESSAGE
        assert any(message.startswith(name) for name in data) or message.startswith("unknown config field")
        COUNTS["configs rejected"] += 1
        return
    for suffix in (".toml", ".yaml", ".json"):
        cfg.save(tmp_path / f"c{suffix}")
        assert pf.Config.load(tmp_path / f"c{suffix}") == cfg, suffix
    grow = cfg.replace(include=["*"], exclude=[], neuron_axis={})
    try:
        grower = pf.Grower(_tiny(), grow, lambda p: torch.optim.SGD(p, lr=0.1))
    except pf.WrapError as exc:  # restricted inputs are checked against each layer's own size
        assert str(exc).startswith("dendrite_inputs for layer") and "dendrite_inputs" in data
        COUNTS["configs that do not fit the model"] += 1
        return
    grower.add_dendrites()
    grower.model.train()
    out = grower.model(torch.randn(4, 3))
    out.sum().backward()
    assert torch.isfinite(out).all()


def check_assignment(name, value):
    """Setting a field either keeps a valid config or raises naming it and changes nothing."""
    COUNTS["assignments"] += 1
    cfg = pf.Config(mode="pb")
    before = cfg.to_dict()
    try:
        setattr(cfg, name, value)
    except pf.ConfigError as exc:
        assert str(exc).startswith(name) and cfg.to_dict() == before
        return
    cfg.validate()
    if isinstance(value, str) and value in RENAMED_VALUES.get(name, {}):
        value = RENAMED_VALUES[name][value]  # an old value reads back under its new name
    assert getattr(cfg, name) == ([value] if isinstance(value, str) and name in ("include", "exclude")
                                  else value) or value != value


@_settings(60)
@given(data=CONFIGS)
def test_fuzzed_configs(data, tmp_path):
    check_config(data, tmp_path)


@_settings(60)
@given(name=st.sampled_from(sorted(FIELDS)), value=VALUES | st.integers(0, 5))
def test_fuzzed_assignments(name, value):
    check_assignment(name, value)


# ---------------------------------------------------------------------- files
def _grown():
    torch.manual_seed(0)
    model = pf.perforate(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), pf.Config())
    for layer in pf.dendritic_layers(model).values():
        layer.add_dendrites(2, torch.Generator().manual_seed(1))
        with torch.no_grad():
            layer.output_weight.normal_()
    return model.eval()


def _base():
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A pf.save file and a resume folder (pb, saved in a dendrite phase, with 2 dendrites)."""
    folder = tmp_path_factory.mktemp("fuzz")
    model = _grown()
    pf.save(model, folder / "m.pt")
    cfg = pf.Config(mode="pb", candidate_training="online", smoothing=1, patience=1, candidates=2,
                    dendrite_max_epochs=3, plots=False)
    grower = pf.Grower(_grown(), cfg, _adam, out_dir=folder / "run")
    for score in [0.1, 0.1, 0.1]:
        grower.model.train()(torch.randn(4, 3)).pow(2).sum().backward()
        grower.optimizer.step()
        grower.step(score)
    assert grower.phase == "dendrite"
    grower.flush()
    return Saved(folder, model, (folder / "m.pt").read_bytes(),
                 (folder / "run" / "state" / "resume.safetensors").read_bytes())


@dataclasses.dataclass(repr=False)
class Saved:
    folder: object
    model: nn.Module
    raw_model: bytes
    raw_state: bytes

    def __repr__(self):
        return "<the saved files>"


def _adam(params):
    return torch.optim.Adam(params, lr=1e-2)


def _paths(doc, prefix=()):
    """Every path into a JSON document."""
    yield prefix
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


def _mutated(raw, choice, value, path):
    """``raw`` (a safetensors file) with one value of its JSON document replaced, re-digested
    (``path`` is scratch space)."""
    path.write_bytes(raw)
    with safe_open(str(path), framework="pt") as f:
        doc = json.loads(f.metadata()[DOC_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    paths = [p for p in _paths(doc) if p]
    where = paths[choice % len(paths)]
    target = doc
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    text = json.dumps(doc)
    save_file(tensors, str(path), metadata={DOC_KEY: text, DIGEST_KEY: _digest(text, tensors)})
    return path.read_bytes()


def _no_big_allocation(monkeypatch):
    """Fail the test if loading sizes anything from an unchecked claim (installed once a test)."""
    original = pf.DendriticLayer.set_num_dendrites
    if getattr(original, "guard", False):
        return

    def guarded(self, k):
        assert k <= 2, f"sized a layer to {k} dendrites from an unchecked claim"
        original(self, k)

    guarded.guard = True
    monkeypatch.setattr(pf.DendriticLayer, "set_num_dendrites", guarded)


def check_model_file(path, raw, model):
    """Loading ``raw`` gives the saved model or a CheckpointError, nothing else."""
    COUNTS["model files damaged"] += 1
    path.write_bytes(raw)
    try:
        loaded = pf.load(path, _base()).eval()
    except pf.CheckpointError as exc:
        assert len(str(exc)) <= MAX_MESSAGE
        return
    x = torch.randn(2, 3)
    with torch.no_grad():
        out = loaded(x)
    assert out.shape == model(x).shape
    COUNTS["model files still valid after a re-digested edit"] += 1


def check_resume_folder(folder, raw):
    """Resuming from ``raw`` continues (and steps) or raises CheckpointError, nothing else;
    returns True when it continued."""
    COUNTS["resume files damaged"] += 1
    (folder / "state" / "resume.safetensors").write_bytes(raw)
    try:
        grower = pf.Grower.resume(folder, _base(), _adam)
    except pf.CheckpointError as exc:
        assert len(str(exc)) <= MAX_MESSAGE
        return False
    grower.model.train()(torch.randn(4, 3)).pow(2).sum().backward()
    grower.optimizer.step()
    grower.step(0.1)
    grower.flush()  # its background write lands before the next example's file
    COUNTS["resume files still valid after a re-digested edit"] += 1
    return True


BYTE_EDITS = st.tuples(st.sampled_from(["flip", "truncate", "zero"]), st.integers(0, 2**40))
JSON_EDITS = st.tuples(st.integers(0, 2**20), st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=4))


def _byte_edit(raw, edit):
    kind, where = edit
    data = bytearray(raw)
    if kind == "flip":
        bit = where % (len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
    elif kind == "truncate":
        del data[where % len(data):]
    else:
        start = where % len(data)
        data[start:start + 8] = bytes(len(data[start:start + 8]))
    return bytes(data)


def check_byte_edit(saved, edit, tmp_path, monkeypatch):
    folder, model, raw_model, raw_state = saved.folder, saved.model, saved.raw_model, saved.raw_state
    _no_big_allocation(monkeypatch)
    damaged = _byte_edit(raw_model, edit)
    if damaged != raw_model:  # zeroing zeros leaves the file as it was
        with pytest.raises(pf.CheckpointError):
            pf.load(_write(tmp_path / "m.pt", damaged), _base())
        COUNTS["model files damaged"] += 1
    damaged = _byte_edit(raw_state, edit)
    if damaged != raw_state:
        assert not check_resume_folder(folder / "run", damaged)  # the digest sees every byte


def _write(path, raw):
    path.write_bytes(raw)
    return path


def check_json_edit(saved, edit, tmp_path, monkeypatch):
    folder, model, raw_model, raw_state = saved.folder, saved.model, saved.raw_model, saved.raw_state
    _no_big_allocation(monkeypatch)
    choice, value = edit
    scratch = tmp_path / "scratch.safetensors"
    check_model_file(tmp_path / "m.pt", _mutated(raw_model, choice, value, scratch), model)
    check_resume_folder(folder / "run", _mutated(raw_state, choice, value, scratch))


@_settings(40)
@given(edit=BYTE_EDITS)
def test_damaged_bytes(saved, edit, tmp_path, monkeypatch):
    check_byte_edit(saved, edit, tmp_path, monkeypatch)


@_settings(60)
@given(edit=JSON_EDITS)
def test_hostile_json(saved, edit, tmp_path, monkeypatch):
    check_json_edit(saved, edit, tmp_path, monkeypatch)


# ---------------------------------------------------------------------- the larger sweep
@pytest.mark.slow
def test_fuzz_sweep(saved, tmp_path, monkeypatch):
    """The same properties on thousands of examples; prints the figures."""
    COUNTS.clear()
    _settings(3000)(given(data=CONFIGS)(lambda data: check_config(data, tmp_path)))()
    _settings(3000)(given(name=st.sampled_from(sorted(FIELDS)), value=VALUES)(check_assignment))()
    _settings(1500)(given(edit=BYTE_EDITS)(lambda edit: check_byte_edit(saved, edit, tmp_path, monkeypatch)))()
    _settings(1500)(given(edit=JSON_EDITS)(lambda edit: check_json_edit(saved, edit, tmp_path, monkeypatch)))()
    print(dict(COUNTS))

"""Inputs a new user (or a damaged file) gives that used to slip through: non-finite scores,
hostile checkpoint and resume files, 0-dim inputs, and a run that ends at a plateau without a
budget."""
import copy
import json
import logging

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import perforate as pf
from perforate.checkpoint import DIGEST_KEY, DOC_KEY, _digest



def _adam(params):
    return torch.optim.Adam(params, lr=1e-2)


def _base():
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


# ---------------------------------------------------------------------- non-finite scores
@pytest.mark.parametrize("score_mode, score", [
    ("max", float("inf")), ("max", "inf"), ("max", "Infinity"), ("min", float("-inf")), ("min", "-inf")])
def test_a_score_no_later_one_could_beat_is_refused_before_it_counts(score_mode, score):
    cfg = pf.Config(score_mode=score_mode, patience=1, max_epochs=10)
    grower = pf.Grower(pf.perforate(_base(), cfg), cfg, _adam)
    grower.step(0.5)
    with pytest.raises(pf.GrowthError, match="which no later score could beat.*pass a finite number"):
        grower.step(score)
    assert len(grower.history) == 1 and grower.best_score == 0.5  # nothing was recorded
    grower.step(0.6 if score_mode == "max" else 0.4)
    assert grower.best_score == (0.6 if score_mode == "max" else 0.4)  # a real score still counts


def test_the_perforatedai_tracker_refuses_them_too(fresh):
    from perforate.compat.perforatedai import globals_perforatedai as GPA
    from perforate.compat.perforatedai import utils_perforatedai as UPA
    from perforate.compat.perforatedai.errors import CompatUsageError

    model = UPA.perforate_model(_base())
    GPA.pai_tracker.set_optimizer(torch.optim.Adam)
    GPA.pai_tracker.setup_optimizer(model, {"params": model.parameters(), "lr": 1e-2})
    with pytest.raises(CompatUsageError, match="add_validation_score is inf, which no later score could beat"):
        GPA.pai_tracker.add_validation_score("inf", model)
    assert GPA.pai_tracker.member_vars["accuracies"] == []


# ---------------------------------------------------------------------- hostile files
def _read(path):
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()[DOC_KEY]), {k: f.get_tensor(k) for k in f.keys()}


def _rewrite(path, doc, tensors):
    """Write ``doc`` and ``tensors`` to ``path`` with a valid digest (a deliberate edit)."""
    text = json.dumps(doc)
    save_file(tensors, str(path), metadata={DOC_KEY: text, DIGEST_KEY: _digest(text, tensors)})


def test_a_saved_layer_name_on_a_module_of_another_kind_is_a_checkpoint_error(tmp_path):
    model = pf.perforate(_base(), pf.Config())
    for layer in pf.dendritic_layers(model).values():
        layer.add_dendrites(2, torch.Generator().manual_seed(1))
    pf.save(model, tmp_path / "m.safetensors")
    doc, tensors = _read(tmp_path / "m.safetensors")
    # layer "0" renamed to "": the whole Sequential, which is not a Linear
    doc["structure"][""] = doc["structure"].pop("0")
    tensors = {(k[2:] if k.startswith("0.") else k): v for k, v in tensors.items()}
    _rewrite(tmp_path / "m.safetensors", doc, tensors)
    with pytest.raises(pf.CheckpointError, match=r"layer '' was saved as a linear layer, but this "
                                                 r"model has a Sequential there"):
        pf.load(tmp_path / "m.safetensors", _base())


@pytest.fixture
def resume_folder(tmp_path):
    grower = pf.Grower(pf.perforate(_base(), pf.Config()), pf.Config(), _adam, out_dir=tmp_path / "run")
    for score in [0.1, 0.2]:
        grower.model.train()(torch.randn(4, 3)).pow(2).sum().backward()
        grower.optimizer.step()
        grower.step(score)
    grower.flush()
    path = tmp_path / "run" / "state" / "resume.safetensors"
    doc, tensors = _read(path)
    return tmp_path / "run", path, doc, tensors


def _optimizer_state_pairs(doc):
    """The saved optimizer's ``state`` entries, ``[param id, its state]`` each."""
    optimizer = dict(doc["optim"]["__dict__"])["optimizer"]
    return dict(optimizer["__dict__"])["state"]["__dict__"]


@pytest.mark.parametrize("edit, message", [
    (lambda pairs: pairs.pop(0), "optimizer tensors .* that its optimizer state no longer refers to"),
    (lambda pairs: pairs[0][1]["__dict__"].pop(1), "no longer refers to"),
    (lambda pairs: pairs[0].__setitem__(0, 99), r"entries for parameters \[99\] that none of its groups lists"),
], ids=["a parameter's state cut out", "one tensor reference cut out", "state under an unknown id"])
def test_a_resume_state_that_lost_optimizer_state_is_a_checkpoint_error(resume_folder, edit, message):
    folder, path, doc, tensors = resume_folder
    assert pf.Grower.resume(folder, _base(), _adam).optimizer.state  # as written, it loads
    doc = copy.deepcopy(doc)
    edit(_optimizer_state_pairs(doc))
    _rewrite(path, doc, tensors)
    with pytest.raises(pf.CheckpointError, match=message):
        pf.Grower.resume(folder, _base(), _adam)


def test_a_resume_state_referring_to_a_missing_tensor_says_so(resume_folder):
    folder, path, doc, tensors = resume_folder
    name = _optimizer_state_pairs(doc)[0][1]["__dict__"][1][1]["__tensor__"]
    _rewrite(path, doc, {k: v for k, v in tensors.items() if k != f"optim/{name}"})
    with pytest.raises(pf.CheckpointError, match=f"refers to a tensor '{name}' that the file lacks"):
        pf.Grower.resume(folder, _base(), _adam)


# ---------------------------------------------------------------------- 0-dim inputs
@pytest.mark.parametrize("dendrites", [0, 1, 3])
@pytest.mark.parametrize("grad", [False, True])
def test_a_0_dim_input_gets_the_plain_layers_error(dendrites, grad):
    plain = nn.Linear(1, 4)
    x = torch.tensor(1.0, requires_grad=grad)
    with pytest.raises(RuntimeError) as expected:
        plain(x)
    model = pf.perforate(nn.Sequential(copy.deepcopy(plain)), pf.Config())
    if dendrites:
        pf.dendritic_layers(model)["0"].add_dendrites(dendrites, torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError) as got:
        model(x)
    assert str(got.value) == str(expected.value)


# ---------------------------------------------------------------------- the budget trap
def _run_to_plateau(cfg, caplog, epochs=12):
    grower = pf.Grower(pf.perforate(_base(), cfg), cfg, _adam, name="trap")
    with caplog.at_level(logging.WARNING, "perforate"):
        for epoch in range(epochs):
            if grower.step(0.5).done:
                break
    return grower, [r for r in caplog.records if r.name.startswith("perforate") and r.levelno == logging.WARNING]


def test_a_run_without_a_budget_that_ends_at_a_plateau_warns_once(caplog):
    grower, warned = _run_to_plateau(pf.Config(patience=2, max_dendrites=0), caplog)
    assert grower.done and grower.state.epoch < 12  # ended early, as documented
    assert len(warned) == 1
    assert warned[0].getMessage().startswith("[trap] no max_epochs: ended at a plateau at epoch ")
    assert "pass max_epochs=N" in warned[0].getMessage()


def test_a_run_with_a_budget_trains_on_without_the_warning(caplog):
    grower, warned = _run_to_plateau(pf.Config(patience=2, max_dendrites=0, max_epochs=12), caplog)
    assert grower.done and grower.state.epoch == 12 and not warned


@pytest.mark.parametrize("beta1", [1, 2**63 + 2])
def test_a_resume_state_whose_optimizer_options_cannot_step_is_refused(tmp_path, beta1):
    """Adam's beta1 = 1 divides by zero at the first step, a huge int overflows: both were
    accepted and failed later inside optimizer.step()."""
    from perforate.checkpoint import match_optimizer_state
    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    saved = opt.state_dict()
    saved["param_groups"][0]["betas"] = (beta1, 0.999)
    with pytest.raises(pf.CheckpointError, match="cannot take a step"):
        match_optimizer_state(saved, None, torch.optim.Adam(model.parameters(), lr=1e-2), model)

"""The grower's public state: state_dict / load_state_dict, the phase's trainable set and
optimizer groups, and the run writer."""
import copy
import csv
import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import perforate as pf
from perforate.grower import LR_SCALE_KEY
from perforate.writer import load_grower_state, save_grower_state

X = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
# gd: grow at 3, retry at 5, grow at 9, retry at 11, done at 13; pb: dendrite phases at 4-5,
# 10-11 and 14-15 (a retry), done at 17
SCORES = [0.3, 0.4, 0.4, 0.4, 0.4, 0.4, 0.5, 0.6] + [0.6] * 12
CONFIGS = {"gd": dict(mode="gd"),
           "pb": dict(mode="pb", candidate_training="online", candidates=2, dendrite_patience=5,
                      dendrite_max_epochs=2),
           "pb-cached": dict(mode="pb", candidates=2, candidate_steps=5)}


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def config(mode, **changes):
    return pf.Config(smoothing=1, patience=2, max_dendrites=2, max_growth_retries=1,
                     **CONFIGS[mode], **changes)


def adam(params):
    return torch.optim.Adam(params, lr=1e-2)


def epoch(grower, score):
    """Two optimizer steps, then the epoch's decision and the model's outputs."""
    model = grower.model.train()
    for _ in range(2):
        grower.optimizer.zero_grad()
        loss = model(X).pow(2).mean() + sum((p - 0.3).pow(2).sum() for p in model.parameters()) * 1e-2
        loss.backward()
        grower.optimizer.step()
    d = grower.step(score)
    with torch.no_grad():
        out = grower.model.eval()(X)
    return (d.event, d.phase, d.done), out


@pytest.mark.parametrize("mode,split", [("gd", 5), ("pb", 5), ("pb-cached", 4), ("pb-cached", 5)])
def test_state_dict_round_trip_continues_identically(mode, split):
    cfg = config(mode)
    a = pf.Grower(make_model(), cfg, adam)
    for score in SCORES[:split]:
        epoch(a, score)
    if mode == "pb":
        assert a.phase == "dendrite" and a.state.dendrite_epochs == 1  # mid dendrite phase
    if mode == "pb-cached":  # 4: before the cached epoch, 5: just after the join
        assert a.phase == ("dendrite" if split == 4 else "neuron")
    saved = copy.deepcopy(a.state_dict())
    snapshots = ("model", "optimizer", "scheduler", "best", "trial", "before")
    json.dumps({k: v for k, v in saved.items() if k not in snapshots})

    b = pf.Grower(make_model(seed=7), pf.Config.from_dict(saved["config"]), adam)  # other weights
    b.load_state_dict(saved)
    assert b.state == a.state and b.history == a.history and b.phase == a.phase
    for score in SCORES[split:]:
        (da, out_a), (db, out_b) = epoch(a, score), epoch(b, score)
        assert da == db
        assert torch.equal(out_a, out_b)
        if da[2]:
            break
    assert a.done and b.done and a.state.level >= 1


def test_load_state_dict_without_model_and_optimizer_keeps_the_live_ones():
    cfg = config("pb")
    a = pf.Grower(make_model(), cfg, adam)
    for score in SCORES[:5]:
        epoch(a, score)
    b = pf.Grower(copy.deepcopy(a.model), cfg, adam)  # as a framework would: its own copy
    b.load_state_dict(copy.deepcopy(a.state_dict(model=False, optimizer=False)))
    assert b.phase == "dendrite" and b.state == a.state
    trainable = {n for n, p in b.model.named_parameters() if p.requires_grad}
    assert trainable and all("candidate_pool" in n for n in trainable)
    with pytest.raises(pf.CheckpointError, match="state_dict"):
        b.load_state_dict({"state": {}})
    with pytest.raises(pf.CheckpointError, match="unknown fields"):
        pf.GrowerState.from_dict({"epoch": 1, "novel": 2})


def test_param_groups_fit_a_framework_optimizer_to_each_phase():
    cfg = config("pb", candidate_lr_scale=10.0)
    outside = nn.Parameter(torch.zeros(2))  # e.g. a head the grower does not manage
    grower = pf.Grower(make_model(), cfg, adam)
    grower.add_dendrites()
    assert grower.phase == "dendrite" and grower.lr_scale == 10.0
    user = torch.optim.SGD([*grower.model.parameters(), outside], lr=0.01)  # built the user's way
    user.param_groups[:] = grower.param_groups(user.param_groups)
    held = user.param_groups[0]["params"]
    pools = [p for layer in pf.dendritic_layers(grower.model).values()
             for p in layer.candidate_pool.parameters()]
    assert {id(p) for p in held} == {id(p) for p in pools} | {id(outside)}
    assert user.param_groups[0]["lr"] == pytest.approx(0.1)
    assert user.param_groups[0][LR_SCALE_KEY] == 10.0
    user.param_groups[:] = grower.param_groups(user.param_groups)  # twice: scaled once
    assert user.param_groups[0]["lr"] == pytest.approx(0.1)
    assert grower.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # the grower's own
    for score in [0.1, 0.1, 0.1]:  # dendrite_max_epochs=2: join
        grower.step(score)
    assert grower.phase == "neuron" and grower.lr_scale == cfg.growth_lr_scale == 0.3  # after growth
    # a group with the dendrite phase's options over the model's parameters now
    now = [*grower.model.parameters(), outside]
    groups = grower.param_groups([{**user.param_groups[0], "params": now}])
    assert groups[0]["lr"] == pytest.approx(0.01 * 0.3)
    layer = pf.dendritic_layers(grower.model)["0"]
    held = {id(p) for p in groups[0]["params"]}
    assert id(layer.output_weight) in held and id(layer.dendrite_weight) not in held
    assert layer.dendrites_frozen and not layer.dendrite_weight.requires_grad


def test_apply_trainable_keeps_the_users_frozen_parameters():
    model = pf.perforate(make_model(), config("pb"))
    model[0].main.bias.requires_grad_(False)
    grower = pf.Grower(model, config("pb"), adam)
    grower.add_dendrites()
    assert [n for n, p in model.named_parameters() if p.requires_grad] == \
        [n for n, p in model.named_parameters() if "candidate_pool" in n]
    grower.state.phase = "neuron"  # as after a join: the user's flags come back
    for layer in pf.dendritic_layers(model).values():
        layer.candidate_pool = None
    trainable = grower.apply_trainable()
    assert not model[0].main.bias.requires_grad and model[0].main.weight.requires_grad
    assert all(p.requires_grad for p in trainable)


def test_writer_keeps_one_best_file_per_version_and_resumes(tmp_path):
    cfg = config("gd", checkpoint_best="disk")
    grower = pf.Grower(make_model(), cfg, adam, out_dir=tmp_path)
    for score in SCORES[:2]:  # two improvements
        epoch(grower, score)
    assert grower.best_version == 2
    grower.flush()
    state = tmp_path / "state"
    assert sorted(p.name for p in state.glob("resume.best-*")) == ["resume.best-2.safetensors"]
    loaded = load_grower_state(state)
    assert loaded["state"] == grower.state.to_dict() and loaded["best_version"] == 2
    assert torch.equal(loaded["model"]["0.main.weight"], grower.model[0].main.weight)
    assert pf.load(tmp_path / "best.pt", make_model())  # "disk": best.pt follows every new best
    # a state without model and optimizer (a framework's checkpoint folder) round-trips too
    partial = grower.state_dict(model=False, optimizer=False)
    save_grower_state(tmp_path / "framework", partial, "perforate")
    partial = load_grower_state(tmp_path / "framework", "perforate")
    assert "model" not in partial and "optimizer" not in partial and partial["best"] is not None


def test_a_new_run_in_the_same_folder_writes_its_own_best(tmp_path):
    for seed in (0, 1):  # the second run reaches best_version 2 again, over the first's files
        grower = pf.Grower(make_model(seed), config("gd", checkpoint_every=2), adam, out_dir=tmp_path)
        for score in SCORES[:2]:
            epoch(grower, score)
        grower.flush()  # as a process ending: its last files are written
    saved = load_grower_state(tmp_path / "state")["best"]["state"]
    assert all(torch.equal(v, saved[k]) for k, v in grower.state_dict()["best"]["state"].items())


def test_plots_switched_off_write_everything_else(tmp_path, monkeypatch):
    import perforate.writer

    def no_drawing(*args, **kwargs):
        raise AssertionError("plots=False drew a graph")

    monkeypatch.setattr(perforate.writer, "plot_run", no_drawing)
    cfg = pf.Config(smoothing=1, patience=1, max_dendrites=1, max_growth_retries=1, plots=False)
    grower = pf.Grower(nn.Sequential(nn.Linear(4, 3)), cfg, lambda p: torch.optim.SGD(p, lr=0.1),
                       out_dir=tmp_path)
    for score in [0.5, 0.5, 0.5, 0.5]:
        grower.step(score)
    grower.finish()
    assert not (tmp_path / "growth.png").exists()
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [r["event"] for r in rows] == ["", "grow", "retry", "done"]
    assert json.loads((tmp_path / "summary.json").read_text())["done"] is True
    assert (tmp_path / "best.pt").is_file()


@pytest.mark.slow  # a fresh interpreter: about 2 s (importing torch)
def test_import_and_a_run_without_plots_never_load_matplotlib(tmp_path):
    script = f"""
import sys, torch
from torch import nn
import perforate as pf
imported_by_import = 'matplotlib' in sys.modules
cfg = pf.Config(smoothing=1, patience=1, max_dendrites=1, max_growth_retries=1, plots=False)
grower = pf.Grower(nn.Sequential(nn.Linear(4, 3)), cfg, lambda p: torch.optim.SGD(p, lr=0.1),
                   out_dir={str(tmp_path)!r})
for score in [0.5, 0.5, 0.5, 0.5]:
    grower.step(score)
grower.finish()
print(imported_by_import, 'matplotlib' in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]


def _rows(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.parametrize("dendrites", [2, 3])
def test_gd_resume_with_several_dendrites_per_layer_continues_bit_for_bit(tmp_path, dendrites):
    # growing one dendrite at a time once registered cascade_weight after output_weight while a
    # rebuilt layer registers it before, and the optimizer state was restored by position
    a = pf.Grower(make_model(), config("gd", plots=False), adam, out_dir=tmp_path)
    for _ in range(dendrites):
        a.add_dendrites()
    epoch(a, 0.5)
    a.flush()
    b = pf.Grower.resume(tmp_path, make_model(seed=3), adam)
    for score in SCORES[1:6]:
        (da, out_a), (db, out_b) = epoch(a, score), epoch(b, score)
        assert da == db and torch.equal(out_a, out_b)
    assert [n for n, _ in a.model.named_parameters()] == [n for n, _ in b.model.named_parameters()]


def test_a_resumed_run_logs_under_its_name(tmp_path, caplog):
    a = pf.Grower(make_model(), config("gd", plots=False), adam, out_dir=tmp_path, name="seed 0")
    for score in SCORES[:3]:
        epoch(a, score)
    a.flush()
    with caplog.at_level(logging.INFO, logger="perforate"):
        b = pf.Grower.resume(tmp_path, make_model(), adam, verbose=True, name="seed 0")
        epoch(b, SCORES[3])  # the growth at 3
    lines = [r.getMessage() for r in caplog.records if r.name == "perforate"]
    assert any(": grow: " in line for line in lines) and any(" params, " in line for line in lines)
    assert lines and all(line.startswith("[seed 0] epoch 3") for line in lines), lines


def test_resuming_removes_the_temporary_files_of_a_killed_writer_only(tmp_path):
    a = pf.Grower(make_model(), config("gd", plots=False), adam, out_dir=tmp_path)
    for score in SCORES[:2]:
        epoch(a, score)
    a.flush()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a writer that is gone (as after a SIGKILL)
    dead, alive = child.pid, os.getppid()
    stale = [tmp_path / f".best.{dead}.0a1b2c3d.tmp.pt",
             tmp_path / "state" / f".resume.{dead}.0a1b2c3d.tmp.safetensors",
             tmp_path / "state" / f".resume.best-2.{dead}.0a1b2c3d.tmp.safetensors"]
    kept = [tmp_path / "state" / f".resume.{alive}.0a1b2c3d.tmp.safetensors",  # still writing
            tmp_path / f".notes.{dead}.0a1b2c3d.tmp.txt"]  # not a file of the run
    for path in stale + kept:
        path.write_bytes(b"half a file")
    b = pf.Grower.resume(tmp_path, make_model(seed=3), adam)
    assert [p for p in stale + kept if p.exists()] == kept
    for score in SCORES[2:5]:
        (da, out_a), (db, out_b) = epoch(a, score), epoch(b, score)
        assert da == db and torch.equal(out_a, out_b)
    b.flush()
    assert load_grower_state(tmp_path / "state")["state"] == b.state.to_dict()


def test_a_run_resumed_inside_a_growth_cycle_rolls_back_to_the_same_model(tmp_path):
    # a budget: the growth at 3 fails at 5 and training goes on from the model of epoch 3,
    # which a resumed run must read from the state folder
    cfg = config("gd", max_epochs=12, plots=False).replace(max_growth_retries=0)
    a = pf.Grower(make_model(), cfg, adam, out_dir=tmp_path)
    for score in SCORES[:5]:
        epoch(a, score)
    a.flush()
    assert a.state.cycle == "growth" and (tmp_path / "state" / "resume.before.safetensors").is_file()
    b = pf.Grower.resume(tmp_path, make_model(seed=3), adam)
    for score in SCORES[5:12]:
        (da, out_a), (db, out_b) = epoch(a, score), epoch(b, score)
        assert da == db and torch.equal(out_a, out_b)
    assert [d["event"] for d in b.state.decisions][:2] == ["grow", "continue"]


def test_optimizer_state_follows_parameters_by_name_not_position():
    a = pf.Grower(make_model(), config("gd"), adam)
    a.add_dendrites(), a.add_dendrites()
    epoch(a, 0.5)
    saved = copy.deepcopy(a.state_dict())
    # the same state listed in another parameter order (as older layers registered them)
    order = list(reversed(range(len(saved["optimizer_params"][0]))))
    saved["optimizer_params"][0] = [saved["optimizer_params"][0][i] for i in order]
    group = saved["optimizer"]["param_groups"][0]
    group["params"] = [group["params"][i] for i in order]
    b = pf.Grower(make_model(), config("gd"), adam)
    b.load_state_dict(saved)
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(a.optimizer.state[p]["exp_avg"], b.optimizer.state[q]["exp_avg"]), name
    # a state whose tensors do not fit the parameters is reported, not loaded
    first = saved["optimizer"]["param_groups"][0]["params"][0]
    saved["optimizer"]["state"][first]["exp_avg"] = torch.zeros(99)
    with pytest.raises(pf.CheckpointError, match="does not fit the parameter"):
        pf.Grower(make_model(), config("gd"), adam).load_state_dict(saved)


def test_pb_resume_after_a_retry_writes_the_same_history():
    # after a retry's rollback the params column kept the grown model's count
    a = pf.Grower(make_model(), config("pb"), adam)
    for score in SCORES[:14]:  # the retry comes at epoch 13
        epoch(a, score)
    assert a.history[-1]["event"] == "retry"
    b = pf.Grower(make_model(seed=7), config("pb"), adam)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for score in SCORES[14:]:
        if epoch(a, score)[0][2] | epoch(b, score)[0][2]:
            break
    assert _rows(a.history) == _rows(b.history)
    assert a.history[14]["params"] == pf.count_parameters(a.model)


def test_a_model_saved_in_a_dendrite_phase_grows_again_after_loading(tmp_path):
    a = pf.Grower(make_model(), config("pb"), adam)
    for score in SCORES[:5]:
        epoch(a, score)
    assert a.phase == "dendrite"
    pf.save(a.model, tmp_path / "mid.pt")
    model = pf.load(tmp_path / "mid.pt", make_model())
    b = pf.Grower(model, config("pb"), adam)
    assert all(layer.candidate_pool is None for layer in pf.dendritic_layers(b.model).values())
    held = {id(p) for g in b.optimizer.param_groups for p in g["params"]}
    assert held == {id(p) for p in b.model.parameters()}  # no stale candidates train
    events = [epoch(b, score)[0][0] for score in SCORES]
    assert events.count("join") >= 2 and b.done and b.state.level >= 1


def test_extra_scores_must_not_overwrite_history_columns():
    grower = pf.Grower(make_model(), config("gd"), adam)
    for name in ("epoch", "score", "params", "event", "corr/0"):
        with pytest.raises(pf.GrowthError, match=f"'{name}', which is a history column"):
            grower.step(0.5, **{name: 99.0})
    with pytest.raises(pf.GrowthError, match="numbers as extra scores"):
        grower.step(0.5, val_loss="low")
    assert grower.history == [] and grower.state.epoch == 0
    grower.step(0.5, train_acc=0.7)
    assert grower.history[0]["epoch"] == 0 and grower.history[0]["train_acc"] == 0.7


@pytest.mark.parametrize("where,value,message", [
    (("state", "phase"), "bogus", "phase must be one of"),
    (("state", "epoch"), "3", "epoch must be an integer"),
    (("state", "level"), -1, "level must be >= 0"),
    (("state", "best_score"), [1], "best_score must be"),
    (("state", "switch_epochs"), {"a": 1}, "switch_epochs must be a list"),
    (("state",), [], "must be a mapping|state is"),
    (("history",), {"epoch": 1}, "history is"),
    (("history",), [["epoch", 1]], "history is"),
    (("best_version",), "2", "best_version is"),
    (("best",), {"structure": {}}, "best is"),
    (("structure",), None, "structure is"),
    (("format",), "perforate-grower/0", "not a grower state"),
])
def test_damaged_grower_states_raise_checkpoint_errors(where, value, message):
    a = pf.Grower(make_model(), config("pb"), adam)
    for score in SCORES[:5]:
        epoch(a, score)
    saved = copy.deepcopy(a.state_dict())
    target = saved
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    with pytest.raises(pf.CheckpointError, match=message):
        pf.Grower(make_model(), config("pb"), adam).load_state_dict(saved)


def test_a_dendrite_phase_state_without_pools_is_refused():
    a = pf.Grower(make_model(), config("pb"), adam)
    for score in SCORES[:5]:
        epoch(a, score)
    b = pf.Grower(make_model(), config("pb"), adam)  # no pools, and no model part to bring them
    with pytest.raises(pf.CheckpointError, match="no candidate pools"):
        b.load_state_dict(a.state_dict(model=False, optimizer=False))

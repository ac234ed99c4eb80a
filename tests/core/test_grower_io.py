"""Grower state files: a state written before the renames of GrowerState's fields still loads."""
import copy

import pytest
import torch
from torch import nn

import perforate as pf

# Grower.state_dict()["state"] as perforate 8a9a917 (before the renames) wrote it: pb, cached
# candidates, patience 2, dendrite_max_epochs 3; a joined dendrite on trial since epoch 6
OLD_STATE = {
    "epoch": 12, "phase": "neuron", "best_score": 0.6, "best_epoch": 1, "best_smoothed": 0.6,
    "cycle": "growth", "cycle_from": 0.6, "cycle_best": 0.63, "stale": 1, "window": [0.63, 0.64, 0.6],
    "train_window": [0.64, 0.65, 0.61], "train_trace": [0.6266666666666666, 0.64, 0.6333333333333333],
    "trial_score": 0.64, "trial_epoch": 10, "level": 1, "best_level": 0, "failures": 0, "attempts": 1,
    "dendrite_epochs": 1, "dendrite_stale": 0, "dendrite_best": None, "last_dendrite_epochs": 1,
    "done": False,
    "decisions": [
        {"epoch": 5, "event": "dendrite_start", "reason": "no improvement on 0.6 (smoothed) for 2 epochs: "
         "grow (training 0.61 vs validation 0.6: gap 0.02, training +0.0% over 2 epochs; "
         "capacity-limited); candidates for dendrite 1 train while the rest of the model is frozen"},
        {"epoch": 6, "event": "join", "reason": "candidates trained on the cached epoch (20 full-batch "
         "steps (flat layers) or 100 steps at most), scored on the whole epoch: joined dendrite 1 "
         "(candidates' |correlation| 0 0.528, 2 0.533)"}],
    "switch_epochs": [5, 6],
    "best_by_level": {"0": {"score": 0.6, "epoch": 1, "params": 26},
                      "1": {"score": 0.64, "epoch": 10, "params": 58}},
    "correlations": [{"epoch": 6, "level": 1, "layers": {
        "0": {"score": 0.15979652106761932, "correlation": 0.5284929871559143, "joined": True},
        "2": {"score": 0.04336700588464737, "correlation": 0.53307044506073, "joined": True}}}],
    "weak_layers": [],
    "trainable_flags": {"0.main.weight": True, "0.main.bias": True, "2.main.weight": True,
                        "2.main.bias": True},
}
RENAMED = {"level": "dendrites", "best_level": "best_dendrites", "attempts": "seed_draws",
           "best_by_level": "best_by_dendrites"}


def test_a_state_written_before_the_renames_loads_under_the_new_names():
    state = pf.GrowerState.from_dict(copy.deepcopy(OLD_STATE))
    assert (state.dendrites, state.best_dendrites, state.seed_draws) == (1, 0, 1)
    assert state.best_by_dendrites == OLD_STATE["best_by_level"]
    assert state.plateau.window == [0.63, 0.64, 0.6] and state.plateau.best == 0.63
    assert state.plateau.stale == 1 and state.dendrite.epochs == state.dendrite.last_epochs == 1
    # the old names still read (and write) the same fields
    assert (state.level, state.best_level, state.attempts, state.cycle_best) == (1, 0, 1, 0.63)
    new = {RENAMED.get(k, k): v for k, v in OLD_STATE.items()}
    assert state.to_dict() == new  # and files are written under the new names
    assert pf.GrowerState.from_dict(new) == state


def test_a_state_with_an_old_and_a_new_name_of_one_field_is_refused():
    with pytest.raises(pf.CheckpointError, match="level is the old name of dendrites"):
        pf.GrowerState.from_dict({**OLD_STATE, "dendrites": 1})
    with pytest.raises(pf.CheckpointError, match="attempts must be >= 0"):  # named as in the file
        pf.GrowerState.from_dict({**OLD_STATE, "attempts": -1})


def test_a_grower_resumes_from_a_state_saved_before_the_renames():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    config = pf.Config(mode="pb", patience=2, seed=0, max_epochs=40, dendrite_max_epochs=3)
    grower = pf.Grower(model, config, lambda p: torch.optim.SGD(p, lr=0.1))
    grower.add_dendrites()
    for _ in range(2):  # the dendrite phase, then the join: a model with one dendrite generation
        grower.step(0.6)
    assert grower.state.dendrites == 1 and grower.phase == "neuron"
    saved = grower.state_dict()
    saved["state"] = copy.deepcopy(OLD_STATE)
    saved["history"] = [{**row, "epoch": e} for e, row in enumerate(saved["history"] * 6)]
    resumed = pf.Grower(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), config,
                        lambda p: torch.optim.SGD(p, lr=0.1))
    resumed.load_state_dict(saved)
    assert resumed.state.epoch == 12 and resumed.state.dendrites == 1 and resumed.state.cycle == "growth"
    decision = resumed.step(0.6)  # the trial's plateau: it paid, the grown model is kept
    assert decision.reason.startswith("growth paid: smoothed 0.63 > 0.6 before it, best 0.64")
    assert decision.event == "dendrite_start" and resumed.state.best_dendrites == 1
    assert resumed.state.best_score == 0.64 and resumed.state.best_epoch == 10

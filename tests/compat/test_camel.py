"""The oldest, camelCase API (pb_globals / pb_utils) on the same tracker and settings."""
import torch
from torch.optim.lr_scheduler import StepLR

from perforate.compat.perforatedai import globals_perforatedai as GPA
from perforate.compat.perforatedai import pb_globals as PBG
from perforate.compat.perforatedai import pb_utils as PBU
from perforate.compat.perforatedai.camel import snake

from tests.helpers.compat import X, mlp, train_epoch


def test_names_translate_to_the_3x_names():
    assert [snake(n) for n in ("nEpochsToSwitch", "addValidationScore", "memberVars", "findBestLR",
                               "moduleIDsToTrack", "retainAllPB", "dType")] == [
        "n_epochs_to_switch", "add_validation_score", "member_vars", "find_best_lr",
        "module_ids_to_track", "retain_all_dendrites", "d_type"]


def test_a_camelcase_script_grows_completes_and_saves(fresh):
    PBG.testingDendriteCapacity = False
    PBG.switchMode = PBG.doingHistory
    PBG.nEpochsToSwitch = 2
    PBG.maxDendrites = 1
    model = PBU.initializePB(mlp())
    PBG.pbTracker.setOptimizer(torch.optim.Adam)
    PBG.pbTracker.setScheduler(StepLR)
    optimizer, scheduler = PBG.pbTracker.setupOptimizer(model, {"params": model.parameters(), "lr": 1e-2},
                                                        {"step_size": 1})
    seen = []
    for score in [50, 60, 60, 60, 61, 61, 61, 61]:
        train_epoch(model, optimizer)
        PBG.pbTracker.addExtraScore(score - 5, "train")
        model, restructured, complete = PBG.pbTracker.addValidationScore(score, model)
        seen.append((restructured, complete))
        if restructured:
            optimizer, scheduler = PBG.pbTracker.setupOptimizer(
                model, {"params": model.parameters(), "lr": 1e-2}, {"step_size": 1})
        if complete:
            break
    assert seen[3] == (1, False) and seen[-1] == (True, True)
    assert PBG.pbTracker.memberVars["num_dendrites_added"] == 1  # 61 beat 60: the dendrite stays
    assert GPA.pai_tracker.member_vars["extra_scores"]["train"][:2] == [45, 55]
    PBU.saveSystem(model, "PB", "final")
    loaded = PBU.loadSystem(mlp(), "PB", "final", True)
    model.eval(), loaded.eval()
    assert torch.equal(model(X), loaded(X)) and PBU.countParams(loaded) == PBU.countParams(model)
    assert (fresh / "PB" / "PBScores.csv").exists()

"""GPA.pai_tracker: decisions, return values, optimizer and LR schedule rebuilds, switch modes, files."""
import csv
import logging

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import StepLR

import perforate as pf
from perforate.compat.perforatedai import globals_perforatedai as GPA
from perforate.compat.perforatedai import utils_perforatedai as UPA
from perforate.compat.perforatedai.errors import CompatUsageError

from tests.helpers.compat import X, feed, mlp, train_epoch

PLATEAU = [50, 60, 61, 61, 61, 61, 61, 61, 61, 61, 61, 61]


def adam_setup(model):
    return GPA.pai_tracker.setup_optimizer(model, {"params": model.parameters(), "lr": 1e-2})


def start(convert=UPA.perforate_model, **settings):
    for name, value in settings.items():
        getattr(GPA.pc, f"set_{name}")(value)
    model = convert(mlp())
    GPA.pai_tracker.set_optimizer(torch.optim.Adam)
    return model


def test_history_mode_decides_as_the_reference(fresh):
    # the scores, settings and expected returns were run through perforatedai 3.2.9 (find_best_lr off)
    model = start(n_epochs_to_switch=2)
    optimizer, _ = adam_setup(model)
    scores = [50, 60, 61, 61, 61, 62, 62, 62, 62, 62, 62, 62, 62, 62, 62]
    model, seen, optimizer = feed(model, scores, optimizer, rebuild=lambda m: adam_setup(m)[0])
    # grow at 4; 62 beats 61; grow at 7; no gain at 2 dendrites -> retry at 10 -> complete at 13
    assert [r for r, _ in seen] == [0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, True]
    assert seen[-1] == (True, True) and type(seen[4][0]) is int
    mv = GPA.pai_tracker.member_vars
    assert mv["num_dendrites_added"] == 1 and mv["switch_epochs"] == [4, 7, 10]
    assert mv["global_best_validation_score"] == 62 and mv["mode"] == "n"
    assert mv["accuracies"] == scores[:14] and mv["num_dendrite_tries"] == 1
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == trainable


def test_max_dendrite_tries_counts_the_first_attempt(fresh):
    model = start(n_epochs_to_switch=2, max_dendrite_tries=1)
    adam_setup(model)
    _, seen, _ = feed(model, [50, 60, 60, 60, 60, 60, 60], rebuild=lambda m: adam_setup(m)[0])
    assert [r for r, _ in seen] == [0, 0, 0, 1, 0, 0, True]  # as 3.2.9: grows once, no retry
    assert GPA.pai_tracker.num_dendrites_added == 0


def test_improvement_threshold_schedule_follows_the_dendrite_count(fresh):
    model = start(n_epochs_to_switch=2, improvement_threshold=[0.5, 0.001])
    adam_setup(model)
    # before growth a 1% gain is no improvement (threshold 50%); after it, it is (0.1%); as 3.2.9
    _, seen, _ = feed(model, [50, 51, 51, 52, 53, 54, 55], rebuild=lambda m: adam_setup(m)[0])
    assert [r for r, _ in seen] == [0, 0, 0, 1, 0, 0, 0]
    assert GPA.pai_tracker.grower.config.improvement_threshold == 0.001


def test_setup_optimizer_returns_what_each_generation_returns(fresh):
    model = start(convert=UPA.initialize_pai)
    assert isinstance(adam_setup(model), torch.optim.Adam)  # 3.0: no scheduler -> optimizer only
    GPA.pai_tracker.set_scheduler(StepLR)
    optimizer, scheduler = GPA.pai_tracker.setup_optimizer(model, {"params": model.parameters()},
                                                           {"step_size": 1})
    assert isinstance(scheduler, StepLR) and scheduler.optimizer is optimizer
    GPA.reset()
    GPA.pc.set_testing_dendrite_capacity(False)
    model = start()
    optimizer, scheduler = adam_setup(model)  # 3.2: always a pair
    assert isinstance(optimizer, torch.optim.Adam) and scheduler is None


def test_the_tracker_steps_the_schedule_replays_it_mid_cycle_and_restarts_it_after_a_restructure(fresh):
    model = start(n_epochs_to_switch=2)
    GPA.pai_tracker.set_scheduler(StepLR)
    args = ({"params": model.parameters(), "lr": 1.0}, {"step_size": 1, "gamma": 0.5})
    optimizer, _ = GPA.pai_tracker.setup_optimizer(model, *args)
    feed(model, [50, 60, 61], optimizer)
    assert optimizer.param_groups[0]["lr"] == 0.125
    optimizer, _ = GPA.pai_tracker.setup_optimizer(model, *args)  # e.g. after load_system
    assert optimizer.param_groups[0]["lr"] == 0.125
    model, seen, _ = feed(model, [61, 61], optimizer)
    assert seen[-1] == (1, False)
    optimizer, _ = GPA.pai_tracker.setup_optimizer(model, *args)
    assert optimizer.param_groups[0]["lr"] == 1.0  # as the reference with find_best_lr off
    GPA.pai_tracker.set_scheduler(torch.optim.lr_scheduler.ReduceLROnPlateau)
    optimizer, _ = GPA.pai_tracker.setup_optimizer(model, args[0], {"mode": "max", "patience": 0})
    feed(model, [40, 30], optimizer)  # stepped with the scores: 30 after 40 cuts the LR once
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_param_vals_by_total_epoch_continues_the_schedule(fresh):
    model = start(n_epochs_to_switch=2, param_vals_setting=GPA.pc.PARAM_VALS_BY_TOTAL_EPOCH)
    GPA.pai_tracker.set_scheduler(StepLR)
    args = ({"params": model.parameters(), "lr": 1.0}, {"step_size": 1, "gamma": 0.5})
    optimizer, _ = GPA.pai_tracker.setup_optimizer(model, *args)
    model, seen, _ = feed(model, [50, 60, 60, 60], optimizer)
    assert seen[-1] == (1, False)
    optimizer, _ = GPA.pai_tracker.setup_optimizer(model, *args)
    assert optimizer.param_groups[0]["lr"] == 0.5 ** 4


def test_an_optimizer_instance_is_used_and_a_missing_rebuild_is_flagged(fresh, caplog):
    model = UPA.perforate_model(mlp())
    GPA.pc.set_n_epochs_to_switch(2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    GPA.pai_tracker.set_optimizer_instance(sgd)
    assert GPA.pai_tracker.member_vars["optimizer_instance"] is sgd
    with caplog.at_level(logging.WARNING, "perforate"):
        model, seen, _ = feed(model, [50, 60, 60, 60, 60], sgd)
    assert seen[3] == (1, False)
    assert "no optimizer was set up since" in caplog.text
    fresh_sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    GPA.pai_tracker.set_optimizer_instance(fresh_sgd)
    assert GPA.pai_tracker.grower.optimizer is fresh_sgd


def test_the_default_capacity_test_adds_three_dendrites_then_completes(fresh, caplog):
    GPA.pc.set_testing_dendrite_capacity(True)
    model = start()
    adam_setup(model)
    with caplog.at_level(logging.WARNING, "perforate"):
        model, seen, _ = feed(model, [50] * 5, rebuild=lambda m: adam_setup(m)[0])
    assert seen == [(1, False), (1, False), (1, False), (False, True)]  # as 3.2.9 does
    assert GPA.pai_tracker.num_dendrites_added == 3
    assert "set_testing_dendrite_capacity(False)" in caplog.text


@pytest.mark.parametrize("mode, expected, dendrites", [  # what perforatedai 3.2.9 returns
    ("DOING_FIXED_SWITCH", [0, 0, 1, 0, 0, 1, 0, 0, True], 0),  # grow, retry, complete
    ("DOING_NO_SWITCH", [0] * 10, 0),
    ("DOING_SWITCH_EVERY_TIME", [1, 1, 1, True], 1),  # grow, grow (max 2), retry, complete
])
def test_switch_modes_decide_as_the_reference(fresh, mode, expected, dendrites):
    model = start(switch_mode=getattr(GPA.pc, mode), fixed_switch_num=3, max_dendrites=2)
    adam_setup(model)
    _, seen, _ = feed(model, [50] + [60] * 9, rebuild=lambda m: adam_setup(m)[0])
    assert [r for r, _ in seen] == expected
    assert GPA.pai_tracker.num_dendrites_added == dendrites


def test_force_switch_and_doing_pai_false(fresh):
    model = start()
    adam_setup(model)
    model, restructured, _ = GPA.pai_tracker.add_validation_score(50, model, force_switch=True)
    assert restructured == 1 and GPA.pai_tracker.num_dendrites_added == 1
    GPA.reset()
    GPA.pc.set_n_epochs_to_switch(2)
    model = UPA.perforate_model(mlp(), doing_pai=False)  # the baseline: plateau ends it
    _, seen, _ = feed(model, [50, 60, 60, 60])
    assert seen[-1] == (True, True) and GPA.pai_tracker.num_dendrites_added == 0


def test_perforated_backpropagation_runs_perforates_pb_mode(fresh):
    model = start(n_epochs_to_switch=2, perforated_backpropagation=True, p_epochs_to_switch=1,
                  cap_at_n=True)
    optimizer, _ = adam_setup(model)
    assert GPA.pai_tracker.grower.config.mode == "pb"
    assert GPA.pai_tracker.grower.config.dendrite_patience == 1
    modes, dendrites = [], []
    for score in [50, 60, 60, 60, 60, 60, 60, 60]:
        train_epoch(model, optimizer)
        model, restructured, _ = GPA.pai_tracker.add_validation_score(score, model)
        modes.append(GPA.pai_tracker.member_vars["mode"])
        dendrites.append(GPA.pai_tracker.num_dendrites_added)
        if restructured:
            optimizer, _ = adam_setup(model)
    # a dendrite phase capped at the first neuron phase's 4 epochs (cap_at_n), then joined
    assert modes == ["n", "n", "n", "p", "p", "p", "p", "n"]
    assert dendrites == [0] * 7 + [1] and GPA.pai_tracker.member_vars["switch_epochs"] == [3, 7]


def test_scores_reach_the_csvs_and_the_graph(fresh):
    model = start(convert=UPA.initialize_pai, n_epochs_to_switch=2, drawing_pai=True)
    adam_setup(model)
    for epoch, score in enumerate([50, 60, 60, 60]):
        GPA.pai_tracker.add_extra_score(torch.tensor(70.0 + epoch), "train")
        GPA.pai_tracker.add_test_score(40 + epoch, "test")
        GPA.pai_tracker.add_extra_score_without_graphing(0.5, "loss")
        model, restructured, _ = GPA.pai_tracker.add_validation_score(score, model)
        if restructured:
            adam_setup(model)
    folder = fresh / "PAI"
    with open(folder / "PAIScores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["train"] for r in rows] == ["70.0", "71.0", "72.0", "73.0"]
    assert rows[0]["loss"] == "0.5" and "loss" not in GPA.pai_tracker.grower.history[0]
    with open(folder / "PAIbest_test_scores.csv") as f:
        best = list(csv.DictReader(f))
    assert best[0]["Max Valid Scores"] == "60.0" and best[0]["Max Test Scores"] == "41.0"
    assert (folder / "PAI.png").stat().st_size > 10_000
    assert pf.read_checkpoint_meta(folder / "best_model.pt")["structure"]


def test_load_system_from_latest_continues_the_run_as_if_uninterrupted(fresh):
    scores = [50, 60, 61, 61, 61, 62, 62, 62, 62, 62, 62, 62, 62, 62, 62]
    model = start(n_epochs_to_switch=2)
    adam_setup(model)
    model, before, _ = feed(model, scores[:6], rebuild=lambda m: adam_setup(m)[0])
    raw = (fresh / "PAI" / "latest.pt").read_bytes()
    assert raw[8:9] == b"{"  # safetensors: 8-byte header length, then JSON; no pickle
    model.eval()
    expected = model(X)

    GPA.reset()  # a new process: same script, then load_system(..., 'latest', True)
    model = start(n_epochs_to_switch=2, testing_dendrite_capacity=False, drawing_pai=False)
    model = UPA.load_system(model, "PAI", "latest", True)
    adam_setup(model)
    model.eval()
    assert torch.equal(model(X), expected)
    model, after, _ = feed(model, scores[6:], rebuild=lambda m: adam_setup(m)[0])
    assert [r for r, _ in before + after] == [0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, True]
    mv = GPA.pai_tracker.member_vars
    assert mv["switch_epochs"] == [4, 7, 10] and mv["total_epochs_run"] == 14


def test_save_system_then_load_system_into_a_fresh_model(fresh):
    model = start(n_epochs_to_switch=2)
    adam_setup(model)
    model, _, _ = feed(model, [50, 60, 60, 60], rebuild=lambda m: adam_setup(m)[0])
    UPA.save_system(model, "PAI", "mine")
    other = UPA.load_system(mlp(), "PAI", "mine")  # not the tracked model: weights only
    model.eval(), other.eval()
    assert torch.equal(model(X), other(X)) and UPA.count_params(other) == pf.count_parameters(model)
    assert GPA.pai_tracker.model is model


def test_misuse_gets_typed_errors_that_say_what_to_do(fresh):
    with pytest.raises(CompatUsageError, match="UPA.initialize_pai"):
        GPA.pai_tracker.set_optimizer(torch.optim.Adam)
    model = start()
    with pytest.raises(CompatUsageError, match="optimizer class"):
        GPA.pai_tracker.set_optimizer(torch.optim.Adam(model.parameters()))
    with pytest.raises(CompatUsageError, match=r"net.module"):
        GPA.pai_tracker.add_validation_score(1.0, nn.DataParallel(model))
    with pytest.raises(CompatUsageError, match="different model"):
        GPA.pai_tracker.add_validation_score(1.0, mlp())
    with pytest.raises(CompatUsageError, match="needs a number"):
        GPA.pai_tracker.add_validation_score("high", model)

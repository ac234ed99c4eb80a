"""The growth policy on plain score lists: no model, no optimizer (perforate.policy, .plateau)."""
import dataclasses

import pytest
import torch
from torch import nn

import perforate as pf
from perforate import policy
from perforate.experiments.harness.stopper import EarlyStopper
from perforate.grower_state import DendritePhase, GrowerState
from perforate.plateau import Plateau

NOTE = "no improvement on 0.6 for 3 epochs"


def cfg(**fields) -> pf.Config:
    return pf.Config(**{"mode": "gd", "patience": 3, "smoothing": 1, **fields})


def plateau_epoch(scores, config) -> int | None:
    """The first epoch at which ``scores`` reach a plateau under ``config`` (None: never)."""
    plateau = Plateau()
    for epoch, score in enumerate(scores):
        plateau.update(score, config.smoothing, config.better)
        if policy.at_plateau(plateau, config):
            return epoch
    return None


def at_plateau(scores, config, **state) -> GrowerState:
    """The grower's numbers after ``scores`` of an accepted model, at the plateau they reach."""
    s = GrowerState(**state)
    for epoch, score in enumerate(scores):
        s.epoch = epoch
        if config.better(score, s.best_score):
            s.best_score, s.best_epoch = score, epoch
        if s.plateau.update(score, config.smoothing, config.better):
            s.best_smoothed = s.cycle_best
    assert policy.at_plateau(s.plateau, config)
    return s


def test_the_plateau_counts_epochs_without_a_smoothed_gain():
    plateau, config = Plateau(), cfg(smoothing=2, patience=2)
    gains = [plateau.update(x, config.smoothing, config.better) for x in [0.5, 0.7, 0.6, 0.6, 0.6]]
    assert gains == [True, True, True, False, False]  # means 0.5, 0.6, 0.65, then 0.6 twice
    assert plateau.best == pytest.approx(0.65) and plateau.stale == 2 and plateau.window == [0.6, 0.6]
    assert policy.at_plateau(plateau, config) and not policy.at_plateau(plateau, cfg(patience=3))
    again = Plateau()
    again.load_state_dict(plateau.state_dict())
    assert again == plateau
    plateau.reset(0.65)
    assert plateau.state_dict() == {"window": [], "best": 0.65, "stale": 0}
    assert plateau_epoch([0.5, 0.6, 0.6, 0.6, 0.6], cfg()) == 4
    assert plateau_epoch([0.5, 0.6, 0.7, 0.8, 0.9], cfg()) is None


def test_a_plateau_grows_and_the_policy_changes_nothing():
    config = cfg()
    s = at_plateau([0.5, 0.6, 0.6, 0.6, 0.6], config)
    before = s.to_dict()
    assert policy.judge_trial(s, config) == ("", 0, "")
    assert policy.decide(s, config) == (
        "grow", f"{NOTE}: grow (no training score given: over-fitting not checked)")
    s.train_window, s.train_trace = [0.61], [0.6, 0.6, 0.61, 0.61]
    action, reason = policy.decide(s, config)
    assert action == "grow" and reason.endswith(
        "(training 0.61 vs validation 0.6: gap 0.02, training +1.7% over 3 epochs; capacity-limited)")
    assert policy.decide(s, cfg(smoothing=3))[1].startswith("no improvement on 0.6 (smoothed) for 3")
    s.train_window, s.train_trace = before["train_window"], before["train_trace"]
    assert s.to_dict() == before  # pure: decide and judge_trial read the state only


@pytest.mark.parametrize("train_window", [[], [0.61], [0.95]])
def test_a_decision_computes_the_overfit_gap_and_train_rise_once(monkeypatch, train_window):
    config = cfg()
    s = at_plateau([0.5, 0.6, 0.6, 0.6, 0.6], config, train_window=train_window,
                   train_trace=[0.6, 0.6, 0.61, 0.61] if train_window else [])
    expected = policy.decide(s, config)
    calls = []
    for name in ("overfit_gap", "train_rise"):
        real = getattr(policy, name)
        monkeypatch.setattr(policy, name, lambda s, c, real=real, name=name: calls.append(name) or real(s, c))
    assert policy.decide(s, config) == expected  # grow, or blocked by over-fitting
    assert calls.count("overfit_gap") == 1 and calls.count("train_rise") <= 1


def test_after_a_growth_that_did_not_pay_the_policy_retries_when_retries_are_left():
    s = at_plateau([0.5, 0.6, 0.6, 0.6, 0.6], cfg(), failures=1)
    assert policy.decide(s, cfg(max_growth_retries=1))[0] == "retry"
    assert policy.decide(s, cfg(max_growth_retries=0))[0] == "finish"


@pytest.mark.parametrize("fields,state,why", [
    ({"max_dendrites": 2}, {"best_dendrites": 2}, "max_dendrites (2) reached"),
    ({"max_growth_retries": 1}, {"failures": 2},
     "2 growth step(s) in a row did not pay (max_growth_retries 1)"),
    ({"max_epochs": 10}, {}, "budget: 5 epoch(s) left, a growth cycle needs about 6"),
    ({}, {"train_window": [0.95]}, "over-fitting: training 0.95 vs validation 0.6 (gap 0.37 > "
                                   "overfit_gap 0.3); more capacity would fit the training set harder"),
    ({}, {"train_window": [0.6], "train_trace": [0.5, 0.55, 0.58, 0.6]},
     "still learning: the training score rose from 0.5 to 0.6 (20.0% > train_rise 2%) over the "
     "last 3 epochs"),
])
@pytest.mark.parametrize("budget", [0, 100])
def test_each_blocker_stops_growth_finishing_without_a_budget_holding_with_one(fields, state, why, budget):
    config = cfg(**{"max_epochs": budget, **fields})
    s = at_plateau([0.5, 0.6, 0.6, 0.6, 0.6], config, **state)
    assert policy.blocker(s, config) == why
    action, reason = policy.decide(s, config)
    if config.max_epochs:
        assert (action, reason) == ("hold", f"{NOTE}; no growth: {why}; training on to the budget")
    else:
        assert (action, reason) == ("finish", f"{NOTE}; no growth: {why}")


def test_a_growth_pays_when_it_beats_the_model_before_it_and_its_shadow():
    config = cfg()
    s = GrowerState(cycle="growth", cycle_from=0.6, best_score=0.62, trial_score=0.7)
    s.cycle_best = 0.65
    assert policy.judge_trial(s, config) == ("paid", 0, "growth paid: smoothed 0.65 > 0.6 before it, best 0.7")
    assert policy.trial_paid(s, config, shadow_best=0.64) and policy.trial_paid(s, config, shadow_best=None)
    verdict, failures, note = policy.judge_trial(s, config, shadow_best=0.66)  # the shadow did better
    assert (verdict, failures) == ("failed", 1)
    assert note == "growth did not pay: smoothed best 0.65 vs 0.6 before it; shadow's smoothed best 0.66"
    s.trial_score = 0.6  # a smoothed gain, but its best epoch did not beat the best score
    assert not policy.trial_paid(s, config)
    s.trial_score, s.cycle_best = 0.7, 0.6  # its best epoch did, its smoothed score did not
    assert policy.judge_trial(s, config)[:2] == ("failed", 1)


def test_a_growth_that_did_not_pay_is_rolled_back_or_continued_from_its_shadow():
    config = cfg(max_epochs=100)
    s = at_plateau([0.6, 0.6, 0.6, 0.6], config, cycle="growth", cycle_from=0.6, best_smoothed=0.6,
                   trial_score=0.6, trial_epoch=0)
    verdict, s.failures, note = policy.judge_trial(s, config)
    assert verdict == "failed" and s.failures == 1
    blocked = f"{NOTE}; no growth: 1 growth step(s) in a row did not pay (max_growth_retries 0)"
    assert policy.decide(s, config, failed=True) == (
        "continue", f"{blocked}; rolled back to the model as it was when growth began, training on")
    assert policy.decide(s, config, failed=True, shadowed=True) == ("continue", blocked)
    assert policy.decide(s, cfg(max_epochs=100, max_growth_retries=1), failed=True)[0] == "retry"
    assert policy.decide(s, cfg(), failed=True) == ("finish", blocked)


def test_a_gain_after_a_plateau_lets_growth_be_tried_again():
    s = GrowerState(cycle="continue", cycle_from=0.6, failures=1)
    s.cycle_best = 0.65
    assert policy.judge_trial(s, cfg()) == ("", 0, "")
    s.cycle_best = 0.6
    assert policy.judge_trial(s, cfg()) == ("", 1, "")


def test_a_growth_cycle_needs_its_dendrite_phase_and_twice_the_patience():
    s = GrowerState()
    assert policy.cycle_epochs(s, cfg()) == 6
    assert policy.cycle_epochs(s, cfg(mode="pb", candidate_training="cached")) == 7
    online = cfg(mode="pb", candidate_training="online", dendrite_max_epochs=9)
    assert policy.cycle_epochs(s, online) == 15
    s.dendrite.last_epochs = 4  # the last dendrite phase took 4 epochs
    assert policy.cycle_epochs(s, online) == 10


def dendrite_phase(totals, config) -> tuple[int, str]:
    """The epoch (1-based, as ``DendritePhase.epochs`` counts) at which a dendrite phase whose
    candidates score ``totals`` ends, and why (0, "" when it does not end)."""
    phase = DendritePhase()
    phase.start()
    for total in totals:
        phase.epochs += 1
        phase.update_candidates(total, lambda new, best: policy.candidates_improved(
            new, best, config.dendrite_improvement_threshold))
        why = policy.dendrite_phase_end(phase, config)
        if why:
            return phase.epochs, why
    return 0, ""


def test_a_dendrite_phase_ends_when_its_candidates_stop_improving_or_at_its_epoch_limit():
    config = cfg(mode="pb", dendrite_patience=2, dendrite_max_epochs=6, dendrite_improvement_threshold=0.1)
    stopped = "candidates stopped improving for 2 epochs"
    # 1.0 -> 1.05 is under a 10% gain, as is 1.05 after it: two stale epochs end the phase
    assert dendrite_phase([1.0, 1.05, 1.05], config) == (3, stopped)
    assert dendrite_phase([1.0, 1.2, 1.3, 1.3], config) == (4, stopped)  # 1.3 < 1.2 * 1.1 + gain
    assert dendrite_phase([1.0, 1.2, 1.4, 1.6, 1.8], config) == (0, "")
    assert dendrite_phase([1.0, 1.2, 1.4, 1.6, 1.8, 2.0], config) == (6, "dendrite_max_epochs (6) reached")
    assert dendrite_phase([1.0, 1.2, 1.4, 1.6, 1.8, 1.8], config) == (6, "dendrite_max_epochs (6) reached")
    phase = DendritePhase(epochs=6, stale=2)  # both at once: the candidates' plateau is named
    assert policy.dendrite_phase_end(phase, config) == stopped
    assert phase == DendritePhase(epochs=6, stale=2)  # pure: the phase is only read
    assert policy.dendrite_phase_end(DendritePhase(epochs=5, stale=1), config) == ""


def test_the_early_stopper_stops_at_the_growers_plateau():
    scores = [0.5, 0.52, 0.54, 0.6, 0.6, 0.61, 0.6, 0.6, 0.6]
    config = cfg(smoothing=2, improvement_threshold_abs=0.05)
    expected = plateau_epoch(scores, config)
    assert expected == 6

    def sgd(params):
        return torch.optim.SGD(params, lr=0.1)

    stopper = EarlyStopper(nn.Linear(2, 1), config, sgd)
    assert [stopper.step(x).done for x in scores[:expected + 1]] == [False] * expected + [True]
    assert isinstance(stopper.state.plateau, Plateau) and stopper.state.plateau.stale == 3
    no_growth = dataclasses.replace(config, max_dendrites=0)  # its plateau ends the run
    grower = pf.Grower(nn.Sequential(nn.Linear(2, 1)), no_growth, sgd)
    assert [grower.step(x).done for x in scores[:expected + 1]] == [False] * expected + [True]
    assert grower.state.best_smoothed == stopper.state.plateau.best == pytest.approx(0.57)


def test_the_budget_is_spent_after_the_epoch_max_epochs_counts_and_never_without_one():
    s = GrowerState(epoch=8)
    assert policy.budget_spent(s, cfg(max_epochs=10)) == ""  # epoch 8 is the 9th of 10
    s.epoch = 9
    assert policy.budget_spent(s, cfg(max_epochs=10)) == "the budget of 10 epochs is spent"
    assert policy.budget_spent(GrowerState(epoch=12), cfg(max_epochs=10)) == (
        "the budget of 10 epochs is spent")
    assert policy.budget_spent(GrowerState(epoch=10_000), cfg()) == ""  # no budget: never spent


def test_candidates_improve_only_by_more_than_the_threshold_share():
    assert policy.candidates_improved(0.5, None, 0.1)  # the first score always counts
    assert policy.candidates_improved(1.11, 1.0, 0.1)
    assert not policy.candidates_improved(1.1, 1.0, 0.1)  # exactly 10% more is not more than 10%
    assert not policy.candidates_improved(1.05, 1.0, 0.1)
    assert policy.candidates_improved(1.0001, 1.0, 0.0)


def test_a_cached_dendrite_phase_ends_after_its_epoch_and_says_how_it_was_fitted():
    auto = policy.cached_phase_end(cfg(mode="pb", candidate_training="cached"))
    assert auto == ("candidates trained on the cached epoch (20 full-batch steps (flat layers) or "
                    "100 steps at most), scored on the whole epoch")
    fixed = policy.cached_phase_end(cfg(mode="pb", candidate_training="cached", candidate_steps=7))
    assert fixed == "candidates trained on the cached epoch (7 steps at most), scored on the whole epoch"

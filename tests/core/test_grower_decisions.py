"""The controller's no-regret rules on scripted score sequences: budgets, smoothing, over-fitting,
and the reason recorded for every decision."""
import logging

import pytest
import torch

import perforate as pf
from tests.helpers.grower import X, adam, events, make_model, train_a_little


def drive(cfg, scores, train=None, grower=None):
    """Step a grower through ``scores`` (with optional training scores); returns it and
    (epoch, event, done, reason) per epoch."""
    grower = grower or pf.Grower(pf.perforate(make_model(), cfg), cfg, adam)
    out = []
    for epoch, score in enumerate(scores):
        train_a_little(grower)
        extra = {} if train is None else {"train_acc": train[epoch]}
        d = grower.step(score, **extra)
        out.append((epoch, d.event, d.done, d.reason))
        if d.done:
            break
    return grower, out


def outputs(grower):
    grower.model.eval()
    with torch.no_grad():
        return grower.model(X).clone()


def test_a_failed_growth_sends_the_best_model_back_to_training_until_the_budget():
    cfg = pf.Config(smoothing=1, patience=2, max_growth_retries=0, max_epochs=16)
    # plateau at 4 -> grow; the grown model never beats 0.5 -> rolled back at 6 and trains on;
    # it improves (0.6 at 8): not converged after all, so growth may be tried again at 10
    scores = [0.3, 0.4, 0.5, 0.5, 0.5] + [0.45, 0.45] + [0.5, 0.6, 0.6, 0.6] + [0.6] * 5
    grower, out = drive(cfg, scores)
    assert events(out) == [(4, "grow"), (6, "continue"), (10, "grow"), (12, "continue"), (14, "hold"),
                           (15, "done")]
    assert "no growth: 1 growth step(s) in a row did not pay" in out[14][3]
    assert "did not pay" in out[6][3] and "training on" in out[6][3]
    assert not any(done for _, _, done, _ in out[:15]) and out[15][2]
    assert grower.best_score == 0.6 and grower.state.best_epoch == 8 and grower.state.best_level == 0
    assert "budget of 16 epochs is spent" in out[15][3]


def test_a_failed_growth_costs_only_its_own_epochs():
    """Training goes on from the model as it was when the growth began, as the plain model would
    have: not from the best epoch's snapshot, which discards every epoch since the best."""
    cfg = pf.Config(smoothing=1, patience=2, max_growth_retries=0, max_epochs=12)
    # best at 2; plateau at 4 -> grow from the best; the growth fails at 6 -> continue
    scores = [0.3, 0.4, 0.5, 0.45, 0.45] + [0.45, 0.45] + [0.45] * 5
    grower = pf.Grower(pf.perforate(make_model(), cfg), cfg, adam)
    seen = {}
    for epoch, score in enumerate(scores):
        train_a_little(grower)
        seen[epoch] = outputs(grower)
        d = grower.step(score)
        if d.event == "continue":
            break
    assert (epoch, d.event) == (6, "continue") and grower.state.level == 0
    assert "as it was when growth began" in d.reason
    assert torch.equal(outputs(grower), seen[4])  # the weights trained up to the growth epoch
    assert not torch.equal(seen[4], seen[2])
    assert grower.state.best_epoch == 2 and grower.state_dict()["before"] is None
    assert torch.equal(grower.finish().eval()(X), seen[2])  # the best epoch is still the model kept


def test_without_a_budget_a_plateau_with_no_growth_left_ends_the_run():
    cfg = pf.Config(smoothing=1, patience=2, max_growth_retries=0)
    grower, out = drive(cfg, [0.3, 0.4, 0.5, 0.5, 0.5, 0.45, 0.45, 0.5, 0.6])
    assert events(out) == [(4, "grow"), (6, "done")] and grower.done
    assert "did not pay" in out[6][3] and "max_growth_retries" in out[6][3]


def test_no_growth_starts_too_late_to_pay():
    cfg = pf.Config(smoothing=1, patience=2, max_epochs=10)
    grower, out = drive(cfg, [0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.7, 0.7, 0.7])
    # plateau at 8 with 1 epoch left: a growth cycle needs 2 x patience = 4
    assert events(out) == [(8, "hold"), (9, "done")]
    assert "budget: 1 epoch(s) left, a growth cycle needs about 4" in out[8][3]
    assert grower.cycle_epochs() == 4
    pb = pf.Config(mode="pb", patience=3, candidate_training="online", dendrite_max_epochs=7)
    assert pf.Grower(make_model(), pb, adam).cycle_epochs() == 13  # online: the phase's cap
    assert pf.Grower(make_model(), pb.replace(candidate_training="cached"), adam).cycle_epochs() == 7


def test_an_overfitting_model_does_not_grow_and_says_why():
    cfg = pf.Config(smoothing=1, patience=2, overfit_gap=0.3)
    val = [50.0, 60.0, 60.0, 60.0]
    _, out = drive(cfg, val, train=[60.0, 95.0, 99.0, 99.0])
    assert events(out) == [(3, "done")]
    assert "over-fitting: training 99 vs validation 60 (gap 0.39 > overfit_gap 0.3)" in out[3][3]
    # the same plateau with training close to validation: capacity is the limit, so it grows
    _, out = drive(cfg, val, train=[52.0, 63.0, 64.0, 64.0])
    assert events(out) == [(3, "grow")] and "capacity-limited" in out[3][3]
    # no training score: growth goes ahead, and the reason says the check was skipped
    _, out = drive(cfg, val)
    assert events(out) == [(3, "grow")] and "over-fitting not checked" in out[3][3]
    _, out = drive(cfg.replace(overfit_gap=float("inf")), val, train=[60.0, 95.0, 99.0, 99.0])
    assert events(out) == [(3, "done")] and "still learning" in out[3][3]  # the next check
    _, out = drive(cfg.replace(overfit_gap=float("inf"), train_rise=float("inf")), val,
                   train=[60.0, 95.0, 99.0, 99.0])
    assert events(out) == [(3, "grow")]


def test_a_model_still_learning_does_not_grow_yet():
    cfg = pf.Config(smoothing=1, patience=2, max_epochs=12, overfit_gap=float("inf"))
    val = [50.0, 60.0, 60.0, 60.0] + [60.0] * 4
    # validation stalls from epoch 1 while training still climbs 3 %: hold, look again later
    _, out = drive(cfg, val, train=[55.0, 60.0, 62.0, 64.0, 64.0, 64.0, 64.0, 64.0])
    assert events(out)[0] == (3, "hold")
    assert "still learning: the training score rose from 60 to 64 (6.7% > train_rise 2%)" in out[3][3]
    assert events(out)[1] == (5, "grow")  # training flat for 2 epochs: now capacity is the limit
    assert "training +0.0% over 2 epochs; capacity-limited" in out[5][3]


def test_one_lucky_epoch_does_not_make_a_growth_pay():
    cfg = pf.Config(smoothing=3, patience=3, max_growth_retries=0, max_epochs=30)
    base = [0.5] * 4  # the smoothed score stays at 0.5 for 3 epochs after epoch 0: grows at 3
    grown = [0.45, 0.45, 0.6, 0.45, 0.45, 0.45]  # one spike to 0.6; its 3-epoch mean stays 0.5
    grower = pf.Grower(pf.perforate(make_model(), cfg), cfg, adam)
    drive(cfg, base[:1], grower=grower)
    best_out = outputs(grower)  # epoch 0 is the best single epoch (0.5, never beaten)
    _, out = drive(cfg, base[1:] + grown, grower=grower)
    evs = [(e + 1, ev) for e, ev in events(out)]
    assert evs[:2] == [(3, "grow"), (6, "continue")]  # epoch 6 scored 0.6: a raw best, not a smoothed one
    assert grower.best_score == 0.5 and grower.state.best_level == 0  # the spike was not kept
    grower.finish()
    assert all(layer.num_dendrites == 0 for layer in pf.dendritic_layers(grower.model).values())
    torch.testing.assert_close(outputs(grower), best_out, rtol=0, atol=0)


def test_a_growth_that_paid_is_kept_and_finish_judges_a_cycle_still_on_trial():
    cfg = pf.Config(smoothing=1, patience=2, max_dendrites=3, max_growth_retries=1)
    grower, out = drive(cfg, [0.3, 0.4, 0.4, 0.4, 0.5, 0.6])
    assert events(out) == [(3, "grow")]
    trial = outputs(grower)
    grower.finish()  # the grown model beat the best, smoothed and at its best epoch
    assert grower.state.best_level == 1 and grower.best_score == 0.6
    torch.testing.assert_close(outputs(grower), trial, rtol=0, atol=0)
    grower, out = drive(cfg, [0.3, 0.4, 0.4, 0.4, 0.35, 0.38])
    grower.finish()
    assert grower.state.best_level == 0 and grower.best_score == 0.4
    assert "finish() was called" in grower.state.decisions[-1]["reason"]


def test_growth_lr_scale_applies_to_growth_cycles_only():
    cfg = pf.Config(smoothing=1, patience=2, max_growth_retries=0, growth_lr_scale=0.25, max_epochs=20)
    grower, out = drive(cfg, [0.3, 0.4, 0.4, 0.4])
    assert events(out) == [(3, "grow")]
    assert grower.optimizer.param_groups[0]["lr"] == pytest.approx(0.25e-2)
    drive(cfg, [0.3, 0.3], grower=grower)  # the growth did not pay: back to the best model
    assert grower.state.cycle == "continue"
    assert grower.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2)


def test_every_decision_is_recorded_with_its_reason(tmp_path, caplog):
    import csv
    import json

    cfg = pf.Config(smoothing=1, patience=2, max_growth_retries=0, plots=False)
    grower = pf.Grower(pf.perforate(make_model(), cfg), cfg, adam, out_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="perforate"):
        drive(cfg, [0.3, 0.4, 0.4, 0.4, 0.3, 0.3], grower=grower)
    decisions = grower.summary()["decisions"]
    assert [d["event"] for d in decisions] == ["grow", "done"]
    assert all(d["reason"] for d in decisions)
    assert [r.getMessage() for r in caplog.records if r.name == "perforate"] == \
        [f"epoch {d['epoch']}: {d['event']}: {d['reason']}" for d in decisions]
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["event"], r["reason"]) for r in rows if r["event"]] == \
        [(d["event"], d["reason"]) for d in decisions]
    assert json.loads((tmp_path / "summary.json").read_text())["decisions"] == decisions

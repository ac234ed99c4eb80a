"""The grower talks through logging.getLogger("perforate"): every decision and why at INFO, one
line per epoch with verbose=True."""
import logging
import re
import warnings

import pytest
import torch
from torch import nn

import perforate as pf

X = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))


def grower_for(cfg, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    return pf.Grower(model, cfg, lambda p: torch.optim.Adam(p, lr=1e-2), **kwargs)


def feed(grower, scores):
    decisions = []
    for score in scores:
        grower.optimizer.zero_grad()
        grower.model(X).pow(2).mean().backward()
        grower.optimizer.step()
        decisions.append(grower.step(score))
        if decisions[-1].done:
            break
    return decisions


def decision_lines(caplog):
    """"epoch N: event: reason" lines (per-epoch lines read "epoch N [phase] ...")."""
    return [r.getMessage() for r in caplog.records if r.name == "perforate"
            and r.levelno == logging.INFO and re.match(r"epoch \d+: ", r.getMessage())]


def test_every_gd_decision_is_logged_with_its_reason(caplog):
    caplog.set_level(logging.INFO, "perforate")
    cfg = pf.Config(smoothing=1, patience=2, max_growth_retries=1, max_dendrites=5)
    scores = [0.3, 0.4, 0.5, 0.5, 0.5, 0.55, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    decisions = feed(grower_for(cfg), scores)
    lines = decision_lines(caplog)
    assert [line.split(":")[0:2] for line in lines] == [
        ["epoch 4", " grow"], ["epoch 8", " grow"], ["epoch 10", " retry"], ["epoch 12", " done"]]
    assert "no improvement on 0.5 for 2 epochs" in lines[0] and "grew dendrite 1" in lines[0]
    assert "grew dendrite 2" in lines[1]
    assert "growth paid: smoothed 0.6 > 0.5 before it" in lines[1]
    assert "growth did not pay: smoothed best 0.6 vs 0.6 before it" in lines[2]
    assert "2 growth step(s) in a row did not pay (max_growth_retries 1)" in lines[3]
    assert "kept the best model: epoch 6, score 0.6, 1 dendrite(s) per layer" in lines[3]
    # the same reasons reach the caller
    assert [f"epoch {d.epoch}: {d.event}: {d.reason}" for d in decisions if d.event] == lines


def test_max_dendrites_and_finish_give_their_reasons(caplog):
    caplog.set_level(logging.INFO, "perforate")
    feed(grower_for(pf.Config(smoothing=1, patience=1, max_dendrites=1)), [0.3, 0.3, 0.4, 0.4])
    grower = grower_for(pf.Config(smoothing=1, patience=5))
    feed(grower, [0.3, 0.4])
    grower.finish()
    lines = decision_lines(caplog)
    assert "max_dendrites (1) reached" in lines[1] and lines[1].startswith("epoch 3: done:")
    assert lines[2].startswith("epoch 2: done: finish() was called; kept the best model: epoch 1")


def test_pb_dendrite_phase_and_join_are_logged(caplog):
    caplog.set_level(logging.INFO, "perforate")
    cfg = pf.Config(mode="pb", candidate_training="online", smoothing=1, patience=1,
                    max_dendrites=1, dendrite_max_epochs=2, correlation_floor=0.0)
    feed(grower_for(cfg), [0.3, 0.3, 0.3, 0.3, 0.4, 0.4])
    lines = decision_lines(caplog)
    assert lines[0].startswith("epoch 1: dendrite_start: no improvement on 0.3 for 1 epochs")
    assert "candidates for dendrite 1 train while the rest of the model is frozen" in lines[0]
    assert lines[1].startswith("epoch 3: join: dendrite_max_epochs (2) reached: joined dendrite 1")
    assert "|correlation| 0 " in lines[1]


def test_verbose_logs_one_line_per_epoch_naming_the_score(caplog):
    caplog.set_level(logging.DEBUG, "perforate")
    cfg = pf.Config(patience=5, score_name="validation loss", score_mode="min")
    feed(grower_for(cfg, verbose=True), [0.9, 0.8, 0.85])
    epochs = [r for r in caplog.records if "[neuron]" in r.getMessage()]
    assert [r.levelno for r in epochs] == [logging.INFO] * 3
    assert epochs[1].getMessage().startswith("epoch 1 [neuron] validation loss 0.8 (new best), "
                                             "0 dendrite(s), 51 params")
    assert "validation loss 0.85 (best 0.8 at epoch 1)" in epochs[2].getMessage()
    caplog.clear()
    feed(grower_for(cfg), [0.9])  # not verbose: the same line, at DEBUG
    assert [r.levelno for r in caplog.records if "[neuron]" in r.getMessage()] == [logging.DEBUG]


def test_verbose_without_a_visible_info_level_says_how_to_see_it():
    logger = logging.getLogger("perforate")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with pytest.warns(UserWarning, match=r"logging.basicConfig\(level=logging.INFO"):
            grower_for(pf.Config(), verbose=True)
        logger.setLevel(logging.INFO)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            grower_for(pf.Config(), verbose=True)
    finally:
        logger.setLevel(level)


def test_a_named_run_prefixes_its_lines(caplog):
    caplog.set_level(logging.INFO, "perforate")
    feed(grower_for(pf.Config(smoothing=1, patience=1, max_dendrites=0), name="gd, seed 3", verbose=True),
         [0.5, 0.4])
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("[gd, seed 3] epoch 0 [neuron] validation score 0.5")
    assert messages[-1].startswith("[gd, seed 3] epoch 1: done: no improvement on 0.5 for 1 epochs; "
                                   "no growth: max_dendrites (0) reached")

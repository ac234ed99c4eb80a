"""Warnings about training loops that misuse the grower: a stale optimizer, a score fed the
wrong way round."""
import warnings

import pytest
import torch
from torch import nn

import perforate as pf

X = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
Y = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))


def grower_for(cfg=None, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    return pf.Grower(model, cfg or pf.Config(patience=2), lambda p: torch.optim.Adam(p, lr=1e-2),
                     **kwargs)


def train(model, optimizer, steps=3):
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(X), Y).backward()
        optimizer.step()


def dendrite_tensors(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()
            if "dendrite" in n or "output_weight" in n}


@pytest.fixture
def strict():
    """Any perforate warning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", pf.PerforateWarning)
        yield


# ---------------------------------------------------------------------------- stale optimizer
def test_a_kept_optimizer_handle_leaves_new_dendrites_untrained_and_warns():
    grower = grower_for()
    optimizer = grower.optimizer  # kept across the growth: the mistake
    train(grower.model, optimizer)
    grower.step(1.0)
    grower.add_dendrites()
    before = dendrite_tensors(grower.model)
    train(grower.model, optimizer)
    after = dendrite_tensors(grower.model)
    assert all(torch.equal(before[n], after[n]) for n in before)  # what goes wrong silently
    with pytest.warns(pf.StaleOptimizerWarning, match="replaced at epoch 1.*grower.optimizer"):
        grower.step(1.1)


def test_an_optimizer_built_before_the_grower_is_caught_after_growth():
    torch.manual_seed(0)
    model = pf.perforate(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)), pf.Config())
    own = torch.optim.SGD(model.parameters(), lr=0.1)
    grower = pf.Grower(model, pf.Config(patience=2), lambda p: torch.optim.SGD(p, lr=0.1))
    train(model, own)
    grower.step(1.0)
    grower.add_dendrites()
    train(grower.model, own)
    with pytest.warns(pf.StaleOptimizerWarning, match="none of the 6 parameter tensors added"):
        grower.step(1.1)


def test_the_growers_optimizer_each_epoch_warns_nothing(strict):
    grower = grower_for(pf.Config(patience=1, max_dendrites=2, max_growth_retries=2))
    for epoch, score in enumerate([1.0, 1.0, 1.2, 1.2, 1.2, 1.2, 1.2]):
        train(grower.model, grower.optimizer)
        if grower.step(score).done:
            break
    assert grower.state.switch_epochs  # it grew, and the loop kept up


def test_a_framework_optimizer_from_param_groups_warns_nothing(strict):
    grower = grower_for()
    grower.step(1.0)
    grower.add_dendrites()
    framework = torch.optim.SGD(grower.param_groups(), lr=0.1)  # as Lightning / HF build theirs
    train(grower.model, framework)
    grower.step(1.1)


def test_an_epoch_that_trained_nothing_is_not_a_stale_optimizer(strict):
    grower = grower_for()
    grower.step(1.0)
    grower.add_dendrites()
    grower.step(1.1)  # a scripted score, no training: nothing to warn about


def test_it_warns_once():
    grower = grower_for()
    optimizer = grower.optimizer
    grower.step(1.0)
    grower.add_dendrites()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for score in (1.1, 1.2, 1.3):
            train(grower.model, optimizer)
            grower.step(score)
    assert [type(w.message) for w in caught] == [pf.StaleOptimizerWarning]


# ---------------------------------------------------------------------------- score direction
FALLING_LOSS = [2.3, 1.9, 1.6, 1.4, 1.3, 1.25]


def feed(grower, scores):
    for score in scores:
        if grower.step(score).done:
            break


def test_a_falling_loss_fed_as_max_warns_and_names_the_fix():
    grower = grower_for(pf.Config(patience=10))
    with pytest.warns(pf.ScoreDirectionWarning, match=r"fell from 2\.3 to 1\.3.*score_mode='min'"):
        feed(grower, FALLING_LOSS)
    assert grower.best_score == 2.3  # what goes wrong: the untrained model stays the best


def test_a_rising_accuracy_fed_as_min_warns():
    grower = grower_for(pf.Config(patience=10, score_mode="min"))
    with pytest.warns(pf.ScoreDirectionWarning, match=r"rose.*score_mode='max'"):
        feed(grower, [40.0, 55.0, 61.0, 64.0, 66.0])


@pytest.mark.parametrize("cfg, scores", [
    (pf.Config(patience=10, score_mode="min"), FALLING_LOSS),
    (pf.Config(patience=10, maximize=False), FALLING_LOSS),
    (pf.Config(patience=10), [40.0, 55.0, 61.0, 64.0, 66.0]),
    (pf.Config(patience=10), [60.0, 59.0, 61.0, 58.0, 60.5]),  # noisy, not steadily worse
    (pf.Config(patience=10), [60.0, 60.0, 60.0, 60.0, 60.0]),  # flat
])
def test_scores_in_the_configured_direction_warn_nothing(strict, cfg, scores):
    feed(grower_for(cfg), scores)

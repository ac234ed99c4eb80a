"""EarlyStopper: plain training's controller, with the grower's shape and improvement rule."""
import torch
from torch import nn

import perforate as pf
from perforate.experiments.harness.stopper import EarlyStopper


def _sgd(params):
    return torch.optim.SGD(params, lr=0.1)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def test_improvements_follow_config_better_like_the_grower():
    cfg = pf.Config(patience=3, improvement_threshold_abs=0.05, max_growth_retries=0)
    scores = [0.5, 0.52, 0.54, 0.6, 0.6, 0.6, 0.6]
    stopper, grower = EarlyStopper(_model(), cfg, _sgd), pf.Grower(_model(), cfg, _sgd)
    plain = [stopper.step(s) for s in scores]
    grown = [grower.step(s) for s in scores[:4]]  # before the grower's first plateau
    assert [d.improved for d in plain[:4]] == [d.improved for d in grown] == [True, False, False, True]
    assert [d.done for d in plain] == [False] * 6 + [True] and plain[-1].event == "done"
    assert stopper.state.best_epoch == 3 and stopper.best_score == 0.6


def test_restarts_rebuild_the_optimizer_and_finish_restores_the_best():
    model = _model()
    stopper = EarlyStopper(model, pf.Config(patience=1), _sgd, stop_early=False, restart_epochs=[2])
    first = stopper.optimizer
    best = None
    for epoch, score in enumerate([0.1, 0.9, 0.2, 0.3]):
        with torch.no_grad():
            model[0].weight.add_(1.0)  # "training"
        if epoch == 1:
            best = {k: v.clone() for k, v in model.state_dict().items()}
        d = stopper.step(score)
        assert not d.done  # stop_early=False: the whole budget
        assert d.restructured == (epoch == 1) and (stopper.optimizer is not first) == (epoch >= 1)
    assert stopper.finish() is model
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())

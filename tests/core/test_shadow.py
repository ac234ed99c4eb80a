"""Growth trials judged against a shadow run (``Config.trial = "shadow"``): the grown model is kept
only when it beats the un-grown model trained beside it; otherwise training continues from that
shadow (weights and optimizer state), never from the snapshot taken when growth began."""
import pytest
import torch

import perforate as pf
from tests.helpers.grower import X, adam, events, make_model, train_a_little


def shadow_loss(model):
    return model(X).pow(2).mean() + sum((p - 0.3).pow(2).sum() for p in model.parameters()) * 1e-2


def drive(cfg, scores, shadow_scores, steps=2, on_epoch=None):
    """Step a grower through scripted live and shadow scores (the shadow's used only while a
    shadow trains); the shadow trains ``steps`` steps per epoch like the live model."""
    grower = pf.Grower(pf.perforate(make_model(), cfg), cfg, adam)
    out = []
    for epoch, (score, shadow) in enumerate(zip(scores, shadow_scores)):
        train_a_little(grower, steps)
        for _ in range(steps):
            grower.shadow_step(shadow_loss)
        kw = {"shadow_score": shadow} if grower.shadow_model is not None else {}
        if on_epoch is not None:
            on_epoch(epoch, grower)
        d = grower.step(score, **kw)
        out.append((epoch, d.event, d.reason))
        if d.done:
            break
    return grower, out


CFG = dict(smoothing=1, patience=2, max_growth_retries=0, max_epochs=14, trial="shadow")
#          plateau at 4 -> grow; trial epochs 5, 6 (grown) against the shadow's 5, 6
BASE = [0.3, 0.4, 0.5, 0.5, 0.5]


def test_the_grown_model_is_kept_when_it_beats_the_shadow():
    scores = BASE + [0.6, 0.7, 0.7, 0.7] + [0.7] * 5
    shadows = [None] * 5 + [0.52, 0.55, 0.55, 0.55] + [0.55] * 5
    grower, out = drive(pf.Config(**CFG), scores, shadows)
    assert events(out)[:2] == [(4, "grow"), (8, "grow")]  # paid, then grows again
    assert "growth paid" in out[8][2]
    assert "as the shadow run" in out[4][2]  # the decision says the trial has a shadow
    assert grower.state.best_level >= 1 and grower.best_score == 0.7 and grower.state.best_epoch == 6
    assert grower.shadow_model is None  # finished


def test_a_growth_that_only_beats_the_old_best_but_not_the_shadow_continues_from_the_shadow():
    # the grown model beats the pre-growth best (0.5) but the shadow, trained on, does better:
    # under rollback this growth paid; judged against the run it replaces, it did not
    scores = BASE + [0.55, 0.56, 0.56, 0.5] + [0.5] * 5
    shadows = [None] * 5 + [0.58, 0.6, 0.6, 0.6] + [0.6] * 5
    seen = {}

    def on_epoch(epoch, grower):
        if grower.shadow_model is not None:  # the shadow as it is when the trial ends (epoch 7)
            seen["shadow"] = {k: v.clone() for k, v in grower.shadow_model.state_dict().items()}
            seen["shadow_opt"] = {i: {k: v.clone() for k, v in st.items() if torch.is_tensor(v)}
                                  for i, st in enumerate(grower._shadow.optimizer.state.values())}
            seen["steps"] = grower._shadow.steps
        if epoch == 4:
            seen["before"] = {k: v.clone() for k, v in grower.model.state_dict().items()}

    grower, out = drive(pf.Config(**CFG), scores, shadows, on_epoch=on_epoch)
    assert events(out)[:2] == [(4, "grow"), (8, "continue")]
    reason = out[8][2]
    assert "did not pay" in reason and "continued from the shadow run" in reason
    assert "shadow's smoothed best 0.6" in reason
    # the shadow's epoch-6 score (0.6) is the best model; the grown model's 0.56 is not
    assert grower.best_score == 0.6 and grower.state.best_epoch == 6 and grower.state.best_level == 0
    assert seen["steps"] == 8  # 2 steps in each of the trial's epochs 5..8


def test_after_a_failed_trial_the_model_holds_the_shadows_weights_and_optimizer_state():
    cfg = pf.Config(**CFG)
    scores = BASE + [0.45, 0.45, 0.45] + [0.45] * 6
    shadows = [None] * 5 + [0.5] * 9
    grower = pf.Grower(pf.perforate(make_model(), cfg), cfg, adam)
    before = shadow_state = shadow_moments = None
    for epoch, (score, shadow) in enumerate(zip(scores, shadows)):
        train_a_little(grower)
        for _ in range(2):
            grower.shadow_step(shadow_loss)
        if epoch == 4:
            before = {k: v.clone() for k, v in grower.model.state_dict().items()}
        kw = {}
        if grower.shadow_model is not None:
            kw["shadow_score"] = shadow
            shadow_state = {k: v.clone() for k, v in grower.shadow_model.state_dict().items()}
            opt = grower._shadow.optimizer
            shadow_moments = [opt.state[p]["exp_avg"].clone() for g in opt.param_groups for p in g["params"]]
        d = grower.step(score, **kw)
        if epoch > 4 and d.event:
            assert epoch == 6  # the grown model never beat 0.5: plateau after patience 2
            assert d.event == "continue" and d.restructured
            live = grower.model.state_dict()
            assert set(live) == set(shadow_state)
            assert all(torch.equal(live[k], shadow_state[k]) for k in live)
            assert not all(torch.equal(live[k], before[k]) for k in live)  # the shadow trained
            assert all(layer.num_dendrites == 0 for layer in grower.layers.values())
            moments = [grower.optimizer.state[p]["exp_avg"] for g in grower.optimizer.param_groups
                       for p in g["params"]]
            assert len(moments) == len(shadow_moments)
            assert all(torch.equal(a, b) for a, b in zip(moments, shadow_moments))
            assert grower.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2)  # the shadow's rate
            break
    else:
        pytest.fail("the trial never ended")


def test_rollback_judges_the_same_scores_against_the_old_best():
    """The same scripted scores under the default rule: the growth paid (it beat the old best)."""
    scores = BASE + [0.55, 0.56, 0.56] + [0.56] * 6
    cfg = pf.Config(**{**CFG, "trial": "rollback"})
    grower, out = drive(cfg, scores, [None] * len(scores))
    assert grower.state.best_level == 1 and grower.best_score == 0.56


def test_the_shadow_trains_on_the_batches_the_loop_gives_it():
    cfg = pf.Config(**CFG)
    grower = pf.Grower(pf.perforate(make_model(), cfg), cfg, adam)
    assert grower.shadow_model is None and grower.shadow_step(shadow_loss) is None
    for score in BASE:
        train_a_little(grower)
        grower.step(score)
    shadow = grower.shadow_model
    assert shadow is not None and shadow is not grower.model
    assert all(layer.num_dendrites == 0 for layer in pf.dendritic_layers(shadow).values())
    start = {k: v.clone() for k, v in shadow.state_dict().items()}
    loss = grower.shadow_step(shadow_loss)
    assert loss is not None and loss.dim() == 0
    assert not all(torch.equal(start[k], v) for k, v in shadow.state_dict().items())
    with pytest.raises(pf.GrowthError, match="scalar loss"):
        grower.shadow_step(lambda m: m(X))


def test_a_missing_shadow_score_drops_the_shadow_with_a_warning():
    cfg = pf.Config(**CFG)
    grower = pf.Grower(pf.perforate(make_model(), cfg), cfg, adam)
    for score in BASE:
        train_a_little(grower)
        grower.step(score)
    assert grower.shadow_model is not None
    with pytest.warns(UserWarning, match="no shadow_score"):
        grower.step(0.5)
    assert grower.shadow_model is None
    assert grower.state.decisions[-1]["event"] == "shadow_dropped"


def test_trial_is_validated():
    with pytest.raises(pf.ConfigError, match="trial"):
        pf.Config(trial="bogus")
    assert pf.Config().trial == "rollback"


@pytest.mark.parametrize("mode", ["gd", "pb"])
def test_the_harness_trains_and_scores_the_shadow(tmp_path, mode, recwarn):
    import csv

    from perforate.experiments.datasets import load_dataset
    from perforate.experiments.harness.train import train_model

    cfg = pf.Config(patience=1, smoothing=1, train_rise=float("inf"), overfit_gap=float("inf"),
                    trial="shadow", plots=False)
    r = train_model(load_dataset("spirals", seed=0), "mlp", 8, mode=mode, config=cfg, max_epochs=10,
                    batch_size=128, out_dir=tmp_path)
    assert not [w for w in recwarn if "shadow" in str(w.message)]
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(row["event"] in ("grow", "dendrite_start") for row in rows)
    scored = [row for row in rows if row.get("shadow_score")]
    assert scored  # the loop scored the shadow in the trial's epochs
    assert r.epochs == len(rows)


def test_a_frontier_task_trains_and_scores_the_shadow_and_a_custom_loop_is_refused(tmp_path, recwarn):
    """The frontier's one path (experiments.task.fit) trains the shadow in its default loop; a
    user's own train_epoch cannot, and says so before training."""
    import csv

    from perforate.errors import ExperimentError
    from perforate.experiments.task import Task, fit, harness_task

    cfg = pf.Config(patience=1, smoothing=1, train_rise=float("inf"), overfit_gap=float("inf"),
                    trial="shadow", plots=False)
    task = harness_task("spirals", "mlp", batch_size=128)
    r = fit(task, 8, 0, mode="gd", config=cfg, max_epochs=10, out_dir=tmp_path)
    assert not [w for w in recwarn if "shadow" in str(w.message)]
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(row["event"] == "grow" for row in rows)
    assert [row for row in rows if row.get("shadow_score")]
    assert r.epochs == len(rows)
    own_loop = Task(task.make_model, task.data, kind=task.kind,
                    train_epoch=lambda model, loader, opt: 0.0)
    with pytest.raises(ExperimentError, match="custom train_epoch"):
        fit(own_loop, 8, 0, mode="gd", config=cfg, max_epochs=2)


def test_framework_callbacks_refuse_shadow_trials():
    """Their frameworks own the training step: the shadow could not train on its batches."""
    pytest.importorskip("lightning")
    from perforate.integrations.lightning import DendriteCallback

    with pytest.raises(pf.ConfigError, match="trial='shadow' is not supported by DendriteCallback"):
        DendriteCallback(pf.Config(trial="shadow"))
    DendriteCallback(pf.Config(trial="rollback"))


@pytest.mark.filterwarnings("ignore::perforate.ScoreDirectionWarning")
@pytest.mark.parametrize("mode, seed", [("gd", 0), ("pb", 0), ("gd", 2)])
def test_a_failed_growth_under_shadow_costs_no_accuracy_in_the_harness(mode, seed):
    """A growth made to fail (a huge growth_lr_scale throws the grown model out) leaves exactly
    the plain run of the same budget: the same scores outside the trial and the same kept model,
    also when the kept epoch is one of the shadow's (seed 2), with the shadow's validation score."""
    from perforate.experiments.datasets import load_dataset
    from perforate.experiments.harness.train import train_model

    torch.set_num_threads(1)
    data = load_dataset("spirals", seed=0)
    cfg = pf.Config(patience=2, smoothing=1, train_rise=float("inf"), overfit_gap=float("inf"),
                    trial="shadow", plots=False, growth_lr_scale=1000.0, max_epochs=16)
    grown = train_model(data, "mlp", 8, mode=mode, config=cfg, max_epochs=16, batch_size=128, seed=seed)
    plain = train_model(data, "mlp", 8, config=pf.Config(patience=2, smoothing=1), max_epochs=16,
                        batch_size=128, early_stopping=False, seed=seed)
    events = {h["epoch"]: h["event"] for h in grown.history if h["event"]}
    start, end = min(events), min(e for e, ev in events.items() if ev == "continue")
    assert events[start] in ("grow", "dendrite_start")
    outside = [e for e in range(16) if e <= start or e > end]
    assert [grown.history[e]["val_score"] for e in outside] == [plain.history[e]["val_score"] for e in outside]
    assert grown.dendrites == 0 and grown.best_epoch == plain.best_epoch
    assert grown.test_score == plain.test_score and grown.val_score == plain.val_score
    assert (start < grown.best_epoch <= end) == (seed == 2)  # seed 2 keeps a shadow epoch
    x = data.x_test[:64]
    with torch.no_grad():
        assert torch.equal(grown.model(x), plain.model.eval()(x))


@pytest.mark.filterwarnings("ignore::perforate.ScoreDirectionWarning")
def test_a_frontier_run_kept_from_the_shadow_reports_the_shadows_validation_score():
    """The frontier's path (experiments.task.fit): failed growths whose kept epoch is one of the
    shadow's (seed 3: the second trial's last epoch) give the plain run, validation score included
    (it reported the grown model's)."""
    from perforate.experiments.task import fit, harness_task

    torch.set_num_threads(1)
    task = harness_task("spirals", "mlp", batch_size=128)
    cfg = pf.Config(patience=2, smoothing=1, train_rise=float("inf"), overfit_gap=float("inf"),
                    trial="shadow", plots=False, growth_lr_scale=1000.0, max_epochs=16)
    grown = fit(task, 8, 3, mode="gd", config=cfg, max_epochs=16)
    plain = fit(task, 8, 3, config=pf.Config(patience=2, smoothing=1), max_epochs=16, early_stopping=False)
    events = [(h["epoch"], h["event"]) for h in grown.history if h["event"] in ("grow", "continue")]
    assert any(a == "grow" and b == "continue" and e0 < grown.best_epoch <= e1
               for (e0, a), (e1, b) in zip(events, events[1:]))  # kept inside a failed trial
    assert grown.dendrites == 0 and grown.best_epoch == plain.best_epoch
    assert grown.history[grown.best_epoch]["val_score"] != plain.val_score  # the grown model's
    assert grown.test_score == plain.test_score and grown.val_score == plain.val_score


def test_the_scheduler_continues_from_the_shadows():
    """After a failed trial the live scheduler holds the shadow's state (its epoch count), not a
    fresh schedule's."""
    cfg = pf.Config(**CFG)
    sched = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    grower = pf.Grower(pf.perforate(make_model(), cfg), cfg, adam, sched)
    scores = BASE + [0.45, 0.45]
    for epoch, score in enumerate(scores):
        train_a_little(grower)
        grower.shadow_step(shadow_loss)
        kw = {"shadow_score": 0.5} if grower.shadow_model is not None else {}
        if kw:
            shadow_epoch = grower._shadow.scheduler.last_epoch
        d = grower.step(score, **kw)
    assert d.event == "continue"
    assert grower.scheduler.last_epoch == shadow_epoch + 1 == 7  # 7 epochs of one schedule
    assert grower.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5 ** 2)

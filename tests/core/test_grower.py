"""The growth controller's decisions on scripted score sequences."""
import csv
import json

import pytest
import torch

import perforate as pf
from tests.helpers.grower import X, adam, events, make_model, train_a_little


def run(scores, cfg, out_dir=None, grower=None, start=0, outputs=None):
    grower = grower or pf.Grower(pf.perforate(make_model(), cfg), cfg, adam, out_dir=out_dir)
    decisions = []
    for epoch in range(start, len(scores)):
        train_a_little(grower)
        if outputs is not None:
            grower.model.eval()
            with torch.no_grad():
                outputs[epoch] = grower.model(X).clone()
        d = grower.step(scores[epoch])
        decisions.append((epoch, d.event, d.phase, d.done))
        if d.done:
            break
    return grower, decisions


def test_improve_plateau_grow_fail_retry_done_restores_best():
    cfg = pf.Config(smoothing=1, patience=2, max_growth_retries=1, max_dendrites=5)
    # 0-2 improve; 3-4 plateau -> grow at 4; 5-6 beat the best (0.6); plateau -> grow at 8;
    # 9-10 no gain -> retry at 10; 11-12 no gain -> done at 12, best restored (epoch 6, 1 dendrite)
    scores = [0.3, 0.4, 0.5, 0.5, 0.5, 0.55, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    outputs = {}
    grower, decisions = run(scores, cfg, outputs=outputs)
    assert events(decisions) == [(4, "grow"), (8, "grow"), (10, "retry"), (12, "done")]
    assert decisions[-1][3] is True and grower.done
    assert grower.best_score == 0.6 and grower.state.best_epoch == 6
    layers = pf.dendritic_layers(grower.model)
    assert all(layer.num_dendrites == 1 for layer in layers.values())
    grower.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(grower.model(X), outputs[6], rtol=0, atol=0)
    # after done, step() keeps answering done without changing anything
    assert grower.step(0.99).done


def test_minimize_loss_scores():
    cfg = pf.Config(smoothing=1, patience=2, maximize=False, max_growth_retries=0)
    scores = [1.0, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.75, 0.75, 0.75]
    grower, decisions = run(scores, cfg)
    assert events(decisions) == [(3, "grow"), (6, "grow"), (8, "done")]
    assert grower.best_score == 0.7
    assert all(layer.num_dendrites == 1 for layer in pf.dendritic_layers(grower.model).values())


def test_stops_at_max_dendrites_and_with_zero_dendrites():
    scores = [i / 10 for i in range(30)]  # always improving: grows only on plateaus
    grower, decisions = run([0.1, 0.1, 0.1] + [0.2, 0.2, 0.2] + [0.3] * 6, pf.Config(smoothing=1, patience=2, max_dendrites=1))
    assert events(decisions) == [(2, "grow"), (5, "done")]
    assert grower.done and pf.dendritic_layers(grower.model)["0"].num_dendrites == 1
    grower, decisions = run([0.5] * 5, pf.Config(smoothing=1, patience=2, max_dendrites=0))
    assert events(decisions) == [(2, "done")]
    grower, decisions = run(scores, pf.Config(smoothing=1, patience=2))
    assert events(decisions) == [] and not grower.done


def test_thresholds_decide_what_counts_as_improvement():
    cfg = pf.Config(smoothing=1, patience=2, improvement_threshold_abs=0.05, max_growth_retries=0)
    grower, decisions = run([0.5, 0.52, 0.54, 0.56, 0.7], cfg)
    # 0.52/0.54 are within 0.05 of 0.5: plateau; 0.56 beats 0.5 by > 0.05 but growth happened at 2
    assert events(decisions)[0] == (2, "grow")


def test_optimizer_is_rebuilt_and_new_parameters_train():
    cfg = pf.Config(smoothing=1, patience=1, max_dendrites=3)
    grower = pf.Grower(pf.perforate(make_model(), cfg), cfg, adam)
    old_optimizer = grower.optimizer
    d = grower.add_dendrites()
    assert d.restructured and d.event == "grow" and grower.optimizer is not old_optimizer
    layer = pf.dendritic_layers(grower.model)["0"]
    held = {id(p) for g in grower.optimizer.param_groups for p in g["params"]}
    assert id(layer.dendrite_weight) in held and id(layer.output_weight) in held
    before = layer.dendrite_weight.detach().clone(), layer.output_weight.detach().clone()
    train_a_little(grower, steps=3)
    assert not torch.equal(before[0], layer.dendrite_weight) and not torch.equal(before[1], layer.output_weight)


def test_schedulers_are_rebuilt_and_constant_lr_works():
    cfg = pf.Config(smoothing=1, patience=2, max_dendrites=2, growth_lr_scale=1.0)
    grower = pf.Grower(pf.perforate(make_model(), cfg), cfg, lambda p: torch.optim.SGD(p, lr=0.1),
                       scheduler_factory=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5))
    for score in [0.5, 0.5]:
        grower.step(score)
    assert grower.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    d = grower.step(0.5)  # plateau: grow, fresh optimizer and scheduler
    assert d.event == "grow" and grower.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    plateau = pf.Grower(pf.perforate(make_model(), cfg), cfg, adam,
                        scheduler_factory=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0))
    for score in [0.5, 0.5, 0.5]:
        plateau.step(score)
    # a constant LR (no scheduler at all) still grows: patience alone decides
    _, decisions = run([0.5] * 3, pf.Config(smoothing=1, patience=2))
    assert events(decisions) == [(2, "grow")]


def test_two_growers_do_not_interfere():
    cfg_a, cfg_b = pf.Config(smoothing=1, patience=1, seed=1), pf.Config(smoothing=1, patience=3, seed=2)
    a = pf.Grower(pf.perforate(make_model(0), cfg_a), cfg_a, adam)
    b = pf.Grower(pf.perforate(make_model(1), cfg_b), cfg_b, adam)
    b_state = {k: v.clone() for k, v in b.model.state_dict().items()}
    for score in [0.5, 0.5]:
        a.step(score)  # grows at the second epoch (patience 1)
    assert a.state.level == 1 and b.state.level == 0 and b.state.epoch == 0
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in b_state.items())
    # same config and seed -> identical dendrites, independent of anything else in the process
    c = pf.Grower(pf.perforate(make_model(0), cfg_a), cfg_a, adam)
    torch.rand(100)
    c.step(0.5), c.step(0.5)
    assert torch.equal(pf.dendritic_layers(c.model)["0"].dendrite_weight,
                       pf.dendritic_layers(a.model)["0"].dendrite_weight)


def test_bad_use_raises_typed_errors(tmp_path):
    model = pf.perforate(make_model(), pf.Config())
    with pytest.raises(pf.GrowthError, match="optimizer_factory"):
        pf.Grower(model, pf.Config())
    grower = pf.Grower(model, pf.Config(), adam)
    with pytest.raises(pf.GrowthError, match="NaN"):
        grower.step(float("nan"))
    with pytest.raises(pf.GrowthError, match="number"):
        grower.step("high")
    with pytest.raises(pf.CheckpointError, match="no resumable run"):
        pf.Grower.resume(tmp_path, make_model(), adam)


def test_unwrapped_model_is_perforated_by_the_grower():
    grower = pf.Grower(make_model(), pf.Config(), adam)
    assert set(pf.dendritic_layers(grower.model)) == {"0", "2"}


def test_outputs_written(tmp_path):
    cfg = pf.Config(smoothing=1, patience=2, max_dendrites=1)
    grower, decisions = run([0.3, 0.4, 0.4, 0.4, 0.5, 0.5, 0.5, 0.5], cfg, out_dir=tmp_path)
    assert decisions[-1][3]
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert len(rows) == len(decisions) and rows[3]["event"] == "grow"
    assert {"epoch", "phase", "score", "lr", "params", "dendrites", "seconds"} <= set(rows[0])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_score"] == 0.5 and summary["switch_epochs"] == [3]
    assert summary["flops_per_sample"] > 0 and summary["best_by_dendrites"]["1"]["score"] == 0.5
    assert (tmp_path / "growth.png").stat().st_size > 1000
    best = pf.load(tmp_path / "best.pt", make_model()).eval()
    with torch.no_grad():
        assert torch.equal(best(X), grower.model.eval()(X))


@pytest.mark.parametrize("mode", ["gd", "pb"])
def test_resume_makes_the_same_decisions(tmp_path, mode):
    cfg = pf.Config(mode=mode, smoothing=1, patience=2, max_dendrites=3, dendrite_patience=1, dendrite_max_epochs=2,
                    plots=False)
    scores = [0.3, 0.4, 0.4, 0.4, 0.5, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    full, expected = run(scores, cfg, out_dir=tmp_path / "full")
    # interrupted after epoch 6, then resumed from disk into a fresh model
    part, first = run(scores[:7], cfg, out_dir=tmp_path / "part")
    part.flush()  # the process that wrote a run resumes it once its files are on disk
    del part
    resumed = pf.Grower.resume(tmp_path / "part", make_model(), adam)
    assert resumed.state.epoch == 7
    resumed, rest = run(scores, cfg, grower=resumed, start=7)
    assert first + rest == expected
    for (k, v), (k2, v2) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_finish_after_step_writes_each_epoch_once(tmp_path):
    cfg = pf.Config(smoothing=1, patience=5, plots=False)
    grower, decisions = run([0.3, 0.4, 0.5], cfg, out_dir=tmp_path)
    grower.finish()
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"] and rows[-1]["event"] == "done"


def test_rebuild_optimizer_uses_the_current_factories():
    cfg = pf.Config(smoothing=1, patience=2)
    grower = pf.Grower(pf.perforate(make_model(), cfg), cfg, adam)
    first = grower.optimizer
    grower.optimizer_factory = lambda params: torch.optim.SGD(params, lr=0.5)
    rebuilt = grower.rebuild_optimizer()
    assert rebuilt is grower.optimizer and rebuilt is not first
    assert isinstance(rebuilt, torch.optim.SGD) and rebuilt.param_groups[0]["lr"] == 0.5
    trainable = {id(p) for p in grower.model.parameters() if p.requires_grad}
    assert {id(p) for g in rebuilt.param_groups for p in g["params"]} == trainable

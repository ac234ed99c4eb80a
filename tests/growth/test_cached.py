"""pb candidates trained cascade-correlation style: one cached epoch, full-batch steps, scored
by the covariance over the whole epoch at fixed weights (Config.candidate_training="cached")."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import perforate as pf
from perforate.training import cached, pb
from tests.helpers.pb import CASES, _epoch, _eval, _main_state, _mlp, _task, case_data, linear_at_its_optimum


def test_one_cached_epoch_leaves_the_model_alone_then_joins():
    x, y = _task()
    cfg = pf.Config(mode="pb", smoothing=1, patience=100, candidates=3, candidate_steps=30)
    model = pf.perforate(_mlp(), cfg)
    grower = pf.Grower(model, cfg, lambda p: torch.optim.Adam(p, lr=3e-2))
    for epoch in range(3):
        _epoch(grower, x, y, seed=epoch)
        grower.step(0.0)
    grower.add_dendrites()
    pools = {n: layer.candidate_pool for n, layer in pf.dendritic_layers(model).items()}
    before, out_eval = _main_state(model), _eval(model, x)
    weights = {n: pool.weight.detach().clone() for n, pool in pools.items()}
    _epoch(grower, x, y, seed=10)
    # the caching epoch trains nothing: not the model, not the candidates
    assert all(torch.equal(before[k], v) for k, v in _main_state(model).items())
    assert all(torch.equal(weights[n], pool.weight) for n, pool in pools.items())
    assert all(len(pool.cache) == len(x) // 32 for pool in pools.values())
    d = grower.step(0.0)
    assert d.event == "join" and d.phase == "neuron" and "correlation" in d.reason
    torch.testing.assert_close(_eval(model, x), out_eval, rtol=0, atol=0)
    assert all(layer.num_dendrites == 1 for layer in pf.dendritic_layers(model).values())
    assert all(not torch.equal(weights[n], pool.weight) for n, pool in pools.items())  # fit moved them


def test_scores_are_the_full_epoch_covariance_at_the_final_weights():
    """The score a pool keeps is the objective over every cached sample, recomputed here from
    the neuron errors and the candidates' activations at the weights it remembered."""
    x, y = _task(200)
    model = pf.perforate(nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1)), pf.Config(mode="pb"))
    layer = pf.dendritic_layers(model)["0"]
    for p in model.parameters():
        p.requires_grad_(False)
    pb.start_dendrite_phase({"0": layer}, 4, torch.Generator().manual_seed(0), 0.9, cache_mb=64)
    pool = layer.candidate_pool
    errors = []
    hidden = model[0].main
    hidden.register_forward_hook(lambda m, i, o: [o.register_hook(errors.append)] and None)
    hidden.weight.requires_grad_(True)  # only to capture dLoss/d(output) for the check
    for i in range(0, 200, 50):
        F.mse_loss(model(x[i:i + 50]), y[i:i + 50], reduction="sum").backward()
    steps = pool.fit_cached(layer, steps=40, lr=0.05)
    assert 10 <= steps <= 40
    delta = torch.cat(errors)  # [N, C]: the neuron error the candidates saw
    w = pool.best_weight.reshape(4, 6, 2) if hasattr(pool, "best_weight") else None
    b = pool.best_bias.reshape(4, 6)
    a = torch.sigmoid(torch.einsum("nk,pck->pnc", x, w) + b.unsqueeze(1))  # [P, N, C]
    d = delta - delta.mean(0)
    d = d / d.pow(2).mean(0).sqrt()
    expected = ((a - a.mean(1, keepdim=True)) * d).mean(1).abs()
    torch.testing.assert_close(pool.best_score.float(), expected, rtol=1e-4, atol=1e-6)
    assert pool.cache == []


def test_a_cached_dendrite_learns_the_error_its_neuron_cannot_fit():
    cfg = pf.Config(mode="pb", smoothing=1, patience=100, candidates=2, candidate_steps=100,
                    candidate_lr=0.05, growth_lr_scale=1.0)
    model, x, y = linear_at_its_optimum(cfg)
    alone = F.mse_loss(_eval(model, x), y).item()
    grower = pf.Grower(model, cfg, lambda p: torch.optim.Adam(p, lr=0.1))
    grower.add_dendrites()
    _epoch(grower, x, y, batch=64, seed=10)
    grower.step(0.0)
    assert grower.phase == "neuron" and model.num_dendrites == 1
    assert grower.state.correlations[0]["layers"][""]["correlation"] > 0.4
    for epoch in range(6):
        _epoch(grower, x, y, batch=64, seed=20 + epoch)
        grower.step(0.0)
    assert F.mse_loss(_eval(model, x), y).item() < alone / 10


@pytest.mark.parametrize("case", list(CASES))
def test_cached_cycle_on_each_layer_kind(case):
    build, x, y, kwargs = case_data(case)
    cfg = pf.Config(mode="pb", smoothing=1, patience=100, candidates=2, candidate_steps=5)
    model = pf.perforate(build(), cfg, **kwargs)
    grower = pf.Grower(model, cfg, lambda p: torch.optim.Adam(p, lr=1e-2))
    _epoch(grower, x, y, batch=8)
    grower.step(0.0)
    grower.add_dendrites()
    before, out_eval = _main_state(model), _eval(model, x)
    _epoch(grower, x, y, batch=8)
    assert all(torch.equal(before[k], v) for k, v in _main_state(model).items())
    torch.testing.assert_close(_eval(model, x), out_eval, rtol=0, atol=0)
    assert grower.step(0.0).event == "join"
    torch.testing.assert_close(_eval(model, x), out_eval, rtol=0, atol=0)
    assert all(layer.num_dendrites == 1 for layer in pf.dendritic_layers(model).values())
    assert all(v["correlation"] > 0 for v in grower.state.correlations[0]["layers"].values())
    _epoch(grower, x, y, batch=8)
    grower.step(0.0)


def test_the_cache_stops_at_its_memory_cap():
    x, y = _task(256)
    # one batch of 32 inputs of layer "2" fits, two do not: the cap counts what the batch costs
    # at the fit's peak (issue 27): its inputs (8 floats each, 1 KiB) twice, and its error (1 float
    # each, 128 B) twice and four times for the one candidate: 2.75 KiB
    cfg = pf.Config(mode="pb", smoothing=1, patience=100, candidate_steps=3,
                    candidate_cache_mb=4 / 1024)
    model = pf.perforate(_mlp(), cfg)
    grower = pf.Grower(model, cfg, lambda p: torch.optim.Adam(p, lr=1e-2))
    grower.add_dendrites()
    _epoch(grower, x, y)
    assert len(pf.dendritic_layers(model)["2"].candidate_pool.cache) == 1
    assert grower.step(0.0).event == "join"


def test_layers_whose_candidates_do_not_correlate_are_not_grown():
    x, y = _task()
    cfg = pf.Config(mode="pb", smoothing=1, patience=2, candidate_steps=5, min_correlation=0.99,
                    max_growth_retries=0)
    model = pf.perforate(_mlp(), cfg)
    grower = pf.Grower(model, cfg, lambda p: torch.optim.Adam(p, lr=1e-2))
    decisions = []
    for epoch, score in enumerate([0.5, 0.5, 0.5, 0.5]):
        _epoch(grower, x, y, seed=epoch)
        decisions.append(grower.step(score))
    # plateau at epoch 2 -> cached epoch 3 -> no layer reaches 0.99: nothing joined, no retries left
    assert decisions[2].event == "dendrite_start"
    assert decisions[3].done and "min_correlation" in grower.state.decisions[-2]["reason"]
    assert all(layer.num_dendrites == 0 for layer in pf.dendritic_layers(model).values())
    assert not any(layer.candidate_pool for layer in pf.dendritic_layers(model).values())


@pytest.mark.parametrize("activation", ["sigmoid", "gelu"])
def test_cached_step_gradients_are_those_of_the_full_epoch_objective(activation):
    """The written-out full-batch gradients equal autograd's of the objective
    ``sum_pc |cov(a_pc, d_c)|`` for the preactivations and the cascade weights."""
    g = torch.Generator().manual_seed(0)
    layer = pf.dendritic_layers(pf.perforate(nn.Linear(3, 4), pf.Config(mode="pb",
                                             dendrite_activation=activation)))[""]
    layer.add_dendrites(2, g)
    for p in layer.parameters():
        p.requires_grad_(False)
    pb.start_dendrite_phase({"": layer}, 3, g, 0.9, cache_mb=64)
    pool = layer.candidate_pool
    with torch.no_grad():
        pool.cascade.normal_(generator=g)
    for i in range(0, 50, 10):  # a cached epoch of 5 batches
        layer(torch.randn(10, 3, generator=g)).mul(torch.randn(10, 4, generator=g)).sum().backward()
    epoch = cached.CachedEpoch(pool, layer, pool.cache)
    z = epoch.unit_preactivations().detach().requires_grad_(True)
    with torch.no_grad():  # as cached training calls it
        dz, dcascade, cov = epoch.gradients(z.detach())
    d = epoch.d.squeeze(1)
    assert d.shape == (50, 4)
    torch.testing.assert_close(d.mean(0), torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(d.pow(2).mean(0), torch.ones(4))
    zc = z + sum(pool.cascade[:, j] * a for j, a in enumerate(epoch.cascade_inputs))
    a = pf.activations.get(activation).forward(zc)
    objective = ((a - a.mean(0)) * d.unsqueeze(1)).mean(0).abs().sum()
    ref_dz, ref_dcascade = torch.autograd.grad(-objective, [z, pool.cascade])
    torch.testing.assert_close(dz, ref_dz, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(dcascade, ref_dcascade, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(cov.abs().sum() / 50, objective.detach(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", ["linear", "sequence_btc", "conv2d"])
def test_stacking_the_cached_batches_trains_as_one_call_per_batch(case, monkeypatch):
    """Where a kind stacks the cached batches into one input, cached training reaches what
    one call per batch reaches (the same candidates, up to float rounding)."""
    build, make_x, kwargs = CASES[case]

    def fitted(stack):
        if not stack:
            monkeypatch.setattr(type(layer.adapter), "cat_samples", lambda self, layer, xs: None)
        pb.start_dendrite_phase({"": layer}, 2, torch.Generator().manual_seed(1), 0.9, cache_mb=64)
        for i in range(0, len(x), 8):
            (layer(x[i:i + 8]) ** 2).sum().backward()
        pool = layer.candidate_pool
        steps = pool.fit_cached(layer, steps=20, lr=0.05)
        monkeypatch.undo()
        return steps, pool.best_weight, pool.best_score

    x = make_x(torch.Generator().manual_seed(0))
    module = build()
    main = module[0] if isinstance(module, nn.Sequential) else module.up
    layer = pf.dendritic_layers(pf.perforate(nn.Sequential(main), pf.Config(mode="pb"), **kwargs))["0"]
    layer.add_dendrites(1, torch.Generator().manual_seed(2))  # so the cascade weights train too
    for p in layer.parameters():
        p.requires_grad_(False)
    assert layer.adapter.cat_samples(layer, [x[:8], x[8:16]]) is not None
    (s1, w1, score1), (s2, w2, score2) = fitted(True), fitted(False)
    assert s1 == s2 == 20
    torch.testing.assert_close(w1, w2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(score1, score2, rtol=1e-4, atol=1e-6)


def test_layers_trained_in_lock_step_end_as_each_trained_alone():
    """All layers' candidates step together, each stopping on its own: a layer that stops
    early keeps the weights it stopped with while the others train on."""
    x, y = _task()
    base = pf.perforate(_mlp(), pf.Config(mode="pb"))

    def cached_epoch():
        model = copy.deepcopy(base)
        layers = pf.dendritic_layers(model)
        for p in model.parameters():
            p.requires_grad_(False)
        pb.start_dendrite_phase(layers, 3, torch.Generator().manual_seed(0), 0.9, cache_mb=64)
        for i in range(0, len(x), 32):
            F.mse_loss(model(x[i:i + 32]), y[i:i + 32]).backward()
        return layers

    together = cached_epoch()
    steps = pb.fit_cached(together, 300, 0.05)
    assert len(set(steps.values())) == 2 and max(steps.values()) < 300  # they stopped apart
    alone = cached_epoch()
    for name, layer in alone.items():
        assert layer.candidate_pool.fit_cached(layer, 300, 0.05) == steps[name]
        for key, value in layer.candidate_pool.state_dict().items():
            torch.testing.assert_close(together[name].candidate_pool.state_dict()[key], value,
                                       rtol=0, atol=0)

"""Perforated Backpropagation (mode="pb"): dendrite phase, join, perforation, correlation objective."""
import csv
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import perforate as pf
from perforate.training import pb
from tests.helpers.models import ConvBN
from tests.helpers.pb import (
    CASES, ConvBNNet, _epoch, _eval, _main_state, _mlp, _task, case_data, linear_at_its_optimum,
)


# ---------------------------------------------------------------------------- the dendrite phase
def test_dendrite_phase_trains_only_candidates_and_leaves_outputs_unchanged():
    x, y = _task()
    model = pf.perforate(_mlp(), pf.Config(mode="pb"))
    cfg = pf.Config(mode="pb", candidate_training="online", smoothing=1, patience=100, candidates=2, dendrite_patience=50, dendrite_max_epochs=6)
    grower = pf.Grower(model, cfg, lambda p: torch.optim.Adam(p, lr=3e-2))
    for epoch in range(5):
        _epoch(grower, x, y, seed=epoch)
        grower.step(-F.mse_loss(_eval(model, x), y).item())
    d = grower.add_dendrites()
    assert d.restructured and d.phase == "dendrite" and grower.phase == "dendrite"
    held = {id(p) for g in grower.optimizer.param_groups for p in g["params"]}
    pools = [layer.candidate_pool for layer in pf.dendritic_layers(model).values()]
    assert held == {id(p) for pool in pools for p in pool.trainable_parameters()}

    before = _main_state(model)
    out_eval, out_train = _eval(model, x), model(x).detach()
    cand_before = [pool.weight.detach().clone() for pool in pools]
    phases, scores = [], []
    for epoch in range(6):
        _epoch(grower, x, y, seed=100 + epoch)
        phases.append(grower.step(0.0).phase)
        if grower.phase == "dendrite":
            scores.append([pool.layer_score() for pool in pools])
            after = _main_state(model)
            assert all(torch.equal(before[k], after[k]) for k in before)
            assert torch.equal(_eval(model, x), out_eval)
            assert torch.equal(model(x).detach(), out_train)
    # dendrite_max_epochs=6: "dendrite" until the sixth epoch, which joins
    assert phases == ["dendrite"] * 5 + ["neuron"]
    assert all(not torch.equal(b, p.weight) for b, p in zip(cand_before, pools))
    assert all(last > first for first, last in zip(scores[0], scores[-1]))  # the objective rose
    rows = [r for r in grower.history if r["phase"] == "dendrite"]
    assert all(r[f"corr/{name}"] > 0 for r in rows for name in pf.dendritic_layers(model))


def test_a_dendrite_learns_the_error_its_neuron_cannot_fit():
    """A linear neuron at its least-squares optimum under a sigmoid-shaped target: what is
    left of the error is nonlinear. The candidates' correlation with it climbs far above
    noise, and once joined the neuron phase drives the loss far below the neuron alone."""
    # lr 0.1 is already a candidate-sized rate here: no extra scaling
    cfg = pf.Config(mode="pb", candidate_training="online", smoothing=1, patience=100, candidates=2,
                    dendrite_patience=100, dendrite_max_epochs=8, candidate_lr_scale=1.0,
                    growth_lr_scale=1.0)
    model, x, y = linear_at_its_optimum(cfg)
    alone = F.mse_loss(_eval(model, x), y).item()
    grower = pf.Grower(model, cfg, lambda p: torch.optim.Adam(p, lr=0.1))
    grower.add_dendrites()
    for epoch in range(8):
        _epoch(grower, x, y, batch=64, seed=10 + epoch)
        grower.step(0.0)
    corr = [r["corr/"] for r in grower.history if r["phase"] == "dendrite"]
    assert corr[-1] > 0.3 and corr[-1] > corr[0] + 0.2
    assert grower.phase == "neuron" and model.num_dendrites == 1
    for epoch in range(6):
        _epoch(grower, x, y, batch=64, seed=20 + epoch)
        grower.step(0.0)
    assert F.mse_loss(_eval(model, x), y).item() < alone / 10


def test_join_is_function_preserving_then_dendrites_stay_frozen():
    x, y = _task()
    model = pf.perforate(_mlp(), pf.Config(mode="pb"))
    cfg = pf.Config(mode="pb", candidate_training="online", smoothing=1, patience=100, dendrite_max_epochs=3)
    grower = pf.Grower(model, cfg, lambda p: torch.optim.Adam(p, lr=3e-2))
    for epoch in range(5):
        _epoch(grower, x, y, seed=epoch)
        grower.step(0.0)
    grower.add_dendrites()
    for epoch in range(2):
        _epoch(grower, x, y, seed=10 + epoch)
        grower.step(0.0)
    _epoch(grower, x, y, seed=20)
    out_before = _eval(model, x)
    d = grower.step(0.0)
    assert d.event == "join" and d.restructured and d.phase == "neuron"
    assert torch.equal(_eval(model, x), out_before)

    layers = pf.dendritic_layers(model)
    assert all(layer.num_dendrites == 1 and layer.candidate_pool is None for layer in layers.values())
    held = {id(p) for g in grower.optimizer.param_groups for p in g["params"]}
    for layer in layers.values():
        assert all(not p.requires_grad and id(p) not in held for p in layer.dendrite_parameters())
        assert id(layer.output_weight) in held and id(layer.main.weight) in held
        assert torch.count_nonzero(layer.output_weight) == 0
    frozen = {n: [p.detach().clone() for p in l.dendrite_parameters()] for n, l in layers.items()}
    v_before = layers["0"].output_weight.detach().clone()
    for epoch in range(3):
        _epoch(grower, x, y, seed=30 + epoch)
        grower.step(0.0)
    for name, layer in layers.items():
        assert all(torch.equal(a, b) for a, b in zip(frozen[name], layer.dendrite_parameters()))
    assert not torch.equal(v_before, layers["0"].output_weight)  # v trains


@pytest.mark.parametrize("mode", ["pb", "gd"])
def test_no_error_flows_back_through_a_dendrite(mode):
    """``upstream`` reaches the loss only through ``layer``, whose main weights are zero and
    frozen: its one remaining path is the dendrite. Perforated (pb): no gradient; gd: some."""
    torch.manual_seed(0)
    upstream = nn.Linear(3, 4)
    model = nn.Sequential(upstream, nn.Tanh(), nn.Linear(4, 2))
    model = pf.perforate(model, pf.Config(mode=mode, exclude=["0"]))
    layer = pf.dendritic_layers(model)["2"]
    with torch.no_grad():
        layer.main.weight.zero_()
    layer.main.weight.requires_grad_(False)
    layer.add_dendrites(1, torch.Generator().manual_seed(1))
    layer.freeze_dendrites(mode == "pb")
    with torch.no_grad():
        layer.output_weight.fill_(1.0)
    loss = model(torch.randn(8, 3)).pow(2).sum()
    loss.backward()
    assert layer.output_weight.grad.abs().sum() > 0  # the dendrite does reach the loss
    grad = upstream.weight.grad
    if mode == "pb":
        assert grad is None or torch.count_nonzero(grad) == 0
    else:
        assert grad is not None and grad.abs().sum() > 0


# ---------------------------------------------------------------------------- the objective
def _pool_on(layer_module, candidates=3, seed=0):
    layer = pf.perforate(layer_module, pf.Config(mode="pb"))
    layer.add_dendrites(1, torch.Generator().manual_seed(seed))
    layer.freeze_dendrites(True)
    pb.start_dendrite_phase({"": layer}, candidates, torch.Generator().manual_seed(seed + 1), 0.9)
    with torch.no_grad():
        layer.candidate_pool.cascade.normal_()
    return layer, layer.candidate_pool


def _candidate_activations(layer, pool, x):
    """[P, N, C] activations of the candidates, recomputed independently of the pool's forward."""
    acts = layer.cascade(layer.dendrite_preactivations(x))
    out = []
    weight = pool.weight.unflatten(0, (pool.num_candidates, layer.channels))  # stored [P*C, ...]
    bias = pool.bias.unflatten(0, (pool.num_candidates, layer.channels))
    for p in range(pool.num_candidates):
        if layer.kind == "linear":
            z = F.linear(x, weight[p], bias[p])
        else:
            z = layer.main._conv_forward(x, weight[p], bias[p])
        z = z + layer.channel_view(pool.cascade[p, 0], z.ndim) * acts[0]
        out.append(torch.sigmoid(z))
    a = torch.stack(out)
    axis = layer._axis(a.ndim - 1) + 1
    return a.movedim(axis, -1).reshape(pool.num_candidates, -1, layer.channels)


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_objective_gradient_matches_finite_differences(kind):
    torch.manual_seed(0)
    with torch.device("cpu"):
        module = nn.Linear(3, 4) if kind == "linear" else nn.Conv1d(2, 3, 3, padding=1)
        layer, pool = _pool_on(module.double())
    x = torch.randn(12, 3, dtype=torch.float64) if kind == "linear" else torch.randn(5, 2, 7, dtype=torch.float64)
    out = layer(x)
    delta = torch.randn_like(out) + 0.3  # an error signal with a non-zero mean
    out.backward(delta)  # what the user's loss.backward() delivers to the layer output
    flat_delta = delta.movedim(layer._axis(delta.ndim), -1).reshape(-1, layer.channels)

    def objective():
        return pb.correlation_objective(_candidate_activations(layer, pool, x), flat_delta)

    eps = 1e-6
    for param in (pool.weight, pool.bias, pool.cascade):
        numeric = torch.zeros_like(param)
        with torch.no_grad():
            for i in range(param.numel()):
                flat = param.view(-1)
                flat[i] += eps
                up = objective()
                flat[i] -= 2 * eps
                down = objective()
                flat[i] += eps
                numeric.view(-1)[i] = (up - down) / (2 * eps)
        # the optimizer minimises, so the applied gradient is -dS/dw
        torch.testing.assert_close(param.grad, -numeric, rtol=1e-6, atol=1e-8)
    # the first batch initialises the running covariance to this batch's
    grad, cov, _ = pb.correlation_statistics(_candidate_activations(layer, pool, x).detach(), flat_delta)
    torch.testing.assert_close(pool.covariance, cov)


def test_each_neuron_picks_its_best_candidate_and_its_best_weights():
    layer, pool = _pool_on(nn.Linear(3, 4), candidates=3)
    known = torch.tensor([[0.1, 0.9, 0.2, 0.3],
                          [0.5, 0.1, 0.2, 0.7],
                          [0.4, 0.2, 0.8, 0.1]])
    with torch.no_grad():
        pool.covariance.copy_(known * torch.tensor([1.0, -1.0, 1.0, -1.0]))  # |cov| counts
    pool.remember_best()
    good_w, good_b, good_c = (pool.weight.detach().unflatten(0, (3, 4)).clone(),
                              pool.bias.detach().unflatten(0, (3, 4)).clone(), pool.cascade.detach().clone())
    # later the candidates drift to weights that score worse: the remembered ones must win
    with torch.no_grad():
        pool.weight.add_(1.0)
        pool.bias.add_(1.0)
        pool.cascade.add_(1.0)
        pool.covariance.mul_(0.5)
    pool.remember_best()
    (w, b), cascade = pool.select()  # one dendrite: w [C, in], b [C]
    winners = known.argmax(0)  # [1, 0, 2, 1]
    assert winners.tolist() == [1, 0, 2, 1]
    for c, p in enumerate(winners.tolist()):
        assert torch.equal(w[c], good_w[p, c]) and torch.equal(b[c], good_b[p, c])
        assert torch.equal(cascade[0, :, c], good_c[p, :, c])
    assert pool.layer_score() == pytest.approx(known.max(0).values.mean().item())
    # joined, the layer computes exactly the chosen candidates
    pb.join_candidates({"": layer})
    assert torch.equal(layer.dendrite_weight[4:], w) and torch.equal(layer.cascade_weight[0], cascade[0, 0])


def test_block_candidates_are_remembered_and_chosen_whole():
    model = pf.perforate(ConvBNNet(), pf.Config(mode="pb"), blocks=[ConvBN])
    layer = pf.dendritic_layers(model)["block"]
    pb.start_dendrite_phase({"block": layer}, 2, torch.Generator().manual_seed(0), 0.9)
    pool = layer.candidate_pool
    with torch.no_grad():
        pool.covariance.copy_(torch.tensor([[0.1, 0.2, 0.1, 0.2], [0.3, 0.3, 0.3, 0.3]]))
    pool.remember_best()
    kept = pool.blocks[1].conv.weight.detach().clone()
    with torch.no_grad():
        pool.blocks[1].conv.weight.add_(1.0)
        pool.covariance.mul_(0.1)
    pool.remember_best()
    units, _ = pool.select()
    assert torch.equal(units[0].conv.weight, kept)


# ---------------------------------------------------------------------------- layer kinds
@pytest.mark.parametrize("case", list(CASES))
def test_pb_cycle_on_each_layer_kind(case):
    build, x, y, kwargs = case_data(case)
    model = pf.perforate(build(), pf.Config(mode="pb"), **kwargs)
    cfg = pf.Config(mode="pb", candidate_training="online", smoothing=1, patience=100, candidates=2, dendrite_max_epochs=2)
    grower = pf.Grower(model, cfg, lambda p: torch.optim.Adam(p, lr=1e-2))
    _epoch(grower, x, y, batch=8)
    grower.step(0.0)
    grower.add_dendrites()
    before, out_train = _main_state(model), model(x).detach()
    out_eval = _eval(model, x)
    pools = {n: l.candidate_pool for n, l in pf.dendritic_layers(model).items()}
    cand = {n: [t.detach().clone() for t in p.trainable_parameters()] for n, p in pools.items()}
    _epoch(grower, x, y, batch=8)
    assert grower.step(0.0).phase == "dendrite"
    after = _main_state(model)
    assert torch.equal(_eval(model, x), out_eval)  # batch-norm running statistics are held too
    assert all(torch.equal(before[k], after[k]) for k in after)
    assert torch.equal(model(x).detach(), out_train)
    for name, pool in pools.items():
        assert any(not torch.equal(a, b) for a, b in zip(cand[name], pool.trainable_parameters())), name
        assert torch.isfinite(pool.covariance).all() and pool.score.abs().sum() > 0
    _epoch(grower, x, y, batch=8)
    out_before = _eval(model, x)
    assert grower.step(0.0).event == "join"
    torch.testing.assert_close(_eval(model, x), out_before, rtol=0, atol=0)
    assert all(layer.num_dendrites == 1 for layer in pf.dendritic_layers(model).values())
    _epoch(grower, x, y, batch=8)  # the neuron phase trains with the new dendrites
    grower.step(0.0)


# ---------------------------------------------------------------------------- reporting and resume
def test_correlation_columns_and_weak_layer_report(tmp_path):
    x, y = _task(128)
    cfg = pf.Config(mode="pb", candidate_training="online", smoothing=1, patience=100, dendrite_max_epochs=2, correlation_floor=0.99, plots=False)
    model = pf.perforate(_mlp(), cfg)
    grower = pf.Grower(model, cfg, lambda p: torch.optim.Adam(p, lr=1e-2), out_dir=tmp_path)
    _epoch(grower, x, y)
    grower.step(0.0)
    grower.add_dendrites()
    for epoch in range(2):
        _epoch(grower, x, y, seed=epoch)
        grower.step(0.0)
    summary = grower.summary()
    assert summary["weak_layers"] and set(summary["weak_layers"][0]["layers"]) == {"0", "2"}
    assert set(summary["correlations"][0]["layers"]) == {"0", "2"}
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"corr/0", "corr/2"} <= set(rows[0])
    dendrite_rows = [r for r in rows if r["phase"] == "dendrite"]
    assert len(dendrite_rows) == 2 and all(float(r["corr/0"]) > 0 for r in dendrite_rows)
    assert all(r["corr/0"] == "" for r in rows if r["phase"] == "neuron")
    grower.finish()
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["weak_layers"] == summary["weak_layers"]


def test_resume_in_the_middle_of_a_dendrite_phase_continues_identically(tmp_path):
    x, y = _task(128)
    cfg = pf.Config(mode="pb", candidate_training="online", smoothing=1, patience=3, candidates=2, dendrite_patience=2, dendrite_max_epochs=4,
                    max_dendrites=2, plots=False)
    factory = lambda p: torch.optim.Adam(p, lr=1e-2)  # noqa: E731

    def run(grower, epochs):
        for epoch in epochs:
            _epoch(grower, x, y, seed=epoch)
            grower.step(-F.mse_loss(_eval(grower.model, x), y).item())
            if grower.done:
                break

    torch.manual_seed(0)
    whole = pf.Grower(pf.perforate(_mlp(), cfg), cfg, factory, out_dir=tmp_path / "a")
    run(whole, range(30))

    torch.manual_seed(0)
    first = pf.Grower(pf.perforate(_mlp(), cfg), cfg, factory, out_dir=tmp_path / "b")
    stop = None
    for epoch in range(30):
        run(first, [epoch])
        if first.phase == "dendrite" and first.state.dendrite_epochs == 1:
            stop = epoch + 1
            break
    assert stop is not None
    first.flush()
    torch.manual_seed(0)
    resumed = pf.Grower.resume(tmp_path / "b", _mlp(), factory)
    assert resumed.phase == "dendrite" and resumed.state.epoch == stop
    run(resumed, range(stop, 30))
    assert [r["score"] for r in resumed.history] == [r["score"] for r in whole.history]
    assert [r["event"] for r in resumed.history] == [r["event"] for r in whole.history]
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_structure_from_state_counts_candidates():
    """Framework checkpoints size candidate pools from the saved state's shapes."""
    from torch import nn

    from perforate.integrations.common import structure_from_state
    from perforate.training.pb import start_dendrite_phase

    cfg = pf.Config(mode="pb")
    saved = pf.perforate(nn.Sequential(nn.Linear(3, 4)), cfg)
    start_dendrite_phase(pf.dendritic_layers(saved), 3, torch.Generator().manual_seed(0), 0.9)
    fresh = pf.perforate(nn.Sequential(nn.Linear(3, 4)), cfg)
    assert structure_from_state(fresh, saved.state_dict())["0"]["candidates"] == 3


def test_candidates_train_at_scaled_learning_rate():
    from torch import nn

    cfg = pf.Config(mode="pb", candidate_lr_scale=10.0)
    model = pf.perforate(nn.Sequential(nn.Linear(3, 4)), cfg)
    grower = pf.Grower(model, cfg, lambda p: torch.optim.SGD(p, lr=0.01))
    grower.add_dendrites()
    assert grower.phase == "dendrite" and grower.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    with pytest.raises(pf.ConfigError, match="candidate_lr_scale"):
        pf.Config(candidate_lr_scale=0)

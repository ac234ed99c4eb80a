"""Restricted-input dendrites (Config.dendrite_inputs) and sparse plain layers (pf.restrict_inputs):
fixed connectivity masks that growth preserves, training keeps, files keep and counts honour."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import perforate as pf
from perforate import connectivity
from perforate.training import pb


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 3))


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3), nn.Flatten())


def _masked_out(layer):
    """The dendrite weights at connections the mask removes (must all be zero)."""
    w = layer.dendrite_weight.detach()
    mask = connectivity.shaped(layer.dendrite_weight_mask, w.ndim).expand_as(w)
    return w[~mask]


@pytest.mark.parametrize("choice", ["local", "random"])
@pytest.mark.parametrize("make,x", [(_mlp, torch.randn(7, 10)), (_cnn, torch.randn(3, 4, 6, 6))])
def test_growth_with_masks_preserves_the_function_and_reads_only_the_allowed_inputs(make, x, choice):
    model = pf.perforate(make(), pf.Config(dendrite_inputs=3, dendrite_input_choice=choice))
    before = model(x)
    generator = torch.Generator().manual_seed(5)
    for layer in pf.dendritic_layers(model).values():
        layer.add_dendrites(2, generator)
        mask = layer.dendrite_weight_mask
        assert mask.shape == (2 * layer.channels, layer.main.weight.shape[1])
        assert (mask.sum(1) == 3).all()
        if choice == "local":  # each row reads one window of neighbouring inputs
            cols = mask.float().argmax(1)
            assert all(mask[r, c:c + 3].all() for r, c in enumerate(cols.tolist()))
        assert (_masked_out(layer) == 0).all()
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    # with nonzero output weights the fast path, the generic path and the reference agree
    for layer in pf.dendritic_layers(model).values():
        layer.output_weight.data.normal_()
        layer.cascade_weight.data.normal_()
    fast = model(x)
    for layer in pf.dendritic_layers(model).values():
        layer.fused = False
    torch.testing.assert_close(model(x), fast)
    first = list(pf.dendritic_layers(model).values())[0]
    torch.testing.assert_close(first(x), first.reference_forward(x))


def test_a_dendrite_never_depends_on_inputs_outside_its_mask():
    torch.manual_seed(0)
    layer = pf.DendriticLayer(nn.Linear(12, 1), inputs=4, input_choice="local")
    layer.add_dendrites(1, torch.Generator().manual_seed(3))
    layer.output_weight.data.fill_(1.0)
    x = torch.randn(5, 12, requires_grad=True)
    z = layer.dendrite_preactivations(x)[0]
    (gx,) = torch.autograd.grad(z.sum(), x)
    read = layer.dendrite_weight_mask[0]
    assert (gx[:, ~read] == 0).all() and (gx[:, read] != 0).any()


@pytest.mark.parametrize("dendrites", [1, 3])  # 1: plain autograd ops; 3: the fused node
@pytest.mark.parametrize("make,x", [(_mlp, torch.randn(64, 10)), (_cnn, torch.randn(8, 4, 6, 6))])
def test_gd_training_steps_keep_masked_weights_zero(make, x, dendrites):
    cfg = pf.Config(mode="gd", dendrite_inputs=2, dendrite_input_choice="random")
    model = pf.perforate(make(), cfg)
    for layer in pf.dendritic_layers(model).values():
        layer.add_dendrites(dendrites, torch.Generator().manual_seed(1))
    start = {n: l.dendrite_weight.detach().clone() for n, l in pf.dendritic_layers(model).items()}
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    for _ in range(5):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    for name, layer in pf.dendritic_layers(model).items():
        assert (_masked_out(layer) == 0).all()
        assert not torch.equal(layer.dendrite_weight.detach(), start[name])  # the kept ones trained


def _mse_epoch(grower, model, x, y, batch=32):
    """One epoch of minibatch MSE steps with the grower's current optimizer."""
    for i in range(0, len(x), batch):
        grower.optimizer.zero_grad()
        F.mse_loss(model(x[i:i + batch]), y[i:i + batch]).backward()
        grower.optimizer.step()


@pytest.mark.parametrize("training", ["cached", "online"])
def test_pb_candidates_and_the_joined_dendrite_keep_their_masks(training):
    torch.manual_seed(0)
    x, y = torch.randn(256, 10), torch.randn(256, 3)
    cfg = pf.Config(mode="pb", smoothing=1, patience=100, candidates=3, candidate_steps=20,
                    candidate_training=training, dendrite_max_epochs=2, dendrite_inputs=4,
                    dendrite_input_choice="random")
    model = pf.perforate(_mlp(), cfg)
    grower = pf.Grower(model, cfg, lambda p: torch.optim.Adam(p, lr=3e-2))

    def epoch():
        _mse_epoch(grower, model, x, y)

    epoch()
    grower.step(0.0)
    grower.add_dendrites()
    pools = {n: l.candidate_pool for n, l in pf.dendritic_layers(model).items()}
    for pool in pools.values():
        assert pool.weight_mask.shape[0] == pool.weight.shape[0] and (pool.weight_mask.sum(1) == 4).all()
    masks = {n: p.weight_mask.clone() for n, p in pools.items()}
    before_join = model(x).detach()
    while grower.phase == "dendrite":
        epoch()
        for pool in pools.values():
            assert (pool.weight.detach()[~pool.weight_mask] == 0).all()
        grower.step(0.0)
    torch.testing.assert_close(model(x), before_join, rtol=0, atol=0)
    for name, layer in pf.dendritic_layers(model).items():
        assert layer.num_dendrites == 1
        # the joined rows are the winners' rows, masks included
        c = layer.channels
        winners = pools[name].best_score.argmax(0)
        torch.testing.assert_close(layer.dendrite_weight_mask, masks[name][winners * c + torch.arange(c)])
        assert (_masked_out(layer) == 0).all()
    for _ in range(3):
        epoch()
    for layer in pf.dendritic_layers(model).values():
        assert (_masked_out(layer) == 0).all()


def test_save_load_and_export_keep_the_masks_and_outputs(tmp_path):
    cfg = pf.Config(dendrite_inputs={"0": 5, "2": 2}, dendrite_input_choice="random")
    model = pf.perforate(_mlp(), cfg)
    for layer in pf.dendritic_layers(model).values():
        layer.add_dendrites(2, torch.Generator().manual_seed(9))
        layer.output_weight.data.normal_()
    x = torch.randn(4, 10)
    pf.save(model, tmp_path / "m.safetensors")
    loaded = pf.load(tmp_path / "m.safetensors", _mlp(seed=1))
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    for name, layer in pf.dendritic_layers(loaded).items():
        assert (layer.inputs, layer.input_choice) == ((5, "random") if name == "0" else (2, "random"))
        assert torch.equal(layer.dendrite_weight_mask, pf.dendritic_layers(model)[name].dendrite_weight_mask)
    assert pf.count_parameters(loaded) == pf.count_parameters(model)
    plain = pf.export(model)
    torch.testing.assert_close(plain(x), model(x))
    assert pf.count_parameters(plain) == pf.count_parameters(model)
    assert pf.flops_per_sample(plain, x) == pf.flops_per_sample(model, x)
    # a dense model is not a restricted one: loading into a differently wrapped model is refused
    other = pf.perforate(_mlp(), pf.Config())
    with pytest.raises(pf.CheckpointError, match="inputs"):
        pf.load(tmp_path / "m.safetensors", other)


def test_counts_are_exact_on_a_hand_computed_example():
    model = pf.perforate(_mlp(), pf.Config(dendrite_inputs={"0": 4}))
    x = torch.randn(5, 10)
    base_params, base_flops = 10 * 6 + 6 + 6 * 3 + 3, 2 * (10 * 6 + 6 * 3)
    assert pf.count_parameters(model) == base_params
    pf.dendritic_layers(model)["0"].add_dendrites(2, torch.Generator().manual_seed(0))
    # 2 dendrites x 6 neurons x 4 inputs, 12 biases, 1x6 cascade, 2x6 output weights
    assert pf.count_parameters(model) == base_params + 48 + 12 + 6 + 12
    assert pf.parameter_breakdown(model)["dendrite"] == 48 + 12 + 6 + 12
    assert pf.flops_per_sample(model, x) == base_flops + 2 * 48
    # a convolution: 3x3 kernels over 2 of 4 input channels, 6 neurons, 1 dendrite, 6x6 output
    conv = pf.perforate(nn.Conv2d(4, 6, 3, padding=1), pf.Config(dendrite_inputs=2))
    conv.add_dendrites(1, torch.Generator().manual_seed(0))
    assert pf.count_parameters(conv) == (4 * 6 * 9 + 6) + (2 * 6 * 9 + 6) + 6
    assert pf.flops_per_sample(conv, torch.randn(2, 4, 6, 6)) == 2 * 36 * (4 * 6 * 9 + 2 * 6 * 9)


def test_sparse_plain_layers_count_only_their_connections():
    lin = pf.restrict_inputs(nn.Linear(10, 6), 3, "local", torch.Generator().manual_seed(0))
    assert pf.count_parameters(lin) == 6 * 3 + 6
    assert pf.flops_per_sample(lin, torch.randn(4, 10)) == 2 * 6 * 3
    x = torch.randn(4, 10)
    original = lin.parametrizations.weight.original
    mask = lin.parametrizations.weight[0].mask
    assert (mask.sum(1) == 3).all() and (original.detach()[~mask] == 0).all()
    torch.testing.assert_close(lin(x), F.linear(x, original * mask, lin.bias))
    conv = pf.restrict_inputs(nn.Conv1d(8, 4, 3), 2, "random", torch.Generator().manual_seed(0))
    assert pf.count_parameters(conv) == 4 * 2 * 3 + 4
    assert pf.flops_per_sample(conv, torch.randn(2, 8, 10)) == 2 * 8 * 4 * 2 * 3
    opt = torch.optim.Adam(conv.parameters(), lr=0.1)
    conv(torch.randn(2, 8, 10)).sum().backward()
    opt.step()
    original = conv.parametrizations.weight.original.detach()
    assert (original * ~conv.parametrizations.weight[0].mask == 0).all()
    assert (original != 0).sum() == 4 * 2 * 3
    # a layer pruned with torch.nn.utils.prune is not restricted: it counts as before (dense)
    from torch.nn.utils import prune
    pruned = prune.l1_unstructured(nn.Linear(10, 6), "weight", amount=0.5)
    assert pf.count_parameters(pruned) == 66


def test_random_masks_come_from_the_seed():
    def grown(seed):
        cfg = pf.Config(dendrite_inputs=3, dendrite_input_choice="random", seed=seed)
        model = pf.perforate(_mlp(), cfg)
        grower = pf.Grower(model, cfg, lambda p: torch.optim.SGD(p, lr=0.1))
        grower.add_dendrites()
        return [l.dendrite_weight_mask.clone() for l in pf.dendritic_layers(model).values()]

    torch.manual_seed(123)
    a = grown(7)
    torch.manual_seed(456)  # the global RNG does not matter
    b = grown(7)
    c = grown(8)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


def test_attention_projections_take_restricted_dendrites():
    torch.manual_seed(0)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    model = pf.perforate(Wrap(), pf.Config(dendrite_inputs=4))
    x = torch.randn(2, 5, 8)
    before = model(x)
    layers = pf.dendritic_layers(model)
    assert {n.rsplit(".", 1)[-1] for n in layers} == {"q_proj", "k_proj", "v_proj", "out_proj"}
    for layer in layers.values():
        layer.add_dendrites(1, torch.Generator().manual_seed(0))
        assert (layer.dendrite_weight_mask.sum(1) == 4).all()
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def test_bad_restrictions_raise_errors_that_say_what_to_change():
    with pytest.raises(pf.WrapError, match="1 to 10 inputs"):
        pf.perforate(_mlp(), pf.Config(dendrite_inputs=11))  # a window larger than the input
    with pytest.raises(pf.WrapError, match="1 to 6 inputs"):
        pf.perforate(_mlp(), pf.Config(dendrite_inputs=8))  # fits layer 0, not layer 2
    pf.perforate(_mlp(), pf.Config(dendrite_inputs={"0": 8}))  # per layer: fine
    with pytest.raises(pf.WrapError, match="recurrent"):
        pf.perforate(nn.LSTM(4, 3), pf.Config(dendrite_inputs=2))
    with pytest.raises(pf.WrapError, match="ungrouped"):
        pf.perforate(nn.Conv2d(4, 4, 3, groups=2), pf.Config(dendrite_inputs=2))
    for bad in (-1, 2.5, True, {"0": -2}, {"0": "all"}):
        with pytest.raises(pf.ConfigError, match="dendrite_inputs"):
            pf.Config(dendrite_inputs=bad)
    with pytest.raises(pf.ConfigError, match="dendrite_input_choice"):
        pf.Config(dendrite_input_choice="strided")
    with pytest.raises(pf.WrapError, match="1 to 10"):
        pf.restrict_inputs(nn.Linear(10, 2), 0)
    with pytest.raises(pf.WrapError, match="ungrouped"):
        pf.restrict_inputs(nn.LSTM(3, 3), 2)


def test_grower_state_keeps_the_masks_of_dendrites_and_live_candidates():
    torch.manual_seed(0)
    x, y = torch.randn(128, 10), torch.randn(128, 3)
    cfg = pf.Config(mode="pb", candidates=3, dendrite_inputs={"0": 4}, dendrite_input_choice="random",
                    smoothing=1, patience=100)
    model = pf.perforate(_mlp(), cfg)
    grower = pf.Grower(model, cfg, lambda p: torch.optim.Adam(p, lr=1e-2))

    def epoch():
        _mse_epoch(grower, model, x, y)

    grower.add_dendrites()
    epoch()
    grower.step(0.2)  # joined
    epoch()
    grower.step(0.3)
    grower.add_dendrites()  # a second dendrite phase: the pool is live
    other = pf.perforate(_mlp(seed=1), cfg)
    restored = pf.Grower(other, cfg, lambda p: torch.optim.Adam(p, lr=1e-2))
    restored.load_state_dict(grower.state_dict())
    a, b = pf.dendritic_layers(model)["0"], pf.dendritic_layers(restored.model)["0"]
    assert b.num_dendrites == 1 and torch.equal(a.dendrite_weight_mask, b.dendrite_weight_mask)
    assert torch.equal(a.candidate_pool.weight_mask, b.candidate_pool.weight_mask)
    torch.testing.assert_close(restored.model(x), model(x), rtol=0, atol=0)

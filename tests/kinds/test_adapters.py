"""The kind adapters and the activation registry: dispatch, memory formats, unbatched input,
direct weight reads, tied weights in export, norm statistics in a pb phase, old checkpoints."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import perforate as pf
from perforate import activations, kinds
from tests.helpers.models import ConvBN


def _grow(model, k=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for layer in pf.dendritic_layers(model).values():
        layer.add_dendrites(k, gen)
        with torch.no_grad():  # trained-looking: dendrites really change the output
            layer.output_weight.normal_(generator=gen)
            if layer.cascade_weight is not None:
                layer.cascade_weight.normal_(generator=gen)
    return model


@pytest.mark.parametrize("name", sorted(activations.ACTIVATIONS))
def test_each_activation_backward_matches_autograd(name):
    act = activations.ACTIVATIONS[name]
    z = torch.randn(50, dtype=torch.float64, requires_grad=True)
    a = act.forward(z)
    grad = torch.randn_like(a)
    (expected,) = torch.autograd.grad(a, z, grad)
    got = act.backward(grad, a.detach(), None if act.from_output else z.detach())
    torch.testing.assert_close(got, expected)
    assert name in pf.Config(dendrite_activation=name).dendrite_activation


def test_kinds_are_found_by_isinstance_and_declared_blocks_get_copies():
    class MyConv(nn.Conv2d):
        pass

    assert kinds.kind_of(nn.Linear(2, 2)).name == "linear"
    assert kinds.kind_of(MyConv(2, 2, 1)).name == "conv"
    assert kinds.kind_of(nn.ReLU()) is None
    assert kinds.block_kind(ConvBN(2, 3)).name == "block"
    assert kinds.get("block").channels(ConvBN(2, 3)) == 3


def test_reading_a_wrapped_weight_names_the_layer_and_the_fix():
    model = pf.perforate(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    layer = model[2]
    assert layer.out_features == 2 and layer.in_features == 4  # plain attributes read through
    with pytest.raises(pf.BypassError, match=r"\.weight of '2'.*exclude=\['2'\]"):
        layer.weight
    assert not hasattr(layer, "bias")  # still an AttributeError for probing code
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        layer.nothing


def test_reading_an_exported_layers_weight_says_where_it_is():
    model = _grow(pf.perforate(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))))
    layer = pf.export(model)[2]  # main folded into the stacked call
    with pytest.raises(pf.BypassError, match=r"\.weight of '2' \(Linear with dendrites, exported\).*"
                                             r"layer\.stacked\.weight\[:2\].*exclude=\['2'\]"):
        layer.weight
    assert torch.equal(layer.stacked.weight[:2], model[2].main.weight)  # the message is true
    assert not hasattr(layer, "bias") and getattr(layer, "bias", "none") == "none"
    with pytest.raises(AttributeError, match="no attribute 'nothing'") as info:
        layer.nothing
    assert not isinstance(info.value, pf.BypassError)
    head = pf.export(_grow(pf.perforate(TiedLM()))).head  # tied weights: main kept apart
    with pytest.raises(pf.BypassError, match=r"'head'.*read layer\.main\.weight if"):
        head.weight


def test_channels_last_after_growth_keeps_outputs_and_growing():
    torch.manual_seed(0)
    model = pf.perforate(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3)))
    _grow(model, 2)
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    model.to(memory_format=torch.channels_last)
    assert model[0].dendrite_weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected,
                               rtol=1e-5, atol=1e-6)
    _grow(model, 1, seed=1)  # new dendrites follow the layer's memory format
    assert model[0].dendrite_weight.is_contiguous(memory_format=torch.channels_last)
    exported = pf.export(model).eval()
    torch.testing.assert_close(exported(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("conv", "shape"), [
    (lambda: nn.Conv1d(3, 5, 3), (3, 7)),  # L_out = 5 = C_out: once silently wrong
    (lambda: nn.Conv1d(3, 4, 3, groups=1), (3, 9)),
    (lambda: nn.Conv2d(2, 4, 3, groups=2), (2, 6, 6)),
    (lambda: nn.Conv3d(1, 2, 2), (1, 3, 3, 3)),
])
def test_unbatched_conv_input_after_growth_matches_the_batched_call(conv, shape):
    torch.manual_seed(0)
    layer = _grow(pf.perforate(nn.Sequential(conv())), 2)
    x = torch.randn(shape)
    torch.testing.assert_close(layer(x), layer(x.unsqueeze(0))[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(layer[0].reference_forward(x), layer(x), rtol=0, atol=1e-6)
    exported = pf.export(layer)
    torch.testing.assert_close(exported(x), layer(x), rtol=0, atol=1e-5)


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.mid = nn.Linear(8, 8)
        self.head = nn.Linear(8, 11, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens):
        return self.head(torch.tanh(self.mid(self.emb(tokens))))


def test_export_keeps_tied_weights_tied():
    torch.manual_seed(0)
    model = _grow(pf.perforate(TiedLM()), 2)
    exported = pf.export(model)
    assert pf.count_parameters(exported) == pf.count_parameters(model)
    assert exported.head.main.weight is exported.emb.weight  # still one tensor
    tokens = torch.randint(0, 11, (3, 5))
    torch.testing.assert_close(exported(tokens), model(tokens), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        exported.emb.weight.add_(1.0)
    assert torch.equal(exported.head.main.weight, exported.emb.weight)


def test_norm_statistics_are_held_in_a_dendrite_phase_and_released_at_join():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 16, 1))
    model = pf.perforate(model, pf.Config(mode="pb"))
    cfg = pf.Config(mode="pb", candidate_training="online", patience=100, dendrite_max_epochs=2)
    grower = pf.Grower(model, cfg, lambda p: torch.optim.SGD(p, lr=1e-2))
    x, y = torch.randn(16, 2, 4, 4), torch.randn(16, 1)
    grower.add_dendrites()
    model.eval()
    before = model(x).detach()
    for _ in range(2):
        model.train()
        loss = F.mse_loss(model(x * 3 + 1), y)  # batches unlike the running statistics
        grower.optimizer.zero_grad()
        loss.backward()
        grower.optimizer.step()
        model.eval()
        assert grower.phase == "dendrite" and torch.equal(model(x).detach(), before)
        grower.step(0.0)
    assert grower.phase == "neuron" and model[1].track_running_stats
    mean = model[1].running_mean.clone()
    model.train()
    model(x * 3 + 1)
    assert not torch.equal(model[1].running_mean, mean)  # tracking again in the neuron phase


def test_checkpoints_with_unflattened_stacked_weights_still_load(tmp_path):
    torch.manual_seed(0)
    model = _grow(pf.perforate(nn.Sequential(nn.Conv1d(2, 3, 3))), 2)
    state = model.state_dict()
    old = dict(state, **{"0.dendrite_weight": state["0.dendrite_weight"].unflatten(0, (2, 3)),
                         "0.dendrite_bias": state["0.dendrite_bias"].unflatten(0, (2, 3))})
    fresh = pf.perforate(nn.Sequential(nn.Conv1d(2, 3, 3)))
    fresh[0].set_num_dendrites(2)
    fresh.load_state_dict(old)
    x = torch.randn(4, 2, 6)
    assert torch.equal(fresh(x), model(x))


def test_wrapping_does_not_import_transformers():
    """The Hugging Face Conv1D kind looks for transformers only where a model already loaded it."""
    import subprocess
    import sys

    script = ("import sys, torch, perforate as pf; pf.perforate(torch.nn.Sequential(torch.nn.Linear(2, 2)));"
              "print('transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"

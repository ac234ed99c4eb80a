"""Wrapping and function-preserving growth."""
import pytest
import torch
from torch import nn

import perforate as pf
from tests.helpers.models import ConvBN


class TinyTransformerMLP(nn.Module):
    """Linears applied to [B, T, C] sequences, as inside a transformer block."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 8)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


class MyLinear(nn.Linear):
    """A subclass with its own forward: must still be found by isinstance."""

    def forward(self, x):
        return super().forward(x) * 2.0


def _grow_all(model, n=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for layer in pf.dendritic_layers(model).values():
        layer.add_dendrites(n, gen)


def _randomize_output_weights(model):
    with torch.no_grad():
        for layer in pf.dendritic_layers(model).values():
            layer.output_weight.normal_()
            if layer.cascade_weight is not None:
                layer.cascade_weight.normal_()


CASES = {
    "linear": (lambda: nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)), (4, 6)),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv1d(4, 3, 3)), (4, 2, 10)),
    "conv2d": (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, stride=2)),
               (4, 2, 8, 8)),
    "conv3d": (lambda: nn.Sequential(nn.Conv3d(1, 2, 3, padding=1)), (2, 1, 4, 4, 4)),
    "grouped_conv": (lambda: nn.Sequential(nn.Conv2d(4, 4, 3, groups=2, padding=1)), (2, 4, 6, 6)),
    "sequence_linear": (TinyTransformerMLP, (3, 7, 8)),
}


@pytest.mark.parametrize("mode", ["gd", "pb"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_wrapping_is_bit_identical_and_growth_preserves_function(case, mode):
    build, shape = CASES[case]
    torch.manual_seed(1)
    plain = build().eval()
    x = torch.randn(shape)
    expected = plain(x)
    model = pf.perforate(plain, pf.Config(mode=mode)).eval()
    assert torch.equal(model(x), expected)  # the main layer's own call: bit for bit
    for k in range(3):
        before = model(x)
        _grow_all(model, seed=k)
        # equal to float rounding: at 2 dendrites a Linear moves to the fused node, which adds
        # the same terms in the same order but may round one element 1 ulp apart on some CPUs
        torch.testing.assert_close(model(x), before, rtol=1e-6, atol=1e-6,
                                   msg=f"growth step {k} changed the output")
    assert all(layer.num_dendrites == 3 for layer in pf.dendritic_layers(model).values())
    _randomize_output_weights(model)
    assert not torch.allclose(model(x), expected)  # dendrites are really wired in


def test_conv_bn_block_gets_own_norm_per_dendrite():
    torch.manual_seed(0)
    model = nn.Sequential(ConvBN(2, 4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    x = torch.randn(3, 2, 5, 5)
    model = pf.perforate(model, pf.Config(), blocks=[ConvBN])
    layers = pf.dendritic_layers(model)
    assert set(layers) == {"0", "2"}  # the block's inner conv is not wrapped separately
    block = layers["0"]
    assert block.kind == "block" and block.neuron_axis == -3  # the channel axis, counted from the end
    model.eval()
    before = model(x)
    _grow_all(model, 2)
    assert torch.equal(model(x), before)
    dendrite_bns = [m for m in block.dendrite_blocks.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(dendrite_bns) == 2 and all(bn is not block.main.bn for bn in dendrite_bns)
    # a block given by name pattern works the same
    named = pf.perforate(nn.Sequential(ConvBN(2, 4)), pf.Config(), blocks=["0"])
    assert pf.dendritic_layers(named)["0"].kind == "block"


def test_subclasses_are_found_and_keep_their_forward():
    torch.manual_seed(0)
    model = nn.Sequential(MyLinear(4, 3))
    x = torch.randn(2, 4)
    expected = model(x)
    model = pf.perforate(model, pf.Config())
    assert isinstance(model[0], pf.DendriticLayer) and isinstance(model[0].main, MyLinear)
    _grow_all(model)
    _randomize_output_weights(model)
    with torch.no_grad():
        model[0].output_weight.zero_()
    assert torch.equal(model(x), expected)


def test_include_exclude_globs():
    model = nn.Sequential()
    model.add_module("encoder", nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)))
    model.add_module("head", nn.Linear(4, 2))
    wrapped = pf.perforate(model, pf.Config(include=["encoder.*"], exclude=["encoder.1"]))
    assert set(pf.dendritic_layers(wrapped)) == {"encoder.0"}


def test_neuron_axis_inferred_and_overridable():
    model = pf.perforate(nn.Sequential(nn.Linear(3, 3), nn.Conv1d(3, 3, 1)), pf.Config())
    layers = pf.dendritic_layers(model)
    assert layers["0"].neuron_axis == -1 and layers["1"].neuron_axis == -2  # channels, from the end

    class ChannelsLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(3, 5, 1)

        def forward(self, x):  # [B, L, C] in and out
            return self.conv(x.transpose(1, 2)).transpose(1, 2)

    x = torch.randn(2, 7, 3)
    model = pf.perforate(nn.Sequential(ChannelsLast()), pf.Config(neuron_axis={"0": -1}), blocks=[ChannelsLast])
    layer = model[0]
    assert layer.neuron_axis == -1
    _grow_all(model)
    _randomize_output_weights(model)
    assert model(x).shape == (2, 7, 5)
    with pytest.raises(pf.WrapError, match="always puts its neurons on axis -1"):
        pf.perforate(nn.Sequential(nn.Linear(3, 3)), pf.Config(neuron_axis={"0": 1}))


def test_bad_wrapping_gives_clear_errors_or_no_ops():
    model = pf.perforate(nn.Sequential(nn.Linear(2, 2)), pf.Config())
    with pytest.raises(pf.WrapError, match="already perforated"):
        pf.perforate(model, pf.Config())
    with pytest.raises(pf.WrapError, match="no layer was selected"):
        pf.perforate(nn.Sequential(nn.ReLU()), pf.Config())
    with pytest.raises(pf.WrapError, match="no layer was selected"):
        pf.perforate(nn.Sequential(nn.Linear(2, 2)), pf.Config(include=["nothing*"]))
    frozen = nn.Linear(2, 2).requires_grad_(False)
    mixed = pf.perforate(nn.Sequential(frozen, nn.Linear(2, 2)), pf.Config())
    assert set(pf.dendritic_layers(mixed)) == {"1"}  # untrainable module left alone
    with pytest.raises(pf.WrapError, match="torch.nn.Module"):
        pf.perforate("not a model", pf.Config())


def test_top_level_layer_and_shared_modules():
    layer = pf.perforate(nn.Linear(3, 2), pf.Config())
    assert isinstance(layer, pf.DendriticLayer)
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    model = pf.perforate(model, pf.Config())
    assert model[0] is model[2] and isinstance(model[0], pf.DendriticLayer)


def test_new_tensors_follow_layer_dtype():
    model = pf.perforate(nn.Sequential(nn.Linear(3, 2).double()), pf.Config())
    _grow_all(model, 2)
    layer = model[0]
    assert all(p.dtype == torch.float64 for p in layer.parameters())
    x = torch.randn(2, 3, dtype=torch.float64)
    assert model(x).dtype == torch.float64
    bf = pf.perforate(nn.Sequential(nn.Linear(3, 2).to(torch.bfloat16)), pf.Config())
    _grow_all(bf)
    assert bf[0].dendrite_weight.dtype == torch.bfloat16
    assert bf(torch.randn(2, 3, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_no_hidden_template_copies():
    model = pf.perforate(nn.Sequential(nn.Linear(10, 4)), pf.Config())
    plain_params = 10 * 4 + 4
    assert pf.count_parameters(model) == plain_params
    assert len(model.state_dict()) == 2
    _grow_all(model, 2)
    # per dendrite: a copy of the layer (44) + v (4); cascade between the 2 dendrites: 4
    assert pf.count_parameters(model) == plain_params + 2 * (plain_params + 4) + 4
    assert sum(v.numel() for v in model.state_dict().values()) == pf.count_parameters(model)


def test_independent_generators_give_reproducible_dendrites():
    a = pf.perforate(nn.Sequential(nn.Linear(3, 2)), pf.Config())
    b = pf.perforate(nn.Sequential(nn.Linear(3, 2)), pf.Config())
    state = torch.random.get_rng_state()
    _grow_all(a, seed=5)
    _grow_all(b, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(a[0].dendrite_weight, b[0].dendrite_weight)

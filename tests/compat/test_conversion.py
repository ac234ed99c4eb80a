"""Which modules UPA.initialize_pai / perforate_model give dendrites, the reference's way."""
import logging

import pytest
import torch
from torch import nn

import perforate as pf
from perforate.compat.perforatedai import globals_perforatedai as GPA
from perforate.compat.perforatedai import utils_perforatedai as UPA
from perforate.compat.perforatedai.errors import CompatConfigError, CompatUsageError



class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = GPA.PAISequential([nn.Linear(4, 4), nn.BatchNorm1d(4)])
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def wrapped(model):
    return sorted(pf.dendritic_layers(model))


def test_defaults_wrap_linear_layers_and_paisequential_as_one_unit_outputs_unchanged(fresh):
    net = Net().eval()
    x = torch.randn(5, 4)
    before = net(x)
    net = UPA.perforate_model(net)
    assert wrapped(net) == ["blocks.0.a", "blocks.0.b", "blocks.1.a", "blocks.1.b", "head", "stem"]
    assert torch.equal(net(x), before)


def test_by_class_name_by_dotted_id_and_track_lists(fresh):
    GPA.pc.set_module_names_to_perforate(["Block"])
    GPA.pc.append_module_ids_to_perforate([".head"])
    GPA.pc.append_module_ids_to_track([".blocks.1"])
    assert wrapped(UPA.perforate_model(Net())) == ["blocks.0", "head"]


def test_each_generation_reads_its_own_lists(fresh):
    # 3.0: by type (Linear) *and* by name; 3.2: the name list replaced holds Block only
    GPA.pc.set_module_names_to_convert(["Block"])
    assert wrapped(UPA.initialize_pai(Net())) == ["blocks.0", "blocks.1", "head", "stem.0"]
    GPA.reset()
    GPA.pc.set_module_names_to_perforate(["Block"])
    assert wrapped(UPA.perforate_model(Net())) == ["blocks.0", "blocks.1"]


def test_the_other_generations_list_is_honoured_with_a_note(fresh, caplog):
    GPA.pc.set_module_names_to_perforate([])
    with caplog.at_level(logging.WARNING, "perforate"):
        GPA.pc.set_module_names_to_convert(["Block"])  # a 3.0 name in a 3.2 script
        net = UPA.perforate_model(Net())
    assert wrapped(net) == ["blocks.0", "blocks.1"]
    assert "honours it as module_names_to_perforate" in caplog.text


def test_output_dimensions_steer_a_wrapped_block(fresh):
    class Mixer(nn.Module):  # output [batch, features, tokens]: neurons on axis 1 of 3
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, x):
            return self.proj(x).transpose(1, 2)

    GPA.pc.set_module_names_to_perforate(["Mixer"])
    GPA.pc.set_output_dimensions([-1, 0, -1])
    model = UPA.perforate_model(nn.Sequential(Mixer()))
    assert model[0].neuron_axis == -2 and model(torch.randn(2, 3, 4)).shape == (2, 4, 3)
    GPA.pc.set_output_dimensions([-1, 0, 0])
    with pytest.raises(CompatConfigError, match="exactly one neuron axis"):
        UPA.perforate_model(nn.Sequential(Mixer()))


def test_modules_to_replace_then_convert(fresh):
    class Wide(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    GPA.pc.append_modules_to_replace([nn.Tanh])
    GPA.pc.append_replacement_modules([lambda old: Wide(nn.Linear(3, 3))])
    model = UPA.perforate_model(nn.Sequential(nn.Linear(2, 3), nn.Tanh()))
    assert isinstance(model[1], Wide) and wrapped(model) == ["0", "1.inner"]


def test_nothing_chosen_says_how_to_choose_and_unwrapped_params_are_noted(fresh, caplog):
    GPA.pc.set_module_names_to_perforate([])
    with pytest.raises(CompatUsageError, match="append_module_names_to_perforate"):
        UPA.perforate_model(Net())
    GPA.reset()
    with caplog.at_level(logging.WARNING, "perforate"):
        UPA.perforate_model(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)))
    assert "no dendrites on 1" in caplog.text


def test_recurrent_layers_need_no_processor(fresh):
    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lstm = nn.LSTM(4, 6, batch_first=True)
            self.head = nn.Linear(6, 2)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])

    GPA.pc.append_modules_to_perforate([nn.LSTM])
    model = Tagger().eval()
    x = torch.randn(3, 5, 4)
    before = model(x)
    model = UPA.perforate_model(model)
    assert wrapped(model) == ["head", "lstm"] and torch.allclose(model(x), before)

"""What scripts written for perforatedai hit (issue 24), each written as such a script is, with
only the import changed; in the 3.0 API (``initialize_pai``, ``*_to_convert``) and the 3.2 API
(``perforate_model``, ``*_to_perforate``) where the item applies to both."""
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import perforate as pf
from perforate.compat.perforatedai import globals_perforatedai as GPA
from perforate.compat.perforatedai import library_perforatedai as LPA
from perforate.compat.perforatedai import modules_perforatedai as PA
from perforate.compat.perforatedai import outputs
from perforate.compat.perforatedai import utils_perforatedai as UPA
from perforate.compat.perforatedai.errors import CompatConfigError, CompatUsageError

from tests.helpers.compat import feed, mlp

GENERATIONS = pytest.mark.parametrize("api", ["3.0", "3.2"])


def convert(api, model):
    return UPA.initialize_pai(model) if api == "3.0" else UPA.perforate_model(model)


def lists(api):
    """The suffix of the lists that choose modules in this generation."""
    return "convert" if api == "3.0" else "perforate"


def adam(model):
    return GPA.pai_tracker.setup_optimizer(model, {"params": model.parameters(), "lr": 1e-2})


def wrapped(model):
    return sorted(pf.dendritic_layers(model))


# ---------------------------------------------------------------------- 1. the graph after restore
@GENERATIONS
def test_the_graphs_parameter_panel_ends_at_the_restored_model(api, fresh, monkeypatch):
    drawn = []

    def recording(history, path, **kwargs):
        drawn.append(plot(history, path, **kwargs))

    plot = outputs.plot_growth
    monkeypatch.setattr(outputs, "plot_growth", recording)
    GPA.pc.set_drawing_pai(True)
    GPA.pc.set_n_epochs_to_switch(2)
    GPA.pc.set_max_dendrite_tries(1)
    model = convert(api, mlp())
    GPA.pai_tracker.set_optimizer(torch.optim.Adam)
    adam(model)
    base = UPA.count_params(model)
    model, seen, _ = feed(model, [50, 60, 60, 60, 60, 60, 60])
    assert seen[-1] == (True, True) and (1, False) in seen  # grew once, then restored the best
    assert UPA.count_params(model) == base
    panel = next(line for line in drawn[-1].axes[1].lines if line.get_label() == "parameters").get_ydata()
    assert max(panel) > base, "the grown size was drawn while it trained"
    assert panel[-1] == base, "the panel ends at the restored model's size"
    assert (fresh / "PAI" / "PAI.png").stat().st_size > 5_000


# ---------------------------------------------------------------------- 2. LPA processors and helpers
class Forecaster(nn.Module):
    """An LSTM time-series model that reads the output sequence (LPA.LSTMProcessor scripts)."""

    def __init__(self, layers=1):
        super().__init__()
        torch.manual_seed(0)
        self.lstm = nn.LSTM(3, 8, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(8, 1)

    def forward(self, x):
        out, (h, c) = self.lstm(x)
        return self.fc(out[:, -1])


SEQ = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(2))


def grow_once(model):
    """Epochs with a flat score until the tracker adds a dendrite; returns the model."""
    GPA.pai_tracker.set_optimizer(torch.optim.Adam)
    GPA.pai_tracker.setup_optimizer(model, {"params": model.parameters(), "lr": 1e-3})
    model, seen, _ = feed(model, [1.0, 1.0, 1.0, 1.0, 1.0])
    assert any(r == 1 for r, _ in seen)
    return model


@GENERATIONS
@pytest.mark.parametrize("layers", [1, 2])
def test_lstm_processor_script_grows_dendrites_on_the_lstm(api, layers, fresh):
    getattr(GPA.pc, f"append_modules_to_{lists(api)}")([nn.LSTM])
    GPA.pc.append_module_names_with_processing(["LSTM"])
    GPA.pc.append_module_by_name_processing_classes([LPA.LSTMProcessor])
    GPA.pc.set_n_epochs_to_switch(1)
    model = Forecaster(layers).eval()
    before = model(SEQ)
    model = convert(api, model)
    model.lstm.set_this_output_dimensions([-1, -1, 0])  # [batch, time, hidden]: as the script does
    assert torch.allclose(model(SEQ), before)
    model = grow_once(model)
    lstm_layers = [n for n in wrapped(model) if n.startswith("lstm")]
    assert len(lstm_layers) == layers
    assert all(pf.dendritic_layers(model)[n].num_dendrites == 1 for n in lstm_layers)
    out, (h, c) = model.lstm(SEQ)  # the script's unpacking still works
    assert out.shape == (4, 5, 8) and h.shape == c.shape == (layers, 4, 8)


@GENERATIONS
@pytest.mark.parametrize("layers", [1, 2])
def test_last_hidden_processor_returns_none_and_the_final_state(api, layers, fresh):
    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lstm = nn.LSTM(3, 8, num_layers=layers, batch_first=True)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            _, last = self.lstm(x)
            return self.fc(last[-1])

    getattr(GPA.pc, f"append_modules_to_{lists(api)}")([nn.LSTM])
    GPA.pc.append_modules_with_processing([nn.LSTM])
    GPA.pc.append_modules_processing_classes([LPA.LSTMProcessorLastHidden])
    GPA.pc.set_n_epochs_to_switch(1)
    plain = Classifier().lstm
    model = convert(api, Classifier())
    none, last = model.lstm(SEQ)
    assert none is None and torch.equal(last, plain(SEQ)[1][0])  # no dendrites yet: h_n itself
    model = grow_once(model).eval()
    assert model(SEQ).shape == (4, 2)
    final = UPA.prepare_final_model(model).eval()  # the inference model keeps the format
    assert final.lstm(SEQ)[0] is None and torch.allclose(final(SEQ), model(SEQ), atol=1e-6)


def test_lstm_cell_with_its_processor_says_what_to_do(fresh):
    class Stepper(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.LSTMCell(3, 8)
            self.fc = nn.Linear(8, 1)

    GPA.pc.append_module_names_to_perforate(["LSTMCell"])
    GPA.pc.append_module_names_with_processing(["LSTMCell"])
    GPA.pc.append_module_by_name_processing_classes([LPA.LSTMCellProcessor])
    with pytest.raises(CompatUsageError, match=r"append_module_ids_to_track\(\['\.cell'\]\)"):
        UPA.perforate_model(Stepper())


def test_processor_lists_that_do_not_pair_up_are_a_config_error(fresh):
    GPA.pc.append_module_names_with_processing(["LSTM", "GRU"])
    GPA.pc.append_module_by_name_processing_classes([LPA.LSTMProcessor])
    GPA.pc.append_modules_to_perforate([nn.LSTM])
    with pytest.raises(CompatConfigError, match="append them in pairs"):
        UPA.perforate_model(Forecaster())


class Basic(nn.Module):
    def __init__(self, planes):
        super().__init__()
        self.conv1 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)

    def forward(self, x):
        return F.relu(self.bn1(self.conv1(x)) + x)


class ResNet(nn.Module):
    """The attributes torchvision's ResNet has (torchvision is not a test dependency)."""

    def __init__(self, classes=10):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        for i in range(1, 5):
            setattr(self, f"layer{i}", nn.Sequential(Basic(8)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


@GENERATIONS
def test_resnet_helpers_replace_the_model_and_get_dendrites(api, fresh):
    images = torch.randn(2, 3, 16, 16)
    GPA.pc.append_modules_to_replace([ResNet])
    GPA.pc.append_replacement_modules([LPA.ResNetPAIPreFC])
    GPA.pc.set_unwrapped_modules_confirmed(True)
    model = convert(api, ResNet())
    assert isinstance(model, LPA.ResNetPAIPreFC) and isinstance(model.pre_fc, PA.PAINeuronModule)
    assert "pre_fc" in wrapped(model) and model(images).shape == (2, 10)
    GPA.reset()
    GPA.pc.set_testing_dendrite_capacity(False)
    GPA.pc.set_unwrapped_modules_confirmed(True)
    plain = ResNet().eval()
    GPA.pc.append_modules_to_replace([ResNet])
    GPA.pc.append_replacement_modules([LPA.ResNetPAI])
    model = convert(api, ResNet()).eval()
    assert "b1" in wrapped(model) and pf.dendritic_layers(model)["b1"].kind == "block"
    assert torch.allclose(model(images), plain(images), atol=1e-6)  # same function, regrouped


# ---------------------------------------------------------------------- 3. output dims, HF folders
@GENERATIONS
def test_set_this_output_dimensions_on_converted_layers(api, fresh):
    class Mixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = GPA.PAISequential([nn.Linear(4, 4), nn.LayerNorm(4)])
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.stem(x))

    model = convert(api, Mixer())
    model.head.set_this_output_dimensions([-1, -1, 0])  # features last: what the layer has
    model.head.set_this_output_dimensions(torch.tensor([-1, 0]))
    with pytest.raises(CompatUsageError, match="PAISequential"):
        model.head.set_this_output_dimensions([-1, 0, -1])
    model.stem.set_this_output_dimensions([-1, 0, -1])  # a block takes the axis it is given
    assert model.stem.neuron_axis == -2
    with pytest.raises(CompatConfigError, match="exactly one 0"):
        model.stem.set_this_output_dimensions([-1, -1])


@GENERATIONS
def test_from_hf_pretrained_reads_a_local_folder(api, fresh, tmp_path):
    GPA.pc.set_n_epochs_to_switch(1)
    model = grow_once(convert(api, mlp()))
    folder = tmp_path / "hub" / "my-model"
    folder.mkdir(parents=True)
    pf.save(model, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"pai_config": UPA.extract_gpa_config()}))
    GPA.reset()
    loaded = UPA.from_hf_pretrained(mlp(), str(folder))
    assert GPA.pc.get_n_epochs_to_switch() == 1  # config.json's pai_config applied
    x = torch.randn(3, 4)
    model.eval(), loaded.eval()
    assert torch.equal(model(x), loaded(x)) and wrapped(loaded) == wrapped(model)
    plain = tmp_path / "plain"
    plain.mkdir()
    from safetensors.torch import save_file
    save_file(mlp().state_dict(), str(plain / "model.safetensors"))
    assert torch.equal(UPA.from_hf_pretrained(mlp(), plain)(x), mlp()(x))
    with pytest.raises(CompatUsageError, match="downloads nothing"):
        UPA.from_hf_pretrained(mlp(), "someone/not-downloaded-model")
    with pytest.raises(CompatUsageError, match="model.safetensors"):  # says how to write the folder
        UPA.upload_to_huggingface(model, "someone/my-model")


# ---------------------------------------------------------------------- 4. track lists
class TargetedConv2d(nn.Conv2d):
    """The layer a script targets for dendrites."""


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = TargetedConv2d(3, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, 2)


@GENERATIONS
def test_track_lists_match_the_exact_type_and_win_over_the_perforate_lists(api, fresh, caplog):
    getattr(GPA.pc, f"set_modules_to_{lists(api)}")([TargetedConv2d])
    GPA.pc.append_modules_to_track([nn.Conv2d, nn.Linear])
    with caplog.at_level(logging.WARNING, "perforate"):
        model = convert(api, ConvNet())
    assert wrapped(model) == ["conv1"]  # the subclass is converted, the plain Conv2d tracked
    if api == "3.2":  # 3.2's default name list holds 'Conv2d' and 'Linear': the track list wins
        assert "track list wins" in caplog.text and ".conv2 (Conv2d: modules_to_track over " \
            "module_names_to_perforate)" in caplog.text


@GENERATIONS
def test_nothing_left_because_the_track_list_took_it_says_so(api, fresh):
    getattr(GPA.pc, f"set_modules_to_{lists(api)}")([TargetedConv2d])
    getattr(GPA.pc, f"set_module_names_to_{lists(api)}")([])
    GPA.pc.append_modules_to_track([TargetedConv2d])
    with pytest.raises(CompatUsageError, match=f"conv1 is on the {lists(api)} lists but also on a track"):
        convert(api, ConvNet())


# ---------------------------------------------------------------------- 5. save name after conversion
@GENERATIONS
def test_a_save_name_set_after_conversion_is_where_files_go(api, fresh, caplog):
    GPA.pc.set_drawing_pai(True)
    GPA.pc.set_n_epochs_to_switch(2)
    model = convert(api, mlp())
    GPA.pc.set_save_name("sweep_run_3")
    with caplog.at_level(logging.WARNING, "perforate"):
        model = grow_once(model)
    run = fresh / "sweep_run_3"
    for name in ("sweep_run_3.png", "sweep_run_3Scores.csv", "latest.pt", "best_model.pt",
                 "sweep_run_3_config.json"):
        assert (run / name).is_file(), name
    assert not (fresh / "PAI" / "latest.pt").exists()
    assert "go to sweep_run_3/" in caplog.text
    again = UPA.load_system(model, GPA.pc.get_save_name(), "latest", True)
    assert GPA.pai_tracker.member_vars["num_dendrites_added"] == 1 and again is model


# ---------------------------------------------------------------------- 6. settings changed late
@GENERATIONS
def test_settings_changed_after_conversion_are_the_ones_logged_and_recorded(api, fresh, caplog):
    GPA.pc.set_testing_dendrite_capacity(True)  # the default, left on at conversion
    with caplog.at_level(logging.WARNING, "perforate"):
        model = convert(api, mlp())
        GPA.pc.set_testing_dendrite_capacity(False)  # ... and turned off before training
        GPA.pc.set_n_epochs_to_switch(7)
        GPA.pai_tracker.set_optimizer(torch.optim.Adam)
        adam(model)
        feed(model, [50, 60, 61])
    assert "testing_dendrite_capacity is on" not in caplog.text
    recorded = json.loads((fresh / "PAI" / "PAI_config.json").read_text())
    assert recorded["testing_dendrite_capacity"] is False and recorded["n_epochs_to_switch"] == 7
    assert GPA.pai_tracker.num_dendrites_added == 0  # no dendrite every epoch


def test_the_capacity_test_is_announced_when_it_runs(fresh, caplog):
    GPA.pc.set_testing_dendrite_capacity(True)
    model = UPA.perforate_model(mlp())
    with caplog.at_level(logging.WARNING, "perforate"):
        feed(model, [50])
    assert "testing_dendrite_capacity is on" in caplog.text


# ---------------------------------------------------------------------- 7. the small notes
def test_notes_name_the_call_made_and_say_what_happens_instead(fresh, caplog):
    with caplog.at_level(logging.WARNING, "perforate"):
        GPA.pc.append_module_names_with_processing(["LSTM"])
        GPA.pc.append_module_by_name_processing_classes([LPA.LSTMProcessor])
        GPA.pc.set_using_safe_tensors(False)
    assert "set_module_names_with_processing" not in caplog.text
    assert "GPA.pc.set_using_safe_tensors(False) changes nothing" in caplog.text
    assert "always written as safetensors" in caplog.text and "not implement" not in caplog.text


@GENERATIONS
def test_a_module_with_its_own_bias_is_information_not_a_warning(api, fresh, caplog):
    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)
            self.shift = nn.Parameter(torch.zeros(3))

        def forward(self, x):
            return self.lin(x) + self.shift

    with caplog.at_level(logging.INFO, "perforate"):
        convert(api, nn.Sequential(Shifted()))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any("no dendrites" in r.getMessage() for r in warnings)
    assert "0.shift is a parameter of a module itself" in caplog.text and "nothing to do" in caplog.text

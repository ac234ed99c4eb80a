"""Every model family end to end: wrapped, grown in gd and pb with outputs unchanged at growth,
saved and loaded identically, exported to plain modules that match and torch.export/trace."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import perforate as pf
from perforate.experiments.models import LSTMNet, TabularNet, TransformerNet
from tests.helpers.families import ATOL, _first, _grow, _randomize, check_family, check_pb


class Encoder(nn.Module):
    def __init__(self, batch_first=True, norm_first=False):
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=batch_first)
        self.head = nn.Linear(8, 3)

    def forward(self, x, mask=None):
        return self.head(self.encoder(x, src_key_padding_mask=mask))


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.decoder = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=True)

    def forward(self, x, memory):
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        return self.decoder(x, memory, tgt_mask=mask, tgt_is_causal=True)


class CrossAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, kdim=5, vdim=6, add_bias_kv=True)

    def forward(self, q, k, v):
        out, weights = self.attn(q, k, v)
        return out + weights.sum()


class Recurrent(nn.Module):
    def __init__(self, cls, batch_first, bidirectional, layers):
        super().__init__()
        self.rnn = cls(3, 5, num_layers=layers, batch_first=batch_first, bidirectional=bidirectional)
        self.batch_first = batch_first
        self.head = nn.Linear(5 * (2 if bidirectional else 1), 2)

    def forward(self, x):
        out, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state
        seq = out.data if hasattr(out, "batch_sizes") else out
        return torch.cat([self.head(seq).flatten(), h.flatten()])  # outputs and final state


def _packed(x):
    return pack_padded_sequence(x, torch.tensor([6, 3, 5, 1]), batch_first=True, enforce_sorted=False)


CASES = {
    "encoder": (lambda: Encoder(), lambda: (torch.randn(4, 5, 8),), {}),
    "encoder_time_major_norm_first": (lambda: Encoder(False, True), lambda: (torch.randn(5, 4, 8),), {}),
    "decoder": (Decoder, lambda: (torch.randn(3, 5, 8), torch.randn(3, 4, 8)), {}),
    "cross_attention": (CrossAttention, lambda: (torch.randn(4, 3, 8), torch.randn(6, 3, 5),
                                                 torch.randn(6, 3, 6)), {}),
    "lstm_2layer_bidirectional": (lambda: Recurrent(nn.LSTM, True, True, 2), lambda: (torch.randn(4, 6, 3),), {}),
    "gru_time_major": (lambda: Recurrent(nn.GRU, False, False, 1), lambda: (torch.randn(6, 4, 3),), {}),
    "rnn_2layer": (lambda: Recurrent(nn.RNN, True, False, 2), lambda: (torch.randn(4, 6, 3),), {}),
    "lstm_packed": (lambda: Recurrent(nn.LSTM, True, True, 2), lambda: (_packed(torch.randn(4, 6, 3)),), {}),
    "tabular_embeddings": (lambda: TabularNet([3, 5], 2, 2, 8),
                           lambda: (torch.randint(0, 3, (6, 2)), torch.randn(6, 2)), {}),
    "harness_transformer": (lambda: TransformerNet(2, 5, 3, 8), lambda: (torch.randn(4, 5, 2),), {}),
    "harness_lstm": (lambda: LSTMNet(2, 3, 6), lambda: (torch.randn(4, 5, 2),), {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_family_wraps_grows_saves_and_exports(case, tmp_path):
    build, make_inputs, kwargs = CASES[case]
    check_family(build, make_inputs, kwargs, build, tmp_path, trace="packed" not in case)


@pytest.mark.parametrize("training", ["online", "cached"])
@pytest.mark.parametrize("case", ["encoder", "cross_attention", "lstm_2layer_bidirectional", "lstm_packed"])
def test_family_pb_cycle(case, training):
    check_pb(*CASES[case], training=training)


def test_attention_projections_are_per_channel_sites_and_fast_paths_are_guarded():
    model = pf.perforate(Encoder())
    names = set(pf.dendritic_layers(model))
    attn = "encoder.layers.0.self_attn"
    assert {f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj", f"{attn}.out_proj",
            "encoder.layers.0.linear1"} <= names
    layer = model.encoder.layers[0]
    assert isinstance(layer, nn.TransformerEncoderLayer) and isinstance(layer.self_attn, nn.MultiheadAttention)
    assert model.encoder.use_nested_tensor is False
    with pytest.raises(pf.BypassError, match="q_proj"):
        layer.self_attn.in_proj_weight
    _grow(model, 0)
    _randomize(model)
    x, mask = torch.randn(2, 5, 8), torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    model.eval()
    with torch.no_grad():  # eval + no_grad + padding mask: where the fused fast paths would run
        out = model(x, mask)
        assert torch.isfinite(out[0]).all()
        _grow(model, 1)
        torch.testing.assert_close(model(x, mask)[0], out[0])
    # without dendrites, export gives the stock modules back (fast path and all)
    plain = pf.export(pf.perforate(Encoder()))
    assert type(plain.encoder.layers[0]) is nn.TransformerEncoderLayer
    assert type(plain.encoder.layers[0].self_attn) is nn.MultiheadAttention
    assert plain.encoder.use_nested_tensor and set(plain.state_dict()) == set(Encoder().state_dict())


def test_exported_attention_and_recurrent_models_torch_export():
    for build, make_inputs, _ in (CASES["encoder"], CASES["lstm_2layer_bidirectional"]):
        torch.manual_seed(0)
        model = pf.perforate(build())
        _grow(model, 0)
        _randomize(model)
        exported = pf.export(model).eval()
        inputs = make_inputs()
        program = torch.export.export(exported, inputs)
        with torch.no_grad():
            torch.testing.assert_close(_first(program.module()(*inputs)), _first(exported(*inputs)),
                                       rtol=1e-5, atol=ATOL)


def test_recurrent_state_reads_the_dendrites_and_packed_matches_padded():
    torch.manual_seed(0)
    rnn = pf.perforate(nn.GRU(3, 4, batch_first=True, bidirectional=True))
    rnn.add_dendrites(1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        rnn.output_weight.normal_()
    x = torch.randn(2, 5, 3)
    out, h = rnn(x)
    torch.testing.assert_close(h[0], out[:, -1, :4])  # forward direction: last step
    torch.testing.assert_close(h[1], out[:, 0, 4:])  # reverse direction: first step
    packed_out, packed_h = rnn(pack_padded_sequence(x[:1, :3], torch.tensor([3]), batch_first=True))
    short_out, short_h = rnn(x[:1, :3])
    torch.testing.assert_close(packed_h, short_h)
    unbatched_out, unbatched_h = rnn(x[0])
    torch.testing.assert_close(unbatched_h, h[:, 0])


def test_models_the_library_cannot_wrap_get_a_clear_error():
    class OwnAttention(nn.MultiheadAttention):
        def forward(self, x):
            return F.linear(x, self.out_proj.weight, self.out_proj.bias)

    model = pf.perforate(nn.Sequential(OwnAttention(4, 2)))
    with pytest.raises(pf.BypassError, match=r"0\.out_proj.*exclude=\['0\.out_proj'\]"):
        model(torch.randn(2, 4))
    with pytest.raises(pf.WrapError, match="no layer was selected"):
        pf.perforate(nn.Sequential(nn.LSTM(2, 3)), pf.Config(include=["nothing"]))


@pytest.mark.slow
@pytest.mark.parametrize("script", ["char_gpt.py --epochs 2 --steps 2", "lstm_lm.py --epochs 2 --steps 2",
                                    "gcn_karate.py --epochs 4 --seeds 1"])
def test_family_examples_run(script):
    import pathlib
    import subprocess
    import sys

    examples = pathlib.Path(__file__).resolve().parents[2] / "examples"
    name, *args = script.split()
    run = subprocess.run([sys.executable, str(examples / name), *args], cwd=examples,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "baseline" in run.stdout and "dendrites (gd)" in run.stdout

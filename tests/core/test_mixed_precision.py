"""Growth and training under ``torch.autocast`` (CPU, bfloat16): gd and pb on an MLP, a CNN
with conv + batch-norm blocks and a Llama-style model (tiny config, random weights)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import perforate as pf

from tests.helpers.models import ConvBN

transformers = pytest.importorskip("transformers")

CLASSES = 4


class _CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = ConvBN(3, 8)
        self.head = nn.Linear(8 * 6 * 6, CLASSES)

    def forward(self, x):
        return self.head(torch.relu(self.block(x)).flatten(1))


class _Llama(nn.Module):
    """A Llama causal LM returning logits [B, T, V] (the task: predict the next token)."""

    def __init__(self):
        super().__init__()
        cfg = transformers.LlamaConfig(vocab_size=CLASSES * 8, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                       max_position_embeddings=32)
        self.lm = transformers.LlamaForCausalLM(cfg)

    def forward(self, x):
        return self.lm(input_ids=x).logits


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.att = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x):
        return self.head(self.att(x, x, x, need_weights=False)[0].mean(1))


def _family(name):
    """``(model, x, target, perforate kwargs)``; the model is wrapped by the caller."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, CLASSES))
        return model, torch.randn(32, 8, generator=g), torch.randint(0, CLASSES, (32,), generator=g), {}
    if name == "cnn":
        return (_CNN(), torch.randn(16, 3, 6, 6, generator=g),
                torch.randint(0, CLASSES, (16,), generator=g), {"blocks": [ConvBN]})
    if name == "attention":
        return (_Attention(), torch.randn(8, 5, 16, generator=g),
                torch.randint(0, CLASSES, (8,), generator=g), {})
    tokens = torch.randint(0, CLASSES * 8, (4, 9), generator=g)
    return _Llama(), tokens[:, :-1], tokens[:, 1:], {}


def _loss(out, target):
    return F.cross_entropy(out.float().flatten(0, -2), target.flatten())


def _forward(model, x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x)


@pytest.mark.parametrize("family", ["mlp", "cnn", "attention", "llama"])
@pytest.mark.parametrize("mode", ["gd", "pb"])
def test_growth_under_autocast_keeps_dtype_and_outputs(family, mode):
    model, x, target, kwargs = _family(family)
    plain_dtype = _forward(model, x).dtype
    cfg = pf.Config(mode=mode, seed=0)
    model = pf.perforate(model, cfg, **kwargs)
    grower = pf.Grower(model, cfg, optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-3))
    model.eval()
    before = _forward(model, x)
    grower.add_dendrites()  # gd: a dendrite with v = 0; pb: the candidate pools
    model.eval()
    after = _forward(grower.model, x)
    assert after.dtype == before.dtype == plain_dtype
    assert torch.equal(after, before)
    if mode == "pb":  # one recorded epoch, the candidate fit and the join: outputs unchanged
        grower.model.train()
        loss = _loss(_forward(grower.model, x), target)
        grower.optimizer.zero_grad()
        loss.backward()
        grower.optimizer.step()
        grower.model.eval()
        joined_from = _forward(grower.model, x)
        decision = grower.step(0.5)
        assert decision.event == "join"
        grower.model.eval()
        joined = _forward(grower.model, x)
        assert joined.dtype == plain_dtype
        assert torch.equal(joined, joined_from)
    assert sum(layer.num_dendrites for layer in pf.dendritic_layers(grower.model).values()) > 0 \
        or mode == "pb" and grower.state.phase == "dendrite"


@pytest.mark.parametrize("family", ["mlp", "cnn", "attention", "llama"])
@pytest.mark.parametrize("mode", ["gd", "pb"])
def test_training_with_growth_under_autocast(family, mode):
    model, x, target, kwargs = _family(family)
    cfg = pf.Config(mode=mode, seed=0, candidate_steps=5)
    model = pf.perforate(model, cfg, **kwargs)
    grower = pf.Grower(model, cfg, optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-3))
    events = []
    for epoch in range(6):
        grower.model.train()
        loss = _loss(_forward(grower.model, x), target)
        grower.optimizer.zero_grad()
        loss.backward()
        grower.optimizer.step()
        assert torch.isfinite(loss)
        events.append(grower.step(0.5 + 0.01 * epoch).event)  # rising: the growth is kept
        if epoch == 0:
            grower.add_dendrites()
    assert any(layer.num_dendrites for layer in pf.dendritic_layers(grower.model).values())
    if mode == "pb":
        assert "join" in events


def test_online_pb_candidates_train_under_autocast():
    model, x, target, kwargs = _family("cnn")
    cfg = pf.Config(mode="pb", seed=0, candidate_training="online")
    model = pf.perforate(model, cfg, **kwargs)
    grower = pf.Grower(model, cfg, optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-3))
    grower.add_dendrites()
    pool = pf.dendritic_layers(model)["block"].candidate_pool
    before = [p.detach().clone() for p in pool.parameters()]
    loss = _loss(_forward(grower.model, x), target)
    grower.optimizer.zero_grad()
    loss.backward()
    grower.optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, pool.parameters()))
    assert float(pool.score.max()) > 0

"""The README's recipes for Lightning and Hugging Face users: a factory is a few lines, and
the frontier runs on it (tiny models, 2 epochs, one seed)."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from perforate.experiments.study import dendrites_vs_width

QUICK = dict(grow_widths=[2], arms=["gd"], seeds=1, epochs=2, progress=False)


def test_a_lightning_module_with_a_width_argument(tmp_path):
    L = pytest.importorskip("lightning.pytorch")

    class LitNet(L.LightningModule):  # an ordinary LightningModule with a width argument
        def __init__(self, width=32):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 3))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y)

    # the recipe: the factory, and one epoch through the module's own training_step
    def make_model(width):
        return LitNet(width=width)

    def train_epoch(module, loader, optimizer):
        for i, batch in enumerate(loader):
            optimizer.zero_grad()
            module.training_step(batch, i).backward()
            optimizer.step()

    g = torch.Generator().manual_seed(0)
    x = torch.randn(150, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    loaders = [DataLoader(TensorDataset(x[a:b], y[a:b]), batch_size=32) for a, b in
               ((0, 100), (100, 125), (125, 150))]
    result = dendrites_vs_width(make_model, loaders, widths=[2, 8], train_epoch=train_epoch,
                                out=tmp_path, **QUICK)
    assert len(result.table) == 3 and result.table["params"].nunique() == 2
    assert result.doc["task"]["train_epoch"].endswith("train_epoch")


def test_a_hugging_face_config_with_a_width_field(tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab, length = 16, 8

    # the recipe: the width is a field of the model's config
    def make_model(width):
        config = transformers.BertConfig(vocab_size=vocab, hidden_size=8, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=width,
                                         max_position_embeddings=length, num_labels=2)
        return transformers.BertForSequenceClassification(config)

    def train_epoch(model, loader, optimizer):
        for batch in loader:
            optimizer.zero_grad()
            model(**batch).loss.backward()
            optimizer.step()

    @torch.no_grad()
    def accuracy(model, loader):
        right = total = 0
        for batch in loader:
            right += int((model(**batch).logits.argmax(-1) == batch["labels"]).sum())
            total += len(batch["labels"])
        return 100.0 * right / total

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (96, length), generator=g)
    labels = (ids[:, 0] > vocab // 2).long()
    rows = [{"input_ids": i, "labels": lab} for i, lab in zip(ids, labels)]
    loaders = [DataLoader(rows[a:b], batch_size=16) for a, b in ((0, 64), (64, 80), (80, 96))]
    result = dendrites_vs_width(make_model, loaders, widths=[2, 16], train_epoch=train_epoch,
                                evaluate=accuracy, direction="max",
                                example_input=lambda batch: batch["input_ids"], out=tmp_path,
                                **QUICK)
    table = result.table
    assert len(table) == 3 and table["params"].nunique() == 2
    assert table["flops_per_sample"].notna().all() and (table["test_score"] <= 100).all()

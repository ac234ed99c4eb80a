"""A tiny LightningModule that logs a scripted 'score' and its data, for the Lightning tests
(and the two-process DDP script they run). Import it after ``pytest.importorskip("lightning")``."""
import lightning.pytorch as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

LR = 0.05


class Net(L.LightningModule):
    """A tiny classifier that also logs a scripted 'score' so growth happens at known epochs."""

    def __init__(self, scores):
        super().__init__()
        self.scores = list(scores)
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def on_validation_epoch_end(self):
        self.log("score", self.scores[min(self.current_epoch, len(self.scores) - 1)])

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=LR)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)]


def _loaders():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return (DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16),
            DataLoader(TensorDataset(x[64:], y[64:]), batch_size=32))

"""PyTorch Lightning + dendrites on MNIST-1D: an ordinary Lightning script plus 2 lines.

    python examples/lightning_mnist1d.py --out runs/lightning_mnist1d

The two added lines are marked ``# perforate`` (use ``pf.Config(mode="pb", ...)`` for Perforated
Backpropagation). The callback perforates the module at fit start,
grows dendrites when val_acc plateaus, rebuilds the optimizer/scheduler from
``configure_optimizers``, stops when growth is done and restores the best model. Lightning's
checkpoints reload with ``perforate.integrations.lightning.load_checkpoint``.
"""
import argparse

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

import perforate as pf
from perforate.experiments.data.datasets import load_dataset
from perforate.integrations.lightning import DendriteCallback, load_checkpoint  # perforate


class MLP(L.LightningModule):
    def __init__(self, width=16, lr=2e-3):
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(40, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean() * 100)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_acc", (self(x).argmax(1) == y).float().mean() * 100)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--out", default="runs/lightning_mnist1d")
    args = parser.parse_args()
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    data = load_dataset("mnist1d", seed=0)
    train, val, test = data.loaders(batch_size=64, seed=0)
    model = MLP()
    ckpt = ModelCheckpoint(dirpath=f"{args.out}/checkpoints", monitor="val_acc", mode="max")
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=args.epochs, logger=CSVLogger(args.out),
        enable_progress_bar=False, enable_model_summary=False,
        # the callback plans growth in the trainer's max_epochs (or pass pf.Config(max_epochs=...))
        callbacks=[ckpt, DendriteCallback(pf.Config(patience=8, max_dendrites=3), monitor="val_acc",  # perforate
                                          out_dir=f"{args.out}/growth")],
    )
    trainer.fit(model, train, val)
    grower = next(cb.grower for cb in trainer.callbacks if isinstance(cb, DendriteCallback))
    summary = grower.summary()
    print(f"epochs: {summary['epochs']}, best val_acc {summary['best_score']:.2f} at epoch "
          f"{summary['best_epoch']} with {summary['best_dendrites']} dendrite(s) per layer, "
          f"params {summary['params']}")
    print(f"test accuracy (best model): {trainer.test(model, test, verbose=False)[0]['test_acc']:.2f}%")
    reloaded = load_checkpoint(MLP(), ckpt.best_model_path).eval()
    model.eval()
    x = data.x_test[:256]
    print(f"best Lightning checkpoint reloads: {torch.equal(reloaded(x), model(x))} ({ckpt.best_model_path})")
    print(f"growth graph: {args.out}/growth/growth.png")


if __name__ == "__main__":
    main()

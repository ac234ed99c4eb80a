"""PyTorch Tabular + dendrites: a CategoryEmbedding model on generated mixed-type data (offline).

    pip install -e ".[tabular]"            # its own environment: PyTorch Tabular needs pandas < 3
    python examples/tabular_pytorch_tabular.py --out runs/tabular

The data are generated here (scikit-learn's ``make_classification`` for the numeric columns,
two categorical columns derived from them, one of which interacts with the label), split
into train / validation / test. The script is an ordinary PyTorch Tabular script plus the
lines marked ``# perforate``: the callback wraps the backbone's and the head's Linear layers
and keeps the best validation epoch; as in the other family examples the growth is forced at
the middle of the epoch budget (``Grower.add_dendrites``, function-preserving), so the run
shows what one growth does (in your own runs leave it to the callback: it grows when the
validation loss plateaus). The plain model trains the same way for comparison. Then the grown
network is saved with ``pf.save`` and loaded into a fresh model PyTorch Tabular builds from
the same configs.
"""
import argparse
import logging
import warnings

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_tabular import TabularModel
from pytorch_tabular.config import DataConfig, OptimizerConfig, TrainerConfig
from pytorch_tabular.models import CategoryEmbeddingModelConfig
from sklearn.datasets import make_classification

import perforate as pf
from perforate.integrations.tabular import DendriteCallback  # perforate

NUMERIC = [f"x{i}" for i in range(8)]
CATEGORICAL = ["band", "region"]


def make_data(n: int, seed: int = 0) -> pd.DataFrame:
    x, y = make_classification(n_samples=n, n_features=8, n_informative=5, n_redundant=1,
                               flip_y=0.02, class_sep=0.8, random_state=seed)
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(x, columns=NUMERIC)
    df["band"] = pd.qcut(df["x0"], 5, labels=False).astype(str)  # a binned numeric column
    region = rng.integers(0, 4, n)
    df["region"] = np.array(["north", "south", "east", "west"])[region]
    flip = (region == 3) & (df["x1"].to_numpy() > 0.5)  # the label depends on region x x1
    df["target"] = np.where(flip, 1 - y, y)
    return df


def tabular_model(epochs: int, seed: int) -> TabularModel:
    return TabularModel(
        data_config=DataConfig(target=["target"], continuous_cols=NUMERIC, categorical_cols=CATEGORICAL),
        model_config=CategoryEmbeddingModelConfig(task="classification", layers="8-4",
                                                  learning_rate=1e-2, seed=seed),
        optimizer_config=OptimizerConfig(),
        trainer_config=TrainerConfig(max_epochs=epochs, batch_size=128, accelerator="cpu",
                                     checkpoints=None, early_stopping=None, load_best=False,
                                     progress_bar="none", seed=seed,
                                     trainer_kwargs={"enable_model_summary": False}),
        verbose=False)


class GrowAt(pl.Callback):
    """Forces one growth when epoch ``epoch`` starts (the comparison's mid-budget growth)."""

    def __init__(self, dendrites: DendriteCallback, epoch: int):
        self.dendrites, self.epoch = dendrites, epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            self.dendrites.grower.add_dendrites()


def accuracy(model: TabularModel, df: pd.DataFrame) -> float:
    pred = model.predict(df)
    return float((pred["target_prediction"].to_numpy() == df["target"].to_numpy()).mean() * 100)


def valid_loss(model: TabularModel, df: pd.DataFrame) -> float:
    return float(model.evaluate(df, verbose=False)[0]["test_loss"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/tabular")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")  # Lightning's advice on workers and loggers

    df = make_data(args.rows, args.seed)
    n = len(df)
    train, valid, test = df.iloc[:n * 6 // 10], df.iloc[n * 6 // 10:n * 8 // 10], df.iloc[n * 8 // 10:]

    plain = tabular_model(args.epochs, args.seed)
    plain.fit(train=train, validation=valid)
    print(f"baseline:        validation loss {valid_loss(plain, valid):.4f}, test accuracy "
          f"{accuracy(plain, test):.2f}%, params {pf.count_parameters(plain.model)}")

    grown = tabular_model(args.epochs, args.seed)
    # growth_lr_scale=1: the plain arm keeps its rate (0.3, the default, is for growth at a plateau)
    config = pf.Config(patience=args.epochs, max_dendrites=1, growth_lr_scale=1.0)  # perforate
    dendrites = DendriteCallback(config, monitor="valid_loss", mode="min", out_dir=f"{args.out}/growth")
    grown.fit(train=train, validation=valid, callbacks=[dendrites, GrowAt(dendrites, args.epochs // 2)])
    summary = dendrites.grower.summary()
    print(f"dendrites (gd):  validation loss {valid_loss(grown, valid):.4f}, test accuracy "
          f"{accuracy(grown, test):.2f}%, params {pf.count_parameters(grown.model)} (best epoch "
          f"{summary['best_epoch']}, {summary['best_dendrites']} dendrite(s) on "
          f"{len(pf.dendritic_layers(grown.model))} layers)")

    path = f"{args.out}/grown.pt"
    pf.save(grown.model, path)
    again = tabular_model(args.epochs, args.seed)
    fresh = pf.load(path, again.prepare_model(again.prepare_dataloader(train, valid))).eval()
    batch = next(iter(grown.datamodule.val_dataloader()))
    grown.model.eval()
    with torch.no_grad():
        same = torch.equal(fresh(batch)["logits"], grown.model(batch)["logits"])
    print(f"saved network reloads into a fresh PyTorch Tabular model: {same}; "
          f"growth graph: {args.out}/growth/growth.png")


if __name__ == "__main__":
    main()

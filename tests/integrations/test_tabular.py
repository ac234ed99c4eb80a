"""PyTorch Tabular (``perforate[tabular]``, its own environment: .ci/run's second virtualenv):
the callback inside ``TabularModel.fit`` on small generated data. Skipped where PyTorch
Tabular is not installed (the main environment: it needs pandas < 3)."""
from __future__ import annotations

import logging
import pathlib
import subprocess
import sys
import warnings

import pytest
import torch

import perforate as pf

pytest.importorskip("pytorch_tabular")
import pandas as pd  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
from pytorch_tabular import TabularModel  # noqa: E402
from pytorch_tabular.config import DataConfig, OptimizerConfig, TrainerConfig  # noqa: E402
from pytorch_tabular.models import CategoryEmbeddingModelConfig  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402

from perforate.integrations.tabular import DendriteCallback  # noqa: E402

NUMERIC = ["x0", "x1", "x2", "x3"]


@pytest.fixture(autouse=True)
def _quiet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # PyTorch Tabular and Lightning write scratch folders in the cwd
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _data(n=240, seed=0):
    x, y = make_classification(n_samples=n, n_features=4, n_informative=3, n_redundant=0, random_state=seed)
    df = pd.DataFrame(x, columns=NUMERIC)
    df["band"] = pd.qcut(df["x0"], 3, labels=False).astype(str)
    df["target"] = y
    return df.iloc[:160], df.iloc[160:]


def _model(epochs):
    return TabularModel(
        data_config=DataConfig(target=["target"], continuous_cols=NUMERIC, categorical_cols=["band"]),
        model_config=CategoryEmbeddingModelConfig(task="classification", layers="8-4", learning_rate=1e-2,
                                                  seed=0),
        optimizer_config=OptimizerConfig(),
        trainer_config=TrainerConfig(max_epochs=epochs, batch_size=32, accelerator="cpu", checkpoints=None,
                                     early_stopping=None, load_best=False, progress_bar="none", seed=0,
                                     trainer_kwargs={"enable_model_summary": False}),
        verbose=False)


class _GrowAt(pl.Callback):
    """Forces a growth at the start of ``epoch``; records a fixed batch's logits around it."""

    def __init__(self, dendrites, epoch, batch):
        self.dendrites, self.epoch, self.batch = dendrites, epoch, batch
        self.around = None

    def _logits(self, module):
        module.eval()
        with torch.no_grad():
            out = module(self.batch)["logits"].clone()
        module.train()
        return out

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            before = self._logits(pl_module)
            self.dendrites.grower.add_dendrites()
            self.held = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
            self.around = (before, self._logits(pl_module))


def test_fit_grows_the_tabular_model_and_the_grown_network_reloads(tmp_path):
    train, valid = _data()
    tabular = _model(epochs=4)
    batch = next(iter(tabular.prepare_dataloader(train, valid).val_dataloader()))
    dendrites = DendriteCallback(pf.Config(patience=10, max_dendrites=1, growth_lr_scale=1.0, plots=False))
    grow = _GrowAt(dendrites, 2, batch)
    tabular.fit(train=train, validation=valid, callbacks=[dendrites, grow])

    model = tabular.model
    layers = pf.dendritic_layers(model)
    # the Linear layers; the categorical embeddings stay plain
    assert set(layers) == {"_backbone.linear_layers.0", "_backbone.linear_layers.2", "head.layers.0"}
    assert [r["event"] for r in dendrites.grower.history][1:] == ["grow", "", "done"]
    assert "valid_loss" in dendrites.config.score_name and len(dendrites.grower.history) == 4
    before, after = grow.around
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)  # growth is function-preserving
    # the rebuilt optimizer (PyTorch Tabular's configure_optimizers) held the dendrites; they trained
    assert all(id(layer.output_weight) in grow.held for layer in layers.values())
    assert all(layer.num_dendrites == 1 and torch.count_nonzero(layer.output_weight) > 0
               for layer in layers.values())

    pf.save(model, tmp_path / "grown.pt")
    again = _model(epochs=4)
    fresh = pf.load(tmp_path / "grown.pt", again.prepare_model(again.prepare_dataloader(train, valid))).eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(fresh(batch)["logits"], model(batch)["logits"])
    exported = pf.export(model).eval()
    with torch.no_grad():
        torch.testing.assert_close(exported(batch)["logits"], model(batch)["logits"], rtol=1e-5, atol=1e-5)


def test_the_monitored_validation_loss_drives_growth():
    train, valid = _data()
    tabular = _model(epochs=3)
    # no epoch counts as an improvement: a plateau after one epoch, so the callback grows
    cfg = pf.Config(patience=1, smoothing=1, max_dendrites=1, improvement_threshold=10.0,
                    train_rise=float("inf"), overfit_gap=float("inf"), plots=False)
    dendrites = DendriteCallback(cfg, budget=False)  # the no-budget rule: grow at the first plateau
    tabular.fit(train=train, validation=valid, callbacks=[dendrites])
    history = dendrites.grower.history
    assert history[1]["event"] == "grow" and history[2]["dendrites"] == 1
    assert history[2]["lr"] == pytest.approx(0.3 * 1e-2)  # PyTorch Tabular's optimizer, rebuilt and scaled
    assert history[0]["score"] == history[0]["valid_loss_0"]  # the score is its logged valid_loss
    assert "valid_accuracy" in history[0]  # the other logged metrics go into the history


@pytest.mark.slow
def test_example_runs(tmp_path):
    examples = pathlib.Path(__file__).resolve().parents[2] / "examples"
    run = subprocess.run([sys.executable, str(examples / "tabular_pytorch_tabular.py"), "--epochs", "4",
                          "--rows", "400", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "baseline" in run.stdout and "dendrites (gd)" in run.stdout
    assert "fresh PyTorch Tabular model: True" in run.stdout

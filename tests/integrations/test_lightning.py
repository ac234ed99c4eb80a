"""DendriteCallback: growth, optimizer rebuild, best-model restore, checkpoints, EarlyStopping."""
from __future__ import annotations

import csv
import logging

import pytest
import torch
from torch import nn

import perforate as pf

L = pytest.importorskip("lightning.pytorch")
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from perforate.integrations.lightning import DendriteCallback, load_checkpoint  # noqa: E402
from tests.helpers.lightning import LR, Net, _loaders  # noqa: E402


class Recorder(L.Callback):
    """Before DendriteCallback's step: each epoch's trained weights, LR and optimizer contents."""

    def __init__(self):
        self.states, self.lrs, self.opt_has_dendrites = [], [], []

    def on_train_epoch_start(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        self.lrs.append(opt.param_groups[0]["lr"])
        in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
        dendrite_params = [p for n, p in pl_module.named_parameters() if "dendrite" in n or "output_weight" in n]
        self.opt_has_dendrites.append(bool(dendrite_params) and all(id(p) in in_opt for p in dendrite_params))

    def on_train_epoch_end(self, trainer, pl_module):
        self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def _trainer(tmp_path, callbacks, max_epochs, **kw):
    return L.Trainer(accelerator="cpu", devices=1, max_epochs=max_epochs, callbacks=callbacks,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     default_root_dir=tmp_path, **kw)


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_growth_rebuilds_optimizer_restores_best_and_reloads(tmp_path):
    # epoch 1 plateaus -> grow; epoch 2 improves (best); epoch 3 plateaus -> done (max_dendrites=1)
    net = Net([0.5, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9])
    cfg = pf.Config(patience=1, max_dendrites=1, improvement_threshold_abs=0.01, growth_lr_scale=1.0)
    recorder = Recorder()
    dcb = DendriteCallback(cfg, monitor="score", mode="max", out_dir=tmp_path / "run", budget=False)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="score", mode="max", save_top_k=1)
    trainer = _trainer(tmp_path, [recorder, dcb, ckpt], max_epochs=8, logger=CSVLogger(tmp_path))
    train, val = _loaders()
    trainer.fit(net, train, val)

    assert [r["event"] for r in dcb.grower.history] == ["", "grow", "", "done"]
    assert trainer.current_epoch == 4  # stopped by the callback, not by max_epochs
    layers = pf.dendritic_layers(net)
    assert set(layers) == {"model.0", "model.2"}
    assert all(layer.num_dendrites == 1 for layer in layers.values())
    # the rebuilt optimizer held the new parameters, and they trained: v left zero
    assert recorder.opt_has_dendrites == [False, False, True, True]
    assert torch.count_nonzero(recorder.states[2]["model.0.output_weight"]) > 0
    # the schedule continued through the rebuild instead of restarting at LR
    assert recorder.lrs[2] == pytest.approx(LR * 0.9 ** 2)
    # the best epoch's weights were restored at the end, not the last epoch's
    assert not _same(recorder.states[3], recorder.states[2])
    assert _same(net.state_dict(), recorder.states[2])
    # metrics reached the logger
    with open(tmp_path / "lightning_logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["perforate/dendrites"]) for r in rows if r.get("perforate/dendrites")] == [0, 1, 1, 1]
    assert (tmp_path / "run" / "history.csv").exists() and (tmp_path / "run" / "growth.png").exists()

    # checkpoints reload into fresh, un-perforated modules with identical outputs
    x = torch.randn(5, 8)
    net.eval()
    expected = net(x)
    trainer.save_checkpoint(tmp_path / "final.ckpt")
    for path in (tmp_path / "final.ckpt", ckpt.best_model_path):
        fresh = load_checkpoint(Net([0.0]), path).eval()
        assert torch.equal(fresh(x), expected)
    # the Trainer itself loads a grown checkpoint into a fresh module (sized by the load hook)
    fresh = Net([0.0])
    reloaded_acc = trainer.validate(fresh, val, ckpt_path=ckpt.best_model_path, verbose=False)[0]["val_acc"]
    assert reloaded_acc == trainer.validate(net, val, verbose=False)[0]["val_acc"]
    assert all(layer.num_dendrites == 1 for layer in pf.dendritic_layers(fresh).values())
    # a weights-only checkpoint has no structure entry: the config and the tensor shapes suffice
    trainer.save_checkpoint(tmp_path / "weights.ckpt", weights_only=True)
    with pytest.raises(pf.CheckpointError, match="config"):
        load_checkpoint(Net([0.0]), tmp_path / "weights.ckpt")
    fresh = load_checkpoint(Net([0.0]), tmp_path / "weights.ckpt", config=cfg).eval()
    assert torch.equal(fresh(x), expected)


def test_resume_from_lightning_checkpoint_continues_growth(tmp_path):
    scores = [0.5, 0.5, 0.9, 0.9, 0.9, 0.9]
    cfg = pf.Config(patience=1, max_dendrites=1, improvement_threshold_abs=0.01, growth_lr_scale=1.0)
    train, val = _loaders()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    first = Net(scores)
    dcb = DendriteCallback(cfg, monitor="score", attribute="model", budget=False)  # only net.model is perforated
    _trainer(tmp_path, [dcb, ckpt], max_epochs=2, logger=False).fit(first, train, val)
    # max_epochs ended the run before growth finished: the best (epoch 0, no dendrites) is restored
    assert dcb.grower.done and dcb.grower.history[-1]["event"] == "grow+done"
    assert all(layer.num_dendrites == 0 for layer in pf.dendritic_layers(first).values())

    # last.ckpt was written after the growth step: resuming continues with one dendrite
    second = Net(scores)
    dcb2 = DendriteCallback(cfg, monitor="score", attribute="model", budget=False)
    _trainer(tmp_path, [dcb2], max_epochs=6, logger=False).fit(
        second, train, val, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert [r["event"] for r in dcb2.grower.history] == ["", "grow", "", "done"]
    assert dcb2.grower.model is second.model
    assert all(layer.num_dendrites == 1 for layer in pf.dendritic_layers(second).values())
    fresh = load_checkpoint(Net([0.0]), tmp_path / "ckpt" / "last.ckpt")
    assert set(pf.dendritic_layers(fresh)) == {"model.0", "model.2"}
    assert all(layer.num_dendrites == 1 for layer in pf.dendritic_layers(fresh).values())


def test_early_stopping_waits_for_growth(tmp_path):
    # a flat score: grow at epoch 2, retry at 4, done at 6. EarlyStopping(patience=3) alone
    # would stop at epoch 3; its counter restarts at each growth step.
    net = Net([0.5])
    dcb = DendriteCallback(pf.Config(patience=2, max_dendrites=3, max_growth_retries=1), monitor="score",
                           budget=False)
    recorder = Recorder()
    es = EarlyStopping(monitor="score", mode="max", patience=3)
    train, val = _loaders()
    _trainer(tmp_path, [recorder, dcb, es], max_epochs=20, logger=False).fit(net, train, val)
    assert [r["event"] for r in dcb.grower.history] == ["", "", "grow", "", "retry", "", "done"]
    assert _same(net.state_dict(), recorder.states[0])  # nothing beat epoch 0
    assert all(layer.num_dendrites == 0 for layer in pf.dendritic_layers(net).values())


def test_pb_mode_dendrite_phase_then_join(tmp_path):
    # epoch 1 plateaus -> dendrite phase (epochs 2-3, originals frozen) -> join -> epoch 4 best
    net = Net([0.5, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9])
    cfg = pf.Config(mode="pb", candidate_training="online", patience=1, max_dendrites=1, improvement_threshold_abs=0.01, growth_lr_scale=1.0,
                    dendrite_patience=5, dendrite_max_epochs=2)
    recorder = Recorder()
    dcb = DendriteCallback(cfg, monitor="score", budget=False)
    train, val = _loaders()
    _trainer(tmp_path, [recorder, dcb], max_epochs=10, logger=False).fit(net, train, val)
    assert [r["event"] for r in dcb.grower.history] == ["", "dendrite_start", "", "join", "", "done"]
    assert [r["phase"] for r in dcb.grower.history] == ["neuron", "neuron", "dendrite", "dendrite",
                                                        "neuron", "neuron"]
    main = [k for k in recorder.states[0] if "dendrite" not in k and "output_weight" not in k]
    # the dendrite phase started from the epoch-0 best and left the original weights alone
    assert all(torch.equal(recorder.states[2][k], recorder.states[0][k]) for k in main)
    assert all(torch.equal(recorder.states[3][k], recorder.states[0][k]) for k in main)
    # joined dendrites are frozen; their output weights trained in the neuron phase after the join
    layer = pf.dendritic_layers(net)["model.0"]
    assert layer.num_dendrites == 1 and not layer.dendrite_weight.requires_grad
    assert torch.count_nonzero(recorder.states[4]["model.0.output_weight"]) > 0
    assert _same(net.state_dict(), recorder.states[4])


class PhaseRecorder(L.Callback):
    """At each epoch's start: what the optimizer holds, its LR and which weights train."""

    def __init__(self):
        self.held, self.lrs, self.trainable, self.states = [], [], [], []

    def on_train_epoch_start(self, trainer, pl_module):
        names = {id(p): n for n, p in pl_module.named_parameters()}
        opt = trainer.optimizers[0]
        self.held.append(sorted(names[id(p)] for g in opt.param_groups for p in g["params"]))
        self.lrs.append(opt.param_groups[0]["lr"])
        self.trainable.append(sorted(n for n, p in pl_module.named_parameters() if p.requires_grad))

    def on_train_epoch_end(self, trainer, pl_module):
        self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def test_resume_in_a_dendrite_phase_refreezes_and_continues(tmp_path):
    # epoch 1 plateaus -> dendrite phase (epochs 2-3) -> join -> best at 4 -> done at 5; the
    # first fit ends after epoch 2, in the middle of the dendrite phase
    scores = [0.5, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9]
    cfg = pf.Config(mode="pb", candidate_training="online", patience=1, max_dendrites=1, improvement_threshold_abs=0.01, growth_lr_scale=1.0,
                    dendrite_patience=5, dendrite_max_epochs=2, candidate_lr_scale=10.0)
    train, val = _loaders()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    first = PhaseRecorder()
    _trainer(tmp_path, [DendriteCallback(cfg, monitor="score", budget=False), ckpt, first], max_epochs=3,
             logger=False).fit(Net(scores), train, val)
    assert all("candidate_pool" in n for n in first.trainable[2])  # epoch 2: a dendrite epoch
    assert first.lrs[2] == pytest.approx(10 * LR * 0.9 ** 2)

    second = PhaseRecorder()
    dcb = DendriteCallback(cfg, monitor="score", budget=False)
    _trainer(tmp_path, [dcb, second], max_epochs=8, logger=False).fit(
        Net(scores), train, val, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert [r["event"] for r in dcb.grower.history] == ["", "dendrite_start", "", "join", "", "done"]
    # the resumed dendrite epoch (3) trained the candidates alone, at the scaled rate
    assert second.trainable[0] == first.trainable[2] and second.held[0] == second.trainable[0]
    assert second.lrs[0] == pytest.approx(10 * LR * 0.9 ** 3)
    main = [k for k in first.states[2] if "candidate_pool" not in k]
    assert all(torch.equal(second.states[0][k], first.states[2][k]) for k in main)
    # after the join: originals and new output weights at the user's rate, dendrites frozen
    assert "model.0.output_weight" in second.held[1] and "model.0.main.weight" in second.held[1]
    assert not any("candidate_pool" in n or n.endswith("dendrite_weight") for n in second.held[1])
    assert second.lrs[1] == pytest.approx(LR * 0.9 ** 4)


def test_resize_hook_loads_any_dendrite_count_and_pickles():
    import pickle

    from perforate.integrations.common import install_resize_hook

    torch.manual_seed(0)
    grown = pf.perforate(nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2)))
    for layer in pf.dendritic_layers(grown).values():
        layer.add_dendrites(2, torch.Generator().manual_seed(1))
    fresh = pf.perforate(nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2)))
    install_resize_hook(fresh)
    install_resize_hook(fresh)  # idempotent
    fresh.load_state_dict(grown.state_dict())
    x = torch.randn(3, 4)
    assert torch.equal(fresh(x), grown(x))
    assert pickle.loads(pickle.dumps(fresh))(x).shape == (3, 2)


def test_missing_metric_names_the_fix(tmp_path):
    train, val = _loaders()
    trainer = _trainer(tmp_path, [DendriteCallback(monitor="val_f1")], max_epochs=1, logger=False)
    with pytest.raises(pf.GrowthError, match="val_f1"):
        trainer.fit(Net([0.5]), train, val)



DDP_SCRIPT = '''
import os, sys, torch
sys.path.insert(0, {root!r})
import lightning.pytorch as L
import perforate as pf
from perforate.integrations.lightning import DendriteCallback
from tests.helpers.lightning import Net, _loaders


def say(*parts):
    # one write() of a short line is atomic on a pipe: both ranks share this stdout, and
    # print() writes its pieces one by one (rank 1's line once landed inside rank 0's)
    os.write(1, (" ".join(map(str, parts)) + "\\n").encode())


class Gather(L.Callback):
    def on_fit_end(self, trainer, pl_module):
        flat = torch.cat([t.flatten().double() for t in pl_module.state_dict().values()])
        parts = [torch.empty_like(flat) for _ in range(trainer.world_size)]
        torch.distributed.all_gather(parts, flat)
        if trainer.is_global_zero:
            say("IDENTICAL", all(torch.equal(p, parts[0]) for p in parts))


if __name__ == "__main__":
    torch.set_num_threads(1)
    net = Net([0.5, 0.5, 0.9, 0.9, 0.9, 0.9])
    dcb = DendriteCallback(pf.Config(patience=1, max_dendrites=1, improvement_threshold_abs=0.01, growth_lr_scale=1.0),
                           monitor="score", budget=False)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=8, logger=False,
                        callbacks=[dcb, Gather()], enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(net, *_loaders())
    say("EVENTS", trainer.global_rank, [r["event"] for r in dcb.grower.history],
        sorted(l.num_dendrites for l in pf.dendritic_layers(net).values()))
    # Lightning leaves the process group up; left to interpreter exit, gloo's threads can
    # abort the process ("terminate called without an active exception", exit -6)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
'''


@pytest.mark.slow
def test_ddp_strategy_two_cpu_processes(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT.format(root=str(Path(__file__).resolve().parents[2])))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "IDENTICAL True" in out.stdout
    events = sorted(line for line in out.stdout.splitlines() if line.startswith("EVENTS"))
    assert events == ["EVENTS 0 ['', 'grow', '', 'done'] [1, 1]", "EVENTS 1 ['', 'grow', '', 'done'] [1, 1]"]


def test_the_trainers_max_epochs_is_the_budget_when_the_config_has_none(tmp_path, caplog):
    """A plateau at epoch 1 where growth cannot help: with the trainer's budget the run trains
    on to max_epochs; without one (budget=False) it ends there, with one WARNING saying so."""
    cfg = pf.Config(patience=1, max_dendrites=0, plots=False)
    dcb = DendriteCallback(cfg, monitor="score")
    trainer = _trainer(tmp_path / "budget", [dcb], max_epochs=5, logger=False)
    trainer.fit(Net([0.5]), *_loaders())
    assert dcb.grower.config.max_epochs == 5 and dcb.config.max_epochs == 0  # the user's config kept
    assert trainer.current_epoch == 5 and dcb.grower.history[-1]["event"].endswith("done")

    with caplog.at_level(logging.WARNING, "perforate"):
        dcb = DendriteCallback(cfg, monitor="score", budget=False)
        trainer = _trainer(tmp_path / "none", [dcb], max_epochs=5, logger=False)
        trainer.fit(Net([0.5]), *_loaders())
    assert dcb.grower.config.max_epochs == 0 and trainer.current_epoch < 5
    assert [r.getMessage() for r in caplog.records if "no max_epochs" in r.getMessage()] != []

    dcb = DendriteCallback(cfg.replace(max_epochs=3), monitor="score")  # the config's own wins
    trainer = _trainer(tmp_path / "own", [dcb], max_epochs=5, logger=False)
    trainer.fit(Net([0.5]), *_loaders())
    assert dcb.grower.config.max_epochs == 3 and trainer.current_epoch == 3

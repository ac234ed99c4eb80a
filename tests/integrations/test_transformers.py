"""DendriteTrainerCallback on a tiny randomly-initialised BERT (no downloads)."""
from __future__ import annotations

import pytest
import torch

import perforate as pf

transformers = pytest.importorskip("transformers")
from perforate.integrations.transformers import DendriteTrainerCallback, load_checkpoint  # noqa: E402

LR = 1e-3
VOCAB, SEQ = 24, 8


def _bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=SEQ, num_labels=2)
    return transformers.BertForSequenceClassification(cfg)


class _Task(torch.utils.data.Dataset):
    """Label 1 when token 3 occurs in the sequence."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(4, VOCAB, (n, SEQ), generator=g)
        flip = torch.rand(n, generator=g) < 0.5
        self.ids[flip, torch.randint(0, SEQ, (int(flip.sum()),), generator=g)] = 3
        self.labels = (self.ids == 3).any(1).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(SEQ, dtype=torch.long),
                "labels": self.labels[i]}


class _Recorder(transformers.TrainerCallback):
    """Per epoch, before the evaluation that drives growth: weights, LR, optimizer contents."""

    def __init__(self):
        self.states, self.lrs, self.opt_has_dendrites = [], [], []

    def on_epoch_begin(self, args, state, control, model=None, optimizer=None, **kw):
        self.lrs.append(optimizer.param_groups[0]["lr"])
        in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
        dend = [p for n, p in model.named_parameters() if "dendrite" in n or "output_weight" in n]
        self.opt_has_dendrites.append(bool(dend) and all(id(p) in in_opt for p in dend))

    def on_epoch_end(self, args, state, control, model=None, **kw):
        self.states.append({k: v.detach().clone() for k, v in model.state_dict().items()})


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_bert_grows_restores_best_and_reloads(tmp_path):
    scores = iter([0.5, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])

    def compute_metrics(pred):
        acc = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
        return {"accuracy": acc, "score": next(scores)}  # scripted: growth at epoch 1

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", disable_tqdm=True,
        eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch",
        num_train_epochs=8, per_device_train_batch_size=16, per_device_eval_batch_size=32,
        learning_rate=LR, lr_scheduler_type="linear", metric_for_best_model="score",
        greater_is_better=True, load_best_model_at_end=True, seed=0)
    model = _bert()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Task(64, 1),
                                   eval_dataset=_Task(32, 2), compute_metrics=compute_metrics)
    recorder = _Recorder()
    trainer.add_callback(recorder)
    cfg = pf.Config(patience=1, max_dendrites=1, improvement_threshold_abs=0.01, growth_lr_scale=1.0, plots=False)
    dcb = DendriteTrainerCallback(trainer, cfg, out_dir=tmp_path / "run", budget=False)
    trainer.train()

    assert [r["event"] for r in dcb.grower.history] == ["", "grow", "", "done"]
    assert [r["epoch"] for r in dcb.grower.history] == [0, 1, 2, 3]  # not the Trainer's float epoch
    assert "eval_accuracy" in dcb.grower.history[0]
    assert trainer.state.epoch == 4  # stopped by growth being done, not by num_train_epochs
    layers = pf.dendritic_layers(model)
    for name in ("bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.attention.output.dense",
                 "bert.encoder.layer.0.intermediate.dense", "classifier"):
        assert layers[name].num_dendrites == 1
    # rebuilt optimizer held the new parameters; they trained ([B, T, C] attention projection)
    assert recorder.opt_has_dendrites == [False, False, True, True]
    q = "bert.encoder.layer.0.attention.self.query.output_weight"
    assert torch.count_nonzero(recorder.states[2][q]) > 0
    # the linear decay continued across the rebuild (8 of 32 steps done at epoch 2)
    assert recorder.lrs[2] == pytest.approx(LR * (1 - 8 / 32))
    # the best epoch (2) was restored, not the last
    assert not _same(recorder.states[3], recorder.states[2])
    assert _same(model.state_dict(), recorder.states[2])
    assert any("perforate/dendrites" in row for row in trainer.state.log_history)

    # reload: the epoch-2 checkpoint folder, and a save_model folder (no perforate.json)
    model.eval()
    x = {"input_ids": _Task(4, 3).ids}
    expected = model(**x).logits
    fresh = load_checkpoint(_bert(), tmp_path / "out" / "checkpoint-12").eval()
    assert torch.equal(fresh(**x).logits, expected)
    trainer.save_model(str(tmp_path / "final"))
    fresh = load_checkpoint(_bert(), tmp_path / "final", config=cfg).eval()
    assert torch.equal(fresh(**x).logits, expected)


def _args(tmp_path, epochs, **kw):
    return transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", disable_tqdm=True,
        eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch",
        num_train_epochs=epochs, per_device_train_batch_size=16, learning_rate=LR,
        metric_for_best_model="score", seed=0, **kw)


def test_resume_from_checkpoint_restores_dendrites_and_controller(tmp_path):
    cfg = pf.Config(patience=1, max_dendrites=1, improvement_threshold_abs=0.01, growth_lr_scale=1.0)
    scores = iter([0.5, 0.5])
    first = transformers.Trainer(model=_bert(), args=_args(tmp_path, 2), train_dataset=_Task(64, 1),
                                 eval_dataset=_Task(32, 2), compute_metrics=lambda p: {"score": next(scores)})
    DendriteTrainerCallback(first, cfg, budget=False)
    first.train()  # grows at epoch 1; checkpoint-8 holds the grown model and the controller state

    scores = iter([0.9, 0.9, 0.9])
    model = _bert()
    second = transformers.Trainer(model=model, args=_args(tmp_path, 6), train_dataset=_Task(64, 1),
                                  eval_dataset=_Task(32, 2), compute_metrics=lambda p: {"score": next(scores)})
    dcb = DendriteTrainerCallback(second, cfg, budget=False)
    second.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-8"))
    assert [r["event"] for r in dcb.grower.history] == ["", "grow", "", "done"]
    assert all(layer.num_dendrites == 1 for layer in pf.dendritic_layers(model).values())


def test_needs_evaluation(tmp_path):
    args = transformers.TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                          eval_strategy="no")
    trainer = transformers.Trainer(model=_bert(), args=args, train_dataset=_Task(8, 1))
    with pytest.raises(pf.ConfigError, match="eval_strategy"):
        DendriteTrainerCallback(trainer, pf.Config())



class _PhaseRecorder(transformers.TrainerCallback):
    """At each epoch's start: what the optimizer holds, its LR and which weights train."""

    def __init__(self):
        self.held, self.lrs, self.trainable, self.states = [], [], [], []

    def on_epoch_begin(self, args, state, control, model=None, optimizer=None, **kw):
        names = {id(p): n for n, p in model.named_parameters()}
        self.held.append(sorted(names[id(p)] for g in optimizer.param_groups for p in g["params"]))
        self.lrs.append(optimizer.param_groups[0]["lr"])
        self.trainable.append(sorted(n for n, p in model.named_parameters() if p.requires_grad))

    def on_epoch_end(self, args, state, control, model=None, **kw):
        self.states.append({k: v.detach().clone() for k, v in model.state_dict().items()})


def test_resume_in_a_dendrite_phase_refreezes_and_continues(tmp_path):
    # pb: plateau at epoch 1 -> dendrite phase (epochs 2-3) -> join at 3 -> best at 4 -> done at 5;
    # the first run stops after epoch 2, in the middle of the dendrite phase
    cfg = pf.Config(mode="pb", candidate_training="online", patience=1, max_dendrites=1, improvement_threshold_abs=0.01, growth_lr_scale=1.0,
                    dendrite_patience=5, dendrite_max_epochs=2, candidate_lr_scale=10.0)
    scores = iter([0.5, 0.5, 0.5])
    first = transformers.Trainer(model=_bert(), args=_args(tmp_path, 3, lr_scheduler_type="constant"),
                                 train_dataset=_Task(64, 1), eval_dataset=_Task(32, 2),
                                 compute_metrics=lambda p: {"score": next(scores)})
    DendriteTrainerCallback(first, cfg, budget=False)
    first.train()

    scores = iter([0.5, 0.9, 0.9])
    model = _bert()
    second = transformers.Trainer(model=model, args=_args(tmp_path, 6, lr_scheduler_type="constant"),
                                  train_dataset=_Task(64, 1), eval_dataset=_Task(32, 2),
                                  compute_metrics=lambda p: {"score": next(scores)})
    recorder = _PhaseRecorder()
    second.add_callback(recorder)
    dcb = DendriteTrainerCallback(second, cfg, budget=False)
    second.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-12"))

    assert [r["event"] for r in dcb.grower.history] == ["", "dendrite_start", "", "join", "", "done"]
    # the resumed dendrite epoch (3) trained the candidates alone, at the scaled learning rate
    assert recorder.trainable[0] and all("candidate_pool" in n for n in recorder.trainable[0])
    assert recorder.held[0] == recorder.trainable[0]
    assert recorder.lrs[0] == pytest.approx(10 * LR)
    saved = load_checkpoint(_bert(), tmp_path / "out" / "checkpoint-12").state_dict()
    main = [k for k in saved if "candidate_pool" not in k]
    assert all(torch.equal(recorder.states[0][k], saved[k]) for k in main)
    # after the join the originals and the new output weights train at the user's rate
    assert "classifier.output_weight" in recorder.held[1] and "classifier.main.weight" in recorder.held[1]
    assert recorder.lrs[1] == pytest.approx(LR)
    assert not any("candidate_pool" in n or n.endswith("dendrite_weight") for n in recorder.held[1])


@pytest.mark.filterwarnings("ignore::perforate.ScoreDirectionWarning")  # the eval loss of noise
@pytest.mark.parametrize("strategy, expected", [("epoch", 3), ("steps", 6)])
def test_the_trainers_evaluations_are_the_budget_when_the_config_has_none(tmp_path, strategy, expected):
    """3 epochs of 4 steps: 3 evaluations per epoch, 6 every 2 steps; growth cannot help at the
    plateau, so the run trains on to the trainer's end instead of stopping there."""
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", disable_tqdm=True,
        eval_strategy=strategy, eval_steps=2, save_strategy="no", num_train_epochs=3,
        per_device_train_batch_size=16, per_device_eval_batch_size=32, learning_rate=LR, seed=0)
    trainer = transformers.Trainer(model=_bert(), args=args, train_dataset=_Task(64, 1),
                                   eval_dataset=_Task(32, 2))
    dcb = DendriteTrainerCallback(trainer, pf.Config(patience=1, max_dendrites=0, plots=False))
    trainer.train()
    assert dcb.grower.config.max_epochs == expected and dcb.config.max_epochs == 0
    assert trainer.state.global_step == 12 and len(dcb.grower.history) == expected

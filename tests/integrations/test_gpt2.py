"""GPT-2 style models (Hugging Face ``Conv1D`` projections, a tied ``lm_head``) from a tiny
random config: wrapped by default, grown in gd and pb, trained by the Trainer callback, saved
with ``save_pretrained`` and loaded back with identical logits; the output-head rule. No
downloads."""
from __future__ import annotations

import pytest
import torch

import perforate as pf

transformers = pytest.importorskip("transformers")
from perforate.integrations.transformers import DendriteTrainerCallback, load_checkpoint  # noqa: E402
from tests.helpers.families import check_family, check_pb  # noqa: E402

VOCAB, SEQ, LR = 40, 8, 1e-3
CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def _config(**kw):
    return transformers.GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=32, n_layer=2, n_head=2,
                                   bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                                   attn_pdrop=0.0, **kw)


def _gpt2(**kw):
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(_config(**kw))


class _LogitsGPT2(transformers.GPT2LMHeadModel):
    """Returns the logits tensor, which the family checks read."""

    def forward(self, input_ids):
        return super().forward(input_ids, use_cache=False).logits


def _logits_gpt2():
    torch.manual_seed(0)
    return _LogitsGPT2(_config())


def _ids(n=3, seed=3):
    return torch.randint(0, VOCAB, (n, SEQ), generator=torch.Generator().manual_seed(seed))


def test_conv1d_projections_are_found_by_default_and_the_tied_head_is_left_out():
    model = pf.perforate(_gpt2())
    layers = pf.dendritic_layers(model)
    assert sorted(layers) == sorted(f"transformer.h.{i}.{p}" for i in range(2) for p in CONV1D)
    assert {layer.kind for layer in layers.values()} == {"hf_conv1d"}
    assert layers["transformer.h.0.attn.c_attn"].channels == 96  # Conv1D(nf=3*32, nx=32)
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied, still plain
    wrapper = torch.nn.ModuleDict({"lm": _gpt2()})  # e.g. a LightningModule holding the model
    assert "lm.lm_head" not in pf.dendritic_layers(pf.perforate(wrapper))


def test_gpt2_family_wraps_grows_saves_and_exports(tmp_path):
    check_family(_logits_gpt2, lambda: (_ids(),), {}, _logits_gpt2, tmp_path, trace=False)


@pytest.mark.parametrize("training", ["online", "cached"])
def test_gpt2_pb_cycle(training):
    check_pb(_logits_gpt2, lambda: (_ids(),), {}, training=training)


class _Tokens(torch.utils.data.Dataset):
    """Random token sequences, the language-modelling labels being the inputs."""

    def __init__(self, n, seed):
        self.ids = _ids(n, seed)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class _StepLR(transformers.TrainerCallback):
    """The learning rate each optimizer step used, by global step (the step counts after it)."""

    def __init__(self):
        self.used = {}

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kw):
        self.used[state.global_step + 1] = optimizer.param_groups[0]["lr"]


def test_gpt2_trainer_grows_and_save_pretrained_loads_back_identically(tmp_path):
    scores = iter([0.5, 0.5, 0.9, 0.9, 0.9, 0.9])
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", disable_tqdm=True,
        eval_strategy="epoch", save_strategy="epoch", logging_strategy="steps", logging_steps=1,
        num_train_epochs=6, per_device_train_batch_size=8, per_device_eval_batch_size=16,
        learning_rate=LR, lr_scheduler_type="linear", metric_for_best_model="score",
        greater_is_better=True, seed=0)
    model = _gpt2()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Tokens(16, 1),
                                   eval_dataset=_Tokens(8, 2),
                                   compute_metrics=lambda p: {"score": next(scores)})  # growth at epoch 1
    steps = _StepLR()
    trainer.add_callback(steps)
    cfg = pf.Config(patience=1, max_dendrites=1, improvement_threshold_abs=0.01, growth_lr_scale=0.3,
                    plots=False)
    dcb = DendriteTrainerCallback(trainer, cfg, budget=False)
    trainer.train()

    assert [r["event"] for r in dcb.grower.history] == ["", "grow", "", "done"]
    layers = pf.dendritic_layers(model)
    assert len(layers) == 8 and all(layer.num_dendrites == 1 for layer in layers.values())
    assert model.lm_head.weight is model.transformer.wte.weight
    # the logged learning rate is the one each step used, the first step after the growth too
    logged = {row["step"]: row["learning_rate"] for row in trainer.state.log_history if "learning_rate" in row}
    assert logged.keys() == steps.used.keys() and len(logged) == 8
    assert steps.used[5] == pytest.approx(0.3 * LR * (1 - 4 / 12))  # 2 steps an epoch; grown after step 4
    assert all(logged[s] == pytest.approx(steps.used[s]) for s in logged)

    model.eval()
    ids = _ids(4, 5)
    expected = model(ids).logits
    model.save_pretrained(tmp_path / "saved")
    saved = transformers.GPT2Config.from_pretrained(tmp_path / "saved")  # the docstring's way
    fresh = load_checkpoint(transformers.GPT2LMHeadModel(saved), tmp_path / "saved", config=cfg).eval()
    assert torch.equal(fresh(ids).logits, expected)
    assert fresh.lm_head.weight is fresh.transformer.wte.weight  # tied as before
    trainer.save_model(str(tmp_path / "final"))
    fresh = load_checkpoint(transformers.GPT2LMHeadModel(_config()), tmp_path / "final", config=cfg).eval()
    assert torch.equal(fresh(ids).logits, expected)


def _llama():
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=SEQ,
        tie_word_embeddings=False))


@pytest.mark.parametrize("output_head", [False, True])
def test_one_output_head_rule_and_the_save_pretrained_round_trip(tmp_path, output_head):
    cfg = pf.Config(output_head=output_head)
    model = pf.perforate(_llama(), cfg)  # the README's way
    assert ("lm_head" in pf.dendritic_layers(model)) is output_head
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True, report_to="none",
                                          eval_strategy="epoch")
    fresh = _llama()
    DendriteTrainerCallback(transformers.Trainer(model=fresh, args=args, train_dataset=_Tokens(4, 1),
                                                 eval_dataset=_Tokens(4, 2)), cfg)
    assert pf.dendritic_layers(fresh).keys() == pf.dendritic_layers(model).keys()  # the callback's rule
    for i, layer in enumerate(pf.dendritic_layers(model).values()):
        layer.add_dendrites(1, torch.Generator().manual_seed(i))
        torch.nn.init.normal_(layer.output_weight, generator=torch.Generator().manual_seed(i))
    model.eval()
    ids = _ids(2, 4)
    expected = model(ids).logits
    model.save_pretrained(tmp_path / "saved")
    loaded = load_checkpoint(_llama(), tmp_path / "saved", config=cfg).eval()  # load_checkpoint's rule
    assert torch.equal(loaded(ids).logits, expected)


def test_a_model_whose_only_layer_is_its_head_says_how_to_include_it():
    class HeadOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = torch.nn.Embedding(5, 4), torch.nn.Linear(4, 5)

        def get_output_embeddings(self):
            return self.head

        def forward(self, ids):
            return self.head(self.emb(ids))

    with pytest.raises(pf.WrapError, match=r"output head 'head'.*output_head=True"):
        pf.perforate(HeadOnly())
    assert "head" in pf.dendritic_layers(pf.perforate(HeadOnly(), pf.Config(output_head=True)))

"""Hugging Face Trainer + dendrites: a tiny, randomly initialised BERT (no downloads).

    python examples/hf_tiny_bert.py --out runs/hf_tiny_bert

The task is synthetic: label a token sequence 1 when a "key" token appears after a "gate"
token. The script is an ordinary Trainer script plus 2 lines (marked ``# perforate``): every
attention and MLP projection ([B, T, C] outputs) gets dendrites when the evaluation accuracy
plateaus; the optimizer and LR schedule are rebuilt inside ``trainer.train()``.
"""
import argparse

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

import perforate as pf
from perforate.integrations.transformers import DendriteTrainerCallback, load_checkpoint  # perforate

VOCAB, SEQ, GATE, KEY = 32, 16, 1, 2


class GatedKeyTask(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(3, VOCAB, (n, SEQ), generator=g)
        for row in self.ids:
            pos = torch.randperm(SEQ, generator=g)[:2]
            row[pos[0]], row[pos[1]] = GATE, KEY
        gate = (self.ids == GATE).float().argmax(1)
        key = (self.ids == KEY).float().argmax(1)
        self.labels = (key > gate).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def tiny_bert():
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=SEQ, num_labels=2)
    return BertForSequenceClassification(cfg)


def accuracy(pred):
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean() * 100)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", default="runs/hf_tiny_bert")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = tiny_bert()
    training_args = TrainingArguments(
        output_dir=f"{args.out}/trainer", use_cpu=True, report_to="none", disable_tqdm=True,
        eval_strategy="epoch", save_strategy="epoch", save_total_limit=2, logging_strategy="epoch",
        num_train_epochs=args.epochs, per_device_train_batch_size=32, learning_rate=2e-3,
        warmup_steps=20, metric_for_best_model="accuracy", load_best_model_at_end=True, seed=0)
    trainer = Trainer(model=model, args=training_args, train_dataset=GatedKeyTask(1024, 1),
                      eval_dataset=GatedKeyTask(512, 2), compute_metrics=accuracy)
    # growth is planned in the trainer's num_train_epochs (or pass pf.Config(max_epochs=...))
    dendrites = DendriteTrainerCallback(trainer, pf.Config(patience=4, max_dendrites=2),  # perforate
                                        out_dir=f"{args.out}/growth")
    trainer.train()

    summary = dendrites.grower.summary()
    layers = pf.dendritic_layers(model)
    print(f"evaluations: {summary['epochs']}, best accuracy {summary['best_score']:.2f} at evaluation "
          f"{summary['best_epoch']} with {summary['best_dendrites']} dendrite(s) on each of "
          f"{len(layers)} layers, params {summary['params']}")
    print(f"final eval accuracy: {trainer.evaluate()['eval_accuracy']:.2f}%")
    trainer.save_model(f"{args.out}/final")
    fresh = load_checkpoint(tiny_bert(), f"{args.out}/final", config=dendrites.config).eval()
    model.eval()
    x = GatedKeyTask(8, 3).ids
    same = torch.allclose(fresh(input_ids=x).logits, model(input_ids=x).logits)
    print(f"saved model reloads into a fresh BERT: {same}; growth graph: {args.out}/growth/growth.png")


if __name__ == "__main__":
    main()

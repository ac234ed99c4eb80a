"""Character-level text from CPython's own ``pydoc_data.topics`` (about 465k characters,
shipped with Python: nothing is downloaded), and the language-model examples' shared run."""
from __future__ import annotations

import argparse
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from _baseline_vs_dendrites import compare


def load(val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(train ids, validation ids, vocabulary)."""
    from pydoc_data.topics import topics

    text = "".join(topics[key] for key in sorted(topics))
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    split = int(len(ids) * (1 - val_fraction))
    return ids[:split], ids[split:], vocab


def batch(ids: torch.Tensor, size: int, context: int, generator: torch.Generator):
    """``size`` random windows: inputs and next-character targets, both [size, context]."""
    starts = torch.randint(0, len(ids) - context - 1, (size,), generator=generator)
    rows = starts.unsqueeze(1) + torch.arange(context + 1)
    window = ids[rows]
    return window[:, :-1], window[:, 1:]


def run_language_model(build: Callable[[int, int], nn.Module], description: str, lr: float) -> None:
    """Parse the example's arguments, train ``build(vocab, context)`` plain and with dendrites
    on random windows, print the best validation loss of each arm in bits per character."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--steps", type=int, default=40, help="training batches per epoch")
    parser.add_argument("--mode", choices=["gd", "pb"], default="gd")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train_ids, val_ids, vocab = load()
    context, size = 64, 32
    val_batches = [batch(val_ids, size, context, torch.Generator().manual_seed(i)) for i in range(8)]

    def train_epoch(model, optimizer, epoch):
        model.train()
        gen = torch.Generator().manual_seed(epoch)
        for _ in range(args.steps):
            x, y = batch(train_ids, size, context, gen)
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def validate(model):
        model.eval()
        with torch.no_grad():
            return sum(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
                       for x, y in val_batches) / len(val_batches)

    results = compare(lambda: build(len(vocab), context), train_epoch, validate, args.epochs, lr=lr,
                      mode=args.mode)
    for arm, r in results.items():
        print(f"{arm}: {r['best'] / math.log(2):.3f} bits per character")

"""A character-level GPT (nanoGPT-style) on CPython's ``pydoc_data.topics``: baseline vs dendrites.

    python examples/char_gpt.py                 # about 2-3 minutes on one CPU thread
    python examples/char_gpt.py --mode pb --epochs 16

The blocks use ``nn.MultiheadAttention`` (causal) and an MLP; the output head shares the token
embedding's weights. ``pf.perforate`` gives dendrites to the attention projections (q, k, v and
out, per channel), the MLP and the head; the tie survives growth and ``pf.export``.
Prints the best validation loss of each arm (bits per character) and writes nothing.
"""
import torch
from torch import nn

from _pydoc_text import run_language_model


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x, mask):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, is_causal=True, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class CharGPT(nn.Module):
    def __init__(self, vocab: int, context: int, width: int = 64, heads: int = 4, layers: int = 2):
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tokens.weight  # tied, as in GPT-2
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)
        for embedding in (self.tokens, self.positions):
            nn.init.normal_(embedding.weight, std=0.02)  # GPT-2's: the tied head starts near uniform

    def forward(self, ids):
        t = ids.shape[1]
        x = self.tokens(ids) + self.positions.weight[:t]
        for block in self.blocks:
            x = block(x, self.mask[:t, :t])
        return self.head(self.ln(x))


def main():
    run_language_model(lambda vocab, context: CharGPT(vocab, context), __doc__, lr=3e-3)


if __name__ == "__main__":
    main()

"""A character-level LSTM language model on CPython's ``pydoc_data.topics``: baseline vs dendrites.

    python examples/lstm_lm.py                  # about 2 minutes on one CPU thread
    python examples/lstm_lm.py --mode pb

A two-layer ``nn.LSTM``: ``pf.perforate`` opens it into single-layer LSTMs and gives each
layer's hidden units dendrites (copies of the layer, joined on its outputs), and the output
Linear its own. Prints the best validation loss of each arm (bits per character).
"""
import torch
from torch import nn

from _pydoc_text import run_language_model


class LSTMLM(nn.Module):
    def __init__(self, vocab: int, width: int = 96, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, 32)
        self.lstm = nn.LSTM(32, width, num_layers=layers, batch_first=True)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids):
        out, _ = self.lstm(self.embed(ids))
        return self.head(out)


def main():
    run_language_model(lambda vocab, context: LSTMLM(vocab), __doc__, lr=5e-3)


if __name__ == "__main__":
    main()

"""Do dendrites help *my* model? A small conv net on sklearn's digits, written as a user would.

    python examples/frontier_your_model.py --out runs/frontier-digits-convnet

Nothing here comes from perforate's harness: an ordinary ``nn.Module`` with a width knob (its
channel count), ordinary ``DataLoader``s, and one call. Plain nets at every width trace the
accuracy-versus-parameters frontier; gd and pb dendrites grow from the narrow widths; every run
gets the same epoch budget and seed pairing. It prints how many runs and about how long before
it starts, drops widths/seeds to fit ``--max-minutes``, and ends with the verdict;
``--out`` gets report.md, results.json and the graphs. Run it again to resume after Ctrl-C.

The same from the command line (this file is importable as ``frontier_your_model``)::

    cd examples && perforate bench frontier --model frontier_your_model:make_model \\
        --data frontier_your_model:loaders --widths 1,2,4,8,16 --grow-widths 1,2 \\
        --seeds 3 --epochs 60 --lr 0.01 --patience 5 --max-minutes 4
"""
import argparse

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class ConvNet(nn.Module):
    """A 3x3 convolution of ``width`` channels, 2x2 max pooling, a linear head."""

    def __init__(self, width: int, classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.head = nn.Linear(width * 4 * 4, classes)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.head(x.flatten(1))


def make_model(width):
    return ConvNet(width)


def loaders(seed=0):
    """sklearn's 8x8 digits: 60 % train, 20 % validation, 20 % test, split by ``seed``."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed,
                                                        stratify=y)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5,
                                                    random_state=seed, stratify=y_rest)
    return (DataLoader(TensorDataset(x_train, y_train), batch_size=128, shuffle=True),
            DataLoader(TensorDataset(x_val, y_val), batch_size=256),
            DataLoader(TensorDataset(x_test, y_test), batch_size=256))


def main():
    from perforate.experiments.study import dendrites_vs_width

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/frontier-digits-convnet")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-minutes", type=float, default=4.0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    result = dendrites_vs_width(
        make_model, loaders, widths=[1, 2, 4, 8, 16], grow_widths=[1, 2], seeds=args.seeds,
        epochs=args.epochs, lr=1e-2, patience=5, max_minutes=args.max_minutes, out=args.out,
        name="ConvNet on sklearn digits")

    print(result.verdict)
    print(result.distances[["arm", "width", "seeds", "distance", "distance_std", "gain"]]
          .to_string(index=False))
    print("report:", result.report, "graphs:", ", ".join(map(str, result.plots.values())))


if __name__ == "__main__":
    main()

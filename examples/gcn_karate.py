"""A two-layer GCN on Zachary's karate club (PyTorch Geometric, built in memory): baseline vs
dendrites. Needs ``pip install 'perforate[pyg]'``.

    python examples/gcn_karate.py               # seconds
    python examples/gcn_karate.py --blocks      # each dendrite a whole GCNConv

As in Kipf & Welling's demo, one labelled node per class trains and the other 30 nodes score.
By default the dendrites sit on each GCNConv's node-wise ``lin`` (PyG's Linear), per output
channel, before aggregation; ``--blocks`` makes each dendrite a whole GCNConv instead.
Prints the best accuracy on the unlabelled nodes of each arm, mean over seeds.
"""
import argparse
import statistics

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.datasets import KarateClub
from torch_geometric.nn import GCNConv

from _baseline_vs_dendrites import compare


class GCN(nn.Module):
    def __init__(self, features: int, classes: int, width: int = 4):
        super().__init__()
        self.conv1 = GCNConv(features, width)
        self.conv2 = GCNConv(width, classes)

    def forward(self, x, edge_index):
        return self.conv2(torch.tanh(self.conv1(x, edge_index)), edge_index)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--mode", choices=["gd", "pb"], default="gd")
    parser.add_argument("--blocks", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = KarateClub()[0]
    test = ~data.train_mask

    def train_epoch(model, optimizer, epoch):
        model.train()
        for _ in range(5):
            loss = F.cross_entropy(model(data.x, data.edge_index)[data.train_mask], data.y[data.train_mask])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def validate(model):
        model.eval()
        with torch.no_grad():
            pred = model(data.x, data.edge_index).argmax(1)
        return (pred[test] == data.y[test]).float().mean().item() * 100

    scores = {}
    for seed in range(args.seeds):
        results = compare(lambda: GCN(data.num_features, 4), train_epoch, validate, args.epochs,
                          lr=1e-2, mode=args.mode, maximize=True, blocks=[GCNConv] if args.blocks else (),
                          seed=seed)
        for arm, r in results.items():
            scores.setdefault(arm, []).append(r["best"])
    for arm, values in scores.items():
        print(f"{arm}: {statistics.mean(values):.1f} ± {statistics.pstdev(values):.1f} % "
              f"over {len(values)} seeds")


if __name__ == "__main__":
    main()

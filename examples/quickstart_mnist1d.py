"""Quick start: a plain PyTorch MLP on MNIST-1D, converted to dendritic training (gd mode).

    python examples/quickstart_mnist1d.py --out runs/quickstart
    python examples/quickstart_mnist1d.py --width 8       # a narrow MLP: the grower tries a growth
    python examples/quickstart_mnist1d.py --compare      # epoch time with and without Grower.step

The data is generated locally by the `mnist1d` package (never downloaded). The score fed to
the grower is validation accuracy (higher is better: score_mode="max"); a loss would need
score_mode="min". The loop's epoch count is the grower's budget (``max_epochs``): growth is
planned inside it, and a growth that does not pay is rolled back while the model trains on. One
line per epoch and every growth decision (with its reason) are printed through the `perforate`
logger; runs/quickstart/growth.png draws them. At width 100 this MLP over-fits MNIST-1D and the
grower says so rather than grow; at width 8 it under-fits and a growth is tried.
"""
import argparse
import logging
import statistics
import time

import torch
from mnist1d.data import get_dataset_args, make_dataset
from torch import nn

import perforate as pf


def mnist1d_tensors():
    data = make_dataset(get_dataset_args())
    x, y = torch.tensor(data["x"], dtype=torch.float32), torch.tensor(data["y"])
    x_test, y_test = torch.tensor(data["x_test"], dtype=torch.float32), torch.tensor(data["y_test"])
    return (x[:3400], y[:3400]), (x[3400:], y[3400:]), (x_test, y_test)


def mlp(width=100):
    return nn.Sequential(nn.Linear(40, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item() * 100


def train(epochs, out=None, use_grower=True, seed=0, verbose=False, width=100):
    """Returns (model, seconds per epoch). With use_grower=False: the same loop, plain PyTorch."""
    torch.manual_seed(seed)
    (x, y), (x_val, y_val), (x_test, y_test) = mnist1d_tensors()
    model = mlp(width)
    config = pf.Config(mode="gd", patience=8, max_dendrites=3, max_epochs=epochs,  # the budget
                       score_mode="max", score_name="validation accuracy %")  # accuracy: higher is better
    if use_grower:
        model = pf.perforate(model, config)                                   # 1. wrap
        grower = pf.Grower(model, config, out_dir=out,                        # 2. controller
                           optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-3),
                           verbose=verbose, name="quickstart")
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    epoch_times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        opt = grower.optimizer if use_grower else optimizer                   # 3. its optimizer
        for idx in torch.randperm(len(x), generator=generator).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        val, train_acc = accuracy(model, x_val, y_val), accuracy(model, x, y)
        if use_grower:
            decision = grower.step(val, train_acc=train_acc)                  # 4. one score per epoch
            model = grower.model
            if decision.done:
                break
        epoch_times.append(time.perf_counter() - start)
    if use_grower:
        model = grower.finish()                                               # 5. best model
        print(f"dendrites per layer: {pf.dendritic_layers(model)['0'].num_dendrites}, "
              f"params: {pf.count_parameters(model):,}")
    print(f"test accuracy: {accuracy(model, x_test, y_test):.1f}%")
    return model, epoch_times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--out", default="runs/quickstart")
    parser.add_argument("--width", type=int, default=100, help="hidden units per layer")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads: one is fastest for this small MLP, and many times "
                             "faster than the default on a busy machine")
    parser.add_argument("--compare", action="store_true",
                        help="time 30 epochs of the same loop with and without the grower")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.compare:  # three rounds, interleaved, so machine load hits every variant alike
        times = {"plain": [], "Grower.step": [], "Grower.step + out_dir": []}
        for _ in range(3):
            times["plain"] += train(20, use_grower=False)[1]
            times["Grower.step"] += train(20, out=None, use_grower=True)[1]
            times["Grower.step + out_dir"] += train(20, out="runs/quickstart-timing", use_grower=True)[1]
        plain = statistics.median(times["plain"])
        for name, values in times.items():
            print(f"median epoch {name:>22}: {statistics.median(values):.4f}s "
                  f"(ratio {statistics.median(values) / plain:.3f})")
    else:
        logging.basicConfig(level=logging.INFO, format="%(message)s")  # show perforate's lines
        print(f"MLP (width {args.width}) on MNIST-1D, gd dendrites, at most {args.epochs} epochs; "
              "growth decisions and one line per epoch follow")
        start = time.perf_counter()
        model = train(args.epochs, out=args.out, verbose=True, width=args.width)[0]
        pf.save(model, f"{args.out}/model.safetensors")                       # safetensors + JSON
        print(f"wrote {args.out}/growth.png, history.csv, summary.json, best.pt (a pf.save "
              f"checkpoint: read it with pf.load, not torch.load) and model.safetensors "
              f"in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

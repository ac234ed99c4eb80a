"""DistributedDataParallel + dendrites on MNIST-1D, CPU processes with the gloo backend.

    torchrun --nproc_per_node=2 examples/ddp_mnist1d.py --out runs/ddp_mnist1d

Each rank trains on its shard of the training set and evaluates its shard of the validation set;
``DDPGrower`` averages the ranks' scores, so every rank grows at the same epoch with the same
dendrite weights, re-wraps the model in DDP after each restructure, and writes files on rank 0
only. At the end the script checks that all ranks hold identical weights.
"""
import argparse
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import perforate as pf
from perforate.experiments.data.datasets import load_dataset
from perforate.integrations.ddp import DDPGrower


def mlp(width):
    return nn.Sequential(nn.Linear(40, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))


def shard_accuracy(model, x, y, rank, world):
    model.eval()
    with torch.no_grad():
        xs, ys = x[rank::world], y[rank::world]
        return (model(xs).argmax(1) == ys).float().mean().item() * 100


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--out", default="runs/ddp_mnist1d")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # torchrun provides RANK, WORLD_SIZE, MASTER_ADDR/PORT
    rank, world = dist.get_rank(), dist.get_world_size()
    data = load_dataset("mnist1d", seed=0)
    train = TensorDataset(data.x_train, data.y_train)
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(train, batch_size=64, sampler=sampler)

    torch.manual_seed(0)  # the same initial weights everywhere (DDP would broadcast them anyway)
    dg = DDPGrower(mlp(args.width), pf.Config(patience=8, max_dendrites=3, max_epochs=args.epochs),
                   optimizer_factory=lambda p: torch.optim.Adam(p, lr=2e-3), out_dir=args.out)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        dg.model.train()  # read dg.model every epoch: it is re-wrapped after growth
        for x, y in loader:
            dg.optimizer.zero_grad()
            nn.functional.cross_entropy(dg.model(x), y).backward()
            dg.optimizer.step()
        d = dg.step(shard_accuracy(dg.module, data.x_val, data.y_val, rank, world))
        if rank == 0 and d.event:
            print(f"epoch {epoch}: {d.event}")
        if d.done:
            break
    model = dg.finish()

    # every rank must hold the same best model
    flat = torch.cat([t.flatten().double() for t in model.state_dict().values()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    test_acc = shard_accuracy(model, data.x_test, data.y_test, 0, 1)
    if rank == 0:
        s = dg.summary()
        identical = all(torch.equal(g, gathered[0]) for g in gathered)
        print(f"{world} ranks, identical weights: {identical}; best val {s['best_score']:.2f} at epoch "
              f"{s['best_epoch']} with {s['best_dendrites']} dendrite(s); params {s['params']}; "
              f"test accuracy {test_acc:.2f}%")
        print(f"outputs (rank 0 only): {os.path.abspath(args.out)}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

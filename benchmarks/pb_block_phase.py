"""What a default (cached) pb dendrite phase costs on a ResNet-18-style CNN with conv +
batch-norm blocks (``pf.perforate(model, cfg, blocks=[ConvBN])``), in plain epochs.

The phase is the recording epoch plus the candidate fit in ``Grower.step``; both are timed on
the calling thread's CPU time (one torch thread) against a plain epoch of the same model on
random data. ``--passes 0`` gives the full-batch fit (one pass over the cached epoch a step),
the only behaviour before ``Config.candidate_passes``. ``--profile`` prints the fit's cProfile.

    python benchmarks/pb_block_phase.py                       # default: candidate_passes=10
    python benchmarks/pb_block_phase.py --passes 0            # full-batch steps
    python benchmarks/pb_block_phase.py --no-blocks           # stacked Conv2d layers instead
"""
from __future__ import annotations

import argparse
import copy
import cProfile
import json
import pstats
import time

import torch
import torch.nn.functional as F
from torch import nn

import perforate as pf


class ConvBN(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a, self.b = ConvBN(cin, cout, stride), ConvBN(cout, cout)
        self.skip = ConvBN(cin, cout, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        h = self.b(F.relu(self.a(x)))
        return F.relu(h + (x if self.skip is None else self.skip(x)))


class ResNet18ish(nn.Module):
    """ResNet-18's layout (stem, four stages of two basic blocks) at width ``w``."""

    def __init__(self, w=8, classes=10):
        super().__init__()
        self.stem = ConvBN(3, w)
        self.layers = nn.Sequential(Basic(w, w, 1), Basic(w, w, 1), Basic(w, 2 * w, 2), Basic(2 * w, 2 * w, 1),
                                    Basic(2 * w, 4 * w, 2), Basic(4 * w, 4 * w, 1), Basic(4 * w, 8 * w, 2),
                                    Basic(8 * w, 8 * w, 1))
        self.fc = nn.Linear(8 * w, classes)

    def forward(self, x):
        return self.fc(self.layers(F.relu(self.stem(x))).mean((2, 3)))


def measure(samples=512, width=8, size=16, batch=64, steps=100, passes=10.0, blocks=True,
            profile=False) -> dict:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(samples, 3, size, size, generator=g), torch.randint(0, 10, (samples,), generator=g)

    def epoch(model, opt):
        model.train()
        for i in range(0, samples, batch):
            loss = F.cross_entropy(model(x[i:i + batch]), y[i:i + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()

    torch.manual_seed(0)
    base = ResNet18ish(width)
    plain = copy.deepcopy(base)
    opt = torch.optim.Adam(plain.parameters(), 1e-3)
    epoch(plain, opt)  # warm up
    start = time.thread_time()
    for _ in range(3):
        epoch(plain, opt)
    plain_s = (time.thread_time() - start) / 3
    cfg = pf.Config(mode="pb", candidate_steps=steps, candidate_passes=passes)
    model = pf.perforate(copy.deepcopy(base), cfg, **({"blocks": [ConvBN]} if blocks else {}))
    grower = pf.Grower(model, cfg, optimizer_factory=lambda p: torch.optim.Adam(p, 1e-3))
    grower.add_dendrites()
    start = time.thread_time()
    epoch(grower.model, grower.optimizer)
    record_s = time.thread_time() - start
    profiler = cProfile.Profile() if profile else None
    start = time.thread_time()
    if profiler:
        profiler.enable()
    decision = grower.step(0.5)
    if profiler:
        profiler.disable()
    fit_s = time.thread_time() - start
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    corr = [v for k, v in grower.history[-1].items() if k.startswith("corr/")]
    return {"blocks": blocks, "passes": passes, "steps": steps, "layers": len(corr),
            "plain_epoch_s": round(plain_s, 3), "record_epochs": round(record_s / plain_s, 2),
            "fit_epochs": round(fit_s / plain_s, 2), "phase_epochs": round((record_s + fit_s) / plain_s, 2),
            "mean_correlation": round(sum(corr) / len(corr), 4), "event": decision.event}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--passes", type=float, default=10.0)
    p.add_argument("--no-blocks", action="store_true")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    res = measure(args.samples, args.width, args.size, steps=args.steps, passes=args.passes,
                  blocks=not args.no_blocks, profile=args.profile)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()

"""Two CPU processes (gloo) grow the same dendrites at the same epoch and end bit-identical.

One spawn runs both modes (process start-up dominates the cost). DDP is built with
``init_sync=False`` so that it cannot paper over differing dendrite inits or pb candidate
selections by broadcasting parameters itself: agreement must come from ``DDPGrower``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import perforate as pf

# Rank 1's score alone would count as an improvement at epoch 1 (0.58 > 0.5 + 0.05) and rank 0's
# would not; the mean (0.54) is not, so both ranks must grow at epoch 1 together.
SCORES = {
    "gd": {0: [0.5, 0.5, 0.9, 0.9, 0.9], 1: [0.5, 0.58, 0.9, 0.9, 0.9]},
    # pb: dendrite phase at epochs 2-3 (scores unused), join at 3, best at 4, done at 5
    "pb": {0: [0.5, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9], 1: [0.5, 0.58, 0.5, 0.5, 0.9, 0.9, 0.9]},
    # pb cached: one cached epoch (2), join at 2, best at 3, done at 4; the ranks cache different
    # shards, so fitting must average them to keep one candidate set
    "pb-cached": {0: [0.5, 0.5, 0.5, 0.9, 0.9, 0.9], 1: [0.5, 0.58, 0.5, 0.9, 0.9, 0.9]},
}
EVENTS = {"gd": ["", "grow", "", "done"], "pb": ["", "dendrite_start", "", "join", "", "done"],
          "pb-cached": ["", "dendrite_start", "join", "", "done"]}
BEST = {"gd": 2, "pb": 4, "pb-cached": 3}
CONFIG = {"gd": dict(), "pb": dict(mode="pb", candidate_training="online", candidates=2,
                                   dendrite_patience=5, dendrite_max_epochs=2),
          "pb-cached": dict(mode="pb", candidates=2, candidate_steps=5)}


def _make():
    torch.manual_seed(0)  # same start weights on every rank
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _run(mode: str, rank: int, tmp: Path) -> None:
    from safetensors.torch import save_file

    from perforate.integrations.ddp import DDPGrower

    g = torch.Generator().manual_seed(100 + rank)  # each rank its own data shard
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    cfg = pf.Config(patience=1, improvement_threshold_abs=0.05, max_dendrites=1, seed=3, plots=False,
                    **CONFIG[mode])
    dg = DDPGrower(_make(), cfg, lambda p: torch.optim.SGD(p, lr=0.1),
                   out_dir=tmp / f"{mode}_run{rank}", init_sync=False)
    events, states = [], []
    for score in SCORES[mode][rank]:
        dg.model.train()
        for i in range(0, 64, 16):
            dg.optimizer.zero_grad()
            nn.functional.cross_entropy(dg.model(x[i:i + 16]), y[i:i + 16]).backward()
            dg.optimizer.step()
        d = dg.step(score)
        events.append(d.event)
        states.append({k: v.detach().clone().contiguous() for k, v in dg.module.state_dict().items()})
        if d.done:
            break
    dg.finish()
    save_file({k: v.contiguous() for k, v in dg.module.state_dict().items()}, tmp / f"{mode}_final{rank}.st")
    save_file(states[1], tmp / f"{mode}_grown{rank}.st")  # right after growth started
    save_file(states[BEST[mode]], tmp / f"{mode}_best{rank}.st")
    (tmp / f"{mode}_events{rank}.json").write_text(json.dumps(events))


def _worker(rank: int, world: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world)
    try:
        for mode in CONFIG:
            _run(mode, rank, Path(tmp))
        dist.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, str(tmp)), nprocs=2, join=True)
    return tmp


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("mode", list(CONFIG))
def test_two_ranks_grow_together_and_end_identical(two_rank_run, mode):
    from safetensors.torch import load_file

    tmp = two_rank_run
    events = [json.loads((tmp / f"{mode}_events{r}.json").read_text()) for r in range(2)]
    assert events[0] == events[1] == EVENTS[mode]
    final = [load_file(tmp / f"{mode}_final{r}.st") for r in range(2)]
    assert _same(final[0], final[1])
    # identical dendrite inits (gd) / candidate pools (pb) right after growth started
    grown = [load_file(tmp / f"{mode}_grown{r}.st") for r in range(2)]
    assert _same(grown[0], grown[1])
    assert any("dendrite" in k or "candidate" in k for k in grown[0])
    # dendrites were added, trained through the rebuilt optimizer (v starts at exactly 0),
    # and the best model, not the last one, was restored
    assert final[0]["0.output_weight"].shape == (1, 16)
    assert torch.count_nonzero(final[0]["0.output_weight"]) > 0
    assert _same(load_file(tmp / f"{mode}_best0.st"), final[0])
    # only rank 0 wrote files, and its best.pt reloads to the same weights
    assert (tmp / f"{mode}_run0" / "history.csv").exists()
    assert not (tmp / f"{mode}_run1").exists()
    reloaded = pf.load(tmp / f"{mode}_run0" / "best.pt", _make())
    assert _same({k: v for k, v in reloaded.state_dict().items()}, final[0])


def test_ddp_grower_needs_a_process_group():
    from perforate.integrations.ddp import DDPGrower

    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a process group is already running")
    with pytest.raises(pf.GrowthError, match="init_process_group"):
        DDPGrower(nn.Linear(2, 2), pf.Config(), lambda p: torch.optim.SGD(p, lr=0.1))

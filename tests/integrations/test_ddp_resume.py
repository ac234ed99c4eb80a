"""Resume under DDP (issue 27): after loading a grower state into a fresh DDPGrower, the DDP
wrapper holds every parameter that trains, so each one's gradient is averaged over the ranks.

Two CPU processes (gloo), each with its own data shard; one spawn checks every case."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import perforate as pf

pytestmark = pytest.mark.slow

# (phase to resume in, how the state is loaded)
CASES = [(phase, how) for phase in ("gd", "pb-dendrite", "pb-neuron")
         for how in ("DDPGrower.load_state_dict", "grower.load_state_dict", "DDPGrower.resume")]


def _make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _config(phase):
    if phase == "gd":
        return pf.Config(seed=3, plots=False)
    return pf.Config(mode="pb", candidate_training="online", candidates=2, dendrite_max_epochs=1,
                     min_correlation=0.0, seed=3, plots=False)


def _saved_state(phase, x, y, out_dir):
    """A plain grower (the same on every rank: same data) brought into ``phase``."""
    g = pf.Grower(_make(), _config(phase), lambda p: torch.optim.SGD(p, lr=0.1), out_dir=out_dir)
    g.step(0.5)
    g.add_dendrites()

    def epoch():
        for i in range(0, 64, 16):
            g.optimizer.zero_grad()
            nn.functional.cross_entropy(g.model(x[i:i + 16]), y[i:i + 16]).backward()
            g.optimizer.step()

    epoch()
    if phase == "pb-neuron":
        assert g.step(0.5).event == "join"
        epoch()
    assert g.phase == ("dendrite" if phase == "pb-dendrite" else "neuron")
    g.flush()
    return g.state_dict()


def _worker(rank, world, tmp):
    from safetensors.torch import save_file

    from perforate.integrations.ddp import DDPGrower

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(7)
        shared = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
        g = torch.Generator().manual_seed(100 + rank)  # each rank its own shard
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        for phase, how in CASES:
            name = f"{phase}-{how}"
            folder = Path(tmp) / f"{name}-r{rank}"
            sd = _saved_state(phase, *shared, folder)
            factory = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731
            if how == "DDPGrower.resume":
                dg = DDPGrower.resume(folder, _make(), factory, init_sync=False)
            else:
                dg = DDPGrower(_make(), _config(phase), factory, init_sync=False)
                if how == "DDPGrower.load_state_dict":
                    dg.load_state_dict(sd)
                else:
                    dg.grower.load_state_dict(sd)
            dg.optimizer.zero_grad()
            nn.functional.cross_entropy(dg.model(x), y).backward()
            grads = {n: p.grad.contiguous() for n, p in dg.module.named_parameters()
                     if p.requires_grad and p.grad is not None}
            trainable = sorted(n for n, p in dg.module.named_parameters() if p.requires_grad)
            save_file(grads, Path(tmp) / f"{name}-grads{rank}.st")
            (Path(tmp) / f"{name}-trainable{rank}.json").write_text(json.dumps(trainable))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp_resume")
    mp.spawn(_worker, args=(2, str(tmp)), nprocs=2, join=True)
    return tmp


@pytest.mark.parametrize("phase,how", CASES)
def test_every_trainable_gradient_is_averaged_after_a_resume(resumed, phase, how):
    from safetensors.torch import load_file

    name = f"{phase}-{how}"
    trainable = json.loads((resumed / f"{name}-trainable0.json").read_text())
    grads = [load_file(resumed / f"{name}-grads{r}.st") for r in range(2)]
    assert sorted(grads[0]) == sorted(grads[1]) == trainable  # every one got a gradient
    dendritic = [n for n in trainable if "output_weight" in n or "candidate" in n]
    assert dendritic  # the parameters the old wrapper missed
    differing = [n for n in trainable if not torch.allclose(grads[0][n], grads[1][n], atol=1e-7)]
    assert differing == []

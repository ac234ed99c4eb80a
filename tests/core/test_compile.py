"""Compiled training: the Grower built before ``torch.compile(model)`` (the README's order),
growth inside the compiled loop, graphs and recompiles counted with dynamo's CompileCounter."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import perforate as pf

CompileCounter = pytest.importorskip("torch._dynamo.testing").CompileCounter


def _model():
    # ten wrapped layers of ten shapes: more than dynamo's recompile limit (8) per code object
    layers = [nn.Sequential(nn.Linear(8 + i, 9 + i), nn.ReLU()) for i in range(10)]
    return nn.Sequential(*layers, nn.Linear(18, 3))


@pytest.mark.slow
def test_gd_training_compiles_to_one_graph_and_recompiles_once_per_growth():
    torch.manual_seed(0)
    cfg = pf.Config(mode="gd")
    model = pf.perforate(_model(), cfg)
    grower = pf.Grower(model, cfg, optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-3))
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    frames = []
    for epoch in range(6):
        loss = F.cross_entropy(compiled(x), y)
        grower.optimizer.zero_grad()
        loss.backward()
        grower.optimizer.step()
        grower.step(0.5 + 0.01 * epoch)  # rising: no growth decided by the grower
        frames.append(counter.frame_count)
        if epoch in (1, 3):
            grower.add_dendrites()
    assert frames == [1, 1, 2, 2, 3, 3]  # one graph; one recompile per growth; no eager warm-up
    assert all(layer.num_dendrites == 2 for layer in pf.dendritic_layers(model).values())
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))  # the compiled model is the grown one


@pytest.mark.slow
def test_pb_neuron_phases_compile_to_one_graph_with_the_dendrite_phase_run_eagerly():
    """pb's dendrite phase records batches and errors (not traceable): the documented loop runs
    that epoch on ``grower.model`` itself and every other epoch compiled."""
    torch.manual_seed(0)
    cfg = pf.Config(mode="pb", candidate_steps=5)
    model = pf.perforate(_model(), cfg)
    grower = pf.Grower(model, cfg, optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-3))
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    frames, events = [], []
    for epoch in range(8):
        run = grower.model if grower.phase == "dendrite" else compiled
        loss = F.cross_entropy(run(x), y)
        grower.optimizer.zero_grad()
        loss.backward()
        grower.optimizer.step()
        if epoch in (1, 4):
            events.append(grower.add_dendrites().event)
        else:
            events.append(grower.step(0.5 + 0.01 * epoch).event)
        frames.append(counter.frame_count)
    assert events[1:3] == ["dendrite_start", "join"] and events[4:6] == ["dendrite_start", "join"]
    assert frames == [1, 1, 1, 2, 2, 2, 3, 3]  # one graph, one recompile after each join
    assert all(layer.num_dendrites == 2 for layer in pf.dendritic_layers(model).values())

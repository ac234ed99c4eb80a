"""pf.measure.peak_training_memory: one definition of a training step's peak memory."""
import torch
from torch import nn

import perforate as pf
from perforate.measure import peak_training_memory


def _step(model, optimizer, x):
    optimizer.zero_grad(set_to_none=True)
    with peak_training_memory(model, optimizer) as peak:
        model(x).square().mean().backward()
        optimizer.step()
    return peak


def test_peak_counts_resident_state_gradients_and_activations():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 8))
    optimizer = torch.optim.Adam(model.parameters())
    param_bytes = sum(p.numel() * 4 for p in model.parameters())
    first = _step(model, optimizer, torch.randn(32, 64))
    assert first.resident == param_bytes  # no gradients or optimizer state yet
    # Adam's state (two moments) and the gradients are created inside the step and kept
    assert first.bytes >= first.resident + 3 * param_bytes
    again = _step(model, optimizer, torch.randn(32, 64))
    steps = 4 * len(list(model.parameters()))  # Adam's float32 step counter per parameter
    assert again.resident == 3 * param_bytes + steps  # parameters and both moments
    # freed temporaries do not pile up: the same step costs the same
    assert _step(model, optimizer, torch.randn(32, 64)).bytes == again.bytes
    # activations saved for backward scale with the batch (the hidden layer: 256 floats a sample)
    bigger = _step(model, optimizer, torch.randn(96, 64))
    assert bigger.bytes - again.bytes >= 64 * 256 * 4


def test_peak_of_a_pb_dendrite_phase_step():
    torch.manual_seed(0)
    cfg = pf.Config(mode="pb", candidates=2)
    grower = pf.Grower(nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4)), cfg,
                       lambda p: torch.optim.SGD(p, lr=0.1))
    plain = _step(grower.model, grower.optimizer, torch.randn(8, 16))
    grower.add_dendrites()
    phase = _step(grower.model, grower.optimizer, torch.randn(8, 16))
    assert phase.resident > plain.resident and phase.bytes > phase.resident

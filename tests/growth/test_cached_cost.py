"""What cached pb candidate training costs where a candidate costs like its layer
(convolutions, declared conv + batch-norm blocks): the steps pass over the cached epoch about
``Config.candidate_passes`` times, and the candidates still learn."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import perforate as pf
from perforate.training import cached, pb
from tests.helpers.models import ConvBN

N, BATCH = 64, 8


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = ConvBN(2, 4)
        self.head = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        return self.head(torch.relu(self.block(x)).flatten(1))


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, 2, 5, 5, generator=g), torch.randint(0, 3, (N,), generator=g)


@pytest.mark.parametrize("passes", [None, 0.0])
def test_a_block_fit_passes_over_its_cached_epoch_about_candidate_passes_times(passes):
    """Samples the candidate blocks compute in the fit (the steps and the final whole-epoch
    score): about ``candidate_passes + 1`` = 11 epochs by default, not one epoch a step."""
    torch.manual_seed(0)
    x, y = _data()
    cfg = pf.Config(mode="pb") if passes is None else pf.Config(mode="pb", candidate_passes=passes)
    model = pf.perforate(_Net(), cfg, blocks=[ConvBN])
    grower = pf.Grower(model, cfg, optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-3))
    grower.add_dendrites()
    for i in range(0, N, BATCH):
        loss = F.cross_entropy(model(x[i:i + BATCH]), y[i:i + BATCH])
        grower.optimizer.zero_grad()
        loss.backward()
        grower.optimizer.step()
    seen = []
    pool = pf.dendritic_layers(model)["block"].candidate_pool
    for unit in pool.blocks:
        unit.conv.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    decision = grower.step(0.5)
    assert decision.event == "join"
    epochs = sum(seen) / (N * cfg.candidates)
    if passes is None:
        assert epochs <= 10 + 1
    else:  # full-batch steps: one epoch a step (fewer when the objective stops rising)
        assert epochs > 20


def _learnable_conv_epoch(passes, steps=100):
    """A frozen conv layer whose neurons' error is a sigmoid of another convolution of the
    input: a candidate can learn it. Returns the chosen candidates' |correlation|."""
    g = torch.Generator().manual_seed(0)
    layer = pf.dendritic_layers(pf.perforate(nn.Sequential(nn.Conv2d(2, 3, 3)), pf.Config(mode="pb")))["0"]
    for p in layer.parameters():
        p.requires_grad_(False)
    teacher = torch.randn(3, 2, 3, 3, generator=g)
    pb.start_dendrite_phase({"0": layer}, 2, torch.Generator().manual_seed(1), 0.9, cache_mb=64)
    for _ in range(8):
        x = torch.randn(16, 2, 8, 8, generator=g)
        target = torch.sigmoid(F.conv2d(x, teacher))
        (layer(x) * target).sum().backward()  # delta = target
    pool = layer.candidate_pool
    taken = cached.fit([(pool, layer)], steps, 0.05, passes)[0]
    return pool.layer_correlation(), taken


def test_sliced_steps_still_learn_what_full_batch_steps_learn():
    full, full_steps = _learnable_conv_epoch(0.0)
    sliced, sliced_steps = _learnable_conv_epoch(10.0)
    assert sliced_steps <= 80 and full_steps > sliced_steps
    assert full > 0.5
    assert sliced > 0.9 * full


@pytest.mark.parametrize("shape, costly", [((8, 6), False), ((8, 5, 6), True)])
def test_linear_layers_on_sequences_step_on_slices_and_flat_ones_on_the_whole_epoch(shape, costly):
    layer = pf.dendritic_layers(pf.perforate(nn.Sequential(nn.Linear(6, 4)), pf.Config(mode="pb")))["0"]
    for p in layer.parameters():
        p.requires_grad_(False)
    pb.start_dendrite_phase({"0": layer}, 1, torch.Generator().manual_seed(0), 0.9, cache_mb=64)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        (layer(torch.randn(*shape, generator=g)) ** 2).sum().backward()
    pool = layer.candidate_pool
    epoch = cached.CachedEpoch(pool, layer, pool.cache)
    assert epoch.costly is costly
    taken = cached.fit([(pool, layer)], 100, 0.05, passes=10.0)[0]
    assert (taken <= 40) is costly  # 4 slices of one batch: 10 passes in 40 steps


def _learnable_linear_epoch(steps, lr, flat_steps=None, flat_lr=None):
    """A frozen flat Linear layer whose neurons' error is a sigmoid of another linear map of
    the input (a candidate can learn it). Returns the chosen candidates' |correlation| and the
    steps the fit took."""
    g = torch.Generator().manual_seed(0)
    layer = pf.dendritic_layers(pf.perforate(nn.Sequential(nn.Linear(8, 6)), pf.Config(mode="pb")))["0"]
    for p in layer.parameters():
        p.requires_grad_(False)
    teacher = torch.randn(6, 8, generator=g)
    pb.start_dendrite_phase({"0": layer}, 2, torch.Generator().manual_seed(1), 0.9, cache_mb=64)
    for _ in range(8):
        x = torch.randn(32, 8, generator=g)
        (layer(x) * torch.sigmoid(x @ teacher.T)).sum().backward()  # delta = the target
    pool = layer.candidate_pool
    taken = cached.fit([(pool, layer)], steps, lr, 10.0, flat_steps, flat_lr)[0]
    return pool.layer_correlation(), taken


def test_flat_layers_take_20_steps_by_default_and_reach_the_long_fits_correlation():
    """The default schedule of flat layers (``candidate_steps="auto"``: 20 full-batch steps at
    5 x ``candidate_lr`` = 0.05) against the one before it (100 steps at 0.01): a fifth of the
    steps, and the chosen candidates' correlation within 10 % of the long fit's (20 steps at
    0.01 reach about 0.75 of it here)."""
    from perforate.config import CANDIDATE_FLAT_LR_SCALE, CANDIDATE_FLAT_STEPS, CANDIDATE_SLICED_STEPS

    cfg = pf.Config()
    assert (cfg.candidate_steps, cfg.candidate_lr) == ("auto", 0.01)
    assert (CANDIDATE_FLAT_STEPS, CANDIDATE_FLAT_LR_SCALE, CANDIDATE_SLICED_STEPS) == (20, 5.0, 100)
    long_fit, long_steps = _learnable_linear_epoch(100, 0.01)
    short_fit, short_steps = _learnable_linear_epoch(CANDIDATE_SLICED_STEPS, cfg.candidate_lr,
                                                     CANDIDATE_FLAT_STEPS,
                                                     cfg.candidate_lr * CANDIDATE_FLAT_LR_SCALE)
    assert short_steps == 20 and long_steps > 20
    assert long_fit > 0.5
    assert short_fit > 0.9 * long_fit
    assert _learnable_linear_epoch(5, 0.05, 20)[1] == 5  # the steps stay the cap


def test_the_default_grower_fit_gives_flat_layers_20_steps_and_an_explicit_count_to_all(monkeypatch):
    """``Grower.step`` passes the default split (flat layers 20 full-batch steps at 5 x the
    rate, sliced ones 100 at the rate) to the fit, and an explicit ``candidate_steps`` (at
    ``candidate_lr``) to every layer."""
    calls = []
    real = cached.fit
    monkeypatch.setattr(cached, "fit", lambda *a: calls.append(a[1:]) or real(*a))
    for steps, expected in (("auto", (100, 0.01, 10.0, 20, 0.05)), (7, (7, 0.01, 10.0, None, None))):
        torch.manual_seed(0)
        cfg = pf.Config(mode="pb", candidate_steps=steps)
        model = pf.perforate(nn.Sequential(nn.Linear(4, 3)), cfg)
        grower = pf.Grower(model, cfg, optimizer_factory=lambda p: torch.optim.Adam(p, lr=1e-3))
        grower.add_dendrites()
        for _ in range(2):
            F.mse_loss(model(torch.randn(8, 4)), torch.randn(8, 3)).backward()
        decision = grower.step(0.5)
        assert calls[-1][:4] == expected[:4] and calls[-1][4] == pytest.approx(expected[4])
    with pytest.raises(pf.ConfigError, match="candidate_steps"):
        pf.Config(candidate_steps="many")
        assert ("20 full-batch steps" in decision.reason) is (steps == "auto")


def test_flat_steps_leave_sliced_layers_alone():
    """``candidate_flat_steps`` caps flat layers only: a conv layer still steps on slices,
    ``candidate_passes`` passes over its epoch in up to ``candidate_steps`` steps."""
    g = torch.Generator().manual_seed(0)
    layer = pf.dendritic_layers(pf.perforate(nn.Sequential(nn.Conv2d(2, 3, 3)), pf.Config(mode="pb")))["0"]
    for p in layer.parameters():
        p.requires_grad_(False)
    pb.start_dendrite_phase({"0": layer}, 1, torch.Generator().manual_seed(1), 0.9, cache_mb=64)
    for _ in range(8):
        (layer(torch.randn(4, 2, 6, 6, generator=g)) ** 2).sum().backward()
    pool = layer.candidate_pool
    taken = cached.fit([(pool, layer)], 100, 0.05, 10.0, flat_steps=20)[0]
    assert taken > 20  # 8 slices (one per batch), 10 passes: up to 80 steps


def test_flat_lr_moves_flat_layers_only():
    """``flat_lr`` is the Adam rate of flat layers; a conv layer fitted in the same call keeps
    ``lr``: its candidates' first step is the same with and without ``flat_lr``."""
    def first_step(flat_lr):
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        model = pf.perforate(nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(12, 2)), pf.Config(mode="pb"))
        layers = pf.dendritic_layers(model)
        for p in model.parameters():
            p.requires_grad_(False)
        pb.start_dendrite_phase(layers, 1, torch.Generator().manual_seed(1), 0.9, cache_mb=64)
        for _ in range(4):
            (model(torch.randn(4, 2, 4, 4, generator=g)) ** 2).sum().backward()
        before = {n: l.candidate_pool.weight.detach().clone() for n, l in layers.items()}
        cached.fit([(l.candidate_pool, l) for l in layers.values()], 1, 0.01, 10.0, 20, flat_lr)
        return {n: (l.candidate_pool.best_weight if hasattr(l.candidate_pool, "best_weight")
                    else l.candidate_pool.weight).detach() - before[n] for n, l in layers.items()}

    base, fast = first_step(None), first_step(0.05)
    torch.testing.assert_close(fast["0"], base["0"])  # the conv layer: same rate
    # Adam's first step is lr * sign-like: the flat layer's moves 5 times as far
    torch.testing.assert_close(fast["2"], 5 * base["2"], rtol=1e-4, atol=1e-7)

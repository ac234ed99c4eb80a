"""Checks every model family passes (used by the families, graph and GPT-2 tests): wrapped
with outputs unchanged, grown function-preserving, saved and loaded identically, exported to
plain modules that match and trace; one pb cycle that leaves outputs unchanged."""
import copy
import warnings

import torch

import perforate as pf

ATOL = 1e-5


def _first(out):
    """The tensor a loss would read from a family's output."""
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out.data if hasattr(out, "batch_sizes") else out


def _grow(model, seed):
    gen = torch.Generator().manual_seed(seed)
    for layer in pf.dendritic_layers(model).values():
        layer.add_dendrites(1, gen)


def _randomize(model):
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in pf.dendritic_layers(model).values():
            layer.output_weight.normal_(generator=gen)


def _out(model, inputs, train=False):
    model.train(train)
    with torch.set_grad_enabled(train):
        return _first(model(*inputs))


def check_family(build, make_inputs, kwargs, base_for_load, tmp_path, trace=True):
    torch.manual_seed(0)
    plain = build()
    inputs = make_inputs()
    expected = _out(plain, inputs)
    model = pf.perforate(copy.deepcopy(plain), pf.Config(), **kwargs)
    assert pf.dendritic_layers(model)
    torch.testing.assert_close(_out(model, inputs), expected, rtol=0, atol=ATOL)
    for seed in range(2):  # gd growth is function-preserving
        before = _out(model, inputs)
        _grow(model, seed)
        torch.testing.assert_close(_out(model, inputs), before, rtol=0, atol=ATOL)
    _randomize(model)
    grown = _out(model, inputs)
    assert not torch.allclose(grown, expected, atol=1e-4)  # the dendrites are wired in
    _out(model, inputs, train=True).pow(2).mean().backward()
    assert all(layer.dendrite_parameters()[0].grad is not None for layer in pf.dendritic_layers(model).values())

    pf.save(model, tmp_path / "m.pt")
    restored = pf.load(tmp_path / "m.pt", base_for_load())
    torch.testing.assert_close(_out(restored, inputs), grown, rtol=0, atol=0)

    exported = pf.export(model).eval()
    assert not pf.dendritic_layers(exported)
    with torch.no_grad():
        torch.testing.assert_close(_first(exported(*inputs)), grown, rtol=1e-5, atol=ATOL)
        if trace:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(exported, inputs, check_trace=False)
            torch.testing.assert_close(_first(traced(*inputs)), grown, rtol=1e-5, atol=ATOL)
    return model


def check_pb(build, make_inputs, kwargs, training="online"):
    """One pb cycle: the dendrite phase leaves eval outputs unchanged, the join too."""
    torch.manual_seed(0)
    model = pf.perforate(build(), pf.Config(mode="pb"), **kwargs)
    inputs = make_inputs()
    cfg = pf.Config(mode="pb", patience=100, candidates=2, dendrite_max_epochs=2,
                    candidate_training=training, candidate_steps=3)
    grower = pf.Grower(model, cfg, lambda p: torch.optim.Adam(p, lr=1e-2))
    grower.add_dendrites()
    before = _out(model, inputs)
    for _ in range(2):
        loss = _out(model, inputs, train=True).sin().mean()
        grower.optimizer.zero_grad()
        loss.backward()
        grower.optimizer.step()
        if grower.phase == "dendrite":
            torch.testing.assert_close(_out(model, inputs), before, rtol=0, atol=0)
        decision = grower.step(0.0)
        if decision.event == "join":  # cached: after one epoch
            break
    assert decision.event == "join"
    torch.testing.assert_close(_out(model, inputs), before, rtol=0, atol=ATOL)
    pools = [layer for layer in pf.dendritic_layers(model).values() if layer.num_dendrites == 1]
    assert len(pools) == len(pf.dendritic_layers(model))

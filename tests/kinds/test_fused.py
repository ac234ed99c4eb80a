"""The fused dendrite path computes what the slow per-dendrite loop computes, and exports cleanly."""
import warnings

import pytest
import torch
from torch import nn

import perforate as pf
from perforate.kinds import fused

# (module, input shape): every layout the fused path handles
LAYERS = {
    "linear": (lambda: nn.Linear(6, 5), (4, 6)),
    "sequence_linear": (lambda: nn.Linear(6, 5), (3, 7, 6)),  # [B, T, C]
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, padding=1), (2, 3, 9)),
    "conv2d": (lambda: nn.Conv2d(3, 4, 3, stride=2), (2, 3, 7, 7)),
    "grouped_conv2d": (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=2), (2, 4, 5, 5)),
}


def _layer(case, mode, k, dtype):
    build, shape = LAYERS[case]
    torch.manual_seed(0)
    layer = pf.perforate(build(), pf.Config(mode=mode)).to(dtype)
    layer.add_dendrites(k, torch.Generator().manual_seed(k))
    layer.freeze_dendrites(mode == "pb")  # how a pb neuron phase holds them
    with torch.no_grad():  # trained-looking weights: they start at zero
        layer.output_weight.normal_()
        if layer.cascade_weight is not None:
            layer.cascade_weight.normal_()
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    return layer, x


def _outputs_and_grads(layer, x, forward, grad_out):
    x.grad = None
    for p in layer.parameters():
        p.grad = None
    y = forward(x)
    y.backward(grad_out)
    grads = {"input": x.grad.clone()}
    grads.update({n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None})
    return y.detach(), grads


@pytest.mark.parametrize(("k", "dtype"), [(1, torch.float64), (2, torch.float64), (3, torch.float64),
                                          (4, torch.float64), (1, torch.float32), (4, torch.float32)])
@pytest.mark.parametrize("mode", ["gd", "pb"])
@pytest.mark.parametrize("case", sorted(LAYERS))
def test_fused_matches_reference_outputs_and_gradients(case, mode, k, dtype):
    layer, x = _layer(case, mode, k, dtype)
    assert layer.perforated == (mode == "pb")
    grad_out = torch.randn_like(layer(x))
    fused, fused_grads = _outputs_and_grads(layer, x, layer, grad_out)
    ref, ref_grads = _outputs_and_grads(layer, x, layer.reference_forward, grad_out)
    # float64 shows the maths is the same to 1e-6; float32 allows for GEMM summation order
    tol = dict(rtol=0.0, atol=1e-6) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused, ref, **tol)
    assert fused_grads.keys() == ref_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(fused_grads[name], ref_grads[name], **tol, msg=name)
    # the dendrites really take part: output and cascade weights get gradients
    assert fused_grads["output_weight"].abs().sum() > 0
    if mode == "gd":
        assert fused_grads["dendrite_weight"].abs().sum() > 0
        if k > 1:
            assert fused_grads["cascade_weight"].abs().sum() > 0
    else:  # frozen dendrites, and no error flows back through them into the input
        assert "dendrite_weight" not in fused_grads and "cascade_weight" not in fused_grads
        x.grad = None
        layer.main(x).backward(grad_out)
        torch.testing.assert_close(fused_grads["input"], x.grad, **tol)


def _dendritic(module, k, mode, activation="sigmoid", dtype=torch.float64, channels_last=False):
    """``module`` perforated with ``k`` trained-looking dendrites (a pb neuron phase freezes them)."""
    torch.manual_seed(0)
    layer = pf.perforate(module, pf.Config(mode=mode, dendrite_activation=activation)).to(dtype)
    if channels_last:
        layer = layer.to(memory_format=torch.channels_last)
    layer.add_dendrites(k, torch.Generator().manual_seed(k))
    layer.freeze_dendrites(mode == "pb")
    with torch.no_grad():
        layer.output_weight.normal_()
        if layer.cascade_weight is not None:
            layer.cascade_weight.normal_()
    return layer


def _linear_layer(k, mode, activation="sigmoid", bias=True, dtype=torch.float64):
    return _dendritic(nn.Linear(6, 5, bias=bias), k, mode, activation, dtype)


def _assert_fast_path_equals_generic_path(layer, x):
    grad_out = torch.randn_like(layer(x))
    fast, fast_grads = _outputs_and_grads(layer, x, layer, grad_out)
    layer.fused = False
    generic, generic_grads = _outputs_and_grads(layer, x, layer, grad_out)
    torch.testing.assert_close(fast, generic, rtol=0.0, atol=1e-12)
    assert fast_grads.keys() == generic_grads.keys()
    for name in generic_grads:
        torch.testing.assert_close(fast_grads[name], generic_grads[name], rtol=0.0, atol=1e-12, msg=name)


@pytest.mark.parametrize("node", [False, True], ids=["small", "node"])
@pytest.mark.parametrize("shape", [(4, 6), (3, 7, 6), (6,)], ids=["batch", "sequence", "unbatched"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "gelu"])
@pytest.mark.parametrize("mode", ["gd", "pb"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_linear_fast_path_equals_generic_path(k, mode, activation, shape, node, monkeypatch):
    """The Linear kind's fast path (plain ops for one dendrite on small layers, one autograd
    node otherwise) computes what the generic path computes, in the same order (the node works
    in place on strided views, so a vectorised and a scalar loop may meet one element: 1 ulp)."""
    if node:  # every size takes the node
        monkeypatch.setattr(fused, "_NODE_PAYS", 0)
    layer = _linear_layer(k, mode, activation, bias=(k != 2))
    _assert_fast_path_equals_generic_path(layer, torch.randn(shape, dtype=torch.float64, requires_grad=True))


@pytest.mark.parametrize("node", [False, True], ids=["small", "node"])
@pytest.mark.parametrize("case", ["conv1d", "conv2d", "conv2d-unbatched", "conv2d-channels-last"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "gelu"])
@pytest.mark.parametrize("mode", ["gd", "pb"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_conv_fast_path_equals_generic_path(k, mode, activation, case, node, monkeypatch):
    """Convolutions join their dendrites in one node (DendriticJoin): the generic path's
    output to rounding, and its gradients."""
    if node:
        monkeypatch.setattr(fused, "_NODE_PAYS", 0)
    conv = nn.Conv1d(3, 4, 3, padding=1) if case == "conv1d" else nn.Conv2d(3, 4, 3, stride=2)
    channels_last = case == "conv2d-channels-last"
    layer = _dendritic(conv, k, mode, activation, channels_last=channels_last)
    shape = {"conv1d": (2, 3, 9), "conv2d-unbatched": (3, 7, 7)}.get(case, (2, 3, 7, 7))
    x = torch.randn(shape, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    _assert_fast_path_equals_generic_path(layer, x.requires_grad_(True))


def test_linear_fast_path_without_input_gradient_or_trainable_main():
    layer = _linear_layer(3, "gd")
    layer.main.weight.requires_grad_(False)
    x = torch.randn(4, 6, dtype=torch.float64)  # a first layer: no gradient for its input
    layer(x).sum().backward()
    assert layer.main.weight.grad is None and layer.main.bias.grad is not None
    expected = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    for p in layer.parameters():
        p.grad = None
    layer.reference_forward(x).sum().backward()
    for name, p in layer.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(expected[name], p.grad, rtol=0.0, atol=1e-12, msg=name)


def test_linear_fast_path_steps_aside_for_hooks_autocast_and_second_derivatives():
    layer = _linear_layer(2, "gd", dtype=torch.float32)
    x = torch.randn(4, 6, requires_grad=True)
    seen = []
    handle = layer.main.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    expected = layer.reference_forward(x)
    torch.testing.assert_close(layer(x), expected)
    assert seen, "a hook on the wrapped Linear must still run"
    handle.remove()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the GEMMs run in bfloat16
        out = layer(x)
        out.sum().backward()
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)
    assert not torch.allclose(out.float(), expected, rtol=1e-6, atol=1e-6)
    (grad_x,) = torch.autograd.grad(layer(x).sum(), x, create_graph=False)
    with pytest.raises(pf.GrowthError, match="layer.fused = False"):
        torch.autograd.grad(layer(x).square().sum(), x, create_graph=True)
    layer.fused = False
    (grad_x2,) = torch.autograd.grad(layer(x).square().sum(), x, create_graph=True)
    grad_x2.sum().backward()  # the generic path has second derivatives
    torch.testing.assert_close(grad_x, torch.autograd.grad(layer(x).sum(), x)[0])


@pytest.mark.parametrize("mode", ["gd", "pb"])
def test_growth_with_trained_dendrites_keeps_outputs(mode):
    """A new dendrite joins with v = 0, so the output stays; the earlier dendrites' terms now come
    from a wider GEMM, whose columns may round differently on some BLAS: 1e-6 relative."""
    torch.manual_seed(0)
    model = pf.perforate(nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 10)),
                         pf.Config(mode=mode))
    x = torch.randn(64, 20)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        before = model(x)
        for layer in pf.dendritic_layers(model).values():
            layer.add_dendrites(1, gen)
        torch.testing.assert_close(model(x), before, rtol=1e-6, atol=1e-6)
        with torch.no_grad():  # the dendrites train: the next growth starts from v != 0
            for layer in pf.dendritic_layers(model).values():
                layer.output_weight.normal_(generator=gen)
                if layer.cascade_weight is not None:
                    layer.cascade_weight.normal_(generator=gen)


class Mixed(nn.Module):
    """Conv2d, Conv1d, a Linear on [B, T, C] sequences and a Linear head."""

    def __init__(self):
        super().__init__()
        self.conv2d = nn.Conv2d(2, 4, 3, padding=1)
        self.conv1d = nn.Conv1d(4, 4, 3, padding=1)
        self.seq = nn.Linear(4, 6)
        self.head = nn.Linear(6 * 8, 5)

    def forward(self, x):
        h = torch.relu(self.conv2d(x)).mean(-1)  # [B, 4, 8]
        h = torch.relu(self.conv1d(h)).transpose(1, 2)  # [B, 8, 4]: a sequence
        h = torch.tanh(self.seq(h))  # [B, 8, 6]
        return self.head(h.flatten(1))


def _exported(mode, k=2):
    torch.manual_seed(0)
    model = pf.perforate(Mixed(), pf.Config(mode=mode))
    gen = torch.Generator().manual_seed(1)
    for layer in pf.dendritic_layers(model).values():
        layer.add_dendrites(k, gen)
        with torch.no_grad():
            layer.output_weight.normal_(generator=gen)
            if layer.cascade_weight is not None:
                layer.cascade_weight.normal_(generator=gen)
    model.eval()
    return model, pf.export(model).eval()


@pytest.mark.parametrize("mode", ["gd", "pb"])
def test_exported_model_matches_and_traces(mode):
    model, exported = _exported(mode)
    x = torch.randn(3, 2, 8, 8)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(exported(x), expected, rtol=1e-5, atol=1e-5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.trace is deprecated in recent torch
            traced = torch.jit.trace(exported, x)
        other = torch.randn(5, 2, 8, 8)  # another batch size: nothing shape-specific was baked in
        torch.testing.assert_close(traced(other), exported(other), rtol=0.0, atol=1e-6)
        torch.testing.assert_close(traced(x), expected, rtol=1e-5, atol=1e-5)


def test_exported_model_works_with_torch_export():
    model, exported = _exported("gd", k=1)
    x = torch.randn(3, 2, 8, 8)
    program = torch.export.export(exported, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), exported(x), rtol=0.0, atol=1e-6)


def test_exported_layer_is_one_widened_call_and_plain_modules():
    _, exported = _exported("gd", k=3)
    layers = [m for m in exported.modules() if isinstance(m, pf.ExportedDendriticLayer)]
    assert len(layers) == 4
    for layer in layers:
        assert layer.main_in_stack and layer.main is None  # main folded into the stacked call
        assert layer.stacked.weight.shape[0] == 4 * layer.channels
    assert not any(isinstance(m, pf.DendriticLayer) for m in exported.modules())
    assert not any(p.requires_grad for p in exported.parameters())
    root = pf.perforate(nn.Linear(4, 3))  # a model that is one layer is replaced whole
    root.add_dendrites(1)
    assert not any(p.requires_grad for p in pf.export(root).parameters())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["gd", "pb"])
def test_torch_compile_between_growth_events(mode):
    """About 30-60 s on a CPU: compiling a training step, recompiling after growth, and export."""
    torch.manual_seed(0)
    model = pf.perforate(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)),
                         pf.Config(mode=mode))
    gen = torch.Generator().manual_seed(0)
    for layer in pf.dendritic_layers(model).values():
        layer.add_dendrites(1, gen)
        with torch.no_grad():
            layer.output_weight.normal_(generator=gen)
    x = torch.randn(4, 6)
    compiled = torch.compile(model)
    out = compiled(x)
    out.sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    for p in model.parameters():
        p.grad = None
    model(x).sum().backward()
    eager = [p.grad for p in model.parameters() if p.grad is not None]
    torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for layer in pf.dendritic_layers(model).values():  # growth: the next call recompiles
        layer.add_dendrites(1, gen)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)
    exported = pf.export(model).eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(exported)(x), exported(x), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_export_compiled_ahead_of_time_matches_for_any_batch(tmp_path):
    """About 20-40 s on a CPU (AOTInductor compiles C++)."""
    torch.manual_seed(0)
    model = pf.perforate(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), pf.Config())
    gen = torch.Generator().manual_seed(0)
    for layer in pf.dendritic_layers(model).values():
        layer.add_dendrites(2, gen)
        with torch.no_grad():
            layer.output_weight.normal_(generator=gen)
            layer.cascade_weight.normal_(generator=gen)
    eager = pf.export(model).eval()
    fast = pf.export(model, compile_for=torch.randn(1, 6), package_path=tmp_path / "model.pt2")
    reloaded = torch._inductor.aoti_load_package(str(tmp_path / "model.pt2"))
    with torch.no_grad():
        for batch in (1, 7):
            x = torch.randn(batch, 6)
            torch.testing.assert_close(fast(x), eager(x), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(reloaded(x), eager(x), rtol=1e-5, atol=1e-6)


def test_exported_model_gives_input_gradients_and_fresh_outputs():
    """Without gradients the exported layer works in place on its own buffer; with an input
    gradient it records plain ops. Either way the output is a new contiguous tensor, and the
    two agree to float rounding: not bit for bit, since oneDNN may pick another convolution
    kernel when the input needs a gradient (1 ulp on an AVX2 CPU, ONEDNN_MAX_CPU_ISA=AVX2)."""
    model, exported = _exported("gd", k=3)
    x = torch.randn(4, 2, 8, 8, requires_grad=True)
    with torch.no_grad():
        fast = exported(x)
    out = exported(x)
    assert fast.is_contiguous()
    torch.testing.assert_close(fast, out.detach(), rtol=1e-6, atol=1e-6)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    (expected,) = torch.autograd.grad(model(x).square().sum(), x)
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5)

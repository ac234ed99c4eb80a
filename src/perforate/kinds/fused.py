"""Layers with dendrites as one autograd node: the training forward's fast paths.

On small layers the number of ops, not their FLOPs, sets the cost: autograd records a node for
every activation, cascade term and join term, and each backward node runs two or three more
ops; on large ones each of those ops is a pass over memory with a new tensor. Here the cascade
and the join are one node whose backward is written out by hand, in place on one buffer of the
dendrites' shape: one op per dendrite for the activation derivative and one per cascade term.

- :class:`DendriticLinear` (the linear kind): the main ``F.linear``, the stacked dendrites'
  ``F.linear`` and the cascade and join in one node; the x gradients of the main layer and the
  dendrites are accumulated by one ``addmm_``. With one dendrite on a small output plain
  autograd ops are faster (``_NODE_PAYS``).
- :class:`DendriticJoin` (kinds whose dendrites are one wide call, e.g. convolutions): the
  main layer and the wide call stay autograd ops, the node takes their outputs.

Measured against the generic path in one run (the cost bench's layers, one thread; ratios to a
plain layer of equal FLOPs), gd mode at 1/2/4 dendrites: a 100-unit Linear at batch 32 from
1.94/2.98/3.62 to 1.75/2.69/2.99 (pb mode 1.55/1.70/1.86 to 1.28/1.65/1.56); a 3x3 convolution
with 32 channels from 1.41/1.44/1.69 to 1.30/1.32/1.39. Peak training memory is higher than on
the generic path (the node holds its buffer and every gradient until it returns): 1.20/1.35
against 1.11/1.25 times a plain model at 2/4 dendrites.

The main layer's output comes from its own call, and the dendrites' terms are added in
dendrite order, as :meth:`DendriticLayer.join` adds them (in place on strided views, where a
vectorised and a scalar loop may round one element differently: 1 ulp).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules import module as nn_module

from .. import activations
from ..activations import Activation
from ..errors import GrowthError


_NODE_PAYS = 16384
"""Output elements (rows x neurons) from which one dendrite also takes the node: below, the
node's Python costs more than the autograd nodes it replaces (a 100-unit layer at batch 32:
2.4 against 1.9 times a plain layer); above, its in-place work saves memory passes (a 512-unit
layer at batch 256: 1.12 against 1.18)."""


class DendriticLinear(torch.autograd.Function):
    """``y = x W^T + b + sum_k v_k * a_k``, ``a_k = f(x Wd_k^T + bd_k + sum_{j<k} w_kj * a_j)``.

    Inputs: ``x [..., I]``, the main ``weight [C, I]`` and ``bias [C]`` (or None), the stacked
    dendrites ``d_weight [K*C, I]`` and ``d_bias [K*C]`` (or None), ``cascade [K(K-1)/2, C]``
    (or None), ``out_weight [K, C]``, the :class:`Activation` (with in-place forms) and
    ``perforated`` (no error flows from the dendrites into ``x``).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, d_weight, d_bias, cascade, out_weight,
                act: Activation, perforated: bool):
        k, c = out_weight.shape
        y = F.linear(x, weight, bias)
        z = F.linear(x, d_weight, d_bias)
        a = z.view(*z.shape[:-1], k, c)  # becomes the activations, in place
        y = _cascade_join(y, a, a.dim() - 2, cascade, out_weight, act, own_y=True)
        ctx.save_for_backward(x, weight, d_weight, a, cascade, out_weight)
        ctx.act, ctx.perforated = act, perforated
        return y

    @staticmethod
    def backward(ctx, grad):
        _no_second_derivative()
        x, weight, d_weight, a, cascade, out_weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        k, c = out_weight.shape
        g = grad.reshape(-1, c)
        x2 = x.reshape(-1, x.shape[-1])
        through = need[0] and not ctx.perforated
        grad_v, grad_z, grad_cascade = _cascade_join_backward(
            g, a.reshape(-1, k, c), 1, cascade, out_weight, ctx.act,
            need[6], through or need[3] or need[4], need[5])
        if grad_z is not None:
            grad_z = grad_z.view(-1, k * c)
        gx = gw = gb = gdw = gdb = None
        if need[0]:
            gx = g.mm(weight)
            if through:
                gx.addmm_(grad_z, d_weight)
            gx = gx.view(x.shape)
        if need[1]:
            gw = g.t().mm(x2)
        if need[2]:
            gb = g.sum(0)
        if need[3]:
            gdw = grad_z.t().mm(x2)
        if need[4]:
            gdb = grad_z.sum(0)
        return gx, gw, gb, gdw, gdb, grad_cascade, grad_v, None, None


class DendriticJoin(torch.autograd.Function):
    """``y + sum_k v_k * a_k``, ``a_k = f(z_k + sum_{j<k} w_kj * a_j)``, from the main layer's
    output ``y`` and the dendrites' wide output ``z`` (``K*C`` channels on ``axis``).

    ``z`` becomes the activations in place: it must come from an op whose backward does not
    read its output (a convolution or a linear map do not).
    """

    @staticmethod
    def forward(ctx, y, z, cascade, out_weight, act: Activation, axis: int):
        k, c = out_weight.shape
        a = z.detach().unflatten(axis, (k, c))
        out = _cascade_join(y, a, axis, cascade, out_weight, act, own_y=False)
        ctx.save_for_backward(a, cascade, out_weight)
        ctx.act, ctx.axis = act, axis
        return out

    @staticmethod
    def backward(ctx, grad):
        _no_second_derivative()
        a, cascade, out_weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        grad_v, grad_z, grad_cascade = _cascade_join_backward(
            grad, a, ctx.axis, cascade, out_weight, ctx.act, need[3], need[1], need[2])
        if grad_z is not None:
            grad_z = grad_z.flatten(ctx.axis, ctx.axis + 1)
        return grad, grad_z, grad_cascade, grad_v, None, None


def _rows(weight: torch.Tensor, ones: int) -> tuple[torch.Tensor, ...]:
    """The rows of a per-channel weight ``[R, C]``, each shaped ``[C, 1, ...]`` (``ones`` ones)."""
    return weight.view(*weight.shape, *([1] * ones)).unbind(0)


def _cascade_join(y, a, dim, cascade, out_weight, act, own_y: bool):
    """Turn ``a`` (pre-activations, dendrites on ``dim``, neurons on ``dim + 1``) into the
    activations in place and return ``y`` plus their join, added in dendrite order (into ``y``
    itself when the node made it)."""
    ones = a.dim() - dim - 2
    acts = a.unbind(dim)
    w = _rows(cascade, ones) if cascade is not None else ()
    v = _rows(out_weight, ones)
    row = 0
    for i, ai in enumerate(acts):
        for j in range(i):
            ai.addcmul_(acts[j], w[row])
            row += 1
        act.forward_(ai)
        y = y.addcmul_(ai, v[i]) if own_y or i else torch.addcmul(y, ai, v[i])
    return y


def _cascade_join_backward(grad, a, dim, cascade, out_weight, act, need_v: bool, need_z: bool,
                           need_cascade: bool):
    """Gradients of :func:`_cascade_join` for the output weights, the pre-activations (laid out
    as ``a``) and the cascade weights; None for those not needed."""
    ones = a.dim() - dim - 2
    gu = grad.unsqueeze(dim)
    v = out_weight.view(*out_weight.shape, *([1] * ones))
    buffer = torch.mul(gu, a) if need_v else None  # grad_z reuses it
    grad_v = buffer.sum([d for d in range(a.dim()) if d not in (dim, dim + 1)]) if need_v else None
    if not (need_z or need_cascade):
        return grad_v, None, None
    # dLoss/da_i from the join; turned in place into dLoss/d(pre-activation)_i, later dendrites
    # first (a_i feeds only those after it)
    grad_z = torch.mul(gu, v, out=buffer) if buffer is not None else gu * v
    rows, acts = grad_z.unbind(dim), a.unbind(dim)
    w = _rows(cascade, ones) if cascade is not None else ()
    grad_cascade = torch.empty_like(cascade) if need_cascade else None
    grad_w = grad_cascade.unbind(0) if need_cascade else ()
    sample_dims = [d for d in range(a.dim() - 1) if d != dim]
    r = len(w)
    for i in range(len(acts) - 1, -1, -1):
        gz = act.backward_(rows[i], acts[i])
        r -= i
        for j in range(i):
            rows[j].addcmul_(gz, w[r + j])
            if need_cascade:
                torch.sum(gz * acts[j], sample_dims, out=grad_w[r + j])
    return grad_v, grad_z, grad_cascade


def _no_second_derivative() -> None:
    if torch.is_grad_enabled():
        raise GrowthError("second derivatives (create_graph=True) do not pass the fused "
                          "dendrite path; set layer.fused = False on the model's layers "
                          "(pf.dendritic_layers(model)) for that computation")


def linear_forward(layer, x: torch.Tensor) -> torch.Tensor | None:
    """The output of a Linear ``layer`` with dendrites (and no candidate pool) on the fast path:
    plain autograd ops for one dendrite on a small output, :class:`DendriticLinear` otherwise.
    None where it does not apply (a 0-dim input, hooks on the main layer; for the node also
    autocast or an activation without in-place forms)."""
    main = layer._modules["main"]
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or _hooked(main):
        return None  # a 0-dim input: the generic path, where the main layer gives torch's own error
    act = activations.ACTIVATIONS[layer.activation]
    # parameters read from the dicts: Module.__getattr__ costs as much as a small op here
    own, main_params = layer._parameters, main._parameters
    weight, bias = main_params["weight"], main_params.get("bias")
    d_weight, d_bias, v = own["dendrite_weight"], own.get("dendrite_bias"), own["output_weight"]
    if layer._buffers.get("dendrite_weight_mask") is not None:  # restricted inputs
        d_weight = layer.dendrite_weight_used()
    if v.shape[0] == 1 and x.numel() // max(x.shape[-1], 1) * v.shape[1] < _NODE_PAYS:
        z = F.linear(x.detach() if layer.perforated else x, d_weight, d_bias)
        y = F.linear(x, weight, bias)
        out = torch.addcmul(y, v if x.dim() > 1 else v[0], act.forward(z))
        return out if out.dtype == y.dtype else out.to(y.dtype)  # autocast: the main layer's dtype
    if act.backward_ is None or torch.is_autocast_enabled(x.device.type):
        return None
    return DendriticLinear.apply(x, weight, bias, d_weight, d_bias, own.get("cascade_weight"), v, act,
                                 layer.perforated)


def _hooked(module: torch.nn.Module) -> bool:
    """True when calling ``module`` would run hooks that a direct ``F.linear`` skips."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks or nn_module._global_forward_hooks
                or nn_module._global_forward_pre_hooks or nn_module._global_backward_hooks
                or nn_module._global_backward_pre_hooks)


def join_forward(layer, x: torch.Tensor) -> torch.Tensor | None:
    """The output of ``layer`` (a kind whose dendrites are one wide call) through
    :class:`DendriticJoin`, or None where it does not apply (one dendrite on a small input,
    autocast, an activation without in-place forms)."""
    act = activations.ACTIVATIONS[layer.activation]
    own = layer._parameters
    v = own["output_weight"]
    if (act.backward_ is None or not isinstance(x, torch.Tensor)
            or (v.shape[0] == 1 and x.numel() < _NODE_PAYS)
            or torch.is_autocast_enabled(x.device.type)):
        return None
    main = layer._modules["main"]
    y = main(x)
    z = layer.adapter.wide(main, x.detach() if layer.perforated else x, layer.dendrite_weight_used(),
                           own.get("dendrite_bias"))
    return DendriticJoin.apply(y, z, own.get("cascade_weight"), v, act, layer.adapter.axis(layer, z.dim()))

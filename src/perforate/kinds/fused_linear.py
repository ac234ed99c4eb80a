"""A Linear layer with dendrites as one autograd node (the training forward's fast path).

On small layers the number of ops, not their FLOPs, sets the cost: autograd records a node for
every activation, cascade term and join term, and each backward node runs two or three more
ops. :class:`DendriticLinear` computes the main output, the dendrites, their cascade and the
join in one node whose backward is written out by hand, in place on one ``[N, K, C]`` buffer:
one op per dendrite for the activation derivative and one per cascade term, the x gradient of
the main layer and of the dendrites accumulated by one ``addmm_``. Measured with ``perforate
bench cost`` (one thread): a 100-unit Linear at batch 32 with 2/4 dendrites went from 3.1/4.0
to 2.6/3.0 times a plain Linear of equal FLOPs in gd mode and from 1.9/1.9 to 1.6/1.6 in pb
mode. With one dendrite on a small output, plain autograd ops are faster (``_NODE_PAYS``).
Peak training memory is higher than on the generic path (the node holds its buffer and every
gradient until it returns): 1.20/1.35 against 1.11/1.25 times a plain model at 2/4 dendrites.

The main layer's output comes from its own ``F.linear`` call, and the dendrites' terms are
added in dendrite order, as :meth:`DendriticLayer.join` adds them (in place on strided views,
where a vectorised and a scalar loop may round one element differently: 1 ulp).
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
    (or None), ``out_weight [K, C]``, the :class:`Activation` (with an in-place form) and
    ``perforated`` (no error flows from the dendrites into ``x``).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, d_weight, d_bias, cascade, out_weight,
                act: Activation, perforated: bool):
        k, c = out_weight.shape
        y = F.linear(x, weight, bias)
        z = F.linear(x, d_weight, d_bias)
        a = z.view(*z.shape[:-1], k, c)  # becomes the activations, in place
        acts = a.unbind(-2)
        w = cascade.unbind(0) if cascade is not None else ()
        v = out_weight.unbind(0)
        row = 0
        for i, ai in enumerate(acts):
            for j in range(i):
                ai.addcmul_(acts[j], w[row])
                row += 1
            act.forward_(ai)
            y.addcmul_(ai, v[i])
        ctx.save_for_backward(x, weight, d_weight, a, cascade, out_weight)
        ctx.act, ctx.perforated = act, perforated
        return y

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():
            raise GrowthError("second derivatives (create_graph=True) do not pass the fused "
                              "Linear dendrite path; set layer.fused = False on the model's "
                              "layers (pf.dendritic_layers(model)) for that computation")
        x, weight, d_weight, a, cascade, out_weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        k, c = out_weight.shape
        g = grad.reshape(-1, c)
        a = a.reshape(-1, k, c)
        x2 = x.reshape(-1, x.shape[-1])
        gu = g.unsqueeze(1)
        through = need[0] and not ctx.perforated
        buffer = torch.mul(gu, a) if need[6] else None  # [N, K, C]: grad_z reuses it
        grad_v = buffer.sum(0) if need[6] else None
        grad_z = grad_cascade = None
        if through or need[3] or need[4] or need[5]:
            # dLoss/da_i from the join; turned in place into dLoss/d(pre-activation)_i, later
            # dendrites first (a_i feeds only those after it)
            grad_z = torch.mul(gu, out_weight, out=buffer) if buffer is not None else gu * out_weight
            rows, acts = grad_z.unbind(1), a.unbind(1)
            w = cascade.unbind(0) if cascade is not None else ()
            if need[5]:
                grad_cascade = torch.empty_like(cascade)
                grad_w = grad_cascade.unbind(0)
            backward_ = ctx.act.backward_
            r = len(w)
            for i in range(k - 1, -1, -1):
                gz = backward_(rows[i], acts[i])
                r -= i
                for j in range(i):
                    rows[j].addcmul_(gz, w[r + j])
                    if grad_cascade is not None:
                        torch.sum(gz * acts[j], 0, out=grad_w[r + j])
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


def forward(layer, x: torch.Tensor) -> torch.Tensor | None:
    """The output of a Linear ``layer`` with dendrites (and no candidate pool) on the fast path:
    plain autograd ops for one dendrite on a small output, :class:`DendriticLinear` otherwise.
    None where it does not apply (hooks on the main layer; for the node also autocast or an
    activation without in-place forms)."""
    main = layer._modules["main"]
    if not isinstance(x, torch.Tensor) or _hooked(main):
        return None
    act = activations.ACTIVATIONS[layer.activation]
    # parameters read from the dicts: Module.__getattr__ costs as much as a small op here
    own, main_params = layer._parameters, main._parameters
    weight, bias = main_params["weight"], main_params.get("bias")
    d_weight, d_bias, v = own["dendrite_weight"], own.get("dendrite_bias"), own["output_weight"]
    if v.shape[0] == 1 and x.numel() // max(x.shape[-1], 1) * v.shape[1] < _NODE_PAYS:
        z = F.linear(x.detach() if layer.perforated else x, d_weight, d_bias)
        return torch.addcmul(F.linear(x, weight, bias), v if x.dim() > 1 else v[0], act.forward(z))
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

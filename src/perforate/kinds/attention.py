"""Attention: dendrites on the projections of ``nn.MultiheadAttention``, per channel.

``nn.MultiheadAttention`` computes its projections from raw tensors (``in_proj_weight``,
``out_proj.weight``) inside one fused function, so there is no layer to wrap. Opening it swaps
its class to :class:`ProjectedMultiheadAttention` (still an ``nn.MultiheadAttention``: its
settings and ``isinstance`` checks are unchanged) whose four projections are ``nn.Linear``
sub-modules, ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj``, called as modules. The linear
kind then wraps them like any Linear: every projection channel is a neuron with its own
dendrites (per channel rather than per head: a head is ``head_dim`` neurons that each get a
dendrite, exactly as the output channels of any Linear do). The packed in-projection is split
into its three parts because query, key and value may be different tensors (cross-attention),
and each neuron's dendrites must see the input its neuron sees.

Transformer layers that would read the projection weights for their fused fast path take their
ordinary path instead (:class:`OrdinaryPathEncoderLayer`; ``TransformerEncoder`` gets
``use_nested_tensor=False``), in train and eval alike. ``pf.export`` closes an attention module
whose projections have no dendrites back into a stock ``nn.MultiheadAttention``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BypassError
from .linear import KIND as LINEAR

_SITES = ["q_proj", "k_proj", "v_proj", "out_proj"]
_RAW = ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight")


class ProjectedMultiheadAttention(nn.MultiheadAttention):
    """An ``nn.MultiheadAttention`` whose projections are sub-modules (see the module docs).

    Computes what ``nn.MultiheadAttention`` computes (same arguments and returns), with
    ``scaled_dot_product_attention`` when no attention weights are asked for.
    """

    def __getattr__(self, name: str):
        if name in _RAW:
            raise BypassError(
                f"this nn.MultiheadAttention was opened by perforate: .{name} is now the weights "
                "of its sub-modules q_proj/k_proj/v_proj (nn.Linear or DendriticLayer); read "
                "those, or pf.export the model to get a stock nn.MultiheadAttention where no "
                "dendrites remain")
        return super().__getattr__(name)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        is_batched = F._mha_shape_check(query, key, value, key_padding_mask, attn_mask, self.num_heads)
        if self.batch_first and is_batched:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if not is_batched:
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        tgt_len, bsz, _ = query.shape
        key_padding_mask, attn_mask, is_causal = _canonical_masks(
            query, key_padding_mask, attn_mask, need_weights, is_causal)
        q, k, v, attn_mask, key_padding_mask = self._heads(query, key, value, attn_mask, key_padding_mask)
        src_len = k.shape[1]
        if key_padding_mask is not None:
            key_padding_mask = (key_padding_mask.view(bsz, 1, 1, src_len).expand(-1, self.num_heads, -1, -1)
                                .reshape(bsz * self.num_heads, 1, src_len))
            attn_mask = key_padding_mask if attn_mask is None else attn_mask + key_padding_mask
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            out, weights = self._attend_weighted(q, k, v, attn_mask, bsz, dropout_p, average_attn_weights)
        else:
            out, weights = self._attend_fused(q, k, v, attn_mask, bsz, dropout_p, is_causal), None
        out = self.out_proj(out).view(tgt_len, bsz, -1)
        if not is_batched:
            out = out.squeeze(1)
            weights = None if weights is None else weights.squeeze(0)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def _heads(self, query, key, value, attn_mask, key_padding_mask):
        """The projections of ``query``, ``key`` and ``value`` (sequence first) as
        ``(batch * heads, length, head_dim)``, with ``bias_k``/``bias_v`` and ``add_zero_attn``'s
        extra key position applied (and padded into the masks)."""
        tgt_len, bsz, _ = query.shape
        heads, head_dim = self.num_heads, self.head_dim
        q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)
        if attn_mask is not None and attn_mask.dim() == 2:
            attn_mask = attn_mask.unsqueeze(0)
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.repeat(1, bsz, 1)])
            v = torch.cat([v, self.bias_v.repeat(1, bsz, 1)])
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        q = q.reshape(tgt_len, bsz * heads, head_dim).transpose(0, 1)
        k = k.reshape(k.shape[0], bsz * heads, head_dim).transpose(0, 1)
        v = v.reshape(v.shape[0], bsz * heads, head_dim).transpose(0, 1)
        if self.add_zero_attn:
            zeros = q.new_zeros(bsz * heads, 1, head_dim)
            k, v = torch.cat([k, zeros], 1), torch.cat([v, zeros], 1)
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        return q, k, v, attn_mask, key_padding_mask

    def _attend_weighted(self, q, k, v, attn_mask, bsz, dropout_p, average_attn_weights):
        """Attention written out (``need_weights=True``): the output as ``(tgt_len * batch,
        embed_dim)`` and the attention weights as ``nn.MultiheadAttention`` returns them."""
        _, tgt_len, head_dim = q.shape
        scores = torch.bmm(q * math.sqrt(1.0 / head_dim), k.transpose(-2, -1))
        if attn_mask is not None:
            scores = scores + attn_mask
        weights = torch.softmax(scores, dim=-1)
        if dropout_p > 0.0:
            weights = F.dropout(weights, p=dropout_p)
        out = torch.bmm(weights, v).transpose(0, 1).reshape(tgt_len * bsz, self.embed_dim)
        weights = weights.view(bsz, self.num_heads, tgt_len, k.shape[1])
        if average_attn_weights:
            weights = weights.mean(dim=1)
        return out, weights

    def _attend_fused(self, q, k, v, attn_mask, bsz, dropout_p, is_causal):
        """Attention by ``scaled_dot_product_attention`` (no weights asked for): the output as
        ``(batch * tgt_len, embed_dim)``."""
        _, tgt_len, head_dim = q.shape
        heads, src_len = self.num_heads, k.shape[1]
        if attn_mask is not None:
            attn_mask = attn_mask.unsqueeze(0) if attn_mask.size(0) == 1 else \
                attn_mask.view(bsz, heads, -1, src_len)
        out = F.scaled_dot_product_attention(
            q.view(bsz, heads, tgt_len, head_dim), k.view(bsz, heads, src_len, head_dim),
            v.view(bsz, heads, src_len, head_dim), attn_mask, dropout_p, is_causal)
        return out.permute(2, 0, 1, 3).reshape(bsz * tgt_len, self.embed_dim)


def _canonical_masks(query, key_padding_mask, attn_mask, need_weights: bool, is_causal: bool):
    """``key_padding_mask`` and ``attn_mask`` in ``query``'s float dtype (as
    ``nn.MultiheadAttention`` makes them), and ``is_causal`` as the fused kernel may take it."""
    key_padding_mask = F._canonical_mask(
        mask=key_padding_mask, mask_name="key_padding_mask",
        other_type=F._none_or_dtype(attn_mask), other_name="attn_mask", target_type=query.dtype)
    if is_causal and attn_mask is None:
        raise RuntimeError("Need attn_mask if specifying the is_causal hint (as for "
                           "nn.MultiheadAttention); use nn.Transformer.generate_square_subsequent_mask")
    if is_causal and key_padding_mask is None and not need_weights:
        attn_mask = None  # scaled_dot_product_attention applies the causal mask itself
    else:
        attn_mask = F._canonical_mask(mask=attn_mask, mask_name="attn_mask", other_type=None,
                                      other_name="", target_type=query.dtype, check_other=False)
        if key_padding_mask is not None:
            is_causal = False
    return key_padding_mask, attn_mask, is_causal


class OrdinaryPathEncoderLayer(nn.TransformerEncoderLayer):
    """A ``TransformerEncoderLayer`` that always takes its ordinary path, which calls its
    sub-modules (the fused fast path reads their weights directly and would leave dendrites out)."""

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        src_key_padding_mask = F._canonical_mask(
            mask=src_key_padding_mask, mask_name="src_key_padding_mask",
            other_type=F._none_or_dtype(src_mask), other_name="src_mask", target_type=src.dtype)
        src_mask = F._canonical_mask(mask=src_mask, mask_name="src_mask", other_type=None,
                                     other_name="", target_type=src.dtype, check_other=False)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
        return self.norm2(x + self._ff_block(x))


def _touched(module: nn.Module) -> bool:
    """True when ``module`` holds a dendritic layer or an opened attention module."""
    from ..inference import ExportedDendriticLayer
    from ..layers import DendriticLayer

    return any(isinstance(m, (DendriticLayer, ExportedDendriticLayer, ProjectedMultiheadAttention))
               for m in module.modules())


class AttentionOpener:
    """Opens ``nn.MultiheadAttention`` and guards the Transformer layers around it."""

    def wants(self, module: nn.Module) -> bool:
        # a subclass with its own forward would lose it: leave it (its wrapped out_proj then
        # raises BypassError naming the fix when read)
        return type(module).forward is nn.MultiheadAttention.forward and \
            isinstance(module, nn.MultiheadAttention)

    def sites(self, module: nn.Module) -> list[str]:
        return list(_SITES)

    def open(self, module: nn.Module) -> nn.Module:
        p = module._parameters
        e = module.embed_dim
        if module._qkv_same_embed_dim:
            weights = p["in_proj_weight"].detach().split(e)
        else:
            weights = [p[n].detach() for n in ("q_proj_weight", "k_proj_weight", "v_proj_weight")]
        bias = p.get("in_proj_bias")
        biases = bias.detach().split(e) if bias is not None else (None, None, None)
        trainable = (p.get("in_proj_weight") if module._qkv_same_embed_dim else p["q_proj_weight"]).requires_grad
        for name in _RAW:
            p.pop(name, None)
        module.__class__ = ProjectedMultiheadAttention
        for name, w, b in zip(_SITES[:3], weights, biases):
            layer = LINEAR.widened(None, w, b)  # a plain nn.Linear holding these weights
            layer.requires_grad_(trainable)
            module.add_module(name, layer)
        # keep the order state_dict and named_modules list the projections in
        module._modules["out_proj"] = module._modules.pop("out_proj")
        return module

    def is_open(self, module: nn.Module) -> bool:
        return isinstance(module, (ProjectedMultiheadAttention, OrdinaryPathEncoderLayer)) or \
            getattr(module, "_perforate_nested", None) is not None

    def close(self, module: nn.Module) -> nn.Module:
        if _touched_below(module):
            return module
        if isinstance(module, OrdinaryPathEncoderLayer):
            module.__class__ = nn.TransformerEncoderLayer
        elif isinstance(module, nn.TransformerEncoder):
            module.use_nested_tensor = module.__dict__.pop("_perforate_nested")
        elif isinstance(module, ProjectedMultiheadAttention):
            projections = [module._modules.pop(n) for n in _SITES[:3]]
            if not all(type(m) is nn.Linear for m in projections):
                raise TypeError(f"cannot close {type(module).__name__}: {projections}")
            module.__class__ = nn.MultiheadAttention
            bias = [m.bias for m in projections] if projections[0].bias is not None else None
            same = module._qkv_same_embed_dim
            module.register_parameter(
                "in_proj_weight", nn.Parameter(torch.cat([m.weight for m in projections])) if same else None)
            for name, m in zip(("q_proj_weight", "k_proj_weight", "v_proj_weight"), projections):
                module.register_parameter(name, None if same else nn.Parameter(m.weight.detach()))
            module.register_parameter("in_proj_bias", nn.Parameter(torch.cat(bias)) if bias is not None else None)
            module._modules["out_proj"] = module._modules.pop("out_proj")
        return module

    def guard(self, model: nn.Module) -> None:
        for module in model.modules():
            if type(module) is nn.TransformerEncoderLayer and _touched(module):
                module.__class__ = OrdinaryPathEncoderLayer
            elif isinstance(module, nn.TransformerEncoder) and _touched(module) and \
                    "_perforate_nested" not in module.__dict__:
                module._perforate_nested = module.use_nested_tensor
                module.use_nested_tensor = False


def _touched_below(module: nn.Module) -> bool:
    """True when a dendritic layer sits inside ``module`` (an opened attention module counts for
    the containers around it only)."""
    from ..inference import ExportedDendriticLayer
    from ..layers import DendriticLayer

    kinds_ = (DendriticLayer, ExportedDendriticLayer)
    if isinstance(module, ProjectedMultiheadAttention):
        return any(isinstance(m, kinds_) for m in module.modules())
    return _touched(module)


OPENER = AttentionOpener()

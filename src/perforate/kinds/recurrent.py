"""Recurrent layers (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``): dendrites on the hidden outputs.

The neurons of a recurrent layer are its hidden units (both directions' for a bidirectional
layer: ``C = D * hidden_size``, or ``D * proj_size``). Dendrite ``k`` is a re-initialised copy
of the layer, run on the same input from a zero state; its hidden output joins the layer's
hidden output at every step, ``y_t = h_t + sum_k v_k * a_k(t)``, and the returned final state
``h_n`` is taken from ``y`` (the last step of each sequence, the first for the reverse
direction), so a model that reads ``h_n`` sees the dendrites too. The cell state ``c_n`` and the
recurrence itself are the layer's own.

Why the hidden outputs and not the gate pre-activations: dendrites inside the recurrence would
force a Python loop over time steps (no fused cuDNN/oneDNN kernel, no packed sequences for free,
about T times more kernel launches). On the outputs, the layer and each dendrite run as one
fused call each, bidirectional, packed and unbatched inputs work as they do on the layer, and
export is a plain copy. A multi-layer module is opened into single-layer modules
(:class:`RecurrentStack`) so that every layer gets dendrites, not only the last.
"""
from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .base import Kind
from .block import BlockKind

_STOCK = {cls.forward: cls for cls in (nn.RNN, nn.LSTM, nn.GRU)}


def _directions(rnn: nn.Module) -> int:
    return 2 if rnn.bidirectional else 1


def _packed_last(data: torch.Tensor, batch_sizes: torch.Tensor) -> torch.Tensor:
    """Row of ``data`` (a packed sequence's) holding each sequence's last step, sorted order."""
    batch = int(batch_sizes[0])
    positions = torch.arange(batch)
    lengths = (batch_sizes.unsqueeze(1) > positions).sum(0)
    starts = torch.cumsum(batch_sizes, 0) - batch_sizes
    return (starts[lengths - 1] + positions).to(data.device)


class RecurrentKind(BlockKind):
    name = "recurrent"
    resolve_axis = Kind.resolve_axis

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, nn.RNNBase) and module.num_layers == 1

    def natural_axis(self, module: nn.Module) -> int:
        return -1

    def channels(self, module: nn.Module) -> int:
        return _directions(module) * (getattr(module, "proj_size", 0) or module.hidden_size)

    def call_unit(self, unit, x, args, kwargs):
        return unit(x)  # a dendrite's recurrence starts from its own zero state

    def detach(self, x: Any) -> Any:
        return x._replace(data=x.data.detach()) if isinstance(x, PackedSequence) else x.detach()

    def scale_copy(self, block: nn.Module, scale: float) -> None:
        for p in block.parameters():
            p.mul_(scale)

    def neurons(self, main: nn.Module, out: Any):
        output, state = out
        packed = isinstance(output, PackedSequence)
        directions = _directions(main)

        def rebuild(joined: torch.Tensor):
            size = joined.shape[-1] // directions
            if packed:
                ends = [joined[_packed_last(joined, output.batch_sizes), :size]]
                if directions == 2:
                    ends.append(joined[:int(output.batch_sizes[0]), size:])
                h = torch.stack(ends)
                if output.unsorted_indices is not None:
                    h = h.index_select(1, output.unsorted_indices)
                seq = output._replace(data=joined)
            else:
                time = 1 if main.batch_first and joined.dim() == 3 else 0
                ends = [joined.select(time, -1)[..., :size]]
                if directions == 2:
                    ends.append(joined.select(time, 0)[..., size:])
                h, seq = torch.stack(ends), joined
            return seq, ((h, state[1]) if isinstance(state, tuple) else h)

        return (output.data if packed else output), rebuild


class RecurrentStack(nn.Module):
    """A multi-layer ``nn.RNN``/``LSTM``/``GRU`` as single-layer modules in ``layers``: the same
    call, returns and settings (``hidden_size``, ``batch_first``, ...), so each layer can get
    dendrites. ``pf.export`` turns it back into the fused module where no dendrites remain."""

    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        self.stock = type(rnn)
        for attr in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first",
                     "dropout", "bidirectional", "proj_size", "nonlinearity"):
            if hasattr(rnn, attr):
                setattr(self, attr, getattr(rnn, attr))
        self.layers = nn.ModuleList()
        out = _directions(rnn) * (getattr(rnn, "proj_size", 0) or rnn.hidden_size)
        ref = next(rnn.parameters())
        for i in range(rnn.num_layers):
            layer = self.stock(**self._settings(rnn.input_size if i == 0 else out), num_layers=1,
                               device=ref.device, dtype=ref.dtype)
            _copy_layer_weights(rnn, i, layer, 0)
            self.layers.append(layer)

    def _settings(self, input_size: int) -> dict[str, Any]:
        settings = {"input_size": input_size, "hidden_size": self.hidden_size, "bias": self.bias,
                    "batch_first": self.batch_first, "bidirectional": self.bidirectional}
        if self.mode == "LSTM":
            settings["proj_size"] = self.proj_size
        if self.mode.startswith("RNN"):
            settings["nonlinearity"] = self.nonlinearity
        return settings

    def forward(self, input: Any, hx: Any = None) -> tuple[Any, Any]:
        d = _directions(self)
        lstm = self.mode == "LSTM"
        out, hs, cs = input, [], []
        for i, layer in enumerate(self.layers):
            state = None
            if hx is not None:
                state = tuple(t[i * d:(i + 1) * d] for t in hx) if lstm else hx[i * d:(i + 1) * d]
            out, new = layer(out, state)
            hs.append(new[0] if lstm else new)
            if lstm:
                cs.append(new[1])
            if self.dropout and self.training and i < len(self.layers) - 1:
                out = out._replace(data=F.dropout(out.data, self.dropout)) if isinstance(out, PackedSequence) \
                    else F.dropout(out, self.dropout)
        h = torch.cat(hs, 0)
        return out, ((h, torch.cat(cs, 0)) if lstm else h)

    def fused(self) -> nn.RNNBase:
        """The equivalent stock multi-layer module (layers must be plain)."""
        ref = next(self.parameters())
        rnn = self.stock(**self._settings(self.input_size), num_layers=self.num_layers,
                         dropout=self.dropout, device=ref.device, dtype=ref.dtype)
        for i, layer in enumerate(self.layers):
            _copy_layer_weights(layer, 0, rnn, i)
        return rnn


def _copy_layer_weights(src: nn.RNNBase, src_layer: int, dst: nn.RNNBase, dst_layer: int) -> None:
    with torch.no_grad():
        for name, p in src.named_parameters():
            match = re.fullmatch(r"(\w+?)_l(\d+)(_reverse)?", name)
            if match and int(match.group(2)) == src_layer:
                target = getattr(dst, f"{match.group(1)}_l{dst_layer}{match.group(3) or ''}")
                target.copy_(p)
                target.requires_grad_(p.requires_grad)


class RecurrentOpener:
    """Opens multi-layer RNN/LSTM/GRU modules into :class:`RecurrentStack`."""

    def wants(self, module: nn.Module) -> bool:
        return isinstance(module, nn.RNNBase) and module.num_layers > 1 and \
            _STOCK.get(type(module).forward) is not None

    def sites(self, module: nn.Module) -> list[str]:
        return [f"layers.{i}" for i in range(module.num_layers)]

    def open(self, module: nn.Module) -> nn.Module:
        return RecurrentStack(module)

    def is_open(self, module: nn.Module) -> bool:
        return isinstance(module, RecurrentStack)

    def close(self, module: nn.Module) -> nn.Module:
        if all(isinstance(layer, nn.RNNBase) for layer in module.layers):
            return module.fused()
        return module

    def guard(self, model: nn.Module) -> None:
        return None


KIND = RecurrentKind()
OPENER = RecurrentOpener()

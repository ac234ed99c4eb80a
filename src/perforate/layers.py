"""DendriticLayer: an original module plus dendrites that join its neurons' outputs.

A wrapped layer ``L`` keeps its original weights (``layer.main``). Dendrite ``k`` is a layer of
the same kind and shape fed the same input. Its activations cascade,
``a_k = f(z_k + sum_{j<k} w_kj * a_j)``, and join the output through per-channel weights that
start at zero: ``y = L(x) + sum_k v_k * a_k``. Growth is therefore function-preserving.

For plain ``nn.Linear`` / ``nn.ConvNd`` the K dendrites are stored stacked (``[K, C_out, ...]``)
and computed by one matmul/convolution, so a layer with K dendrites costs about what a layer
K+1 times as wide costs. ``pf.export`` also folds the main layer into that one call. User-declared blocks (e.g.
conv + batch-norm) keep one deep copy per dendrite, each with its own norm.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import WrapError

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
}


def natural_neuron_axis(module: nn.Module) -> int:
    """The neuron axis of a module's output: -1 for Linear, 1 for convolutions.

    For a block, the axis of its first Linear/Conv. Raises WrapError when there is none.
    """
    if isinstance(module, nn.Linear):
        return -1
    if isinstance(module, _CONV_TYPES):
        return 1
    for sub in module.modules():
        if sub is not module and isinstance(sub, (nn.Linear, *_CONV_TYPES)):
            return natural_neuron_axis(sub)
    raise WrapError(
        f"cannot infer the neuron axis of {type(module).__name__}: it holds no Linear/Conv; "
        "give it explicitly with Config.neuron_axis={'<module name>': axis}"
    )


def _out_channels(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, _CONV_TYPES):
        return module.out_channels
    last = None
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, *_CONV_TYPES)):
            last = sub
    if last is None:
        raise WrapError(f"cannot find the output channels of {type(module).__name__}")
    return _out_channels(last)


def _first_parameter(module: nn.Module) -> torch.Tensor:
    for p in module.parameters():
        return p
    raise WrapError(f"{type(module).__name__} has no parameters to give dendrites to")


class DendriticLayer(nn.Module):
    """An original module (``main``) with ``num_dendrites`` dendrites on each neuron.

    ``torch.compile(model)`` works on a perforated model. Growth (new dendrites, or the start
    and end of a ``pb`` dendrite phase) changes the layer's structure, so the first call after
    it recompiles; between growth events the compiled model is reused.

    Args:
        main: the module to wrap (Linear, ConvNd, or a block module).
        activation: dendrite activation, "sigmoid", "tanh" or "relu".
        neuron_axis: the neuron axis of the output; inferred when None.
        perforated: detach the dendrites' input so no error flows back through them
            (Perforated Backpropagation). ``gd`` mode uses False.
        init_scale: scale of new dendrite weights relative to the default initialisation.
    """

    def __init__(
        self,
        main: nn.Module,
        activation: str = "sigmoid",
        neuron_axis: int | None = None,
        perforated: bool = False,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if isinstance(main, DendriticLayer):
            raise WrapError("this module is already a DendriticLayer; wrap each layer once")
        if activation not in _ACTIVATIONS:
            raise WrapError(f"activation must be one of {sorted(_ACTIVATIONS)}; got {activation!r}")
        _first_parameter(main)
        self.main = main
        self.activation = activation
        self.perforated = perforated
        self.init_scale = float(init_scale)
        if isinstance(main, nn.Linear):
            self.kind = "linear"
        elif isinstance(main, _CONV_TYPES):
            self.kind = "conv"
        else:
            self.kind = "block"
        if neuron_axis is None:
            neuron_axis = natural_neuron_axis(main)
        elif self.kind != "block" and neuron_axis != natural_neuron_axis(main):
            raise WrapError(
                f"a {type(main).__name__} always puts its neurons on axis "
                f"{natural_neuron_axis(main)}; a different neuron_axis needs the layer wrapped "
                "inside a block (pf.perforate(..., blocks=...))"
            )
        self.neuron_axis = int(neuron_axis)
        self.channels = _out_channels(main)
        self.has_bias = getattr(main, "bias", None) is not None
        self._num_dendrites = 0
        self.dendrite_weight: nn.Parameter | None = None
        self.dendrite_bias: nn.Parameter | None = None
        self.dendrite_blocks = nn.ModuleList() if self.kind == "block" else None
        self.cascade_weight: nn.Parameter | None = None  # [K(K-1)/2, C], strictly lower triangle
        self.output_weight: nn.Parameter | None = None  # [K, C], starts at zero
        self.candidate_pool: nn.Module | None = None  # set during a pb dendrite phase
        self._dendrites_frozen = False

    # ------------------------------------------------------------------ structure
    @property
    def num_dendrites(self) -> int:
        return self._num_dendrites

    def extra_repr(self) -> str:
        return (f"kind={self.kind}, channels={self.channels}, dendrites={self._num_dendrites}, "
                f"activation={self.activation}, perforated={self.perforated}")

    def _reference(self) -> torch.Tensor:
        return _first_parameter(self.main)

    def new_unit_tensors(self, n: int, generator: torch.Generator | None):
        """Fresh weights for ``n`` dendrite units shaped like the main layer.

        Returns ``(weight [n, C, ...], bias [n, C] or None)`` for Linear/Conv, or a list of
        ``n`` re-initialised deep copies of the block. Uses ``generator`` only, never global RNG.
        """
        ref = self._reference()
        if self.kind == "block":
            blocks = []
            for _ in range(n):
                seed = int(torch.randint(0, 2**62, (1,), generator=generator).item()) if generator else None
                blocks.append(self._fresh_block(seed))
            return blocks
        weight = self.main.weight
        fan_in = weight[0].numel()
        bound = self.init_scale / math.sqrt(fan_in)
        w = (torch.rand((n, *weight.shape), generator=generator, dtype=torch.float32) * 2 - 1) * bound
        w = w.to(device=ref.device, dtype=weight.dtype)
        b = None
        if self.has_bias:
            b = (torch.rand((n, self.channels), generator=generator, dtype=torch.float32) * 2 - 1) * bound
            b = b.to(device=ref.device, dtype=self.main.bias.dtype)
        return w, b

    def _fresh_block(self, seed: int | None) -> nn.Module:
        block = copy.deepcopy(self.main)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            for sub in block.modules():
                reset = getattr(sub, "reset_parameters", None)
                if callable(reset):
                    reset()
            if self.init_scale != 1.0:
                with torch.no_grad():
                    for sub in block.modules():
                        if isinstance(sub, (nn.Linear, *_CONV_TYPES)):
                            for p in sub.parameters(recurse=False):
                                p.mul_(self.init_scale)
        for p in block.parameters():
            p.requires_grad_(True)
        return block

    def add_dendrites(self, n: int = 1, generator: torch.Generator | None = None,
                      units=None, cascade: torch.Tensor | None = None) -> None:
        """Add ``n`` dendrites; the layer's output is unchanged (new output weights are zero).

        ``units``/``cascade`` give the new dendrites' weights (as from
        :meth:`new_unit_tensors`, and ``[n, K_old, C]`` cascade weights from the existing
        dendrites); fresh random weights and zero cascade weights are used when omitted.
        """
        if n < 1:
            return
        if units is None:
            units = self.new_unit_tensors(n, generator)
        ref = self._reference()
        k_old = self._num_dendrites
        with torch.no_grad():
            if self.kind == "block":
                for block in units:
                    self.dendrite_blocks.append(block.to(device=ref.device))
            else:
                w, b = units
                old_w = self.dendrite_weight
                self.dendrite_weight = nn.Parameter(w if old_w is None else torch.cat([old_w.detach(), w]))
                if self.has_bias:
                    old_b = self.dendrite_bias
                    self.dendrite_bias = nn.Parameter(b if old_b is None else torch.cat([old_b.detach(), b]))
            k_new = k_old + n
            cascade_rows = []
            for i in range(n):
                k = k_old + i  # the new dendrite's index; it gets inputs from dendrites 0..k-1
                row = torch.zeros(k, self.channels, device=ref.device, dtype=ref.dtype)
                if cascade is not None:  # weights from the existing dendrites; among new ones: 0
                    row[:k_old] = cascade[i].to(row)
                cascade_rows.append(row)
            if k_new > 1:
                old_c = self.cascade_weight.detach() if self.cascade_weight is not None else \
                    torch.zeros(0, self.channels, device=ref.device, dtype=ref.dtype)
                self.cascade_weight = nn.Parameter(torch.cat([old_c, *cascade_rows]))
            zeros = torch.zeros(n, self.channels, device=ref.device, dtype=ref.dtype)
            old_v = self.output_weight
            self.output_weight = nn.Parameter(zeros if old_v is None else torch.cat([old_v.detach(), zeros]))
        self._num_dendrites = k_new
        self.freeze_dendrites(self._dendrites_frozen)

    def set_num_dendrites(self, k: int) -> None:
        """Resize to exactly ``k`` dendrites (placeholder values), e.g. before loading weights."""
        if k == self._num_dendrites:
            return
        self.dendrite_weight = self.dendrite_bias = None
        self.cascade_weight = self.output_weight = None
        if self.dendrite_blocks is not None:
            self.dendrite_blocks = nn.ModuleList()
        self._num_dendrites = 0
        if k > 0:
            if self.kind == "block":
                units = [copy.deepcopy(self.main) for _ in range(k)]
            else:
                units = (torch.zeros((k, *self.main.weight.shape), device=self.main.weight.device,
                                     dtype=self.main.weight.dtype),
                         torch.zeros(k, self.channels, device=self.main.weight.device,
                                     dtype=self.main.weight.dtype) if self.has_bias else None)
            self.add_dendrites(k, units=units)

    def dendrite_parameters(self) -> list[nn.Parameter]:
        """Weights of the dendrites themselves (not the output weights v)."""
        params = [p for p in (self.dendrite_weight, self.dendrite_bias, self.cascade_weight) if p is not None]
        if self.dendrite_blocks is not None:
            params += list(self.dendrite_blocks.parameters())
        return params

    def freeze_dendrites(self, frozen: bool = True) -> None:
        """Freeze (pb) or unfreeze (gd) the dendrites' own weights; v always stays trainable."""
        self._dendrites_frozen = frozen
        for p in self.dendrite_parameters():
            p.requires_grad_(not frozen)

    # ------------------------------------------------------------------ forward
    def _axis(self, ndim: int) -> int:
        axis = self.neuron_axis
        return axis + ndim if axis < 0 else axis

    def channel_view(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """Reshape a per-channel vector ``[C]`` to broadcast against an output of ``ndim`` dims."""
        return t.reshape(t.shape[0], *([1] * (ndim - self._axis(ndim) - 1)))

    def _stacked_call(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      units: int) -> list[torch.Tensor]:
        """Run ``units`` stacked copies of the main layer's op on ``x`` in one call."""
        c = self.channels
        flat_w = weight.reshape(units * c, *weight.shape[2:])
        flat_b = None if bias is None else bias.reshape(units * c)
        if self.kind == "linear":
            z = F.linear(x, flat_w, flat_b)
            return [z] if units == 1 else list(z.unflatten(-1, (units, c)).unbind(-2))
        if self.main.groups == 1:
            z = self.main._conv_forward(x, flat_w, flat_b)
            return [z] if units == 1 else list(z.unflatten(1, (units, c)).unbind(1))
        return [self.main._conv_forward(x, weight[k], None if bias is None else bias[k])
                for k in range(units)]

    def dendrite_preactivations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``z_k`` for every dendrite (before the cascade and activation)."""
        if self.kind == "block":
            return [block(x) for block in self.dendrite_blocks]
        return self._stacked_call(x, self.dendrite_weight, self.dendrite_bias, self._num_dendrites)

    def _channel_rows(self, weight: torch.Tensor, ndim: int) -> tuple[torch.Tensor, ...]:
        """The rows of a per-channel weight ``[R, C]``, each shaped to broadcast against an
        output of ``ndim`` dims: one ``unbind`` (one backward node) rather than a select per row."""
        ones = [1] * (ndim - self._axis(ndim) - 1)
        if weight.shape[0] == 1:
            return (weight.reshape(weight.shape[1], *ones),)
        return weight.reshape(*weight.shape[:2], *ones).unbind(0)

    def cascade(self, z: list[torch.Tensor]) -> list[torch.Tensor]:
        """Apply the cascade and activation: ``a_k = f(z_k + sum_{j<k} w_kj a_j)``."""
        act = _ACTIVATIONS[self.activation]
        rows = self._channel_rows(self.cascade_weight, z[0].ndim) if len(z) > 1 else ()
        acts: list[torch.Tensor] = []
        row = 0
        for k, zk in enumerate(z):
            pre = zk
            for j in range(k):
                pre = torch.addcmul(pre, rows[row], acts[j])  # one fused op per cascade term
                row += 1
            acts.append(act(pre))
        return acts

    def join(self, y: torch.Tensor, acts: list[torch.Tensor]) -> torch.Tensor:
        """``y + sum_k v_k * a_k``, one fused multiply-add per dendrite."""
        if not acts:
            return y
        rows = self._channel_rows(self.output_weight, y.ndim)
        for k, a in enumerate(acts):
            y = torch.addcmul(y, rows[k], a)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self._num_dendrites
        pool = self.candidate_pool
        if k == 0 and pool is None:
            return self.main(x)
        # The main layer runs on its own so its output stays bit-identical to the unwrapped
        # layer (measured: as fast as one call over concatenated weights, which must copy them).
        y = self.main(x)
        xd = x.detach() if self.perforated else x
        z = self.dendrite_preactivations(xd) if k > 0 else []
        acts = self.cascade(z)
        out = self.join(y, acts)
        if pool is not None and self.training and torch.is_grad_enabled():
            out = out + pool(x.detach(), [a.detach() for a in acts], self)
        return out

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Loop-over-dendrites forward, one call per dendrite and plain arithmetic for the
        cascade and join (no code shared with :meth:`forward`): the slow reference for tests."""
        y = self.main(x)
        xd = x.detach() if self.perforated else x
        act = _ACTIVATIONS[self.activation]
        acts: list[torch.Tensor] = []
        row = 0
        for k in range(self._num_dendrites):
            if self.kind == "block":
                pre = self.dendrite_blocks[k](xd)
            else:
                b = self.dendrite_bias[k] if self.has_bias else None
                if self.kind == "linear":
                    pre = F.linear(xd, self.dendrite_weight[k], b)
                else:
                    pre = self.main._conv_forward(xd, self.dendrite_weight[k], b)
            for j in range(k):
                pre = pre + self.channel_view(self.cascade_weight[row], pre.ndim) * acts[j]
                row += 1
            acts.append(act(pre))
            y = y + self.channel_view(self.output_weight[k], y.ndim) * acts[k]
        return y

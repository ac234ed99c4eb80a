"""DendriticLayer: an original module plus dendrites that join its neurons' outputs.

A wrapped layer ``L`` keeps its original weights (``layer.main``). Dendrite ``k`` is a unit of
the same kind and shape fed the same input. Its activations cascade,
``a_k = f(z_k + sum_{j<k} w_kj * a_j)``, and join the output through per-channel weights that
start at zero: ``y = L(x) + sum_k v_k * a_k``. Growth is therefore function-preserving.

What depends on the kind of ``main`` (its neuron axis and channels, how dendrites are made,
stored, run and exported) lives in :mod:`perforate.kinds`; this class holds the tensors and
the kind-independent cascade and join.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import activations, connectivity, kinds
from .errors import WrapError, bypass_error
from .kinds.base import first_parameter


def natural_neuron_axis(module: nn.Module) -> int:
    """The neuron axis of a module's output: -1 for Linear, the channel axis for convolutions.

    For a block, the axis of its first Linear/Conv. Raises WrapError when there is none.
    """
    kind = kinds.kind_of(module) or kinds.block_kind(module)
    return kind.natural_axis(module)


class DendriticLayer(nn.Module):
    """An original module (``main``) with ``num_dendrites`` dendrites on each neuron.

    ``torch.compile(model)`` works on a perforated model. Growth (new dendrites, or the start
    and end of a ``pb`` dendrite phase) changes the layer's structure, so the first call after
    it recompiles; between growth events the compiled model is reused.

    Non-tensor attributes of ``main`` (``out_features``, ``hidden_size``, ...) read through the
    layer; reading its tensors (``layer.weight``) raises :class:`pf.BypassError`, because code
    that computes with them would leave the dendrites out.

    Args:
        main: the module to wrap (Linear, ConvNd, RNN/LSTM/GRU, PyG Linear, or a block module).
        activation: dendrite activation, a name from :data:`perforate.activations.ACTIVATIONS`.
        neuron_axis: the neuron axis of the output; inferred when None.
        perforated: detach the dendrites' input so no error flows back through them
            (Perforated Backpropagation). ``gd`` mode uses False.
        init_scale: scale of new dendrite weights relative to the default initialisation.
        inputs: inputs each dendrite row reads (0: all of them; see :mod:`perforate.connectivity`);
            Linear and ungrouped convolutions (input channels) only.
        input_choice: how those inputs are chosen, ``"local"`` (a window) or ``"random"``.
        kind: the kind's name (see :mod:`perforate.kinds`); found from ``main`` when None.
        name: the module's name in its model, for error messages.
    """

    def __init__(
        self,
        main: nn.Module,
        activation: str = "sigmoid",
        neuron_axis: int | None = None,
        perforated: bool = False,
        init_scale: float = 1.0,
        kind: str | None = None,
        name: str = "",
        inputs: int = 0,
        input_choice: str = "local",
    ) -> None:
        super().__init__()
        if isinstance(main, DendriticLayer):
            raise WrapError("this module is already a DendriticLayer; wrap each layer once")
        if activation not in activations.ACTIVATIONS:
            raise WrapError(f"activation must be one of {sorted(activations.ACTIVATIONS)}; "
                            f"got {activation!r}")
        first_parameter(main)
        adapter = kinds.get(kind) if kind is not None else (kinds.kind_of(main) or kinds.block_kind(main))
        self.main = main
        self.adapter = adapter
        self.kind = adapter.name
        self.path = name
        self.activation = activation
        self.perforated = perforated
        self.init_scale = float(init_scale)
        self.neuron_axis = int(adapter.resolve_axis(main, neuron_axis))
        self.channels = int(adapter.channels(main))
        self.has_bias = isinstance(getattr(main, "bias", None), torch.Tensor)
        self.inputs = int(inputs)
        self.input_choice = input_choice if self.inputs else "local"
        if self.inputs:
            connectivity.check_reads(self.inputs, connectivity.input_size(main) if adapter.stacked
                                     else None, input_choice,
                                     f"dendrite_inputs for layer {name or type(main).__name__}")
        self._num_dendrites = 0
        # registered now, so that the parameters keep this order however the layer grew (a
        # layer grown one dendrite at a time and one rebuilt from a checkpoint list them alike)
        self.dendrite_weight: nn.Parameter | None  # stacked kinds: [K*C, ...]
        self.dendrite_bias: nn.Parameter | None  # stacked kinds: [K*C]
        self.cascade_weight: nn.Parameter | None  # [K(K-1)/2, C], strictly lower triangle
        self.output_weight: nn.Parameter | None  # [K, C], starts at zero
        for key in ("dendrite_weight", "dendrite_bias", "cascade_weight", "output_weight"):
            self.register_parameter(key, None)
        # restricted inputs: [K*C, inputs] bool, which inputs each dendrite row reads
        self.register_buffer("dendrite_weight_mask", None)
        self.dendrite_blocks = None if adapter.stacked else nn.ModuleList()  # copies kinds
        self.candidate_pool: nn.Module | None = None  # set during a pb dendrite phase
        self._dendrites_frozen = False
        self.fused = True
        """Let the kind compute the layer on its fast path where it has one (Linear and
        convolutions: the cascade and join as one autograd node, :mod:`perforate.kinds.fused`);
        False takes the generic path (e.g. for second derivatives)."""

    # ------------------------------------------------------------------ structure
    @property
    def num_dendrites(self) -> int:
        return self._num_dendrites

    @property
    def dendrites_frozen(self) -> bool:
        """True while the dendrites' own weights are frozen (pb after a join); v always trains."""
        return self._dendrites_frozen

    def extra_repr(self) -> str:
        inputs = f", inputs={self.inputs} ({self.input_choice})" if self.inputs else ""
        return (f"kind={self.kind}, channels={self.channels}, dendrites={self._num_dendrites}, "
                f"activation={self.activation}, perforated={self.perforated}{inputs}")

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            main = self._modules.get("main")
            if main is None or name.startswith("_"):
                raise
        try:
            value = getattr(main, name)
        except AttributeError:
            raise AttributeError(f"'DendriticLayer' (wrapping {type(main).__name__}) has no "
                                 f"attribute '{name}'") from None
        if isinstance(value, (torch.Tensor, nn.Module)):
            raise bypass_error(name, self.path, f"{type(main).__name__} with dendrites", f"layer.main.{name}")
        return value

    def _reference(self) -> torch.Tensor:
        return first_parameter(self.main)

    def new_units(self, n: int, generator: torch.Generator | None):
        """Fresh weights for ``n`` dendrite units in the kind's form (see :mod:`perforate.kinds`):
        ``(weight [n*C, ...], bias [n*C] or None)`` for stacked kinds, a list of ``n``
        re-initialised module copies otherwise. Uses ``generator`` only, never global RNG."""
        return self.adapter.new_units(self, n, generator)

    def add_dendrites(self, n: int = 1, generator: torch.Generator | None = None,
                      units=None, cascade: torch.Tensor | None = None) -> None:
        """Add ``n`` dendrites; the layer's output is unchanged (new output weights are zero).

        ``units``/``cascade`` give the new dendrites' weights (as from :meth:`new_units`, and
        ``[n, K_old, C]`` cascade weights from the existing dendrites); fresh random weights and
        zero cascade weights are used when omitted.
        """
        if n < 1:
            return
        if units is None:
            units = self.new_units(n, generator)
        ref = self._reference()
        k_old = self._num_dendrites
        with torch.no_grad():
            self.adapter.append_units(self, units)
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
        self.adapter.clear_units(self)
        self.cascade_weight = self.output_weight = None
        self._num_dendrites = 0
        if k > 0:
            self.add_dendrites(k, units=self.adapter.placeholder_units(self, k))

    def dendrite_weight_used(self) -> torch.Tensor | None:
        """The stacked dendrite weight as the forward uses it: masked where inputs are restricted."""
        w, mask = self._parameters["dendrite_weight"], self._buffers.get("dendrite_weight_mask")
        return w if mask is None or w is None else w * connectivity.shaped(mask, w.ndim)

    def dendrite_parameters(self) -> list[nn.Parameter]:
        """Weights of the dendrites themselves (not the output weights v)."""
        params = self.adapter.unit_parameters(self)
        if self.cascade_weight is not None:
            params.append(self.cascade_weight)
        return params

    def freeze_dendrites(self, frozen: bool = True) -> None:
        """Freeze (pb) or unfreeze (gd) the dendrites' own weights; v always stays trainable."""
        self._dendrites_frozen = frozen
        for p in self.dendrite_parameters():
            p.requires_grad_(not frozen)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints from before the stacked weights were flat hold [K, C, ...] and [K, C]
        for key in ("dendrite_weight", "dendrite_bias"):
            saved, live = state_dict.get(prefix + key), getattr(self, key)
            if isinstance(saved, torch.Tensor) and live is not None and saved.dim() == live.dim() + 1:
                state_dict[prefix + key] = saved.flatten(0, 1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ forward
    def _axis(self, ndim: int) -> int:
        return self.adapter.axis(self, ndim)

    def channel_view(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """Reshape a per-channel vector ``[C]`` to broadcast against an output of ``ndim`` dims."""
        return t.reshape(t.shape[0], *([1] * (ndim - self._axis(ndim) - 1)))

    def dendrite_preactivations(self, x: Any, *args: Any, **kwargs: Any) -> list[torch.Tensor]:
        """``z_k`` for every dendrite (before the cascade and activation)."""
        return self.adapter.preactivations(self, x, args, kwargs)

    def _channel_rows(self, weight: torch.Tensor, ndim: int) -> tuple[torch.Tensor, ...]:
        """The rows of a per-channel weight ``[R, C]``, each shaped to broadcast against an
        output of ``ndim`` dims: one ``unbind`` (one backward node) rather than a select per row."""
        ones = [1] * (ndim - self._axis(ndim) - 1)
        if not ones:  # neurons on the last axis: the rows broadcast as they are
            return (weight,) if weight.shape[0] == 1 and ndim > 1 else weight.unbind(0)
        if weight.shape[0] == 1:
            return (weight.reshape(weight.shape[1], *ones),)
        return weight.reshape(*weight.shape[:2], *ones).unbind(0)

    def cascade(self, z: list[torch.Tensor]) -> list[torch.Tensor]:
        """Apply the cascade and activation: ``a_k = f(z_k + sum_{j<k} w_kj a_j)``."""
        act = activations.ACTIVATIONS[self.activation].forward
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
        out = y
        for k, a in enumerate(acts):
            out = torch.addcmul(out, rows[k], a)
        # under autocast y may be half precision and v float32: keep the main layer's dtype
        return out if out.dtype == y.dtype else out.to(y.dtype)

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        k = self._num_dendrites
        pool = self.candidate_pool
        if k == 0 and pool is None:
            return self.main(x, *args, **kwargs)
        # The main layer runs on its own so its output stays bit-identical to the unwrapped
        # layer (measured: as fast as one call over concatenated weights, which must copy them).
        adapter = self.adapter
        if pool is None and self.fused:
            y = adapter.fused_forward(self, x, args, kwargs)
            if y is not None:
                return y
        y, rebuild = adapter.neurons(self.main, self.main(x, *args, **kwargs))
        acts: list[torch.Tensor] = []
        if k > 0:
            xd = adapter.detach(x) if self.perforated else x
            acts = self.cascade(adapter.preactivations(self, xd, args, kwargs))
            y = self.join(y, acts)
        if pool is not None and self.training and torch.is_grad_enabled():
            y = y + pool(adapter.detach(x), [a.detach() for a in acts], self, args, kwargs, like=y)
        return y if rebuild is None else rebuild(y)

    def reference_forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """Loop-over-dendrites forward, one call per dendrite and plain arithmetic for the
        cascade and join (no code shared with :meth:`forward`): the slow reference for tests."""
        y, rebuild = self.adapter.neurons(self.main, self.main(x, *args, **kwargs))
        xd = self.adapter.detach(x) if self.perforated else x
        act = activations.ACTIVATIONS[self.activation].forward
        acts: list[torch.Tensor] = []
        row = 0
        for k, pre in enumerate(self.adapter.reference_preactivations(self, xd, args, kwargs)):
            for j in range(k):
                pre = pre + self.channel_view(self.cascade_weight[row], pre.ndim) * acts[j]
                row += 1
            acts.append(act(pre))
            y = y + self.channel_view(self.output_weight[k], y.ndim) * acts[k]
        return y if rebuild is None else rebuild(y)

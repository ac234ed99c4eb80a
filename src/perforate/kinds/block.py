"""Declared blocks (``pf.perforate(model, blocks=[...])``): each dendrite is a whole re-initialised
copy of the block (e.g. conv + batch-norm, each dendrite with its own norm), fed the same input
and the same extra arguments. The copies are kept in ``layer.dendrite_blocks``.

Other kinds whose dendrites are module copies (recurrent layers, graph convolutions) build on
this one and override how a copy is called and what its output's neuron tensor is.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..errors import WrapError
from .base import Kind


class BlockKind(Kind):
    name = "block"

    # ------------------------------------------------------------------ shape
    def natural_axis(self, module: nn.Module) -> int:
        from . import inner_kind

        found = inner_kind(module)
        if found is None:
            raise WrapError(
                f"cannot infer the neuron axis of {type(module).__name__}: it holds no Linear/Conv; "
                "give it explicitly with Config.neuron_axis={'<module name>': axis}")
        return found[0].natural_axis(found[1])

    def resolve_axis(self, module: nn.Module, requested: int | None) -> int:
        return self.natural_axis(module) if requested is None else int(requested)

    def channels(self, module: nn.Module) -> int:
        from . import inner_kind

        for attr in ("out_channels", "out_features"):
            value = getattr(module, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        found = inner_kind(module, last=True)
        if found is None:
            raise WrapError(
                f"cannot find the output channels of {type(module).__name__}: it holds no "
                "Linear/Conv and has no out_channels/out_features attribute; give it one")
        return found[0].channels(found[1])

    # ------------------------------------------------------------------ calling a copy
    def call_unit(self, unit: nn.Module, x: Any, args: tuple, kwargs: dict) -> Any:
        """Run one dendrite copy (blocks get the main module's extra arguments too)."""
        return unit(x, *args, **kwargs)

    def unit_neurons(self, unit: nn.Module, out: Any) -> torch.Tensor:
        """The neuron tensor of a dendrite copy's output."""
        return self.neurons(unit, out)[0]

    def fresh_copy(self, main: nn.Module, init_scale: float, seed: int | None) -> nn.Module:
        """A deep copy of ``main`` with every sub-module's ``reset_parameters()`` re-run."""
        block = copy.deepcopy(main)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            for sub in block.modules():
                reset = getattr(sub, "reset_parameters", None)
                if callable(reset):
                    reset()
            if init_scale != 1.0:
                with torch.no_grad():
                    self.scale_copy(block, init_scale)
        for p in block.parameters():
            p.requires_grad_(True)
        return block

    def scale_copy(self, block: nn.Module, scale: float) -> None:
        """Scale a fresh copy's weights by ``init_scale`` (the Linear/Conv ones for a block)."""
        from . import kind_of

        for sub in block.modules():
            found = kind_of(sub)
            if found is not None and found.stacked:
                for p in sub.parameters(recurse=False):
                    p.mul_(scale)

    # ------------------------------------------------------------------ units on the layer
    def new_units(self, layer, n, generator):
        device = next(layer.main.parameters()).device
        units = []
        for _ in range(n):
            seed = int(torch.randint(0, 2**62, (1,), generator=generator).item()) if generator else None
            units.append(self.fresh_copy(layer.main, layer.init_scale, seed).to(device=device))
        return units

    def placeholder_units(self, layer, n):
        return [copy.deepcopy(layer.main) for _ in range(n)]

    def append_units(self, layer, units):
        device = next(layer.main.parameters()).device
        for unit in units:
            layer.dendrite_blocks.append(unit.to(device=device))

    def clear_units(self, layer):
        layer.dendrite_blocks = nn.ModuleList()

    def unit_parameters(self, layer):
        return list(layer.dendrite_blocks.parameters())

    def preactivations(self, layer, x, args, kwargs):
        return [self.unit_neurons(unit, self.call_unit(unit, x, args, kwargs)) for unit in layer.dendrite_blocks]

    # ------------------------------------------------------------------ pb candidates
    @staticmethod
    def _best_key(index: int, name: str) -> str:
        return f"best_block{index}__" + name.replace(".", "__")

    def init_pool(self, pool, layer, units):
        pool.blocks = nn.ModuleList(units)
        for i, unit in enumerate(units):  # remembered best state of each copy, as buffers
            for name, t in unit.state_dict().items():
                pool.register_buffer(self._best_key(i, name), t.detach().clone())

    def pool_preactivations(self, pool, layer, x, args, kwargs):
        z = [self.unit_neurons(unit, self.call_unit(unit, x, args, kwargs)) for unit in pool.blocks]
        axis = self.axis(layer, z[0].ndim)
        return (z[0].unsqueeze(axis) if len(z) == 1 else torch.stack(z, axis)), axis  # 1: no copy

    def remember(self, pool, improved):
        # a copy's channels share its weights: keep whole candidates whose mean score improved
        whole = (pool.score.mean(1) > pool.best_score.mean(1)).unsqueeze(1).expand_as(improved)
        for p in whole[:, 0].nonzero().flatten().tolist():
            for name, live in pool.blocks[p].state_dict().items():
                pool._buffers[self._best_key(p, name)].copy_(live)
        return whole

    def winners(self, pool):
        c = pool.best_score.shape[1]
        return pool.best_score.mean(1).argmax().expand(c)

    def select(self, pool, winners):
        winner = int(winners[0])
        unit = copy.deepcopy(pool.blocks[winner])
        unit.load_state_dict({name: pool._buffers[self._best_key(winner, name)]
                              for name in unit.state_dict()})
        return [unit]


KIND = BlockKind()

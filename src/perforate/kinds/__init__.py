"""One home per layer kind: the adapters :class:`perforate.DendriticLayer` delegates to.

========== ============================================= =========================================
kind       modules                                       dendrites
========== ============================================= =========================================
linear     ``nn.Linear`` and subclasses                  stacked: one wide Linear (``linear.py``)
hf_conv1d  Hugging Face ``Conv1D`` (GPT-2's projections, stacked: one wide Linear (``hf_conv1d.py``)
           a Linear with its weight transposed)
conv       ``nn.Conv1d/2d/3d`` and subclasses            stacked: one wide convolution (``conv.py``)
graph      PyG ``Linear`` (inside GCNConv, SAGEConv,     stacked: one wide Linear (``graph.py``)
           GATConv, ...)
graph_conv a PyG convolution given in ``blocks=``        copies of the convolution (``graph.py``)
recurrent  ``nn.RNN``, ``nn.LSTM``, ``nn.GRU``           copies of the recurrent layer, joined on
                                                         its hidden outputs (``recurrent.py``)
block      any module given in ``blocks=``               copies of the block (``block.py``)
========== ============================================= =========================================

``nn.MultiheadAttention`` is *opened* (``attention.py``): its projections become Linear
sub-modules that the linear kind wraps, and Transformer layers that would read their weights
directly take their ordinary path. A multi-layer RNN is opened into single-layer RNNs
(``recurrent.py``). Adding a kind: a module defining ``KIND`` (or ``KINDS``) and its name in
``_MODULES``.
"""
from __future__ import annotations

import importlib

from torch import nn

from .base import KINDS, Kind

# automatic selection tries these in order; "block" is only ever used when declared
_MODULES = ("linear", "conv", "hf_conv1d", "graph", "recurrent", "block")
for _name in _MODULES:
    _module = importlib.import_module(f"{__name__}.{_name}")
    for _kind in getattr(_module, "KINDS", None) or (_module.KIND,):
        KINDS[_kind.name] = _kind


def get(name: str) -> Kind:
    """The kind called ``name`` (as stored in checkpoints)."""
    return KINDS[name]


def kind_of(module: nn.Module) -> Kind | None:
    """The kind ``pf.perforate`` wraps ``module`` with on its own, or None."""
    for kind in KINDS.values():
        if kind.matches(module):
            return kind
    return None


def block_kind(module: nn.Module) -> Kind:
    """The kind for a module the user declared as a block (a copies kind that knows it, or block)."""
    for kind in KINDS.values():
        claims = getattr(kind, "claims_block", None)
        if claims is not None and claims(module):
            return kind
    return KINDS["block"]


def inner_kind(module: nn.Module, last: bool = False) -> tuple[Kind, nn.Module] | None:
    """The first (or last) sub-module of ``module`` that a stacked kind wraps, with its kind."""
    found = None
    for sub in module.modules():
        if sub is module:
            continue
        kind = kind_of(sub)
        if kind is not None and kind.stacked:
            found = (kind, sub)
            if not last:
                return found
    return found


__all__ = ["KINDS", "Kind", "block_kind", "get", "inner_kind", "kind_of"]

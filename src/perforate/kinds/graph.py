"""Graph layers (PyTorch Geometric, ``pip install 'perforate[pyg]'``).

``graph``: PyG's own ``Linear`` (``torch_geometric.nn.dense.linear.Linear``), the node-wise
transform inside ``GCNConv`` (``lin``), ``SAGEConv`` (``lin_l``, ``lin_r``), ``GATConv``
(``lin``) and most other convolutions. It computes ``F.linear`` like ``nn.Linear``, so its
dendrites are stacked the same way: a plain ``pf.perforate(gnn)`` gives every output channel
dendrites on the node-wise transform, before neighbourhood aggregation.

``graph_conv``: a whole PyG convolution declared as a block (``blocks=[GCNConv]``): each
dendrite is a copy of the convolution, called with the same ``edge_index`` (and other
arguments), so it aggregates over the neighbourhood itself.

PyG is only looked at when a model already imported it; nothing here imports it.
"""
from __future__ import annotations

import sys

from torch import nn

from ..errors import WrapError
from .block import BlockKind
from .linear import LinearKind


def _pyg(name: str):
    return sys.modules.get(name)


class GraphLinearKind(LinearKind):
    name = "graph"

    def matches(self, module: nn.Module) -> bool:
        dense = _pyg("torch_geometric.nn.dense.linear")
        return dense is not None and isinstance(module, dense.Linear)

    def channels(self, module: nn.Module) -> int:
        if isinstance(module.weight, nn.parameter.UninitializedParameter):
            raise WrapError(
                f"{module!r} is lazy (in_channels=-1) and not initialised yet: run one forward "
                "pass through the model before pf.perforate, or give in_channels")
        return module.out_channels

    def foldable(self, main: nn.Module) -> bool:
        dense = _pyg("torch_geometric.nn.dense.linear")
        return dense is not None and type(main) is dense.Linear


class GraphConvKind(BlockKind):
    name = "graph_conv"

    def claims_block(self, module: nn.Module) -> bool:
        conv = _pyg("torch_geometric.nn.conv")
        return conv is not None and isinstance(module, conv.MessagePassing)

    def natural_axis(self, module: nn.Module) -> int:
        return -1  # node features: [num_nodes, channels]

    def channels(self, module: nn.Module) -> int:
        out = module.out_channels
        heads = getattr(module, "heads", 1)
        return out * heads if getattr(module, "concat", False) else out


KINDS = (GraphLinearKind(), GraphConvKind())

"""PyTorch Geometric layers: PyG Linear inside GCNConv/SAGEConv/GATConv, and whole convolutions
declared as blocks, on a synthetic graph and on KarateClub (built in memory, no download)."""
import pytest
import torch
from torch import nn

import perforate as pf
from tests.helpers.families import check_family, check_pb

pyg = pytest.importorskip("torch_geometric")
from torch_geometric.datasets import KarateClub  # noqa: E402
from torch_geometric.nn import GATConv, GCNConv, SAGEConv  # noqa: E402
from torch_geometric.nn.dense.linear import Linear as PygLinear  # noqa: E402

CONVS = {"gcn": (GCNConv, {}), "sage": (SAGEConv, {}), "gat": (GATConv, {"heads": 2})}


class GNN(nn.Module):
    def __init__(self, conv, kwargs, features=6, hidden=8, classes=3):
        super().__init__()
        self.conv1 = conv(features, hidden, **kwargs)
        width = hidden * kwargs.get("heads", 1)
        self.conv2 = conv(width, classes)
        self.head = PygLinear(classes, classes)

    def forward(self, x, edge_index):
        return self.head(self.conv2(torch.relu(self.conv1(x, edge_index)), edge_index))


def _synthetic(nodes=12, features=6):
    g = torch.Generator().manual_seed(0)
    edges = torch.randint(0, nodes, (2, 40), generator=g)
    return torch.randn(nodes, features, generator=g), torch.cat([edges, edges.flip(0)], 1)


@pytest.mark.parametrize("blocks", [False, True])
@pytest.mark.parametrize("conv", sorted(CONVS))
def test_graph_layers_wrap_grow_save_and_export(conv, blocks, tmp_path):
    cls, kwargs = CONVS[conv]
    spec = {"blocks": [cls]} if blocks else {}
    model = check_family(lambda: GNN(cls, kwargs), _synthetic, spec, lambda: GNN(cls, kwargs),
                         tmp_path, trace=False)
    kinds = {layer.kind for layer in pf.dendritic_layers(model).values()}
    assert kinds == ({"graph_conv", "graph"} if blocks else {"graph"})
    check_pb(lambda: GNN(cls, kwargs), _synthetic, spec)


def test_karate_club_gcn_trains_with_dendrites_and_exports():
    data = KarateClub()[0]
    torch.manual_seed(0)
    model = pf.perforate(GNN(GCNConv, {}, features=34, hidden=4, classes=4))
    layers = pf.dendritic_layers(model)
    assert set(layers) == {"conv1.lin", "conv2.lin", "head"}
    assert layers["conv1.lin"].channels == 4 and layers["conv1.lin"].neuron_axis == -1
    grower = pf.Grower(model, pf.Config(patience=100, growth_lr_scale=1.0), lambda p: torch.optim.Adam(p, lr=0.05))
    before = model(data.x, data.edge_index).detach()
    grower.add_dendrites()
    torch.testing.assert_close(model(data.x, data.edge_index), before)
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(data.x, data.edge_index)[data.train_mask],
                                           data.y[data.train_mask])
        grower.optimizer.zero_grad()
        loss.backward()
        grower.optimizer.step()
    assert loss.item() < 0.1
    exported = pf.export(model).eval()
    torch.testing.assert_close(exported(data.x, data.edge_index), model.eval()(data.x, data.edge_index))


def test_lazy_pyg_linear_names_the_fix():
    with pytest.raises(pf.WrapError, match="lazy.*forward pass"):
        pf.perforate(nn.Sequential(PygLinear(-1, 4)))

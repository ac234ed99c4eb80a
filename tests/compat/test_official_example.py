"""The reference's official MNIST example loop (spec §3.2), on synthetic data, with only the import
changed: it must add dendrites, say so through ``restructured``, end with ``training_complete``,
write ``PAI/PAI.png``, and save/load the final model exactly. Run in the 3.0 and the 3.2 API."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.optim.lr_scheduler import StepLR

from perforate.compat.perforatedai import globals_perforatedai as GPA
from perforate.compat.perforatedai import utils_perforatedai as UPA
from perforate.compat.perforatedai import reset


class Net(nn.Module):
    """The example's CNN (two convs, pooling, dropout, two linears), scaled down to 8x8 inputs."""

    def __init__(self, width=1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(1, int(4 * width), 3, 1)
        self.conv2 = nn.Conv2d(int(4 * width), int(8 * width), 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(int(32 * width), int(16 * width))
        self.fc2 = nn.Linear(int(16 * width), 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = torch.flatten(x, 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def loaders(batch_size):
    """Ten smooth 8x8 class prototypes plus noise: MNIST's role, learnt in a few epochs."""
    g = torch.Generator().manual_seed(0)
    prototypes = F.interpolate(torch.randn(10, 1, 4, 4, generator=g), size=8, mode="bilinear")
    y = torch.randint(0, 10, (384,), generator=g)
    x = prototypes[y] + 0.4 * torch.randn(384, 1, 8, 8, generator=g)
    train = torch.utils.data.TensorDataset(x[:256], y[:256])
    test = torch.utils.data.TensorDataset(x[256:], y[256:])
    return (torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, generator=g),
            torch.utils.data.DataLoader(test, batch_size=128))


# ----------------------------------------------------------------- the example's loop, as written
def train(model, device, train_loader, optimizer):
    model.train()
    correct = 0
    for data, target in train_loader:
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        pred = output.argmax(dim=1, keepdim=True)
        correct += pred.eq(target.view_as(pred)).sum()
    GPA.pai_tracker.add_extra_score(100. * correct / len(train_loader.dataset), 'train')
    model.to(device)


def test(model, device, test_loader, optimizer, scheduler, args, seen):
    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum()
    model, restructured, training_complete = GPA.pai_tracker.add_validation_score(
        100. * correct / len(test_loader.dataset), model)
    model.to(device)
    seen.append((restructured, training_complete))
    if restructured:
        optimArgs = {'params': model.parameters(), 'lr': args['lr']}
        schedArgs = {'step_size': 1, 'gamma': args['gamma']}
        optimizer, scheduler = GPA.pai_tracker.setup_optimizer(model, optimArgs, schedArgs)
    return model, optimizer, scheduler, training_complete


test.__test__ = False  # the example's name, not a pytest test


def main(convert, args, seen):
    device = torch.device("cpu")
    torch.manual_seed(1)
    train_loader, test_loader = loaders(args['batch_size'])
    GPA.pc.set_testing_dendrite_capacity(False)
    model = Net(args['width'])
    model = convert(model)
    model = model.to(device)
    GPA.pai_tracker.set_optimizer(optim.Adadelta)
    GPA.pai_tracker.set_scheduler(StepLR)
    optimArgs = {'params': model.parameters(), 'lr': args['lr']}
    schedArgs = {'step_size': 1, 'gamma': args['gamma']}
    optimizer, scheduler = GPA.pai_tracker.setup_optimizer(model, optimArgs, schedArgs)
    for epoch in range(1, args['epochs'] + 1):
        train(model, device, train_loader, optimizer)
        model, optimizer, scheduler, training_complete = test(model, device, test_loader, optimizer,
                                                              scheduler, args, seen)
        if training_complete:
            break
    return model


# ----------------------------------------------------------------- the checks
@pytest.fixture(autouse=True)
def _fresh_globals(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reset()
    yield
    reset()


@pytest.mark.parametrize("convert", [UPA.initialize_pai, UPA.perforate_model], ids=["3.0", "3.2"])
def test_official_mnist_loop_grows_completes_writes_graph_and_reloads(convert, tmp_path):
    seen = []
    args = {'lr': 1.0, 'gamma': 0.7, 'width': 4.0, 'batch_size': 32, 'epochs': 10000}
    model = main(convert, args, seen)

    assert seen[-1] == (True, True), "ends with restructured and training_complete"
    assert any(r == 1 and not done for r, done in seen), "dendrites were added during the run"
    dendrite_epochs = GPA.pai_tracker.member_vars["switch_epochs"]
    assert dendrite_epochs and len(seen) < 200
    assert (tmp_path / "PAI" / "PAI.png").stat().st_size > 10_000
    for table in ("PAIScores.csv", "PAIswitch_epochs.csv"):
        assert (tmp_path / "PAI" / table).exists()

    UPA.save_system(model, "PAI", "final")
    fresh = UPA.load_system(Net(args['width']), "PAI", "final")
    x = torch.randn(8, 1, 8, 8)
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))
    assert UPA.count_params(fresh) == UPA.count_params(model)

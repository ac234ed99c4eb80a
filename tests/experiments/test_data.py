"""Offline datasets and reference models of perforate.experiments."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from perforate.errors import ExperimentError
from perforate.experiments.datasets import (
    DATASETS,
    DatasetSplits,
    dataset_names,
    load_dataset,
)
from perforate.experiments.models import (
    MODELS,
    build_model,
    compatible_models,
    model_names,
    width_for_params,
)

EXPECTED = {  # name: (task, input_shape, num_classes, total samples, test size or None)
    "mnist1d": ("classification", (40,), 10, 5000, 1000),
    "digits": ("classification", (1, 8, 8), 10, 1797, None),
    "mnist5k": ("classification", (1, 28, 28), 10, 5000, 1000),
    "spirals": ("classification", (2,), 2, 1500, 500),
    "breast_cancer": ("classification", (30,), 2, 569, None),
    "wine": ("classification", (13,), 3, 178, None),
    "diabetes": ("regression", (10,), 0, 442, None),
}


@pytest.fixture(scope="module")
def loaded():
    """Every dataset at seed 0, loaded once for the module."""
    return {name: load_dataset(name, seed=0) for name in dataset_names()}


def test_registry_lists_every_dataset():
    assert set(dataset_names()) == set(EXPECTED) == set(DATASETS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dataset_shapes_dtypes_classes(loaded, name):
    task, shape, classes, total, test_size = EXPECTED[name]
    d = loaded[name]
    assert isinstance(d, DatasetSplits)
    assert (d.name, d.task, d.input_shape, d.num_classes) == (name, task, shape, classes)
    n_train, n_val, n_test = d.sizes
    assert n_train + n_val + n_test == total
    if test_size is not None:
        assert n_test == test_size
    # validation is about 15% of the training pool
    assert abs(n_val / (n_train + n_val) - 0.15) < 0.02
    for split in ("train", "val", "test"):
        x, y = getattr(d, f"x_{split}"), getattr(d, f"y_{split}")
        assert x.dtype == torch.float32 and tuple(x.shape[1:]) == shape
        assert len(x) == len(y)
        assert torch.isfinite(x).all()
        if task == "classification":
            assert y.dtype == torch.int64 and y.dim() == 1
            assert y.min() >= 0 and y.max() < classes
        else:
            assert y.dtype == torch.float32 and tuple(y.shape[1:]) == (1,)
    if task == "classification":
        # stratified: every class present in every split
        for y in (d.y_train, d.y_val, d.y_test):
            assert len(torch.unique(y)) == classes
    assert d.out_features == (classes or 1)


def test_images_in_unit_range(loaded):
    for name in ("digits", "mnist5k"):
        d = loaded[name]
        assert d.x_train.min() >= 0 and d.x_train.max() <= 1


def test_tabular_standardized_by_train_statistics(loaded):
    for name in ("breast_cancer", "wine", "diabetes"):
        x = loaded[name].x_train
        assert torch.allclose(x.mean(0), torch.zeros(x.shape[1]), atol=1e-4)
        assert torch.allclose(x.std(0, unbiased=False), torch.ones(x.shape[1]), atol=1e-3)
    y = loaded["diabetes"].y_train
    assert abs(float(y.mean())) < 1e-4 and abs(float(y.std(unbiased=False)) - 1) < 1e-3


@pytest.mark.parametrize("name", ["mnist1d", "digits", "spirals", "diabetes"])
def test_same_seed_same_split(loaded, name):
    a, b = loaded[name], load_dataset(name, seed=0)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    c = load_dataset(name, seed=1)
    assert not torch.equal(a.x_train, c.x_train)


@pytest.mark.parametrize("name", ["mnist1d", "mnist5k"])
def test_fixed_test_split_ignores_seed(loaded, name):
    a, b = loaded[name], load_dataset(name, seed=7)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test)
    # train + val is the same pool, only split differently
    pool_a = torch.cat([a.x_train, a.x_val]).sum(0)
    pool_b = torch.cat([b.x_train, b.x_val]).sum(0)
    assert torch.allclose(pool_a, pool_b, atol=1e-2)
    assert not torch.equal(a.x_val, b.x_val)


def test_mnist1d_generation_keeps_global_rng(loaded):
    from perforate.experiments.datasets import _mnist1d_arrays

    _mnist1d_arrays.cache_clear()
    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    load_dataset("mnist1d")
    assert (random.random(), np.random.rand()) == expected


def test_train_fraction_and_subset(loaded):
    full = loaded["digits"]
    half = load_dataset("digits", seed=0, train_fraction=0.5)
    assert abs(len(half.y_train) - 0.5 * len(full.y_train)) <= 10
    assert torch.equal(half.x_val, full.x_val) and torch.equal(half.x_test, full.x_test)
    # stratified: class proportions follow the full training split
    assert len(torch.unique(half.y_train)) == 10
    counts_full = torch.bincount(full.y_train, minlength=10).float()
    counts_half = torch.bincount(half.y_train, minlength=10).float()
    assert torch.allclose(counts_half, counts_full / 2, atol=1.0)

    sub = full.subset_train(0.1, seed=3)
    assert abs(len(sub.y_train) - 0.1 * len(full.y_train)) <= 10
    assert torch.equal(sub.x_train, full.subset_train(0.1, seed=3).x_train)
    assert len(full.subset_train(1.0).y_train) == len(full.y_train)

    reg = loaded["diabetes"].subset_train(0.25, seed=0)
    assert len(reg.y_train) == round(0.25 * len(loaded["diabetes"].y_train))

    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ExperimentError, match="fraction"):
            full.subset_train(bad)
        with pytest.raises(ExperimentError, match="train_fraction"):
            load_dataset("digits", train_fraction=bad)


def test_loaders(loaded):
    d = loaded["wine"]
    train, val, test = d.loaders(batch_size=16, seed=5)
    assert sum(len(y) for _, y in train) == len(d.y_train)
    assert sum(len(y) for _, y in val) == len(d.y_val)
    assert sum(len(y) for _, y in test) == len(d.y_test)
    # same seed, same order; each epoch draws a new order
    epoch1 = [y for _, y in d.loaders(16, seed=5)[0]]
    epoch2 = [y for _, y in train]  # train's second pass
    assert torch.equal(torch.cat(epoch1), torch.cat([y for _, y in d.loaders(16, seed=5)[0]]))
    assert not torch.equal(torch.cat(epoch1), torch.cat(epoch2))
    assert not torch.equal(torch.cat(epoch1), d.y_train)
    assert torch.equal(next(iter(val))[1], d.y_val[:16])  # not shuffled
    with pytest.raises(ExperimentError, match="batch_size"):
        d.loaders(batch_size=0)


def test_unknown_dataset_names_known_ones():
    with pytest.raises(ExperimentError) as info:
        load_dataset("cifar10")
    for name in EXPECTED:
        assert name in str(info.value)
    assert isinstance(info.value, ValueError)


def _pairs():
    shapes = {name: exp[1] for name, exp in EXPECTED.items()}
    return [
        (m, d) for d in sorted(EXPECTED) for m in model_names() if MODELS[m].accepts(shapes[d])
    ]


@pytest.mark.parametrize("model_name,data_name", _pairs())
def test_model_forward_and_sgd_step(loaded, model_name, data_name):
    d = loaded[data_name]
    model = build_model(model_name, d, width=8, seed=0)
    x, y = d.x_train[:16], d.y_train[:16]
    out = model(x)
    assert out.shape == (16, d.out_features)
    loss_fn = nn.CrossEntropyLoss() if d.task == "classification" else nn.MSELoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = loss_fn(out, y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_every_dataset_has_a_model_and_cnn2d_only_for_images(loaded):
    assert compatible_models(loaded["mnist1d"]) == ["mlp", "cnn1d", "gru", "lstm", "transformer"]
    assert compatible_models(loaded["digits"]) == ["mlp", "cnn2d"]
    assert "cnn2d" not in compatible_models(loaded["wine"])


def test_build_is_deterministic_and_keeps_global_rng(loaded):
    d = loaded["mnist1d"]
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    a = build_model("cnn1d", d, width=6, seed=3)
    assert torch.equal(torch.rand(3), expected)
    b = build_model("cnn1d", d, width=6, seed=3)
    c = build_model("cnn1d", d, width=6, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_incompatible_model_explains_shapes(loaded):
    with pytest.raises(ExperimentError) as info:
        build_model("cnn2d", loaded["wine"], width=4)
    msg = str(info.value)
    assert "(13,)" in msg and "mlp" in msg and "(C, H, W)" in msg


def test_unknown_model_and_bad_width(loaded):
    with pytest.raises(ExperimentError) as info:
        build_model("resnet", loaded["wine"], width=4)
    for name in ("mlp", "cnn1d", "cnn2d", "gru"):
        assert name in str(info.value)
    with pytest.raises(ExperimentError, match="width"):
        build_model("mlp", loaded["wine"], width=0)


def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("model_name", ["mlp", "cnn1d", "gru", "lstm", "transformer"])
@pytest.mark.parametrize("target", [2_000, 25_000, 150_000])
def test_width_for_params_matches(loaded, model_name, target):
    d = loaded["mnist1d"]
    width = width_for_params(model_name, d, target)
    count = _count(build_model(model_name, d, width))
    assert abs(count - target) / target < 0.05
    # no neighbouring width is closer
    for other in (width - 1, width + 1):
        assert abs(_count(build_model(model_name, d, other)) - target) >= abs(count - target)


def test_width_for_params_clamps_to_bounds(loaded):
    d = loaded["digits"]
    assert width_for_params("mlp", d, 1, low=3, high=50) == 3
    assert width_for_params("mlp", d, 10**9, low=3, high=50) == 50
    with pytest.raises(ExperimentError):
        width_for_params("mlp", d, 0)
    with pytest.raises(ExperimentError):
        width_for_params("cnn2d", loaded["wine"], 1000)

"""Runs killed with SIGKILL at chosen points, then resumed, end exactly as uninterrupted runs.

Each run trains a small model in a forked child process that sends itself SIGKILL at its k-th
*point*: the start of every training batch, and just before and just after every file
perforate commits (``os.replace`` of an atomic write). A new child resumes the run from disk
(``Grower.resume``), maybe to be killed again, until one finishes. Decisions (the history's
events and phases), every history value but the timings, the final model's structure and its
outputs must equal those of an uninterrupted run bit for bit. gd and pb runs both grow two
dendrites per layer, with a retry. ``-m slow`` sweeps many random kill points.
"""
import json
import os
import random
import signal

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import perforate as pf

SCORES = [0.3, 0.4, 0.4, 0.4, 0.4, 0.4, 0.5, 0.6] + [0.6] * 12  # grow, retry, grow, retry, done
CONFIGS = {"gd": dict(mode="gd"),
           "pb": dict(mode="pb", candidates=2, dendrite_patience=5, dendrite_max_epochs=2)}
X = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
Y = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def _adam(params):
    return torch.optim.Adam(params, lr=1e-2)


def _train(out_dir, mode, kill_at):
    """One process's share of the run: fresh or resumed from ``out_dir``, to the end."""
    points = [0]

    def point():
        points[0] += 1
        if points[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    replace = os.replace

    def replace_between_points(*args, **kwargs):
        point()
        replace(*args, **kwargs)
        point()

    if kill_at is not None:
        os.replace = replace_between_points  # a forked child's own copy of the os module
    if (out_dir / "state" / "resume.safetensors").is_file():
        grower = pf.Grower.resume(out_dir, _model(), _adam)
    else:
        cfg = pf.Config(patience=2, max_dendrites=2, max_growth_retries=1, plots=False, **CONFIGS[mode])
        grower = pf.Grower(_model(), cfg, _adam, out_dir=out_dir)
    while not grower.done:
        epoch = grower.state.epoch
        order = torch.randperm(32, generator=torch.Generator().manual_seed(epoch))
        grower.model.train()
        for batch in order.split(16):
            point()
            grower.optimizer.zero_grad()
            nn.functional.mse_loss(grower.model(X[batch]), Y[batch]).backward()
            grower.optimizer.step()
        with torch.no_grad():
            val_loss = nn.functional.mse_loss(grower.model.eval()(X), Y).item()
        grower.step(SCORES[min(epoch, len(SCORES) - 1)], val_loss=val_loss)
    with torch.no_grad():
        save_file({"out": grower.model.eval()(X)}, str(out_dir / "final.safetensors"))
    levels = {n: l.num_dendrites for n, l in pf.dendritic_layers(grower.model).items()}
    (out_dir / "final.json").write_text(json.dumps(
        {"history": [{k: v for k, v in row.items() if k != "seconds"} for row in grower.history],
         "dendrites": levels, "max_level": max(r["dendrites"] for r in grower.history)}))


def _child(out_dir, mode, kill_at):
    """Run :func:`_train` in a forked child; True when it finished, False when it was killed."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            _train(out_dir, mode, kill_at)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return False
    assert os.WEXITSTATUS(status) == 0, f"the run failed (kill point {kill_at})"
    return True


def _result(out_dir):
    return json.loads((out_dir / "final.json").read_text()), load_file(str(out_dir / "final.safetensors"))["out"]


def _killed_run(out_dir, mode, kills):
    """A run killed at each of ``kills`` (points counted per process), resumed until it ends."""
    killed = 0
    for kill_at in kills:
        if _child(out_dir, mode, kill_at):
            return _result(out_dir), killed
        killed += 1
    assert _child(out_dir, mode, None)
    return _result(out_dir), killed


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs, in this process (which warms up what the forked children use)."""
    out, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for mode in CONFIGS:
            folder = tmp_path_factory.mktemp(f"reference-{mode}")
            _train(folder, mode, None)
            out[mode] = _result(folder)
            assert out[mode][0]["max_level"] >= 2  # two dendrites per layer at some point
    finally:
        torch.set_num_threads(threads)
    return out


def _assert_same(result, expected):
    (meta, outputs), (meta_ref, outputs_ref) = result, expected
    assert meta == meta_ref
    assert torch.equal(outputs, outputs_ref)


@pytest.mark.parametrize("mode,kills", [("gd", [7, 12, 21, 30]), ("pb", [7, 12, 21, 55])])
def test_runs_killed_at_chosen_points_end_as_uninterrupted_runs(tmp_path, reference, mode, kills):
    # between a state file's write and its commit, at batches, after a commit; the last pb
    # resume comes after its retry (whose rollback once left a stale params column)
    result, killed = _killed_run(tmp_path, mode, kills)
    assert killed == len(kills)
    _assert_same(result, reference[mode])


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(CONFIGS))
def test_runs_killed_at_random_points_end_as_uninterrupted_runs(tmp_path, reference, mode):
    rng = random.Random(11)
    tried = 0
    for run in range(25):
        folder = tmp_path / str(run)
        result, killed = _killed_run(folder, mode, [rng.randint(1, 120) for _ in range(rng.randint(1, 4))])
        tried += killed
        _assert_same(result, reference[mode])
    print(f"{mode}: {tried} kills in 25 runs, all resumed to the uninterrupted result")

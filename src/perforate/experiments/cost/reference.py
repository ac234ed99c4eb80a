"""The cost bench's figure against the reference library (``perforatedai``), where it is installed.

The same MNIST-1D loop (the cost bench's MLP, Adam lr 1e-3, batch 64 as in the quality
protocol, batches cut from tensors, validation accuracy as the score) runs ``epochs`` epochs
three ways: plain; with a :class:`perforate.Grower` writing
to an ``out_dir``; and with perforatedai's tracker (``UPA.perforate_model`` and
``add_validation_score``, its defaults otherwise, files in a temporary working folder). Each
grows dendrites once, after ``switch`` epochs (perforatedai: a fixed switch; perforate:
``Grower.add_dendrites``), and trains on with them. Only the epochs are timed (with each
library's per-epoch work: perforate's history and resume state, perforatedai's graph and
saves), not the setup or ``Grower.finish``'s end-of-run files. The arms alternate over
``repeats`` runs; the figure is the median over runs of the mean seconds per epoch.

perforatedai is driven only through its public API; headless it needs its configuration
confirmed and the dendrite-capacity test off.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import statistics
import tempfile
import time
from typing import Any, Callable

import torch

Loop = Callable[[], Any]
"""Makes a fresh epoch loop: an object whose ``epoch(model, optimizer)`` trains one epoch and
returns the validation score (the cost bench's ``_Loop``)."""
Optimizer = Callable[[Any], torch.optim.Optimizer]


def reference_figure(base: torch.nn.Module, make_loop: Loop, adam: Optimizer, epochs: int = 10,
                     switch: int = 5, repeats: int = 3) -> dict[str, Any]:
    """Seconds per epoch of the three arms and the ratios between them (see the module);
    ``adam`` builds the optimizer from parameters (Adam, lr 1e-3 as perforatedai is given)."""
    arms = {"plain": _plain, "perforate": _perforate, "perforatedai": _reference}
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(repeats):
        for name in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
            with tempfile.TemporaryDirectory(prefix="perforate-reference-") as tmp:
                run = arms[name](copy.deepcopy(base), make_loop(), adam, epochs, switch, tmp)
            seconds[name].append(run / epochs)
    per_epoch = {name: statistics.median(s) for name, s in seconds.items()}
    return {
        "median": per_epoch["perforatedai"] / per_epoch["perforate"], "target": 30.0,
        "met": per_epoch["perforatedai"] / per_epoch["perforate"] >= 30.0,
        "seconds_per_epoch": per_epoch, "runs": seconds,
        "perforate_over_plain": per_epoch["perforate"] / per_epoch["plain"],
        "perforatedai_over_plain": per_epoch["perforatedai"] / per_epoch["plain"],
        "epochs": epochs, "growth_after": switch, "repeats": repeats,
        "perforatedai_version": _version(),
    }


def _plain(model, loop, adam: Optimizer, epochs: int, switch: int, tmp: str) -> float:
    optimizer = adam(model.parameters())
    started = time.perf_counter()
    for _ in range(epochs):
        loop.epoch(model, optimizer)
    return time.perf_counter() - started


def _perforate(model, loop, adam: Optimizer, epochs: int, switch: int, tmp: str) -> float:
    import perforate as pf

    cfg = pf.Config(patience=10**6, max_dendrites=1, seed=0)
    grower = pf.Grower(model, cfg, optimizer_factory=adam, out_dir=tmp)
    started = time.perf_counter()
    for epoch in range(epochs):
        grower.step(loop.epoch(grower.model, grower.optimizer))
        if epoch + 1 == switch:
            grower.add_dendrites()
    seconds = time.perf_counter() - started
    grower.finish()
    return seconds


def _reference(model, loop, adam: Optimizer, epochs: int, switch: int, tmp: str) -> float:
    with _quiet_in(tmp):
        from perforatedai import globals_perforatedai as GPA
        from perforatedai import utils_perforatedai as UPA

        pc = GPA.pc
        pc.set_configuration_confirmed(True)
        pc.set_testing_dendrite_capacity(False)
        pc.set_switch_mode(pc.DOING_FIXED_SWITCH)
        pc.set_fixed_switch_num(switch)
        pc.set_max_dendrites(1)
        model = UPA.perforate_model(model, save_name="reference", maximizing_score=True)
        tracker = GPA.pai_tracker
        tracker.set_optimizer(torch.optim.Adam)

        def optimizer_for(net):
            made = tracker.setup_optimizer(net, {"params": net.parameters(), "lr": 1e-3})
            return made[0] if isinstance(made, tuple) else made

        optimizer = optimizer_for(model)
        started = time.perf_counter()
        for _ in range(epochs):
            score = loop.epoch(model, optimizer)
            model, restructured, _ = tracker.add_validation_score(score, model)
            if restructured:
                optimizer = optimizer_for(model)
        return time.perf_counter() - started


@contextlib.contextmanager
def _quiet_in(folder: str):
    """Run in ``folder`` (perforatedai writes to the working folder) with its prints captured."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        os.chdir(cwd)


def _version() -> str:
    from importlib.metadata import version

    return version("perforatedai")

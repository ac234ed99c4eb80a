"""The reference arm: perforatedai 3.2.9 (Apache-2.0) on the model, data, seeds, epoch budget and
score of perforate's arms, with the library's own defaults for every growth decision.

perforatedai keeps process-wide state (``GPA.pc``, ``GPA.pai_tracker``), reads and writes files
under the working directory and calls ``pdb`` on some errors, so every run happens in a child
process (``python -m perforate.experiments.harness.reference``) whose working directory is the run's
folder and whose stdin is closed. Install it without its torchvision pin::

    pip install --no-deps perforatedai==3.2.9   # plus matplotlib pandas pyyaml safetensors requests

Headless settings (none of them changes a growth decision): ``configuration_confirmed`` (no
interactive setup), ``testing_dendrite_capacity`` off (else a 3-dendrite smoke test),
``unwrapped_modules_confirmed`` (a GRU's own weights are not wrapped by the reference; without
it, pdb). Its graphs must stay on (a PNG per epoch, most of its run time): without
``making_graphs`` 3.2.9 raises ``KeyError: 'neuron_accuracies'`` at its first switch, and without
``drawing_pai`` ``IndexError`` in ``generate_accuracy_plots``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from perforate.errors import ExperimentError

REFERENCE_VERSION = "3.2.9"
_RESULT = "RESULT "


def available() -> bool:
    """True when perforatedai can be imported."""
    return importlib.util.find_spec("perforatedai") is not None


def train_reference(dataset: str, model_name: str, width: int, *, seed: int, max_epochs: int,
                    lr: float, batch_size: int, weight_decay: float = 0.0,
                    train_fraction: float = 1.0, folder: str | Path, threads: int = 1,
                    timeout: float | None = None):
    """Train ``model_name`` at ``width`` on ``dataset`` with perforatedai's growth in a child
    process working in ``folder``; returns a :class:`~perforate.experiments.harness.train.TrainResult`
    (without the model). Raises ExperimentError when perforatedai is missing or the run fails
    (its output is kept in ``folder/reference.log``)."""
    from perforate.experiments.harness.train import TrainResult

    if not available():
        raise ExperimentError("the reference arm needs perforatedai: pip install --no-deps "
                              f"perforatedai=={REFERENCE_VERSION} matplotlib pandas pyyaml "
                              "safetensors requests")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    args = {"dataset": dataset, "model": model_name, "width": width, "seed": seed,
            "max_epochs": max_epochs, "lr": lr, "batch_size": batch_size,
            "weight_decay": weight_decay, "train_fraction": train_fraction, "threads": threads}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MPLBACKEND": "Agg"}
    log = folder / "reference.log"
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "perforate.experiments.harness.reference"],
                              input=json.dumps(args), stdout=subprocess.PIPE, stderr=out, text=True,
                              cwd=folder, env=env, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT)]
    with open(log, "a") as out:
        out.write(proc.stdout)
    if proc.returncode != 0 or not lines:
        raise ExperimentError(f"the perforatedai run failed (exit {proc.returncode}); see {log}")
    return TrainResult.from_dict(json.loads(lines[-1][len(_RESULT):]))


def _honest_parameters(model) -> int:
    """Parameters inference needs: the reference also holds a template copy of each wrapped
    layer (``parent_module``), candidate weights and the output weights of earlier dendrite
    counts (``dendrites_to_top.k`` for every k); only the last of those is used."""
    total = 0
    tops: dict[str, int] = {}
    for name, p in model.named_parameters():
        if "parent_module" in name or "candidate" in name:
            continue
        if ".dendrites_to_top." in name:
            prefix, index = name.rsplit(".", 1)
            if int(index) >= tops.get(prefix, (-1, 0))[0]:
                tops[prefix] = (int(index), p.numel())
            continue
        total += p.numel()
    return total + sum(n for _, n in tops.values())


def _child(args: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - runs in the child
    import torch

    import perforate as pf
    from perforate.experiments.harness.train import evaluate

    torch.set_num_threads(args["threads"])
    from perforatedai import globals_perforatedai as GPA
    from perforatedai import utils_perforatedai as UPA

    data, model = _wrapped_model(args, GPA, UPA)
    model, history, restarts, complete, seconds = _train_loop(args, data, model, GPA)
    if not complete:  # the budget ran out: the reference's best model is on disk
        model = UPA.load_system(model, "PAI", "best_model", True)
    model.eval()
    best_epoch = max(range(len(history)), key=lambda e: (history[e]["val_score"], -e))
    mv = GPA.pai_tracker.member_vars
    return {
        "val_score": float(mv.get("global_best_validation_score", history[best_epoch]["val_score"])),
        "test_score": evaluate(model, data, data.x_test, data.y_test),
        "params": _honest_parameters(model), "nonzero_params": _honest_parameters(model),
        "flops_per_sample": pf.flops_per_sample(model, data.x_val[:8]),
        "epochs": len(history), "seconds": seconds, "dendrites": int(mv["num_dendrites_added"]),
        "history": history, "peak_memory_mb": None, "restart_epochs": restarts,
        "best_epoch": best_epoch,
    }


def _wrapped_model(args: dict[str, Any], GPA, UPA):  # pragma: no cover - runs in the child
    """The run's data and its standard model, wrapped by perforatedai (configured not to ask)."""
    import torch

    from perforate.experiments.data.datasets import load_dataset
    from perforate.experiments.data.models import build_model

    for name, value in (("configuration_confirmed", True), ("testing_dendrite_capacity", False),
                        ("unwrapped_modules_confirmed", True)):
        getattr(GPA.pc, f"set_{name}")(value)
    data = load_dataset(args["dataset"], seed=args["seed"], train_fraction=args["train_fraction"])
    model = build_model(args["model"], data, args["width"], seed=args["seed"])
    torch.manual_seed(args["seed"])  # the reference draws its dendrites from the global RNG
    model = UPA.perforate_model(model, doing_pai=True, save_name="PAI", making_graphs=True,
                                maximizing_score=True)
    return data, model


def _train_loop(args: dict[str, Any], data, model, GPA):  # pragma: no cover - runs in the child
    """perforatedai's own loop: train, report the validation score, restructure when it says
    so (a fresh optimizer), until it is done or the budget runs out.

    Returns (model, history rows, restart epochs, whether perforatedai finished, seconds)."""
    import torch

    from perforate.experiments.harness.train import _Epochs, _evaluate

    GPA.pai_tracker.set_optimizer(torch.optim.Adam)
    opt_args = {"lr": args["lr"], "weight_decay": args["weight_decay"]}

    def optimizer_for(net):
        optimizer, _ = GPA.pai_tracker.setup_optimizer(net, {"params": net.parameters(), **opt_args})
        return optimizer

    optimizer = optimizer_for(model)
    epochs = _Epochs(data, args["batch_size"], args["seed"], torch.device("cpu"))
    history, restarts = [], []
    complete = False
    start = time.perf_counter()
    for epoch in range(args["max_epochs"]):
        t = time.perf_counter()
        train_loss, train_score, _ = epochs.train(model, optimizer, measure_memory=False)
        val, val_loss = _evaluate(model, data, data.x_val, data.y_val)
        model, restructured, complete = GPA.pai_tracker.add_validation_score(val, model)[:3]
        event = "done" if complete else ("restructured" if restructured else "")
        history.append({"epoch": epoch, "val_score": val, "val_loss": val_loss, "train_loss": train_loss,
                        "train_score": train_score, "event": event, "seconds": time.perf_counter() - t,
                        "dendrites": int(GPA.pai_tracker.member_vars["num_dendrites_added"])})
        if complete:
            break
        if restructured:
            optimizer = optimizer_for(model)
            restarts.append(epoch + 1)
    return model, history, restarts, complete, time.perf_counter() - start


if __name__ == "__main__":  # pragma: no cover
    result = _child(json.loads(sys.stdin.read()))
    print(_RESULT + json.dumps(result), flush=True)

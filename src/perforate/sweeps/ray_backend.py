"""Run a sweep on Ray Tune: local Ray by default, ``address`` to join a running cluster.

Tune does all the scheduling: trials run as Tune trials with ``cpus_per_trial`` /
``gpus_per_trial`` resources, ASHA (``ray.tune.schedulers.ASHAScheduler``) stops hopeless trials
from the per-epoch validation scores, and hyperparameters come from Tune's Optuna searcher
(``ray.tune.search.optuna.OptunaSearch``) with the same sampler and distributions as the Optuna
backend. Records land in the same ``trials.jsonl`` / ``results.json`` format.

Experiments live in ``OUT/ray/tune-<i>``, listed in ``OUT/ray/experiments.json``. Running the
command again first finishes an interrupted experiment with Tune's own
``Tuner.restore``; if more trials are asked for than exist, a new experiment runs the missing
ones, its searcher warm-started with the finished trials. Trials reuse baselines through
``OUT/baselines`` (shared when the cluster shares that file system; otherwise each node trains
its own, which is correct but slower).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..errors import ExperimentError, require_extra
from ..files import write_json
from .space import SweepSpace
from .trial import BaselineCache, TrialRecord, run_trial, trial_data, write_results

BACKEND = "ray"
_INDEX = "experiments.json"


def _train(config: dict[str, Any], space: SweepSpace, data: Any, cache_dir: str) -> None:
    """The Tune trainable: one paired trial, one ``tune.report`` per dendritic epoch."""
    import torch
    from ray import tune

    bundles = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(bundles.get("CPU", 1))))
    hyper = space.resolve({p.name: p.cast(config[p.name]) for p in space.searched})

    def report(epoch: int, objective: float, partial: TrialRecord) -> None:
        pruned = {**partial.to_dict(), "state": "PRUNED",
                  "dendritic": {"epochs": epoch + 1, "val": partial.intermediate[-1]}}
        tune.report({"objective": objective, "epoch": epoch, "partial": json.dumps(pruned)})

    record = run_trial(space, -1, hyper, data, BaselineCache(cache_dir), report=report,
                       backend=BACKEND)
    tune.report({"objective": record.value, "epoch": record.dendritic["epochs"],
                 "record": json.dumps(record.to_dict())})


def _number(trial: Any, offset: int) -> int:
    # Tune's searcher tags trials "<counter>_<params>", counting from 1 in creation order.
    return offset + int(str(trial.experiment_tag).split("_", 1)[0]) - 1


def trial_record(trial: Any, space: SweepSpace, offset: int,
                 status: str | None = None) -> TrialRecord | None:
    """The record of a finished Tune trial (None while it is pending or running).

    ``status`` overrides ``trial.status`` (Tune calls ``on_trial_complete`` before it marks the
    trial TERMINATED).
    """
    status = status or str(trial.status)
    number = _number(trial, offset)
    last = trial.last_result or {}
    if status == "ERROR":
        hyper = space.resolve({p.name: p.cast(trial.config[p.name]) for p in space.searched
                               if p.name in trial.config})
        error = "trial errored"
        if trial.error_file and Path(trial.error_file).exists():
            lines = Path(trial.error_file).read_text().strip().splitlines()
            error = lines[-1] if lines else error
        return TrialRecord(number, "FAIL", hyper, error=error, backend=BACKEND)
    if status != "TERMINATED":
        return None
    if "record" in last:
        record = TrialRecord.from_dict(json.loads(last["record"]))
    elif "partial" in last:  # stopped by the scheduler
        record = TrialRecord.from_dict(json.loads(last["partial"]))
    else:
        return None
    record.number = number
    if not record.seconds:  # stopped by the scheduler before the trial could time itself
        record.seconds = float(last.get("time_total_s", 0.0))
    return record


def _recorder(space: SweepSpace, out: Path, offset: int, earlier: list[TrialRecord],
              on_record: Callable[[TrialRecord], None] | None) -> Any:
    from ray import tune

    class Recorder(tune.Callback):
        """Rewrites the results files and calls ``on_record`` as each trial finishes.

        Tune pickles its callbacks with the experiment; ``on_record`` is left out so a restored
        experiment never calls a stale function (``run_ray`` reports restored trials itself).
        All state is held in attributes: the class has no closure to drag along.
        """

        def __init__(self, space, out, offset, earlier, on_record) -> None:
            self.space, self.out, self.offset = space, out, offset
            self.earlier = [r.to_dict() for r in earlier]
            self.live: dict[int, dict[str, Any]] = {}
            self.on_record = on_record

        def __getstate__(self) -> dict[str, Any]:
            return {**self.__dict__, "on_record": None}

        def _finished(self, trial: Any, status: str) -> None:
            record = trial_record(trial, self.space, self.offset, status)
            if record is None:
                return
            self.live[record.number] = record.to_dict()
            rows = self.earlier + list(self.live.values())
            write_results(self.out, self.space, BACKEND, [TrialRecord.from_dict(r) for r in rows])
            if self.on_record is not None:
                self.on_record(record)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any):
            self._finished(trial, "TERMINATED")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any):
            self._finished(trial, "ERROR")

    return Recorder(space, out, offset, earlier, on_record)


def _read_index(root: Path, space: SweepSpace) -> dict[str, Any]:
    current = space.identity()
    path = root / _INDEX
    if not path.exists():
        return {"sweep": current, "experiments": []}
    index = json.loads(path.read_text())
    stored = {k: v for k, v in index.get("sweep", {}).items() if k != "description"}
    if stored != current:
        raise ExperimentError(
            f"{root.parent} already holds sweep '{space.name}' made from a different config; "
            "use a new --out folder, or restore the config it was made with to resume it")
    return index


def _collect(path: Path, space: SweepSpace, offset: int) -> list[TrialRecord]:
    from ray.tune import ExperimentAnalysis

    if not path.exists():
        return []
    analysis = ExperimentAnalysis(str(path))
    records = [trial_record(t, space, offset) for t in analysis.trials]
    return [r for r in records if r is not None]


def run_ray(space: SweepSpace, trials: int, out: str | Path, *, address: str | None = None,
            cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
            num_cpus: int | None = None, data: Any = None,
            on_record: Callable[[TrialRecord], None] | None = None,
            callbacks: Sequence[Any] = (), verbose: int = 1) -> list[TrialRecord]:
    """Run the sweep on Ray Tune until ``trials`` trials are finished in ``out``.

    Without ``address``, starts a local Ray (``num_cpus``, default 2, no dashboard) and shuts it
    down afterwards; with ``address``, joins that cluster. An already initialised Ray is used
    as it is. ``callbacks``: extra ``ray.tune.Callback`` objects for new experiments (Tune keeps
    them with the experiment and restores them with it). An interrupted run (Ctrl+C) returns
    the trials finished so far; calling again resumes.
    """
    ray = require_extra("ray", "ray")
    require_extra("optuna", "optuna")
    from ray import tune

    if cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise ExperimentError(f"cpus_per_trial must be > 0 and gpus_per_trial >= 0; got "
                              f"{cpus_per_trial} and {gpus_per_trial}")
    out = Path(out).resolve()
    root = out / "ray"
    root.mkdir(parents=True, exist_ok=True)
    index = _read_index(root, space)
    with _ray_running(ray, address, num_cpus):
        data = data if data is not None else trial_data(space)
        trainable = tune.with_resources(
            tune.with_parameters(_train, space=space, data=data, cache_dir=str(out / "baselines")),
            {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        records = _finish_experiments(root, index, space, trainable, on_record)
        offset = sum(exp["num_samples"] for exp in index["experiments"])  # trial numbers used
        remaining = trials - len(records)
        if remaining > 0:
            name = f"tune-{len(index['experiments'])}"
            index["experiments"].append({"name": name, "num_samples": remaining})
            write_json(root / _INDEX, index, indent=1)
            recorder = _recorder(space, out, offset, records, on_record)
            _tuner(root / name, space, trainable, records, remaining, offset,
                   [recorder, *callbacks], verbose).fit()
            records += _collect(root / name, space, offset)
        write_results(out, space, BACKEND, records)
        return sorted(records, key=lambda r: r.number)


@contextmanager
def _ray_running(ray: Any, address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Use the running Ray, or start one (local, or joined to ``address``) for the block."""
    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus or 2, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


def _finish_experiments(root: Path, index: dict[str, Any], space: SweepSpace, trainable: Any,
                        on_record: Callable[[TrialRecord], None] | None) -> list[TrialRecord]:
    """The records of every experiment in the index, finishing interrupted ones first."""
    from ray import tune

    records: list[TrialRecord] = []
    offset = 0  # the first trial number of each experiment
    for exp in index["experiments"]:
        path = root / exp["name"]
        found = _collect(path, space, offset)
        if len(found) < exp["num_samples"] and tune.Tuner.can_restore(str(path)):
            tune.Tuner.restore(str(path), trainable, resume_unfinished=True).fit()
            before = {r.number for r in found}
            found = _collect(path, space, offset)
            for r in found:
                if r.number not in before and on_record is not None:
                    on_record(r)
        records += found
        offset += exp["num_samples"]
    return records


def _tuner(path: Path, space: SweepSpace, trainable: Any, records: list[TrialRecord],
           num_samples: int, offset: int, callbacks: list[Any], verbose: int) -> Any:
    """A new Tune experiment of ``num_samples`` trials, its Optuna searcher warm-started with
    the finished ``records`` and ASHA (or FIFO) scheduling."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from .optuna_backend import _sampler, distribution

    mode = "max" if space.maximize else "min"
    searcher = OptunaSearch(
        space={p.name: distribution(p) for p in space.searched}, metric="objective", mode=mode,
        sampler=_sampler(optuna, space, space.experiment.seed + offset))
    for r in records:
        if r.state == "COMPLETE":
            point = {p.name: r.hyperparameters[p.name] for p in space.searched}
            searcher.add_evaluated_point(point, r.value)
    et = space.early_terminate
    scheduler = FIFOScheduler()
    if et.enabled:
        scheduler = ASHAScheduler(time_attr="training_iteration", grace_period=et.min_iter,
                                  max_t=space.experiment.max_epochs + 1, reduction_factor=et.eta)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, metric="objective",
                                    num_samples=num_samples, mode=mode, reuse_actors=True),
        run_config=tune.RunConfig(name=path.name, storage_path=str(path.parent), verbose=verbose,
                                  callbacks=callbacks))

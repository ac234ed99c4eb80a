"""Run a sweep on one machine with Optuna.

TPE (``method: bayes``), random or grid sampling; Optuna's MedianPruner stops hopeless trials
from the per-epoch validation scores of the dendritic run. The study lives in
``OUT/optuna.db`` (SQLite), so running the same command again resumes: finished trials (complete,
pruned, or failed with an error) are kept and only the missing ones run. A trial cut off by an
interruption is not counted and is run afresh (with new hyperparameters).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..errors import ExperimentError, require_extra
from .space import Parameter, SweepSpace
from .trial import BaselineCache, TrialRecord, TrialStopped, run_trial, trial_data, write_results

BACKEND = "optuna"


def suggest(trial: Any, param: Parameter) -> Any:
    """Sample ``param`` with the matching ``trial.suggest_*`` call; returns the typed value."""
    name, dist = param.name, param.distribution
    if dist == "categorical":
        return trial.suggest_categorical(name, list(param.values))
    lo, hi = param.bounds()
    if dist == "int_uniform":
        return trial.suggest_int(name, int(lo), int(hi))
    if dist == "log_uniform_values" and param.is_int:
        return trial.suggest_int(name, int(lo), int(hi), log=True)
    if dist == "q_uniform":
        return param.cast(trial.suggest_float(name, lo, hi, step=param.q))
    log = dist in ("log_uniform_values", "log_uniform", "q_log_uniform_values")
    return param.cast(trial.suggest_float(name, lo, hi, log=log))


def distribution(param: Parameter) -> Any:
    """The Optuna distribution ``suggest`` samples ``param`` from (for importance analysis)."""
    import optuna.distributions as d

    if param.distribution == "categorical":
        return d.CategoricalDistribution(list(param.values))
    lo, hi = param.bounds()
    if param.distribution == "int_uniform":
        return d.IntDistribution(int(lo), int(hi))
    if param.distribution == "log_uniform_values" and param.is_int:
        return d.IntDistribution(int(lo), int(hi), log=True)
    if param.distribution == "q_uniform":
        return d.FloatDistribution(lo, hi, step=param.q)
    return d.FloatDistribution(lo, hi, log=param.log)


def _sampler(optuna: Any, space: SweepSpace, seed: int) -> Any:
    if space.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if space.method == "grid":
        grid = {}
        for p in space.searched:
            if p.distribution == "categorical":
                grid[p.name] = list(p.values)
            else:
                grid[p.name] = list(range(int(p.min), int(p.max) + 1))
        return optuna.samplers.GridSampler(grid, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(optuna: Any, space: SweepSpace) -> Any:
    et = space.early_terminate
    if not et.enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=et.startup_trials,
                                       n_warmup_steps=et.min_iter)


def counted(trial: Any) -> bool:
    """Whether a stored trial is finished for good (an interrupted one is not)."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return "record" in trial.user_attrs
    return trial.state == TrialState.FAIL and "record" in trial.user_attrs


def records_of(study: Any) -> list[TrialRecord]:
    """The finished trials of ``study`` as records, in trial order."""
    return [TrialRecord.from_dict(t.user_attrs["record"]) for t in study.trials if counted(t)]


def open_study(space: SweepSpace, out: Path, seed_offset: int = 0) -> Any:
    """Create or load the study in ``out/optuna.db``; refuse one made from another config."""
    optuna = require_extra("optuna", "optuna")
    out.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(out / 'optuna.db').resolve()}"
    study = optuna.create_study(study_name=space.name, storage=storage, direction=space.goal,
                                load_if_exists=True, pruner=_pruner(optuna, space))
    # A resumed sweep gets a fresh seed so its random start-up samples do not repeat old ones.
    seed = space.experiment.seed + len(study.trials) + seed_offset
    study.sampler = _sampler(optuna, space, seed)
    stored = study.user_attrs.get("sweep")
    current = space.identity()
    if stored is None:
        study.set_user_attr("sweep", current)
    elif {k: v for k, v in stored.items() if k != "description"} != current:
        raise ExperimentError(
            f"{out} already holds sweep '{space.name}' made from a different config; use a new "
            "--out folder, or restore the config it was made with to resume it")
    return study


def run_optuna(space: SweepSpace, trials: int, out: str | Path, *, data: Any = None,
               on_record: Callable[[TrialRecord], None] | None = None) -> list[TrialRecord]:
    """Run the sweep until ``trials`` trials are finished in ``out``; return all records.

    ``on_record`` is called after each new trial is stored (it may raise to stop the sweep; the
    finished trials stay stored).
    """
    optuna = require_extra("optuna", "optuna")
    out = Path(out)
    study = open_study(space, out)
    remaining = trials - len(records_of(study))
    if remaining > 0:
        data = data if data is not None else trial_data(space)
        cache = BaselineCache(out / "baselines")

        def objective(trial: Any) -> float:
            hyper = space.resolve({p.name: suggest(trial, p) for p in space.searched})

            def report(epoch: int, value: float, _: TrialRecord) -> None:
                trial.report(value, epoch)
                if trial.should_prune():
                    raise TrialStopped()

            try:
                record = run_trial(space, trial.number, hyper, data, cache, report=report,
                                   backend=BACKEND)
            except Exception as exc:
                failed = TrialRecord(trial.number, "FAIL", hyper, backend=BACKEND,
                                     error=f"{type(exc).__name__}: {exc}")
                trial.set_user_attr("record", failed.to_dict())
                raise
            trial.set_user_attr("record", record.to_dict())
            if record.state == "PRUNED":
                raise optuna.TrialPruned()
            return record.value

        def after_trial(study: Any, frozen: Any) -> None:
            if not counted(frozen):
                return
            write_results(out, space, BACKEND, records_of(study))
            if on_record is not None:
                on_record(TrialRecord.from_dict(frozen.user_attrs["record"]))

        study.optimize(objective, n_trials=remaining, catch=(Exception,), callbacks=[after_trial])
    records = records_of(study)
    write_results(out, space, BACKEND, records)
    return records

"""Sweeps: config parsing, paired baselines, resume, report, on Optuna and Ray Tune."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from perforate.errors import ConfigError
from perforate.sweeps import load_space, read_results, run_sweep, space_from_dict
from perforate.sweeps.report import PLOTS, write_report
from perforate.sweeps.trial import TrialRecord

TINY = {
    "name": "tiny",
    "method": "bayes",
    "metric": {"name": "val_score", "goal": "maximize"},
    "experiment": {"dataset": "mnist1d", "model": "mlp", "width": 8, "max_epochs": 3,
                   "train_fraction": 0.2, "batch_size": 128, "seed": 0},
    "early_terminate": {"min_iter": 1, "startup_trials": 1, "eta": 2},
    "parameters": {
        "mode": {"values": ["gd", "pb"]},
        "patience": {"min": 1, "max": 2},
        "init_scale": {"min": 0.1, "max": 1.0, "distribution": "log_uniform_values"},
        "lr": {"values": [0.003, 0.01]},
        "compressed_width": {"value": 8},
    },
}
REPORT_FILES = ("report.md", "trials.jsonl", "results.json") + PLOTS


def _write_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    return path


def _check_pairing(records: list[TrialRecord]) -> None:
    for r in records:
        assert r.baseline["val"] is not None and r.baseline["params"] > 0
        if r.state == "COMPLETE":
            assert r.improvement["val"] == pytest.approx(r.dendritic["val"] - r.baseline["val"])
            assert r.improvement["test"] == pytest.approx(r.dendritic["test"] - r.baseline["test"])
            assert r.value == r.dendritic["val"]


# ---------------------------------------------------------------- config


def test_space_reads_wandb_shaped_config(tmp_path):
    space = load_space(_write_config(tmp_path))
    assert (space.method, space.metric, space.goal) == ("bayes", "val_score", "maximize")
    assert space.experiment.width == 8 and space.experiment.max_epochs == 3
    kinds = {p.name: (p.kind, p.distribution) for p in space.parameters}
    assert kinds == {"mode": ("dendrite", "categorical"), "patience": ("dendrite", "int_uniform"),
                     "init_scale": ("dendrite", "log_uniform_values"),
                     "lr": ("model", "categorical"), "width": ("dendrite", "constant")}
    assert [p.name for p in space.searched] == ["mode", "patience", "init_scale", "lr"]
    hyper = space.resolve({"mode": "pb", "patience": 2, "init_scale": 0.5, "lr": 0.01})
    assert hyper["width"] == 8 and hyper["batch_size"] == 128 and hyper["lr"] == 0.01
    toml = tmp_path / "tiny.toml"
    toml.write_text('method = "random"\n[metric]\nname = "improvement"\n'
                    '[parameters.max_dendrites]\nvalues = [1, 2]\n')
    assert load_space(toml).metric == "improvement"


@pytest.mark.parametrize("change, names", [
    ({"parameters": {"learning_rate": {"values": [0.1]}}}, "parameters.learning_rate"),
    ({"parameters": {"mode": {"values": ["gd", "xx"]}}}, "parameters.mode"),
    ({"parameters": {"lr": {"min": 0.1, "max": 0.01}}}, "parameters.lr"),
    ({"parameters": {"lr": {"min": 0, "max": 0.1, "distribution": "log_uniform_values"}}},
     "parameters.lr"),
    ({"parameters": {"patience": {"min": 1.5, "max": 4.0}}}, "parameters.patience"),
    ({"parameters": {"init_scale": {"min": 0.1, "max": 1, "distribution": "gaussian"}}},
     "parameters.init_scale"),
    ({"parameters": {"max_dendrites": {"values": [1], "step": 2}}}, "parameters.max_dendrites"),
    ({"parameters": {"width": {"values": [0, 8]}}}, "parameters.width"),
    ({"metric": {"name": "accuracy", "goal": "maximize"}}, "metric.name"),
    ({"experiment": {"dataset": "imagenet"}}, "experiment.dataset"),
    ({"experiment": {"epochs": 3}}, "epochs"),
    ({"method": "bohb"}, "method"),
    ({"early_terminate": {"min_iter": 0}}, "early_terminate.min_iter"),
])
def test_bad_entries_raise_config_error_naming_the_entry(change, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        space_from_dict({**TINY, **change})


# ---------------------------------------------------------------- optuna


def test_optuna_sweep_pairs_baselines_resumes_and_reports(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    from typer import Typer
    from typer.testing import CliRunner

    import perforate.experiments.harness.train as train
    from perforate.sweeps.cli import sweep_command

    calls = {"baseline": 0, "dendritic": 0, "interrupt_at": None}
    real = train.train_model

    def counting(*args, **kwargs):
        calls["dendritic" if kwargs.get("mode") else "baseline"] += 1
        if kwargs.get("mode") and calls["dendritic"] == calls["interrupt_at"]:
            raise KeyboardInterrupt  # Ctrl+C in the middle of a trial
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "train_model", counting)
    config, out = _write_config(tmp_path), tmp_path / "sweep"

    app = Typer()
    app.command("sweep")(sweep_command)
    app.command("other")(lambda: None)  # a multi-command app, as in the perforate CLI
    result = CliRunner().invoke(app, ["sweep", str(config), "--backend", "optuna",
                                      "--trials", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(read_results(out)) == 2 and calls["dendritic"] == 2
    first = {r.number: r.to_dict() for r in read_results(out)}

    calls["interrupt_at"] = 3
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, backend="optuna", trials=4, out=out)
    assert len(read_results(out)) == 2, "the interrupted trial must not count as finished"

    summary = run_sweep(config, backend="optuna", trials=4, out=out)
    records = summary["records"]
    assert calls["dendritic"] == 5, "resume must run only the two missing trials"
    assert [r.number for r in records] == [0, 1, 3, 4]  # 2 was cut off and is not counted
    assert all(first[r.number] == r.to_dict() for r in records if r.number in first)
    assert {r.state for r in records} <= {"COMPLETE", "PRUNED"}
    _check_pairing(records)
    # one baseline per distinct model setting (lr here); every other trial reused it
    assert calls["baseline"] <= len(TINY["parameters"]["lr"]["values"])
    trained = [r.hyperparameters["lr"] for r in records if not r.baseline["reused"]]
    assert len(trained) == len(set(trained))
    for name in REPORT_FILES:
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert report.splitlines()[0].startswith("# Sweep `tiny`")
    assert "perforate sweep" in report and "## Best trials" in report
    stored = json.loads((out / "results.json").read_text())
    assert stored["backend"] == "optuna" and len(stored["trials"]) == 4

    changed = {**TINY, "experiment": {**TINY["experiment"], "max_epochs": 5}}
    config.write_text(yaml.safe_dump(changed))
    with pytest.raises(Exception, match="different config"):
        run_sweep(config, backend="optuna", trials=5, out=out)


# ---------------------------------------------------------------- report


def _synthetic(n: int = 8) -> list[TrialRecord]:
    rows = []
    for i in range(n):
        mode, patience = ("gd", "pb")[i % 2], 1 + (i // 2) % 2
        val = 70 + 3 * (mode == "pb") + patience + 0.1 * i
        base = 71.0
        rows.append(TrialRecord(
            number=i, state="PRUNED" if i == n - 1 else "COMPLETE",
            hyperparameters={"mode": mode, "patience": patience, "init_scale": 0.1 + 0.1 * i,
                             "lr": (0.003, 0.01)[i % 2], "width": 8, "batch_size": 128,
                             "weight_decay": 0.0},
            value=val, backend="ray",
            dendritic={"val": val, "test": val - 1, "params": 600, "dendrites": i % 3},
            baseline={"val": base, "test": base - 1, "params": 490, "reused": i > 1},
            improvement={"val": val - base, "test": val - base, "params_ratio": 1.2,
                         "rer_test": 0.1}, seconds=1.0))
    return rows


def test_report_has_importance_and_logs_to_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    space = space_from_dict(TINY)
    write_report(tmp_path, space, _synthetic(), backend="ray", command="perforate sweep x",
                 wandb=True)
    text = (tmp_path / "report.md").read_text()
    assert "## Importance of each hyperparameter" in text and "fANOVA" in text
    assert "| mode | dendrite |" in text
    assert "mode: gd" not in text  # effects are listed per value as "gd: +x (n=..)"
    assert "gd: " in text and "pb: " in text
    for name in PLOTS:
        assert (tmp_path / name).stat().st_size > 0
    assert list((tmp_path / "wandb").glob("offline-run-*")), "no offline W&B run written"


# ---------------------------------------------------------------- ray


class _InterruptOnce:
    """A Tune callback that sends Ctrl+C once two trials have finished (first run only)."""

    def __init__(self, marker: Path):
        self.marker, self.done = marker, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        if self.done == 2 and not self.marker.exists():
            self.marker.write_text("interrupted")
            os.kill(os.getpid(), signal.SIGINT)


def test_ray_trials_become_records_in_the_optuna_format(tmp_path):
    """Tune trial -> record conversion, without starting Ray (the full run is marked slow)."""
    from types import SimpleNamespace

    from perforate.sweeps.ray_backend import trial_record

    space = space_from_dict(TINY)
    done = _synthetic(2)[0]
    partial = TrialRecord(-1, "PRUNED", done.hyperparameters, intermediate=[50.0],
                          baseline=done.baseline, dendritic={"epochs": 1, "val": 50.0})

    def fake(tag, status, last, error_file=None):
        return SimpleNamespace(experiment_tag=tag, status=status, last_result=last,
                               config={"mode": "pb", "patience": 2, "init_scale": 0.5,
                                       "lr": 0.01}, error_file=error_file)

    complete = trial_record(fake("1_mode=gd", "TERMINATED",
                                 {"record": json.dumps(done.to_dict())}), space, offset=4)
    assert complete.number == 4 and complete.to_dict() == {**done.to_dict(), "number": 4}
    pruned = trial_record(fake("2_x", "TERMINATED", {"partial": json.dumps(partial.to_dict()),
                                                     "time_total_s": 3.5}), space, offset=4)
    assert (pruned.number, pruned.state, pruned.seconds) == (5, "PRUNED", 3.5)
    log = tmp_path / "error.txt"
    log.write_text("Traceback ...\nValueError: boom")
    failed = trial_record(fake("3_x", "ERROR", {}, str(log)), space, offset=4)
    assert (failed.number, failed.state, failed.error) == (6, "FAIL", "ValueError: boom")
    assert failed.hyperparameters["init_scale"] == 0.5 and failed.hyperparameters["width"] == 8
    assert trial_record(fake("4_x", "RUNNING", {"partial": "{}"}), space, offset=4) is None


@pytest.mark.slow  # ~45 s on an idle 2-core machine, 2+ minutes on a busy one (Ray start-up)
def test_ray_sweep_pairs_baselines_resumes_and_reports(tmp_path):
    pytest.importorskip("ray")
    from ray import tune

    from perforate.sweeps.ray_backend import run_ray

    class InterruptOnce(_InterruptOnce, tune.Callback):
        pass

    import ray

    space = load_space(_write_config(tmp_path))
    out = tmp_path / "ray-sweep"
    ray.init(num_cpus=2, include_dashboard=False)  # one local Ray for both runs (saves a start)
    try:
        first = run_ray(space, 4, out, verbose=0,
                        callbacks=[InterruptOnce(tmp_path / "interrupted")])
        assert (tmp_path / "interrupted").exists()
        assert 2 <= len(first) < 4
        summary = run_sweep(space, backend="ray", trials=4, out=out)
    finally:
        ray.shutdown()
    records = summary["records"]
    assert [r.number for r in records] == [0, 1, 2, 3]
    before = {r.number: r.to_dict() for r in first}
    assert all(before[r.number] == r.to_dict() for r in records if r.number in before)
    trial_dirs = [d for d in (out / "ray").glob("tune-*/_train_*") if d.is_dir()]
    assert len(trial_dirs) == 4, "resume must not repeat finished trials"
    assert {r.state for r in records} <= {"COMPLETE", "PRUNED"}
    assert {r.backend for r in records} == {"ray"}
    _check_pairing(records)
    for name in REPORT_FILES:
        assert (out / name).stat().st_size > 0, name
    optuna_keys = set(TrialRecord(0, "COMPLETE", {}).to_dict())
    assert all(set(json.loads(line)) == optuna_keys
               for line in (out / "trials.jsonl").read_text().splitlines())


def test_candidate_steps_sweeps_as_an_integer_or_auto():
    """``Config.candidate_steps`` defaults to "auto" (issue 26) but is an integer parameter: an
    integer range sweeps, a float range is refused, and "auto" is one of its values."""
    space = space_from_dict({**TINY, "parameters": {"candidate_steps": {"min": 10, "max": 40}}})
    assert space.parameters[0].distribution == "int_uniform"
    with pytest.raises(ConfigError, match="candidate_steps is an integer"):
        space_from_dict({**TINY, "parameters": {"candidate_steps": {"min": 10.0, "max": 40.0}}})
    space_from_dict({**TINY, "parameters": {"candidate_steps": {"values": ["auto", 20]}}})

"""The evidence harness: training loop, arms, metric definitions, resume, CLI, report."""
from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import perforate as pf
from perforate.errors import ExperimentError
from perforate.experiments.harness import results as res
from perforate.experiments.bench.arms import ARMS, Protocol, ProtocolHooks, plan_runs, run_protocol
from perforate.cli import app
from perforate.experiments.datasets import dataset_names, load_dataset
from perforate.experiments.models import build_model
from perforate.experiments.bench.render import render_report
from perforate.experiments.harness.train import TrainResult, train_model

runner = CliRunner()

# a model each dataset accepts, and a tiny width for it
TINY_MODEL = {"mnist1d": ("mlp", 8), "digits": ("cnn2d", 4), "mnist5k": ("cnn2d", 2),
              "spirals": ("mlp", 8), "breast_cancer": ("mlp", 8), "wine": ("mlp", 8),
              "diabetes": ("mlp", 8)}


def tiny(dataset="spirals", **kw) -> Protocol:
    model, width = TINY_MODEL[dataset]
    base = dict(dataset=dataset, model=model, width=width, seeds=[0], max_epochs=3, patience=1,
                latency_repeats=1, batch_size=128, run_outputs=False)
    return Protocol(**{**base, **kw})


# ---------------------------------------------------------------------------- train_model
@pytest.fixture(scope="module")
def spirals():
    return load_dataset("spirals", seed=0)


@pytest.mark.parametrize("mode", [None, "gd", "pb"])
def test_train_model_scores_once_and_is_deterministic(spirals, mode):
    seen = []
    kw = dict(mode=mode, config=pf.Config(patience=1), max_epochs=4, seed=3, batch_size=128)
    a = train_model(spirals, "mlp", 8, epoch_callback=lambda e, s: seen.append((e, s)), **kw)
    b = train_model(spirals, "mlp", 8, **kw)
    assert a.test_score == b.test_score and a.val_score == b.val_score
    assert a.epochs == len(a.history) == len(seen) <= 4
    assert [e for e, _ in seen] == list(range(a.epochs))
    assert 0.0 <= a.test_score <= 100.0
    assert a.val_score == max(s for _, s in seen) or mode is not None
    assert a.params == pf.count_parameters(a.model) and a.nonzero_params <= a.params
    assert a.flops_per_sample > 0 and a.peak_memory_mb > 0
    doc = a.to_dict()
    assert "model" not in doc
    json.dumps(doc)  # JSON-able
    assert TrainResult.from_dict(doc).test_score == a.test_score


def test_plain_training_keeps_best_validation_weights(spirals):
    r = train_model(spirals, "mlp", 8, max_epochs=6, batch_size=128, seed=1)
    best = max(row["val_score"] for row in r.history)
    assert r.val_score == best
    assert r.best_epoch == max(range(len(r.history)), key=lambda i: (r.history[i]["val_score"], -i))


@pytest.mark.parametrize("mode", [None, "gd"])
def test_monitor_loss_keeps_the_lowest_validation_loss(spirals, mode):
    r = train_model(spirals, "mlp", 8, mode=mode, max_epochs=5, monitor="loss", batch_size=128,
                    config=pf.Config(patience=2))
    losses = [row["val_loss"] for row in r.history]
    # the grower counts an improvement only beyond its relative threshold (1e-4)
    assert losses[r.best_epoch] <= min(losses) * (1 + 1e-3)
    assert r.val_score == r.history[r.best_epoch]["val_score"]
    with pytest.raises(ExperimentError, match="monitor"):
        train_model(spirals, "mlp", 8, monitor="accuracy")


def test_epoch_callback_can_stop_a_run(spirals):
    class Stop(Exception):
        pass

    def cb(epoch, score):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train_model(spirals, "mlp", 8, mode="gd", max_epochs=10, epoch_callback=cb)


def test_fixed_budget_and_optimizer_restarts(spirals):
    r = train_model(spirals, "mlp", 8, max_epochs=5, early_stopping=False, restart_epochs=[2, 4],
                    config=pf.Config(patience=1))
    assert r.epochs == 5 and r.restart_epochs == [2, 4]


def test_regression_score_is_r2_percent():
    data = load_dataset("diabetes", seed=0)
    r = train_model(data, "mlp", 8, max_epochs=3)
    assert r.test_score <= 100.0  # R² x 100: can be negative, never above 100


def test_train_model_rejects_bad_arguments(spirals):
    with pytest.raises(ExperimentError, match="mode"):
        train_model(spirals, "mlp", 8, mode="xx")
    with pytest.raises(ExperimentError, match="max_epochs"):
        train_model(spirals, "mlp", 8, max_epochs=0)


# ---------------------------------------------------------------------------- every arm, every dataset
@pytest.mark.parametrize("dataset", dataset_names())
def test_every_arm_runs_on_every_dataset(tmp_path, dataset):
    # one dataset writes every run output (growth graphs), the others skip the plotting
    ours = [arm for arm in ARMS if arm != "reference"]  # the reference arm: test_frontier.py
    doc = run_protocol(tiny(dataset, arms=ours, batch_size=256,
                            max_epochs=1 if dataset == "mnist5k" else 2,
                            run_outputs=dataset == "spirals"), tmp_path)
    runs = {r["arm"]: r for r in doc["runs"]}
    assert set(runs) == set(ours)
    for r in runs.values():
        for metric in ("test_score", "val_score", "params", "nonzero_params", "flops_per_sample",
                       "epochs", "seconds", "peak_memory_mb", "latency_b1_ms", "latency_b256_ms"):
            assert r[metric] is not None and math.isfinite(r[metric]), (r["arm"], metric)
    block = doc["summary"]["1"]
    assert set(block) == set(ours)
    if dataset == "spirals":
        assert (tmp_path / "runs" / "gd-f1-s0" / "growth.png").exists()


# ---------------------------------------------------------------------------- metric definitions
def test_rer_definition():
    assert res.rer(80.0, 90.0) == pytest.approx(0.5)  # error 20 -> 10
    assert res.rer(80.0, 70.0) == pytest.approx(-0.5)
    runs = [{"arm": "baseline", "fraction": 1.0, "seed": s, "test_score": b}
            for s, b in ((0, 80.0), (1, 90.0))]
    runs += [{"arm": "gd", "fraction": 1.0, "seed": s, "test_score": v}
             for s, v in ((0, 90.0), (1, 90.0))]
    stats = res.derive(runs)["summary"]["1"]["gd"]["rer"]
    # paired by seed: (0.5 + 0.0) / 2
    assert stats["mean"] == pytest.approx(0.25) and stats["n"] == 2


def _seed_compressed(out, protocol, params, epochs=3, restarts=(1, 2)):
    """A results.json already holding a compressed run of a known size."""
    doc = res.open_results(res.prepare_out_dir(out), protocol, "test")
    doc["runs"].append({"run_id": "compressed-f1-s0", "arm": "compressed", "seed": 0,
                        "fraction": 1.0, "width": 4, "test_score": 50.0, "val_score": 50.0,
                        "params": params, "nonzero_params": params, "epochs": epochs,
                        "restart_epochs": list(restarts), "dendrites": 1, "extra": {}})
    res.save_results(out, doc)


def test_control_matches_parameters_epochs_and_restarts(tmp_path):
    protocol = tiny("mnist1d", width=64, arms=["compressed", "control"])
    _seed_compressed(tmp_path, protocol, params=2400, epochs=4, restarts=(2, 3))
    doc = run_protocol(protocol, tmp_path)
    control = next(r for r in doc["runs"] if r["arm"] == "control")
    assert abs(control["params"] - 2400) / 2400 <= 0.05
    assert control["epochs"] == 4 and control["restart_epochs"] == [2, 3]
    assert control["extra"]["target_params"] == 2400


def test_pruned_nonzero_count_equals_compressed_params(tmp_path):
    protocol = tiny("mnist1d", width=32, arms=["baseline", "compressed", "pruned"])
    _seed_compressed(tmp_path, protocol, params=700)
    doc = run_protocol(protocol, tmp_path)
    runs = {r["arm"]: r for r in doc["runs"]}
    pruned = runs["pruned"]
    assert pruned["params"] == runs["baseline"]["params"]  # dense count unchanged
    assert abs(pruned["nonzero_params"] - 700) <= 2
    assert pruned["extra"]["dense_params"] == pruned["params"]
    model = pf.load(tmp_path / "runs" / "pruned-f1-s0" / "model.safetensors",
                    build_model("mlp", load_dataset("mnist1d"), 32))
    assert sum(int(torch.count_nonzero(p)) for p in model.parameters()) == pruned["nonzero_params"]


def test_paired_comparison_counts_and_verdicts():
    c = res.paired("compressed", "control", "1", [(60.0, 50.0), (61.0, 50.0), (59.0, 50.0)])
    assert c["verdict"] == "better" and (c["wins"], c["losses"], c["ties"]) == (3, 0, 0)
    c = res.paired("compressed", "control", "1", [(50.0, 50.0), (51.0, 50.0), (49.0, 50.0)])
    assert c["verdict"] == "no clear difference" and (c["wins"], c["losses"], c["ties"]) == (1, 1, 1)
    c = res.paired("compressed", "control", "1", [(40.0, 50.0)])
    assert "one seed" in c["verdict"]


def test_data_efficiency_reports_smallest_matching_fraction():
    runs = []
    for frac, base, comp in ((0.25, 60.0, 69.0), (0.5, 65.0, 71.0), (1.0, 70.0, 72.0)):
        runs += [{"arm": "baseline", "fraction": frac, "seed": 0, "test_score": base},
                 {"arm": "compressed", "fraction": frac, "seed": 0, "test_score": comp}]
    de = res.derive(runs)["data_efficiency"]
    assert de["arms"]["compressed"]["smallest_matching"] == 0.5
    assert de["arms"]["baseline"]["smallest_matching"] == 1.0


def test_plan_runs_adds_dependencies_and_full_data():
    plan = plan_runs(tiny(arms=["control"], fractions=[0.5], seeds=[0, 1]))
    ids = [s.run_id for s in plan]
    assert ids[:2] == ["compressed-f1-s0", "control-f1-s0"]
    assert "control-f0.5-s1" in ids and len(ids) == 8


# ---------------------------------------------------------------------------- resume
def test_restarted_bench_skips_finished_runs(tmp_path):
    first = run_protocol(tiny(arms=["baseline"]), tmp_path)
    (tmp_path / "runs" / "gd-f1-s0").mkdir()  # an interrupted run left a folder behind
    (tmp_path / "runs" / "gd-f1-s0" / "junk.txt").write_text("x")
    skipped, ran, discarded = [], [], []
    hooks = ProtocolHooks(on_skip=lambda s, r: skipped.append(s.run_id),
                          on_run_end=lambda s, r: ran.append(s.run_id),
                          on_discard=lambda s: discarded.append(s.run_id))
    doc = run_protocol(tiny(arms=["baseline", "gd"]), tmp_path, hooks)
    assert skipped == ["baseline-f1-s0"] and ran == ["gd-f1-s0"] and discarded == ["gd-f1-s0"]
    assert not (tmp_path / "runs" / "gd-f1-s0" / "junk.txt").exists()
    assert doc["runs"][0] == first["runs"][0]
    assert doc["protocol"]["arms"] == ["baseline", "gd"]
    with pytest.raises(ExperimentError, match="different protocol"):
        run_protocol(tiny(arms=["baseline"], width=9), tmp_path)


# ---------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("args, message", [
    (["bench", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["bench", "--model", "nope"], "unknown model 'nope'"),
    (["bench", "--arms", "baseline,nope"], "unknown arm 'nope'"),
    (["bench", "--model", "cnn2d"], "does not accept dataset"),
    (["bench", "--seeds", "0"], "Invalid value for '--seeds'"),
    (["bench", "--epochs", "0"], "Invalid value for '--epochs'"),
    (["demo", "--epochs", "0"], "Invalid value for '--epochs'"),
    (["bench", "--device", "gpu"], "--device 'gpu' is not a torch device"),
    (["report", "missing-folder"], "is not a folder"),
])
def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, args, message):
    out = ["--out", str(tmp_path / "o")] if args[0] in ("bench", "demo") else []
    result = runner.invoke(app, [*args, *out])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and "max_epochs" not in result.output
    assert not (tmp_path / "o").exists()  # nothing left behind


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has CUDA")
def test_cli_cuda_on_a_cpu_build_is_one_line(tmp_path):
    result = runner.invoke(app, ["bench", "--device", "cuda", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error: --device 'cuda': this torch" in result.output and "use cpu" in result.output
    assert not (tmp_path / "o").exists()


def test_a_failed_run_leaves_no_empty_out_folder(tmp_path, monkeypatch):
    import perforate.experiments.bench.arms as arms

    def fail(*args, **kwargs):
        raise ExperimentError("training failed")

    monkeypatch.setattr(arms, "train_model", fail)
    args = ["bench", "--dataset", "spirals", "--width", "8", "--arms", "baseline", "--seeds", "1",
            "--epochs", "2", "--batch-size", "128"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "new")])
    assert result.exit_code == 2 and "training failed" in result.output
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # a folder the user made stays
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "kept")]).exit_code == 2
    assert (tmp_path / "kept").is_dir()


def test_flags_show_no_value_in_help():
    result = runner.invoke(app, ["demo", "--help"], terminal_width=200)
    line = next(line for line in result.output.splitlines() if line.strip().startswith("--fresh"))
    assert line.split()[:2] == ["--fresh", "Discard"]


def test_cli_unwritable_out_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["bench", "--out", str(blocker / "sub")])
    assert result.exit_code == 2
    assert "cannot write to output folder" in result.output


@pytest.mark.parametrize("command, options", [
    ([], ["demo", "bench", "report", "sweep"]),
    (["demo"], ["--out", "--seed", "--epochs", "--threads", "--fresh"]),
    (["bench"], ["--dataset", "--model", "--width", "--arms", "--seeds", "--out", "--epochs",
                 "--patience", "--fractions", "--fraction-arms", "--compressed-width",
                 "--compressed-mode", "--finetune-epochs", "--monitor", "--lr", "--batch-size",
                 "--weight-decay", "--config", "--threads", "--device", "--fresh", "cost"]),
    (["report"], ["FOLDER", "--markdown"]),
])
def test_help_explains_every_option(command, options):
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in options:
        assert option in result.output


def test_cli_bench_then_report_rerenders(tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "--dataset", "spirals", "--width", "8", "--arms", "baseline,compressed,control",
            "--seeds", "2", "--epochs", "2", "--patience", "1", "--batch-size", "128",
            "--fractions", "0.5,1", "--fraction-arms", "baseline,compressed", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "perforate bench: spirals / mlp; 10 training runs (2 seeds, data fractions 100%, 50%)" \
        in result.output
    assert "Estimated time here: at most about" in result.output
    doc = json.loads((out / "results.json").read_text())
    assert doc["command"].startswith("perforate bench --dataset spirals")
    assert {r["run_id"] for r in doc["runs"]} >= {"control-f1-s1", "compressed-f0.5-s0"}
    assert "control-f0.5-s0" not in {r["run_id"] for r in doc["runs"]}
    assert doc["data_efficiency"]["arms"]["compressed"]
    for name in ("report.md", "comparison.png", "data-efficiency.png"):
        (out / name).unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    assert "width-matched control" in text and "| compressed |" in text
    assert (out / "comparison.png").stat().st_size > 0 and (out / "data-efficiency.png").exists()
    assert "![accuracy vs parameters](comparison.png)" in text
    elsewhere = tmp_path / "docs" / "bench.md"
    render_report(out, elsewhere)
    assert "](../bench/comparison.png)" in elsewhere.read_text()
    # the same command again finds everything done
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "skipping control, seed 1: already finished" in again.output


def test_report_rejects_a_folder_without_results(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no results.json" in result.output


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--epochs", "30"])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert {(r["arm"], r["width"]) for r in doc["runs"]} == {
        ("plain", 8), ("plain", 16), ("plain", 32), ("pb", 8)}
    assert "plain frontier" in result.output and "results/frontier.md" in result.output
    assert (tmp_path / "demo" / "report.md").exists()
    rendered = runner.invoke(app, ["report", str(tmp_path / "demo")])
    assert rendered.exit_code == 0 and "report.md" in rendered.output

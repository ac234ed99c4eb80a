"""`perforate bench frontier`: the frontier arithmetic, a tiny end-to-end run, and the reference arm."""
import json
import math

import pytest
from typer.testing import CliRunner

from perforate.errors import ExperimentError
from perforate.experiments.cli import app
from perforate.experiments.frontier import FrontierProtocol, derive, frontier_at, pareto
from perforate.experiments.frontier import report as frontier_report
from perforate.experiments.frontier.cli import parse_variant


def run(arm, width, seed, params, score, flops=None):
    return {"arm": arm, "width": width, "seed": seed, "params": params, "test_score": score,
            "flops_per_sample": flops or 2 * params, "dendrites": 0 if arm == "plain" else 1,
            "epochs": 10, "seconds": 1.0}


def test_pareto_envelope_and_log_interpolation():
    front = pareto([(100, 50.0), (200, 48.0), (400, 60.0), (800, 59.0)])
    assert front == [(100, 50.0), (400, 60.0)]  # dominated widths are not on the frontier
    assert frontier_at(front, 200) == pytest.approx(55.0)  # half-way in log(params)
    assert frontier_at(front, 50) == 50.0 and frontier_at(front, 10_000) == 60.0


def test_distance_to_the_same_seeds_frontier_and_gain_over_the_start_width():
    runs = [run("plain", 4, 0, 100, 50.0), run("plain", 8, 0, 400, 60.0),
            run("plain", 4, 1, 100, 40.0), run("plain", 8, 1, 400, 50.0),
            run("gd", 4, 0, 200, 56.0), run("gd", 4, 1, 200, 44.0)]
    stats = derive(runs)
    assert stats["ladder"]["4"]["test_score"]["mean"] == 45.0
    (point,) = stats["points"]
    # seed 0: frontier at 200 params is 55 -> +1; seed 1: 45 -> -1
    assert point["distance"]["mean"] == pytest.approx(0.0) and point["above"] == 1
    assert point["gain_per_seed"] == [6.0, 4.0] and point["better"] == 2 and point["worse"] == 0


def test_variants_parse_and_bad_protocols_are_refused():
    assert parse_variant("pb-online=pb,candidate_training=online,candidates=4") == \
        ("pb-online", {"mode": "pb", "candidate_training": "online", "candidates": 4})
    assert parse_variant("head=gd,include=5")[1]["include"] == "5"
    with pytest.raises(ExperimentError, match="NAME=MODE"):
        parse_variant("pb")
    with pytest.raises(ExperimentError, match="unknown arm"):
        FrontierProtocol(arms=["nope"])
    with pytest.raises(ExperimentError, match="mode"):
        FrontierProtocol(arms=["x"], variants={"x": {"mode": "plain"}})
    with pytest.raises(Exception, match="candidates"):
        FrontierProtocol(arms=["x"], variants={"x": {"mode": "pb", "candidates": 0}})


def test_tiny_frontier_end_to_end(tmp_path):
    out = tmp_path / "frontier"
    args = ["bench", "frontier", "--dataset", "wine", "--widths", "2,8", "--grow-widths", "2",
            "--arms", "gd,pb-online", "--variant", "pb-online=pb,candidate_training=online",
            "--seeds", "1", "--epochs", "4", "--patience", "1", "--batch-size", "32", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    assert sorted(r["run_id"] for r in doc["runs"]) == [
        "gd-w2-s0", "pb-online-w2-s0", "plain-w2-s0", "plain-w8-s0"]
    assert {p["arm"] for p in doc["frontier"]["points"]} == {"gd", "pb-online"}
    report = (out / "report.md").read_text()
    assert "perforate bench frontier --dataset wine" in report and "distance to plain frontier" in report
    assert (out / "frontier-params.png").stat().st_size > 0 and (out / "frontier-flops.png").exists()
    again = CliRunner().invoke(app, args)  # everything is finished: nothing runs again
    assert again.exit_code == 0 and "[" not in again.stderr
    other = CliRunner().invoke(app, args[:-2] + ["--lr", "0.5", "--out", str(out)])
    assert other.exit_code == 2 and "different protocol" in other.output


@pytest.mark.slow
def test_reference_arm_runs_perforatedai_on_the_same_model(tmp_path):
    pytest.importorskip("perforatedai")
    from perforate.experiments.harness.reference import train_reference

    result = train_reference("wine", "mlp", 4, seed=0, max_epochs=3, lr=1e-2, batch_size=32,
                             folder=tmp_path)
    assert result.epochs == 3 and 0 <= result.test_score <= 100
    assert result.params == 4 * 13 + 4 + 4 * 4 + 4 + 4 * 3 + 3  # no growth in 3 epochs
    assert (tmp_path / "PAI").is_dir() and (tmp_path / "reference.log").exists()


@pytest.mark.slow
def test_the_reference_arm_sits_beside_ours_in_perforate_bench(tmp_path):
    pytest.importorskip("perforatedai")
    from perforate.experiments.bench.arms import Protocol, run_protocol

    protocol = Protocol(dataset="wine", model="mlp", width=4, arms=["baseline", "reference"],
                        max_epochs=3, batch_size=32, latency_repeats=1)
    doc = run_protocol(protocol, tmp_path)
    runs = {r["arm"]: r for r in doc["runs"]}
    assert set(runs) == {"baseline", "reference"} and runs["reference"]["epochs"] == 3
    assert any(c["arm"] == "reference" and c["reference"] == "baseline" for c in doc["comparisons"])


def test_plain_controls_are_ladders_and_the_best_one_is_named():
    """Sparse plain ladders (arms plain-*) are not dendritic points; each dendritic point is read
    against every ladder and the envelope of all of them."""
    runs = [run("plain", 4, 0, 100, 50.0), run("plain", 8, 0, 400, 60.0),
            run("plain-local", 4, 0, 80, 58.0), run("plain-local", 8, 0, 300, 66.0),
            run("gd-local", 4, 0, 200, 57.0)]
    stats = derive(runs)
    assert set(stats["controls"]) == {"plain-local"}
    (point,) = stats["points"]  # the control is a ladder, not a point
    assert point["arm"] == "gd-local"
    assert point["distance"]["mean"] == pytest.approx(2.0)  # dense frontier at 200: 55
    # local frontier at 200: 58 + (66 - 58) * log(200/80) / log(300/80)
    local = 58 + 8 * (math.log(200 / 80) / math.log(300 / 80))
    assert point["against"]["plain-local"]["distance"]["mean"] == pytest.approx(57.0 - local)
    assert point["distance_best"]["mean"] == pytest.approx(57.0 - local)  # local beats dense here
    assert point["best_plain"] == "plain-local" and point["above_best"] == 0
    cp = {c["width"]: c for c in stats["control_points"]}
    dense_at_300 = 50 + 10 * math.log(300 / 100) / math.log(400 / 100)
    assert cp[8]["distance"]["mean"] == pytest.approx(66.0 - dense_at_300)
    doc = {"protocol": {"control_inputs": 8, "model": "mlp"}, "frontier": stats}
    lines = frontier_report.verdict(doc)
    assert any("Best plain control: `plain-local`" in line for line in lines)
    assert any(line.startswith("Sparsity, not dendrites") for line in lines)


def test_bad_controls_are_refused():
    with pytest.raises(ExperimentError, match="local-x6"):
        FrontierProtocol(controls=["strided"])
    with pytest.raises(ExperimentError, match="local-x6"):
        FrontierProtocol(controls=["local-x0"])


def test_tiny_frontier_with_plain_controls_end_to_end(tmp_path):
    out = tmp_path / "frontier"
    args = ["bench", "frontier", "--dataset", "wine", "--widths", "2,8", "--grow-widths", "2",
            "--arms", "gd-local", "--variant",
            "gd-local=gd,dendrite_inputs=4,dendrite_input_choice=local,include=1",
            "--controls", "local,random-x2", "--control-inputs", "4", "--seeds", "1", "--epochs", "3",
            "--patience", "1", "--batch-size", "32", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    ids = {r["run_id"]: r for r in doc["runs"]}
    assert set(ids) == {"plain-w2-s0", "plain-w8-s0", "plain-local-w2-s0", "plain-local-w8-s0",
                        "plain-random-x2-w2-s0", "plain-random-x2-w8-s0", "gd-local-w2-s0"}
    # wine has 13 features: a width-8 local control reads 4 of them per first-layer unit
    dense, local = ids["plain-w8-s0"], ids["plain-local-w8-s0"]
    assert dense["params"] - local["params"] == 8 * (13 - 4)
    assert ids["plain-random-x2-w8-s0"]["params"] == 16 * 4 + 16 + 16 * 8 + 8 + 8 * 3 + 3
    report = (out / "report.md").read_text()
    assert "Plain control `plain-local`" in report and "Best plain control" in report
    assert "against every plain ladder" in report and "--controls local,random-x2" in report

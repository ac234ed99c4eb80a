"""`perforate bench cost --quick` runs and reports every figure (no timing assertions)."""
import json

import pytest

import typer
from typer.testing import CliRunner

import perforate as pf
from perforate.experiments.cost import TARGETS, cost_command

ENTRY_KEYS = {"median", "min", "max", "target", "met"}


def test_cost_command_quick_writes_every_ratio(tmp_path):
    app = typer.Typer()
    app.command("cost")(cost_command)  # as the CLI registers it
    app.command("other")(lambda: None)  # two commands: "cost" is then a subcommand name
    out = tmp_path / "sub" / "cost.json"
    result = CliRunner().invoke(app, ["cost", "--quick", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "controller_overhead" in result.output and "export_latency_ratio" in result.output

    data = json.loads(out.read_text())
    assert data["quick"] is True and data["device"] == "cpu"
    for figure in ("controller_overhead", "wrap_overhead", "dendrite_layer_ratio", "pb_phase_ratio",
                   "export_latency_ratio", "peak_memory_ratio"):
        assert figure in data, figure
        assert figure in TARGETS
    assert ENTRY_KEYS <= data["wrap_overhead"].keys()
    assert data["wrap_overhead"]["target"] == TARGETS["wrap_overhead"]
    assert set(data["pb_phase_ratio"]) == {"cached (default)", "online"}
    cached = data["pb_phase_ratio"]["cached (default)"]  # the phase's memory against its cap
    assert cached["cap_mb"] == pf.Config().candidate_cache_mb and cached["peak_mb"] >= 0
    assert "peak +" in result.output
    cases = data["dendrite_layer_ratio"]
    for kind in ("linear", "conv2d"):
        for mode in ("gd", "pb"):
            for k in (1, 2, 4):
                names = [c for c in cases if c.startswith(kind) and c.endswith(f"/{mode}/k={k}")]
                assert names, (kind, mode, k)
    for figure in ("controller_overhead", "pb_phase_ratio", "dendrite_layer_ratio",
                   "export_latency_ratio", "peak_memory_ratio"):
        for case, entry in data[figure].items():
            assert ENTRY_KEYS <= entry.keys(), (figure, case)
            assert entry["min"] <= entry["median"] <= entry["max"]
            assert entry["median"] > 0
            if entry["target"] is not None:
                assert entry["met"] == (entry["median"] <= entry["target"])
    assert set(data["export_latency_ratio"]) == {"batch=1", "batch=8"}
    assert set(data["peak_memory_ratio"]) == {"k=1", "k=2", "k=4"}
    for entry in data["peak_memory_ratio"].values():
        assert entry["bytes"] > 0 and entry["plain_bytes"] > 0
    snap = data["snapshot_memory"]  # best, before-growth and trial models held in a growth trial
    assert set(snap) == {"model", "cpu", "disk", "auto"}
    assert snap["model"]["median"] > 2.5 and snap["cpu"]["median"] > 2.5  # a CPU model: in memory
    assert snap["disk"]["median"] == 0 and snap["disk"]["disk_bytes"] > 2.5 * snap["disk"]["plain_bytes"]
    assert snap["auto"]["resolved"] == "model"  # a small CPU model keeps its snapshots in memory


@pytest.mark.slow
def test_reference_figure_times_the_three_arms_on_one_loop():
    """About 10-20 s: perforatedai (where installed) grows once on the same loop as perforate."""
    pytest.importorskip("perforatedai")
    import torch

    from perforate.experiments.cost import reference as reference_cost
    from perforate.experiments.cost.bench import _adam, _Loop, _synthetic
    from perforate.experiments.models import build_model

    data = _synthetic()
    figure = reference_cost.reference_figure(build_model("mlp", data, 8, seed=0),
                                             lambda: _Loop(data, 64, torch.device("cpu")), _adam,
                                             epochs=3, switch=1, repeats=1)
    seconds = figure["seconds_per_epoch"]
    assert set(seconds) == {"plain", "perforate", "perforatedai"} and min(seconds.values()) > 0
    assert figure["median"] == seconds["perforatedai"] / seconds["perforate"]
    assert figure["perforatedai_version"] == "3.2.9"


def test_cost_bench_reports_the_speed_issues_rows_against_their_targets():
    """Every row of the second speed issue's table is a figure with its own target: the pb
    phase per growth (stacked Linear: the cached case, <= 3 plain epochs; conv + BN blocks,
    LSTM, attention), a whole epoch after one growth (<= 1.3), export at batch 256 (<= 1.3)."""
    from perforate.experiments.cost import CASE_TARGETS, run_cost

    data = run_cost(quick=True)
    assert data["pb_phase_ratio"]["cached (default)"]["target"] == 3.0
    assert data["pb_phase_ratio"]["online"]["target"] == 1.5
    families = data["pb_phase_per_growth"]
    assert len(families) == 3 and any("blocks=" in name for name in families)
    assert any("lstm" in name for name in families) and any("attention" in name for name in families)
    for entry in [*families.values(), data["grown_epoch_ratio"]]:
        assert ENTRY_KEYS <= entry.keys() and entry["median"] > 0
        assert entry["met"] == (entry["median"] <= entry["target"])
    assert {e["target"] for e in families.values()} == {3.0}
    assert all(e["layers"] > 0 for e in families.values())  # the families' layers were wrapped
    assert data["grown_epoch_ratio"]["target"] == 1.3 and data["grown_epoch_ratio"]["dendrites"] > 0
    assert CASE_TARGETS[("export_latency_ratio", "batch=256")] == 1.3
    assert data["export_latency_ratio"]["batch=1"]["target"] == 1.5

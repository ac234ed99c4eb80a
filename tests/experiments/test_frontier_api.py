"""The frontier on a user's own model, data and loop: ``dendrites_vs_width`` and the CLI's
import strings (tiny models, 2-3 epochs, one or two seeds)."""
import json
import math
import textwrap

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

from perforate.errors import ExperimentError
from perforate.experiments.frontier.budget import trim
from perforate.experiments.cli import app
from perforate.experiments.frontier import FrontierProtocol, derive
from perforate.experiments.study import dendrites_vs_width
from perforate.experiments.task import Task, matching_width


def blobs(n=240, features=6, classes=3, seed=0, regression=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    if regression:
        y = (x[:, :1] * 2.0 - x[:, 1:2] + 0.1 * torch.randn(n, 1, generator=g))
    else:
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        y = y.clamp(max=classes - 1)
    return x, y


def make_loaders(regression=False):
    x, y = blobs(regression=regression)

    def loaders():
        part = lambda a, b: TensorDataset(x[a:b], y[a:b])  # noqa: E731
        return (DataLoader(part(0, 160), batch_size=32, shuffle=True),
                DataLoader(part(160, 200), batch_size=64), DataLoader(part(200, 240), batch_size=64))
    return loaders


def mlp(width, out=3):
    return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, out))


QUICK = dict(seeds=1, epochs=2, progress=False)


def test_a_factory_with_a_width_knob_gives_a_result_with_table_distances_plots_and_verdict(tmp_path):
    result = dendrites_vs_width(mlp, make_loaders(), widths=[8, 2], grow_widths=[2], arms=["gd"],
                                out=tmp_path, **QUICK)
    table = result.table
    assert sorted(table["arm"] + table["width"].astype(str)) == ["gd2", "plain2", "plain8"]
    params = dict(zip(table["arm"] + table["width"].astype(str), table["params"]))
    assert params["plain2"] == 6 * 2 + 2 + 2 * 3 + 3 and params["plain8"] == 6 * 8 + 8 + 8 * 3 + 3
    (row,) = result.distances.to_dict("records")
    assert row["arm"] == "gd" and row["seeds"] == 1 and math.isfinite(row["distance"])
    assert result.plots["params"].stat().st_size > 0 and result.plots["flops"].exists()
    assert result.verdict.startswith("Too few seeds to tell") and "one seed" in result.verdict
    report = result.report.read_text()
    assert report.splitlines()[2].startswith("**Verdict:** Too few seeds")
    assert report.splitlines()[0].endswith(f":loaders / {__name__}:mlp")  # names in the title
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["task"]["optimizer"] == "Adam lr 0.001" and doc["task"]["train_epoch"].startswith("default")


def test_a_factory_with_a_float_scale(tmp_path):
    result = dendrites_vs_width(lambda scale: mlp(int(8 * scale)), make_loaders(),
                                widths=[0.25, 0.5, 2.0], grow_widths=[0.25], arms=["gd"],
                                out=tmp_path, **QUICK)
    assert sorted(r["run_id"] for r in result.doc["runs"]) == [
        "gd-w0.25-s0", "plain-w0.25-s0", "plain-w0.5-s0", "plain-w2.0-s0"]
    assert list(result.doc["frontier"]["ladder"]) == ["0.25", "0.5", "2"]
    assert result.distances["width"].tolist() == [0.25]


def test_a_custom_loop_and_evaluate_are_the_ones_that_train_and_score(tmp_path):
    calls = {"train": 0, "evaluate": 0}

    def train_epoch(model, loader, optimizer):
        calls["train"] += 1
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return 0.5

    def evaluate(model, loader):
        calls["evaluate"] += 1
        return 42.0  # a constant metric: every run scores it, and distances are 0

    with pytest.raises(ExperimentError, match="direction"):
        dendrites_vs_width(mlp, make_loaders(), widths=[2, 4], evaluate=evaluate, out=tmp_path)
    result = dendrites_vs_width(mlp, make_loaders(), widths=[2, 4], grow_widths=[2], arms=["pb"],
                                train_epoch=train_epoch, evaluate=evaluate, direction="max",
                                out=tmp_path, **QUICK)
    # 3 runs of 2 epochs + 2 timed runs of 2 epochs; evaluate: every epoch plus each test read
    assert calls["train"] == 3 * 2 + 2 * 2 and calls["evaluate"] == (3 + 2) * (2 + 1)
    assert set(result.table["test_score"]) == {42.0}
    assert result.distances["distance"].tolist() == [0.0]
    assert result.table["val_score"].tolist() == [42.0] * 3


def test_direction_min_flips_the_frontier_and_signs_distances_so_positive_is_better():
    run = lambda arm, w, p, s: {"arm": arm, "width": w, "seed": 0, "params": p,  # noqa: E731
                                "flops_per_sample": 2 * p, "test_score": s, "dendrites": 1,
                                "epochs": 2, "seconds": 1.0}
    runs = [run("plain", 2, 100, 0.50), run("plain", 8, 400, 0.30), run("plain", 32, 1600, 0.40),
            run("gd", 2, 200, 0.35)]
    (point,) = derive(runs, maximize=False)["points"]
    # the min-frontier at 200 params lies half-way (in log params) between 0.50 and 0.30: 0.40
    assert point["distance"]["mean"] == pytest.approx(0.05) and point["above"] == 1
    assert point["gain_per_seed"] == [pytest.approx(0.15)]  # 0.50 -> 0.35 is a gain


def test_a_regression_metric_with_direction_min_end_to_end(tmp_path):
    result = dendrites_vs_width(lambda w: mlp(w, out=1), make_loaders(regression=True),
                                widths=[2, 16], grow_widths=[2], arms=["gd"], kind="regression",
                                lr=1e-2, out=tmp_path, **QUICK)
    doc = result.doc
    assert doc["protocol"]["direction"] == "min" and doc["protocol"]["metric"] == "MSE"
    runs = {r["run_id"]: r for r in doc["runs"]}
    plain2, gd2 = runs["plain-w2-s0"]["test_score"], runs["gd-w2-s0"]["test_score"]
    assert result.distances["gain"].tolist() == [pytest.approx(plain2 - gd2)]  # lower MSE: a gain
    assert "lower is better" in result.report.read_text()
    assert "points" not in result.verdict and "| test MSE (lower is better) |" in result.report.read_text()


def test_resume_after_a_kill_finishes_with_the_same_results(tmp_path):
    epochs = {"n": 0, "kill_at": None}

    def train_epoch(model, loader, optimizer):  # the user's loop, with a kill switch
        epochs["n"] += 1
        if epochs["kill_at"] is not None and epochs["n"] == epochs["kill_at"]:
            raise KeyboardInterrupt
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()

    kwargs = dict(widths=[2, 4, 8], grow_widths=[2], arms=["gd"], seeds=2, epochs=2,
                  train_epoch=train_epoch, progress=False)
    straight = dendrites_vs_width(mlp, make_loaders(), out=tmp_path / "straight", **kwargs)
    epochs.update(n=0, kill_at=2 * 2 + 3 * 2 + 1)  # 2 timed runs, 3 runs, then the 4th run's first epoch
    with pytest.raises(KeyboardInterrupt):
        dendrites_vs_width(mlp, make_loaders(), out=tmp_path / "killed", **kwargs)
    saved = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert len(saved["runs"]) == 3
    epochs["kill_at"] = None
    resumed = dendrites_vs_width(mlp, make_loaders(), out=tmp_path / "killed", **kwargs)
    scores = lambda r: {x["run_id"]: (x["test_score"], x["val_score"], x["params"])  # noqa: E731
                        for x in r.doc["runs"]}
    assert len(resumed.doc["runs"]) == 8 and scores(resumed) == scores(straight)
    assert resumed.verdict == straight.verdict


def test_a_factory_that_ignores_its_width_is_refused_before_any_training(tmp_path):
    with pytest.raises(ExperimentError, match="parameters at every width.*width argument"):
        dendrites_vs_width(lambda width: mlp(16), make_loaders(), widths=[2, 4, 8],
                           out=tmp_path, **QUICK)
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(ExperimentError, match="not a torch.nn.Module"):
        dendrites_vs_width(lambda width: "model", make_loaders(), widths=[2, 4], out=tmp_path, **QUICK)


def test_empty_loaders_are_refused_with_what_to_change(tmp_path):
    x, y = blobs()
    full = DataLoader(TensorDataset(x, y), batch_size=32)
    empty = DataLoader(TensorDataset(x[:0], y[:0]), batch_size=32)
    with pytest.raises(ExperimentError, match="the train loader yields no batches"):
        dendrites_vs_width(mlp, (empty, full, full), widths=[2, 4], out=tmp_path, **QUICK)
    with pytest.raises(ExperimentError, match="the validation loader yields no batches"):
        dendrites_vs_width(mlp, lambda: (full, [], full), widths=[2, 4], out=tmp_path, **QUICK)
    with pytest.raises(ExperimentError, match="only on the harness"):
        dendrites_vs_width(mlp, (full, full, full), widths=[2, 4], arms=["reference"],
                           out=tmp_path, **QUICK)
    with pytest.raises(ExperimentError, match=r"\(train, val, test\)"):
        dendrites_vs_width(mlp, (full, full), widths=[2, 4], out=tmp_path, **QUICK)


def test_a_custom_arm_plugs_in_beside_the_dendritic_ones(tmp_path):
    def double_width(run):  # e.g. another plain family read against the same frontier
        return run.fit(model=mlp(2 * run.width))

    result = dendrites_vs_width(mlp, make_loaders(), widths=[2, 8], grow_widths=[2],
                                arms=["double"], custom_arms={"double": double_width},
                                out=tmp_path, **QUICK)
    (row,) = result.distances.to_dict("records")
    assert row["arm"] == "double" and row["params"] == 6 * 4 + 4 + 4 * 3 + 3


def test_max_minutes_drops_seeds_then_middle_widths_then_seeds_then_starting_widths():
    p = FrontierProtocol(widths=[1, 2, 4, 8, 16], grow_widths=[1, 2], arms=["gd"], seeds=[0, 1, 2, 3, 4])
    runs = lambda q: len(q.seeds) * (len(q.widths) + len(q.grow_widths))  # noqa: E731  1 s a run
    assert trim(p, runs, 35) == (p, [])
    q, dropped = trim(p, runs, 12)
    assert dropped == ["seed 4", "seed 3", "seed 2", "ladder width 8"]
    assert q.widths == [1, 2, 4, 16] and q.seeds == [0, 1] and q.grow_widths == [1, 2]
    q, dropped = trim(p, runs, 8)
    assert dropped[3:] == ["ladder width 8", "ladder width 4", "seed 1"] and q.seeds == [0]
    q, dropped = trim(p, runs, 4)
    assert dropped[-2:] == ["seed 1", "starting width 2"] and q.grow_widths == [1]
    with pytest.raises(ExperimentError, match="smallest plan.*--max-minutes"):
        trim(p, runs, 3)


MODULE = textwrap.dedent('''
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    def make_model(width):
        return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 3))

    def loaders(seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(120, 6, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        part = lambda a, b: TensorDataset(x[a:b], y[a:b])
        return (DataLoader(part(0, 80), batch_size=16, shuffle=True),
                DataLoader(part(80, 100), batch_size=64), DataLoader(part(100, 120), batch_size=64))

    def train_epoch(model, loader, optimizer):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
''')


def test_the_cli_takes_the_users_factory_data_and_loop_as_import_strings(tmp_path, monkeypatch):
    (tmp_path / "mypkg_frontier.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    args = ["bench", "frontier", "--model", "mypkg_frontier:make_model", "--data",
            "mypkg_frontier:loaders", "--train", "mypkg_frontier:train_epoch", "--widths", "2,8",
            "--grow-widths", "2", "--arms", "gd", "--seeds", "1", "--epochs", "2",
            "--max-minutes", "5", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "3 training run(s) of at most 2 epochs" in result.stderr and "about" in result.stderr
    assert "Too few seeds to tell on mypkg_frontier:make_model" in result.stdout
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["runs"]) == 3 and doc["task"]["train_epoch"] == "mypkg_frontier:train_epoch"
    report = (out / "report.md").read_text()
    assert "--model mypkg_frontier:make_model --data mypkg_frontier:loaders" in report
    bad = CliRunner().invoke(app, args[:4] + ["--data", "mypkg_frontier:nope", "--out", str(out)])
    assert bad.exit_code == 2 and "has no attribute 'nope'" in bad.output
    no_data = CliRunner().invoke(app, ["bench", "frontier", "--model", "mypkg_frontier:make_model"])
    assert no_data.exit_code == 2 and "--data" in no_data.output
    stray = CliRunner().invoke(app, ["bench", "frontier", "--data", "mypkg_frontier:loaders"])
    assert stray.exit_code == 2 and "import string" in stray.output


def test_the_width_matched_control_trains_the_grown_models_size_epochs_and_restarts(tmp_path):
    with pytest.raises(ExperimentError, match="list 'gd' before it"):
        dendrites_vs_width(mlp, make_loaders(), widths=[2, 8], arms=["control-gd", "gd"],
                           out=tmp_path, **QUICK)
    result = dendrites_vs_width(mlp, make_loaders(), widths=[2, 16], grow_widths=[2],
                                arms=["gd", "control-gd"], patience=1,
                                evaluate=lambda model, loader: 50.0, direction="max",  # a plateau
                                out=tmp_path, **{**QUICK, "epochs": 6})
    runs = {r["arm"]: r for r in result.doc["runs"] if r["width"] == 2}
    grown, control = runs["gd"], runs["control-gd"]
    task = Task(mlp, make_loaders())
    width = control["control_width"]
    assert width == matching_width(task, grown["params"], start=2)
    assert control["params"] == 10 * width + 3  # mlp(w): 6w + w + 3w + 3
    assert control["epochs"] == grown["epochs"] and control["restart_epochs"] == grown["restart_epochs"]
    assert grown["restart_epochs"]  # growth was tried: the control rebuilt its optimizer there too
    (line,) = [x for x in result.verdict_lines if "width-matched control" in x]
    assert f"width {width}" in line and "`gd` from width 2" in line
    assert "control-gd" not in result.verdict  # the headline judges dendritic arms only
    # the search: nearest count, ties to the narrower width
    assert [matching_width(task, n, start=2) for n in (73, 78, 79, 5000)] == [7, 7, 8, 500]


def test_plain_sparse_controls_on_your_model_restrict_its_first_layer(tmp_path):
    """controls=["local"] on a user's factory: arm plain-local is the same model with its first
    Linear reading 3 of its 6 inputs per unit (pf.restrict_inputs), a ladder beside the dense
    one; each dendritic point is read against both and the report names the best control."""
    result = dendrites_vs_width(mlp, make_loaders(), widths=[2, 8], grow_widths=[2], arms=["gd"],
                                controls=["local"], control_inputs=3, out=tmp_path, **QUICK)
    params = {r["run_id"]: r["params"] for r in result.doc["runs"]}
    assert set(params) == {"plain-w2-s0", "plain-w8-s0", "plain-local-w2-s0", "plain-local-w8-s0",
                           "gd-w2-s0"}
    assert params["plain-w8-s0"] - params["plain-local-w8-s0"] == 8 * (6 - 3)
    assert set(result.doc["frontier"]["controls"]) == {"plain-local"}
    (row,) = result.distances.to_dict("records")  # the control is a ladder, not a point
    assert row["arm"] == "gd" and row["best_plain"] in ("plain", "plain-local")
    assert math.isfinite(row["distance_best"])
    assert "Best plain sparse control: `plain-local`" in result.verdict
    assert "## Plain control `plain-local`" in result.report.read_text()


def test_a_plain_control_your_model_cannot_take_is_refused_before_any_training(tmp_path):
    with pytest.raises(ExperimentError, match="control_inputs"):  # at w=2 no layer reads more than 6
        dendrites_vs_width(lambda w: nn.Sequential(nn.Linear(6, w), nn.ReLU(), nn.Linear(w, 3)),
                           make_loaders(),
                           widths=[2, 8], grow_widths=[2], arms=["gd"], controls=["local"],
                           control_inputs=6, out=tmp_path, **QUICK)
    with pytest.raises(ExperimentError, match="-x2"):  # widening is the harness MLP's
        dendrites_vs_width(mlp, make_loaders(), widths=[2, 8], grow_widths=[2], arms=["gd"],
                           controls=["local-x2"], control_inputs=3, out=tmp_path, **QUICK)
    assert not (tmp_path / "results.json").exists()

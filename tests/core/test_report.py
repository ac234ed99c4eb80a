"""growth.png tells the truth without the report: the score's name and direction, a title per
run, the parameter count stepping down when the best model is restored, a legend for what
happened only."""
import torch
from torch import nn

import perforate as pf
from perforate.report import plot_grower


def finished_run(tmp_path, mode, scores, **cfg):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    config = pf.Config(mode=mode, smoothing=1, patience=1, max_growth_retries=0, dendrite_max_epochs=1,
                       plots=False, **cfg)
    grower = pf.Grower(model, config, lambda p: torch.optim.SGD(p, lr=0.1), name=f"{mode}, seed 0")
    for score in scores:
        if grower.step(score).done:
            break
    return grower, plot_grower(grower, tmp_path / "growth.png")


def legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_gd_graph_names_the_loss_steps_down_at_restore_and_shows_no_dendrite_phase(tmp_path):
    # best at epoch 2 (no dendrites); the growth at epoch 3 does not pay; done at 4
    grower, fig = finished_run(tmp_path, "gd", [1.0, 0.8, 0.7, 0.75, 0.75, 0.75],
                               score_mode="min", score_name="validation loss")
    assert (tmp_path / "growth.png").stat().st_size > 0
    score_ax, params_ax = fig.axes
    assert score_ax.get_ylabel() == "validation loss (lower is better)"
    assert score_ax.get_title() == "gd, seed 0 — dendrites trained by gd"
    labels = legend(score_ax)
    assert "dendrites added" in labels and "done: best model restored" in labels
    assert not any("dendrite phase" in label or "retried" in label for label in labels)
    steps = next(line for line in params_ax.get_lines() if line.get_label() == "parameters").get_ydata()
    grown, kept = max(steps), steps[-1]
    assert kept == pf.count_parameters(grower.model) < grown  # the restored (smaller) model
    assert "kept model" in labels  # the star at the best epoch


def test_pb_graph_shades_and_names_the_dendrite_phase(tmp_path):
    _, fig = finished_run(tmp_path, "pb", [0.5, 0.5, 0.5, 0.6, 0.6, 0.6, 0.6],
                          score_name="validation accuracy %")
    assert fig.axes[0].get_ylabel() == "validation accuracy % (higher is better)"
    labels = legend(fig.axes[0])
    assert "dendrite phase (candidates train)" in labels
    assert "candidates joined as dendrites" in labels and "dendrites added" not in labels
    assert fig.axes[2].get_ylabel() == "candidate |corr|"


def test_comparison_plot_sets_coinciding_arms_side_by_side(tmp_path):
    from matplotlib.image import imread

    from perforate.experiments.bench.render import _dodges, comparison_plot

    def arm(params, score, seeds):
        stat = lambda v: {"mean": v, "std": 0.5 if len(seeds) > 1 else 0.0, "n": len(seeds)}  # noqa: E731
        return {"params": stat(params), "nonzero_params": stat(params), "test_score": stat(score),
                "seeds": seeds}

    for seeds in ([0], [0, 1]):
        doc = {"protocol": {"dataset": "mnist1d", "model": "mlp"}, "runs": [{"task": "classification"}],
               "summary": {"1": {"baseline": arm(15210, 56.1, seeds), "compressed": arm(1935, 48.8, seeds),
                                 "control": arm(1935, 48.8, seeds)}}}
        comparison_plot(doc, tmp_path / "comparison.png")
        assert imread(tmp_path / "comparison.png").shape[:2] == (500, 750)
    dodge = _dodges({"baseline": (15210, 56.1), "compressed": (1935, 48.8), "control": (1935, 48.8)}, 8.0)
    assert dodge == {"baseline": 0.0, "compressed": -7.0, "control": 7.0}

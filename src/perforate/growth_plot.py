"""The growth graph of a run (growth.png), drawn from the grower's history rows.

matplotlib is imported only when a graph is drawn, so ``import perforate`` stays light.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .files import atomic_path
from .records import BASE_COLUMNS, GrowthGraph, growth_graph

if TYPE_CHECKING:  # pragma: no cover
    from .grower import Grower


# event -> (legend label, colour, line style); drawn only when the run has one
_EVENT_STYLE = {
    "grow": ("dendrites added", "green", "--"),
    "join": ("candidates joined as dendrites", "green", "--"),
    "retry": ("growth retried (last one did not pay)", "darkorange", "-."),
    "continue": ("rolled back (growth did not pay), training on", "purple", ":"),
    "dendrite_start": (None, None, None),  # shown as the shaded phase
    "done": ("done: best model restored", "red", ":"),
}


def _dendrite_spans(history: list[dict[str, Any]]) -> list[tuple[float, float]]:
    spans, start = [], None
    for row in history:
        if row["phase"] == "dendrite" and start is None:
            start = row["epoch"] - 0.5
        elif row["phase"] != "dendrite" and start is not None:
            spans.append((start, row["epoch"] - 0.5))
            start = None
    if start is not None:
        spans.append((start, history[-1]["epoch"] + 0.5))
    return spans


def _events(history: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Epochs of each event (a row may hold several, joined by "+")."""
    out: dict[str, list[int]] = {}
    for row in history:
        for event in filter(None, str(row.get("event") or "").split("+")):
            out.setdefault(event, []).append(row["epoch"])
    return out


def _params_after_decisions(history: list[dict[str, Any]], final_params: int | None):
    """Steps of the parameter count as the decisions left it: a growth shows at its epoch, and
    a run that ended with the best (smaller) model restored steps down at its last epoch."""
    xs = [history[0]["epoch"]] + [row["epoch"] for row in history]
    ys = [history[0]["params"]] + [row["params"] for row in history[1:]]
    ys.append(final_params if final_params is not None else history[-1]["params"])
    xs.append(history[-1]["epoch"] + 1)
    ys.append(ys[-1])
    return xs, ys


def _label(column: str) -> str:
    """"train_loss" -> "train loss"."""
    return column.replace("_", " ")


def _plot_scores(ax, history: list[dict[str, Any]], extra_cols: list[str], score_label: str,
                 final_params: int | None, best_epoch: int | None) -> None:
    """The score per epoch on ``ax``, the ``extra_cols`` scores beside it, and a star on the
    best (or kept) model's epoch."""
    ax.plot([row["epoch"] for row in history], [row["score"] for row in history],
            label=score_label, color="C0", lw=1.8)
    for i, col in enumerate(extra_cols):
        pts = [(row["epoch"], row[col]) for row in history if isinstance(row.get(col), (int, float))]
        if pts:
            ax.plot(*zip(*pts), label=_label(col), color=f"C{i + 2}", lw=1, alpha=0.8)
    best = [row for row in history if row["epoch"] == best_epoch]
    if best:
        ax.plot([best[-1]["epoch"]], [best[-1]["score"]], "*", color="C0", ms=11, mec="black",
                mew=0.6, label="kept model" if final_params is not None else "best so far")


def _plot_params(ax, history: list[dict[str, Any]], final_params: int | None) -> None:
    """The parameter count as a step line on ``ax``, its last value written at its end."""
    from matplotlib.ticker import FuncFormatter

    xs, ys = _params_after_decisions(history, final_params)
    ax.step(xs, ys, where="post", color="C1", label="parameters")
    high = ys[-1] > (min(ys) + max(ys)) / 2  # the label goes below a high line, above a low one
    ax.annotate(f"{'kept ' if final_params is not None else ''}{ys[-1]:,}", (xs[-1], ys[-1]),
                textcoords="offset points", xytext=(-6, -4 if high else 4), ha="right",
                va="top" if high else "bottom", fontsize=8, color="C1")
    ax.set_ylabel("parameters")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))


def _plot_correlations(ax, history: list[dict[str, Any]], correlation_cols: list[str]) -> None:
    """The candidates' correlation per layer (``corr/<layer>`` columns) on ``ax``."""
    epochs = [row["epoch"] for row in history]
    for i, col in enumerate(correlation_cols):
        # NaN outside dendrite phases breaks the line between phases
        values = [row[col] if isinstance(row.get(col), (int, float)) else float("nan")
                  for row in history]
        ax.plot(epochs, values, marker=".", lw=1, label=f"layer {col[5:]}", color=f"C{i % 10}")
    ax.set_ylabel("candidate |corr|")
    ax.legend(fontsize=6, ncol=2, loc="best")


def plot_growth(history: list[dict[str, Any]], path: Path, title: str = "",
                score_label: str = "validation score", final_params: int | None = None,
                best_epoch: int | None = None) -> Any:
    """Draw scores per epoch with growth points marked, dendrite phases shaded, parameters
    over time, and (pb) the candidates' correlation by layer. Uses no pyplot global state.

    ``score_label`` names the score (the y-axis); ``final_params`` is the parameter count of
    the model kept at the end (the best one restored), drawn as the last step; ``best_epoch``
    (the best model's epoch) is marked on the score. Legend entries appear only for what the
    run holds. Returns the matplotlib Figure (None without history).
    """
    if not history:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    correlation_cols = sorted({k for row in history for k in row if k.startswith("corr/")})
    extra_cols = sorted({k for row in history for k in row
                         if k not in BASE_COLUMNS and not k.startswith("corr/")
                         and isinstance(row[k], (int, float)) and not isinstance(row[k], bool)})
    panels = 3 if correlation_cols else 2
    fig = Figure(figsize=(9, 2.6 * panels + 0.6), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [1.6] + [1] * (panels - 1)})[:, 0]
    _plot_scores(axes[0], history, extra_cols, score_label, final_params, best_epoch)
    _mark_decisions(axes, history)
    axes[0].set_ylabel(score_label)
    axes[0].set_title(title or "dendritic growth")
    _plot_params(axes[1], history, final_params)
    if correlation_cols:
        _plot_correlations(axes[2], history, correlation_cols)
    axes[-1].set_xlabel("epoch")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    return fig


def plot_run(history: Sequence[Mapping[str, Any]], graph: GrowthGraph, path: Path) -> Any:
    """:func:`plot_growth` of a run's history rows with a record's graph data (its title, the
    score named with its direction, the kept model's size once growth is done, the best epoch)."""
    return plot_growth(history, path, title=graph.title, score_label=graph.score_label,
                       final_params=graph.final_params, best_epoch=graph.best_epoch)


def plot_grower(grower: Grower, path: Path) -> Any:
    """:func:`plot_run` of a grower's run as it stands (see :func:`perforate.records.growth_graph`)."""
    return plot_run(grower.history, growth_graph(grower), path)


def _mark_decisions(axes, history: list[dict[str, Any]]) -> None:
    """Dendrite phases shaded and decisions as vertical lines on every panel; plateaus where
    growth was held back as markers on the score; the score panel's legend for all of them."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ax, spans, events = axes[0], _dendrite_spans(history), _events(history)
    held = [row for row in history if row["epoch"] in events.get("hold", ())]
    if held:  # a plateau where growth could not help: its reason is in history.csv and the log
        ax.plot([row["epoch"] for row in held], [row["score"] for row in held], "v", color="gray",
                ms=6, ls="none", label="plateau, no growth (reason: history.csv)")
    for ax_i in axes:
        for a, b in spans:
            ax_i.axvspan(a, b, color="orange", alpha=0.15, lw=0)
        for event, at in events.items():
            label, color, style = _EVENT_STYLE.get(event, (None, None, None))
            for e in at if color else ():
                ax_i.axvline(e, color=color, ls=style, lw=1)
    handles, labels = ax.get_legend_handles_labels()
    for event, (label, color, style) in _EVENT_STYLE.items():
        if label and event in events:
            handles.append(Line2D([], [], color=color, ls=style, lw=1))
            labels.append(label)
    if spans:
        handles.append(Patch(color="orange", alpha=0.3))
        labels.append("dendrite phase (candidates train)")
    ax.legend(handles, labels, fontsize=7, loc="best")

"""The growth graph of a run (growth.png), drawn from the grower's history rows.

matplotlib is imported only when a graph is drawn, so ``import perforate`` stays light.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .files import atomic_path

BASE_COLUMNS = ["epoch", "phase", "score", "lr", "params", "dendrites", "seconds", "event"]
"""The columns of every history row, in order; extra scores given to ``Grower.step`` follow."""


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


def plot_growth(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Draw scores per epoch with growth points marked, dendrite phases shaded, parameters
    over time, and (pb) the candidates' correlation by layer. Uses no pyplot global state."""
    if not history:
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    correlation_cols = sorted({k for row in history for k in row if k.startswith("corr/")})
    extra_cols = sorted({k for row in history for k in row
                         if k not in BASE_COLUMNS and not k.startswith("corr/")
                         and isinstance(row[k], (int, float)) and not isinstance(row[k], bool)})
    panels = 3 if correlation_cols else 2
    fig = Figure(figsize=(9, 2.6 * panels + 0.6), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    epochs = [row["epoch"] for row in history]
    ax = axes[0]
    ax.plot(epochs, [row["score"] for row in history], label="validation score", color="C0", lw=1.8)
    for i, col in enumerate(extra_cols):
        pts = [(row["epoch"], row[col]) for row in history if isinstance(row.get(col), (int, float))]
        if pts:
            ax.plot(*zip(*pts), label=col, color=f"C{i + 2}", lw=1, alpha=0.8)
    growth = [row["epoch"] for row in history if row.get("event") in ("grow", "retry", "join")]
    rollback = [row["epoch"] for row in history if row.get("event") == "done"]
    for ax_i in axes:
        for a, b in _dendrite_spans(history):
            ax_i.axvspan(a, b, color="orange", alpha=0.15, lw=0)
        for e in growth:
            ax_i.axvline(e, color="green", ls="--", lw=1)
        for e in rollback:
            ax_i.axvline(e, color="red", ls=":", lw=1)
    ax.set_ylabel("score")
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="green", ls="--"), Patch(color="orange", alpha=0.3),
                Line2D([], [], color="red", ls=":")]
    labels += ["growth / join", "dendrite phase", "done (best restored)"]
    ax.legend(handles, labels, fontsize=7, loc="best")
    ax.set_title(title or "dendritic growth")
    axes[1].step(epochs, [row["params"] for row in history], where="post", color="C1")
    axes[1].set_ylabel("parameters")
    if correlation_cols:
        for i, col in enumerate(correlation_cols):
            # NaN outside dendrite phases breaks the line between phases
            values = [row[col] if isinstance(row.get(col), (int, float)) else float("nan")
                      for row in history]
            axes[2].plot(epochs, values, marker=".", lw=1, label=col[5:], color=f"C{i % 10}")
        axes[2].set_ylabel("candidate |corr|")
        axes[2].legend(fontsize=6, ncol=2, loc="best")
    axes[-1].set_xlabel("epoch")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)

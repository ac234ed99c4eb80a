"""report.md and its graphs, rendered from a results document (results.json).

Graphs use matplotlib's object API (Figure + FigureCanvasAgg): no pyplot global state.
"""
from __future__ import annotations

import functools
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from perforate.experiments.harness.results import derive, load_results
from perforate.experiments.harness.text import count as _count
from perforate.experiments.harness.text import pm as _pm
from perforate.files import write_text

__all__ = ["render_report", "results_table", "narrative"]

ARM_ORDER = ("baseline", "gd", "pb", "compressed", "control", "pruned", "reference")
ARM_LABEL = {
    "baseline": "baseline",
    "gd": "gd (dendrites, same width)",
    "pb": "pb (dendrites, same width)",
    "compressed": "compressed (narrow + dendrites)",
    "control": "control (plain, params matched)",
    "pruned": "pruned (baseline, non-zeros matched)",
    "reference": "reference (perforatedai 3.2.9, same width)",
}
COLORS = {"baseline": "#1f77b4", "gd": "#2ca02c", "pb": "#9467bd", "compressed": "#d62728",
          "control": "#7f7f7f", "pruned": "#ff7f0e", "reference": "#8c564b"}
MARKERS = {"baseline": "o", "gd": "^", "pb": "v", "compressed": "D", "control": "s", "pruned": "X",
           "reference": "P"}


# ---------------------------------------------------------------------------- formatting
def _params(stats: dict[str, Any]) -> str:
    p, nz = stats["params"], stats["nonzero_params"]
    text = _count(p["mean"])
    if p["n"] > 1 and p["std"] > 0:
        text += f" ± {_count(p['std'])}"
    if nz["mean"] < p["mean"] * 0.9:  # pruned; a few exact zeros elsewhere are not worth a note
        text += f" ({_count(nz['mean'])} non-zero)"
    return text


def _arms(block: dict[str, Any]) -> list[str]:
    return [a for a in ARM_ORDER if a in block] + [a for a in block if a not in ARM_ORDER]


def score_name(doc: dict[str, Any]) -> str:
    """What the score is: accuracy for classification, R² × 100 for regression."""
    regression = any(r.get("task") == "regression" for r in doc["runs"])
    return "test R² × 100" if regression else "test accuracy %"


_SHORT = {"test accuracy %": "test acc %", "test R² × 100": "test R²×100"}


def results_table(doc: dict[str, Any], fraction: str = "1",
                  compact: bool = False) -> list[list[str]]:
    """Header and rows of the main table (strings); ``compact`` keeps the columns that fit a
    terminal (arm, width, score, RER, params, dendrites, epochs, train s)."""
    block = doc["summary"].get(fraction, {})
    header = ["arm", "width", score_name(doc), "RER vs baseline", "params", "FLOPs/sample",
              "dendrites", "epochs", "train s", "peak MB", "latency b1 ms", "latency b256 ms"]
    rows = [header]
    widths: dict[str, set] = {}
    for r in doc["runs"]:
        if f"{float(r['fraction']):g}" == fraction:
            widths.setdefault(r["arm"], set()).add(r["width"])
    for arm in _arms(block):
        s = block[arm]
        w = sorted(widths.get(arm, []))
        rows.append([
            arm, "/".join(str(x) for x in w), _pm(s["test_score"]),
            "–" if arm == "baseline" else _pm(s["rer"], 1, 100.0) + " %",
            _params(s), _count(s["flops_per_sample"]["mean"]), _pm(s["dendrites"], 1),
            _pm(s["epochs"], 0), _pm(s["seconds"], 1), _pm(s["peak_memory_mb"], 2),
            _pm(s["latency_b1_ms"], 3), _pm(s["latency_b256_ms"], 2),
        ])
    if compact:  # short headers, so a terminal table of 80 columns cuts none of them
        keep = [0, 1, 2, 3, 4, 6, 7, 8]
        rows = [[row[i] for i in keep] for row in rows]
        rows[0][2:4] = [_SHORT.get(rows[0][2], rows[0][2]), "RER %"]
        for row in rows[1:]:
            row[3] = row[3].removesuffix(" %")
    return rows


def _markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- narrative
def _cmp(doc: dict[str, Any], arm: str, ref: str, fraction: str = "1") -> dict[str, Any] | None:
    for c in doc.get("comparisons", []):
        if c["arm"] == arm and c["reference"] == ref and c["fraction"] == fraction:
            return c
    return None


def _tally(c: dict[str, Any]) -> str:
    """"higher in 2, lower in 1, equal in 2" (older files have only wins)."""
    if "losses" not in c:
        return f"higher in {c['wins']} of {c['n']}"
    parts = [f"higher in {c['wins']}", f"lower in {c['losses']}"]
    if c["ties"]:
        parts.append(f"equal in {c['ties']}")
    return ", ".join(parts)


def _diff(c: dict[str, Any]) -> str:
    if c["n"] > 1:
        return (f"{c['diff_mean']:+.2f} ± {c['diff_std']:.2f} points over {c['n']} seeds "
                f"({_tally(c)})")
    return f"{c['diff_mean']:+.2f} points (one seed)"


def narrative(doc: dict[str, Any]) -> list[str]:
    """Plain sentences generated from the numbers: where dendrites beat the width-matched
    control and where they do not, then the other comparisons and the costs."""
    block = doc["summary"].get("1", {})
    return [*_against_control(doc, block), *_against_references(doc, block),
            *_at_full_width(doc, block), *_budgets(doc, block)]


def _mean(block: dict[str, Any], arm: str, metric: str) -> float:
    return block[arm][metric]["mean"]


def _against_control(doc: dict[str, Any], block: dict[str, Any]) -> list[str]:
    """The claim that matters: the compressed model against its width-matched control."""
    c = _cmp(doc, "compressed", "control")
    if not c:
        if "compressed" in block:
            return ["No width-matched control was run, so no claim about dendrites can be made "
                    "from the compressed arm (run the `control` arm)."]
        return []
    head = {"better": "**Dendrites beat the width-matched control.**",
            "worse": "**Dendrites lost to the width-matched control.**",
            "no clear difference": "**Dendrites did not beat the width-matched control**: "
                                   "the difference is within the seed-to-seed noise."}
    relation = ("higher than" if c["diff_mean"] > 0 else "lower than" if c["diff_mean"] < 0
                else "the same as")
    verdict = head.get(c["verdict"], f"**One seed only: the compressed model scored "
                                     f"{relation} the width-matched control; run more seeds "
                                     "to settle it.**")
    mean = functools.partial(_mean, block)
    out = [
        f"{verdict} The compressed model ({_count(mean('compressed', 'params'))} parameters, "
        f"{mean('compressed', 'dendrites'):.1f} dendrites per layer on average) scored "
        f"{mean('compressed', 'test_score'):.2f} against the control's "
        f"{mean('control', 'test_score'):.2f} ({_count(mean('control', 'params'))} parameters, "
        f"same epoch budget and optimizer restarts): {_diff(c)}."]
    return out + _seeds_that_grew(doc, block) + _control_on_less_data(doc)


def _seeds_that_grew(doc: dict[str, Any], block: dict[str, Any]) -> list[str]:
    full = {(r["arm"], r["seed"]): r for r in doc["runs"] if float(r["fraction"]) == 1.0}
    grown = [s for (a, s), r in full.items()
             if a == "compressed" and r["dendrites"] > 0 and ("control", s) in full]
    n = len(block["compressed"]["seeds"])
    out = []
    if len(grown) < n:
        out.append(f"In {n - len(grown)} of {n} seeds no growth step beat the plain narrow "
                   "model, so the compressed model kept 0 dendrites and is just a narrow "
                   "plain network; there the comparison with the control measures training "
                   "budget, not dendrites.")
    if grown and len(grown) < n:
        diffs = [full[("compressed", s)]["test_score"] - full[("control", s)]["test_score"]
                 for s in sorted(grown)]
        wins = sum(d > 0 for d in diffs)
        out.append(f"In the {len(grown)} seed(s) where the compressed model kept dendrites "
                   f"(seeds {', '.join(map(str, sorted(grown)))}), it scored "
                   f"{', '.join(f'{d:+.2f}' for d in diffs)} points against its control: "
                   f"higher in {wins} of {len(grown)}.")
    return out


def _control_on_less_data(doc: dict[str, Any]) -> list[str]:
    smaller = [c for c in doc.get("comparisons", [])
               if c["arm"] == "compressed" and c["reference"] == "control" and c["fraction"] != "1"]
    if not smaller:
        return []
    parts = [f"{float(c['fraction']):.0%} of the data: {c['diff_mean']:+.2f} ± "
             f"{c['diff_std']:.2f} ({c['verdict']})"
             for c in sorted(smaller, key=lambda c: float(c["fraction"]))]
    return ["Compressed against its width-matched control on less training data: "
            + "; ".join(parts) + "."]


def _against_references(doc: dict[str, Any], block: dict[str, Any]) -> list[str]:
    """The compressed model against the full-width baseline and the pruned baseline."""
    mean = functools.partial(_mean, block)
    out = []
    c = _cmp(doc, "compressed", "baseline")
    if c:
        ratio = mean("compressed", "params") / mean("baseline", "params")
        out.append(f"Against the full-width baseline the compressed model uses {ratio:.0%} of its "
                   f"parameters and scores {_diff(c)}; verdict: {c['verdict']}.")
    c = _cmp(doc, "compressed", "pruned")
    if c:
        out.append(f"Against the baseline magnitude-pruned to the same non-zero count "
                   f"({_count(mean('pruned', 'nonzero_params'))} of "
                   f"{_count(mean('pruned', 'params'))} dense parameters) the compressed model "
                   f"scores {_diff(c)}; verdict: {c['verdict']}.")
    return out


def _at_full_width(doc: dict[str, Any], block: dict[str, Any]) -> list[str]:
    """gd and pb grown on the baseline's width, against the baseline."""
    out = []
    for arm in ("gd", "pb"):
        c = _cmp(doc, arm, "baseline")
        if not c:
            continue
        grown = [r for r in doc["runs"] if r["arm"] == arm and float(r["fraction"]) == 1.0]
        kept = sum(r["dendrites"] > 0 for r in grown)
        if kept == 0:
            out.append(f"`{arm}` at the baseline's width never kept a dendrite (no growth step "
                       "beat the plain model on validation), so it is the baseline retrained: "
                       f"{_diff(c)}.")
            continue
        ratio = _mean(block, arm, "params") / _mean(block, "baseline", "params")
        out.append(f"`{arm}` at the baseline's width, with {ratio:.2f}× its parameters "
                   f"(dendrites kept in {kept} of {len(grown)} seeds), scores {_diff(c)} against "
                   f"the baseline; verdict: {c['verdict']}. It has no parameter-matched control, "
                   "so even a gain here would not show that dendrites beat width.")
    return out


def _budgets(doc: dict[str, Any], block: dict[str, Any]) -> list[str]:
    """Data efficiency, runs the epoch budget cut short, and training cost."""
    out = []
    de = doc.get("data_efficiency") or {}
    if de:
        parts = []
        for arm, row in de["arms"].items():
            f = row.get("smallest_matching")
            parts.append(f"`{arm}` {'never' if f is None else f'at {f:.0%}'}")
        out.append("Data efficiency: the smallest training fraction at which each arm matches the "
                   f"full-data baseline (mean ≥ {de['reference']['threshold']:.2f}): "
                   + ", ".join(parts) + ".")
    budget = doc["protocol"].get("max_epochs")
    capped = []
    for arm in ("gd", "pb", "compressed"):
        runs = [r for r in doc["runs"] if r["arm"] == arm and float(r["fraction"]) == 1.0]
        hit = sum(r["epochs"] >= budget for r in runs)
        if hit:
            capped.append(f"`{arm}` in {hit} of {len(runs)} seeds")
    if capped:
        out.append(f"The {budget}-epoch budget ended growth before the grower stopped on its own "
                   f"for {', '.join(capped)}; a larger `--epochs` may let those arms grow further.")
    mean = functools.partial(_mean, block)
    costs = [f"`{arm}` {mean(arm, 'seconds') / mean('baseline', 'seconds'):.1f}× the wall time and "
             f"{mean(arm, 'epochs') / mean('baseline', 'epochs'):.1f}× the epochs"
             for arm in ("gd", "pb", "compressed") if arm in block and "baseline" in block]
    if costs:
        out.append("Training cost against the baseline: " + "; ".join(costs) + ".")
    return out


# ---------------------------------------------------------------------------- graphs
def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _dodges(points: dict[str, tuple[float, float]], y_span: float) -> dict[str, float]:
    """Horizontal offsets in points for arms whose markers would sit on one another (e.g.
    compressed and control when no dendrite was kept): side by side, 14 points apart."""
    groups: list[list[str]] = []
    for arm, (x, y) in points.items():
        for group in groups:
            gx, gy = points[group[0]]
            if abs(math.log10(x / gx)) < 0.03 and abs(y - gy) < 0.03 * y_span:
                group.append(arm)
                break
        else:
            groups.append([arm])
    return {arm: (i - (len(g) - 1) / 2) * 14.0 for g in groups for i, arm in enumerate(g)}


def _crowded(arm: str, points: dict[str, tuple[float, float]], y_span: float) -> bool:
    """Another arm sits close enough that a text label would cover it."""
    x, y = points[arm]
    return any(abs(math.log10(ox / x)) < 0.15 and abs(oy - y) < 0.08 * y_span
               for other, (ox, oy) in points.items() if other != arm)


def comparison_plot(doc: dict[str, Any], path: Path, fraction: str = "1") -> Path | None:
    """Test score versus parameters: every arm a point, with mean ± std error bars over seeds;
    coinciding arms are drawn side by side."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    from matplotlib.transforms import offset_copy

    block = doc["summary"].get(fraction, {})
    if not block:
        return None
    fig = _new_figure(7.5, 5)
    ax = fig.add_subplot()
    arms = _arms(block)
    xs = {arm: block[arm]["nonzero_params" if arm == "pruned" else "params"] for arm in arms}
    ys = {arm: block[arm]["test_score"] for arm in arms}
    points = {arm: (xs[arm]["mean"], ys[arm]["mean"]) for arm in arms}
    spread = [ys[a]["mean"] + sign * (ys[a]["std"] or 0) for a in arms for sign in (-1, 1)]
    y_span = (max(spread) - min(spread)) or 1.0
    dodge = _dodges(points, y_span)
    for arm in arms:
        s, (x, y) = block[arm], points[arm]
        color, marker = COLORS.get(arm, "k"), MARKERS.get(arm, "o")
        shifted = offset_copy(ax.transData, fig=fig, x=dodge[arm], y=0, units="points")
        ax.errorbar(x, y, xerr=xs[arm]["std"] or None, yerr=ys[arm]["std"] or None,
                    fmt=marker, color=color, ms=9, capsize=4, label=ARM_LABEL.get(arm, arm),
                    mfc="white" if arm in ("control", "pruned") else color, mew=2,
                    transform=shifted, zorder=3)
        if not _crowded(arm, points, y_span):  # near others, the legend names it
            ax.annotate(arm, (x, y), textcoords="offset points", xytext=(dodge[arm] + 9, 6),
                        fontsize=9, color=color)
        if arm == "pruned":  # its dense size, for honesty
            ax.plot([x, s["params"]["mean"]], [y] * 2, ls=":", color=color, lw=1)
            ax.plot(s["params"]["mean"], y, marker, color=color, mfc="none", ms=7, alpha=0.6)
        # a shifted transform does not grow the data limits: add the bars' ends
        dx, dy = xs[arm]["std"] or 0.0, ys[arm]["std"] or 0.0
        ax.update_datalim([(max(x - dx, x / 2), y - dy), (x + dx, y + dy)])
    ax.autoscale_view()
    if "compressed" in block and "control" in block and points["compressed"] != points["control"]:
        ax.annotate("", xy=points["compressed"], xytext=points["control"],
                    arrowprops={"arrowstyle": "->", "color": "#444", "lw": 1, "ls": "--"})
    ax.set_xscale("log")
    # labelled ticks at 1, 2 and 5 of each decade ("2k", "5k", "10k"); no crowded minor labels
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _count(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.12, y=0.08)  # room for the labels at the edges
    ax.set_xlabel("parameters (non-zero for pruned; log scale)")
    ax.set_ylabel(score_name(doc))
    p = doc["protocol"]
    n = max(len(s["seeds"]) for s in block.values())
    spread_note = f"mean ± std over {n} seeds" if n > 1 else "one seed: single runs, no error bars"
    ax.set_title(f"{p['dataset']} / {p['model']}: {score_name(doc)} vs parameters "
                 f"({spread_note})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    return path


def data_efficiency_plot(doc: dict[str, Any], path: Path) -> Path | None:
    """Test score versus training fraction for every arm, the full-data baseline as a band."""
    summary = doc["summary"]
    if len(summary) < 2:
        return None
    fig = _new_figure(7.5, 4.5)
    ax = fig.add_subplot()
    fracs = sorted(summary, key=float)
    arms = [a for a in ARM_ORDER if any(a in summary[f] for f in fracs)]
    for arm in arms:
        pts = [(float(f), summary[f][arm]["test_score"]) for f in fracs if arm in summary[f]]
        ax.errorbar([x for x, _ in pts], [s["mean"] for _, s in pts],
                    yerr=[s["std"] for _, s in pts], marker=MARKERS.get(arm, "o"),
                    color=COLORS.get(arm, "k"), capsize=3, label=arm)
    ref = doc.get("data_efficiency", {}).get("reference")
    if ref:
        ax.axhspan(ref["mean"] - ref["std"], ref["mean"] + ref["std"], color="#1f77b4", alpha=0.12)
        ax.axhline(ref["mean"], color="#1f77b4", ls="--", lw=1, label="full-data baseline")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks([float(f) for f in fracs], [f"{float(f):.0%}" for f in fracs])
    ax.set_xlabel("fraction of the training split")
    ax.set_ylabel(score_name(doc))
    ax.set_title("data efficiency", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    return path


def _growth_graphs(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """Copy each dendritic arm's growth graph (first seed, full data) next to the report."""
    found = {}
    for arm in ("gd", "pb", "compressed"):
        runs = sorted((r for r in doc["runs"] if r["arm"] == arm and float(r["fraction"]) == 1.0),
                      key=lambda r: r["seed"])
        if not runs:
            continue
        dest = out / f"growth-{arm}.png"
        src = out / "runs" / runs[0]["run_id"] / "growth.png"
        if src.exists():
            shutil.copyfile(src, dest)
        if dest.exists():
            found[arm] = dest
    return found


# ---------------------------------------------------------------------------- the report
def render_report(out: str | Path, markdown: str | Path | None = None) -> Path:
    """Write ``report.md`` (or ``markdown``), comparison.png, data-efficiency.png and the growth
    graphs from ``out/results.json``; returns the markdown path."""
    out = Path(out)
    doc = load_results(out)
    doc.update(derive(doc["runs"]))  # files written by older versions get today's statistics
    md_path = Path(markdown) if markdown is not None else out / "report.md"

    def link(p: Path) -> str:
        return Path(os.path.relpath(p, md_path.parent)).as_posix()

    lines = _intro(doc) + ["## What the numbers say", ""]
    lines += [f"- {s}" for s in narrative(doc)] + [""]
    lines += _figures(doc, out, link) + _comparison_section(doc)
    env = doc.get("environment", {})
    if env:
        lines += [f"_Environment: Python {env.get('python')}, torch {env.get('torch')}, perforate "
                  f"{env.get('perforate')}, {env.get('threads')} thread(s), {env.get('platform')}._", ""]
    md_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(md_path, "\n".join(lines))
    return md_path


def _budget(p: dict[str, Any]) -> str:
    """The epoch budget and stopping rule in words (results written before the ``stopping``
    setting existed stopped early: ``patience``)."""
    monitored = f"the validation {p.get('monitor', 'score')}"
    if p.get("stopping", "patience") == "budget":
        return (f"{p['max_epochs']} epochs, no early stopping (stopping rule `budget`; the pruned "
                "arm's fine-tuning excepted): each run keeps its best validation epoch; growth at "
                f"a plateau (patience {p['patience']} on the smoothed {monitored.removeprefix('the ')})")
    return (f"at most {p['max_epochs']} epochs, patience {p['patience']} (early stopping and "
            f"growth, both following {monitored})")


def _intro(doc: dict[str, Any]) -> list[str]:
    """Title, how to reproduce, the protocol in a sentence, the results table and its legend."""
    p = doc["protocol"]
    seeds = sorted({r["seed"] for r in doc["runs"]})
    command = doc.get("command") or "perforate bench"
    kind = "demo" if command.startswith("perforate demo") else "bench"
    lines = [f"# perforate {kind}: {p['dataset']} / {p['model']} (width {p['width']})", ""]
    if doc.get("command"):
        lines += ["Reproduce with:", "", "```", doc["command"], "```", ""]
    comp_w = p.get("compressed_width") or max(1, p["width"] // 4)
    return lines + [
        (f"Seeds {', '.join(map(str, seeds))}; scores are mean ± sample std over seeds, "
         if len(seeds) > 1 else f"Seed {seeds[0]} only: one run per arm, so no spread, and a "
         "difference between arms is one run against one, not a conclusion; scores are ") +
        f"{score_name(doc)} on the test split, scored once at the best-validation model. "
        f"Budget: {_budget(p)}, Adam lr "
        f"{p['lr']}, batch {p['batch_size']}. Compressed: width {comp_w} with "
        f"`{p['compressed_mode']}` dendrites.", "",
        _cost_line(doc), "",
        "## Results", "", _markdown_table(results_table(doc)), "",
        "RER: remaining error reduction against the baseline of the same seed, "
        "`(err_base - err_arm) / err_base`. params: every parameter inference needs; pruned "
        "rows also give the non-zero count (FLOPs are dense: no sparse kernels). peak MB: "
        "peak tensor memory of one training step (`pf.peak_training_memory`: parameters, "
        "gradients, optimizer state, activations and temporaries, at the largest architecture "
        "of the run; the same count on every device). Latency: median of the exported model "
        "(`pf.export`), eval mode, no grad. Seconds and latencies are wall-clock on the machine "
        "that ran the bench: on a shared machine they move with its load (hence their large "
        "std); compare them within one table only.", "",
    ]


def _figures(doc: dict[str, Any], out: Path, link: Callable[[Path], str]) -> list[str]:
    """Draw the comparison, data-efficiency and growth graphs; their report sections."""
    lines = []
    if comparison_plot(doc, out / "comparison.png"):
        lines += ["## Accuracy versus parameters", "",
                  f"![accuracy vs parameters]({link(out / 'comparison.png')})", ""]
    if len(doc["summary"]) > 1:
        data_efficiency_plot(doc, out / "data-efficiency.png")
        lines += ["## Data efficiency", "", _data_efficiency_table(doc), "",
                  f"![data efficiency]({link(out / 'data-efficiency.png')})", ""]
    graphs = _growth_graphs(doc, out)
    if graphs:
        monitored = "loss" if doc["protocol"].get("monitor") == "loss" else "score"
        lines += ["## Growth", "", f"The grower's input, the validation {monitored}, per epoch "
                  f"(first seed, full data), with the training "
                  f"{'loss' if monitored == 'loss' else 'accuracy'} beside it; the star marks "
                  "the kept model. Dashed lines mark growth, dash-dotted ones a retried growth, "
                  "shaded spans pb dendrite phases, the dotted line the end (best model "
                  "restored: the parameter count steps to the kept model's).", ""]
        for arm, path in graphs.items():
            lines += [f"### {arm}", "", f"![{arm} growth]({link(path)})", ""]
    return lines


def _comparison_section(doc: dict[str, Any]) -> list[str]:
    comps = doc.get("comparisons", [])
    if not comps:
        return []
    lines = ["## Paired comparisons (test score, same seed)", "",
             "| arm | reference | fraction | difference | seeds | per seed | verdict |",
             "|---|---|---|---|---|---|---|"]
    for c in comps:
        lines.append(f"| {c['arm']} | {c['reference']} | {float(c['fraction']):.0%} | "
                     f"{c['diff_mean']:+.2f} ± {c['diff_std']:.2f} | {c['n']} | {_tally(c)} | "
                     f"{c['verdict']} |")
    return lines + ["", "Verdict: better/worse when the mean paired difference is more than two "
                    "standard errors from zero.", ""]


def _cost_line(doc: dict[str, Any]) -> str:
    runs = doc["runs"]
    total = sum(r.get("seconds") or 0.0 for r in runs)
    threads = doc.get("environment", {}).get("threads")
    return (f"{len(runs)} runs; their training loops took {total / 60:.1f} minutes of wall time "
            f"in all ({threads} torch thread{'s' if threads != 1 else ''}; evaluation, latency "
            "measurement and plotting not included).")


def _data_efficiency_table(doc: dict[str, Any]) -> str:
    summary = doc["summary"]
    fracs = sorted(summary, key=float)
    de = doc.get("data_efficiency", {})
    rows = [["arm", *[f"{float(f):.0%}" for f in fracs], "smallest fraction matching baseline@100%"]]
    arms = [a for a in ARM_ORDER if any(a in summary[f] for f in fracs)]
    for arm in arms:
        smallest = de.get("arms", {}).get(arm, {}).get("smallest_matching")
        rows.append([arm, *[_pm(summary[f][arm]["test_score"]) if arm in summary[f] else "–"
                            for f in fracs],
                     "never" if smallest is None else f"{smallest:.0%}"])
    note = ""
    if de:
        note = (f"\n\nMatching means a mean test score ≥ {de['reference']['threshold']:.2f} (the "
                "full-data baseline's mean minus one standard deviation).")
    return _markdown_table(rows) + note

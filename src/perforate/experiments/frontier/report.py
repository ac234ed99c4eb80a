"""The frontier bench's report: two graphs (score against parameters and against FLOPs) and
``report.md`` with the plain ladder, each dendritic point's distance to the plain frontier and
its paired gain over the plain model it grew from.

Graphs use matplotlib's object API (Figure + FigureCanvasAgg): no pyplot global state.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from perforate.experiments.frontier.distances import _key, pareto
from perforate.experiments.frontier.protocol import CONTROL, REFERENCE
from perforate.experiments.frontier.runs import load_frontier, save_frontier
from perforate.experiments.harness import results as res
from perforate.experiments.harness.text import count as _count
from perforate.experiments.harness.text import pm as _pm
from perforate.files import write_text

_MARKERS = {"gd": ("tab:orange", "s"), "pb": ("tab:green", "^"), REFERENCE: ("tab:red", "D")}
_EXTRA = [("tab:purple", "v"), ("tab:brown", "P"), ("tab:pink", "X"), ("tab:olive", "h"),
          ("navy", "<"), ("gold", ">"), ("tab:cyan", "<"), ("tab:gray", ">")]
COSTS = {"params": "non-zero parameters", "flops_per_sample": "FLOPs per sample"}
_CONTROL_COLORS = ["tab:cyan", "tab:gray", "black", "darkgoldenrod"]


def score_label(doc: dict[str, Any]) -> str:
    from perforate.experiments.data.datasets import load_dataset

    metric = doc["protocol"].get("metric")
    if metric:  # a user's task
        return f"test {metric} ({'higher' if _maximize(doc) else 'lower'} is better)"

    task = load_dataset(doc["protocol"]["dataset"], seed=0).task
    return "test accuracy (%)" if task == "classification" else "test R² × 100"


def _maximize(doc: dict[str, Any]) -> bool:
    return doc["protocol"].get("direction", "max") == "max"


def _percent(doc: dict[str, Any]) -> bool:
    """True when scores are the harness's percentages (accuracy or R² × 100)."""
    return doc["protocol"].get("metric", "") in ("", "accuracy (%)", "R² × 100")


def _unit(doc: dict[str, Any]) -> str:
    return "points" if _percent(doc) else f"({doc['protocol']['metric']})"


def _seeds(doc: dict[str, Any]) -> list[int]:
    """The seeds with finished runs (a time cap or Ctrl-C may leave planned ones out)."""
    return sorted({r["seed"] for r in doc["runs"]}) or list(doc["protocol"]["seeds"])


def _style(arm: str, extra: list[str]) -> tuple[str, str]:
    if arm in _MARKERS:
        return _MARKERS[arm]
    return _EXTRA[extra.index(arm) % len(_EXTRA)]


def frontier_plot(doc: dict[str, Any], cost: str, path: Path) -> Path:
    """Mean ± std over seeds of every plain width and dendritic point, and the plain Pareto
    frontier through the plain means; x is ``cost`` on a log scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    p = doc["protocol"]
    fig = Figure(figsize=(8.5, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _plot_ladder(ax, doc, cost)
    _plot_controls(ax, doc, cost)
    _plot_points(ax, doc, cost)
    ax.set_xscale("log")
    ax.set_xlabel(f"{COSTS[cost]} (log scale)")
    ax.set_ylabel(score_label(doc))
    n = len(_seeds(doc))
    spread = f"mean ± std over {n} seeds" if n > 1 else "one seed: single runs, no error bars"
    ax.set_title(f"{p['dataset']} / {p['model']}: {score_label(doc).split(' (')[0]} vs "
                 f"{COSTS[cost]}\n{spread}, "
                 f"{p['max_epochs']}-epoch budget for every run (stopping: {p['stopping']})\n"
                 "arrows: from the plain width a dendritic model grew from"
                 + ("; horizontal bars: its size's spread over seeds" if n > 1 else ""), fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower right" if _maximize(doc) else "upper right")
    fig.tight_layout()
    fig.savefig(path)
    return path


def _plot_ladder(ax, doc: dict[str, Any], cost: str) -> None:
    """The plain widths (mean ± std) and their Pareto frontier, flat past the best width."""
    ladder = doc["frontier"]["ladder"]
    xs = [ladder[w][cost]["mean"] for w in ladder]
    ys = [ladder[w]["test_score"]["mean"] for w in ladder]
    es = [ladder[w]["test_score"]["std"] for w in ladder]
    ax.errorbar(xs, ys, yerr=es, fmt="o", color="tab:blue", capsize=3, label="plain, by width")
    front = pareto(list(zip(xs, ys)), _maximize(doc))
    front_x, front_y = [c for c, _ in front], [s for _, s in front]
    if max(xs) > front_x[-1]:  # past its best width the frontier stays at that width's score
        front_x.append(max(xs))
        front_y.append(front_y[-1])
    ax.plot(front_x, front_y, "-", color="tab:blue", alpha=0.6, label="plain Pareto frontier (means)")
    for w, x, y in zip(ladder, xs, ys):
        ax.annotate(f"w{w}", (x, y), textcoords="offset points", xytext=(4, -11), fontsize=7,
                    color="tab:blue")


def _plot_controls(ax, doc: dict[str, Any], cost: str) -> None:
    """The sparse plain ladders, dashed, hollow markers."""
    inputs = doc["protocol"].get("control_inputs", 8)
    for i, (arm, rows) in enumerate(doc["frontier"].get("controls", {}).items()):
        color = _CONTROL_COLORS[i % len(_CONTROL_COLORS)]
        ws = [w for w in rows if rows[w][cost]["mean"] is not None
              and math.isfinite(rows[w][cost]["mean"])]
        cx = [rows[w][cost]["mean"] for w in ws]
        cy = [rows[w]["test_score"]["mean"] for w in ws]
        ax.errorbar(cx, cy, yerr=[rows[w]["test_score"]["std"] for w in ws], fmt="o", mfc="none",
                    color=color, capsize=2, label=f"{arm}, by width ({inputs} "
                    "inputs per unit of the first layer)")
        ax.plot(cx, cy, "--", color=color, alpha=0.6)


def _plot_points(ax, doc: dict[str, Any], cost: str) -> None:
    """Each dendritic point, with an arrow from the plain width it grew from."""
    f = doc["frontier"]
    ladder = f["ladder"]
    extra = [a for a in dict.fromkeys(pt["arm"] for pt in f["points"]) if a not in _MARKERS]
    seen = set()
    for pt in f["points"]:
        color, marker = _style(pt["arm"], extra)
        x, y = pt[cost]["mean"], pt["test_score"]["mean"]
        if x is None or not math.isfinite(x):  # FLOPs that could not be counted
            continue
        how = ("dendrites built in from the start" if pt["arm"].startswith("prebuilt")  # benchmarks/issue20
               else "plain, width-matched to its grown arm" if pt["arm"].startswith(CONTROL)
               else "grown from a narrow width")
        label = None if pt["arm"] in seen else f"{pt['arm']} ({how})"
        seen.add(pt["arm"])
        start = ladder.get(_key(pt["width"]))
        left = pt[cost]["std"]
        if start is not None and not pt["arm"].startswith(CONTROL):  # never smaller than its start
            left = max(0.0, min(left, x - start[cost]["mean"]))
        ax.errorbar(x, y, xerr=[[left], [pt[cost]["std"]]], yerr=pt["test_score"]["std"], fmt=marker,
                    color=color, capsize=3, label=label, alpha=0.9)
        if start is not None:
            ax.annotate("", (x, y), (start[cost]["mean"], start["test_score"]["mean"]),
                        arrowprops={"arrowstyle": "->", "color": color, "alpha": 0.4, "lw": 0.8})


def headline(doc: dict[str, Any]) -> str:
    """The verdict: did dendrites beat, match or lose to width at equal parameters (and FLOPs),
    by how much ± the spread over how many seeds, or too few to tell.

    It judges the best dendritic setting: "beat" when its mean distance to the plain frontier is
    more than two standard errors above zero, "lost" when more than two below, "matched"
    otherwise; one seed cannot tell. When plain sparse controls ran (``plain-<choice>``), a
    second sentence names the best of them and says whether dendrites add to sparsity."""
    sparsity = _sparsity(doc)
    return _width_headline(doc) + (f" {sparsity['sentence']}" if sparsity else "")


def _width_headline(doc: dict[str, Any]) -> str:
    points, p = _grown(doc), doc["protocol"]
    if not points:
        return "No dendritic run has finished yet: nothing to compare with width."
    best = max(points, key=lambda pt: pt["distance"]["mean"])
    d, fl = best["distance"], best["distance_flops"]
    n, unit = d["n"], _unit(doc)
    setting = (f"`{best['arm']}` grown from width {best['width']}"
               + (f", the best of {len(points)} dendritic settings" if len(points) > 1 else ""))
    side = ("level with" if d["mean"] == 0 else
            f"{abs(d['mean']):.3g} {unit} {'better' if d['mean'] > 0 else 'worse'} than")
    spread = f"± {d['std']:.2g} over {n} seeds" if n > 1 else "1 seed"
    where = f"{side} the plain frontier at equal parameters ({spread})"
    if fl["n"]:
        where += (f"; {fl['mean']:+.3g}" + (f" ± {fl['std']:.2g}" if n > 1 else "")
                  + " at equal FLOPs")
    on = f"on {p['model']}"
    if n < 2:
        return (f"Too few seeds to tell {on}: {setting} is {where}; one seed cannot separate "
                "dendrites from noise, run 3 or more.")
    word = {1: "beat", -1: "lost to", 0: "matched"}[res.clear_sign(d["mean"], d["std"], n)]
    clear = " (no clear difference)" if word == "matched" else ""
    text = f"Dendrites {word} width{clear} at equal parameters {on}: {setting}, {where}"
    if n < 3:
        text += "; 2 seeds make a weak test, 3 or more settle it better"
    return text + "."


def _clear(d: dict[str, float], above: int, doc: dict[str, Any]) -> bool:
    """A distance clearly above zero: ≥ 1 point with most seeds above (percent scores), or more
    than two standard errors above zero (a user's metric, 2 seeds or more)."""
    n = d["n"]
    if not n or not math.isfinite(d["mean"]):
        return False
    if _percent(doc):
        return d["mean"] >= 1.0 and above > n / 2
    return n >= 2 and d["mean"] - 2 * d["std"] / math.sqrt(n) > 0


def _sparsity(doc: dict[str, Any]) -> dict[str, Any] | None:
    """What the plain sparse controls (``plain-<choice>``) say, or None when none ran: the
    best control and its best width against the dense frontier, the best dendritic point
    against the best plain frontier (dense and sparse ladders together), the conclusion."""
    f = doc["frontier"]
    cps = [cp for cp in f.get("control_points") or [] if cp["distance"]["n"]]
    if not cps:
        return None
    # read where the dense ladder has points: past its widest width its frontier is only extended flat
    widest = max((row["params"]["mean"] for row in f["ladder"].values()), default=0)
    cps = [cp for cp in cps if cp["params"]["mean"] <= widest] or cps
    by_arm: dict[str, list] = {}
    for cp in cps:
        by_arm.setdefault(cp["arm"], []).append(cp)
    best_arm = max(by_arm, key=lambda a: max(cp["distance"]["mean"] for cp in by_arm[a]))
    top = max(by_arm[best_arm], key=lambda cp: cp["distance"]["mean"])
    unit = _unit(doc)
    pts = [pt for pt in _grown(doc) if pt.get("distance_best", {}).get("n")]
    best = max(pts, key=lambda pt: pt["distance_best"]["mean"]) if pts else None
    wins = [pt for pt in pts if _clear(pt["distance_best"], pt["above_best"], doc)]
    sparse_gain = _clear(top["distance"], top["above"], doc)
    if best is None:
        conclusion = None
    elif wins:
        conclusion = "dendrites add to sparsity"
    elif sparse_gain:
        conclusion = "sparsity, not dendrites"
    else:
        conclusion = "neither sparse plain layers nor dendrites beat the plain frontiers clearly"
    sentence = (f"Best plain sparse control: `{best_arm}` (width {top['width']}: "
                f"{_pm(top['distance'], sign=True)} {unit} from the dense plain frontier)")
    if best is not None:
        sentence += (f"; against the best plain frontier (dense and sparse ladders together) the "
                     f"best dendritic setting, `{best['arm']}` from width {best['width']}, lies "
                     f"{_pm(best['distance_best'], sign=True)} {unit}: {conclusion}")
    return {"arm": best_arm, "top": top, "best": best, "wins": wins, "conclusion": conclusion,
            "sentence": sentence + "."}


def control_verdict(doc: dict[str, Any]) -> list[str]:
    """Plain sentences about the plain sparse controls: the best one, and whether any dendritic
    point beats the best plain frontier (dense and sparse ladders together)."""
    s = _sparsity(doc)
    if s is None:
        return []
    top, best, unit = s["top"], s["best"], _unit(doc)
    lines = [f"Best plain control: `{s['arm']}` (a plain model whose first layer reads "
             f"{doc['protocol'].get('control_inputs', 8)} inputs per unit); at width {top['width']} "
             f"({_count(top['params']['mean'])} non-zero parameters) it lies "
             f"{_pm(top['distance'], sign=True)} {unit} from the dense plain frontier "
             f"({top['above']} of {top['distance']['n']} seeds above)."]
    if best is None:
        return lines
    n = best["distance_best"]["n"]
    by = "1 point or more" if _percent(doc) else "more than two standard errors"
    lines.append(f"Against the best plain frontier (dense and sparse ladders together), the best "
                 f"dendritic point is `{best['arm']}` from width {best['width']}: "
                 f"{_pm(best['distance_best'], sign=True)} {unit} at equal non-zero parameters "
                 f"({best['above_best']} of {n} seeds above), "
                 f"{_pm(best['distance_best_flops'], sign=True)} at equal FLOPs; the plain ladder "
                 f"best at its size is `{best['best_plain']}`.")
    if s["wins"]:
        lines.append("Dendrites add to sparsity: " + ", ".join(
            f"{pt['arm']} w{pt['width']} ({_pm(pt['distance_best'], sign=True)})" for pt in s["wins"])
            + f" lie {by} above every plain ladder.")
    elif s["conclusion"] == "sparsity, not dendrites":
        lines.append(f"Sparsity, not dendrites: the restricted plain control beats the dense "
                     f"ladder by {by}, and no dendritic setting lies {by} above the best plain "
                     "frontier.")
    else:
        lines.append(f"Neither restricted plain layers nor dendrites lie {by} above the best "
                     "plain frontier.")
    return lines


def verdict(doc: dict[str, Any]) -> list[str]:
    """Plain sentences: the headline, the best point against the frontier, no regret per arm,
    each grown arm against its width-matched control (``control-<arm>``), and the plain sparse
    controls (``plain-<choice>``) when they ran."""
    points = _grown(doc)
    if not points:
        return [headline(doc)] + control_verdict(doc)
    return _verdict(doc, points) + _controls(doc) + control_verdict(doc)


def _grown(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The dendritic points (not the width-matched controls, which are plain)."""
    return [pt for pt in doc["frontier"]["points"] if not pt["arm"].startswith(CONTROL)]


def _controls(doc: dict[str, Any]) -> list[str]:
    lines = []
    for pt in doc["frontier"]["points"]:
        diff = pt.get("grown_minus_control")
        if diff and diff["n"]:
            lines.append(
                f"Against its width-matched control (plain, width {pt['control_width']['mean']:g} "
                f"for the same parameters, as many epochs, the same optimizer restarts), "
                f"`{pt['arm'][len(CONTROL):]}` from width {pt['width']}: "
                f"{_pm(diff, sign=True)} {_unit(doc)} over {diff['n']} seed(s), paired "
                "(positive: the dendrites did better).")
    return lines


def _verdict(doc: dict[str, Any], points: list[dict[str, Any]]) -> list[str]:
    best = max(points, key=lambda pt: pt["distance"]["mean"])
    n = best["distance"]["n"]
    if not _percent(doc):  # a user's metric: no thresholds in its units
        return [headline(doc), "Against the plain model it grew from, paired by seed (positive "
                "is better): " + "; ".join(
                    f"{pt['arm']} w{pt['width']} {_pm(pt['gain'], sign=True)} "
                    f"({pt['better']} better, {pt['worse']} worse)"
                    for pt in points if pt["gain"] is not None) + "."]
    lines = [headline(doc),
             f"Closest to (or above) the plain frontier: `{best['arm']}` grown from width "
             f"{best['width']}, {_pm(best['distance'], sign=True)} points at equal parameters "
             f"({best['above']} of {n} seeds above)."]
    wins = [pt for pt in points if pt["distance"]["mean"] >= 1.0 and pt["above"] > n / 2]
    lines.append("At least one dendritic setting lies ≥ 1 point above the plain frontier: "
                 + ", ".join(f"{pt['arm']} w{pt['width']}" for pt in wins) if wins else
                 "No dendritic setting lies 1 point or more above the plain frontier: at equal "
                 "parameters, a wider plain model scores as well or better.")
    regrets = [pt for pt in points if pt["gain"] is not None and pt["gain"]["mean"] < -0.3]
    lines.append("No regret: every dendritic arm ends within 0.3 points of (or above) the plain "
                 "model it grew from, paired by seed." if not regrets else
                 "Regret (mean more than 0.3 points below the plain model it grew from): "
                 + ", ".join(f"{pt['arm']} w{pt['width']} {_pm(pt['gain'], sign=True)}" for pt in regrets))
    return lines


def _training(doc: dict[str, Any]) -> str:
    """The optimizer and batches every arm trains with."""
    p, task = doc["protocol"], doc.get("task")
    if task:  # a user's task: its loaders set the batches
        return f"optimizer {task['optimizer']}, your loaders' batches"
    return f"Adam lr {p['lr']:g}, batch {p['batch_size']}"


def _task_line(doc: dict[str, Any]) -> str:
    task = doc.get("task")
    if not task:
        return ""
    return (f" Your task: model `{task['model']}`, data `{task['data']}`, training loop "
            f"`{task['train_epoch']}`, evaluation `{task['evaluate']}`, optimizer "
            f"`{task['optimizer']}`.")


def render_frontier(out: str | Path) -> Path:
    """Recompute the statistics, draw both graphs and write ``out/report.md``; returns its path."""
    out = Path(out)
    doc = save_frontier(out, load_frontier(out))
    f = doc["frontier"]
    flops = all(math.isfinite(row["flops_per_sample"]["mean"]) for row in f["ladder"].values())
    for cost, name in (("params", "frontier-params.png"), ("flops_per_sample", "frontier-flops.png")):
        if cost == "params" or flops:  # FLOPs of a model the counter cannot call are unknown
            frontier_plot(doc, cost, out / name)
        else:
            (out / name).unlink(missing_ok=True)
    score = score_label(doc)
    lines = [*_report_head(doc, score, flops), *_ladder_table(doc, score),
             *_control_tables(doc, score), *_points_table(doc, score),
             *_against_ladders_table(doc), *_arms_line(doc),
             "", "## What the numbers say", "", *(f"- {line}" for line in verdict(doc))]
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _report_head(doc: dict[str, Any], score: str, flops: bool) -> list[str]:
    """Title, verdict, the command, how every arm trained and what the numbers mean, graphs."""
    p = doc["protocol"]
    return [f"# Frontier: {p['dataset']} / {p['model']}", "", f"**Verdict:** {headline(doc)}", "",
            "Reproduce with:", "", "```",
            doc.get("command") or "(command not recorded)", "```", "",
            f"Seeds {', '.join(map(str, _seeds(doc)))}; {score}, read once at each run's best "
            f"validation epoch. Every arm: {_training(doc)}, "
            f"{p['max_epochs']}-epoch budget, stopping rule `{p['stopping']}` (patience "
            f"{p['patience']} on the smoothed validation score), one improvement rule "
            "(`Config.better`). The plain frontier of a seed is the upper envelope of its plain "
            "widths (linear in log-parameters between them); a dendritic point's distance is "
            "its score minus that frontier at its own parameter count, paired by seed; its gain "
            "is its score minus the plain model of its starting width, same seed."
            + ("" if _maximize(doc) else " The score is minimised here, so both are signed "
               "the other way: positive still means better than width.")
            + _task_line(doc), "",
            "![score vs parameters](frontier-params.png)", "",
            *(["![score vs FLOPs](frontier-flops.png)", ""] if flops else
              ["(FLOPs could not be counted on this model: no FLOPs graph.)", ""])]


def _ladder_table(doc: dict[str, Any], score: str) -> list[str]:
    lines = ["## Plain ladder", "",
             f"| width | params | FLOPs/sample | {score} |", "|---|---|---|---|"]
    for w, row in doc["frontier"]["ladder"].items():
        lines.append(f"| {w} | {_count(row['params']['mean'])} | {_count(row['flops_per_sample']['mean'])} "
                     f"| {_pm(row['test_score'])} (n={row['test_score']['n']}) |")
    return lines


def _control_tables(doc: dict[str, Any], score: str) -> list[str]:
    """One table per plain sparse control: each width's distance to the dense frontier."""
    p, f, lines = doc["protocol"], doc["frontier"], []
    for arm, rows in f.get("controls", {}).items():
        lines += ["", f"## Plain control `{arm}` ({p.get('control_inputs', 8)} inputs per "
                  "unit of the first layer; distance to the dense frontier, paired by seed)", "",
                  f"| width | non-zero params | FLOPs/sample | {score} | distance (equal params) | "
                  "distance (equal FLOPs) |", "|---|---|---|---|---|---|"]
        for cp in (cp for cp in f.get("control_points", []) if cp["arm"] == arm):
            lines.append(f"| {cp['width']} | {_count(cp['params']['mean'])} | "
                         f"{_count(cp['flops_per_sample']['mean'])} | {_pm(cp['test_score'])} "
                         f"(n={cp['test_score']['n']}) | {_pm(cp['distance'], sign=True)} "
                         f"({cp['above']}/{cp['distance']['n']} above) | "
                         f"{_pm(cp['distance_flops'], sign=True)} |")
    return lines


def _points_table(doc: dict[str, Any], score: str) -> list[str]:
    """Each dendritic point: its distance to the plain frontier and its gain over its width."""
    lines = ["", "## Dendritic points", "",
             f"| arm | from width | dendrites/layer | params | {score} | distance to plain frontier "
             "(equal params) | seeds above | distance (equal FLOPs) | gain over its width "
             "(better/worse) | epochs |", "|---|---|---|---|---|---|---|---|---|---|"]
    for pt in doc["frontier"]["points"]:
        n = pt["distance"]["n"]
        gain = "–" if pt["gain"] is None else f"{_pm(pt['gain'], sign=True)} ({pt['better']}/{pt['worse']})"
        lines.append(
            f"| {pt['arm']} | {pt['width']} | {pt['dendrites']['mean']:.1f} | {_count(pt['params']['mean'])} "
            f"| {_pm(pt['test_score'])} | {_pm(pt['distance'], sign=True)} | {pt['above']}/{n} "
            f"| {_pm(pt['distance_flops'], sign=True)} ({pt['above_flops']}/{n} above) | {gain} "
            f"| {pt['epochs']['mean']:.0f} |")
    return lines


def _against_ladders_table(doc: dict[str, Any]) -> list[str]:
    """With plain controls: each dendritic point against every plain ladder and the best one."""
    f = doc["frontier"]
    if not f.get("controls"):
        return []
    lines = ["", f"## Dendritic points against every plain ladder ({_unit(doc)}, positive is better)",
             "", "| arm | from width | " + " | ".join(
                 f"distance to `{a}`" for a in ["plain", *f["controls"]])
             + " | distance to the best plain frontier (equal params / equal FLOPs) | best ladder |",
             "|---|---|" + "---|" * (len(f["controls"]) + 3)]
    for pt in f["points"]:
        if "against" not in pt:
            continue
        cells = [_pm(pt["against"][a]["distance"], sign=True) if a in pt["against"] else "–"
                 for a in ["plain", *f["controls"]]]
        best = (f"{_pm(pt['distance_best'], sign=True)} ({pt['above_best']}/{pt['distance_best']['n']} "
                f"above) / {_pm(pt['distance_best_flops'], sign=True)}") if "distance_best" in pt else "–"
        lines.append(f"| {pt['arm']} | {pt['width']} | " + " | ".join(cells)
                     + f" | {best} | `{pt['best_plain']}` |")
    return lines


def _arms_line(doc: dict[str, Any]) -> list[str]:
    """What each dendritic arm is (its Config overrides), when any has some."""
    p = doc["protocol"]
    variants = {a: v for a, v in p["variants"].items() if a in p["arms"]}
    if not (variants or p.get("config")):
        return []
    return ["", "Arms: " + "; ".join(f"`{a}` = {v}" for a, v in variants.items())
            + (f"; every arm also {p['config']}" if p.get("config") else "")
            + ("; `reference` = perforatedai 3.2.9 with its defaults" if REFERENCE in p["arms"] else "")]

"""The sweep report: ``report.md`` plus PNGs, from the trial records of either backend.

- best trials, each beside its baseline;
- ``parallel_coordinates.png``: every hyperparameter that varied, and the metric;
- ``importance.png``: fANOVA importance (``optuna.importance.FanovaImportanceEvaluator``) of each
  hyperparameter for the metric and for the improvement over baseline, computed on the complete
  trials of either backend (the records are loaded into an in-memory Optuna study);
- ``improvement.png``: distribution of the dendritic-minus-baseline test score across trials;
- ``history.png``: the metric per trial and the best so far.

Optionally the table and plots are logged to W&B (offline unless ``WANDB_MODE`` says otherwise).
"""
from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..files import write_text
from .space import Parameter, SweepSpace
from .trial import TrialRecord, best_record, versions

PLOTS = ("parallel_coordinates.png", "importance.png", "improvement.png", "history.png")


def write_report(out: str | Path, space: SweepSpace, records: list[TrialRecord], *,
                 backend: str, command: str, wandb: bool = False, top: int = 10) -> Path:
    """Write ``report.md`` and the PNGs into ``out``; return the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = sorted(records, key=lambda r: r.number)
    complete = [r for r in records if r.state == "COMPLETE"]
    importance, importance_note = param_importances(space, complete)

    _save(_parallel_coordinates(space, records), out / "parallel_coordinates.png", dpi=90)
    _save(_importance_plot(importance, importance_note), out / "importance.png")
    _save(_improvement_plot(space, complete), out / "improvement.png")
    _save(_history_plot(space, records), out / "history.png")

    text = _markdown(space, records, complete, importance, importance_note, backend, command, top)
    path = out / "report.md"
    write_text(path, text)
    if wandb:
        log_to_wandb(out, space, records)
    return path


# ---------------------------------------------------------------- analysis


def param_importances(space: SweepSpace, complete: list[TrialRecord]
                      ) -> tuple[dict[str, dict[str, float]], str]:
    """fANOVA importance per searched parameter: {"metric": {...}, "improvement": {...}}.

    Returns ({}, reason) when it cannot be computed (too few trials, Optuna missing).
    """
    searched = [p for p in space.searched if _varies(p, complete)]
    if len(complete) < 3 or not searched:
        return {}, "needs at least 3 complete trials and a hyperparameter that varied"
    try:
        import optuna
        from optuna.importance import FanovaImportanceEvaluator, get_param_importances
        from optuna.trial import create_trial
    except ImportError:
        return {}, "Optuna is not installed (pip install 'perforate[optuna]')"
    from .optuna_backend import distribution

    dists = {p.name: distribution(p) for p in searched}
    try:
        study = optuna.create_study(direction=space.goal)
        study.add_trials([
            create_trial(value=r.value, distributions=dists,
                         params={p.name: r.hyperparameters[p.name] for p in searched},
                         user_attrs={"improvement": r.improvement["val"]})
            for r in complete])
        out: dict[str, dict[str, float]] = {}
        targets = {"metric": None, "improvement": lambda t: t.user_attrs["improvement"]}
        for label, target in targets.items():
            out[label] = get_param_importances(
                study, evaluator=FanovaImportanceEvaluator(seed=0), target=target)
    except (ValueError, RuntimeError) as exc:  # e.g. records outside the configured ranges
        return {}, f"importance analysis failed: {exc}"
    return out, "fANOVA (optuna.importance.FanovaImportanceEvaluator, seed 0) on complete trials"


def _varies(param: Parameter, records: list[TrialRecord]) -> bool:
    return len({repr(r.hyperparameters.get(param.name)) for r in records}) > 1


def effects(space: SweepSpace, complete: list[TrialRecord]) -> list[tuple[str, str]]:
    """Per dendrite hyperparameter: how the validation improvement over baseline moves with it.

    Few distinct values: mean improvement per value. Otherwise: Spearman rank correlation.
    """
    rows = []
    for p in space.searched:
        if p.kind != "dendrite" or not _varies(p, complete):
            continue
        values = [r.hyperparameters[p.name] for r in complete]
        gains = [r.improvement["val"] for r in complete]
        distinct = sorted(set(values), key=lambda v: (str(type(v)), v))
        if len(distinct) <= 6:
            parts = []
            for v in distinct:
                g = [gain for val, gain in zip(values, gains) if val == v]
                parts.append(f"{_fmt(v)}: {statistics.mean(g):+.2f} (n={len(g)})")
            rows.append((p.name, "; ".join(parts)))
        else:
            rho = _spearman([float(v) for v in values], gains)
            rows.append((p.name, f"Spearman ρ = {rho:+.2f} over {len(values)} trials"))
    return rows


def _spearman(x: list[float], y: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):  # average ranks of ties
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else 0.0


# ---------------------------------------------------------------- markdown


def _markdown(space: SweepSpace, records: list[TrialRecord], complete: list[TrialRecord],
              importance: dict[str, dict[str, float]], importance_note: str, backend: str,
              command: str, top: int) -> str:
    lines = _setup(space, records, backend, command)
    lines += ["## What the sweep found", ""]
    lines += [f"- {s}" for s in findings(space, complete, importance)] + [""]
    lines += _best_trials(space, complete, top)
    lines += _improvement(records, complete)
    lines += ["## Hyperparameters against the metric", "",
              "![parallel coordinates](parallel_coordinates.png)", "",
              "One line per trial, coloured by the metric; pruned trials in grey.", ""]
    lines += _importance(space, importance, importance_note)
    rows = effects(space, complete)
    if rows:
        lines += ["## Effect of each dendrite hyperparameter on Δ val", "",
                  "| hyperparameter | mean Δ val per value, or rank correlation |", "|---|---|"]
        lines += [f"| {name} | {text} |" for name, text in rows] + [""]
    lines += ["## Metric over the sweep", "", "![history](history.png)", ""]
    return "\n".join(lines)


def _setup(space: SweepSpace, records: list[TrialRecord], backend: str, command: str) -> list[str]:
    """Title, how to reproduce, and what was searched, fixed and paired."""
    e = space.experiment
    counts = {s: sum(r.state == s for r in records) for s in ("COMPLETE", "PRUNED", "FAIL")}
    hours = sum(r.seconds for r in records) / 3600
    return [
        f"# Sweep `{space.name}`: dendrites on {e.dataset} / {e.model}", "",
        "Reproduce:", "", "```", command, "```", "",
        *([space.description, ""] if space.description else []),
        f"- backend: **{backend}**, method: **{space.method}**, metric: **{space.metric}** "
        f"({space.goal}); early termination: {space.early_terminate.type} "
        f"(min {space.early_terminate.min_iter} epochs)",
        f"- trials: {len(records)} ({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
        f"{counts['FAIL']} failed); summed trial time {hours:.2f} h",
        f"- fixed: dataset {e.dataset} (train fraction {e.train_fraction}), model {e.model}, "
        f"epoch budget {e.max_epochs} per run, seed {e.seed}, growth and checkpoints follow "
        f"validation {e.monitor}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "- each trial is paired with a baseline: the same model, width, lr, batch size and "
        "weight decay trained without dendrites for the full epoch budget (best-validation "
        "epoch kept). Scores are accuracy in percent (R² × 100 for regression); "
        "Δ = dendritic − baseline in percent points; RER = remaining error reduction on test.",
        "",
    ]


def _best_trials(space: SweepSpace, complete: list[TrialRecord], top: int) -> list[str]:
    lines = [f"## Best trials (top {min(top, len(complete))} of {len(complete)} complete)", ""]
    searched = [p.name for p in space.searched]
    head = ["#", space.metric, "val", "base val", "Δ val", "test", "base test", "Δ test",
            "RER test", "params (base)", "dendrites"] + searched
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ranked = sorted(complete, key=lambda r: r.value, reverse=space.maximize)[:top]
    for r in ranked:
        d, b, imp = r.dendritic, r.baseline, r.improvement
        cells = [str(r.number), f"{r.value:.2f}", f"{d['val']:.2f}", f"{b['val']:.2f}",
                 f"{imp['val']:+.2f}", f"{d['test']:.2f}", f"{b['test']:.2f}",
                 f"{imp['test']:+.2f}", f"{imp['rer_test']:+.3f}",
                 f"{d['params']} ({b['params']})", str(d["dendrites"])]
        cells += [_fmt(r.hyperparameters.get(n)) for n in searched]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", "All trials, with every setting and score: `trials.jsonl` / `results.json`.", ""]


def _improvement(records: list[TrialRecord], complete: list[TrialRecord]) -> list[str]:
    lines = ["## Improvement over the baseline", "", "![improvement](improvement.png)", ""]
    if not complete:
        return lines
    dv = [r.improvement["val"] for r in complete]
    dt = [r.improvement["test"] for r in complete]
    return lines + [
        f"- validation: dendrites beat their baseline in {sum(x > 0 for x in dv)} of "
        f"{len(dv)} complete trials; Δ val median {statistics.median(dv):+.2f}, "
        f"range {min(dv):+.2f} … {max(dv):+.2f}",
        f"- test: better in {sum(x > 0 for x in dt)} of {len(dt)}; Δ test median "
        f"{statistics.median(dt):+.2f}, range {min(dt):+.2f} … {max(dt):+.2f}",
        f"- baselines: {sum(not r.baseline.get('reused', True) for r in records)} trained, "
        f"{sum(bool(r.baseline.get('reused')) for r in records)} reused from the cache "
        "(one per distinct model setting)", ""]


def _importance(space: SweepSpace, importance: dict[str, dict[str, float]], note: str) -> list[str]:
    lines = ["## Importance of each hyperparameter", ""]
    if not importance:
        return lines + [f"Not computed: {note}.", ""]
    lines += [f"Method: {note}.", "",
              "| hyperparameter | kind | for the metric | for Δ val over baseline |",
              "|---|---|---|---|"]
    for name in sorted(importance["metric"], key=lambda n: -importance["metric"][n]):
        kind = space.parameter(name).kind
        lines.append(f"| {name} | {kind} | {importance['metric'][name]:.3f} | "
                     f"{importance['improvement'].get(name, float('nan')):.3f} |")
    return lines + ["", "![importance](importance.png)", ""]


def findings(space: SweepSpace, complete: list[TrialRecord],
             importance: dict[str, dict[str, float]]) -> list[str]:
    """Plain sentences about the sweep, computed from the records."""
    if not complete:
        return ["No trial completed."]
    best = best_record(space, complete)
    assert best is not None
    settings = ", ".join(f"{p.name}={_fmt(best.hyperparameters.get(p.name))}"
                         for p in space.searched)
    out = [f"Best trial #{best.number} ({settings}): validation {best.dendritic['val']:.2f} vs "
           f"baseline {best.baseline['val']:.2f}; test {best.dendritic['test']:.2f} vs "
           f"{best.baseline['test']:.2f} (Δ {best.improvement['test']:+.2f} points, "
           f"{best.dendritic['params']} vs {best.baseline['params']} parameters, "
           f"{best.dendritic['dendrites']} dendrite(s) per layer)."]
    dt = [r.improvement["test"] for r in complete]
    dv = [r.improvement["val"] for r in complete]
    grew = [r for r in complete if r.dendritic.get("dendrites", 0) > 0]
    out.append(f"Across {len(complete)} complete trials, the dendritic model beat its baseline on "
               f"validation in {sum(x > 0 for x in dv)} and on test in {sum(x > 0 for x in dt)}; "
               f"median Δ test {statistics.median(dt):+.2f} points. {len(grew)} trial(s) kept at "
               "least one dendrite.")
    ratios = sorted(r.improvement["params_ratio"] for r in grew)
    if ratios:
        out.append(f"Trials that kept dendrites have {statistics.median(ratios):.2f}× their "
                   "baseline's parameters (median): part of any gain may come from the extra "
                   "parameters; compare with a wider plain model (the width-matched control) "
                   "before crediting dendrites.")
    if importance.get("metric"):
        name, share = max(importance["metric"].items(), key=lambda kv: kv[1])
        gain_name, gain_share = max(importance["improvement"].items(), key=lambda kv: kv[1])
        out.append(f"Most important for the metric: {name} ({share:.0%} of fANOVA variance); "
                   f"for the gain over baseline: {gain_name} ({gain_share:.0%}).")
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


# ---------------------------------------------------------------- plots


def _save(fig: Figure, path: Path, dpi: int = 110) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)


def _axis_values(p: Parameter, values: list[Any]) -> tuple[list[float], list[float], list[str]]:
    """Map a parameter's values to [0, 1]; return (positions, tick positions, tick labels)."""
    if p.distribution == "categorical":
        cats = list(p.values)
        n = max(len(cats) - 1, 1)
        pos = [cats.index(v) / n if v in cats else 0.5 for v in values]
        return pos, [i / n for i in range(len(cats))], [_fmt(c) for c in cats]
    lo, hi = p.bounds()
    tf = (lambda x: math.log(x)) if p.log else (lambda x: x)
    span = tf(hi) - tf(lo) or 1.0
    pos = [(tf(float(v)) - tf(lo)) / span for v in values]
    return pos, [0.0, 1.0], [_fmt(p.cast(lo)), _fmt(p.cast(hi))]


def _parallel_coordinates(space: SweepSpace, records: list[TrialRecord]) -> Figure:
    params = [p for p in space.searched]
    done = [r for r in records if r.state == "COMPLETE"]
    pruned = [r for r in records if r.state == "PRUNED"]
    names = [p.name for p in params] + [space.metric]
    fig = Figure(figsize=(min(16.0, max(6.0, 1.4 * len(names))), 4.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(f"{space.name}: hyperparameters vs {space.metric}")
    if not done and not pruned:
        ax.text(0.5, 0.5, "no finished trials", ha="center", va="center")
        return fig
    columns, ticks = [], []
    shown = done + pruned
    for p in params:
        pos, tpos, tlab = _axis_values(p, [r.hyperparameters.get(p.name) for r in shown])
        columns.append(pos)
        ticks.append((tpos, tlab))
    metric = [r.value for r in done]
    m_lo, m_hi = (min(metric), max(metric)) if metric else (0.0, 1.0)
    span = (m_hi - m_lo) or 1.0
    columns.append([(v - m_lo) / span for v in metric] + [float("nan")] * len(pruned))
    ticks.append(([0.0, 1.0], [f"{m_lo:.2f}", f"{m_hi:.2f}"]))
    xs = list(range(len(names)))
    cmap = fig.colormaps["viridis"] if hasattr(fig, "colormaps") else None
    if cmap is None:
        import matplotlib

        cmap = matplotlib.colormaps["viridis"]
    for i, r in enumerate(shown):
        ys = [col[i] for col in columns]
        if r.state == "PRUNED":
            ax.plot(xs[:-1], ys[:-1], color="0.7", lw=0.8, ls="--", zorder=1)
        else:
            c = cmap((r.value - m_lo) / span)
            ax.plot(xs, ys, color=c, lw=1.4, alpha=0.85, zorder=2)
    for x, (tpos, tlab) in zip(xs, ticks):
        ax.axvline(x, color="black", lw=0.8, zorder=0)
        for tp, tl in zip(tpos, tlab):
            ax.text(x + 0.03, tp, tl, fontsize=7, va="center", ha="left")
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=20, fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.2, len(names) - 0.6)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def _importance_plot(importance: dict[str, dict[str, float]], note: str) -> Figure:
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    if not importance:
        ax.text(0.5, 0.5, f"importance not computed:\n{note}", ha="center", va="center",
                fontsize=8, wrap=True)
        ax.set_axis_off()
        return fig
    names = sorted(importance["metric"], key=lambda n: importance["metric"][n])
    ys = range(len(names))
    h = 0.38
    ax.barh([y + h / 2 for y in ys], [importance["metric"][n] for n in names], height=h,
            label="metric", color="tab:blue")
    ax.barh([y - h / 2 for y in ys], [importance["improvement"].get(n, 0.0) for n in names],
            height=h, label="Δ val over baseline", color="tab:orange")
    ax.set_yticks(list(ys))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("fANOVA importance (share of variance)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _improvement_plot(space: SweepSpace, complete: list[TrialRecord]) -> Figure:
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    if not complete:
        ax.text(0.5, 0.5, "no complete trials", ha="center", va="center")
        return fig
    groups: dict[str, list[float]] = {}
    split = "mode" in {p.name for p in space.searched}
    for r in complete:
        label = f"mode={r.hyperparameters.get('mode')}" if split else "all trials"
        groups.setdefault(label, []).append(r.improvement["test"])
    allv = [v for g in groups.values() for v in g]
    lo, hi = min(allv + [0.0]), max(allv + [0.0])
    bins = 20 if hi > lo else 1
    ax.hist(list(groups.values()), bins=bins, range=(lo - 1e-9, hi + 1e-9),
            label=list(groups), stacked=True)
    ax.axvline(0.0, color="black", lw=1)
    ax.set_xlabel("Δ test score vs baseline (percent points)")
    ax.set_ylabel("trials")
    ax.set_title("Improvement over the baseline across trials")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _history_plot(space: SweepSpace, records: list[TrialRecord]) -> Figure:
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    done = [r for r in records if r.state == "COMPLETE"]
    ax.scatter([r.number for r in done], [r.value for r in done], s=14, label="complete trial")
    best, line = None, []
    for r in done:
        if best is None or (r.value > best if space.maximize else r.value < best):
            best = r.value
        line.append((r.number, best))
    if line:
        ax.step([x for x, _ in line], [y for _, y in line], where="post", color="tab:red",
                label="best so far")
    pruned = [r.number for r in records if r.state == "PRUNED"]
    if pruned and done:
        y0 = min(r.value for r in done)
        ax.scatter(pruned, [y0] * len(pruned), marker="x", color="0.6", s=14, label="pruned")
    ax.set_xlabel("trial")
    ax.set_ylabel(space.metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- W&B


def log_to_wandb(out: Path, space: SweepSpace, records: list[TrialRecord]) -> None:
    """Log the trial table, the plots and the best trial to one W&B run (offline by default)."""
    from ..errors import require_extra

    wandb = require_extra("wandb", "wandb")
    mode = os.environ.get("WANDB_MODE", "offline")
    searched = [p.name for p in space.searched]
    columns = ["trial", "state", space.metric, "val", "baseline_val", "test", "baseline_test",
               "delta_test", "params", "dendrites"] + searched
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "perforate-sweeps"),
                     name=space.name, dir=str(out), mode=mode, config=space.to_dict(),
                     job_type="sweep-report")
    try:
        table = wandb.Table(columns=columns)
        for r in records:
            d, b = r.dendritic, r.baseline
            table.add_data(r.number, r.state, r.value, d.get("val"), b.get("val"), d.get("test"),
                           b.get("test"), r.improvement.get("test"), d.get("params"),
                           d.get("dendrites"), *[r.hyperparameters.get(n) for n in searched])
        logged: dict[str, Any] = {"trials": table}
        for name in PLOTS:
            if (out / name).exists():
                logged[name.removesuffix(".png")] = wandb.Image(str(out / name))
        run.log(logged)
        best = best_record(space, records)
        if best is not None:
            run.summary["best_trial"] = best.number
            run.summary["best_value"] = best.value
            run.summary["best_delta_test"] = best.improvement["test"]
    finally:
        run.finish()

"""results.json: the schema of a bench's saved results, and the statistics drawn from them.

Schema (``"schema": "perforate-bench/1"``)::

    {
      "schema": "perforate-bench/1",
      "command": "perforate bench ...",         # what produced it
      "protocol": {...},                        # arms.Protocol.to_dict()
      "environment": {"python", "torch", "perforate", "platform", "threads"},
      "runs": [                                 # one record per finished (arm, seed, fraction)
        {"run_id", "arm", "seed", "fraction", "width",
         "val_score", "test_score",             # accuracy % (classification) or R² x 100
         "params", "nonzero_params", "flops_per_sample", "epochs", "seconds", "dendrites",
         "peak_memory_mb", "restart_epochs", "best_epoch",
         "latency_b1_ms", "latency_b256_ms",    # median, exported model (pf.export)
         "extra": {...}}                        # control: target_params; pruned: dense_params...
      ],
      "summary": {"<fraction>": {"<arm>": {"<metric>": {"mean", "std", "n"}}}},
      "comparisons": [{"arm", "reference", "fraction", "diff_mean", "diff_std", "n",
                       "wins", "losses", "ties", "verdict"}],
      "data_efficiency": {"reference": {"mean", "std"},
                          "arms": {"<arm>": {"<fraction>": mean, ..., "smallest_matching": f|None}}}
    }

``summary``, ``comparisons`` and ``data_efficiency`` are derived from ``runs`` every time the
file is written, so ``perforate report`` can always recompute them.
"""
from __future__ import annotations

import json
import math
import platform
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perforate.errors import ExperimentError
from perforate.files import write_json

if TYPE_CHECKING:  # pragma: no cover
    from perforate.experiments.bench.arms import Protocol

SCHEMA = "perforate-bench/1"
RESULTS = "results.json"

METRICS = ("test_score", "val_score", "rer", "params", "nonzero_params", "flops_per_sample",
           "epochs", "seconds", "dendrites", "peak_memory_mb", "latency_b1_ms", "latency_b256_ms")

# (arm, reference): the paired comparisons the report states. A claim stands only against
# the width-matched control, so that one comes first.
COMPARISONS = (("compressed", "control"), ("compressed", "pruned"), ("compressed", "baseline"),
               ("gd", "baseline"), ("pb", "baseline"), ("pruned", "baseline"),
               ("control", "baseline"), ("reference", "baseline"), ("gd", "reference"),
               ("pb", "reference"))


def prepare_out_dir(out: str | Path) -> Path:
    """Create ``out`` if needed and check it is writable, or raise ExperimentError."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ExperimentError(f"cannot write to output folder {str(out)!r} "
                              f"({exc.strerror or exc}); pass --out with a writable folder") from exc
    return out


def environment() -> dict[str, Any]:
    import torch

    import perforate

    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "perforate": perforate.__version__, "platform": platform.platform(),
            "threads": torch.get_num_threads()}


def load_results(out: str | Path, schema: str = SCHEMA, command: str = "perforate bench") -> dict[str, Any]:
    """Read ``out/results.json`` (or a results.json path) and check its schema (``command``
    names what writes that schema, for the error messages)."""
    path = Path(out)
    if path.is_dir():
        path = path / RESULTS
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ExperimentError(f"no {RESULTS} in {path.parent}; run `{command} --out "
                              f"{path.parent}` first") from exc
    except (OSError, ValueError) as exc:
        raise ExperimentError(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schema") != schema:
        raise ExperimentError(f"{path} is not a `{command}` results file (expected schema {schema!r})")
    return doc


def open_results(out: Path, protocol: Protocol, command: str) -> dict[str, Any]:
    """The results document to extend: the saved one if its protocol matches, else a new one."""
    path = out / RESULTS
    if not path.exists():
        return {"schema": SCHEMA, "command": command, "protocol": protocol.to_dict(),
                "environment": environment(), "runs": []}
    doc = load_results(out)
    saved = type(protocol).from_dict(doc["protocol"])
    if saved.key() != protocol.key():
        diff = [f"{k}: saved {saved.key()[k]!r}, now {v!r}"
                for k, v in protocol.key().items() if saved.key().get(k) != v]
        raise ExperimentError(f"{out} holds results of a different protocol ({'; '.join(diff)}); "
                              "use the same options to resume, or a fresh --out folder")
    merged = protocol.to_dict()
    merged["arms"] = _union(saved.arms, protocol.arms)
    merged["seeds"] = _union(saved.seeds, protocol.seeds)
    merged["fractions"] = _union(saved.fractions, protocol.fractions)
    doc["protocol"] = merged
    doc["command"] = command or doc.get("command", "")
    return doc


def _union(a: list, b: list) -> list:
    return a + [x for x in b if x not in a]


def save_results(out: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """Recompute the derived sections and write ``out/results.json``; returns the document."""
    doc.update(derive(doc["runs"]))
    write_json(Path(out) / RESULTS, doc)
    return doc


# ---------------------------------------------------------------------------- statistics
def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def clear_sign(mean: float, std: float, n: int) -> int:
    """+1 / -1 when ``mean`` is more than two standard errors (``std / sqrt(n)``) above / below
    zero, else 0: the rule every "better / worse / no clear difference" verdict uses."""
    se = std / math.sqrt(n)
    return 1 if mean - 2 * se > 0 else -1 if mean + 2 * se < 0 else 0


def rer(base: float, new: float) -> float:
    """Remaining error reduction, scores in percent (see ``pf.remaining_error_reduction``)."""
    import perforate as pf

    return pf.remaining_error_reduction(base, new)


def _key(fraction: float) -> str:
    return f"{float(fraction):g}"


def derive(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """summary, comparisons and data_efficiency from the run records."""
    by = {(r["arm"], _key(r["fraction"]), r["seed"]): r for r in runs}
    summary: dict[str, dict[str, dict]] = {}
    for (arm, frac, _), _r in sorted(by.items()):
        if arm in summary.get(frac, {}):
            continue
        rows = [r for (a, f, _s), r in sorted(by.items()) if a == arm and f == frac]
        stats = {}
        for metric in METRICS:
            if metric == "rer":
                vals = [rer(by[("baseline", frac, r["seed"])]["test_score"], r["test_score"])
                        for r in rows if ("baseline", frac, r["seed"]) in by]
            else:
                vals = [r.get(metric) for r in rows]
            stats[metric] = mean_std(vals)
        stats["seeds"] = [r["seed"] for r in rows]
        summary.setdefault(frac, {})[arm] = stats
    comparisons = []
    for frac in summary:
        for arm, ref in COMPARISONS:
            pairs = [(by[(arm, frac, s)]["test_score"], by[(ref, frac, s)]["test_score"])
                     for (a, f, s) in by if a == arm and f == frac and (ref, frac, s) in by]
            if pairs:
                comparisons.append(paired(arm, ref, frac, pairs))
    return {"summary": summary, "comparisons": comparisons,
            "data_efficiency": data_efficiency(summary)}


def paired(arm: str, ref: str, fraction: str, pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """Paired-by-seed difference of test scores and a plain verdict.

    ``better``/``worse`` when the mean difference is more than two standard errors from zero;
    ``no clear difference`` otherwise; with one seed the verdict only reports the sign and says
    that one seed cannot settle it.
    """
    diffs = [a - b for a, b in pairs]
    stats = mean_std(diffs)
    n = stats["n"]
    wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    if n < 2:
        verdict = ("higher" if diffs[0] > 0 else "lower" if diffs[0] < 0 else "equal") + \
            " (one seed: not conclusive)"
    else:
        verdict = {1: "better", -1: "worse", 0: "no clear difference"}[
            clear_sign(stats["mean"], stats["std"], n)]
    return {"arm": arm, "reference": ref, "fraction": fraction, "diff_mean": stats["mean"],
            "diff_std": stats["std"], "n": n, "wins": wins, "losses": losses,
            "ties": n - wins - losses, "verdict": verdict}


def data_efficiency(summary: dict[str, dict[str, dict]]) -> dict[str, Any]:
    """For each arm, its mean test score at each fraction and the smallest fraction at which it
    matches the full-data baseline: mean >= baseline mean - baseline std (>= the mean with
    one seed)."""
    full = summary.get("1", {}).get("baseline")
    if full is None or len(summary) < 2:
        return {}
    ref = full["test_score"]
    threshold = ref["mean"] - (ref["std"] if ref["n"] > 1 else 0.0)
    arms: dict[str, dict] = {}
    for frac in sorted(summary, key=float):
        for arm, stats in summary[frac].items():
            arms.setdefault(arm, {})[frac] = stats["test_score"]["mean"]
    for arm, by_frac in arms.items():
        matching = [float(f) for f, v in by_frac.items() if v >= threshold]
        by_frac["smallest_matching"] = min(matching) if matching else None
    return {"reference": {"mean": ref["mean"], "std": ref["std"], "threshold": threshold},
            "arms": arms}

"""The frontier: do dendrites beat width? (``perforate bench frontier``)

Plain models at a ladder of widths trace test score against parameters (and FLOPs); dendritic
models grown from the narrow widths are read against that curve. Every run of one seed shares
the seed's data split, initialisation of the starting width and data order, the epoch budget,
the stopping rule and the improvement rule (``Config.better``), so a dendritic run and the plain
run of its starting width are paired.

- The *plain frontier* of a seed is the upper (Pareto) envelope of its plain points: the best
  score any plain width reaches with at most that many parameters, interpolated linearly in
  log-parameters between envelope points and flat past the widest.
- A dendritic point's *distance* is its test score minus the frontier of the same seed at its
  own parameter count; reported as mean ± sample std over seeds and the number of seeds above
  the frontier. Its *gain* is its test score minus the plain model of its starting width,
  same seed (the no-regret comparison).
- Stopping rules: ``"budget"`` trains every arm for ``max_epochs`` and keeps the best
  validation epoch (the grower gets ``Config.max_epochs``); ``"patience"`` stops plain runs at
  a plateau (``patience`` epochs without a smoothed gain) and dendritic runs at a plateau where
  growth cannot go on.

Results go to ``out/results.json`` (schema ``perforate-frontier/1``) after every run; a
restarted bench skips finished runs.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import perforate as pf
from perforate.errors import ExperimentError
from perforate.experiments import results as res
from perforate.experiments.datasets import load_dataset
from perforate.experiments.models import build_model
from perforate.experiments.settings import RunSettings, check_stopping, positive_int
from perforate.experiments.train import train_model
from perforate.files import write_json

SCHEMA = "perforate-frontier/1"
DEFAULT_VARIANTS = {"gd": {"mode": "gd"}, "pb": {"mode": "pb"}}
"""Dendritic arms by name: a growth mode and Config overrides."""
REFERENCE = "reference"


@dataclass
class FrontierProtocol:
    """Everything that defines a frontier experiment; ``key()`` holds what changes numbers."""

    dataset: str = "mnist1d"
    model: str = "mlp"
    widths: list[int] = field(default_factory=lambda: [4, 8, 16, 32, 64, 128, 256])
    """The plain ladder."""
    grow_widths: list[int] = field(default_factory=lambda: [4, 8, 16])
    """Widths the dendritic arms start from."""
    arms: list[str] = field(default_factory=lambda: ["gd", "pb"])
    """Dendritic arms: names in ``variants``, or ``"reference"`` (perforatedai)."""
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_VARIANTS))
    reference_widths: list[int] | None = None
    """Starting widths of the reference arm (default: ``grow_widths``); it is slow."""
    seeds: list[int] = field(default_factory=lambda: list(range(5)))
    max_epochs: int = 150
    patience: int = 20
    stopping: str = "budget"
    lr: float = 1e-2
    batch_size: int = 100
    weight_decay: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    """Config overrides for every dendritic arm (a variant's own overrides win)."""
    run_outputs: bool = False
    """Let each dendritic run's Grower write history.csv, summary.json and growth.png."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ExperimentError naming the first bad setting."""
        RunSettings(dataset=self.dataset, model=self.model, max_epochs=self.max_epochs, lr=self.lr,
                    batch_size=self.batch_size, weight_decay=self.weight_decay).check()
        positive_int("patience", self.patience)
        for name in ("widths", "grow_widths", "seeds"):
            values = getattr(self, name)
            low = 0 if name == "seeds" else 1
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in values):
                raise ExperimentError(f"{name} must be a non-empty list of integers >= {low}; got {values!r}")
        check_stopping(self.stopping)
        for arm in self.arms:
            if arm != REFERENCE and arm not in self.variants:
                raise ExperimentError(f"unknown arm {arm!r}; choose from {sorted(self.variants)} or "
                                      f"{REFERENCE!r}, or define it with --variant NAME=MODE[,field=value]")
        for name, variant in self.variants.items():
            if variant.get("mode") not in ("gd", "pb"):
                raise ExperimentError(f"variant {name!r} needs mode 'gd' or 'pb'; got {variant.get('mode')!r}")
            self.dendritic_config(name, 0)  # a bad override raises ConfigError now

    def dendritic_config(self, arm: str, seed: int) -> pf.Config:
        """The Config of a dendritic arm for one seed."""
        variant = dict(self.variants[arm])
        fields = {"checkpoint_every": 0, "plots": False, **self.config, **variant,
                  "patience": variant.get("patience", self.patience), "seed": seed,
                  "max_epochs": self.max_epochs if self.stopping == "budget" else 0}
        return pf.Config.from_dict(fields)

    def stopper_config(self) -> pf.Config:
        """What plain runs stop by: the same patience, smoothing and improvement thresholds."""
        return pf.Config.from_dict({**{k: v for k, v in self.config.items()
                                       if k in ("smoothing", "improvement_threshold",
                                                "improvement_threshold_abs")},
                                    "patience": self.patience})

    @property
    def starts_of_reference(self) -> list[int]:
        return self.grow_widths if self.reference_widths is None else self.reference_widths

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontierProtocol:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def key(self) -> dict[str, Any]:
        """The settings two runs must share for their results to be pooled."""
        d = self.to_dict()
        for name in ("widths", "grow_widths", "arms", "seeds", "reference_widths", "run_outputs"):
            d.pop(name)
        d["variants"] = {k: v for k, v in self.variants.items() if k in self.arms}
        return d


@dataclass(frozen=True)
class FrontierRun:
    """One (arm, starting width, seed); arm "plain" for the ladder."""

    arm: str
    width: int
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.arm}-w{self.width}-s{self.seed}"


def plan_frontier(p: FrontierProtocol) -> list[FrontierRun]:
    """Seed by seed: the plain ladder, then each dendritic arm from each starting width."""
    runs = []
    for seed in p.seeds:
        runs += [FrontierRun("plain", w, seed) for w in p.widths]
        for arm in p.arms:
            starts = p.starts_of_reference if arm == REFERENCE else p.grow_widths
            runs += [FrontierRun(arm, w, seed) for w in starts]
    return runs


def run_one(p: FrontierProtocol, spec: FrontierRun, folder: Path,
            epoch_callback: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train one run and return its record (JSON-able)."""
    data = load_dataset(p.dataset, seed=spec.seed)
    common = dict(lr=p.lr, batch_size=p.batch_size, weight_decay=p.weight_decay, seed=spec.seed,
                  max_epochs=p.max_epochs, monitor="score")
    if spec.arm == REFERENCE:
        from perforate.experiments.reference import train_reference

        result = train_reference(p.dataset, p.model, spec.width, seed=spec.seed,
                                 max_epochs=p.max_epochs, lr=p.lr, batch_size=p.batch_size,
                                 weight_decay=p.weight_decay, folder=folder)
    elif spec.arm == "plain":
        result = train_model(data, p.model, spec.width, config=p.stopper_config(),
                             early_stopping=p.stopping == "patience", epoch_callback=epoch_callback,
                             **common)
    else:
        cfg = p.dendritic_config(spec.arm, spec.seed)
        result = train_model(data, p.model, spec.width, mode=cfg.mode, config=cfg,
                             out_dir=folder if p.run_outputs else None,
                             epoch_callback=epoch_callback, **common)
    record = {"run_id": spec.run_id, "arm": spec.arm, "width": spec.width, "seed": spec.seed,
              **{k: v for k, v in result.to_dict().items() if k != "history"}}
    record["decisions"] = [{"epoch": h["epoch"], "event": h["event"]}
                           for h in result.history if h.get("event")]
    return record


# ---------------------------------------------------------------------------- the frontier
def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper envelope of (cost, score) points: sorted by cost, each beats every cheaper one."""
    out: list[tuple[float, float]] = []
    for cost, score in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or score > out[-1][1]:
            out.append((cost, score))
    return out


def frontier_at(front: list[tuple[float, float]], cost: float) -> float:
    """The envelope's score at ``cost``: linear in log-cost between its points, flat outside."""
    if cost <= front[0][0]:
        return front[0][1]
    for (c0, s0), (c1, s1) in zip(front, front[1:]):
        if cost <= c1:
            t = (math.log(cost) - math.log(c0)) / (math.log(c1) - math.log(c0))
            return s0 + t * (s1 - s0)
    return front[-1][1]


def derive(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The plain ladder (mean ± std per width) and, per dendritic (arm, width), its distance to
    the same seed's plain frontier at equal parameters and FLOPs and its gain over its width."""
    plain: dict[int, dict[int, dict]] = {}
    for r in runs:
        if r["arm"] == "plain":
            plain.setdefault(r["seed"], {})[r["width"]] = r
    ladder = {}
    for width in sorted({w for by_width in plain.values() for w in by_width}):
        rows = [by_width[width] for by_width in plain.values() if width in by_width]
        ladder[str(width)] = {m: res.mean_std([r[m] for r in rows])
                              for m in ("test_score", "params", "flops_per_sample")}
    points = []
    for arm, width in sorted({(r["arm"], r["width"]) for r in runs if r["arm"] != "plain"}):
        rows = [r for r in runs if r["arm"] == arm and r["width"] == width and len(plain.get(r["seed"], {})) >= 2]
        if not rows:
            continue
        dist = {"params": [], "flops_per_sample": []}
        gain = []
        for r in rows:
            ladder_s = plain[r["seed"]].values()
            for cost in dist:
                front = pareto([(q[cost], q["test_score"]) for q in ladder_s])
                dist[cost].append(r["test_score"] - frontier_at(front, r[cost]))
            if width in plain[r["seed"]]:
                gain.append(r["test_score"] - plain[r["seed"]][width]["test_score"])
        points.append({
            "arm": arm, "width": width, "seeds": [r["seed"] for r in rows],
            **{m: res.mean_std([r[m] for r in rows])
               for m in ("test_score", "params", "flops_per_sample", "dendrites", "epochs", "seconds")},
            "distance": res.mean_std(dist["params"]), "above": sum(d > 0 for d in dist["params"]),
            "distance_flops": res.mean_std(dist["flops_per_sample"]),
            "above_flops": sum(d > 0 for d in dist["flops_per_sample"]),
            "gain": res.mean_std(gain) if gain else None, "gain_per_seed": gain,
            "better": sum(g > 0 for g in gain), "worse": sum(g < 0 for g in gain),
        })
    return {"ladder": ladder, "points": points}


# ---------------------------------------------------------------------------- running
def open_frontier(out: Path, protocol: FrontierProtocol, command: str) -> dict[str, Any]:
    """The results document to extend: the saved one if its protocol matches, else a new one."""
    path = out / res.RESULTS
    if not path.exists():
        return {"schema": SCHEMA, "command": command, "protocol": protocol.to_dict(),
                "environment": res.environment(), "runs": []}
    doc = load_frontier(out)
    saved = FrontierProtocol.from_dict(doc["protocol"])
    if saved.key() != protocol.key():
        diff = [k for k, v in protocol.key().items() if saved.key().get(k) != v]
        raise ExperimentError(f"{out} holds frontier results of a different protocol (differs in "
                              f"{', '.join(diff)}); use the same options to resume, or a fresh --out")
    merged = protocol.to_dict()
    for name in ("widths", "grow_widths", "arms", "seeds"):
        merged[name] = saved_list = list(getattr(saved, name))
        saved_list += [x for x in getattr(protocol, name) if x not in saved_list]
    merged["variants"] = {**saved.variants, **protocol.variants}
    doc["protocol"], doc["command"] = merged, command or doc.get("command", "")
    return doc


def is_frontier(out: str | Path) -> bool:
    """True when ``out/results.json`` was written by a frontier bench (or the demo)."""
    try:
        return json.loads((Path(out) / res.RESULTS).read_text()).get("schema") == SCHEMA
    except (OSError, ValueError, AttributeError):
        return False


def load_frontier(out: str | Path) -> dict[str, Any]:
    """Read ``out/results.json`` of a frontier bench (or that file's path)."""
    return res.load_results(out, SCHEMA, "perforate bench frontier")


def save_frontier(out: Path, doc: dict[str, Any]) -> dict[str, Any]:
    doc["frontier"] = derive(doc["runs"])
    write_json(out / res.RESULTS, doc)
    return doc


def run_frontier(protocol: FrontierProtocol, out: str | Path, command: str = "",
                 on_run: Callable[[FrontierRun, int, int], None] | None = None,
                 on_epoch: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Run every (arm, width, seed) not yet in ``out/results.json``; returns the document.

    ``on_run(run, index, total)`` is called before each run still to do (``index`` of ``total``
    runs left), ``on_epoch(epoch, score)`` after every epoch of the plain and perforate runs.
    """
    out = res.prepare_out_dir(out)
    if REFERENCE in protocol.arms:
        from perforate.experiments.reference import available

        if not available():
            raise ExperimentError("arm 'reference' needs perforatedai: pip install --no-deps "
                                  "perforatedai==3.2.9 matplotlib pandas pyyaml safetensors requests")
    build_model(protocol.model, load_dataset(protocol.dataset, seed=protocol.seeds[0]), 1)
    doc = open_frontier(out, protocol, command)
    done = {r["run_id"] for r in doc["runs"]}
    todo = [spec for spec in plan_frontier(protocol) if spec.run_id not in done]
    for i, spec in enumerate(todo):
        if on_run is not None:
            on_run(spec, i, len(todo))
        doc["runs"].append(run_one(protocol, spec, out / "runs" / spec.run_id, on_epoch))
        save_frontier(out, doc)
    return save_frontier(out, doc)

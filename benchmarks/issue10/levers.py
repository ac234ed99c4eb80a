"""Screen the levers that might make a dendrite pay, one growth step at a fixed point.

Protocol (per seed): the plain model trains ``--base`` epochs and is rolled back to its best
validation epoch; then every arm trains ``--after`` more epochs from that same model and keeps
its best validation epoch. Arms: the plain model continued (the control for growth itself),
and one dendrite per wrapped layer added by each lever. The plain width ladder at the full
budget gives the frontier each grown point is read against (`frontier.py`).

Run: OMP_NUM_THREADS=1 python benchmarks/issue10/levers.py --dataset mnist1d --model mlp --width 8
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import perforate as pf
from perforate.experiments.data.datasets import load_dataset
from perforate.experiments.data.models import build_model
from perforate.layers import _ACTIVATIONS
from perforate.growth import pb

torch.set_num_threads(1)


# ---------------------------------------------------------------- a minimal loop
def loss_fn(data, out, y):
    return F.cross_entropy(out, y) if data.task == "classification" else F.mse_loss(out, y)


@torch.no_grad()
def score(model, data, x, y):
    model.eval()
    out = torch.cat([model(x[i:i + 1024]) for i in range(0, len(x), 1024)])
    model.train()
    if data.task == "classification":
        return float((out.argmax(1) == y).float().mean() * 100)
    return 100 * (1 - float(((out - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()))


def train(model, data, epochs, lr, batch, seed, groups=None, opt=None, wd_dendrite=0.0):
    """Adam for ``epochs``; keeps the best validation state; returns (best val, test there)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if opt is None:
        if groups is None:
            groups = [{"params": params}]
        opt = torch.optim.Adam(groups, lr=lr)
    g = torch.Generator().manual_seed(1000 + seed)
    best, state = -math.inf, None
    n = len(data.y_train)
    dend = [p for l in pf.dendritic_layers(model).values() for p in l.dendrite_parameters()] if wd_dendrite else []
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            loss = loss_fn(data, model(data.x_train[idx]), data.y_train[idx])
            if dend:
                loss = loss + wd_dendrite * sum(p.pow(2).sum() for p in dend)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        v = score(model, data, data.x_val, data.y_val)
        if v > best:
            best, state = v, copy.deepcopy(model.state_dict())
    model.load_state_dict(state)
    return best, score(model, data, data.x_test, data.y_test), opt


# ---------------------------------------------------------------- cached cascade-correlation
def collect(model, data, layers):
    """One pass over the training split at fixed weights: each layer's detached input, the
    activations of its existing dendrites, and the neuron error dLoss/d(output)."""
    store = {n: {"x": [], "d": []} for n in layers}
    handles = []
    for name, layer in layers.items():
        def fwd(mod, inp, out, name=name):
            store[name]["x"].append(inp[0].detach())
            out.register_hook(lambda g, name=name: store[name]["d"].append(g.detach()))
        handles.append(layer.register_forward_hook(fwd))
    model.eval()
    for i in range(0, len(data.y_train), 512):
        out = model(data.x_train[i:i + 512])
        loss = loss_fn(data, out, data.y_train[i:i + 512]) * len(out)  # a sum: same scale per batch
        model.zero_grad()
        loss.backward()
    model.train()
    for h in handles:
        h.remove()
    model.zero_grad(set_to_none=True)
    return {n: (torch.cat(s["x"]), torch.cat(s["d"])) for n, s in store.items()}


def flat(layer, t, is_delta=False):
    """[N, ..., C, ...] -> [M, C] with the neuron axis last (samples x positions)."""
    ax = layer._axis(t.ndim)
    return t.movedim(ax, -1).reshape(-1, t.shape[ax])


def cand_pre(layer, w, b, x):
    """Pre-activations [M, P, C] of P candidates with weights w [P, C, ...]."""
    p, c = w.shape[:2]
    z = layer._stacked_call(x, w, b, p)  # list of P tensors shaped like the layer output
    return torch.stack([flat(layer, zi) for zi in z], 1)


def objective(a, d):
    """Full-batch sum over (p, c) of |cov(a, d/std(d))| and the |correlation|; a [M,P,C], d [M,C]."""
    d = d - d.mean(0)
    d = d / d.pow(2).mean(0).sqrt().clamp_min(1e-8)
    ac = a - a.mean(0)
    cov = (ac * d.unsqueeze(1)).mean(0)  # [P, C]
    corr = cov.abs() / ac.pow(2).mean(0).sqrt().clamp_min(1e-8)
    return cov, corr


def train_candidates(layer, x, d, p, steps, lr, gen, init="random", scale=1.0):
    act = _ACTIVATIONS[layer.activation]
    dflat = flat(layer, d)
    w, b = layer.new_unit_tensors(p, gen)
    w, b = w * scale, (b * scale if b is not None else None)
    if init == "covariance":  # GradMax-like: the direction that maximises dS/dw at w = 0
        w0 = torch.zeros_like(w, requires_grad=True)
        z = cand_pre(layer, w0, None, x)
        cov, _ = objective(z, dflat)
        cov.abs().sum().backward()
        gdir = w0.grad
        # unit-variance pre-activation along the gradient, plus the random part for diversity
        with torch.no_grad():
            zz = cand_pre(layer, gdir, None, x)
            s = zz.std(0).clamp_min(1e-8)  # [P, C]
            gdir = gdir / s.reshape(*s.shape, *([1] * (w.ndim - 2)))
            w = gdir * 2.0 + w
    w = w.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True) if b is not None else None
    if steps:
        opt = torch.optim.Adam([t for t in (w, b) if t is not None], lr=lr)
        for _ in range(steps):
            a = act(cand_pre(layer, w, b, x))
            cov, _ = objective(a, dflat)
            opt.zero_grad()
            (-cov.abs().sum()).backward()
            opt.step()
    with torch.no_grad():
        a = act(cand_pre(layer, w, b, x))
        cov, corr = objective(a, dflat)
        best = cov.abs().argmax(0)  # [C]
        ch = torch.arange(w.shape[1])
        return (w[best, ch].unsqueeze(0), b[best, ch].unsqueeze(0) if b is not None else None), \
            float(corr[best, ch].mean()), float(cov.abs()[best, ch].mean())


# ---------------------------------------------------------------- the arms
def grow_gd(model, cfg, seed):
    model = pf.perforate(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    for layer in pf.dendritic_layers(model).values():
        layer.add_dendrites(1, gen)
    return model


def grow_cc(model, cfg, data, seed, p, steps, lr, init, min_corr=0.0, frozen=True):
    model = pf.perforate(model, cfg)
    layers = pf.dendritic_layers(model)
    cache = collect(model, data, layers)
    gen = torch.Generator().manual_seed(seed)
    corr = {}
    for name, layer in layers.items():
        x, d = cache[name]
        units, c, s = train_candidates(layer, x, d, p, steps, lr, gen, init=init)
        corr[name] = round(c, 3)
        if c >= min_corr:
            layer.add_dendrites(1, units=units)
            layer.freeze_dendrites(frozen)
    return model, corr


def grow_online_pb(model, cfg, data, seed, epochs, lr, batch):
    """Today's pb: candidates trained on minibatches through the ordinary backward, EMA score."""
    model = pf.perforate(model, cfg.replace(mode="pb"))
    layers = pf.dendritic_layers(model)
    for p in model.parameters():
        p.requires_grad_(False)
    pb.start_dendrite_phase(layers, cfg.candidates, torch.Generator().manual_seed(seed), cfg.correlation_decay)
    opt = torch.optim.Adam(pb.candidate_parameters(layers), lr=lr * cfg.candidate_lr_scale)
    g = torch.Generator().manual_seed(2000 + seed)
    n = len(data.y_train)
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            loss = loss_fn(data, model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        for layer in layers.values():
            layer.candidate_pool.remember_best()
    ema = {n: round(l.candidate_pool.layer_correlation(), 3) for n, l in layers.items()}
    pb.join_candidates(layers)
    for p in model.parameters():
        p.requires_grad_(True)
    for layer in layers.values():
        layer.freeze_dendrites(True)
    # the honest score of what was joined: full-epoch |correlation| at fixed weights
    cache = collect(model, data, layers)
    full = {}
    for name, layer in layers.items():
        x, d = cache[name]
        k = layer.num_dendrites
        with torch.no_grad():
            z = layer.dendrite_preactivations(x)[-1]
            a = _ACTIVATIONS[layer.activation](flat(layer, z)).unsqueeze(1)
            # the error the dendrite was trained against excludes its own (zero) contribution
            _, corr = objective(a, flat(layer, d))
        full[name] = round(float(corr.mean()), 3)
    return model, ema, full


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="mnist1d")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--base", type=int, default=60)
    ap.add_argument("--after", type=int, default=90)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--arms", default="")
    ap.add_argument("--out", default="results/issue10-levers")
    a = ap.parse_args()
    lr, batch = a.lr, a.batch
    cfg = pf.Config(mode="gd")
    arms = {
        "continue": lambda m, d, s: (m, {}),
        "continue lr/10": lambda m, d, s: (m, {"lr": lr / 10}),
        "gd init 1": lambda m, d, s: (grow_gd(m, cfg, s), {}),
        "gd init 0.01": lambda m, d, s: (grow_gd(m, cfg.replace(init_scale=0.01), s), {}),
        "gd init 1, lr/10": lambda m, d, s: (grow_gd(m, cfg, s), {"lr": lr / 10}),
        "gd init 1, lr/3": lambda m, d, s: (grow_gd(m, cfg, s), {"lr": lr / 3}),
        "gd init 1, tanh": lambda m, d, s: (grow_gd(m, cfg.replace(dendrite_activation="tanh"), s), {}),
        "gd init 1, dendrite wd 1e-3": lambda m, d, s: (grow_gd(m, cfg, s), {"wd_dendrite": 1e-3}),
        "gd output layer only": lambda m, d, s: (grow_gd(m, cfg.replace(include=[last_layer(m)]), s), {}),
        "pb online (today)": lambda m, d, s: online(m, d, s, lr, batch),
        "cc cached 8 cand, 200 steps": lambda m, d, s: cc(m, d, s, 8, 200, "random"),
        "cc cached 1 cand, 200 steps": lambda m, d, s: cc(m, d, s, 1, 200, "random"),
        "cc covariance init, 0 steps": lambda m, d, s: cc(m, d, s, 1, 0, "covariance"),
        "cc covariance init + 100 steps": lambda m, d, s: cc(m, d, s, 4, 100, "covariance"),
        "cc cached 8 cand, trainable (gd after)": lambda m, d, s: cc(m, d, s, 8, 200, "random", frozen=False),
        "cc cached 8 cand, corr>=0.2 only": lambda m, d, s: cc(m, d, s, 8, 200, "random", min_corr=0.2),
    }

    def online(m, d, s, lr, batch):
        m, ema, full = grow_online_pb(m, cfg.replace(candidates=4), d, s, 10, lr, batch)
        return m, {"info": {"ema_corr": ema, "full_corr": full}}

    def cc(m, d, s, p, steps, init, min_corr=0.0, frozen=True):
        m, corr = grow_cc(m, cfg.replace(mode="pb"), d, s, p, steps, 0.01, init, min_corr, frozen)
        return m, {"info": {"full_corr": corr}}

    def last_layer(m):
        return [n for n, mod in m.named_modules() if isinstance(mod, nn.Linear)][-1]

    chosen = [x.strip() for x in a.arms.split(";")] if a.arms else list(arms)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {name: [] for name in chosen}
    for seed in range(a.seeds):
        data = load_dataset(a.dataset, seed=seed)
        torch.manual_seed(seed)
        base = build_model(a.model, data, a.width, seed=seed)
        base_val, base_test, _ = train(base, data, a.base, lr, batch, seed)
        for name in chosen:
            t = time.perf_counter()
            m, kw = arms[name](copy.deepcopy(base), data, seed)
            info = kw.pop("info", None)
            v, te, _ = train(m, data, a.after, kw.pop("lr", lr), batch, seed, **kw)
            rows[name].append({"seed": seed, "val": v, "test": te, "base_val": base_val,
                               "base_test": base_test, "params": pf.count_parameters(m),
                               "info": info, "s": time.perf_counter() - t})
            print(f"seed {seed} {name:40s} val {v:6.2f} test {te:6.2f} (base {base_test:.2f}) "
                  f"params {pf.count_parameters(m)} {info or ''}", flush=True)
    tag = f"{a.dataset}-{a.model}-w{a.width}"
    (out / f"{tag}.json").write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))
    ref = {r["seed"]: r for r in rows.get("continue", [])}
    print(f"\n{tag}: arm | params | val | test | test - continue (paired)")
    for name, rs in rows.items():
        m = lambda k: statistics.mean(r[k] for r in rs)
        diff = [r["test"] - ref[r["seed"]]["test"] for r in rs if r["seed"] in ref]
        ds = f"{statistics.mean(diff):+.2f} ± {statistics.stdev(diff) if len(diff) > 1 else 0:.2f}" if diff else "-"
        print(f"{name:40s} | {m('params'):.0f} | {m('val'):.2f} | {m('test'):.2f} | {ds}")


if __name__ == "__main__":
    main()

"""Cascade-correlation training of pb candidates on a cached epoch (``candidate_training="cached"``).

During one dendrite-phase epoch every layer's :class:`~perforate.growth.pb.CandidatePool`
records each batch's detached input, the accepted dendrites' activations and the neuron error.
:func:`fit` then trains the candidates with full-batch Adam steps on that epoch, maximising

    S = sum_{p,c} | cov(a_pc, delta_c / std(delta_c)) |

over every cached sample and position, and scores them by ``S`` over the whole epoch at their
final weights. Cost shapes the code: the batches are stacked into one input where the layer's
kind can (one large call per step instead of one per batch), the gradient of ``S`` is written
out (``dS/da = sign(cov) d / M`` with ``d`` the centred, unit-variance error) so autograd runs
only through the candidates' own op, and every layer steps in lock step, with one Adam and one
autograd call for all of them (small layers pay the per-step overhead once, not per layer). A
layer stops on its own when 10 steps raise its ``S`` by less than 0.5 %; its parameters then
get no gradient and Adam leaves them alone, so each layer trains as it would alone.
"""
from __future__ import annotations

import math

import torch

from .. import activations

VAR_EPS = 1e-16
"""Floor of var(delta): keeps 1 / std(delta) finite where a neuron gets no error (pb's online
statistics use it too)."""


def unit_error(delta: torch.Tensor) -> torch.Tensor:
    """The neuron error ``delta`` [N, C] centred and scaled to unit variance per neuron: the
    ``d`` the objective correlates with."""
    d = delta - delta.mean(0)
    return d * d.pow(2).mean(0).clamp_min(VAR_EPS).rsqrt()


class CachedEpoch:
    """One layer's cached epoch, stacked for full-batch steps (see the module docstring)."""

    def __init__(self, pool, layer, entries: list[dict]) -> None:
        self.pool, self.layer = pool, layer
        self.activation = activations.ACTIVATIONS[layer.activation]
        first = entries[0]
        dtype = _parameter_dtype(pool, layer)
        if dtype is not None:  # batches recorded under autocast: fit at the candidates' dtype
            entries = [{**e, "x": _cast(e["x"], dtype), "acts": _cast(e["acts"], dtype),
                        "args": _cast(e["args"], dtype), "kwargs": _cast(e["kwargs"], dtype)}
                       for e in entries]
        with torch.no_grad():
            axis = layer.adapter.axis(layer, first["delta"].ndim)  # delta is a neuron tensor

            def rows(t):  # a neuron tensor as [samples x positions, C]
                return t.movedim(axis, -1).flatten(0, -2)

            self.batch_rows = [e["delta"].numel() // max(e["delta"].shape[axis], 1) for e in entries]
            d = torch.cat([rows(e["delta"]) for e in entries]).to(pool.moments.dtype)
            self.d = unit_error(d).unsqueeze(1)  # [M, 1, C]
            # the accepted dendrites' activations, [M, 1, C] each
            self.cascade_inputs = [torch.cat([rows(e["acts"][j]) for e in entries]).unsqueeze(1)
                                   for j in range(len(first["acts"]))]
            merged = None
            if not any(e["args"] or e["kwargs"] for e in entries):
                merged = pool.adapter.cat_samples(layer, [e["x"] for e in entries])
            self.calls = ([(merged, (), {})] if merged is not None else
                          [(e["x"], e["args"], e["kwargs"]) for e in entries])
        self._batch_calls = [(e["x"], e["args"], e["kwargs"]) for e in entries] if merged is None else None
        rows_total = int(self.d.shape[0])
        # rows of z per sample of the merged input (1 for flat Linear inputs; positions for
        # convolutions); 0 where the merged input does not split by samples
        self._rows_per_sample = (rows_total // merged.shape[0]
                                 if merged is not None and rows_total % merged.shape[0] == 0 else 0)
        samples = sum(e["x"].shape[0] if isinstance(e["x"], torch.Tensor) and e["x"].ndim else 0
                      for e in entries)
        self.costly = merged is None or rows_total != samples
        """True where a step costs like the layer's own epoch: several positions per sample
        (convolutions, Linear layers on sequences) or one call per recorded batch."""
        self.chunks = [(self.calls, 0, rows_total)]
        self.running: torch.Tensor | None = None  # sliced steps: running mean of cov [P, C]
        self.max_steps: int | None = None  # sliced steps: the budget of ``passes``; flat: flat_steps
        self.lr: float | None = None  # flat layers: their own Adam rate (``fit``'s flat_lr)
        cascade = pool.cascade
        self.cascade = cascade if cascade is not None and cascade.requires_grad else None
        self.units = [p for p in pool.trainable_parameters() if p.requires_grad and p is not cascade]
        self.params = self.units + ([self.cascade] if self.cascade is not None else [])

    def split(self, n: int) -> None:
        """Train on ``n`` slices of the epoch (consecutive recorded batches each), one slice a
        step in turn; 1 (the default): every step on the whole epoch."""
        b = len(self.batch_rows)
        merged = self.calls[0][0] if self._batch_calls is None else None
        n = max(1, min(int(n), b))
        if n == 1 or (merged is not None and not self._rows_per_sample):
            return
        starts = [0]
        for r in self.batch_rows:
            starts.append(starts[-1] + r)
        bounds = [round(i * b / n) for i in range(n + 1)]
        chunks = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            r0, r1 = starts[lo], starts[hi]
            if merged is not None:
                rps = self._rows_per_sample
                calls = [(merged[r0 // rps:r1 // rps], (), {})]
            else:
                calls = self._batch_calls[lo:hi]
            chunks.append((calls, r0, r1))
        self.chunks = chunks

    def unit_preactivations(self, calls: list | None = None) -> torch.Tensor:
        """The candidates' own ``z`` over the epoch (or over ``calls``, a slice of it), [M, P, C],
        cascade inputs not added."""
        zs = []
        for x, args, kwargs in self.calls if calls is None else calls:
            z, ax = self.pool.adapter.pool_preactivations(self.pool, self.layer, x, args, kwargs)
            zs.append(z.movedim((ax, ax + 1), (-2, -1)).flatten(0, -3))
        return zs[0] if len(zs) == 1 else torch.cat(zs)

    def with_cascade(self, z: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """The candidates' full preactivations: the units' ``z`` plus the cascade inputs (their
        ``rows``, those of ``z``)."""
        for j, a in enumerate(self.cascade_inputs):
            z = torch.addcmul(z, self.pool.cascade[:, j], a[rows])
        return z

    def gradients(self, z: torch.Tensor, rows: slice = slice(None)):
        """``(dz, dcascade, cov)`` at the units' ``z`` (detached; the epoch's ``rows``): the
        gradients of ``-S`` for ``z`` and for the cascade weights ([P, K, C]; None when they do
        not train), and ``M`` times the covariances [P, C] (``S = |cov|.sum() / M``, read only
        when needed). On a slice, ``d`` keeps the whole epoch's centring and scale, so ``cov``
        estimates the epoch's covariance."""
        act = self.activation
        z = self.with_cascade(z, rows)
        d = self.d[rows]
        a = act.forward(z)
        a_ = a if a.dtype == d.dtype else a.to(d.dtype)
        inv_m = 1.0 / a.shape[0]
        cov = (a_ * d).sum(0)  # [P, C], M times the covariance (d is centred)
        sign = cov.sign()
        if len(self.chunks) > 1:  # a slice's covariance is noisy: its sign from a running mean
            mean = cov * inv_m
            self.running = mean if self.running is None else self.running.lerp_(mean, 1.0 / len(self.chunks))
            sign = self.running.sign()
        grad = d * sign.mul_(-inv_m)  # -dS/da
        grad = grad if grad.dtype == a.dtype else grad.to(a.dtype)
        if act.backward_ is not None:
            grad = act.backward_(grad, a)
        else:
            grad = act.backward(grad, a, None if act.from_output else z)
        dcascade = None
        if self.cascade is not None:
            dcascade = torch.stack([(grad * c[rows]).sum(0) for c in self.cascade_inputs], 1)
        return grad, dcascade, cov

    @torch.no_grad()
    def score(self) -> None:
        """The pool's statistics over the whole epoch at the current weights; remembered."""
        a = self.activation.forward(self.with_cascade(self.unit_preactivations())).to(self.d.dtype)
        mean = a.mean(0)
        cov = ((a - mean) * self.d).mean(0)
        self.pool.moments.copy_(_rank_mean(torch.stack([cov, mean, a.pow(2).mean(0)])))
        self.pool.best_score.zero_()
        self.pool.remember_best()


def _parameter_dtype(pool, layer) -> torch.dtype | None:
    """The floating dtype of the candidates' weights (None when they hold none)."""
    for p in list(pool.parameters()) + list(layer.main.parameters()):
        if p.is_floating_point():
            return p.dtype
    return None


def _cast(obj, dtype: torch.dtype):
    """``obj`` (a nest of tuples, lists and dicts) with its floating tensors in ``dtype``: a
    batch recorded under ``torch.autocast`` holds half-precision inputs and activations, and
    the fit runs outside autocast on the candidates' own (e.g. float32) weights."""
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() and obj.dtype != dtype else obj
    if isinstance(obj, dict):
        return {k: _cast(v, dtype) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(_cast(v, dtype) for v in obj)
    return obj


def fit(pools: list, steps: int, lr: float, passes: float = 0.0,
        flat_steps: int | None = None, flat_lr: float | None = None) -> list[int]:
    """Train and score the candidates of ``pools`` (``(pool, layer)`` pairs) on their cached
    epochs; returns the steps each took (0 where nothing was cached). The caches are emptied.

    ``passes`` > 0: a layer whose step costs like its own epoch (:attr:`CachedEpoch.costly`:
    convolutions, Linear layers on sequences, declared blocks, kinds that run one call per
    recorded batch) takes each step on the next of
    ``ceil(steps / passes)`` slices of its cached epoch, so that its steps pass over the epoch
    about ``passes`` times (as minibatch steps); other layers, and ``passes=0``, take every
    step on the whole epoch. ``flat_steps``: a layer that is not costly (one row per sample,
    e.g. a flat Linear layer, where a full-batch step is cheap) takes at most that many steps,
    at ``flat_lr`` where given. The scores are always those of the whole epoch."""
    epochs = _cached_epochs(pools, steps, passes, flat_steps, flat_lr)
    active = [e for e in epochs if e is not None and e.params]
    taken = _train(active, steps, lr) if steps and active else {}
    for e in epochs:
        if e is not None:
            e.score()
    return [0 if e is None else taken.get(id(e), 0) for e in epochs]


def _cached_epochs(pools: list, steps: int, passes: float, flat_steps: int | None,
                   flat_lr: float | None) -> list[CachedEpoch | None]:
    """Each pool's cached epoch (``None`` where nothing was cached) with its share of the
    schedule (slices, step cap, rate: see :func:`fit`); the pools' caches are emptied."""
    epochs: list[CachedEpoch | None] = []
    for pool, layer in pools:
        entries = [e for e in pool.cache or () if e["delta"] is not None]
        pool.cache = []
        epochs.append(CachedEpoch(pool, layer, entries) if entries else None)
        if entries and passes > 0 and epochs[-1].costly:
            epochs[-1].split(math.ceil(steps / passes))
            # fewer slices than asked (one per recorded batch at most): fewer steps, same passes
            epochs[-1].max_steps = min(steps, max(1, round(passes * len(epochs[-1].chunks))))
        elif entries and not epochs[-1].costly:
            if flat_steps is not None:
                epochs[-1].max_steps = min(steps, flat_steps)
            if flat_lr is not None:
                epochs[-1].lr = flat_lr
        del entries  # stacked, the batches' own tensors can go before the next layer stacks
    return epochs


def _train(active: list[CachedEpoch], steps: int, lr: float) -> dict[int, int]:
    """Up to ``steps`` Adam steps on the candidates of ``active`` (epochs with parameters), each
    epoch leaving when its objective stops rising or its steps are spent; returns the steps each
    took, by ``id``."""
    taken = {id(e): 0 for e in active}
    last: dict[int, float] = {}
    optimizer = _adam([{"params": e.params, "lr": lr if e.lr is None else e.lr} for e in active], lr)
    window = {id(e): 0.0 for e in active if len(e.chunks) > 1}  # sliced: objectives summed
    for step in range(1, steps + 1):
        out = _gradients(active, step, window)
        optimizer.step()
        for e in active:
            taken[id(e)] = step
        if step % 10 == 0:  # the early stop reads the objectives (a device sync) here only
            active = _not_stalled(active, out, window, last)
        spent = [e for e in active if e.max_steps is not None and step >= e.max_steps]
        for e in spent:  # its passes done: no gradient, Adam leaves its parameters alone
            for p in e.params:
                p.grad = None
        active = [e for e in active if e not in spent]
        if not active:
            break
    return taken


def _gradients(active: list[CachedEpoch], step: int, window: dict[int, float]) -> list:
    """Sets the gradients of step ``step`` on the candidates of ``active`` (each on its slice
    for the step, averaged over ranks) and adds the sliced epochs' objectives to ``window``;
    returns :meth:`CachedEpoch.gradients`' ``(dz, dcascade, cov)`` per epoch."""
    chunks = [e.chunks[(step - 1) % len(e.chunks)] for e in active]
    with torch.enable_grad():
        zs = [e.unit_preactivations(calls) if e.units else None
              for e, (calls, _, _) in zip(active, chunks)]
    with torch.no_grad():
        out = [e.gradients(z.detach() if e.units else e.unit_preactivations(calls), slice(r0, r1))
               for e, z, (calls, r0, r1) in zip(active, zs, chunks)]
        for e, (_, _, cov), (_, r0, r1) in zip(active, out, chunks):
            if id(e) in window:  # over a window of slices: steps on one slice are noisy
                window[id(e)] = window[id(e)] + cov.abs().sum() / (r1 - r0)
    trained = [(z, dz) for e, z, (dz, _, _) in zip(active, zs, out) if e.units]
    # autograd.grad, not backward(): a DistributedDataParallel wrapper's hooks on
    # these parameters must not fire outside its forward
    grads = iter(torch.autograd.grad([z for z, _ in trained],
                                     [p for e in active for p in e.units],
                                     [dz for _, dz in trained]) if trained else ())
    for e, (_, dcascade, _) in zip(active, out):
        for p in e.units:
            p.grad = _rank_mean(next(grads))  # ranks fit one candidate set on all their data
        if e.cascade is not None:
            e.cascade.grad = _rank_mean(dcascade)
    return out


def _not_stalled(active: list[CachedEpoch], out: list, window: dict[int, float],
                 last: dict[int, float]) -> list[CachedEpoch]:
    """The epochs of ``active`` whose objective (over the last 10 steps' window where sliced,
    else this step's) rose by 0.5 % or more since the last check; the others get no gradient,
    so that Adam leaves their parameters alone. Updates ``window`` and ``last``."""
    # averaged over ranks, so that every rank stops a layer at the same step
    values = _rank_mean(torch.stack([
        window.pop(id(e)) / 10 if id(e) in window else cov.abs().sum() / e.d.shape[0]
        for e, (_, _, cov) in zip(active, out)])).tolist()
    window.update((id(e), 0.0) for e in active if len(e.chunks) > 1)
    stopped = [e for e, v in zip(active, values)
               if id(e) in last and v < last[id(e)] * 1.005]
    last.update((id(e), v) for e, v in zip(active, values))
    for e in stopped:  # no gradient: Adam leaves these parameters alone
        for p in e.params:
            p.grad = None
    return [e for e in active if e not in stopped]


def _adam(groups: list[dict], lr: float) -> torch.optim.Adam:
    """Adam for cached training (parameter groups, each with its rate): torch's fused kernel
    where it has one (a step is then one op instead of a dozen per tensor, which shows on small
    layers)."""
    groups = [g for g in groups if g["params"]]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                for g in groups for p in g["params"])
    return torch.optim.Adam(groups, lr=lr, fused=fused or None)


def _rank_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the ranks of an initialised process group (else ``t``)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t

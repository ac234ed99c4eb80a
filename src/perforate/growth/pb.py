"""Perforated Backpropagation: candidate dendrites trained to correlate with neuron error.

During a dendrite phase every wrapped layer holds a :class:`CandidatePool`. The pool computes
``P`` candidates' activations ``a`` from the layer's *detached* input (and the detached
activations of the layer's accepted dendrites, cascade style) and adds an all-zero tensor to
the layer output: the model's outputs do not change, but the zero term connects the candidates
to the user's ordinary ``loss.backward()``. Its backward receives the neuron error
``delta = dLoss/d(output)`` (the gradient at the neuron's pre-activation) and hands the
candidates the gradient of the cascade-correlation objective instead: per candidate ``p`` and
channel ``c``

    S_pc = | cov_n(a_pc, delta_c / std(delta_c)) |

over the samples ``n`` (batch and every spatial/time position). Minimising with the user's
optimizer therefore *maximises* ``S``. As in cascade-correlation, the covariance is meant over
the whole training set, not one batch: the pool keeps an exponential moving average of the
signed per-batch covariance, scores with its magnitude and takes the gradient's sign from it
(a per-batch sign would push candidates whose true correlation is small in random
directions, and a per-batch ``|cov|`` is biased upward by sampling noise).

That is ``Config.candidate_training = "online"``. The default, ``"cached"``, is
cascade-correlation proper: during one epoch the pool only records each batch's detached input
(and accepted dendrites' activations) and neuron error, then :meth:`CandidatePool.fit_cached`
trains the candidates with full-batch steps on that cached epoch and scores them by the
covariance over the whole epoch at their final, fixed weights. The running minibatch average
overstates the correlation a candidate reaches (1-2.4x on MNIST-1D and digits layers,
``results/ablation.md``); the full-epoch score is the one the join and
``Config.join_min_correlation`` use.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from .. import activations
from ..health import check_cached_epochs
from ..layers import DendriticLayer
from . import cached
from .cached import VAR_EPS as _VAR_EPS
from .cached import unit_error

log = logging.getLogger("perforate")

_EPS = 1e-8


def correlation_objective(a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``sum_{p,c} |cov(a[p,:,c], delta[:,c] / std(delta[:,c]))|`` for ``a`` [P, N, C], ``delta`` [N, C].

    The one-batch objective candidate training maximises (the reference for tests);
    :func:`correlation_statistics` gives its gradient.
    """
    d = unit_error(delta)
    ac = a - a.mean(1, keepdim=True)
    return (ac * d).mean(1).abs().sum()


def correlation_statistics(a: torch.Tensor, delta: torch.Tensor, sign: torch.Tensor | None = None):
    """One batch's statistics for ``a`` [P, N, C] and ``delta`` [N, C].

    Returns ``(grad, cov, var)``: ``grad`` [P, N, C] is the gradient of
    :func:`correlation_objective` with respect to ``a`` (with the covariance's sign taken from
    ``sign`` [P, C] when given), ``cov`` the signed covariance and ``var`` the variance of
    ``a``, both [P, C].
    """
    n = a.shape[1]
    d = unit_error(delta)
    cov = (a * d).mean(1)  # d is centred, so this is cov(a, d)
    var = (a.pow(2).mean(1) - a.mean(1).pow(2)).clamp_min(0)
    s = cov.sign() if sign is None else sign
    return s.unsqueeze(1) * d / n, cov, var


class _Tap(torch.autograd.Function):
    """Forward: activate the candidates' pre-activations ``z`` and return zeros shaped like the
    layer output. Backward: the correlation objective's gradient for ``z``.

    ``z`` is laid out ``[..., P, C, ...]`` with the candidate axis just before the neuron axis
    of the output; ``delta`` arrives shaped like the output. One graph node instead of an
    activation, a subtraction, a hook and a sum: on small layers the node count sets the cost.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, pool: "CandidatePool", activation: str, axis: int) -> torch.Tensor:
        act = activations.ACTIVATIONS[activation]
        ctx.pool, ctx.act, ctx.axis = pool, act, axis
        a = act.forward(z)
        ctx.save_for_backward(a, None if act.from_output else z)
        return a.new_zeros(()).expand(z.shape[:axis] + z.shape[axis + 1:])

    @staticmethod
    def backward(ctx, delta: torch.Tensor):
        a, z = ctx.saved_tensors
        grad = ctx.pool._objective_gradient(a, delta, ctx.axis)
        return ctx.act.backward(grad, a, z), None, None, None


class _Record(torch.autograd.Function):
    """Caching: zeros of ``shape`` (the layer's neuron tensor) whose backward keeps the neuron
    error in ``entry``. ``leaf``, a scalar that requires grad, keeps the loss differentiable
    when every weight is frozen; the candidates are not computed."""

    @staticmethod
    def forward(ctx, leaf: torch.Tensor, shape: torch.Size, entry: dict) -> torch.Tensor:
        ctx.entry = entry
        return leaf.new_zeros(()).expand(shape)

    @staticmethod
    def backward(ctx, delta: torch.Tensor):
        ctx.entry["delta"] = delta.detach()
        return None, None, None


class CandidatePool(nn.Module):
    """``num_candidates`` candidate dendrites for one layer during a pb dendrite phase."""

    def __init__(self, layer: DendriticLayer, num_candidates: int = 1,
                 generator: torch.Generator | None = None, decay: float = 0.9,
                 cache_mb: float | None = None) -> None:
        super().__init__()
        self.cache: list[dict] | None = None
        self._cache_room = 0
        self.num_candidates = p = num_candidates
        ref = layer._reference()
        c, k = layer.channels, layer.num_dendrites
        self.adapter = layer.adapter
        self.weight = self.bias = None  # stacked kinds' candidates: [P*C, ...] and [P*C]
        self.blocks = None  # other kinds' candidates: P module copies
        self.adapter.init_pool(self, layer, layer.new_units(p, generator))
        self.cascade = nn.Parameter(torch.zeros(p, k, c, device=ref.device, dtype=ref.dtype)) if k else None
        self.register_buffer("best_cascade", self.cascade.detach().clone() if k else None)
        stats_dtype = torch.promote_types(ref.dtype, torch.float32)  # at least float32
        zeros = torch.zeros(p, c, device=ref.device, dtype=stats_dtype)
        # running (EMA) [cov(a, delta / std(delta)), mean(a), mean(a^2)], each [P, C]
        self.register_buffer("moments", torch.zeros(3, p, c, device=ref.device, dtype=stats_dtype))
        self.register_buffer("best_score", zeros.clone())
        self.register_buffer("best_correlation", zeros.clone())
        # EMA weight of the next batch: 1 for the first, then 1 - decay (kept on the device)
        self.register_buffer("ema_weight", torch.ones((), device=ref.device, dtype=stats_dtype))
        self.register_buffer("rate", torch.tensor(1.0 - float(decay), device=ref.device, dtype=stats_dtype))
        self._plans: dict = {}  # reduction dims and sizes by (output shape, axis)
        if cache_mb is not None:  # (after the candidates exist: the cap counts their fit)
            self.start_caching(cache_mb)

    # ------------------------------------------------------------------ scores
    @property
    def covariance(self) -> torch.Tensor:
        """[P, C] running signed ``cov(a, delta / std(delta))`` (a view: writable)."""
        return self.moments[0]

    @property
    def score(self) -> torch.Tensor:
        """[P, C] running ``|cov(a, delta / std(delta))|``: the objective."""
        return self.moments[0].abs()

    @property
    def correlation(self) -> torch.Tensor:
        """[P, C] running ``|Pearson correlation|`` between activation and neuron error."""
        cov, mean, square = self.moments
        return cov.abs() / ((square - mean.square()).clamp_min(0).sqrt() + _EPS)

    # ------------------------------------------------------------------ forward / backward
    def forward(self, x, acts: list[torch.Tensor], layer: DendriticLayer, args: tuple = (),
                kwargs: dict | None = None, *, like: torch.Tensor) -> torch.Tensor:
        """A zero tensor shaped like the layer's neuron tensor ``like`` that carries the
        candidates' gradient.

        ``x`` and ``acts`` (the accepted dendrites' activations) must come detached; ``args`` and
        ``kwargs`` are the layer call's other arguments.
        """
        kwargs = kwargs or {}
        if self.cache is not None:  # the candidates are not computed while caching
            entry = {"x": x, "acts": acts, "args": args, "kwargs": kwargs, "delta": None}
            size = _cached_bytes((x, acts, args, kwargs), like, self.num_candidates)
            if size <= self._cache_room:  # past the memory cap a batch is not kept
                self._cache_room -= size
                self.cache.append(entry)
            leaf = torch.zeros((), device=like.device, dtype=like.dtype, requires_grad=True)
            return _Record.apply(leaf, like.shape, entry)
        z, axis = self.preactivations(x, acts, layer, args, kwargs)
        return _Tap.apply(z, self, layer.activation, axis)

    def preactivations(self, x, acts: list[torch.Tensor], layer: DendriticLayer, args: tuple,
                       kwargs: dict) -> tuple[torch.Tensor, int]:
        """The candidates' ``z`` (cascade inputs added), laid out ``[..., P, C, ...]``, and the
        neuron axis of the layer's neuron tensor."""
        p, c = self.num_candidates, layer.channels
        z, axis = layer.adapter.pool_preactivations(self, layer, x, args, kwargs)
        # z: [..., P, C, ...] with the candidate axis at the output's neuron axis
        if acts:
            tail = [1] * (z.ndim - axis - 2)
            for j, a in enumerate(acts):
                z = torch.addcmul(z, self.cascade[:, j].reshape(p, c, *tail), a.unsqueeze(axis))
        return z, axis

    def _objective_gradient(self, a: torch.Tensor, delta: torch.Tensor, axis: int) -> torch.Tensor:
        """Update the running statistics with one batch; return ``-dS/da``.

        Runs inside autograd's backward (gradient recording is off). Written with few fused
        ops, plain sums (var/var_mean/norm reduce slowly along the batch axis on CPU) and
        cached shapes: on small layers the number of ops sets the cost.
        """
        plan = self._plans.get((delta.shape, axis))
        if plan is None:
            ddims = tuple(i for i in range(delta.ndim) if i != axis)
            adims = tuple(i if i < axis else i + 1 for i in ddims)
            n = max(delta.numel() // delta.shape[axis], 1)
            plan = self._plans[(delta.shape, axis)] = (ddims, adims, n, [1] * (delta.ndim - axis - 1))
        ddims, adims, n, tail = plan
        if not ddims:  # an unbatched call: no covariance to take
            return torch.zeros_like(a)
        buffers = self._buffers
        moments, weight = buffers["moments"], buffers["ema_weight"]
        a_ = a if a.dtype == moments.dtype else a.to(moments.dtype)
        delta_ = delta if delta.dtype == moments.dtype else delta.to(moments.dtype)
        d_u = delta_.unsqueeze(axis)
        sum_d = delta_.sum(ddims)  # [C]
        # 1 / (n std(delta)) = rsqrt(n sum(d^2) - sum(d)^2)
        inv_std_n = ((delta_ * delta_).sum(ddims).mul_(n).addcmul_(sum_d, sum_d, value=-1)
                     .clamp_min_(_VAR_EPS * n * n).rsqrt_())
        mean_d = sum_d.mul_(1.0 / n)
        sum_a = a_.sum(adims)  # [P, C]
        cov = (a_ * d_u).sum(adims).addcmul_(sum_a, mean_d, value=-1).mul_(inv_std_n)
        batch = torch.stack([cov, sum_a.mul_(1.0 / n), (a_ * a_).sum(adims).mul_(1.0 / n)])
        moments.lerp_(batch, weight)
        weight.copy_(buffers["rate"])
        # -dS/da = -sign(cov) (delta - mean(delta)) / (n std(delta)), cov the running covariance
        scale = moments[0].sign().mul_(inv_std_n)
        scale = scale.view(*scale.shape, *tail)
        grad = torch.addcmul(scale * mean_d.view(-1, *tail), d_u, scale, value=-1)
        return grad if grad.dtype == a.dtype else grad.to(a.dtype)

    # ------------------------------------------------------------------ cached training
    def start_caching(self, cache_mb: float) -> None:
        """Record the coming batches for :meth:`fit_cached` instead of training online; the
        candidates get no minibatch gradients. ``cache_mb`` caps what the phase holds at the
        fit's peak: the candidates' gradients and Adam moments, and per cached batch what
        :func:`_cached_bytes` counts."""
        # each batch as {"x", "acts", "args", "kwargs", "delta"}
        self.cache = []
        fixed = 3 * _nbytes(list(self.parameters()))
        self._cache_room = int(cache_mb * 2**20) - fixed
        if self._cache_room <= 0:
            log.warning("candidate_cache_mb=%g cannot hold the fit of a layer's %d candidate(s): "
                        "their gradients and Adam moments alone take %.0f MB, so nothing is cached "
                        "and they cannot train; raise candidate_cache_mb well above that, or use "
                        "candidate_training='online'", cache_mb, self.num_candidates, fixed / 2**20)

    def fit_cached(self, layer: DendriticLayer, steps: int, lr: float) -> int:
        """Train the candidates on the cached epoch with full-batch Adam steps, then set the
        scores to the full-epoch statistics at the final weights and remember those weights.

        Maximises ``sum_{p,c} |cov(a_pc, delta_c / std(delta_c))|`` over every cached sample
        and position; stops early when 10 steps raise it by less than 0.5 %. Returns the steps
        taken. The cache is emptied. (:func:`fit_cached` trains several layers' pools at once.)
        """
        return cached.fit([(self, layer)], steps, lr)[0]

    # ------------------------------------------------------------------ best weights and selection
    @torch.no_grad()
    def remember_best(self) -> None:
        """Keep, per candidate and channel, the weights with the highest score so far.

        A module copy's channels share its weights, so such a candidate is remembered whole,
        when its mean score over channels improves.
        """
        score = self.score
        improved = self.adapter.remember(self, score > self.best_score)
        self.best_score.copy_(torch.where(improved, score, self.best_score))
        self.best_correlation.copy_(torch.where(improved, self.correlation, self.best_correlation))
        if self.cascade is not None:
            self.best_cascade.copy_(torch.where(improved.unsqueeze(1), self.cascade, self.best_cascade))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What a dendrite phase trains: every parameter of the pool (the candidates' weights;
        remembered best weights are buffers)."""
        return list(self.parameters())

    def layer_score(self) -> float:
        """Mean over neurons of the best candidate's remembered objective."""
        return float(self.best_score.max(0).values.mean())

    def layer_correlation(self) -> float:
        """Mean over neurons of the chosen candidate's |correlation| with the neuron error."""
        best = self.best_score.argmax(0, keepdim=True)
        return float(self.best_correlation.gather(0, best).mean())

    @torch.no_grad()
    def select(self):
        """The winning dendrite as ``(units, cascade)`` for :meth:`DendriticLayer.add_dendrites`.

        Stacked kinds take, for each neuron, the remembered weights of its best candidate;
        kinds whose dendrites are module copies take the remembered candidate with the best
        mean score (a copy's channels cannot be split between candidates).
        """
        adapter = self.adapter
        winners = adapter.winners(self)  # [C]
        units = adapter.select(self, winners)
        cascade = None
        if self.best_cascade is not None:
            channels = torch.arange(winners.shape[0], device=winners.device)
            cascade = self.best_cascade[winners, :, channels].transpose(0, 1).unsqueeze(0).clone()
        return units, cascade


def candidate_parameters(layers: dict[str, DendriticLayer]) -> list[nn.Parameter]:
    """The parameters a dendrite phase trains: those of every layer's candidate pool."""
    return [p for layer in layers.values() if layer.candidate_pool is not None
            for p in layer.candidate_pool.trainable_parameters()]


def start_dendrite_phase(layers: dict[str, DendriticLayer], num_candidates: int,
                         generator: torch.Generator, decay: float,
                         cache_mb: float | None = None) -> None:
    """Attach a fresh candidate pool to every layer (``cache_mb``: cached training, with this
    memory cap per layer; None: online training)."""
    for layer in layers.values():
        layer.candidate_pool = CandidatePool(layer, num_candidates, generator, decay, cache_mb)


def fit_cached(layers: dict[str, DendriticLayer], steps: int, lr: float,
               passes: float = 0.0, flat_steps: int | None = None,
               flat_lr: float | None = None) -> dict[str, int]:
    """Cached training of every layer's pool (see :meth:`CandidatePool.fit_cached`), all the
    layers in lock step (:mod:`perforate.growth.cached`; ``passes``: see
    :func:`~perforate.growth.cached.fit`, as ``flat_steps`` and ``flat_lr``); returns the steps each layer took. Warns about a
    cached epoch that holds non-finite values."""
    check_cached_epochs({name: layer.candidate_pool for name, layer in layers.items()})
    return dict(zip(layers, cached.fit([(layer.candidate_pool, layer) for layer in layers.values()],
                                       steps, lr, passes, flat_steps, flat_lr)))


def join_candidates(layers: dict[str, DendriticLayer],
                    min_correlation: float = 0.0) -> dict[str, dict[str, float]]:
    """Turn each layer's best candidates into a frozen dendrite (v = 0); returns scores by layer.

    A layer whose chosen candidates' mean |correlation| is below ``min_correlation`` gets no
    dendrite (``"joined": False`` in its scores).
    """
    scores = {}
    for name, layer in layers.items():
        pool = layer.candidate_pool
        pool.remember_best()
        correlation = pool.layer_correlation()
        joined = correlation >= min_correlation
        scores[name] = {"score": pool.layer_score(), "correlation": correlation, "joined": joined}
        units, cascade = pool.select()
        layer.candidate_pool = None
        if joined:
            layer.add_dendrites(1, units=units, cascade=cascade)
            layer.freeze_dendrites(True)
    return scores


def _cached_bytes(inputs, like: torch.Tensor, candidates: int) -> int:
    """What caching one batch costs the phase at its peak (the fit), counted against
    ``candidate_cache_mb``: its inputs twice (kept, then stacked for full-batch steps), its
    neuron error (shaped like the layer's output ``like``, float32 at least) twice (kept, then
    centred and scaled), and per candidate four tensors of that size in each fitting step (the
    preactivations, activations, their gradient and a dtype copy)."""
    error = like.numel() * max(4, like.element_size())
    return 2 * _nbytes(inputs) + (2 + 4 * candidates) * error


def _nbytes(obj) -> int:
    """Bytes of the tensors in a nest of tuples, lists and dicts."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return _nbytes(list(obj.values()))
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    return 0



_HELD = "_perforate_held_statistics"


def hold_norm_statistics(model: nn.Module, hold: bool) -> None:
    """Stop (``hold=True``) or restart the running statistics of the model's norm layers.

    A dendrite phase promises unchanged outputs, but batch-norm layers in train mode keep
    updating their running mean and variance, so eval outputs would drift. Held, they still
    normalise with batch statistics in train mode (as ``track_running_stats=False`` does) and
    with the unchanged running statistics in eval mode. Candidate pools are left alone: their
    norms must learn the statistics they will need once joined.
    """
    pools = [m for m in model.modules() if isinstance(m, CandidatePool)]
    skip = {id(sub) for pool in pools for sub in pool.modules()}
    for module in model.modules():
        if id(module) in skip or not isinstance(module, nn.modules.batchnorm._NormBase):
            continue
        if hold and module.track_running_stats and module.running_mean is not None:
            module.track_running_stats = False
            setattr(module, _HELD, True)
        elif not hold and getattr(module, _HELD, False):
            module.track_running_stats = True
            delattr(module, _HELD)

"""Perforated Backpropagation: candidate dendrites trained to correlate with neuron error.

During a dendrite phase every wrapped layer holds a :class:`CandidatePool`. The pool computes
its candidates' activations from the layer's *detached* input (and the detached activations of
the layer's accepted dendrites, cascade style) and adds ``a - a.detach()`` to the layer output:
exactly zero, so the model's outputs do not change, but it connects the candidates to the
user's ordinary ``loss.backward()``. A hook on that zero term receives the neuron error
``delta = dLoss/d(output)`` and replaces the gradient with the gradient of the
cascade-correlation objective: per candidate ``p`` and channel ``c``,
``S_pc = |cov_n(a_pc, delta_c / std(delta_c))|`` over the batch and every spatial/time
position. Plain optimizer steps on that gradient therefore *maximise* ``S``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import _ACTIVATIONS, DendriticLayer

_EPS = 1e-8


def _flatten_channels(t: torch.Tensor, axis: int) -> torch.Tensor:
    """[..., C at ``axis``, ...] -> [N, C] with every other position as a sample."""
    return t.movedim(axis, -1).reshape(-1, t.shape[axis])


def correlation_objective(a: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``sum_{p,c} |cov(a[p,:,c], delta[:,c] / std(delta[:,c]))|`` for ``a`` [P, N, C], ``delta`` [N, C].

    The quantity candidate training maximises; :func:`correlation_gradient` is its gradient.
    """
    d = delta - delta.mean(0)
    d = d / (d.pow(2).mean(0).sqrt() + _EPS)
    ac = a - a.mean(1, keepdim=True)
    return (ac * d).mean(1).abs().sum()


def correlation_statistics(a: torch.Tensor, delta: torch.Tensor):
    """Gradient of :func:`correlation_objective` w.r.t. ``a``, and per-[P, C] ``|cov|`` and ``|corr|``."""
    n = a.shape[1]
    d = delta - delta.mean(0)
    d = d / (d.pow(2).mean(0).sqrt() + _EPS)
    ac = a - a.mean(1, keepdim=True)
    cov = (ac * d).mean(1)  # [P, C]
    grad = cov.sign().unsqueeze(1) * d.unsqueeze(0) / n
    corr = cov.abs() / (ac.pow(2).mean(1).sqrt() + _EPS)
    return grad, cov.abs(), corr


class CandidatePool(nn.Module):
    """``num_candidates`` candidate dendrites for one layer during a pb dendrite phase."""

    def __init__(self, layer: DendriticLayer, num_candidates: int = 1,
                 generator: torch.Generator | None = None, decay: float = 0.9) -> None:
        super().__init__()
        self.num_candidates = p = num_candidates
        self.decay = decay
        ref = layer._reference()
        c, k = layer.channels, layer.num_dendrites
        units = layer.new_unit_tensors(p, generator)
        self.weight = self.bias = None
        self.blocks = None
        if layer.kind == "block":
            self.blocks = nn.ModuleList(units)
        else:
            w, b = units
            self.weight = nn.Parameter(w)
            self.bias = nn.Parameter(b) if b is not None else None
            self.register_buffer("best_weight", w.detach().clone())
            self.register_buffer("best_bias", b.detach().clone() if b is not None else None)
        self.cascade = nn.Parameter(torch.zeros(p, k, c, device=ref.device, dtype=ref.dtype)) if k else None
        self.register_buffer("best_cascade", self.cascade.detach().clone() if k else None)
        zeros = torch.zeros(p, c, device=ref.device, dtype=torch.float32)
        self.register_buffer("score", zeros.clone())  # EMA of |cov| (the objective)
        self.register_buffer("correlation", zeros.clone())  # EMA of |Pearson correlation|
        self.register_buffer("best_score", zeros.clone())
        self.register_buffer("best_correlation", zeros.clone())
        self.register_buffer("batches", torch.zeros((), dtype=torch.long, device=ref.device))

    def forward(self, x: torch.Tensor, acts: list[torch.Tensor], layer: DendriticLayer) -> torch.Tensor:
        """A zero tensor shaped like the layer output that carries the candidates' gradient."""
        if self.blocks is not None:
            z = [block(x) for block in self.blocks]
        else:
            z = layer._stacked_call(x, self.weight, self.bias, self.num_candidates)
        act = _ACTIVATIONS[layer.activation]
        cand = []
        for p, zp in enumerate(z):
            pre = zp
            for j, a in enumerate(acts):
                pre = pre + layer.channel_view(self.cascade[p, j], zp.ndim) * a
            cand.append(act(pre))
        a = torch.stack(cand)
        anchor = a - a.detach()
        axis = layer._axis(a.ndim - 1) + 1
        values = a.detach()
        anchor.register_hook(lambda grad: self._replace_gradient(values, grad, axis))
        return anchor.sum(0)

    @torch.no_grad()
    def _replace_gradient(self, a: torch.Tensor, grad: torch.Tensor, axis: int) -> torch.Tensor:
        moved = a.float().movedim(axis, -1)
        flat_a = moved.reshape(a.shape[0], -1, a.shape[axis])
        delta = _flatten_channels(grad[0].float(), axis - 1)
        g, cov, corr = correlation_statistics(flat_a, delta)
        if self.batches.item() == 0:
            self.score.copy_(cov)
            self.correlation.copy_(corr)
        else:
            self.score.lerp_(cov, 1 - self.decay)
            self.correlation.lerp_(corr, 1 - self.decay)
        self.batches += 1
        return (-g).reshape(moved.shape).movedim(-1, axis).to(grad.dtype)

    @torch.no_grad()
    def remember_best(self) -> None:
        """Keep, per candidate and channel, the weights with the highest score so far."""
        improved = self.score > self.best_score
        self.best_score.copy_(torch.where(improved, self.score, self.best_score))
        self.best_correlation.copy_(torch.where(improved, self.correlation, self.best_correlation))
        if self.weight is not None:
            mask = improved.reshape(*improved.shape, *([1] * (self.weight.ndim - 2)))
            self.best_weight.copy_(torch.where(mask, self.weight, self.best_weight))
            if self.bias is not None:
                self.best_bias.copy_(torch.where(improved, self.bias, self.best_bias))
        if self.cascade is not None:
            self.best_cascade.copy_(torch.where(improved.unsqueeze(1), self.cascade, self.best_cascade))

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

        Stacked layers take, for each neuron, its best candidate; blocks take the candidate
        with the best mean score (a block's channels cannot be split between candidates).
        """
        c = self.best_score.shape[1]
        if self.blocks is not None:
            winner = int(self.best_score.mean(1).argmax())
            units = [self.blocks[winner]]
            cascade = self.cascade[winner].unsqueeze(0).detach() if self.cascade is not None else None
            return units, cascade
        best = self.best_score.argmax(0)  # [C]
        channels = torch.arange(c, device=best.device)
        w = self.best_weight[best, channels].unsqueeze(0).clone()
        b = self.best_bias[best, channels].unsqueeze(0).clone() if self.bias is not None else None
        cascade = None
        if self.best_cascade is not None:
            cascade = self.best_cascade[best, :, channels].transpose(0, 1).unsqueeze(0).clone()
        return (w, b), cascade


def start_dendrite_phase(layers: dict[str, DendriticLayer], num_candidates: int,
                         generator: torch.Generator, decay: float) -> None:
    """Attach a fresh candidate pool to every layer."""
    for layer in layers.values():
        layer.candidate_pool = CandidatePool(layer, num_candidates, generator, decay)


def join_candidates(layers: dict[str, DendriticLayer]) -> dict[str, dict[str, float]]:
    """Turn each layer's best candidates into a frozen dendrite (v = 0); returns scores by layer."""
    scores = {}
    for name, layer in layers.items():
        pool = layer.candidate_pool
        pool.remember_best()
        scores[name] = {"score": pool.layer_score(), "correlation": pool.layer_correlation()}
        units, cascade = pool.select()
        layer.candidate_pool = None
        layer.add_dendrites(1, units=units, cascade=cascade)
        layer.freeze_dendrites(True)
    return scores

"""Dendritic growth under ``torch.nn.parallel.DistributedDataParallel`` (e.g. ``torchrun``).

Growth changes the parameter set, and a DDP wrapper only reduces the parameters it saw when it
was built, so the wrapper must be re-created after every restructure. :class:`DDPGrower` does
that and keeps the ranks in lockstep:

- the validation score is all-reduced (mean, or rank 0's value) before ``Grower.step``, so every
  rank takes the same decision at the same epoch;
- parameters and buffers are broadcast from rank 0 before each step, so the best-model snapshot
  (and the model restored from it) is bit-identical on every rank, and rank-local statistics
  (BatchNorm running stats, pb candidate scores) cannot make the ranks disagree;
- new dendrites come from a generator seeded by ``Config.seed`` and the growth counter, so
  every rank draws the same initial weights (re-wrapping would also broadcast them);
- only rank 0 writes files (``out_dir`` is ignored on the other ranks).

Pattern::

    dist.init_process_group("gloo")      # torchrun sets RANK / WORLD_SIZE / MASTER_ADDR
    cfg = pf.Config(patience=8, max_epochs=max_epochs)  # the loop's budget: growth is planned in it
    dg = DDPGrower(model, cfg, optimizer_factory=lambda p: torch.optim.Adam(p, 1e-3), out_dir="runs/x")
    for epoch in range(max_epochs):
        dg.model.train()                  # the current DDP wrapper: read it every epoch,
        for x, y in loader:               # never keep an old one (it no longer matches)
            dg.optimizer.zero_grad(); loss_fn(dg.model(x), y).backward(); dg.optimizer.step()
        if dg.step(evaluate(dg.module)).done:
            break
    dg.finish()

Resume with :meth:`DDPGrower.resume` (every rank reads ``out_dir``) or
:meth:`DDPGrower.load_state_dict`; both re-wrap. ``dg.model`` also re-wraps by itself when the
grower's model or trainable set changed since the last wrap (e.g. after
``dg.grower.load_state_dict``), so read it at the same point on every rank.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .. import Config, Decision, Grower, GrowthError
from ..integration_api import OptimizerFactory, SchedulerFactory
from .common import refuse_shadow_trials


def _require_process_group() -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise GrowthError("torch.distributed is not initialised; call "
                          "torch.distributed.init_process_group('gloo' or 'nccl') first "
                          "(torchrun sets the environment it needs)")


def _device_of(module: nn.Module) -> torch.device:
    for t in module.state_dict().values():
        return t.device
    return torch.device("cpu")


def reduce_score(value: float, op: str = "mean", src: int = 0,
                 device: torch.device | str = "cpu") -> float:
    """The same number on every rank: the ranks' mean (``op="mean"``) or rank ``src``'s value."""
    if op not in ("mean", "src"):
        raise GrowthError(f"score reduction must be 'mean' or 'src'; got {op!r}")
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    if op == "mean":
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    else:
        dist.broadcast(t, src=src)
    return float(t.item())


@torch.no_grad()
def broadcast_module_state(module: nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of rank ``src`` to the other ranks, in place."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for tensor in module.state_dict(keep_vars=True).values():
        if isinstance(tensor, torch.Tensor):
            dist.broadcast(tensor.data, src=src)


class DDPGrower:
    """A :class:`perforate.Grower` whose model trains under DistributedDataParallel.

    Args:
        model: the plain (un-wrapped, not yet DDP) model on this rank's device; it is
            perforated here when needed.
        config, optimizer_factory, scheduler_factory, step_scheduler: as for ``Grower``.
        out_dir: where rank ``src`` writes outputs; ignored on the other ranks.
        score_reduction: "mean" (each rank evaluated its own shard) or "src" (use rank
            ``src``'s score).
        src: the rank whose weights and files are authoritative.
        **ddp_kwargs: passed to ``DistributedDataParallel`` at every (re-)wrap, e.g.
            ``device_ids=[local_rank]``.

    ``dg.model`` is the current DDP wrapper (use it for training), ``dg.module`` the plain
    model (evaluate, save or export it), ``dg.optimizer`` the current optimizer,
    ``dg.grower`` the underlying controller.
    """

    def __init__(self, model: nn.Module, config: Config | None = None,
                 optimizer_factory: OptimizerFactory | None = None,
                 scheduler_factory: SchedulerFactory | None = None,
                 out_dir: str | Path | None = None, step_scheduler: bool = True, *,
                 score_reduction: str = "mean", src: int = 0, **ddp_kwargs: Any) -> None:
        _require_process_group()
        if isinstance(model, nn.parallel.DistributedDataParallel):
            raise GrowthError("pass the plain model to DDPGrower, not a DistributedDataParallel "
                              "wrapper: it has to re-wrap the model after every growth step")
        if score_reduction not in ("mean", "src"):
            raise GrowthError(f"score_reduction must be 'mean' or 'src'; got {score_reduction!r}")
        if config is not None:
            refuse_shadow_trials(config, "DDPGrower")  # the shadow would not train in lockstep
        self.rank = dist.get_rank()
        self.src = src
        self.score_reduction = score_reduction
        self.ddp_kwargs = ddp_kwargs
        self.grower = Grower(model, config, optimizer_factory, scheduler_factory,
                             out_dir=out_dir if self.rank == src else None,
                             step_scheduler=step_scheduler)
        self._ddp: nn.parallel.DistributedDataParallel | None = None
        self._wrapped: tuple = ()
        self._wrap()

    @classmethod
    def resume(cls, out_dir: str | Path, base_model: nn.Module, optimizer_factory: OptimizerFactory,
               scheduler_factory: SchedulerFactory | None = None, step_scheduler: bool = True, *,
               score_reduction: str = "mean", src: int = 0, **ddp_kwargs: Any) -> "DDPGrower":
        """Continue the run saved in ``out_dir`` on every rank (each reads it: a shared folder,
        or a copy on each machine); rank ``src`` writes on. Arguments as for :class:`DDPGrower`
        and ``Grower.resume``."""
        from ..integration_api import load_grower_state

        state_dict = load_grower_state(Path(out_dir) / "state")
        config = Config.from_dict(state_dict["config"])
        dg = cls(base_model, config, optimizer_factory, scheduler_factory, out_dir, step_scheduler,
                 score_reduction=score_reduction, src=src, **ddp_kwargs)
        dg.load_state_dict(state_dict)
        return dg

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """``Grower.load_state_dict`` on every rank, then rank ``src``'s weights everywhere and a
        new DDP wrapper holding what trains in the saved phase (dendrites included)."""
        self.grower.load_state_dict(state_dict)
        broadcast_module_state(self.module, self.src)
        self._wrap()

    @property
    def model(self) -> nn.parallel.DistributedDataParallel:
        """The current DDP wrapper; re-wrapped first when the grower's model or the parameters
        that train changed since the last wrap (the old wrapper would not average the new
        parameters' gradients)."""
        if self._signature() != self._wrapped:
            self._wrap()
        assert self._ddp is not None
        return self._ddp

    def _signature(self) -> tuple:
        return (id(self.module), tuple(id(p) for p in self.module.parameters() if p.requires_grad))

    # ------------------------------------------------------------------ views
    @property
    def module(self) -> nn.Module:
        return self.grower.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.grower.optimizer

    @property
    def scheduler(self):
        return self.grower.scheduler

    @property
    def config(self) -> Config:
        return self.grower.config

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.grower.history

    @property
    def is_writer(self) -> bool:
        """True on the rank that writes files."""
        return self.rank == self.src

    def _wrap(self) -> None:
        # Drop the old wrapper first: its reducer holds autograd hooks on the shared parameters.
        self._ddp = None
        if not any(p.requires_grad for p in self.module.parameters()):
            raise GrowthError("no trainable parameters to wrap in DistributedDataParallel")
        self._ddp = nn.parallel.DistributedDataParallel(self.module, **self.ddp_kwargs)
        self._wrapped = self._signature()

    # ------------------------------------------------------------------ control
    def step(self, val_score: float, **extra_scores: float) -> Decision:
        """Agree on the score, sync the weights, then take ``Grower.step``'s decision on every rank."""
        device = _device_of(self.module)
        score = reduce_score(val_score, self.score_reduction, self.src, device)
        extras = {k: reduce_score(v, self.score_reduction, self.src, device)
                  for k, v in sorted(extra_scores.items())}
        broadcast_module_state(self.module, self.src)
        decision = self.grower.step(score, **extras)
        if decision.restructured:
            self._wrap()
        return decision

    def add_dendrites(self) -> Decision:
        """Force one growth step now on every rank (call it on all ranks at the same point)."""
        broadcast_module_state(self.module, self.src)
        decision = self.grower.add_dendrites()
        self._wrap()
        return decision

    def finish(self) -> nn.Module:
        """Restore the best model (identical on every rank) and write outputs on rank ``src``."""
        was_done = self.grower.done
        model = self.grower.finish()
        if not was_done:
            self._wrap()
        return model

    def summary(self) -> dict[str, Any]:
        return self.grower.summary()

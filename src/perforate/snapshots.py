"""Where the grower keeps its rollback snapshots (``Config.snapshot_device``).

During a growth trial the grower holds up to three copies of the model's weights: the best
model, the model from before the growth, and the grown model's best. ``"model"`` keeps them
on the model's device; ``"cpu"`` in host memory (a GPU model's memory is not doubled);
``"disk"`` in a temporary file each, read back only to restore or save (host memory holds one
tensor at a time while writing). ``"auto"`` (the default): ``"cpu"`` for a model on an
accelerator, ``"disk"`` for a CPU model whose state is at least :data:`AUTO_DISK_BYTES`,
``"model"`` otherwise.

A disk snapshot's file is raw tensor bytes after a JSON header (no pickle), written and read
with this process only, and removed when the snapshot is dropped.
"""
from __future__ import annotations

import json
import os
import tempfile
import weakref
from collections.abc import Mapping
from typing import Any, Iterator

import torch
from torch import nn

from . import checkpoint as ckpt
from .errors import CheckpointError

AUTO_DISK_BYTES = 64 * 2**20
"""From this size of a CPU model's state, ``"auto"`` snapshots go to disk."""


def where(model: nn.Module, place: str) -> str:
    """The place ``"auto"`` resolves to for ``model`` (other places as given)."""
    if place != "auto":
        return place
    state = model.state_dict()
    devices = {t.device.type for t in state.values()}
    if devices - {"cpu", "meta"}:
        return "cpu"
    return "disk" if sum(t.numel() * t.element_size() for t in state.values()) >= AUTO_DISK_BYTES else "model"


def take(model: nn.Module, place: str = "auto") -> dict[str, Any]:
    """A snapshot of ``model`` (as :func:`perforate.checkpoint.snapshot`) kept at ``place``."""
    place = where(model, place)
    if place == "model":
        return ckpt.snapshot(model)
    state = model.state_dict()
    if place == "cpu":
        return {"structure": ckpt.structure(model),
                "state": {k: v.detach().to("cpu", copy=True) for k, v in state.items()}}
    return {"structure": ckpt.structure(model), "state": DiskState(state)}


def restore(model: nn.Module, snap: dict[str, Any]) -> nn.Module:
    """Return ``model`` to ``snap`` (as :func:`perforate.checkpoint.restore`); a disk snapshot
    is read one tensor at a time into the model's own tensors."""
    state = snap["state"]
    if not isinstance(state, DiskState):
        return ckpt.restore(model, snap)
    model = ckpt.apply_structure(model, snap["structure"])
    live = model.state_dict()
    if live.keys() != state.keys():
        missing, unexpected = sorted(set(state) - set(live)), sorted(set(live) - set(state))
        raise CheckpointError(f"the snapshot does not fit this model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    with torch.no_grad():
        for key, tensor in live.items():
            tensor.copy_(state[key])
    return model


def in_memory(snap: dict[str, Any] | None) -> dict[str, Any] | None:
    """``snap`` with its tensors in memory (a disk snapshot is read back; others as they are)."""
    if snap is None or not isinstance(snap.get("state"), DiskState):
        return snap
    return {**snap, "state": dict(snap["state"].items())}


def nbytes(snap: dict[str, Any] | None) -> tuple[int, str]:
    """``(bytes, where)`` of a snapshot's tensors: ``where`` is "disk", or the device type."""
    if snap is None:
        return 0, ""
    state = snap["state"]
    if isinstance(state, DiskState):
        return state.nbytes, "disk"
    devices = {t.device.type for t in state.values()}
    return sum(t.numel() * t.element_size() for t in state.values()), ",".join(sorted(devices))


class DiskState(Mapping):
    """A state dict's tensors in a temporary file, read back on access (to CPU)."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        fd, path = tempfile.mkstemp(prefix="perforate-snapshot-", suffix=".bin")
        self.path = path
        self._finalizer = weakref.finalize(self, _remove, path)
        entries: dict[str, dict[str, Any]] = {}
        offset = 0
        for key, t in state.items():
            n = t.numel() * t.element_size()
            entries[key] = {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                            "offset": offset, "device": str(t.device)}
            offset += n
        header = json.dumps(entries).encode()
        self._entries, self._start, self.nbytes = entries, 8 + len(header), offset
        with os.fdopen(fd, "wb") as f:
            f.write(len(header).to_bytes(8, "little"))
            f.write(header)
            for t in state.values():  # one tensor at a time in host memory
                f.write(_bytes(t))

    def __getitem__(self, key: str) -> torch.Tensor:
        entry = self._entries[key]
        out = torch.empty(entry["shape"], dtype=getattr(torch, entry["dtype"]))
        if out.numel():
            with open(self.path, "rb") as f:
                f.seek(self._start + entry["offset"])
                f.readinto(out.view(-1).view(torch.uint8).numpy())
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _bytes(t: torch.Tensor) -> memoryview:
    t = t.detach().to("cpu").contiguous()
    if not t.numel():
        return memoryview(b"")
    return memoryview(t.view(-1).view(torch.uint8).numpy())


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


class Snapshots:
    """The grower's model copies: ``best`` (the model kept), ``trial`` (the best epoch of a
    grown model on trial) and ``before`` (the model when that growth began), each None when
    absent. ``version`` counts changes of ``best`` (a writer rewrites best files only when it
    moved)."""

    def __init__(self) -> None:
        self.best: dict[str, Any] | None = None
        self.trial: dict[str, Any] | None = None
        self.before: dict[str, Any] | None = None
        self.version = 0

    def set_best(self, snap: dict[str, Any] | None) -> None:
        """``snap`` becomes the best model (``version`` counts the change)."""
        self.best = snap
        self.version += 1

    def accept_trial(self) -> None:
        """The grown model on trial paid: its best epoch becomes the best model."""
        self.set_best(self.trial)
        self.trial = self.before = None

    def state_dict(self) -> dict[str, Any]:
        """``best``, ``best_version``, ``trial`` and ``before`` with their tensors in memory."""
        return {"best": in_memory(self.best), "best_version": self.version,
                "trial": in_memory(self.trial), "before": in_memory(self.before)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take back what :meth:`state_dict` returned (``trial`` and ``before`` may be absent)."""
        self.best, self.version = state["best"], state["best_version"]
        self.trial, self.before = state.get("trial"), state.get("before")

"""What the bench's and the frontier's protocols share, and how both are built.

:class:`ExperimentProtocol` holds the fields every experiment has (the data and model, the
training budget and optimizer, the arms and seeds, the stopping rule, the Config overrides) and
does the rest once: a protocol is frozen and keyword-only, checks itself when built
(``validate``), is written to ``results.json`` under ``"protocol"`` in the key order of
``FILE_ORDER`` (the order files have always had), is read back with :meth:`from_dict` (unknown
keys ignored) and compares with another through :meth:`key` (the fields that change numbers).
The bench's :class:`~perforate.experiments.bench.arms.Protocol` and
:class:`~perforate.experiments.frontier.protocol.FrontierProtocol` add their own fields.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True, kw_only=True)
class ExperimentProtocol:
    """The fields of every experiment; a subclass adds its own, ``FILE_ORDER``, ``KEY_OMITS``
    and ``validate``."""

    FILE_ORDER: ClassVar[tuple[str, ...]] = ()
    """Every field, in the order ``to_dict`` writes them."""
    KEY_OMITS: ClassVar[tuple[str, ...]] = ()
    """Fields that do not change the numbers (two runs differing only there pool together)."""

    dataset: str = "mnist1d"
    model: str = "mlp"
    arms: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    max_epochs: int = 150
    patience: int = 20
    """Plateau patience (smoothed validation score) of plain and dendritic training."""
    stopping: str = "budget"
    """One of :data:`~perforate.experiments.harness.settings.STOPPING`."""
    lr: float = 1e-2
    batch_size: int = 100
    weight_decay: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    """Overrides of :class:`pf.Config` for the dendritic arms (patience comes from ``patience``)."""
    run_outputs: bool = False
    """Let each dendritic run's Grower write history.csv, summary.json and growth.png."""

    def __post_init__(self) -> None:
        _check_order(type(self))
        self.validate()

    def validate(self) -> None:
        """Raise ExperimentError naming the first bad setting."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {name: d[name] for name in self.FILE_ORDER}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """The protocol saved as ``data`` (keys it does not know are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def key(self) -> dict[str, Any]:
        """The settings two runs must share for their results to be pooled."""
        d = self.to_dict()
        for name in self.KEY_OMITS:
            d.pop(name)
        return d


def _check_order(cls: type) -> None:
    """A protocol class's ``FILE_ORDER`` names each of its fields once (a programming error
    otherwise: a field would be missing from results.json)."""
    names = [f.name for f in dataclasses.fields(cls)]
    if sorted(cls.FILE_ORDER) != sorted(names):
        raise TypeError(f"{cls.__name__}.FILE_ORDER must list its fields once each: "
                        f"{sorted(set(names) ^ set(cls.FILE_ORDER))}")

"""PyTorch Tabular: dendritic growth inside ``TabularModel.fit`` (``pip install 'perforate[tabular]'``).

Add one argument to an existing script::

    from perforate.integrations.tabular import DendriteCallback
    tabular_model.fit(train=train, validation=valid,
                      callbacks=[DendriteCallback(pf.Config(patience=3))])

PyTorch Tabular trains its models (``CategoryEmbeddingModel``, ``GANDALF``, ``FTTransformer``,
...) as LightningModules with the standalone ``pytorch_lightning`` package; this callback is
:class:`perforate.integrations.lightning.DendriteCallback` made a ``pytorch_lightning``
callback too, so everything that class does holds here: the model's Linear layers (backbone
and head; the categorical embeddings are not Linear and stay as they are) are wrapped in
``setup``, growth follows the monitored validation metric (PyTorch Tabular logs
``valid_loss`` and ``valid_<metric>``), the optimizer and scheduler PyTorch Tabular configures
are rebuilt after each restructure, and the best model is restored at the end. PyTorch
Tabular's ``EarlyStopping`` counter restarts at each restructure: give it a patience larger
than ``Config.patience``. Its ``load_best`` reloads its own best checkpoint into the same,
grown, model (the dendrite counts are read from the checkpoint's shapes).

Save and load the grown network with ``pf.save(tabular_model.model, path)`` and
``pf.load(path, fresh)``, where ``fresh`` is a model PyTorch Tabular built from the same
configs (``TabularModel.prepare_model``).

PyTorch Tabular needs pandas < 3 (Ray Tune needs pandas 3): the ``tabular`` extra is
therefore not part of ``all``; install it in its own environment.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .. import Config
from ..integration_api import require_extra

require_extra("pytorch_tabular", "tabular")
pl = require_extra("pytorch_lightning", "tabular")

from .lightning import DendriteCallback as _LightningCallback  # noqa: E402


class DendriteCallback(_LightningCallback, pl.Callback):
    """Grows dendrites on the model ``TabularModel.fit`` trains; pass it in ``callbacks=[...]``.

    Args:
        config: the :class:`perforate.Config`.
        monitor: the logged validation metric that drives growth (``valid_loss``, or e.g.
            ``valid_accuracy`` with ``mode="max"``).
        mode: "min" or "max" for ``monitor``.
        out_dir, blocks, schedule, log_prefix, budget: as for the Lightning callback (``budget``:
            the trainer's ``max_epochs`` is the grower's budget when ``config`` has none).
    """

    def __init__(self, config: Config | None = None, monitor: str = "valid_loss", mode: str = "min",
                 out_dir: str | Path | None = None, blocks: Sequence[Any] = (),
                 schedule: str = "continue", log_prefix: str = "perforate/",
                 budget: bool = True) -> None:
        super().__init__(config, monitor=monitor, mode=mode, out_dir=out_dir, blocks=blocks,
                         schedule=schedule, log_prefix=log_prefix, budget=budget)

    def _after_restructure(self, trainer) -> None:
        super()._after_restructure(trainer)
        for cb in trainer.callbacks:  # PyTorch Tabular's own, from pytorch_lightning
            if isinstance(cb, pl.callbacks.EarlyStopping):
                cb.wait_count = 0


__all__ = ["DendriteCallback"]

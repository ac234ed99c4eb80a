"""Model surgery: choose the layers to wrap and replace them with DendriticLayers in place."""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Callable, Iterable, Sequence

from torch import nn

from . import kinds
from .config import Config
from .errors import WrapError
from .kinds import openers
from .layers import DendriticLayer
from .modules import replace_module

BlockSpec = str | type


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def _is_block(name: str, module: nn.Module, blocks: Sequence[BlockSpec]) -> bool:
    for spec in blocks:
        if isinstance(spec, str) and name and fnmatchcase(name, spec):
            return True
        if isinstance(spec, type) and isinstance(module, spec):
            return True
    return False


def _axis_override(name: str, config: Config) -> int | None:
    for pattern, axis in config.neuron_axis.items():
        if fnmatchcase(name, pattern):
            return axis
    return None


def dendritic_layers(model: nn.Module) -> dict[str, DendriticLayer]:
    """Every DendriticLayer in ``model``, keyed by module name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, DendriticLayer)}


def make_layer(module: nn.Module, config: Config, neuron_axis: int | None = None,
               name: str = "", kind: str | None = None) -> DendriticLayer:
    """Wrap one module with the settings ``config`` gives."""
    return DendriticLayer(
        module,
        activation=config.dendrite_activation,
        neuron_axis=neuron_axis,
        perforated=config.mode == "pb",
        init_scale=config.init_scale,
        kind=kind,
        name=name,
        inputs=config.inputs_for(name),
        input_choice=config.dendrite_input_choice,
    )


def output_heads(model: nn.Module) -> dict[str, nn.Module]:
    """The layers ``model`` and its sub-modules declare as their output head
    (``get_output_embeddings()``, as Hugging Face models do, also inside a wrapper such as a
    LightningModule), by module name."""
    heads: list[nn.Module] = []
    for module in model.modules():
        get = getattr(module, "get_output_embeddings", None)
        if not callable(get):
            continue
        try:
            head = get()
        except (NotImplementedError, AttributeError):
            continue
        if isinstance(head, nn.Module) and not any(head is h for h in heads):
            heads.append(head)
    return {name: m for name, m in model.named_modules() if any(m is h for h in heads)}


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def perforate(model: nn.Module, config: Config | None = None, *,
              blocks: Sequence[BlockSpec] = ()) -> nn.Module:
    """Wrap every selected layer of ``model`` in place (see :mod:`perforate.kinds`).

    Linear, Conv1d/2d/3d, RNN/LSTM/GRU, PyG ``Linear``, Hugging Face ``Conv1D`` (GPT-2) and
    the projections of ``nn.MultiheadAttention`` are found on their own (subclasses too);
    other modules are wrapped whole when declared in ``blocks``.

    Args:
        model: any ``nn.Module``; its outputs are unchanged by wrapping.
        config: selection (``include``/``exclude`` globs, ``neuron_axis`` overrides) and
            dendrite settings. Defaults to ``Config()``.
        blocks: module-name globs or module classes to wrap as one unit (e.g. a conv followed
            by its batch-norm); each dendrite then gets its own copy of the whole block.

    Returns the model (or, when the model itself is a single wrappable layer, its wrapper).
    Modules without trainable parameters are left alone, and so is the model's output head
    (:func:`output_heads`, e.g. ``lm_head``) unless ``config.output_head`` is True.
    """
    config = config or Config()
    _check_wrappable(model, blocks)

    def selected(name: str) -> bool:
        return _matches(name, config.include) and not _matches(name, config.exclude)

    heads = {} if config.output_head else output_heads(model)
    model = openers.open_selected(model, selected)
    targets = _targets(model, config, blocks, selected, heads)
    wrapped: dict[int, DendriticLayer] = {}
    for name, module, is_block in targets:
        kind = kinds.block_kind(module).name if is_block and kinds.kind_of(module) is None else None
        if name == "":
            return make_layer(module, config, _axis_override(name, config), name, kind)
        if id(module) not in wrapped:
            wrapped[id(module)] = make_layer(module, config, _axis_override(name, config), name, kind)
            replace_module(model, module, wrapped[id(module)])
    openers.guard(model)
    return model


def _check_wrappable(model: nn.Module, blocks: Sequence[BlockSpec]) -> None:
    """Raises :class:`WrapError` unless ``model`` is an ``nn.Module`` without dendrites and
    ``blocks`` holds globs and classes only."""
    if not isinstance(model, nn.Module):
        raise WrapError(f"perforate expects a torch.nn.Module; got {type(model).__name__}")
    if dendritic_layers(model):
        raise WrapError("this model is already perforated; call pf.perforate once per model "
                        "(use pf.load to restore a saved dendritic model)")
    for spec in blocks:
        if not isinstance(spec, (str, type)):
            raise WrapError(f"blocks entries must be module-name globs or module classes; got {spec!r}")


def _targets(model: nn.Module, config: Config, blocks: Sequence[BlockSpec],
             selected: Callable[[str], bool],
             heads: dict[str, nn.Module]) -> list[tuple[str, nn.Module, bool]]:
    """The modules of ``model`` to wrap, as ``(name, module, is_block)`` in module order: the
    selected trainable layers of a known kind and the declared blocks, not the output
    ``heads``, and none inside another target (stacked kinds aside); raises
    :class:`WrapError` when there is none."""
    head_ids = {id(m) for m in heads.values()}
    targets: list[tuple[str, nn.Module, bool]] = []
    skip_prefixes: list[str] = []
    for name, module in model.named_modules(remove_duplicate=False):
        if any(name.startswith(prefix) for prefix in skip_prefixes):
            continue
        is_block = _is_block(name, module, blocks)
        if not (is_block or kinds.kind_of(module) is not None):
            continue
        if not selected(name) or not _trainable(module) or id(module) in head_ids:
            continue
        targets.append((name, module, is_block))
        if is_block or not kinds.kind_of(module).stacked:  # its inner layers belong to it
            skip_prefixes.append(name + "." if name else "")
    if not targets:
        left_out = f" (its output head {', '.join(map(repr, heads))} is left out unless " \
            "Config(output_head=True))" if heads else ""
        raise WrapError(
            "no layer was selected for dendrites: the model has no trainable Linear/ConvNd/"
            f"RNN/attention projection matching include={config.include} and not "
            f"exclude={config.exclude}{left_out}; check those patterns against "
            "[name for name, _ in model.named_modules()], or declare blocks=[...]")
    return targets

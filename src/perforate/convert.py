"""Model surgery: choose the layers to wrap and replace them with DendriticLayers in place."""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable, Sequence

from torch import nn

from .config import Config
from .errors import WrapError
from .layers import DendriticLayer

WRAPPABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

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


def replace_module(model: nn.Module, module: nn.Module, replacement: nn.Module) -> None:
    """Put ``replacement`` wherever ``module`` is registered inside ``model`` (tied modules
    are registered under several names)."""
    names = [n for n, m in model.named_modules(remove_duplicate=False) if m is module and n]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, replacement)


def make_layer(module: nn.Module, config: Config, neuron_axis: int | None = None) -> DendriticLayer:
    """Wrap one module with the settings ``config`` gives."""
    return DendriticLayer(
        module,
        activation=config.dendrite_activation,
        neuron_axis=neuron_axis,
        perforated=config.mode == "pb",
        init_scale=config.init_scale,
    )


def perforate(model: nn.Module, config: Config | None = None, *,
              blocks: Sequence[BlockSpec] = ()) -> nn.Module:
    """Wrap every selected Linear/Conv1d/2d/3d (and declared block) of ``model`` in place.

    Args:
        model: any ``nn.Module``; its outputs are unchanged by wrapping.
        config: selection (``include``/``exclude`` globs, ``neuron_axis`` overrides) and
            dendrite settings. Defaults to ``Config()``.
        blocks: module-name globs or module classes to wrap as one unit (e.g. a conv followed
            by its batch-norm); each dendrite then gets its own copy of the whole block.

    Returns the model (or, when the model itself is a single wrappable layer, its wrapper).
    Modules without trainable parameters are left alone.
    """
    config = config or Config()
    if not isinstance(model, nn.Module):
        raise WrapError(f"perforate expects a torch.nn.Module; got {type(model).__name__}")
    if dendritic_layers(model):
        raise WrapError("this model is already perforated; call pf.perforate once per model "
                        "(use pf.load to restore a saved dendritic model)")
    for spec in blocks:
        if not isinstance(spec, (str, type)):
            raise WrapError(f"blocks entries must be module-name globs or module classes; got {spec!r}")

    wrapped: dict[int, DendriticLayer] = {}
    targets: list[tuple[str, nn.Module]] = []
    skip_prefixes: list[str] = []
    for name, module in model.named_modules(remove_duplicate=False):
        if any(name.startswith(prefix) for prefix in skip_prefixes):
            continue
        is_block = _is_block(name, module, blocks)
        if not (is_block or isinstance(module, WRAPPABLE)):
            continue
        if not _matches(name, config.include) or _matches(name, config.exclude):
            continue
        if not any(p.requires_grad for p in module.parameters()):
            continue
        targets.append((name, module))
        if is_block:
            skip_prefixes.append(name + "." if name else "")
    if not targets:
        raise WrapError(
            "no layer was selected for dendrites: the model has no trainable Linear/Conv1d/2d/3d "
            f"matching include={config.include} and not exclude={config.exclude}; "
            "check those patterns against [name for name, _ in model.named_modules()]"
        )
    for name, module in targets:
        if name == "":
            return make_layer(module, config, _axis_override(name, config))
        if id(module) not in wrapped:
            wrapped[id(module)] = make_layer(module, config, _axis_override(name, config))
            replace_module(model, module, wrapped[id(module)])
    return model

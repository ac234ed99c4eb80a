"""Which modules get dendrites, chosen the reference's way, then wrapped by ``pf.perforate``.

The model is walked from the root, child by child. A module on a *track* list (by exact type,
as perforatedai matches it, by class name, or by dotted id such as ``.layer1.0.conv1``) is left
alone with its children; a module on a *perforate* list (``*_to_perforate``, or
``*_to_convert`` before 3.2; by type, subclasses included, by class name or by id) is wrapped
whole, children included; any other module is walked into. The track list is checked first, as
in perforatedai: a module on both lists is tracked, and a note says so. Modules on
``modules_to_replace`` are first swapped for ``replacement_modules[i](module)``.
"""
from __future__ import annotations

import logging
import re

from torch import nn

from ... import Config, WrapError, perforate
from ...integration_api import kind_of, replace_module
from .errors import CompatConfigError, CompatUsageError
from .modules_perforatedai import adopt, check_processors
from .settings import PAIConfig

GENERATION_LISTS = {"3.2": "perforate", "3.0": "convert", "A": "convert"}


def _lists(pc: PAIConfig, suffix: str) -> tuple[list, list, list]:
    return (pc.value(f"modules_to_{suffix}"), pc.value(f"module_names_to_{suffix}"),
            pc.value(f"module_ids_to_{suffix}"))


def _matches(module: nn.Module, module_id: str, lists: tuple[list, list, list],
             exact: bool = False) -> str | None:
    """Which list of ``(types, names, ids)`` holds ``module`` ("ids", "names", "types"), or None.
    Types match exactly with ``exact`` (perforatedai's track lists), else subclasses too."""
    types, names, ids = lists
    if module_id.lstrip(".") in {str(i).lstrip(".") for i in ids}:
        return "ids"
    if type(module).__name__ in names:
        return "names"
    if any((type(module) is t) if exact else isinstance(module, t) for t in types if isinstance(t, type)):
        return "types"
    return None


_KIND_PREFIX = {"ids": "module_ids", "names": "module_names", "types": "modules"}


def perforate_lists(pc: PAIConfig, generation: str) -> tuple[list, list, list]:
    """The lists this generation's entry point reads, plus the other generation's lists where the
    script changed them (a 3.2 script calling ``set_modules_to_convert`` means it)."""
    own = GENERATION_LISTS[generation]
    other = "convert" if own == "perforate" else "perforate"
    merged = [list(x) for x in _lists(pc, own)]
    for i, kind in enumerate(("modules", "module_names", "module_ids")):
        name = f"{kind}_to_{other}"
        if pc.is_set(name):
            pc.note(f"generation:{name}", f"GPA.pc.set_{name} belongs to the other API generation "
                                          f"than the entry point used; perforate honours it as "
                                          f"{kind}_to_{own}")
            merged[i] += [x for x in pc.value(name) if x not in merged[i]]
    return merged[0], merged[1], merged[2]


def choose(model: nn.Module, pc: PAIConfig, generation: str) -> tuple[list[str], list[str]]:
    """``(names to wrap, names tracked)`` as module names (no leading dot)."""
    wrap_lists = perforate_lists(pc, generation)
    track_lists = (pc.value("modules_to_track"), pc.value("module_names_to_track"),
                   pc.value("module_ids_to_track"))
    own = GENERATION_LISTS[generation]
    wrap, tracked, shadowed = [], [], []
    stack = [("", model)]
    while stack:
        module_id, module = stack.pop()
        track = _matches(module, module_id, track_lists, exact=True) if module_id else None
        if track:
            tracked.append(module_id[1:])
            also = _matches(module, module_id, wrap_lists)
            if also:
                shadowed.append(f"{module_id} ({type(module).__name__}: {_KIND_PREFIX[track]}_to_track "
                                f"over {_KIND_PREFIX[also]}_to_{own})")
        elif _matches(module, module_id, wrap_lists):
            wrap.append(module_id[1:])
        else:
            stack.extend(reversed([(f"{module_id}.{n}", c) for n, c in module.named_children()]))
    if shadowed:
        shown = ", ".join(shadowed[:4]) + (f" and {len(shadowed) - 4} more" if len(shadowed) > 4 else "")
        pc.note("shadowed", f"perforate: {shown}: on a track list and a {own} list; the track list "
                            "wins, as in perforatedai, so these get no dendrites")
    return wrap, tracked


def replace_listed(model: nn.Module, pc: PAIConfig) -> nn.Module:
    """Swap every instance of ``modules_to_replace[i]`` for ``replacement_modules[i](module)``."""
    old, new = pc.value("modules_to_replace"), pc.value("replacement_modules")
    if len(old) != len(new):
        raise CompatConfigError(f"modules_to_replace has {len(old)} entries but replacement_modules "
                                f"has {len(new)}; append them in pairs")
    for cls, replacement in zip(old, new):
        if isinstance(model, cls):
            model = replacement(model)
            continue
        for module in [m for m in model.modules() if isinstance(m, cls)]:
            replace_module(model, module, replacement(module))
    return model


def neuron_axis(pc: PAIConfig) -> int | None:
    """The neuron axis that ``output_dimensions`` gives (from the end), or None when not set."""
    if not pc.is_set("output_dimensions"):
        return None
    dims = list(pc.value("output_dimensions"))
    if dims.count(0) != 1:
        raise CompatConfigError(f"output_dimensions must mark exactly one neuron axis with 0, "
                                f"e.g. [-1, -1, 0] for [batch, tokens, features]; got {dims}")
    return dims.index(0) - len(dims)


def _glob(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def convert(model: nn.Module, pc: PAIConfig, generation: str, config: Config) -> tuple[nn.Module, Config]:
    """Wrap the chosen modules; returns the model and the config that wrapped it.

    Layers perforate wraps on its own (Linear, ConvNd, recurrent, ...) keep their natural neuron
    axis; a set ``output_dimensions`` steers the wrapped blocks (``PAISequential``, classes chosen
    by name).
    """
    model = replace_listed(model, pc)
    wrap, tracked = choose(model, pc, generation)
    chosen = [n for n in wrap if any(p.requires_grad for p in model.get_submodule(n).parameters())]
    if not chosen:
        own = GENERATION_LISTS[generation]
        shadowed = [n for n in tracked if _matches(model.get_submodule(n), "." + n,
                                                      perforate_lists(pc, generation))]
        if shadowed:
            raise CompatUsageError(
                f"no module was chosen for dendrites: {', '.join(shadowed[:4])} "
                f"{'is' if len(shadowed) == 1 else 'are'} on the {own} lists but also on a track "
                "list, and the track list wins (as in perforatedai; modules_to_track matches the "
                "exact class); remove them from the track list, or track a more specific class, id "
                "(GPA.pc.append_module_ids_to_track(['.layer1.0'])) or name")
        raise CompatUsageError(
            "no module was chosen for dendrites: the model has no trainable module on the "
            f"{own} lists; add some with GPA.pc.append_modules_to_{own}([MyLayer]) or "
            f"GPA.pc.append_module_names_to_{own}(['MyBlock']) before converting")
    check_processors(model, chosen, pc)
    # not found on its own (a multi-layer RNN is opened by perforate into wrapped single layers)
    blocks = [n for n in chosen if kind_of(model.get_submodule(n)) is None
              and not isinstance(model.get_submodule(n), nn.RNNBase)]
    axis = neuron_axis(pc)
    opened = [f"{_glob(n)}.layers.*" for n in chosen if isinstance(model.get_submodule(n), nn.RNNBase)]
    config = config.replace(include=[_glob(n) for n in chosen] + opened,
                            neuron_axis={_glob(n): axis for n in blocks} if axis is not None else {})
    try:
        model = perforate(model, config, blocks=[_glob(n) for n in blocks])
    except WrapError as exc:
        raise WrapError(f"{exc} (from perforatedai settings: GPA.pc.set_output_dimensions gives a "
                        "wrapped block's neuron axis)") from exc
    _note_unwrapped(model, pc, chosen, tracked)
    return adopt(model, pc), config


def _note_unwrapped(model: nn.Module, pc: PAIConfig, wrapped: list[str], tracked: list[str]) -> None:
    """Say which parameters get no dendrites: modules left out whole (a warning, as perforatedai
    stops on them), and parameters a module holds itself beside wrapped layers (information)."""
    if pc.value("unwrapped_modules_confirmed") or pc.value("checked_skipped_modules"):
        return
    covered = [n for n in wrapped + tracked if n]

    def inside(name: str) -> bool:
        return any(name == c or name.startswith(c + ".") for c in covered)

    left, own = [], []
    for name, m in model.named_modules():
        params = [p for p, _ in m.named_parameters(recurse=False)]
        if not params or (name and inside(name)):
            continue
        if any(inside(f"{name}.{sub}" if name else sub) for sub, _ in m.named_modules() if sub):
            own += [f"{name}.{p}" if name else p for p in params]  # beside its wrapped layers
        elif name:
            left.append(name)
    if left:
        shown = ", ".join(left[:8]) + (f" and {len(left) - 8} more" if len(left) > 8 else "")
        pc.note("unwrapped", f"perforate: no dendrites on {shown} (they train as usual; "
                             "GPA.pc.set_unwrapped_modules_confirmed(True) hides this line)")
    if own:
        shown = ", ".join(own[:8]) + (f" and {len(own) - 8} more" if len(own) > 8 else "")
        one = len(own) == 1
        pc.note("own-parameters", f"perforate: {shown} {'is a parameter' if one else 'are parameters'} "
                "of a module itself, not of a layer; dendrites go on layers, so "
                f"{'it trains' if one else 'they train'} as usual (nothing to do)", level=logging.INFO)

"""Which modules get dendrites, chosen the reference's way, then wrapped by ``pf.perforate``.

The model is walked from the root, child by child. A module on a *track* list (by type, by
class name, or by dotted id such as ``.layer1.0.conv1``) is left alone with its children; a
module on a *perforate* list (``*_to_perforate``, or ``*_to_convert`` before 3.2) is wrapped
whole, children included; any other module is walked into. Modules on ``modules_to_replace``
are first swapped for ``replacement_modules[i](module)``.
"""
from __future__ import annotations

import re

from torch import nn

from ...config import Config
from ...convert import perforate, replace_module
from ...errors import WrapError
from ...kinds import kind_of
from .errors import CompatConfigError, CompatUsageError
from .settings import PAIConfig

GENERATION_LISTS = {"3.2": "perforate", "3.0": "convert", "A": "convert"}


def _lists(pc: PAIConfig, suffix: str) -> tuple[list, list, list]:
    return (pc.value(f"modules_to_{suffix}"), pc.value(f"module_names_to_{suffix}"),
            pc.value(f"module_ids_to_{suffix}"))


def _matches(module: nn.Module, module_id: str, lists: tuple[list, list, list]) -> bool:
    types, names, ids = lists
    return (module_id.lstrip(".") in {str(i).lstrip(".") for i in ids}
            or type(module).__name__ in names
            or any(isinstance(module, t) for t in types if isinstance(t, type)))


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
    wrap, tracked = [], []
    stack = [("", model)]
    while stack:
        module_id, module = stack.pop()
        if module_id and _matches(module, module_id, track_lists):
            tracked.append(module_id[1:])
        elif _matches(module, module_id, wrap_lists):
            wrap.append(module_id[1:])
        else:
            stack.extend(reversed([(f"{module_id}.{n}", c) for n, c in module.named_children()]))
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
        raise CompatUsageError(
            "no module was chosen for dendrites: the model has no trainable module on the "
            "perforate lists; add some with GPA.pc.append_modules_to_perforate([MyLayer]) or "
            "GPA.pc.append_module_names_to_perforate(['MyBlock']) before converting")
    blocks = [n for n in chosen if kind_of(model.get_submodule(n)) is None]  # not found on its own
    axis = neuron_axis(pc)
    config = config.replace(include=[_glob(n) for n in chosen],
                            neuron_axis={_glob(n): axis for n in blocks} if axis is not None else {})
    try:
        model = perforate(model, config, blocks=[_glob(n) for n in blocks])
    except WrapError as exc:
        raise WrapError(f"{exc} (from perforatedai settings: GPA.pc.set_output_dimensions gives a "
                        "wrapped block's neuron axis)") from exc
    _note_unwrapped(model, pc, chosen, tracked)
    return model, config


def _note_unwrapped(model: nn.Module, pc: PAIConfig, wrapped: list[str], tracked: list[str]) -> None:
    if pc.value("unwrapped_modules_confirmed") or pc.value("checked_skipped_modules"):
        return
    covered = [n for n in wrapped + tracked if n]
    left = [name for name, m in model.named_modules()
            if name and any(True for _ in m.parameters(recurse=False))
            and not any(name == c or name.startswith(c + ".") for c in covered)]
    if left:
        shown = ", ".join(left[:8]) + (f" and {len(left) - 8} more" if len(left) > 8 else "")
        pc.note("unwrapped", f"perforate: no dendrites on {shown} (they train as usual; "
                             "GPA.pc.set_unwrapped_modules_confirmed(True) hides this line)")

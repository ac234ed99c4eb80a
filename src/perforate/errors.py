"""Typed errors. Every message says what to change."""

MAX_MESSAGE = 1000
"""Longer messages keep their start and end (a message quoting a huge value stays readable)."""


class PerforateError(Exception):
    """Base class of every error raised by perforate; messages are cut to ``MAX_MESSAGE``."""

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str) and len(args[0]) > MAX_MESSAGE:
            text, half = args[0], MAX_MESSAGE // 2 - 20
            args = (f"{text[:half]} ...[{len(text) - 2 * half} characters cut]... {text[-half:]}",
                    *args[1:])
        super().__init__(*args)


class ConfigError(PerforateError, ValueError):
    """A configuration field has a bad value or an unknown name."""


class WrapError(PerforateError, TypeError):
    """A model or module cannot be wrapped as asked."""


class CheckpointError(PerforateError, ValueError):
    """A checkpoint cannot be written, read or matched to the given model."""


class GrowthError(PerforateError, RuntimeError):
    """The growth controller was used in a way it cannot honour."""


class RunLockedError(GrowthError):
    """Another live process writes the run's ``out_dir`` (see :mod:`perforate.runlock`)."""


class MissingExtraError(PerforateError, ImportError):
    """An optional dependency is missing; the message names the pip command."""


class ExperimentError(PerforateError, ValueError):
    """An experiment was asked for an unknown dataset, model or arm, or cannot write its output."""


def require_extra(module: str, extra: str):
    """Import ``module`` or raise MissingExtraError naming ``pip install perforate[extra]``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            f"'{module}' is not installed; run: pip install 'perforate[{extra}]'"
        ) from exc


class BypassError(PerforateError, AttributeError):
    """Code read a wrapped layer's tensors directly, which would bypass its dendrites.

    Also an AttributeError, so ``hasattr``/``getattr(..., default)`` probes behave as they do on
    any module without that attribute.
    """


def bypass_error(name: str, path: str, what: str, direct: str) -> BypassError:
    """The error for code that read the wrapped module's tensor (or sub-module) ``name`` through
    a dendritic layer: ``path`` is the layer's name in its model, ``what`` describes it and
    ``direct`` is the expression that reads the tensor itself."""
    where = f"'{path}'" if path else "a wrapped layer"
    return BypassError(
        f"code read .{name} of {where} ({what}) directly; computing with it would leave the "
        f"dendrites out. Call the layer as a module, read {direct} if that is really meant, or "
        f"keep dendrites off it with pf.Config(exclude=['{path or '<module name>'}'])")

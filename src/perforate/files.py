"""Files the library reads and writes: atomic writes and settings files (TOML, YAML, JSON).

Every writer goes through :func:`atomic_path`, so a reader (or a crash) never sees half a file,
and parallel writers (sweep trials) never share a temporary name.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import stat
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import ConfigError

SETTINGS_SUFFIXES = (".toml", ".yaml", ".yml", ".json")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path``.

    The temporary name keeps ``path``'s suffix (matplotlib and safetensors read it) and is unique
    to this process and call. On an error the temporary file is removed and ``path`` is untouched.
    The file gets the mode any new file gets (0644 under the usual umask), also from writers
    that create private files (safetensors writes 0600).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    # (remove_stale_temps reads this name back: keep the two in step)
    try:
        with open(tmp, "xb"):  # created as any new file is: its mode honours the umask
            pass
        mode = stat.S_IMODE(os.stat(tmp).st_mode)
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_TEMP_NAME = re.compile(r"\.(?P<stem>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp(?P<suffix>.*)")


def remove_stale_temps(folder: str | Path, patterns: Iterable[str]) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` in ``folder`` that a process killed
    mid-write left beside files whose names match a glob in ``patterns``; return them.

    Only those of a process that is no longer running go: several processes on one machine may
    write one folder (pids of another machine's writers are not seen and their files would go).
    """
    removed = []
    for tmp in Path(folder).glob(".*.tmp*"):
        match = _TEMP_NAME.fullmatch(tmp.name)
        if match is None or _running(int(match["pid"])):
            continue
        name = match["stem"] + match["suffix"]
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    """True when process ``pid`` exists (always on Windows, where probing could end it)."""
    if pid == os.getpid() or os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no pid is that large
        return False
    except OSError:  # e.g. PermissionError: it runs, as another user
        return True
    return True


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically as UTF-8, creating its folder when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> None:
    """Write ``data`` as JSON atomically; numpy/torch scalars become numbers, other objects text.

    ``indent=None`` is several times faster (json's C encoder).
    """
    write_text(path, json.dumps(data, indent=indent, default=_jsonable))


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def read_settings(path: str | Path, what: str = "config file") -> Any:
    """Parse a .toml, .yaml/.yml or .json file; ConfigError names ``what`` and the problem.

    Files are UTF-8 text. An empty YAML file reads as ``{}``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SETTINGS_SUFFIXES:
        raise ConfigError(f"{what} {path} must end in .toml, .yaml, .yml or .json")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                          f"offset {exc.start}); save it as UTF-8") from exc
    try:
        if suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover
                import tomli as tomllib
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
        import yaml

        data = yaml.safe_load(text)
        return {} if data is None else data
    except Exception as exc:
        raise ConfigError(f"cannot parse {what} {path}: {exc}") from exc

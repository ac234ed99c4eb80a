"""One live writer per run folder: a lock file naming its owner (pid, host).

:class:`RunLock` is taken when a :class:`perforate.writer.RunWriter` opens ``out_dir`` and given
back when the run's end is written (or the writer is garbage-collected). The rule:

- no lock file, or one whose owner process is gone (same host, pid no longer running): the
  folder is taken (a stale lock left by a killed run is replaced, and logged);
- a lock of this very process (a second grower on the folder, e.g. ``Grower.resume`` after a
  caught error): taken over, the newer grower writes;
- a lock of a live process, or of another host (whose processes cannot be probed): refused
  with :class:`RunLockedError` naming the folder and the owner. Remove the lock file by hand
  when that owner is known to be gone.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from .errors import GrowthError, RunLockedError
from .files import _running

log = logging.getLogger("perforate")

LOCK_NAME = ".perforate.lock"


class RunLock:
    """The lock of one run folder, held by this object until :meth:`release`."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.token = uuid.uuid4().hex
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token,
                      "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self._acquire()

    def _acquire(self) -> None:
        for _ in range(3):  # another process may take or drop the lock between the steps
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                other = _read(self.path)
                if other is None:  # vanished, or being written this very moment
                    time.sleep(0.05)
                    if _read(self.path) is None and self.path.exists():
                        self.path.unlink(missing_ok=True)  # unreadable: a writer died mid-write
                    continue
                if not self._may_take(other):
                    raise RunLockedError(
                        f"{self.path.parent} is being written by another run (pid {other.get('pid')} "
                        f"on host {other.get('host')}, since {other.get('since')}); give this run "
                        f"another out_dir, or stop that one (if it is gone, delete {self.path})")
                self.path.unlink(missing_ok=True)
                continue
            except OSError as exc:
                raise GrowthError(f"cannot create the lock file {self.path}: {exc}; pass a writable "
                                  "folder or out_dir=None") from exc
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.owner))
            return
        raise RunLockedError(f"could not take the lock {self.path}: other processes keep taking "
                             "it; give this run its own out_dir")

    def _may_take(self, other: dict[str, Any]) -> bool:
        pid, host = other.get("pid"), other.get("host")
        if host != self.owner["host"] or not isinstance(pid, int):
            return False
        if pid == os.getpid():
            return True
        if not _running(pid):
            log.info("%s: the run that held it (pid %d) is gone; taking the folder over", self.path, pid)
            return True
        return False

    def release(self) -> None:
        """Remove the lock file if it is still this object's."""
        other = _read(self.path)
        if other is not None and other.get("token") == self.token:
            self.path.unlink(missing_ok=True)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None

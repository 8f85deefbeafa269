"""One writer per folder: a lock file naming its holder.

A records folder or a checkpoint folder written by two runs at once can be corrupted, or end up
with both runs' checkpoints mixed, while both report success. :class:`FolderLock` makes the
second run refuse instead::

    with FolderLock(folder, "train.py"):
        ...  # only this process writes into folder

The lock is the file ``folder/.lock`` holding ``{"pid", "host", "program", "since"}``, created
with ``O_CREAT | O_EXCL`` (atomic on local and NFSv3+ file systems). A lock whose holder is a
process that no longer exists on this host is stale: it is taken over with a warning. A lock held
by a live process, or by another host (whose processes cannot be checked from here), refuses with
one line naming the holder and the file to remove if that holder is known to be gone. The file is
removed when the lock is released, including on an exception or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import warnings
from typing import Optional

from utils.errors import RefusedError

LOCK_NAME = ".lock"


class FolderLocked(RefusedError):
    """Another live run holds the folder's lock; nothing was written."""


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def read_lock(folder: str) -> Optional[dict]:
    """The holder recorded in ``folder``'s lock file, or None when there is none (an unreadable
    lock file reads as a holder of unknown pid)."""
    path = os.path.join(folder, LOCK_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            holder = json.load(handle)
        return holder if isinstance(holder, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


class FolderLock:
    """The lock of ``folder`` for ``program`` (a context manager; also :meth:`acquire` /
    :meth:`release`). ``folder`` is created if missing.

    Raises:
        FolderLocked: another live process (or another host) holds it.
    """

    def __init__(self, folder: str, program: str):
        self.folder = folder
        self.program = program
        self.path = os.path.join(folder, LOCK_NAME)
        self._held = False

    def acquire(self) -> "FolderLock":
        os.makedirs(self.folder, exist_ok=True)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "program": self.program, "since": time.time()})
        for _ in range(2):  # a second try after removing a stale lock
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(handle, "w", encoding="utf-8") as lock_file:
                lock_file.write(record)
            self._held = True
            return self
        raise FolderLocked(f"{self.folder} is locked by another run ({self.path}); wait for it "
                           "to finish")

    def _take_over_if_stale(self) -> None:
        holder = read_lock(self.folder)
        if holder is None:
            return  # released meanwhile: try again
        pid, host = holder.get("pid"), holder.get("host")
        here = host == socket.gethostname()
        if here and isinstance(pid, int) and pid == os.getpid():
            raise FolderLocked(f"{self.folder} is already locked by this process")
        if here and isinstance(pid, int) and not _alive(pid):
            warnings.warn(f"{self.path} was left by {holder.get('program', 'a run')} (pid {pid}), "
                          "which is no longer running; taking the lock over", stacklevel=3)
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
            return
        who = (f"{holder.get('program', 'a run')} (pid {pid} on {host})" if holder
               else "an unreadable lock file")
        remove = "" if here else f"; if that run is gone, remove {self.path}"
        raise FolderLocked(f"{self.folder} is in use by {who}: one run at a time writes it; "
                           f"wait for it to finish{remove}")

    def release(self) -> None:
        if self._held:
            self._held = False
            with contextlib.suppress(OSError):
                os.remove(self.path)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

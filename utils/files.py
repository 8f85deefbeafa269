"""File-system helpers shared by every layer: the one atomic write and the one folder walker.

Nothing here imports TensorFlow or any other module of the project, so
the data loader, the run-folder code, migration and the metrics all use the same functions:
:class:`AtomicFile` / :func:`atomic_write` (the project's only rename over a file),
:func:`replace_folder` (its folder counterpart, with the only rename of a folder),
:func:`audio_files` (the only walk of a data folder) and :func:`file_digest` (the integrity
record of a written file: its size and CRC-32).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
import warnings
import zlib
from typing import Callable, List, Optional, Sequence, Tuple

# Audio files the project reads, matched in any case.
AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg")


def is_audio_file(path: str) -> bool:
    """True for a non-hidden file name ending in one of :data:`AUDIO_EXTENSIONS` (any case)."""
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(AUDIO_EXTENSIONS)


class AtomicFile:
    """A file that appears at ``path`` whole or not at all.

    Write the complete content to :attr:`tmp`, a file beside ``path`` (same folder, hence the
    same file system, so the rename is atomic), then :meth:`commit` renames it over ``path``;
    :meth:`discard` removes it instead (after an error or an interruption, ``path`` is then
    untouched). The temporary name keeps ``path``'s extension (some writers, e.g. ``np.savez``,
    choose the format by it), starts with a dot, so folder walkers ignore it, and holds
    ``.part`` and the writer's pid (see :func:`is_partial`). Parent folders are created. As a
    context manager it commits on success and discards on any exception, Ctrl-C included.
    """

    def __init__(self, path: str):
        self.path = path
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        stem, ext = os.path.splitext(os.path.basename(path))
        self.tmp = os.path.join(parent, f".{stem}.{os.getpid()}{PARTIAL_MARK}{ext}")

    def commit(self) -> None:
        """Rename the complete :attr:`tmp` over :attr:`path`."""
        try:
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Remove :attr:`tmp` (if it was written at all); :attr:`path` stays as it was."""
        with contextlib.suppress(OSError):
            os.remove(self.tmp)

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, error_type, *_) -> None:
        if error_type is None:
            self.commit()
        else:
            self.discard()


# In the temporary name of every AtomicFile: ``.<stem>.<pid>.part<ext>``.
PARTIAL_MARK = ".part"


def is_partial(name: str) -> bool:
    """Whether the file name ``name`` is an :class:`AtomicFile`'s temporary file (one left behind
    by a writer that was killed is removed by the next writer of its folder)."""
    return name.startswith(".") and PARTIAL_MARK in name


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Create or replace ``path`` whole or not at all.

    ``write(tmp)`` writes the complete new content to ``tmp`` (an :class:`AtomicFile`'s temporary
    file beside ``path``), which is then renamed over ``path``. An interruption or error at any
    point leaves the earlier ``path`` untouched and removes ``tmp``. Parent folders are created.

    Raises:
        WriteFailed: the file system refused the write (a full disk, a read-only or
            unwritable folder): one line naming ``path``, the OS's reason and, for a full disk,
            the space left on it; ``path`` is as it was and ``tmp`` is gone.
    """
    try:
        with AtomicFile(path) as target:
            write(target.tmp)
    except WriteFailed:
        raise
    except OSError as error:
        raise WriteFailed.of(path, error) from None


class WriteFailed(OSError):
    """A write the file system refused; its message is one line naming the file (an ``OSError``,
    so the command-line tools print it as an error and exit with status 1)."""

    @classmethod
    def of(cls, path: str, error: OSError) -> "WriteFailed":
        reason = error.strerror or str(error)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            free = _free_bytes(os.path.dirname(os.path.abspath(path)))
            left = "" if free is None else f", {free / 2 ** 20:.1f} MiB left on it"
            reason += f"{left}; free some space and run again (nothing was replaced)"
        elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            reason += "; choose a writable location (nothing was replaced)"
        return cls(error.errno, f"cannot write {path}: {reason}")

    def __str__(self) -> str:  # without OSError's "[Errno N]" prefix
        return str(self.strerror)


def _free_bytes(folder: str) -> Optional[int]:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


# Beside a folder ``NAME`` that :func:`replace_folder` replaces: the new one while it is built
# (``.NAME-new-XXXX``) and the old one between the two renames (``.NAME-old``).
_NEW_FOLDER = ".{}-new-"
_OLD_FOLDER = ".{}-old"


def _move(source: str, target: str) -> None:
    """The one rename of a folder in the project (``target`` must not exist)."""
    os.rename(source, target)


def settle_folder(path: str) -> None:
    """Finish or undo a :func:`replace_folder` of ``path`` that a crash interrupted.

    A crash between its two renames leaves no ``path`` and the old folder at ``.NAME-old``
    beside it: that one is renamed back. Any other leftover (a ``.NAME-old`` beside a ``path``,
    a scratch ``.NAME-new-*`` folder) is deleted. Does nothing when nothing was left.
    """
    parent, name = os.path.split(os.path.abspath(path))
    old = os.path.join(parent, _OLD_FOLDER.format(name))
    if os.path.isdir(old) and not os.path.lexists(path):
        _move(old, path)
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(parent):
        prefix = _NEW_FOLDER.format(name)
        for entry in os.listdir(parent):
            if entry.startswith(prefix):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def replace_folder(path: str, build: Callable[[str], None]) -> str:
    """Create or replace the folder ``path`` whole: a reader sees the old folder or the new one,
    never a mix of the two nor a partly built one.

    ``build(scratch)`` fills ``scratch``, an empty folder beside ``path`` (``.NAME-new-XXXX``:
    the same file system, so the renames are atomic; a dot-name, so folder walkers ignore it).
    Then the old ``path`` (if any) is renamed to ``.NAME-old``, ``scratch`` is renamed to
    ``path`` and ``.NAME-old`` is deleted. An error or an interruption in ``build`` deletes
    ``scratch`` and leaves ``path`` untouched; one in the second rename renames the old folder
    back. Only a crash between the two renames (the process killed there) leaves ``path`` absent
    and the old folder at ``.NAME-old``: :func:`settle_folder`, which this function calls first
    and a reader may call before reading, renames it back. Parent folders are created. Returns
    ``path``.

    Raises:
        OSError: from ``build`` or from the file system (``path`` then holds the old folder).
    """
    parent, name = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    settle_folder(path)
    scratch = tempfile.mkdtemp(prefix=_NEW_FOLDER.format(name), dir=parent)
    # mkdtemp's folder is private (0700); the finished one gets the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(scratch, 0o777 & ~umask)
    old = os.path.join(parent, _OLD_FOLDER.format(name))
    had_old = os.path.lexists(path)
    try:
        build(scratch)
        steps = ((path, old), (scratch, path)) if had_old else ((scratch, path),)
        for step, (source, target) in enumerate(steps):
            try:
                _move(source, target)
            except BaseException:
                if step:  # the old folder is aside: put it back before reporting
                    _move(old, path)
                raise
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path


def file_digest(path: str) -> Tuple[int, str]:
    """``(size in bytes, CRC-32 as 8 hex digits)`` of the regular file ``path``, read in 1 MiB
    blocks (CRC-32 runs at several GB/s: checking a file costs about one read of it).

    Raises:
        OSError: ``path`` is missing, unreadable or not a regular file (a FIFO, socket or device
            is never opened: opening one could block for ever).
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(f"not a regular file: {path}")
    crc, size = 0, 0
    with open(path, "rb") as handle:
        while True:
            block = handle.read(1 << 20)
            if not block:
                break
            crc = zlib.crc32(block, crc)
            size += len(block)
    return size, f"{crc:08x}"


def atomic_write_text(path: str, text: str) -> None:
    """:func:`atomic_write` of a UTF-8 text file."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(path, write)


def audio_files(folder: str, on_skip: Optional[Callable[[str, str], None]] = None,
                exclude: Sequence[str] = ()) -> List[str]:
    """Every audio file under ``folder`` (recursively), as paths joined onto ``folder``.

    Hidden files and hidden folders (dot-names, e.g. an atomic write's temporary file) are skipped;
    folders are walked in sorted order and files sorted within each, so the order is the same on
    every machine. A subfolder that cannot be read is reported to ``on_skip(path, reason)``
    (default: a warning) instead of being dropped without a word; folders in ``exclude`` (e.g. a
    run's own output folders inside a data folder; compared as real paths) are not walked. The
    reason given for an unreadable folder is ``cannot read folder: <OS error>``; when it is
    ``folder`` itself, nothing under it is listed. Files are only listed, never opened (nor
    stat-ed): a FIFO named like a song is refused by the loader
    (:func:`utils.audio.signal.load_audio`) without blocking. Returns ``[]`` for a folder that holds
    no audio; the caller decides whether that is an error.
    """
    excluded = {os.path.realpath(path) for path in exclude}

    def unreadable(error: OSError) -> None:
        where = os.fsdecode(error.filename) if error.filename else folder
        reason = f"cannot read folder: {error.strerror or error}"
        if on_skip is None:
            warnings.warn(f"{where}: {reason}; the songs in it are skipped (fix its "
                          "permissions to use them)", stacklevel=3)
        else:
            on_skip(where, reason)

    found = []
    for root, dirs, names in os.walk(folder, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and os.path.realpath(os.path.join(root, d)) not in excluded)
        found.extend(os.path.join(root, name) for name in sorted(names) if is_audio_file(name))
    return found

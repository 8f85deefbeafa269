"""File-system helpers shared by every layer: the one atomic write and the one folder walker.

Nothing here imports TensorFlow or any other module of the project, so
the data loader, the run-folder code, migration and the metrics all use the same two functions.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Callable, List, Optional, Sequence

# Audio files the project reads, matched in any case.
AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg")


def is_audio_file(path: str) -> bool:
    """True for a non-hidden file name ending in one of :data:`AUDIO_EXTENSIONS` (any case)."""
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(AUDIO_EXTENSIONS)


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Create or replace ``path`` whole or not at all.

    ``write(tmp)`` writes the complete new content to ``tmp``, a file beside ``path`` (same folder,
    hence the same file system, so the rename is atomic); ``tmp`` is then renamed over ``path``.
    An interruption or error at any point leaves the earlier ``path`` untouched and removes
    ``tmp``. The temporary name keeps ``path``'s extension (some writers, e.g. ``np.savez``,
    choose the format by it) and starts with a dot, so folder walkers ignore it. Parent folders
    are created.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    stem, ext = os.path.splitext(os.path.basename(path))
    tmp = os.path.join(parent, f".{stem}.{os.getpid()}.part{ext}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """:func:`atomic_write` of a UTF-8 text file."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(path, write)


def audio_files(folder: str, on_skip: Optional[Callable[[str, str], None]] = None,
                exclude: Sequence[str] = ()) -> List[str]:
    """Every audio file under ``folder`` (recursively), as paths joined onto ``folder``.

    Hidden files and hidden folders (dot-names, e.g. an atomic write's temporary file) are
    skipped; folders are walked in sorted order and files sorted within each, so the order is the
    same on every machine. A subfolder that cannot be read is reported to ``on_skip(path,
    reason)`` (default: a warning) instead of being dropped without a word; folders in
    ``exclude`` (e.g. a run's own output folders inside a data folder) are not walked. Files
    are only listed, never opened: a FIFO named like a song is refused by the loader
    (:func:`utils.audio.load_audio`) without blocking. Returns ``[]`` for a folder that holds no
    audio; the caller decides whether that is an error.
    """
    excluded = {os.path.realpath(path) for path in exclude}

    def unreadable(error: OSError) -> None:
        where = error.filename or folder
        reason = f"folder not readable ({error.strerror or error}), skipped"
        if on_skip is None:
            warnings.warn(f"{where}: {reason}", stacklevel=3)
        else:
            on_skip(where, reason)

    found = []
    for root, dirs, names in os.walk(folder, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and os.path.realpath(os.path.join(root, d)) not in excluded)
        found.extend(os.path.join(root, name) for name in sorted(names) if is_audio_file(name))
    return found

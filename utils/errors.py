"""The one base class of SinGlow-TF2's user-facing errors, and the one way to print them.

Every error the project raises for a user to read (a bad flag, a refused folder, an unusable
file, a checkpoint of another model, a diverged run) derives from :class:`SinGlowError` and has a
message that fits on one line once :func:`one_line` has folded it. The command-line tools catch
exactly this class (plus ``OSError`` from the file system) and print ``PROG: error: MESSAGE``;
anything else is a bug and keeps its traceback.

This module imports nothing from the project or from TensorFlow, so every layer can use it.
"""

from __future__ import annotations

# Longest message printed: a failed checkpoint restore can list hundreds of unmatched variables.
ONE_LINE_LIMIT = 400


class SinGlowError(Exception):
    """A failure a user can act on; its message says what is wrong and, where possible, what to
    do. Subclasses name the area (data, audio, checkpoints, migration, training)."""


class RefusedError(SinGlowError):
    """An input refused as it stands, before it changed anything (e.g. a checkpoint of another
    model): the command-line tools exit with status 2 for it wherever it is found."""


class MigrationError(SinGlowError, ValueError):
    """A one-line, user-facing error of inference and migration (bad statistics, input, singer
    or method). Here rather than in :mod:`utils.migration` because the layers below it raise it
    too: a song folder without audio (:mod:`utils.data.song_folders`), a chunking or a singer the
    checkpoint cannot take (:mod:`utils.runs`)."""


def one_line(error: BaseException | str, limit: int = ONE_LINE_LIMIT) -> str:
    """``error``'s message with all whitespace folded to single spaces, cut to ``limit``
    characters; the exception's class name when it has no message."""
    text = error if isinstance(error, str) else str(error)
    text = " ".join(text.split())
    if not text:
        text = "unknown error" if isinstance(error, str) else type(error).__name__
    return text if len(text) <= limit else text[:limit - 4] + " ..."

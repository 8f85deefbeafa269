"""What the four command-line tools share: one runner, one exit-code convention, one-line errors.

Exit status of every SinGlow-TF2 CLI (``train.py``, ``migrate.py``, ``evaluate.py``,
``data_loader.py``):

====  =====================================================================================
0     done
1     failed during the work (no usable data, training diverged, a song that cannot be used)
2     bad command line, or refused before any work (a bad flag or value, a missing input, an
      unwritable output folder, a checkpoint of another model)
130   interrupted by Ctrl-C (SIGINT)
143   stopped by SIGTERM (``train.py`` saves the step reached first)
====  =====================================================================================

Every error is printed as one line, ``PROG: error: MESSAGE``, and every warning as
``PROG: warning: MESSAGE``; only a bug (an exception that is not a
:class:`~utils.errors.SinGlowError`, ``ValueError`` of a refused value or ``OSError``) prints a
traceback. This module imports neither TensorFlow nor the rest of the project, so flag errors come
back before TensorFlow loads.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import warnings
from typing import Any, Callable, Optional, Sequence

from utils.errors import RefusedError, SinGlowError, one_line

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_SIGINT = 130  # the shell's 128 + signal number
EXIT_SIGTERM = 143


class CliError(SinGlowError):
    """A user-facing failure found by a CLI's own checks (a missing input, a bad path)."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``PROG: error: ...``, exit 2), not usage text."""

    def error(self, message: str) -> None:
        self.exit(EXIT_REFUSED, f"{self.prog}: error: {one_line(message)}\n")


def finite_float(text: str) -> float:
    """argparse type: a float that is neither NaN nor infinite (an infinite learning rate or
    strength would write non-finite values before any later check could catch them)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def print_error(prog: str, error: BaseException | str) -> None:
    """``PROG: error: MESSAGE`` on one line to stderr."""
    print(f"{prog}: error: {one_line(error)}", file=sys.stderr)


def print_warning(prog: str, message: BaseException | str) -> None:
    """``PROG: warning: MESSAGE`` on one line to stderr."""
    print(f"{prog}: warning: {one_line(message)}", file=sys.stderr)


# Refused before any work: the project's errors, a Config value refused by its ValueError, and the
# file system. During the work a ValueError is a bug and keeps its traceback.
_REFUSED = (SinGlowError, ValueError, OSError)
_FAILED = (SinGlowError, OSError)


# What the file system says in a TensorFlow error (the event writer's or a reader's), and the
# path the error names before it ("... /logs/events.out...; No space left on device").
_DISK_REASONS = ("No space left on device", "Disk quota exceeded", "Read-only file system",
                 "Permission denied")
_DISK_ERROR = re.compile(r"(\S+); (" + "|".join(_DISK_REASONS) + ")")


def disk_error(error: BaseException) -> Optional[str]:
    """A TensorFlow error that is the file system refusing a write (e.g. a full disk under
    TensorBoard's event writer), as one line naming the file; None for any other error."""
    if not type(error).__module__.startswith("tensorflow"):
        return None
    found = _DISK_ERROR.search(" ".join(str(getattr(error, "message", error)).split()))
    if found is None:
        return None
    path, reason = found.groups()
    return (f"cannot write {path}: {reason}; make room or choose another folder and run again "
            "(what was saved before is intact)")


def run_cli(
    prog: str,
    parser: argparse.ArgumentParser,
    prepare: Callable[[argparse.Namespace], Any],
    work: Callable[[Any], Optional[int]],
    argv: Optional[Sequence[str]] = None,
    on_interrupt: Optional[Callable[[argparse.Namespace], str]] = None,
) -> int:
    """Parse ``argv``, run ``prepare(args)`` then ``work(prepared)``; return the exit status.

    Args:
        prog: the name printed before every error and warning.
        parser: builds ``args``; ``--help`` returns 0 and a bad flag 2 (one line, see
            :class:`OneLineArgumentParser`).
        prepare: every check that needs no work (flags, paths, configuration, a checkpoint's
            configuration); returns what ``work`` needs. A :class:`SinGlowError`, ``ValueError``
            or ``OSError`` here means "refused": status 2.
        work: does the job and returns its status (``None`` is 0; e.g. ``train.py`` returns 130
            or 143 after a graceful stop). A :class:`SinGlowError` or ``OSError`` here means
            "failed": status 1, except a :class:`~utils.errors.RefusedError` (an input refused
            before it changed anything, e.g. a checkpoint of another model found on restoring):
            status 2.
        on_interrupt: text added to the ``PROG: interrupted`` line (e.g. whether the output was
            written), given ``args``.

    Warnings are printed as they are raised, one line each (``PROG: warning: ...``); Ctrl-C
    anywhere returns 130 with one line.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a bad flag already reported on one line
        return stop.code if isinstance(stop.code, int) else EXIT_REFUSED
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        # A library's deprecation notice (numpy's, TensorFlow's) says nothing to the user.
        for category in (DeprecationWarning, PendingDeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.showwarning = lambda message, *_: print_warning(prog, str(message))
        try:
            try:
                prepared = prepare(args)
            except _REFUSED as error:
                print_error(prog, error)
                return EXIT_REFUSED
            try:
                return int(work(prepared) or EXIT_OK)
            except RefusedError as error:  # found only once the work began, changed nothing
                print_error(prog, error)
                return EXIT_REFUSED
            except _FAILED as error:
                print_error(prog, error)
                return EXIT_FAILED
            except Exception as error:  # a bug keeps its traceback; a refused write does not
                message = disk_error(error)
                if message is None:
                    raise
                print_error(prog, message)
                return EXIT_FAILED
        except KeyboardInterrupt:  # e.g. while TensorFlow loads, or a second Ctrl-C
            extra = on_interrupt(args) if on_interrupt is not None else ""
            print(f"{prog}: interrupted{'; ' + extra if extra else ''}", file=sys.stderr)
            return EXIT_SIGINT

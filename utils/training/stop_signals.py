"""Graceful stops: Ctrl-C or SIGTERM asks a long job to stop at its next safe point.

SIGTERM is what schedulers and ``docker stop`` send before killing a job, so a pre-empted training
run keeps the step it reached instead of redoing a checkpoint interval. The first signal is
recorded (the job polls :attr:`StopRequest.signum` between compiled calls); the handlers are then
put back, so a second Ctrl-C aborts at once with ``KeyboardInterrupt``.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable, Optional

# Signals that stop a job gracefully, in the order of precedence when several arrive (the last
# wins: a scheduler's SIGTERM says more than a Ctrl-C).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    """``"interrupted"`` for SIGINT, ``"terminated"`` for anything else (SIGTERM)."""
    return "interrupted" if signum == signal.SIGINT else "terminated"


class StopRequest:
    """A context manager that turns the first Ctrl-C or SIGTERM into a request to stop.

    Inside ``with StopRequest(log) as stop:`` the first signal sets ``stop.signum`` and logs one
    line; the previous handlers come back at once (a second signal acts as it would have) and
    again on leaving the block. Off the main thread, where Python cannot install handlers, it
    does nothing and ``signum`` stays None.
    """

    def __init__(self, log: Callable[[str], None] = print):
        self._log = log
        self.signum: Optional[int] = None
        self._previous = {}

    def clear(self) -> None:
        self.signum = None

    def _request(self, signum, frame) -> None:
        self.signum = signum
        self._restore()
        again = "Ctrl-C" if signum == signal.SIGINT else "the signal"
        self._log(f"{signal_name(signum)}: saving a checkpoint after the running steps "
                  f"({again} again to abort)")

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._request)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

"""What the command-line tools share: one-line errors and finite number flags."""

from __future__ import annotations

import argparse
import math


class CliError(Exception):
    """A user-facing failure, reported as ``PROG: error: MESSAGE`` on one line."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``PROG: error: ...``, exit 2), not usage text."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


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

"""Resources checked before the work: writable output folders and memory that can hold the job.

A run that can only fail should fail before it starts, not after an hour of training or a whole
folder of songs:

- :func:`check_writable_folder`: an output folder is, or can be created as, a writable folder
  (judged by creating nothing: a refused run leaves no empty folders behind).
- :func:`training_step_bytes` / :func:`inference_call_bytes`: an estimate of the memory the
  training step (activations kept for the gradient, per batch) or one encode/decode call (the
  largest few activations alive at once) needs, from the configuration alone.
- :func:`check_fits`: refuses (:class:`TooBig`, exit status 2) a size whose estimate is clearly
  beyond the memory this machine has, naming the estimate and the flags that set it.

The estimates count what the flow keeps per element of a patch and per hidden unit of a coupling
network, level by level; they leave out TensorFlow's own workspace and the optimizer's state (a
few times the parameters), so they are lower bounds of the real peak. Refusing only when a lower
bound exceeds the machine's memory never refuses a job that fits. ``benchmarks/bench_memory.py``
prints the estimate beside the measured peak for a few sizes.

Imports neither TensorFlow nor the model: the checks run before TensorFlow loads.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional, Sequence

from common_definitions import Config
from utils.errors import RefusedError

FLOAT_BYTES = 4
# At least this many tensors of a patch's size each flow step keeps for the gradient (ActNorm's
# and the 1x1 convolution's outputs, the coupling's scale) ...
STEP_PATCH_TENSORS = 3
# ... and of a coupling network's hidden size (the two ReLU outputs the next convolutions read).
STEP_HIDDEN_TENSORS = 2
# Alive at once in an inference call, at least: the patch in and out, and one hidden layer.
CALL_PATCH_TENSORS = 2
CALL_HIDDEN_TENSORS = 1
GIB = 1024 ** 3


class TooBig(RefusedError):
    """A size whose memory need is clearly beyond the machine: refused before any work."""


class NotWritable(RefusedError, OSError):
    """An output folder that cannot be written: refused before any work."""


def check_writable_folder(path: str, flag: str) -> None:
    """Refuse ``path`` (given as ``flag``) unless it is, or can be created as, a writable folder.

    Creates nothing: a missing folder is judged by its nearest existing ancestor (which must be a
    writable folder); an existing one by creating and removing an unnamed file in it, which also
    catches a read-only file system that permission bits do not show.

    Raises:
        NotWritable: one line naming the folder and why.
    """
    target = os.path.abspath(path)
    existing = target
    while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "" if existing == target else f"{existing}, above it, "
        raise NotWritable(f"{flag} {path} is not a writable folder ({where}is not a folder)")
    if existing != target:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise NotWritable(f"{flag} {path} is not a writable folder ({existing} is not "
                              "writable)")
        return
    try:
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as error:
        raise NotWritable(f"{flag} {path} is not a writable folder "
                          f"({error.strerror or error})") from None


def _levels(config: Config, steps: int):
    """Per level of the flow: ``(patch elements, hidden positions)`` of one patch of ``steps``
    time steps. Squeezing keeps the elements; each level's split halves them for the next; the
    coupling networks see the level's spatial positions (a quarter of the previous level's, or a
    half when only time is squeezed)."""
    _, width, channels = config.input_shape
    elements, positions = steps * width * channels, steps * width
    time_only = width == 1
    for _ in range(config.l_glow):
        positions //= 2 if time_only else 4
        yield elements, max(positions, 1)
        elements //= 2


def training_step_bytes(config: Config, batch_size: Optional[int] = None) -> int:
    """Lower bound, in bytes, of the activations one training step keeps for its gradient:
    ``batch_size`` (default ``config.batch_size``) patches of ``config.window_size`` steps
    through ``k_glow`` flow steps per level (float32 whatever ``--mixed_precision``, which keeps
    the variables and log-determinants in float32)."""
    batch = config.batch_size if batch_size is None else batch_size
    per_patch = sum(config.k_glow * (STEP_PATCH_TENSORS * elements
                                     + STEP_HIDDEN_TENSORS * positions * config.hidden_channels)
                    for elements, positions in _levels(config, config.input_shape[0]))
    return int(batch) * per_patch * FLOAT_BYTES


def inference_call_bytes(config: Config, chunk_steps: int, batch_size: int) -> int:
    """Lower bound, in bytes, of one encode/decode call on ``batch_size`` chunks of
    ``chunk_steps`` time steps (nothing is kept for a gradient: the largest level's tensors)."""
    per_chunk = max(CALL_PATCH_TENSORS * elements
                    + CALL_HIDDEN_TENSORS * positions * config.hidden_channels
                    for elements, positions in _levels(config, chunk_steps))
    return int(batch_size) * per_chunk * FLOAT_BYTES


def machine_memory_bytes() -> Optional[int]:
    """This machine's memory in bytes (``MemTotal``; the smaller of it and a cgroup limit), or
    None where it cannot be read."""
    total = None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit_file, encoding="ascii") as handle:
                text = handle.read().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total = int(text)
    return total


def check_fits(need_bytes: int, what: str, flags: Sequence[str],
               available: Optional[int] = None) -> None:
    """Refuse a job whose estimated need (a lower bound) is beyond ``available`` bytes (default:
    :func:`machine_memory_bytes`; nothing is checked where that is unknown).

    Raises:
        TooBig: ``WHAT needs at least N GiB of memory (estimated), more than this machine's M GiB:
            lower FLAGS``.
    """
    available = machine_memory_bytes() if available is None else available
    if available is None or need_bytes <= available:
        return
    raise TooBig(f"{what} needs at least {need_bytes / GIB:.1f} GiB of memory (estimated), "
                 f"more than this machine's {available / GIB:.1f} GiB: lower "
                 f"{', '.join(flags)}")


def check_training_fits(config: Config, available: Optional[int] = None) -> None:
    """:func:`check_fits` for the training step (and the validation pass, which is smaller).

    Raises:
        TooBig: see :func:`check_fits`.
    """
    check_fits(training_step_bytes(config),
               f"a training step of --batch_size {config.batch_size} patches of "
               f"--window_size {config.window_size}", ("--batch_size", "--window_size",
                                                       "--hidden_channels"), available)


def check_inference_fits(config: Config, chunk_steps: int, batch_size: int,
                         available: Optional[int] = None) -> None:
    """:func:`check_fits` for one encode/decode call of the chunked whole-song path.

    Raises:
        TooBig: see :func:`check_fits`.
    """
    check_fits(inference_call_bytes(config, chunk_steps, batch_size),
               f"encoding --batch_size {batch_size} chunks of --chunk_steps {chunk_steps}",
               ("--batch_size", "--chunk_steps"), available)

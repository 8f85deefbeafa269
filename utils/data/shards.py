"""The shards of a records folder: one serialised song per record, read, written and checked.

A shard is a TFRecord file of ``tf.train.Example`` songs (:data:`RECORD_SPEC`). Both the records
folder (:mod:`utils.data.records`, :mod:`utils.data.records_writer`) and the WORLD features cached
beside it (:mod:`utils.data.world_cache`) write shards through :func:`tf_writes`, record each
complete one's integrity (:func:`shard_record`: size, CRC-32, record count), check it again before
reading (:func:`check_file`) and read songs back (:func:`iterate_songs`); :class:`DataError` is the
one-line error of them all. This module imports neither of them, so they do not import each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import stat
from typing import Dict, Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf

from utils.errors import SinGlowError
from utils.files import WriteFailed, file_digest

# One tf.train.Example per song. The samples are raw little-endian float32 bytes: parsing a bytes
# feature is far faster than a FloatList of millions of values.
RECORD_SPEC = {
    "audio": tf.io.FixedLenFeature([], tf.string),
    "num_samples": tf.io.FixedLenFeature([], tf.int64),
    "sampling_rate": tf.io.FixedLenFeature([], tf.int64),
    "path": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.string),
}


class DataError(SinGlowError, ValueError):
    """Unusable data folders or records; the message is one line."""


@dataclasses.dataclass
class Song:
    """One record: mono float32 ``samples`` at ``sampling_rate`` Hz, its source path and label."""

    samples: np.ndarray
    sampling_rate: int
    path: str
    label: str


def parse_record(record: tf.Tensor) -> Dict[str, tf.Tensor]:
    """One serialised song -> ``audio (N,)`` float32, ``num_samples``, ``sampling_rate``,
    ``path``, ``label``."""
    parsed = tf.io.parse_single_example(record, RECORD_SPEC)
    parsed["audio"] = tf.io.decode_raw(parsed["audio"], tf.float32, little_endian=True)
    return parsed


# ---------------------------------------------------------------------------------- integrity
def count_records(path: str) -> int:
    """The records in the TFRecord file ``path``, read through (every record's CRC is checked).

    Raises:
        tensorflow.errors.OpError: a truncated or corrupted record (``DataLossError``).
    """
    count = 0
    for _ in tf.data.TFRecordDataset(path).as_numpy_iterator():
        count += 1
    return count


def tf_reason(error: BaseException) -> str:
    """The telling part of a TensorFlow read error (``corrupted record at 1234``), without the
    op names TensorFlow wraps it in."""
    text = " ".join(str(getattr(error, "message", error)).split())
    found = re.search(r"(corrupted|truncated) record at \d+", text)
    return found.group(0) if found else type(error).__name__


@contextlib.contextmanager
def tf_writes(path: str) -> Iterator[None]:
    """Report a TensorFlow file-write error inside the block (a full disk while a
    ``TFRecordWriter`` writes ``path``) as :class:`~utils.files.WriteFailed`: one line naming
    ``path``, instead of a traceback."""
    try:
        yield
    except tf.errors.OpError as error:
        full = isinstance(error, tf.errors.ResourceExhaustedError)
        reason = " ".join(str(getattr(error, "message", error)).split()).rsplit("; ", 1)[-1]
        raise WriteFailed.of(path, OSError(errno.ENOSPC if full else errno.EIO, reason)) from None


def check_file(path: str, recorded: Optional[dict], records: int) -> Optional[str]:
    """Why the written file ``path`` (a shard of ``records`` records) is damaged, or None when it
    is whole.

    ``recorded`` is its integrity record (``size``, ``crc32``, ``records``; see
    :func:`shard_record`): the file must have that size and CRC-32. Without one (a manifest
    written before they existed) the file is verified by reading every record through
    TensorFlow (each record carries its own CRC) and counting them. A FIFO, socket or device in
    its place is never opened.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"cannot read: {err.strerror or err}"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if recorded is None:
        try:
            found = count_records(path)
        except (tf.errors.OpError, OSError) as err:
            return f"unreadable: {tf_reason(err)}"
        return None if found == records else f"holds {found} records, {records} were written"
    size = recorded.get("size")
    if info.st_size != size:
        if isinstance(size, int) and info.st_size < size:
            return f"truncated: {info.st_size} of the {size} bytes written"
        return f"{info.st_size} bytes, {size} were written"
    try:
        _, crc = file_digest(path)
    except OSError as err:
        return f"cannot read: {err.strerror or err}"
    if crc != recorded.get("crc32"):
        return "checksum mismatch: its bytes changed since it was written"
    if recorded.get("records", records) != records:
        return f"{recorded['records']} records were written, the manifest lists {records} songs"
    return None


def shard_record(path: str, records: int) -> dict:
    """The integrity record of the complete shard ``path`` holding ``records`` records:
    ``{"size": bytes, "crc32": 8 hex digits, "records": count}``."""
    size, crc = file_digest(path)
    return {"size": size, "crc32": crc, "records": records}


def iterate_songs(records_dir: str, names: Sequence[str]) -> Iterator[Song]:
    """Every song in the shards ``names`` of ``records_dir``, in order.

    Raises:
        DataError: a shard turned out damaged while it was read (one line naming the folder).
    """
    if not names:  # building an empty pipeline would still trace its parse function
        return
    paths = [os.path.join(records_dir, name) for name in names]
    try:
        for record in tf.data.TFRecordDataset(paths).map(parse_record).as_numpy_iterator():
            yield Song(record["audio"], int(record["sampling_rate"]),
                       record["path"].decode("utf-8", "surrogateescape"),
                       record["label"].decode("utf-8", "surrogateescape"))
    except tf.errors.OpError as err:
        raise DataError(f"a shard in {records_dir} is damaged ({tf_reason(err)}): rebuild the "
                        f"records with `python data_loader.py AUDIO_DIR --out {records_dir}`"
                        ) from None

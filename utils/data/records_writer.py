"""The writing side of a records folder: audio folders -> TFRecord shards, incrementally.

:func:`write_records` decodes each audio file to mono float32 at ``config.sampling_rate`` and
writes one TFRecord example per song into shards of about ``config.shard_size_seconds`` of audio.
``manifest.json`` (path -> size, mtime, label, status, length, shard or skip reason) makes re-runs
incremental: an unchanged file is never decoded again, a changed one is, a removed one drops out.
Unusable files are skipped with a one-line reason. The normalisation statistics of
``config.feature`` are saved beside the records. The reading side is :mod:`utils.data.records`.

Reliability: one process at a time writes a records folder (:class:`utils.locks.FolderLock`,
``RECORDS/.lock``); each shard is written under a temporary dot-name and renamed once complete,
and the manifest records its size, CRC-32 and record count, so a shard found damaged on a later
run (truncated, garbled, missing, replaced) is rebuilt by decoding its songs again; Ctrl-C
leaves the records as they were before the run. Files in special or unreadable places (FIFOs,
sockets, devices, unreadable files or folders) are skipped and named, never opened blocking,
and a run's own output folders inside a data folder are never read (:func:`outputs_inside`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from common_definitions import Config
from utils.audio.features import MomentSum
from utils.audio.signal import AudioError, TooShortError, check_audio, load_audio
from utils.data.records import (
    MANIFEST,
    MANIFEST_VERSION,
    SHARD_PATTERN,
    describe_songs,
    fingerprint,
    ok_entries,
    read_records_manifest,
    saved_stats,
    shard_damage,
    stats_path,
)
from utils.data.shards import DataError, iterate_songs, shard_record, tf_writes
from utils.data.world_cache import cached_stats, update_cache
from utils.errors import RefusedError, one_line
from utils.files import (AUDIO_EXTENSIONS, AtomicFile, atomic_write_text, audio_files,
                         is_partial)
from utils.locks import FolderLock


@dataclasses.dataclass
class MakeSummary:
    """What the records hold after :func:`write_records`.

    written: songs in the records (new and kept); seconds: their audio, in seconds;
    skipped: files left out, with ``skipped_files`` their ``(path, reason)``;
    decoded: files actually decoded by this run (0 when nothing changed).
    """

    written: int
    skipped: int
    seconds: float
    skipped_files: List[Tuple[str, str]]
    decoded: int

    def line(self) -> str:
        return (f"written: {self.written} files ({self.seconds:.1f} s of audio), "
                f"skipped: {self.skipped} files")


class OutputIsDataFolder(DataError, RefusedError):
    """A run's output folder is one of its data folders: what the run writes would be read as
    songs; refused before anything is written (exit status 2)."""


class FoundFiles(list):
    """The ``(absolute path, label)`` pairs :func:`find_audio_files` found, and in
    :attr:`skipped` the ``(path, reason)`` of what it could not look into (unreadable
    subfolders); :func:`write_records` names those in its summary."""

    def __init__(self, items=(), skipped=()):
        super().__init__(items)
        self.skipped: List[Tuple[str, str]] = list(skipped)


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def outputs_inside(data_dirs: Sequence[str], outputs: Sequence[Tuple[str, str]],
                   refuse_equal: bool = True, warn: bool = True) -> List[str]:
    """The output folders among ``outputs`` (``(flag, path)``, e.g. ``("--output_dir", ...)``)
    that lie inside one of ``data_dirs``: pass them to :func:`find_audio_files` as
    ``exclude``, so that nothing a run wrote is ever read as a song. Warns (``warn``: one line
    naming them) when there are any.

    Raises:
        OutputIsDataFolder: (``refuse_equal``) an output folder *is* a data folder (excluding it
            would leave nothing; a ``--records_dir`` equal to a data folder is allowed, as it
            holds no audio).
    """
    tops = [(_real(top), top) for top in data_dirs]
    inside = []
    for flag, path in outputs:
        if not path:
            continue
        real = _real(path)
        for top_real, top in tops:
            if real == top_real:
                if refuse_equal and flag != "--records_dir":
                    raise OutputIsDataFolder(
                        f"{flag} {path} is the data folder {top} itself: what the run writes "
                        "there would be read as songs; give an output folder outside the data "
                        "folders")
            elif os.path.commonpath([real, top_real]) == top_real:
                inside.append((flag, path, top))
                break
    if inside and warn:
        named = ", ".join(f"{flag} {path}" for flag, path, _ in inside)
        tops_named = ", ".join(sorted({top for _, _, top in inside}))
        warnings.warn(f"{named} lie(s) inside the data folder {tops_named}: files under "
                      "them are never read as songs (keep outputs outside the data folders)",
                      stacklevel=2)
    return [path for _, path, _ in inside]


def find_audio_files(data_dirs: Sequence[str], exclude: Sequence[str] = ()) -> FoundFiles:
    """``(absolute path, label)`` of every audio file under ``data_dirs``, sorted per folder.

    The label is the name of the top folder given. Hidden files and folders are ignored; a file
    reached through two given folders is listed once (under the first). Folders in ``exclude``
    (see :func:`outputs_inside`) are not walked. An unreadable subfolder is skipped and kept
    in the result's ``skipped`` (:class:`FoundFiles`) for the summary.

    Raises:
        DataError: a folder is missing, cannot be read or holds no audio file.
    """
    if not data_dirs:
        raise DataError("no audio folders given")
    found, seen, skipped = [], set(), []
    for top in data_dirs:
        if not os.path.isdir(top):
            raise DataError(f"audio folder not found: {top}")
        label = os.path.basename(os.path.normpath(os.path.abspath(top)))
        folder_skips: List[Tuple[str, str]] = []
        paths = audio_files(top, on_skip=lambda where, why: folder_skips.append((where, why)),
                            exclude=exclude)
        for where, why in folder_skips:
            if _real(where) == _real(top):
                raise DataError(f"audio folder cannot be read: {top} ({why}); fix its "
                                "permissions")
            skipped.append((os.path.abspath(where), why))
        if not paths:
            raise DataError(f"no audio files ({' '.join(AUDIO_EXTENSIONS)}) in {top}")
        for path in map(os.path.abspath, paths):
            if path not in seen:
                seen.add(path)
                found.append((path, label))
    return FoundFiles(found, skipped)


def serialize_song(samples: np.ndarray, sampling_rate: int, path: str, label: str) -> bytes:
    """One song as a serialised ``tf.train.Example`` in the layout of
    :data:`utils.data.shards.RECORD_SPEC`."""

    def _bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _int(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    example = tf.train.Example(features=tf.train.Features(feature={
        "audio": _bytes(np.asarray(samples, "<f4").tobytes()),
        "num_samples": _int(len(samples)),
        "sampling_rate": _int(sampling_rate),
        "path": _bytes(path.encode("utf-8", "surrogateescape")),
        "label": _bytes(label.encode("utf-8", "surrogateescape")),
    }))
    return example.SerializeToString()


class _ShardWriter:
    """Writes songs into numbered shards of about ``limit`` samples each.

    Each shard is written under a temporary dot-name (:class:`~utils.files.AtomicFile`) and
    renamed to ``shard-NNNNN.tfrecord`` only once complete; :attr:`records` then holds its
    integrity record (:func:`utils.data.shards.shard_record`). :meth:`discard` (after an error or
    Ctrl-C) removes the shard being written and the new shards already renamed, none of which
    a manifest lists yet.
    """

    def __init__(self, records_dir: str, first_index: int, limit: int):
        self.records_dir, self.index, self.limit = records_dir, first_index, limit
        self.writer, self.filled, self.count, self.names = None, 0, 0, []
        self.target: Optional[AtomicFile] = None
        self.records: Dict[str, dict] = {}

    def write(self, record: bytes, num_samples: int) -> str:
        if self.writer is None or self.filled >= self.limit:
            self.close()
            self.names.append(SHARD_PATTERN.format(self.index))
            self.index += 1
            self.target = AtomicFile(os.path.join(self.records_dir, self.names[-1]))
            with tf_writes(self.target.path):
                self.writer = tf.io.TFRecordWriter(self.target.tmp)
            self.filled = self.count = 0
        with tf_writes(self.target.path):
            self.writer.write(record)
        self.filled += num_samples
        self.count += 1
        return self.names[-1]

    def close(self) -> None:
        """Complete the shard being written: close, checksum and rename it."""
        if self.writer is not None:
            with tf_writes(self.target.path):
                self.writer.close()
            self.writer = None
            self.records[self.names[-1]] = shard_record(self.target.tmp, self.count)
            self.target.commit()

    def discard(self) -> None:
        """Remove every shard this writer made (complete or not)."""
        if self.writer is not None:
            try:
                self.writer.close()
            except tf.errors.OpError:  # e.g. the full disk that stopped the writing
                pass
            finally:
                self.writer = None
                self.target.discard()
        for name in self.records:
            try:
                os.remove(os.path.join(self.records_dir, name))
            except OSError:
                pass


def _count_by_shard(entries) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for entry in entries:
        if entry.get("status") == "ok":
            counts[entry["shard"]] = counts.get(entry["shard"], 0) + 1
    return counts


def _printable(path: str) -> str:
    """``path`` with bytes that are not UTF-8 shown as escapes, so printing it cannot fail."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _stat(path: str) -> Tuple[int, int]:
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


def _short_reason(num_samples: int, config: Config) -> str:
    rate = config.sampling_rate
    return (f"shorter than one patch ({num_samples / rate:.2f} s < "
            f"{config.patch_samples / rate:.2f} s)")


def _plan(files, old_files: dict, damaged: Dict[str, str], config: Config):
    """Sort ``files`` into manifest entries reused as they are and files to decode.

    ``damaged``: the old shards found damaged (their songs are decoded again).
    Returns ``(entries, keep, decode)``: entries by path for files not to be decoded, the
    subset of them whose songs stay in their shards, and ``(path, label)`` to decode.
    """
    patch = config.patch_samples
    entries: Dict[str, dict] = {}
    keep: Dict[str, dict] = {}
    decode: List[Tuple[str, str]] = []
    for path, label in files:
        try:
            size, mtime = _stat(path)
        except OSError as err:
            entries[path] = {"label": label, "status": "skipped",
                             "reason": f"cannot read: {err.strerror or err}"}
            continue
        entry = old_files.get(path)
        if entry is None or (entry.get("size"), entry.get("mtime_ns"), entry.get("label")) != (
                size, mtime, label):
            decode.append((path, label))
        # Length decisions depend on the patch size, which may have changed since.
        elif entry["status"] == "ok" and entry["num_samples"] < patch:
            entries[path] = dict(entry, status="short", shard=None,
                                 reason=_short_reason(entry["num_samples"], config))
        elif entry["status"] == "short" and entry["num_samples"] >= patch:
            decode.append((path, label))
        elif entry["status"] == "short":
            entries[path] = dict(entry, reason=_short_reason(entry["num_samples"], config))
        elif entry["status"] == "ok" and entry["shard"] in damaged:
            decode.append((path, label))  # its shard is damaged, or was deleted by hand
        else:
            entries[path] = entry
            if entry["status"] == "ok":
                keep[path] = entry
    return entries, keep, decode


def _decode(path: str, label: str, config: Config) -> dict:
    """A manifest entry for ``path``; an ``ok`` one carries the decoded ``samples`` too."""
    entry = {"label": label}
    try:
        entry["size"], entry["mtime_ns"] = _stat(path)
        samples = load_audio(path, config.sampling_rate)
        entry["num_samples"] = len(samples)
        check_audio(samples, config)
    except TooShortError as err:
        entry.update(status="short", reason=str(err))
    except AudioError as err:
        entry.update(status="skipped", reason=str(err))
    except Exception as err:  # a bad file must never stop the run
        entry.update(status="skipped", reason=f"cannot decode: {type(err).__name__}: {err}")
    else:
        entry.update(status="ok", samples=samples)
    return entry


def _program() -> str:
    """The name a lock file gives its holder: the running script's."""
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


def write_records(
    config: Config,
    files: Sequence[Tuple[str, str]],
    records_dir: str,
    log: Callable[[str], None] = print,
    program: Optional[str] = None,
) -> MakeSummary:
    """Bring the records in ``records_dir`` up to date with ``files`` (:func:`find_audio_files`).

    Logs one line per skipped file (``skipped: PATH: REASON``; for a :class:`FoundFiles`, its
    unreadable folders too) and ends with :meth:`MakeSummary.line`. Writes shards,
    ``manifest.json`` and the normalisation statistics of ``config.feature``, holding the
    folder's lock (:class:`~utils.locks.FolderLock` for ``program``, default the running
    script) meanwhile. A shard found damaged (see :func:`utils.data.records.shard_damage`) is
    rebuilt: its songs are decoded again from their audio files, after one warning line naming
    it. A crash leaves the previous records usable: new shards are written first (each renamed
    into place once complete), the manifest replaced atomically, and only then old shards
    removed; an error or Ctrl-C before the manifest removes the new shards again.

    Raises:
        utils.locks.FolderLocked: another live process is writing ``records_dir``.
    """
    os.makedirs(records_dir, exist_ok=True)
    with FolderLock(records_dir, program or _program()):
        return _write_records(config, files, records_dir, log)


def _report_damage(records_dir: str, damaged: Dict[str, str], old_ok: Dict[str, dict],
                   listed: set) -> None:
    """One warning line per damaged shard: what happens to its songs."""
    labels = {path: e["label"] for path, e in old_ok.items()}
    for name, problem in sorted(damaged.items()):
        songs = [path for path, e in old_ok.items() if e["shard"] == name]
        again = [path for path in songs if path in listed]
        gone = [path for path in songs if path not in listed]
        parts = []
        if again:
            parts.append(f"decoding its {describe_songs(again, labels)} again from their audio "
                         "files")
        if gone:
            parts.append(f"its {describe_songs(gone, labels)} are no longer among the audio "
                         "files and drop out")
        warnings.warn(f"{os.path.join(records_dir, name)} is damaged ({problem}): "
                      + "; ".join(parts), stacklevel=4)


def _first_free_shard(records_dir: str, old: dict) -> int:
    """The first shard number that neither the old manifest nor any file in the folder uses."""
    numbers = [int(old.get("next_shard", 0) or 0)]
    names = [e.get("shard") or "" for e in old["files"].values()] + os.listdir(records_dir)
    for name in names:
        if name.startswith("shard-") and name.endswith(".tfrecord"):
            digits = name[len("shard-"):-len(".tfrecord")]
            if digits.isdigit():
                numbers.append(int(digits) + 1)
    return max(numbers)


def _write_records(config: Config, files: Sequence[Tuple[str, str]], records_dir: str,
                   log: Callable[[str], None]) -> MakeSummary:
    """:func:`write_records`, once the lock is held."""
    for name in os.listdir(records_dir):  # left by a writer that was killed (we hold the lock)
        if is_partial(name) and name.startswith((".shard-", ".manifest.")):
            try:
                os.remove(os.path.join(records_dir, name))
            except OSError:
                pass
    old = read_records_manifest(records_dir)
    if old is None or old.get("sampling_rate") != config.sampling_rate:
        old = {"files": {}, "next_shard": 0}
    old_ok = ok_entries(old)
    damaged = shard_damage(records_dir, old, old_ok)
    _report_damage(records_dir, damaged, old_ok, {path for path, _ in files})
    entries, keep, decode = _plan(files, old["files"], damaged, config)

    # A shard holding anything that is no longer valid is rewritten from its valid songs.
    before, after = _count_by_shard(old["files"].values()), _count_by_shard(keep.values())
    stale = {shard for shard, count in before.items() if after.get(shard, 0) != count}
    carry = {path for path, entry in keep.items() if entry["shard"] in stale}

    # Moments of the songs this run handles anyway; the untouched shards are added after. The
    # world feature's come from its cache of analysed songs instead (one analysis per song).
    world = config.feature == "world"
    moments = MomentSum(config)
    add = (lambda samples: None) if world else moments.add
    writer = _ShardWriter(records_dir, _first_free_shard(records_dir, old),
                          int(config.shard_size_seconds * config.sampling_rate))
    try:
        for song in iterate_songs(records_dir, sorted({keep[p]["shard"] for p in carry})):
            if song.path in carry:
                add(song.samples)
                entries[song.path]["shard"] = writer.write(
                    serialize_song(song.samples, song.sampling_rate, song.path, song.label),
                    len(song.samples))
        for path, label in decode:
            entries[path] = entry = _decode(path, label, config)
            if entry["status"] == "ok":
                samples = entry.pop("samples")
                add(samples)
                entry["shard"] = writer.write(
                    serialize_song(samples, config.sampling_rate, path, label), len(samples))
        writer.close()
    except BaseException:  # an error or Ctrl-C: no new shard is left behind, none recorded
        writer.discard()
        raise

    ok = ok_entries({"files": entries})
    referenced = {e["shard"] for e in ok.values()}
    counts = _count_by_shard(ok.values())
    old_records = old.get("shards") if isinstance(old.get("shards"), dict) else {}
    shards = {}
    for name in sorted(referenced):
        record = writer.records.get(name) or old_records.get(name)
        if not isinstance(record, dict):  # a manifest older than the field: verified above
            record = shard_record(os.path.join(records_dir, name), counts[name])
        shards[name] = record
    manifest = {"version": MANIFEST_VERSION, "sampling_rate": config.sampling_rate,
                "next_shard": writer.index, "files": entries, "shards": shards}
    # ASCII escapes keep names that are not valid UTF-8 (surrogates) round-tripping.
    atomic_write_text(os.path.join(records_dir, MANIFEST), json.dumps(manifest, indent=1))
    for name in os.listdir(records_dir):
        if name.startswith("shard-") and name.endswith(".tfrecord") and name not in referenced:
            os.remove(os.path.join(records_dir, name))

    source = fingerprint(manifest)
    if world and ok:
        update_cache(records_dir, config, sorted(referenced), log)
    if ok and saved_stats(records_dir, config, source) is None:
        if world:
            stats = cached_stats(records_dir, config, sorted(referenced), source)
        else:
            for song in iterate_songs(records_dir, sorted(referenced - set(writer.names))):
                moments.add(song.samples)
            stats = moments.stats(source)
        stats.save(stats_path(records_dir, config))
    skipped = sorted([(path, one_line(e["reason"]))
                      for path, e in entries.items() if e["status"] != "ok"]
                     + [(path, one_line(reason))
                        for path, reason in getattr(files, "skipped", ())])
    for path, reason in skipped:
        log(f"skipped: {_printable(path)}: {reason}")
    summary = MakeSummary(
        written=len(ok), skipped=len(skipped),
        seconds=sum(e["num_samples"] for e in ok.values()) / config.sampling_rate,
        skipped_files=skipped, decoded=len(decode),
    )
    log(summary.line())
    return summary

"""The writing side of a records folder: audio folders -> TFRecord shards, incrementally.

:func:`write_records` decodes each audio file to mono float32 at ``config.sampling_rate`` and
writes one TFRecord example per song into shards of about ``config.shard_size_seconds`` of audio.
``manifest.json`` (path -> size, mtime, label, status, length, shard or skip reason) makes re-runs
incremental: an unchanged file is never decoded again, a changed one is, a removed one drops out.
Unusable files are skipped with a one-line reason. The normalisation statistics of
``config.feature`` are saved beside the records. The reading side is :mod:`utils.records`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from common_definitions import Config
from utils.audio import AudioError, TooShortError, check_audio, load_audio
from utils.errors import one_line
from utils.world_records import cached_stats, update_cache
from utils.features import MomentSum
from utils.files import AUDIO_EXTENSIONS, atomic_write_text, audio_files
from utils.records import (
    MANIFEST,
    MANIFEST_VERSION,
    SHARD_PATTERN,
    DataError,
    fingerprint,
    iterate_songs,
    ok_entries,
    read_records_manifest,
    saved_stats,
    stats_path,
)


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


def find_audio_files(data_dirs: Sequence[str]) -> List[Tuple[str, str]]:
    """``(absolute path, label)`` of every audio file under ``data_dirs``, sorted per folder.

    The label is the name of the top folder given. Hidden files and folders are ignored; a file
    reached through two given folders is listed once (under the first).

    Raises:
        DataError: a folder is missing or holds no audio file.
    """
    if not data_dirs:
        raise DataError("no audio folders given")
    found, seen = [], set()
    for top in data_dirs:
        if not os.path.isdir(top):
            raise DataError(f"audio folder not found: {top}")
        label = os.path.basename(os.path.normpath(os.path.abspath(top)))
        paths = audio_files(top)
        if not paths:
            raise DataError(f"no audio files ({' '.join(AUDIO_EXTENSIONS)}) in {top}")
        for path in map(os.path.abspath, paths):
            if path not in seen:
                seen.add(path)
                found.append((path, label))
    return found


def serialize_song(samples: np.ndarray, sampling_rate: int, path: str, label: str) -> bytes:
    """One song as a serialised ``tf.train.Example`` in the layout of
    :data:`utils.records.RECORD_SPEC`."""

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
    """Writes songs into numbered shards of about ``limit`` samples each."""

    def __init__(self, records_dir: str, first_index: int, limit: int):
        self.records_dir, self.index, self.limit = records_dir, first_index, limit
        self.writer, self.filled, self.names = None, 0, []

    def write(self, record: bytes, num_samples: int) -> str:
        if self.writer is None or self.filled >= self.limit:
            self.close()
            self.names.append(SHARD_PATTERN.format(self.index))
            self.index += 1
            self.writer = tf.io.TFRecordWriter(os.path.join(self.records_dir, self.names[-1]))
            self.filled = 0
        self.writer.write(record)
        self.filled += num_samples
        return self.names[-1]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


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


def _plan(files, old_files: dict, records_dir: str, config: Config):
    """Sort ``files`` into manifest entries reused as they are and files to decode.

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
        elif entry["status"] == "ok" and not os.path.exists(
                os.path.join(records_dir, entry["shard"])):
            decode.append((path, label))  # its shard was deleted by hand
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


def write_records(
    config: Config,
    files: Sequence[Tuple[str, str]],
    records_dir: str,
    log: Callable[[str], None] = print,
) -> MakeSummary:
    """Bring the records in ``records_dir`` up to date with ``files`` (:func:`find_audio_files`).

    Logs one line per skipped file (``skipped: PATH: REASON``) and ends with
    :meth:`MakeSummary.line`. Writes shards, ``manifest.json`` and the normalisation statistics of
    ``config.feature``. A crash leaves the previous records usable: new shards are written first,
    the manifest replaced atomically, and only then old shards removed.
    """
    os.makedirs(records_dir, exist_ok=True)
    old = read_records_manifest(records_dir)
    if old is None or old.get("sampling_rate") != config.sampling_rate:
        old = {"files": {}, "next_shard": 0}
    entries, keep, decode = _plan(files, old["files"], records_dir, config)

    # A shard holding anything that is no longer valid is rewritten from its valid songs.
    before, after = _count_by_shard(old["files"].values()), _count_by_shard(keep.values())
    stale = {shard for shard, count in before.items() if after.get(shard, 0) != count}
    carry = {path for path, entry in keep.items() if entry["shard"] in stale}

    # Moments of the songs this run handles anyway; the untouched shards are added after. The
    # world feature's come from its cache of analysed songs instead (one analysis per song).
    world = config.feature == "world"
    moments = MomentSum(config)
    add = (lambda samples: None) if world else moments.add
    writer = _ShardWriter(records_dir, old.get("next_shard", 0),
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
    finally:
        writer.close()

    manifest = {"version": MANIFEST_VERSION, "sampling_rate": config.sampling_rate,
                "next_shard": writer.index, "files": entries}
    # ASCII escapes keep names that are not valid UTF-8 (surrogates) round-tripping.
    atomic_write_text(os.path.join(records_dir, MANIFEST), json.dumps(manifest, indent=1))
    ok = ok_entries(manifest)
    referenced = {e["shard"] for e in ok.values()}
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
    skipped = sorted((path, one_line(e["reason"]))
                     for path, e in entries.items() if e["status"] != "ok")
    for path, reason in skipped:
        log(f"skipped: {_printable(path)}: {reason}")
    summary = MakeSummary(
        written=len(ok), skipped=len(skipped),
        seconds=sum(e["num_samples"] for e in ok.values()) / config.sampling_rate,
        skipped_files=skipped, decoded=len(decode),
    )
    log(summary.line())
    return summary

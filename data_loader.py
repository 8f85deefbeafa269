"""SongDataLoader: audio folders -> TFRecord shards -> feature patches -> batches.

``make`` walks the given folders (recursively; ``.wav .mp3 .flac .ogg`` in any case; dot-names
ignored), decodes each file to mono float32 at ``config.sampling_rate``, and writes one TFRecord
example per song into shards of about ``config.shard_size_seconds`` of audio. A manifest keyed by
path, size and modification time makes re-runs incremental: an unchanged file is never decoded
again, a changed one is, and a removed one drops out. Unusable files are skipped with a one-line
reason. Normalisation statistics of the configured feature are saved beside the records.

``load`` turns the records into a ``tf.data`` pipeline of normalised patches: random windows per
song per epoch (seeded) for training, or aligned windows that tile each song for evaluation.

CLI::

    python data_loader.py AUDIO_DIR [AUDIO_DIR ...] --out RECORDS_DIR [--sampling_rate SR]
        [--feature {spectrogram,waveform}] [--window_size N] [--channel_size N]
        [--n_fft N] [--hop_length N]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from common_definitions import FEATURES, Config
from utils.errors import SinGlowError
from utils.cli import OneLineArgumentParser
from utils.audio import (
    AUDIO_EXTENSIONS,
    AudioError,
    FeatureStats,
    TooShortError,
    check_audio,
    feature_moments,
    is_audio_file,
    load_audio,
    patch_features,
)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
SHARD_PATTERN = "shard-{:05d}.tfrecord"
# Whole songs held in memory while shuffling (a 3-minute song at 16 kHz is 11 MB) and songs whose
# windows are dealt out in turn; together with the patch shuffle buffer they decorrelate a batch.
SONG_SHUFFLE_BUFFER = 16
SONGS_INTERLEAVED = 8

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
class MakeSummary:
    """What the records hold after :meth:`SongDataLoader.make`.

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


@dataclasses.dataclass
class Song:
    """One record: mono float32 ``samples`` at ``sampling_rate`` Hz, its source path and label."""

    samples: np.ndarray
    sampling_rate: int
    path: str
    label: str


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
        count = 0
        for root, dirs, names in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if not is_audio_file(name):
                    continue
                path = os.path.abspath(os.path.join(root, name))
                count += 1
                if path not in seen:
                    seen.add(path)
                    found.append((path, label))
        if not count:
            raise DataError(f"no audio files ({' '.join(AUDIO_EXTENSIONS)}) in {top}")
    return found


def _serialize(samples: np.ndarray, sampling_rate: int, path: str, label: str) -> bytes:
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


def _parse(record: tf.Tensor) -> Dict[str, tf.Tensor]:
    parsed = tf.io.parse_single_example(record, RECORD_SPEC)
    parsed["audio"] = tf.io.decode_raw(parsed["audio"], tf.float32, little_endian=True)
    return parsed


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


class _MomentSum:
    """Running sums of feature moments over songs, turned into :class:`FeatureStats` at the end."""

    def __init__(self, config: Config):
        self.config, self.count, self.total, self.squares = config, 0.0, 0.0, 0.0

    def add(self, samples: np.ndarray) -> None:
        count, total, squares = feature_moments(samples, self.config)
        self.count, self.total, self.squares = (
            self.count + count, self.total + total, self.squares + squares)

    def stats(self, source: str) -> FeatureStats:
        return FeatureStats.from_moments(self.config, self.count, self.total, self.squares, source)


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


def read_records_manifest(records_dir: str) -> Optional[dict]:
    """The records manifest of ``records_dir``, or None when the folder holds no records (any other
    ``manifest.json``, e.g. the demo corpus's, is not one)."""
    try:
        with open(os.path.join(records_dir, MANIFEST), encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION or not \
            isinstance(manifest.get("files"), dict):
        return None
    return manifest


class SongDataLoader:
    """Makes and loads the TFRecords of a corpus under one :class:`Config`."""

    def __init__(self, config: Config):
        self.config = config

    # ------------------------------------------------------------------ records
    def _records_dir(self, records_dir: Optional[str]) -> str:
        return records_dir if records_dir is not None else self.config.records_dir

    def _read_manifest(self, records_dir: str) -> Optional[dict]:
        return read_records_manifest(records_dir)

    def _write_manifest(self, records_dir: str, manifest: dict) -> None:
        path = os.path.join(records_dir, MANIFEST)
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            # ASCII escapes keep names that are not valid UTF-8 (surrogates) round-tripping.
            json.dump(manifest, handle, indent=1)
        os.replace(tmp, path)

    def make(
        self,
        data_dirs: Optional[Sequence[str]] = None,
        records_dir: Optional[str] = None,
        log: Callable[[str], None] = print,
    ) -> MakeSummary:
        """Bring the records in ``records_dir`` up to date with the audio under ``data_dirs``.

        Logs one line per skipped file (``skipped: PATH: REASON``) and ends with
        :meth:`MakeSummary.line`. Writes shards, ``manifest.json`` and the normalisation
        statistics of ``config.feature``. A crash leaves the previous records usable: new shards
        are written first, the manifest replaced atomically, and only then old shards removed.

        Raises:
            DataError: a folder is missing or holds no audio file.
        """
        config = self.config
        files = find_audio_files(tuple(data_dirs) if data_dirs else config.data_dirs)
        records_dir = self._records_dir(records_dir)
        os.makedirs(records_dir, exist_ok=True)
        old = self._read_manifest(records_dir)
        if old is None or old.get("sampling_rate") != config.sampling_rate:
            old = {"files": {}, "next_shard": 0}
        entries, keep, decode = self._plan(files, old["files"], records_dir)

        # A shard holding anything that is no longer valid is rewritten from its valid songs.
        before, after = _count_by_shard(old["files"].values()), _count_by_shard(keep.values())
        stale = {shard for shard, count in before.items() if after.get(shard, 0) != count}
        carry = {path for path, entry in keep.items() if entry["shard"] in stale}

        # Moments of the songs this run handles anyway; the untouched shards are added after.
        moments = _MomentSum(config)
        writer = _ShardWriter(records_dir, old.get("next_shard", 0),
                              int(config.shard_size_seconds * config.sampling_rate))
        try:
            for song in self._iterate(records_dir, sorted({keep[p]["shard"] for p in carry})):
                if song.path in carry:
                    moments.add(song.samples)
                    entries[song.path]["shard"] = writer.write(
                        _serialize(song.samples, song.sampling_rate, song.path, song.label),
                        len(song.samples))
            for path, label in decode:
                entries[path] = entry = self._decode(path, label)
                if entry["status"] == "ok":
                    samples = entry.pop("samples")
                    moments.add(samples)
                    entry["shard"] = writer.write(
                        _serialize(samples, config.sampling_rate, path, label), len(samples))
        finally:
            writer.close()

        manifest = {"version": MANIFEST_VERSION, "sampling_rate": config.sampling_rate,
                    "next_shard": writer.index, "files": entries}
        self._write_manifest(records_dir, manifest)
        referenced = {e["shard"] for e in entries.values() if e["status"] == "ok"}
        for name in os.listdir(records_dir):
            if name.startswith("shard-") and name.endswith(".tfrecord") and name not in referenced:
                os.remove(os.path.join(records_dir, name))

        ok = [e for e in entries.values() if e["status"] == "ok"]
        source = self._fingerprint(manifest)
        if ok and self._saved_stats(records_dir, source) is None:
            untouched = sorted(referenced - set(writer.names))
            for song in self._iterate(records_dir, untouched):
                moments.add(song.samples)
            moments.stats(source).save(self.stats_path(records_dir))
        skipped = sorted((path, " ".join(e["reason"].split()))
                         for path, e in entries.items() if e["status"] != "ok")
        for path, reason in skipped:
            log(f"skipped: {_printable(path)}: {reason}")
        summary = MakeSummary(
            written=len(ok), skipped=len(skipped),
            seconds=sum(e["num_samples"] for e in ok) / config.sampling_rate,
            skipped_files=skipped, decoded=len(decode),
        )
        log(summary.line())
        return summary

    def _plan(self, files, old_files: dict, records_dir: str):
        """Sort ``files`` into manifest entries reused as they are and files to decode.

        Returns ``(entries, keep, decode)``: entries by path for files not to be decoded, the
        subset of them whose songs stay in their shards, and ``(path, label)`` to decode.
        """
        patch = self.config.patch_samples
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
                                     reason=self._short_reason(entry["num_samples"]))
            elif entry["status"] == "short" and entry["num_samples"] >= patch:
                decode.append((path, label))
            elif entry["status"] == "short":
                entries[path] = dict(entry, reason=self._short_reason(entry["num_samples"]))
            elif entry["status"] == "ok" and not os.path.exists(
                    os.path.join(records_dir, entry["shard"])):
                decode.append((path, label))  # its shard was deleted by hand
            else:
                entries[path] = entry
                if entry["status"] == "ok":
                    keep[path] = entry
        return entries, keep, decode

    def _decode(self, path: str, label: str) -> dict:
        """A manifest entry for ``path``; an ``ok`` one carries the decoded ``samples`` too."""
        entry = {"label": label}
        try:
            entry["size"], entry["mtime_ns"] = _stat(path)
            samples = load_audio(path, self.config.sampling_rate)
            entry["num_samples"] = len(samples)
            check_audio(samples, self.config)
        except TooShortError as err:
            entry.update(status="short", reason=str(err))
        except AudioError as err:
            entry.update(status="skipped", reason=str(err))
        except Exception as err:  # a bad file must never stop the run
            entry.update(status="skipped", reason=f"cannot decode: {type(err).__name__}: {err}")
        else:
            entry.update(status="ok", samples=samples)
        return entry

    def _short_reason(self, num_samples: int) -> str:
        rate = self.config.sampling_rate
        return (f"shorter than one patch ({num_samples / rate:.2f} s < "
                f"{self.config.patch_samples / rate:.2f} s)")

    def _manifest_or_error(self, records_dir: str) -> dict:
        manifest = self._read_manifest(records_dir)
        if manifest is None:
            raise DataError(f"no records in {records_dir}: make them first with "
                            f"`python data_loader.py AUDIO_DIR --out {records_dir}`")
        if manifest["sampling_rate"] != self.config.sampling_rate:
            raise DataError(
                f"records in {records_dir} are at {manifest['sampling_rate']} Hz, the config asks "
                f"for {self.config.sampling_rate} Hz: remake them or set --sampling_rate"
            )
        return manifest

    def shard_paths(self, records_dir: Optional[str] = None) -> List[str]:
        """The shards the manifest lists (an orphan from an interrupted run is never read)."""
        records_dir = self._records_dir(records_dir)
        manifest = self._manifest_or_error(records_dir)
        names = sorted({e["shard"] for e in manifest["files"].values() if e["status"] == "ok"})
        if not names:
            raise DataError(f"the records in {records_dir} hold no usable song")
        return [os.path.join(records_dir, name) for name in names]

    def _fingerprint(self, manifest: dict) -> str:
        songs = sorted((p, e["size"], e["mtime_ns"], e["label"])
                       for p, e in manifest["files"].items() if e["status"] == "ok")
        text = json.dumps([manifest["sampling_rate"], songs])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def stats_path(self, records_dir: Optional[str] = None) -> str:
        name = f"feature_stats_{self.config.feature}.json"
        return os.path.join(self._records_dir(records_dir), name)

    def stats(self, records_dir: Optional[str] = None) -> FeatureStats:
        """Normalisation statistics of ``config.feature`` over every song in the records.

        Read from ``feature_stats_<feature>.json`` beside the records when it was computed from
        the same songs under the same feature settings; otherwise recomputed and saved.
        """
        records_dir = self._records_dir(records_dir)
        source = self._fingerprint(self._manifest_or_error(records_dir))
        saved = self._saved_stats(records_dir, source)
        if saved is not None:
            return saved
        moments = _MomentSum(self.config)
        for song in self.songs(records_dir):
            moments.add(song.samples)
        stats = moments.stats(source)
        stats.save(self.stats_path(records_dir))
        return stats

    def _saved_stats(self, records_dir: str, source: str) -> Optional[FeatureStats]:
        """The saved statistics, if computed from the songs ``source`` names under this config."""
        try:
            saved = FeatureStats.load(self.stats_path(records_dir))
        except (OSError, ValueError, KeyError):
            return None
        return saved if saved.matches(self.config) and saved.source == source else None

    def _iterate(self, records_dir: str, names: Sequence[str]) -> Iterator[Song]:
        if not names:  # building an empty pipeline would still trace its parse function
            return
        paths = [os.path.join(records_dir, name) for name in names]
        for record in tf.data.TFRecordDataset(paths).map(_parse).as_numpy_iterator():
            yield Song(record["audio"], int(record["sampling_rate"]),
                       record["path"].decode("utf-8", "surrogateescape"),
                       record["label"].decode("utf-8", "surrogateescape"))

    def songs(self, records_dir: Optional[str] = None) -> Iterator[Song]:
        """Every song in the records, in shard order."""
        records_dir = self._records_dir(records_dir)
        names = [os.path.basename(p) for p in self.shard_paths(records_dir)]
        return self._iterate(records_dir, names)

    # ------------------------------------------------------------------ patches
    def aligned_step(self) -> int:
        """Samples between aligned windows: consecutive patches hold consecutive time steps.

        For spectrograms that is ``window_size * hop_length`` (the patches' frames tile the song's
        frame grid, none twice); for waveforms ``window_size``.
        """
        if self.config.feature == "spectrogram":
            return self.config.window_size * self.config.hop_length
        return self.config.window_size

    def load(
        self,
        records_dir: Optional[str] = None,
        batch_size: Optional[int] = None,
        training: bool = True,
        aligned: bool = False,
        repeat: bool = True,
        labels: bool = False,
        seed: Optional[int] = None,
        stats: Optional[FeatureStats] = None,
    ) -> tf.data.Dataset:
        """Batches of normalised patches ``(B, H, W, C)`` float32 (``config.input_shape``).

        Args:
            batch_size: patches per batch (default ``config.batch_size``).
            training: shuffle songs and patches, and drop the last incomplete batch.
            aligned: cut each song into consecutive windows from its first sample (see
                :meth:`aligned_step`) instead of random ones; deterministic, for evaluation.
            repeat: repeat forever (a new draw of random windows every epoch).
            labels: yield ``(patches, labels)`` with ``labels (B,)`` tf.string folder names.
            stats: normalise with these statistics (e.g. a checkpoint's) instead of the
                records' own.
            seed: seeds the shuffles and the windows (default ``config.seed``); the same seed
                gives the same batches.

        Random windows: each pass over a song draws ``max(1, N // patch_samples)`` windows at
        uniform offsets, so every song contributes in proportion to its length.
        """
        config = self.config
        records_dir = self._records_dir(records_dir)
        shards = self.shard_paths(records_dir)
        stats = self.stats(records_dir) if stats is None else stats
        batch_size = config.batch_size if batch_size is None else int(batch_size)
        seed = config.seed if seed is None else int(seed)
        patch = config.patch_samples
        step = self.aligned_step()
        lengths = [e["num_samples"] for e in self._read_manifest(records_dir)["files"].values()
                   if e["status"] == "ok"]
        if max(lengths) < patch:
            raise DataError(
                f"no song in {records_dir} is one patch long ({config.patch_seconds:.2f} s); "
                "lower window_size or add longer songs"
            )

        ds = tf.data.Dataset.from_tensor_slices(shards)
        if training:
            ds = ds.shuffle(len(shards), seed=seed)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(shards)),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.map(_parse, num_parallel_calls=tf.data.AUTOTUNE)
        # Records made for a smaller patch may hold songs too short for this one.
        ds = ds.filter(lambda song: song["num_samples"] >= patch)
        if training:
            ds = ds.shuffle(SONG_SHUFFLE_BUFFER, seed=seed + 1)
        if repeat:
            ds = ds.repeat()
        ds = ds.enumerate()

        def cut(index, song):
            audio, count = song["audio"], tf.shape(song["audio"], tf.int64)[0]
            if aligned:
                windows = 1 + (count - patch) // step
                offsets = tf.range(windows) * step
            else:
                windows = tf.maximum(count // patch, 1)
                # Stateless draws keyed by (seed, song visit): reproducible under parallel maps.
                offsets = tf.random.stateless_uniform(
                    [windows], seed=tf.stack([tf.cast(seed, tf.int64), index]),
                    minval=0, maxval=count - patch + 1, dtype=tf.int64)
            cuts = tf.gather(audio, offsets[:, None] + tf.range(patch, dtype=tf.int64)[None, :])
            return cuts, tf.fill([windows], song["label"])

        ds = ds.map(cut, num_parallel_calls=tf.data.AUTOTUNE)
        if training:
            # Round-robin over several songs' windows, so a batch is not one song's patches.
            ds = ds.interleave(
                lambda cuts, names: tf.data.Dataset.from_tensor_slices((cuts, names)),
                cycle_length=SONGS_INTERLEAVED, block_length=1)
            ds = ds.shuffle(config.shuffle_buffer, seed=seed + 2)
        else:
            ds = ds.unbatch()
        ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE)

        def featurise(windows, names):
            patches = stats.normalize(patch_features(windows, config))
            return (patches, names) if labels else patches

        ds = ds.map(featurise, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------- CLI
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Make records from audio folders. Exit 0 when some song was written, 1 when none was or a
    folder is missing or empty, 2 on a bad flag."""
    parser = OneLineArgumentParser(prog="data_loader.py", description="Audio folders -> TFRecord shards.")
    parser.add_argument("audio_dirs", nargs="+", metavar="AUDIO_DIR",
                        help="folders of audio; each folder's name labels its songs")
    parser.add_argument("--out", required=True, metavar="RECORDS_DIR", help="records folder")
    parser.add_argument("--sampling_rate", type=int, help="Hz (default %(default)s)",
                        default=Config.sampling_rate)
    parser.add_argument("--feature", choices=FEATURES, default=Config.feature)
    parser.add_argument("--window_size", type=int, help="patch length in time steps")
    parser.add_argument("--channel_size", type=int, default=Config.channel_size)
    parser.add_argument("--n_fft", type=int, default=Config.n_fft)
    parser.add_argument("--hop_length", type=int, default=Config.hop_length)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a bad flag already reported on one line
        return int(stop.code or 0)
    try:
        config = Config(
            data_dirs=tuple(args.audio_dirs), records_dir=args.out,
            sampling_rate=args.sampling_rate, feature=args.feature, window_size=args.window_size,
            channel_size=args.channel_size, n_fft=args.n_fft, hop_length=args.hop_length,
        )
    except ValueError as err:
        print(f"data_loader.py: error: {err}", file=sys.stderr)
        return 2
    try:
        summary = SongDataLoader(config).make()
    except (DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0 if summary.written else 1


if __name__ == "__main__":
    sys.exit(main())

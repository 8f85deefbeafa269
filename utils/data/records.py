"""The reading side of a records folder: one :class:`Records` object per folder.

A records folder (made by :mod:`utils.data.records_writer`, through ``SongDataLoader.make``) holds
TFRecord shards of whole songs, ``manifest.json`` and the normalisation statistics of each feature
made so far. :class:`Records` reads the manifest once, then serves the songs, their statistics and
two ``tf.data`` pipelines of normalised patches: random windows for training, aligned windows for
evaluation.

What both sides share lives here too: the file names, the manifest reader, the fingerprint that ties
saved statistics to the songs they came from, and the integrity check of the shards a manifest lists
(:func:`shard_damage`; one shard's is :func:`utils.data.shards.check_file`): the manifest records
each shard's size, CRC-32 and record count, and a shard that no longer matches is left out (one
warning line naming it and the songs it loses) until ``SongDataLoader.make`` rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Collection, Dict, Iterable, Iterator, List, Optional, Tuple

import tensorflow as tf

from common_definitions import Config
from utils.audio.features import FeatureStats, MomentSum, patch_features
from utils.data.shards import DataError, Song, check_file, iterate_songs, parse_record
from utils.data.world_cache import cached_stats, song_source

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
SHARD_PATTERN = "shard-{:05d}.tfrecord"
# Whole songs held in memory while shuffling (a 3-minute song at 16 kHz is 11 MB) and songs whose
# windows are dealt out in turn; together with the patch shuffle buffer they decorrelate a batch.
SONG_SHUFFLE_BUFFER = 16
SONGS_INTERLEAVED = 8


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


def ok_entries(manifest: dict) -> Dict[str, dict]:
    """The manifest entries, by path, of the songs the records hold."""
    return {path: e for path, e in manifest["files"].items() if e.get("status") == "ok"}


def shard_damage(records_dir: str, manifest: dict,
                 entries: Optional[Dict[str, dict]] = None) -> Dict[str, str]:
    """shard name -> why it is damaged, for every damaged shard that ``entries`` (default: the
    ``ok`` entries of ``manifest``) place songs in.

    The manifest's ``shards`` map holds each shard's integrity record; a manifest without one
    (older than the field) is verified by reading (see :func:`check_file`). Costs one read of
    the shards.
    """
    entries = ok_entries(manifest) if entries is None else entries
    recorded = manifest.get("shards")
    counts: Dict[str, int] = {}
    for entry in entries.values():
        counts[entry["shard"]] = counts.get(entry["shard"], 0) + 1
    damaged = {}
    for name in sorted(counts):
        record = recorded.get(name) if isinstance(recorded, dict) else None
        problem = check_file(os.path.join(records_dir, name),
                             record if isinstance(record, dict) else None, counts[name])
        if problem is not None:
            damaged[name] = problem
    return damaged


def describe_songs(paths: Iterable[str], labels: Dict[str, str], shown: int = 3) -> str:
    """``3 songs of real (a.wav, b.wav, c.wav)``: a count, the singers and the first few names,
    short enough for a one-line message."""
    paths = sorted(paths)
    singers = sorted({labels[p] for p in paths if p in labels})
    names = [os.path.basename(p) for p in paths[:shown]]
    more = f", and {len(paths) - shown} more" if len(paths) > shown else ""
    noun = "song" if len(paths) == 1 else "songs"
    of = f" of {', '.join(singers)}" if singers else ""
    return f"{len(paths)} {noun}{of} ({', '.join(names)}{more})"


def fingerprint(manifest: dict) -> str:
    """16 hex digits naming the songs of ``manifest`` (path, size, mtime, label) and its rate:
    saved statistics with the same fingerprint were computed from the same songs."""
    songs = sorted((p, e["size"], e["mtime_ns"], e["label"])
                   for p, e in ok_entries(manifest).items())
    text = json.dumps([manifest["sampling_rate"], songs])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def stats_path(records_dir: str, config: Config, subset: Optional[str] = None) -> str:
    """Where the statistics of ``config.feature`` are saved beside the records: over every song,
    or (``subset``: the fingerprint of a selection, e.g. a run's training songs) over some."""
    suffix = f"-{subset}" if subset else ""
    return os.path.join(records_dir, f"feature_stats_{config.feature}{suffix}.json")


def saved_stats(records_dir: str, config: Config, source: str,
                subset: bool = False) -> Optional[FeatureStats]:
    """The saved statistics, if computed from the songs ``source`` names under ``config``
    (``subset``: the file of a selection of the songs, named by ``source``)."""
    try:
        saved = FeatureStats.load(stats_path(records_dir, config, source if subset else None))
    except (OSError, ValueError, KeyError):
        return None
    return saved if saved.matches(config) and saved.source == source else None


def aligned_step(config: Config) -> int:
    """Samples between aligned windows: consecutive patches hold consecutive time steps.

    For spectrograms that is ``window_size * hop_length`` (the patches' frames tile the song's
    frame grid, none twice); for waveforms ``window_size``.
    """
    if config.feature == "spectrogram":
        return config.window_size * config.hop_length
    return config.window_size


class Records:
    """The records of one folder under one :class:`Config`; the manifest is read once, here.

    Attributes:
        records_dir: the folder.
        labels: the sorted labels (top-folder names, the singers) of the songs.
        shard_paths: the shards the manifest lists, sorted (an orphan from an interrupted run is
            never read), less any damaged one.
        song_labels: source path -> label of every song in the records.
        damaged: shard name -> why it is damaged (truncated, checksum mismatch, missing...):
            each was left out, with its songs, after one warning line naming it and them.

    Every shard is checked against the size and CRC-32 the manifest records for it (one read
    of the records; see :func:`shard_damage`) before anything else uses it, so a truncated or
    garbled shard is never read. Its songs are left out of everything the object serves (songs,
    statistics, datasets, labels) until ``SongDataLoader.make`` rebuilds it.

    ``stats``, ``training_dataset`` and ``evaluation_dataset`` take ``songs``: a collection of
    source paths (keys of :attr:`song_labels`) to restrict them to, e.g. a run's training songs
    or its held-out songs; None means every song.

    Raises:
        DataError: no records in the folder, records at another sampling rate, or none of their
            songs usable (e.g. every shard damaged).
    """

    def __init__(self, config: Config, records_dir: Optional[str] = None):
        self.config = config
        self.records_dir = records_dir if records_dir is not None else config.records_dir
        manifest = read_records_manifest(self.records_dir)
        if manifest is None:
            raise DataError(f"no records in {self.records_dir}: make them first with "
                            f"`python data_loader.py AUDIO_DIR --out {self.records_dir}`")
        if manifest["sampling_rate"] != config.sampling_rate:
            raise DataError(
                f"records in {self.records_dir} are at {manifest['sampling_rate']} Hz, the config "
                f"asks for {config.sampling_rate} Hz: remake them or set --sampling_rate"
            )
        songs = ok_entries(manifest)
        self.damaged: Dict[str, str] = shard_damage(self.records_dir, manifest, songs)
        if self.damaged:
            songs = self._leave_out_damaged(songs)
            manifest = dict(manifest, files=songs)  # the fingerprint of what is served
        names = sorted({e["shard"] for e in songs.values()})
        if not names:
            raise DataError(f"the records in {self.records_dir} hold no usable song")
        self.shard_paths: List[str] = [os.path.join(self.records_dir, n) for n in names]
        # The singers (top-folder labels) of the songs, sorted: a conditional model's singer ids.
        self.labels: Tuple[str, ...] = tuple(sorted({e["label"] for e in songs.values()}))
        self.song_labels: Dict[str, str] = {path: e["label"] for path, e in songs.items()}
        self._manifest = manifest
        self._entries = songs
        self._source = fingerprint(manifest)
        self._stats: Optional[FeatureStats] = None
        self._subset_stats: Dict[str, FeatureStats] = {}

    def _leave_out_damaged(self, songs: Dict[str, dict]) -> Dict[str, dict]:
        """``songs`` less those in a damaged shard; one warning line per damaged shard.

        Raises:
            DataError: every shard is damaged.
        """
        labels = {path: e["label"] for path, e in songs.items()}
        rebuild = f"`python data_loader.py AUDIO_DIR --out {self.records_dir}`"
        if all(e["shard"] in self.damaged for e in songs.values()):
            first = min(self.damaged)
            raise DataError(
                f"every shard in {self.records_dir} is damaged ({len(self.damaged)}; "
                f"{first}: {self.damaged[first]}): rebuild them from the audio with {rebuild}")
        for name, problem in sorted(self.damaged.items()):
            lost = [path for path, e in songs.items() if e["shard"] == name]
            warnings.warn(
                f"{os.path.join(self.records_dir, name)} is damaged ({problem}): left out with "
                f"its {describe_songs(lost, labels)}; rebuild it with {rebuild} (or train.py "
                "--data_dir)", stacklevel=3)
        return {path: e for path, e in songs.items() if e["shard"] not in self.damaged}

    def songs(self) -> Iterator[Song]:
        """Every song in the records, in shard order."""
        return iterate_songs(self.records_dir, [os.path.basename(p) for p in self.shard_paths])

    def _selected(self, songs: Optional[Collection[str]]) -> Dict[str, dict]:
        """The manifest entries of ``songs`` (every song when None).

        Raises:
            DataError: none of ``songs`` is in the records.
        """
        if songs is None:
            return self._entries
        chosen = {path: self._entries[path] for path in songs if path in self._entries}
        if not chosen:
            raise DataError(f"none of the {len(songs)} songs asked for is in the records in "
                            f"{self.records_dir}")
        return self._entries if len(chosen) == len(self._entries) else chosen

    def stats(self, songs: Optional[Collection[str]] = None) -> FeatureStats:
        """Normalisation statistics of ``config.feature`` over every song in the records, or over
        ``songs`` (source paths) only.

        Read from ``feature_stats_<feature>.json`` beside the records (for a selection:
        ``feature_stats_<feature>-<fingerprint of the selection>.json``) when it was computed from
        the same songs under the same feature settings; otherwise recomputed and saved.
        """
        entries = self._selected(songs)
        if entries is not self._entries:
            return self._stats_of(entries)
        if self._stats is None:
            self._stats = saved_stats(self.records_dir, self.config, self._source)
        if self._stats is None:
            self._stats = self._compute_stats(self._entries, self._source)
            self._stats.save(stats_path(self.records_dir, self.config))
        return self._stats

    def _compute_stats(self, entries: Dict[str, dict], source: str) -> FeatureStats:
        """Moments of the songs ``entries``: of their audio, or for the world feature of their
        cached WORLD analyses (each song is analysed once, when the records are made)."""
        shards = sorted({e["shard"] for e in entries.values()})
        if self.config.feature == "world":
            return cached_stats(self.records_dir, self.config, shards, source,
                                keep=lambda path: path in entries)
        moments = MomentSum(self.config)
        for song in iterate_songs(self.records_dir, shards):
            if song.path in entries:
                moments.add(song.samples)
        return moments.stats(source)

    def _stats_of(self, entries: Dict[str, dict]) -> FeatureStats:
        """The statistics of the songs ``entries`` (a strict subset of the records)."""
        source = fingerprint(dict(self._manifest, files=entries))
        if source not in self._subset_stats:
            stats = saved_stats(self.records_dir, self.config, source, subset=True)
            if stats is None:
                stats = self._compute_stats(entries, source)
                stats.save(stats_path(self.records_dir, self.config, source))
            self._subset_stats[source] = stats
        return self._subset_stats[source]

    def training_dataset(
        self,
        batch_size: Optional[int] = None,
        seed: Optional[int] = None,
        stats: Optional[FeatureStats] = None,
        labels: bool = False,
        songs: Optional[Collection[str]] = None,
    ) -> tf.data.Dataset:
        """Endless batches ``(B, H, W, C)`` float32 (``config.input_shape``) of normalised patches
        at random offsets: shards, songs and patches shuffled, the last incomplete batch dropped
        (static batch size, as Keras wants).

        Each pass over a song draws ``max(1, N // patch_samples)`` windows at uniform offsets, so
        every song contributes in proportion to its length, and each pass draws new ones.

        Args:
            batch_size: patches per batch (default ``config.batch_size``).
            seed: seeds the shuffles and the windows (default ``config.seed``); the same seed
                gives the same batches.
            stats: normalise with these statistics (e.g. a checkpoint's) instead of the records'.
            labels: yield ``(patches, labels)`` with ``labels (B,)`` tf.string folder names.
            songs: only these songs (source paths), e.g. a run's training songs.
        """
        return self._dataset(batch_size, seed, stats, labels, training=True, songs=songs)

    def evaluation_dataset(
        self,
        batch_size: Optional[int] = None,
        stats: Optional[FeatureStats] = None,
        labels: bool = False,
        songs: Optional[Collection[str]] = None,
    ) -> tf.data.Dataset:
        """One deterministic pass of batches ``(B, H, W, C)`` over aligned windows: each song cut
        into consecutive windows from its first sample, :func:`aligned_step` apart (the tail
        shorter than a patch is left out); the last batch may be smaller. Arguments as
        :meth:`training_dataset` (``songs``: e.g. a run's held-out songs)."""
        return self._dataset(batch_size, None, stats, labels, training=False, songs=songs)

    def _dataset(self, batch_size, seed, stats, labels: bool, training: bool,
                 songs: Optional[Collection[str]] = None) -> tf.data.Dataset:
        config = self.config
        entries = self._selected(songs)
        shards = (self.shard_paths if entries is self._entries else
                  [os.path.join(self.records_dir, n) for n in sorted({e["shard"] for e in
                                                                      entries.values()})])
        stats = self.stats() if stats is None else stats
        batch_size = config.batch_size if batch_size is None else int(batch_size)
        seed = config.seed if seed is None else int(seed)
        # Time steps of one patch in what is cut: samples, or the world feature's cached frames.
        world = config.feature == "world"
        patch = config.window_size if world else config.patch_samples
        step = aligned_step(config)
        if max(e["num_samples"] for e in entries.values()) < config.patch_samples:
            which = "song" if entries is self._entries else "selected song"
            raise DataError(
                f"no {which} in {self.records_dir} is one patch long ({config.patch_seconds:.2f} "
                "s); lower window_size or add longer songs"
            )

        parse = parse_record
        if world:  # the cached WORLD features of the same songs instead of their audio
            shards, parse = song_source(self.records_dir, config, shards)
        ds = tf.data.Dataset.from_tensor_slices(shards)
        if training:
            ds = ds.shuffle(len(shards), seed=seed)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(shards)),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        # Records made for a smaller patch may hold songs too short for this one.
        ds = ds.filter(lambda song: song["num_samples"] >= patch)
        if entries is not self._entries:
            wanted = tf.constant(sorted(p.encode("utf-8", "surrogateescape") for p in entries))
            ds = ds.filter(lambda song: tf.reduce_any(tf.equal(song["path"], wanted)))
        if training:
            ds = ds.shuffle(SONG_SHUFFLE_BUFFER, seed=seed + 1).repeat()
        ds = ds.enumerate()

        def cut(index, song):
            audio, count = song["audio"], tf.shape(song["audio"], tf.int64)[0]
            if not training:
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

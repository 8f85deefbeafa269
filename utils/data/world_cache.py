"""WORLD features cached beside the records: analysed once when the records are made.

A records folder holds whole songs as audio (:mod:`utils.data.records`). The ``world`` feature
trains on WORLD's coded envelope and aperiodicity instead (:mod:`utils.audio.world`), whose analysis
costs far more than an STFT, so it is done once per song and cached::

    RECORDS_DIR/world-<key>/shard-NNNNN.tfrecord   one example per song of the audio shard of the
                                                   same name: features (T, world_dims, 2) float32
                                                   bytes, frames, path, label
    RECORDS_DIR/world-<key>/index.json              the audio shards cached so far:
                                                   {"shards": {name: songs},
                                                    "checks": {name: {size, crc32, records}}}

``<key>`` names the analysis settings (sampling rate, hop, ``world_dims``, ``world_f0``), so caches
of several settings live side by side. Audio shards are never rewritten under the same name (a
changed shard gets a new number), so a cache shard listed in the index stays valid for as long as
its audio shard exists; caches of removed shards are deleted. The index is replaced atomically
after the cache shards it lists are complete, so an interrupted run redoes only the shards it did
not finish. Songs are analysed on a few threads (pyworld releases the GIL while it works).

Integrity: ``checks`` records each cache shard's size, CRC-32 and record count (an index written
before it existed is verified by reading the shards through). :func:`update_cache` (run while the
records are made) recomputes a cache shard that no longer matches, after one warning line;
:func:`cached_shards` (the reading side) refuses one with a one-line :class:`DataError` saying to
remake the records, which recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterator, List, Sequence

import numpy as np
import tensorflow as tf

from common_definitions import Config
from utils.audio.features import FeatureStats, MomentSum, stats_fields, world_moments
from utils.data.shards import DataError, check_file, iterate_songs, shard_record, tf_writes
from utils.files import atomic_write, atomic_write_text, is_partial

INDEX = "index.json"

# One cached song; the features are raw little-endian float32 bytes (T, world_dims, 2).
WORLD_RECORD_SPEC = {
    "features": tf.io.FixedLenFeature([], tf.string),
    "frames": tf.io.FixedLenFeature([], tf.int64),
    "path": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.string),
}


def cache_dir(records_dir: str, config: Config) -> str:
    """The cache folder of ``config``'s WORLD settings inside ``records_dir``."""
    fields = json.dumps(stats_fields(config), sort_keys=True)
    return os.path.join(records_dir, "world-" + hashlib.sha256(fields.encode()).hexdigest()[:10])


def _read_index(folder: str) -> Dict[str, int]:
    try:
        with open(os.path.join(folder, INDEX), encoding="utf-8") as handle:
            index = json.load(handle)
        return {str(k): int(v) for k, v in index["shards"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _read_checks(folder: str) -> Dict[str, dict]:
    """cache shard name -> its integrity record (none in an index older than the field)."""
    try:
        with open(os.path.join(folder, INDEX), encoding="utf-8") as handle:
            checks = json.load(handle).get("checks", {})
        return {str(k): v for k, v in checks.items() if isinstance(v, dict)}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def _write_index(folder: str, index: Dict[str, int], checks: Dict[str, dict]) -> None:
    checks = {name: checks[name] for name in index if name in checks}
    atomic_write_text(os.path.join(folder, INDEX), json.dumps({"shards": index, "checks": checks}))


def _damaged(folder: str, index: Dict[str, int], names: Sequence[str]) -> Dict[str, str]:
    """cache shard name -> why it is damaged, among ``names`` (all listed in ``index``)."""
    checks = _read_checks(folder)
    damaged = {}
    for name in names:
        problem = check_file(os.path.join(folder, name), checks.get(name), index[name])
        if problem is not None:
            damaged[name] = problem
    return damaged


def _serialize(features: np.ndarray, path: str, label: str) -> bytes:
    def _bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    features = np.ascontiguousarray(features, dtype="<f4")
    example = tf.train.Example(features=tf.train.Features(feature={
        "features": _bytes(features.tobytes()),
        "frames": tf.train.Feature(int64_list=tf.train.Int64List(value=[len(features)])),
        "path": _bytes(path.encode("utf-8", "surrogateescape")),
        "label": _bytes(label.encode("utf-8", "surrogateescape")),
    }))
    return example.SerializeToString()


def parse_world_record(record: tf.Tensor, config: Config) -> Dict[str, tf.Tensor]:
    """One cached song -> ``features (T, world_dims, 2)`` float32, ``frames``, ``path``,
    ``label``."""
    parsed = tf.io.parse_single_example(record, WORLD_RECORD_SPEC)
    flat = tf.io.decode_raw(parsed["features"], tf.float32, little_endian=True)
    parsed["features"] = tf.reshape(flat, [-1, config.world_dims, 2])
    return parsed


def update_cache(records_dir: str, config: Config, shard_names: Sequence[str],
                 log: Callable[[str], None] = print, threads: int = 0) -> str:
    """Analyse the songs of every audio shard in ``shard_names`` not cached yet, or whose cache
    shard is damaged (one warning line each); drop the caches of shards no longer listed.
    Returns the cache folder. The caller holds the records folder's lock."""
    # Looked up on the module when called, so that a test can watch what is analysed.
    from utils.audio.world import analyse, require_pyworld

    require_pyworld()
    folder = cache_dir(records_dir, config)
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):  # left by a run that was killed (the caller holds the lock)
        if is_partial(name):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass
    checks = _read_checks(folder)
    index = {name: n for name, n in _read_index(folder).items() if name in shard_names}
    for name, problem in sorted(_damaged(folder, index, sorted(index)).items()):
        warnings.warn(f"{os.path.join(folder, name)} is damaged ({problem}): analysing the "
                      f"songs of {name} again", stacklevel=2)
        del index[name]
    missing = [name for name in shard_names if name not in index]
    workers = threads or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        for name in missing:
            songs = list(iterate_songs(records_dir, [name]))
            analyses = list(pool.map(lambda song: analyse(song.samples, config), songs))
            records = [_serialize(a.features, s.path, s.label) for s, a in zip(songs, analyses)]

            def write(tmp: str, records=records, name=name) -> None:
                with tf_writes(os.path.join(folder, name)), tf.io.TFRecordWriter(tmp) as writer:
                    for record in records:
                        writer.write(record)
                checks[name] = shard_record(tmp, len(records))

            atomic_write(os.path.join(folder, name), write)
            index[name] = len(records)
            _write_index(folder, index, checks)
    if missing:
        log(f"world features: analysed the songs of {len(missing)} shard(s) into {folder}")
    legacy = [name for name in index if name not in checks]  # verified by reading above
    for name in legacy:
        checks[name] = shard_record(os.path.join(folder, name), index[name])
    _write_index(folder, index, checks)
    for name in os.listdir(folder):
        if name.startswith("shard-") and name not in index:
            os.remove(os.path.join(folder, name))
    return folder


def cached_shards(records_dir: str, config: Config, shard_names: Sequence[str]) -> List[str]:
    """Paths of the cache shards of ``shard_names``, which must all be cached and whole (each is
    checked against its size and CRC-32 in the index: one read of the cache).

    Raises:
        DataError: a shard's features are not cached, or their cache shard is damaged.
    """
    folder = cache_dir(records_dir, config)
    index = _read_index(folder)
    remake = (f"remake the records with --feature world (python data_loader.py AUDIO_DIR --out "
              f"{records_dir} --feature world)")
    missing = [name for name in shard_names if name not in index]
    if missing:
        raise DataError(f"the world features of {len(missing)} shard(s) in {records_dir} are not "
                        f"cached: {remake}")
    damaged = _damaged(folder, index, shard_names)
    if damaged:
        name = min(damaged)
        raise DataError(f"the world features cached in {os.path.join(folder, name)} are damaged "
                        f"({damaged[name]}; {len(damaged)} shard(s) in all): {remake}, which "
                        "analyses them again")
    return [os.path.join(folder, name) for name in shard_names]


def iterate_features(records_dir: str, config: Config, shard_names: Sequence[str]
                     ) -> Iterator[Dict[str, object]]:
    """Every cached song of ``shard_names`` as ``{"features", "path", "label"}`` (numpy)."""
    paths = cached_shards(records_dir, config, shard_names)
    if not paths:
        return
    dataset = tf.data.TFRecordDataset(paths).map(lambda r: parse_world_record(r, config))
    for record in dataset.as_numpy_iterator():
        yield {"features": record["features"],
               "path": record["path"].decode("utf-8", "surrogateescape"),
               "label": record["label"].decode("utf-8", "surrogateescape")}


def cached_stats(records_dir: str, config: Config, shard_names: Sequence[str],
                 source: str, keep=None) -> FeatureStats:
    """Normalisation statistics of the cached features of ``shard_names`` (of the songs whose
    path ``keep(path)`` accepts, when given)."""
    moments = MomentSum(config)
    for song in iterate_features(records_dir, config, shard_names):
        if keep is None or keep(song["path"]):
            count, total, squares = world_moments(song["features"])
            moments.count += count
            moments.total = moments.total + total
            moments.squares = moments.squares + squares
    return moments.stats(source)


def song_source(records_dir: str, config: Config, shard_paths: Sequence[str]):
    """What the records' patch pipeline reads for the world feature instead of the audio shards
    ``shard_paths``: ``(cache shard paths, parse)``, where ``parse(record)`` lays a cached song
    out like :func:`utils.data.shards.parse_record`'s songs, so it is cut into patches the same way:
    ``audio`` is the features ``(T, world_dims, 2)`` (time steps are frames) and
    ``num_samples`` their number of frames."""
    names = [os.path.basename(path) for path in shard_paths]
    paths = cached_shards(records_dir, config, names)

    def parse(record):
        parsed = parse_world_record(record, config)
        return {"audio": parsed["features"], "num_samples": parsed["frames"],
                "sampling_rate": tf.constant(config.sampling_rate, tf.int64),
                "path": parsed["path"], "label": parsed["label"]}

    return paths, parse

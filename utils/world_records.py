"""WORLD features cached beside the records: analysed once when the records are made.

A records folder holds whole songs as audio (:mod:`utils.records`). The ``world`` feature trains
on WORLD's coded envelope and aperiodicity instead (:mod:`utils.world_features`), whose analysis
costs far more than an STFT, so it is done once per song and cached::

    RECORDS_DIR/world-<key>/shard-NNNNN.tfrecord   one example per song of the audio shard of the
                                                   same name: features (T, world_dims, 2) float32
                                                   bytes, frames, path, label
    RECORDS_DIR/world-<key>/index.json              the audio shards cached so far

``<key>`` names the analysis settings (sampling rate, hop, ``world_dims``, ``world_f0``), so caches
of several settings live side by side. Audio shards are never rewritten under the same name (a
changed shard gets a new number), so a cache shard listed in the index stays valid for as long as
its audio shard exists; caches of removed shards are deleted. The index is replaced atomically
after the cache shards it lists are complete, so an interrupted run redoes only the shards it did
not finish. Songs are analysed on a few threads (pyworld releases the GIL while it works).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterator, List, Sequence

import numpy as np
import tensorflow as tf

from common_definitions import Config
from utils.features import FeatureStats, MomentSum, stats_fields, world_moments
from utils.files import atomic_write, atomic_write_text

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
    """Analyse the songs of every audio shard in ``shard_names`` not cached yet; drop the caches
    of shards no longer listed. Returns the cache folder."""
    from utils.records import iterate_songs
    from utils.world_features import analyse, require_pyworld

    require_pyworld()
    folder = cache_dir(records_dir, config)
    os.makedirs(folder, exist_ok=True)
    index = {name: n for name, n in _read_index(folder).items()
             if name in shard_names and os.path.isfile(os.path.join(folder, name))}
    missing = [name for name in shard_names if name not in index]
    workers = threads or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        for name in missing:
            songs = list(iterate_songs(records_dir, [name]))
            analyses = list(pool.map(lambda song: analyse(song.samples, config), songs))
            records = [_serialize(a.features, s.path, s.label) for s, a in zip(songs, analyses)]

            def write(tmp: str, records=records) -> None:
                with tf.io.TFRecordWriter(tmp) as writer:
                    for record in records:
                        writer.write(record)

            atomic_write(os.path.join(folder, name), write)
            index[name] = len(records)
            atomic_write_text(os.path.join(folder, INDEX), json.dumps({"shards": index}))
    if missing:
        log(f"world features: analysed the songs of {len(missing)} shard(s) into {folder}")
    atomic_write_text(os.path.join(folder, INDEX), json.dumps({"shards": index}))
    for name in os.listdir(folder):
        if name.startswith("shard-") and name not in index:
            os.remove(os.path.join(folder, name))
    return folder


def cached_shards(records_dir: str, config: Config, shard_names: Sequence[str]) -> List[str]:
    """Paths of the cache shards of ``shard_names``, which must all be cached."""
    folder = cache_dir(records_dir, config)
    index = _read_index(folder)
    missing = [name for name in shard_names if name not in index]
    if missing:
        from utils.records import DataError

        raise DataError(f"the world features of {len(missing)} shard(s) in {records_dir} are not "
                        "cached: remake the records with --feature world (python data_loader.py "
                        "AUDIO_DIR --out RECORDS_DIR --feature world)")
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
    out like :func:`utils.records.parse_record`'s songs, so it is cut into patches the same way:
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

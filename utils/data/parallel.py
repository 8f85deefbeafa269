"""Parallel songs: a source singer's and a target singer's renditions of the same melody, aligned.

A researcher who renders the virtual singer on the score of a human recording has two renditions
of the same notes. In the records, songs of the **same file name** under two singers' folders
are such a pair. ``train.py --parallel`` learns, from every pair of the source singer (the first
``--data_dir``) with each other singer, a flow of the target singer's frames given the source's
(:mod:`utils.flow.context_norm`); this module finds the pairs, aligns them and serves the batches.

Alignment: each rendition's WORLD envelope (channel 0 of the cached feature, decoded) is turned
into mel-cepstra, coefficient 0 (the level) left out, and dynamic time warping
(:func:`utils.audio.mel_cepstrum.align_frames`) gives, for every source frame, the target frame
sung at the same point of the melody (:func:`utils.audio.mel_cepstrum.target_index`). The
target's frames are laid on the source's time axis: a pair becomes two arrays of the same length,
the source's frames (the context) and the target's aligned frames (what the flow models).

Batches are ``(target patches (B, H, W, C), target singer ids (B,), source patches (B, H, W, C))``
normalised with the run's :class:`~utils.audio.features.FeatureStats`; training patches start at
uniform offsets of uniformly drawn pairs weighted by length, evaluation patches are the aligned,
non-overlapping windows of each pair.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from common_definitions import Config
from utils.audio.features import FeatureStats
from utils.audio.mel_cepstrum import align_frames, mel_cepstrum, target_index
from utils.audio.world import envelope_spectrum
from utils.data.world_cache import iterate_features
from utils.data.shards import DataError


def song_name(path: str) -> str:
    """The name that pairs songs across singers' folders: the file name without its extension."""
    return os.path.splitext(os.path.basename(path))[0]


def find_pairs(song_labels: Dict[str, str], source: str, songs: Optional[Sequence[str]] = None
               ) -> List[Tuple[str, str, str]]:
    """``(source path, target path, target label)`` of every song of the singer ``source`` and
    every other singer's song of the same name, among ``songs`` (default: every song of
    ``song_labels``, source path -> label), in name order.

    Raises:
        DataError: ``source`` has no song, or no song of it has a partner of the same name.
    """
    chosen = song_labels if songs is None else {p: song_labels[p] for p in songs
                                                if p in song_labels}
    own = {song_name(p): p for p, label in chosen.items() if label == source}
    if not own:
        raise DataError(f"the parallel source singer {source!r} has no song in the records")
    pairs = sorted((song_name(p), own[song_name(p)], p, label) for p, label in chosen.items()
                   if label != source and song_name(p) in own)
    if not pairs:
        raise DataError(f"no song of {source!r} has a song of the same file name in another "
                        "singer's folder: --parallel pairs renditions of the same melody by name")
    return [(src, tgt, label) for _, src, tgt, label in pairs]


def load_features(records, paths) -> Dict[str, np.ndarray]:
    """The cached WORLD features ``(T, W, C)`` float32 (unnormalised) of the songs ``paths`` of
    ``records`` (a :class:`~utils.data.records.Records` of a world run), by path."""
    wanted = set(paths)
    shards = [os.path.basename(p) for p in records.shard_paths]
    return {song["path"]: np.asarray(song["features"], np.float32)
            for song in iterate_features(records.records_dir, records.config, shards)
            if song["path"] in wanted}


def aligned_target(source: np.ndarray, target: np.ndarray, config: Config) -> np.ndarray:
    """The target's WORLD frames ``(Tt, W, C)`` laid on the source's time axis: ``(Ts, W, C)``,
    frame ``t`` the target frame aligned to source frame ``t`` (both unnormalised features)."""
    rate = config.sampling_rate
    a = mel_cepstrum(envelope_spectrum(source, config), rate)[:, 1:]
    b = mel_cepstrum(envelope_spectrum(target, config), rate)[:, 1:]
    return np.asarray(target)[target_index(align_frames(a, b), len(source))]


@dataclasses.dataclass
class ParallelPairs:
    """Aligned pairs in memory: ``sources[i]`` and ``targets[i]`` ``(T_i, W, C)`` unnormalised
    (the target's frames on the source's time axis), ``singers[i]`` the target's singer id, and
    ``names[i]`` the pair's ``(source path, target path)``."""

    sources: List[np.ndarray]
    targets: List[np.ndarray]
    singers: List[int]
    names: List[Tuple[str, str]]

    def __len__(self) -> int:
        return len(self.sources)

    @classmethod
    def align(cls, features: Dict[str, np.ndarray], pairs: Sequence[Tuple[str, str, str]],
              singer_ids: Dict[str, int], config: Config) -> "ParallelPairs":
        """The pairs ``(source path, target path, target label)`` aligned, given every song's
        unnormalised WORLD ``features`` by path and the singer map ``singer_ids``."""
        out = cls([], [], [], [])
        for source, target, label in pairs:
            x = np.asarray(features[source], np.float32)
            out.sources.append(x)
            out.targets.append(aligned_target(x, features[target], config).astype(np.float32))
            out.singers.append(int(singer_ids[label]))
            out.names.append((source, target))
        return out

    def _arrays(self, stats: FeatureStats):
        """Every pair end to end, normalised: (targets, sources) ``(sum T_i, W, C)`` float32,
        singer per frame, and each pair's first frame."""
        targets = np.concatenate([stats.normalize(t) for t in self.targets]).astype(np.float32)
        sources = np.concatenate([stats.normalize(s) for s in self.sources]).astype(np.float32)
        singers = np.concatenate([np.full(len(s), g, np.int32)
                                  for s, g in zip(self.sources, self.singers)])
        starts = np.cumsum([0] + [len(s) for s in self.sources])[:-1]
        return targets, sources, singers, starts

    def training_dataset(self, stats: FeatureStats, config: Config, seed: int) -> tf.data.Dataset:
        """Endless batches ``(targets, singer ids, sources)`` of ``config.batch_size`` random
        patches of ``config.window_size`` frames, seeded by ``seed`` (the same seed gives the same
        batches). A pair shorter than a patch is left out.

        Raises:
            DataError: no pair is one patch long.
        """
        patch = config.window_size
        lengths = np.array([len(s) for s in self.sources])
        targets, sources, singers, starts = self._arrays(stats)
        usable = lengths >= patch
        if not usable.any():
            raise DataError(f"no parallel pair is one patch long ({patch} frames)")
        # A patch start is drawn uniformly over every usable (pair, offset): longer pairs more.
        first = np.concatenate([starts[i] + np.arange(lengths[i] - patch + 1)
                                for i in np.flatnonzero(usable)]).astype(np.int64)
        targets, sources = tf.constant(targets), tf.constant(sources)
        singers, first = tf.constant(singers), tf.constant(first)
        offsets = tf.range(patch, dtype=tf.int64)

        def draw(index):
            pick = tf.random.stateless_uniform([config.batch_size], seed=tf.stack(
                [tf.cast(seed, tf.int64), index]), maxval=tf.size(first, tf.int64),
                dtype=tf.int64)
            frames = tf.gather(first, pick)[:, None] + offsets[None, :]
            return (tf.gather(targets, frames), tf.gather(singers, frames[:, 0]),
                    tf.gather(sources, frames))

        return tf.data.Dataset.counter().map(draw).prefetch(tf.data.AUTOTUNE)

    def evaluation_dataset(self, stats: FeatureStats, config: Config) -> Optional[tf.data.Dataset]:
        """One pass over the aligned, non-overlapping patches of every pair, batches of
        ``config.batch_size`` (the last may be smaller), shaped as :meth:`training_dataset`;
        None when no pair is one patch long."""
        patch = config.window_size
        chunks = [], [], []
        for source, target, singer in zip(self.sources, self.targets, self.singers):
            for start in range(0, len(source) - patch + 1, patch):
                chunks[0].append(stats.normalize(target[start:start + patch]))
                chunks[1].append(singer)
                chunks[2].append(stats.normalize(source[start:start + patch]))
        if not chunks[0]:
            return None
        arrays = (np.stack(chunks[0]).astype(np.float32), np.array(chunks[1], np.int32),
                  np.stack(chunks[2]).astype(np.float32))
        return tf.data.Dataset.from_tensor_slices(arrays).batch(config.batch_size)

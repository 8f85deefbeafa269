"""The data a training run uses, settled once before the trainer is built.

:func:`prepare_training_data` brings the records up to date with ``config.data_dirs`` and
``config.validation_dirs`` (on the chief worker; the others wait at a barrier and read what it
wrote, on shared storage), opens them, settles which songs are held out for validation
(:mod:`utils.training.validation`) and chooses the feature normalisation:

- a resumed run: the statistics saved beside the checkpoint (so the model keeps seeing what it
  was trained on);
- a fine-tuning run (``--init_from CK``): CK's, unless ``--renormalize``;
- else the statistics of the *training* songs (the held-out ones are left out, as they are of
  every gradient).

The result never changes during the run. The run's own output folders (``--output_dir``,
``--checkpoint_dir``, ``--logdir``, ``--records_dir``) are never read as songs: those inside a
data folder are left out of the walk (one warning line), and an output folder that *is* a data
folder is refused (:func:`utils.data.records_writer.outputs_inside`). Making the records holds the
records folder's lock (:mod:`utils.locks`); a damaged shard is rebuilt, or left out with a
warning when only reading them.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf

from common_definitions import Config
from data_loader import Records, SongDataLoader
from utils.audio.features import FeatureStats
from utils.data.parallel import ParallelPairs, find_pairs, load_features
from utils.data.records_writer import outputs_inside
from utils.data.shards import DataError
from utils.runs.run_folder import (
    CheckpointMismatch,
    check_checkpoint_dir,
    check_init_from,
    check_singers,
    init_from_stats,
    read_singers,
    saved_feature_stats,
)
from utils.training.distribute import Collectives
from utils.training.validation import ValidationSplit, settle_split


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The records a run trains on (None for a run fed batches by hand, e.g. a benchmark), the
    :class:`FeatureStats` its patches are normalised with, for a conditional model its singer
    map (names in id order; empty when unconditional; a parallel run's source singer first), the
    songs it holds out for validation (:class:`~utils.training.validation.ValidationSplit`; none
    by default) and, for a parallel run, its aligned pairs
    (:class:`~utils.data.parallel.ParallelPairs`), whose batches are ``(target patches, target
    singer ids, source patches)``."""

    records: Optional[Records]
    stats: FeatureStats
    singers: Tuple[str, ...] = ()
    split: ValidationSplit = ValidationSplit()
    # A parallel run's aligned pairs of training songs and of held-out songs.
    pairs: Optional[ParallelPairs] = None
    held_pairs: Optional[ParallelPairs] = None

    @property
    def training_songs(self) -> Optional[Tuple[str, ...]]:
        """The source paths trained on; None: every song of the records."""
        return None if self.records is None else self.split.training_songs(self.records)

    def batches(self, config: Config, seed: int) -> tf.data.Dataset:
        """Endless training batches seeded by ``seed`` from the training songs: patches
        ``(B, H, W, C)`` normalised with :attr:`stats`, and for a conditional run
        ``(patches, singer ids (B,) int32)``."""
        if self.pairs is not None:
            return self.pairs.training_dataset(self.stats, config, seed)
        if self.records is None:
            raise ValueError("this run was given no records; feed it batches by hand")
        songs = self.training_songs
        only = {} if songs is None else {"songs": songs}
        dataset = self.records.training_dataset(config.batch_size, seed, self.stats,
                                                labels=bool(self.singers), **only)
        return self._with_ids(dataset)

    def worker_batches(self, config: Config, worker: int, start_step: int) -> tf.data.Dataset:
        """:meth:`batches` for the worker ``worker`` from the step ``start_step`` on.

        Every worker reads its own random patches: auto-sharding is off and the seed depends on
        the run's seed, the worker and the step, so a resumed run does not replay the first
        epoch's patches.
        """
        key = f"{config.seed}/{worker}/{start_step}".encode()
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return self.batches(config, zlib.crc32(key) & 0x7FFFFFFF).with_options(options)

    def first_batches(self, config: Config, count: int) -> Tuple[np.ndarray, ...]:
        """The first ``count`` batches under ``config.seed`` (conditional data), concatenated:
        ``(x, ids)`` numpy arrays (``(x, ids, context)`` parallel), the same on every worker."""
        batches = [tuple(part.numpy() for part in batch)
                   for batch in self.batches(config, config.seed).take(count)]
        return tuple(np.concatenate(parts) for parts in zip(*batches))

    def validation_batches(self, config: Config) -> Optional[tf.data.Dataset]:
        """One pass over every aligned patch of the held-out songs, in batches of
        ``config.batch_size`` (the last may be smaller), shaped as :meth:`batches`; None when
        none is held out (or none of them is in the records any more)."""
        if self.pairs is not None:
            held = self.held_pairs
            return None if held is None else held.evaluation_dataset(self.stats, config)
        held = () if self.records is None else self.split.present(self.records)
        if not held:
            return None
        return self._with_ids(self.records.evaluation_dataset(
            config.batch_size, self.stats, labels=bool(self.singers), songs=held))

    def _with_ids(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """A conditional run's ``(patches, labels)`` as ``(patches, singer ids)``."""
        if not self.singers:
            return dataset
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.singers), tf.range(len(self.singers), dtype=tf.int32)), -1)
        return dataset.map(lambda x, labels: (x, table.lookup(labels)),
                           num_parallel_calls=tf.data.AUTOTUNE)

    def singer_id(self, label: str) -> Optional[int]:
        """The id of the singer ``label`` in a conditional run; None when unconditional."""
        return self.singers.index(label) if self.singers else None


def prepare_training_data(config: Config, collectives: Collectives,
                          loader: Optional[SongDataLoader] = None,
                          log: Callable[[str], None] = print) -> TrainingData:
    """Make (incrementally) and open the records of ``config``; settle the validation split;
    pick the normalisation.

    Raises:
        DataError: missing or empty folders, no usable song in the records, or a validation
            split that cannot be made (see :func:`utils.training.validation.choose_split`).
        OutputIsDataFolder: an output folder is one of the data folders (a RefusedError).
        FolderLocked: another live run is making records in ``config.records_dir``.
        CheckpointMismatch: the checkpoint's (or ``--init_from``'s) ``feature_stats.json``,
            ``singers.json`` or ``validation.json`` cannot be read, ``--init_from`` is a run of
            another model, or the records hold a singer the conditional run does not know.
    """
    loader = loader or SongDataLoader(config)
    chief = collectives.task.is_chief
    resuming = check_checkpoint_dir(config) is not None
    source = None if resuming else check_init_from(config)
    if resuming and config.init_from is not None and chief:
        log(f"{config.checkpoint_dir} holds a checkpoint: resuming it (--init_from "
            f"{config.init_from} only starts a fresh run)")
    if config.data_dirs:
        data_dirs = tuple(config.data_dirs) + tuple(config.validation_dirs)
        # Every worker refuses an output folder that is a data folder; the chief warns.
        exclude = outputs_inside(data_dirs, run_outputs(config), warn=chief)
        if chief:
            loader.make(data_dirs, config.records_dir, log=log, exclude=exclude)
        collectives.barrier()
    records = loader.records(config.records_dir)
    split = settle_split(config, records, resuming, log if chief else (lambda _: None))
    singers = _singers(config, records, resuming, source) if config.conditional else ()
    own = records.stats(split.training_songs(records))
    saved = None
    if resuming:
        saved = saved_feature_stats(config)
        if saved is not None and chief and not _same(saved, own):
            log("the training songs' feature statistics changed since the checkpoint was "
                "written; normalising with the checkpoint's")
    elif source is not None and not config.renormalize:
        saved = init_from_stats(config)
        if chief:
            log(f"normalising with the feature statistics of --init_from {source} "
                "(--renormalize: this run's training songs' own)")
    stats = own if saved is None else saved
    if not config.parallel:
        return TrainingData(records, stats, singers, split)
    training, held = parallel_pairs(records, singers, split, log if chief else (lambda _: None))
    return TrainingData(records, stats, singers, split, training, held)


def parallel_pairs(records: Records, singers: Tuple[str, ...], split: ValidationSplit,
                   log: Callable[[str], None]):
    """A parallel run's aligned pairs: ``(training pairs, held-out pairs or None)``, from the
    songs of the source singer (``singers[0]``) and each other singer's of the same name; a pair
    is held out when both its songs are, trained on when neither is (a pair split by the
    validation split is left out, with a notice).

    Raises:
        DataError: no training pair (see :func:`utils.data.parallel.find_pairs`).
    """
    source = singers[0]
    trained = set(split.training_songs(records) or records.song_labels)
    everything = find_pairs(records.song_labels, source)
    ids = {name: index for index, name in enumerate(singers)}
    sides = {"train": [], "held": [], "split": []}
    for pair in everything:
        inside = (pair[0] in trained) + (pair[1] in trained)
        sides[{2: "train", 0: "held", 1: "split"}[inside]].append(pair)
    if not sides["train"]:
        raise DataError(f"every parallel pair of {source!r} is held out for validation: lower "
                        "--validation_split or add pairs")
    features = load_features(records, {p for pair in everything for p in pair[:2]})
    aligned = {side: ParallelPairs.align(features, pairs, ids, records.config)
               for side, pairs in sides.items() if side != "split" and pairs}
    log(f"parallel: {len(sides['train'])} pair(s) of {source} with "
        f"{', '.join(s for s in singers[1:])} to train on, {len(sides['held'])} held out"
        + (f", {len(sides['split'])} left out (one song of each held out)" if sides["split"]
           else ""))
    return aligned["train"], aligned.get("held")


def run_outputs(config: Config) -> Tuple[Tuple[str, str], ...]:
    """``(flag, folder)`` of every folder a training run writes."""
    return (("--output_dir", config.output_dir), ("--checkpoint_dir", config.checkpoint_dir),
            ("--logdir", config.logdir), ("--records_dir", config.records_dir))


def _same(a: FeatureStats, b: FeatureStats) -> bool:
    return bool(np.array_equal(a.mean, b.mean) and np.array_equal(a.std, b.std))


def parallel_singers(config: Config, labels: Tuple[str, ...]) -> Tuple[str, ...]:
    """A fresh parallel run's singer map: the first ``--data_dir``'s singer (the source) first,
    then the others in sorted order.

    Raises:
        DataError: no ``--data_dir`` (nothing names the source), or its singer is not in the
            records.
    """
    if not config.data_dirs:
        raise DataError("--parallel needs --data_dir folders: the first one names the source "
                        "singer")
    source = os.path.basename(os.path.normpath(os.path.abspath(config.data_dirs[0])))
    if source not in labels:
        raise DataError(f"the parallel source singer {source!r} (the first --data_dir) has no "
                        "song in the records")
    return (source,) + tuple(label for label in labels if label != source)


def _singers(config: Config, records: Records, resuming: bool,
             source: Optional[str]) -> Tuple[str, ...]:
    """The singer map of a conditional run: the checkpoint's when it resumes, ``--init_from``'s
    when it fine-tunes (refusing records with a singer that map does not know), else the
    records' labels in sorted order."""
    folder = config.checkpoint_dir if resuming else source
    saved = read_singers(folder) if folder is not None else None
    if saved is None and source is not None:
        raise CheckpointMismatch(f"--init_from {source} is a conditional run without its "
                                 "singers.json")
    if saved is None and config.parallel:
        return parallel_singers(config, records.labels)
    if saved is None:
        return records.labels
    check_singers(saved, records.labels, folder)
    return saved

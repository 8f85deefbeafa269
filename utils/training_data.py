"""The data a training run uses, settled once before the trainer is built.

:func:`prepare_training_data` brings the records up to date with ``config.data_dirs`` (on the chief
worker; the others wait at a barrier and read what it wrote, on shared storage), opens them, and
chooses the feature normalisation: the statistics saved beside the checkpoint when the run resumes
(so the model keeps seeing what it was trained on), else the records' own. The result never
changes during the run.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf

from common_definitions import Config
from data_loader import Records, SongDataLoader
from utils.distribute import Collectives
from utils.features import FeatureStats
from utils.run_folder import check_singers, check_checkpoint_dir, read_singers, saved_feature_stats


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The records a run trains on (None for a run fed batches by hand, e.g. a benchmark), the
    :class:`FeatureStats` its patches are normalised with, and for a conditional model its
    singer map (names in id order; empty when unconditional)."""

    records: Optional[Records]
    stats: FeatureStats
    singers: Tuple[str, ...] = ()

    def batches(self, config: Config, seed: int) -> tf.data.Dataset:
        """Endless training batches seeded by ``seed``: patches ``(B, H, W, C)`` normalised with
        :attr:`stats`, and for a conditional run ``(patches, singer ids (B,) int32)``."""
        if self.records is None:
            raise ValueError("this run was given no records; feed it batches by hand")
        dataset = self.records.training_dataset(config.batch_size, seed, self.stats,
                                                labels=bool(self.singers))
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
    """Make (incrementally) and open the records of ``config``; pick the normalisation.

    Raises:
        DataError: missing or empty folders, or no usable song in the records.
        CheckpointMismatch: the checkpoint's ``feature_stats.json`` or ``singers.json`` cannot
            be read, or the records hold a singer the conditional checkpoint does not know.
    """
    loader = loader or SongDataLoader(config)
    chief = collectives.task.is_chief
    if config.data_dirs:
        if chief:
            loader.make(config.data_dirs, config.records_dir, log=log)
        collectives.barrier()
    records = loader.records(config.records_dir)
    singers = _singers(config, records) if config.conditional else ()
    own = records.stats()
    saved = saved_feature_stats(config)
    if saved is None:
        return TrainingData(records, own, singers)
    if chief and not (np.array_equal(saved.mean, own.mean) and np.array_equal(saved.std, own.std)):
        log("the records' feature statistics changed since the checkpoint was written; "
            "normalising with the checkpoint's")
    return TrainingData(records, saved, singers)


def _singers(config: Config, records: Records) -> Tuple[str, ...]:
    """The singer map of a conditional run: the checkpoint's when it resumes (refusing records
    with a singer it does not know), else the records' labels in sorted order."""
    saved = read_singers(config.checkpoint_dir) if check_checkpoint_dir(config) else None
    if saved is None:
        return records.labels
    check_singers(saved, records.labels, config.checkpoint_dir)
    return saved

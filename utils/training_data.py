"""The data a training run uses, settled once before the trainer is built.

:func:`prepare_training_data` brings the records up to date with ``config.data_dirs`` (on the chief
worker; the others wait at a barrier and read what it wrote, on shared storage), opens them, and
chooses the feature normalisation: the statistics saved beside the checkpoint when the run resumes
(so the model keeps seeing what it was trained on), else the records' own. The result never
changes during the run.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from common_definitions import Config
from data_loader import Records, SongDataLoader
from utils.distribute import Collectives
from utils.features import FeatureStats
from utils.run_folder import saved_feature_stats


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The records a run trains on (None for a run fed batches by hand, e.g. a benchmark) and
    the :class:`FeatureStats` its patches are normalised with."""

    records: Optional[Records]
    stats: FeatureStats


def prepare_training_data(config: Config, collectives: Collectives,
                          loader: Optional[SongDataLoader] = None,
                          log: Callable[[str], None] = print) -> TrainingData:
    """Make (incrementally) and open the records of ``config``; pick the normalisation.

    Raises:
        DataError: missing or empty folders, or no usable song in the records.
        CheckpointMismatch: the checkpoint's ``feature_stats.json`` cannot be read.
    """
    loader = loader or SongDataLoader(config)
    chief = collectives.task.is_chief
    if config.data_dirs:
        if chief:
            loader.make(config.data_dirs, config.records_dir, log=log)
        collectives.barrier()
    records = loader.records(config.records_dir)
    own = records.stats()
    saved = saved_feature_stats(config)
    if saved is None:
        return TrainingData(records, own)
    if chief and not (np.array_equal(saved.mean, own.mean) and np.array_equal(saved.std, own.std)):
        log("the records' feature statistics changed since the checkpoint was written; "
            "normalising with the checkpoint's")
    return TrainingData(records, saved)

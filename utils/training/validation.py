"""The validation curve of a training run and what it steers: which songs are held out, their
bits/dim every epoch, the best weights, and early stopping.

The split (:class:`ValidationSplit`, chosen by :func:`settle_split` before the trainer is built):

- ``--validation_dir DIR`` (repeatable): the songs under those folders are held out (they are
  made into the records with the ``--data_dir`` folders; labelled by their folder's name).
- else ``--validation_split F`` (default 0.1; 0 turns it off): whole songs, per label (singer):
  a label of ``n >= 2`` songs holds out ``min(n - 1, max(1, round(F * n)))`` of them, a label of
  one song none. Which ones is fixed by a hash of the label and the file's name, not by the
  seed or the folder the corpus sits in: runs with other seeds, or the same corpus on another
  machine, hold out the same songs and their curves compare.
- The split is saved as ``validation.json`` beside the checkpoint before the first checkpoint is
  written; a resumed run keeps it whatever its flags now say (a line says so when they differ), so
  a held-out song is never trained on. Songs added to the records later are training songs.
  A run folder written before validation existed holds no ``validation.json``: it was trained on
  every song, so on resume only ``--validation_dir`` songs are held out.

Every epoch, :class:`Validator` computes the mean bits/dim over *every aligned patch* of the
held-out songs (``Records.evaluation_dataset``: consecutive windows from each song's start, the
tail shorter than a patch left out) with the float32 model, whatever ``--mixed_precision`` trains
in. With several workers each computes it on its own (the data and weights are the same) and the
value is then averaged over the replicas of every worker, so all of them take the same decisions.

:class:`Steering` writes ``val_bits_per_dim`` and ``val_nll`` (nats per patch) to TensorBoard,
keeps the weights of the lowest one in ``checkpoint_dir/best/`` (a complete run folder, see
:meth:`utils.runs.run_folder.RunFolder.write_best`) and, with ``--early_stopping_patience N``, ends
training after ``N`` epochs without a lower one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Callable, Dict, List, Optional, Tuple

import tensorflow as tf

from common_definitions import Config
from utils.data.shards import DataError
from utils.errors import one_line
from utils.files import atomic_write_text
from utils.runs.run_folder import VALIDATION_NAME, CheckpointMismatch

LN2 = math.log(2.0)
SPLIT_VERSION = 1


# ---------------------------------------------------------------------------------- the split
@dataclasses.dataclass(frozen=True)
class ValidationSplit:
    """The songs a run holds out of training to validate on.

    held_out: source paths (as the records' manifest names them), sorted.
    how: ``"split"`` (``fraction`` of each label), ``"dirs"`` (the songs under ``dirs``) or
        ``"none"`` (nothing held out).
    """

    held_out: Tuple[str, ...] = ()
    how: str = "none"
    fraction: float = 0.0
    dirs: Tuple[str, ...] = ()

    def present(self, records) -> Tuple[str, ...]:
        """The held-out songs that the records (a :class:`~utils.data.records.Records`) hold."""
        return tuple(path for path in self.held_out if path in records.song_labels)

    def training_songs(self, records) -> Optional[Tuple[str, ...]]:
        """Every song of the records but the held-out ones; None when nothing is held out."""
        if not self.held_out:
            return None
        held = set(self.held_out)
        return tuple(sorted(path for path in records.song_labels if path not in held))

    def to_dict(self) -> dict:
        return {"version": SPLIT_VERSION, "how": self.how, "validation_split": self.fraction,
                "validation_dirs": list(self.dirs), "held_out": list(self.held_out)}

    def save(self, path: str) -> None:
        """Write it as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str) -> "ValidationSplit":
        """Read :meth:`save`'s file (:class:`CheckpointMismatch` when it cannot be read)."""
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            if data.get("version") != SPLIT_VERSION or data["how"] not in ("split", "dirs", "none"):
                raise ValueError("not a validation split of this version")
            return cls(tuple(sorted(str(p) for p in data["held_out"])), data["how"],
                       float(data["validation_split"]), tuple(data["validation_dirs"]))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointMismatch(f"cannot read {path}: {one_line(error)}") from None

    def describe(self, records) -> str:
        """One line: how many songs of which labels are held out, and how they were chosen."""
        present = self.present(records)
        counts: Dict[str, int] = {}
        for path in present:
            label = records.song_labels[path]
            counts[label] = counts.get(label, 0) + 1
        per_label = ", ".join(f"{label} {n}" for label, n in sorted(counts.items()))
        how = (f"--validation_split {self.fraction:g}" if self.how == "split" else
               "--validation_dir " + " ".join(self.dirs))
        return (f"validation: {len(present)} held-out song(s) ({per_label}) of "
                f"{len(records.song_labels)}, by {how}; never trained on")


def _rank_key(path: str, label: Optional[str]) -> Tuple[str, str]:
    """Where a song falls in its label's hash order: by label and file name, then path; with no
    label, by the file name without its extension alone (the same rank in every label)."""
    base = os.path.basename(path)
    name = f"{label}/{base}" if label is not None else os.path.splitext(base)[0]
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest(), path


def held_out_per_label(song_labels: Dict[str, str], fraction: float, paired: bool = False
                       ) -> Tuple[str, ...]:
    """The songs a ``fraction`` split holds out of ``song_labels`` (path -> label), sorted.

    A label of ``n >= 2`` songs gives ``min(n - 1, max(1, floor(fraction * n + 0.5)))`` of its
    songs (the first in hash order, :func:`_rank_key`); a label of one song gives none. Nothing
    is held out when ``fraction`` is 0. ``paired`` (a parallel run) ranks by file name alone, so
    the renditions of one melody in singers' folders of the same songs are held out together.
    """
    if fraction <= 0:
        return ()
    by_label: Dict[str, List[str]] = {}
    for path, label in song_labels.items():
        by_label.setdefault(label, []).append(path)
    held: List[str] = []
    for label, paths in by_label.items():
        if len(paths) < 2:
            continue
        count = min(len(paths) - 1, max(1, math.floor(fraction * len(paths) + 0.5)))
        held.extend(sorted(paths, key=lambda p: _rank_key(p, None if paired else label))[:count])
    return tuple(sorted(held))


def _under(path: str, folder: str) -> bool:
    root = os.path.normpath(os.path.abspath(folder))
    return os.path.normpath(path).startswith(root + os.sep)


def choose_split(config: Config, records) -> ValidationSplit:
    """The split ``config`` asks for on ``records`` (a fresh run).

    Raises:
        DataError: a ``--validation_dir`` none of whose songs is in the records, every song held
            out, or (conditional model) a singer whose songs are all held out.
    """
    labels = records.song_labels
    if config.validation_dirs:
        held = []
        for folder in config.validation_dirs:
            songs = [path for path in labels if _under(path, folder)]
            if not songs:
                raise DataError(
                    f"no song of --validation_dir {folder} is in the records in "
                    f"{records.records_dir}; give the --data_dir folders too, so that train.py "
                    "makes records of both")
            held.extend(songs)
        split = ValidationSplit(tuple(sorted(set(held))), "dirs", 0.0,
                                tuple(config.validation_dirs))
    elif config.validation_split > 0:
        split = ValidationSplit(held_out_per_label(labels, config.validation_split,
                                                   config.parallel), "split",
                                float(config.validation_split))
    else:
        return ValidationSplit()
    if len(split.held_out) >= len(labels):
        raise DataError("every song of the records is held out for validation: give "
                        "--data_dir folders of training songs besides --validation_dir")
    trained = {labels[path] for path in split.training_songs(records) or ()}
    untrained = sorted({labels[path] for path in split.held_out} - trained)
    if config.conditional and untrained:
        raise DataError(f"every song of the singer(s) {', '.join(untrained)} is held out for "
                        "validation: a conditional model needs training songs of each singer")
    return split


def settle_split(config: Config, records, resuming: bool,
                 log: Callable[[str], None] = print) -> ValidationSplit:
    """The split of this run: the saved one when it resumes (see the module docstring), else
    :func:`choose_split`'s. Logs what it holds out."""
    path = os.path.join(config.checkpoint_dir, VALIDATION_NAME)
    if resuming and os.path.isfile(path):
        split = ValidationSplit.load(path)
        asked = choose_request(config)
        if asked != (split.how, split.fraction, split.dirs):
            log(f"keeping the validation split saved in {path} ({split.how}); the flags of a "
                "resumed run do not change it")
        missing = len(split.held_out) - len(split.present(records))
        if missing:
            log(f"validation: {missing} held-out song(s) are no longer in the records")
    elif resuming:
        split = (choose_split(config, records) if config.validation_dirs else ValidationSplit())
        if not config.validation_dirs:
            log(f"{config.checkpoint_dir} holds no {VALIDATION_NAME}: this run was trained on "
                "every song, so none is held out now; give --validation_dir with songs it never "
                "saw for a validation curve")
    else:
        split = choose_split(config, records)
    if split.held_out and split.present(records):
        log(split.describe(records))
    elif split.how == "split" and not split.held_out:
        log("validation: no song held out (no label has two songs); give --validation_dir for "
            "a validation curve")
    return split


def choose_request(config: Config) -> Tuple[str, float, Tuple[str, ...]]:
    """``(how, fraction, dirs)`` that ``config``'s flags ask for."""
    if config.validation_dirs:
        return "dirs", 0.0, tuple(config.validation_dirs)
    if config.validation_split > 0:
        return "split", float(config.validation_split), ()
    return "none", 0.0, ()


# ---------------------------------------------------------------------------------- the curve
@dataclasses.dataclass(frozen=True)
class ValidationMetrics:
    """One epoch's validation: ``bits_per_dim`` (mean over the held-out patches), ``nll`` (nats
    per patch), the number of ``patches``, and whether it is the lowest so far (``best``)."""

    bits_per_dim: float
    nll: float
    patches: int
    best: bool = False


class Validator:
    """The mean bits/dim of the current weights over every aligned patch of the held-out songs.

    Args:
        model: the :class:`model.Glow` (its float32 ``encode``).
        config: the run's configuration (``dims`` is the D of bits/dim).
        dataset: one pass of held-out batches ``(B, H, W, C)`` (with singer ids ``(B,)`` for a
            conditional model, and the source's frames for a parallel one), e.g. :meth:`utils.training.data.TrainingData.validation_batches`.
        collectives: the run's :class:`utils.training.distribute.Collectives`.
    """

    def __init__(self, model, config: Config, dataset: tf.data.Dataset, collectives):
        self.model, self.config, self.dataset = model, config, dataset
        self.collectives = collectives
        self._labelled = isinstance(dataset.element_spec, tuple)
        self._sums = tf.function(self._sums_fn)
        self._mean_over_replicas = tf.function(self._mean_fn)

    def _sums_fn(self):
        """Sum of bits/dim (float64) and number of patches over the dataset."""
        from model import standard_normal_log_prob

        total = tf.constant(0.0, tf.float64)
        count = tf.constant(0.0, tf.float64)
        for batch in self.dataset:
            # (x), (x, singer ids) or a parallel run's (x, singer ids, source frames).
            x, *given = batch if self._labelled else (batch,)
            z, logdet = self.model.encode(x, *given)
            bits = -(standard_normal_log_prob(z) + logdet) / (self.config.dims * LN2)
            total += tf.reduce_sum(tf.cast(bits, tf.float64))
            count += tf.cast(tf.shape(bits)[0], tf.float64)
        return tf.stack([total, count])

    def _mean_fn(self, values):
        strategy = self.collectives.strategy
        per_replica = strategy.run(lambda: tf.identity(values))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    def __call__(self) -> ValidationMetrics:
        """This epoch's :class:`ValidationMetrics` (``best`` is left False). Every worker must
        call it (several workers average their values in a collective)."""
        values = self._sums()
        if self.collectives.num_workers > 1:
            values = self._mean_over_replicas(tf.cast(values, tf.float32))
        total, count = (float(v) for v in values.numpy())
        bits = total / count if count else math.nan
        return ValidationMetrics(bits, bits * self.config.dims * LN2, int(round(count)))


class Steering:
    """What the validation curve decides at each epoch's end: TensorBoard's ``val_*`` scalars,
    ``best/`` and early stopping.

    ``trainer`` is the :class:`pipeline.Trainer` being steered (its model, configuration, data,
    collectives, run folder and report are used); ``resumed``: it restored a checkpoint, so the
    best so far is read back from ``best/best.json``. Without held-out songs it does nothing and
    :meth:`end_epoch` returns None.
    """

    def __init__(self, trainer, resumed: bool):
        self.trainer = trainer
        config = trainer.config
        dataset = trainer.data.validation_batches(config)
        self.validator = (Validator(trainer.model, config, dataset, trainer.collectives)
                          if dataset is not None else None)
        self.best: Optional[dict] = trainer.run_folder.best_record() if resumed else None
        if self.validator is None and config.early_stopping_patience:
            trainer.report.log("no held-out songs: --early_stopping_patience has no curve to "
                               "watch and never stops the run")

    @property
    def validates(self) -> bool:
        return self.validator is not None

    def end_epoch(self, step: int) -> Optional[ValidationMetrics]:
        """Validate the weights at ``step`` (an epoch's end); write the scalars and, when it is
        the lowest validation bits/dim so far, replace ``best/``. Every worker calls it."""
        if self.validator is None:
            return None
        trainer = self.trainer
        metrics = self.validator()
        improved = math.isfinite(metrics.bits_per_dim) and (
            self.best is None or metrics.bits_per_dim < self.best["val_bits_per_dim"])
        trainer.report.validation(step, metrics)
        if improved:
            epoch = step // trainer.config.steps_per_epoch
            self.best = {"step": step, "epoch": epoch, "val_bits_per_dim": metrics.bits_per_dim,
                         "val_nll": metrics.nll, "patches": metrics.patches}
            trainer.run_folder.write_best(trainer.model, trainer.stats, trainer.singers, self.best)
        return dataclasses.replace(metrics, best=improved)

    def stop_message(self, step: int) -> Optional[str]:
        """Why training stops early at ``step`` (an epoch's end), or None to go on."""
        patience = self.trainer.config.early_stopping_patience
        if not patience or self.validator is None or self.best is None:
            return None
        steps_per_epoch = self.trainer.config.steps_per_epoch
        waited = (step - self.best["step"]) // steps_per_epoch
        if waited < patience:
            return None
        best = os.path.join(self.trainer.config.checkpoint_dir, "best")
        return (f"early stopping at epoch {step // steps_per_epoch} (step {step}): no lower "
                f"validation bits/dim for {waited} epoch(s) since {self.best['val_bits_per_dim']:.4f} "
                f"at epoch {self.best['epoch']} (step {self.best['step']}); those weights are in "
                f"{best}")

    def finished(self, start: int, total: int) -> Optional[str]:
        """Why a run at step ``start`` has nothing to train (already at ``total`` steps, or
        stopped early and still out of patience), or None."""
        if start >= total:
            return (f"already trained to step {start} (epochs * steps_per_epoch = {total}); "
                    "raise --epochs to train on")
        message = self.stop_message(start) if start % self.trainer.config.steps_per_epoch == 0 \
            else None
        return message and f"{message}; raise --early_stopping_patience to train on"


__all__ = ["ValidationSplit", "ValidationMetrics", "Validator", "Steering", "choose_split",
           "settle_split", "held_out_per_label"]

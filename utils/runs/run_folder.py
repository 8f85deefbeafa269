"""Run folders: the files of a trained run, checked and restored, apart from training.

A checkpoint folder (``config.checkpoint_dir``) written by ``train.py``::

    config.json            the Config of the run; a checkpoint is only ever restored under a
                           Config whose model fields agree
    feature_stats.json     the FeatureStats the training data was normalised with
    singers.json           a conditional model's singer map (names in id order)
    validation.json        the songs held out of training (utils/training/validation.py), kept
                           on resume
    checkpoint, ckpt-N.*   tf.train.Checkpoint(model, optimizer, step, skipped_steps) and the
                           digest of feature_stats.json (feature_stats_digest), N = step
    glow.weights.h5        the model weights alone (Keras), written at the end of training
    best/                  the weights of the lowest validation bits/dim so far, as a run folder
                           of its own: config.json, feature_stats.json, [singers.json],
                           glow.weights.h5 and best.json (step, epoch, val_bits_per_dim,
                           val_nll, feature_stats_digest); every --checkpoint_dir reader
                           accepts it
    .lock                  while a training run writes the folder (utils/locks.py)

This module reads and writes those files; the trainer (``pipeline.py``) saves checkpoints through
it, and inference (``migrate.py``, ``evaluate.py``, the notebooks) loads a run through
:func:`load_for_inference` without importing any training code. Checkpoints are found on disk,
not through the index alone, and a damaged one is skipped for the previous one
(:mod:`utils.runs.checkpoint_files`); ``feature_stats.json`` is checked against the digest every
checkpoint (and ``best.json``) records; a training run holds the folder's lock
(:mod:`utils.locks`); a write that fails (a full disk, a read-only folder) ends the run with
:class:`SaveFailed`, the last good checkpoint intact. See design/training.md, "Run folders that
heal or refuse".
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import warnings
from typing import Optional, Sequence, Tuple

import tensorflow as tf

from common_definitions import Config
from model import Glow
from utils.audio.features import FeatureStats
from utils.errors import SinGlowError, one_line
from utils.files import (WriteFailed, atomic_write, atomic_write_text, replace_folder,
                         settle_folder)
from utils.locks import FolderLock
from utils.runs.checkpoint_files import (  # noqa: F401 (re-exported: the names of the files)
    BEST_DIGEST,
    BEST_RECORD,
    DIGEST_NAME,
    STATS_NAME,
    WEIGHTS_NAME,
    CheckpointDamaged,
    CheckpointMismatch,
    check_model_matches,
    check_stats_tie,
    discard_failed_save,
    find_checkpoints,
    read_index,
    restore_model,
    restore_newest,
    saved_model_variables,
    stats_digest,
    step_of,
    write_index,
)
from utils.runs.codec import Codec

CONFIG_NAME = "config.json"
# The singer map of a conditional model: {"singers": [name of id 0, name of id 1, ...]}.
SINGERS_NAME = "singers.json"
VALIDATION_NAME = "validation.json"
BEST_NAME = "best"
# The holder named in the lock file of a checkpoint folder that a training run writes.
LOCK_PROGRAM = "train.py"
_EXPORT_SCRATCH = ".glow-export-"


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """This process in its cluster: the chief writes files and logs; ``index`` is its worker
    number in ``[0, num_workers)`` (the chief is 0). Only the chief writes the run folder
    (:func:`utils.training.distribute.task_info` finds it under a strategy)."""

    is_chief: bool = True
    index: int = 0
    num_workers: int = 1


class SaveFailed(SinGlowError):
    """Writing into the run folder failed (a full disk, a read-only or unwritable folder): the
    run ends (exit status 1); the one-line message names the path, the OS error, what to do
    and the last good checkpoint, which a rerun resumes from."""


def writer_lock(folder: str, task: TaskInfo = TaskInfo(), create: bool = True):
    """The lock of the one run that writes ``folder`` (a context manager): a
    :class:`utils.locks.FolderLock` on the chief; nothing on the other workers (they write no
    file there) nor, with ``create=False``, for a folder that does not exist yet (so a run
    refused early leaves no folder behind).

    Raises (on entering):
        FolderLocked: another live training run holds the folder (a RefusedError).
    """
    if not task.is_chief or (not create and not os.path.isdir(folder)):
        return contextlib.nullcontext()
    return FolderLock(folder, LOCK_PROGRAM)


def check_unlocked(folder: str, task: TaskInfo = TaskInfo()) -> None:
    """Refuse, before any work, a checkpoint folder that another live training run holds
    (:class:`utils.locks.FolderLocked`); a lock left by a process that is gone is taken over
    with one warning line, then released. A folder that does not exist is not created."""
    with writer_lock(folder, task, create=False):
        pass


def read_checkpoint_config(checkpoint_dir: str) -> Optional[Config]:
    """The Config saved in ``checkpoint_dir/config.json``, or None when there is none."""
    path = os.path.join(checkpoint_dir, CONFIG_NAME)
    if not os.path.isfile(path):
        return None
    try:
        return Config.load(path)
    except (OSError, ValueError, TypeError) as error:
        raise CheckpointMismatch(f"{path} is not a readable SinGlow config: {one_line(error)}") from None


def check_checkpoint_dir(config: Config) -> Optional[str]:
    """Refuse a checkpoint folder whose checkpoints cannot be resumed under ``config``.

    Applies whenever the folder holds a ``ckpt-N``, an index file or a ``config.json``, whatever
    the state of the index (checkpoints are found on disk: :mod:`utils.runs.checkpoint_files`).
    Returns the checkpoint a resume starts from (the index's latest, else the newest on disk;
    the trainer falls back from a damaged one), None when there is none.

    Raises:
        CheckpointMismatch: the saved ``config.json`` differs in a model field (named in the
            message) or cannot be read, or ``feature_stats.json`` is not the one the
            checkpoints were trained with.
        CheckpointDamaged: the folder holds an index file but no checkpoint files.
    """
    folder = config.checkpoint_dir
    found = find_checkpoints(folder)
    if found.on_disk or found.has_index or os.path.isfile(os.path.join(folder, CONFIG_NAME)):
        saved = read_checkpoint_config(folder)
        if saved is not None:
            problems = config.incompatibilities(saved)
            if problems:
                raise CheckpointMismatch(
                    f"the checkpoint in {folder} is of another model configuration: "
                    f"{', '.join(problems)}; pass matching flags or use another --checkpoint_dir"
                )
    if not found.candidates:
        if found.has_index:
            raise CheckpointDamaged(
                f"{found.index_path} is {found.problem} and {folder} holds no ckpt-N files")
        return None
    stats_path = os.path.join(folder, STATS_NAME)
    if os.path.isfile(stats_path):
        check_stats_tie(folder, _load_stats(stats_path))
    return found.candidates[0]


def _load_stats(path: str, what: str = "") -> FeatureStats:
    try:
        return FeatureStats.load(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointMismatch(f"{what}cannot read {path}: {one_line(error)}") from None


def read_singers(checkpoint_dir: str) -> Optional[Tuple[str, ...]]:
    """The singer names of a conditional run (index = the model's singer id), or None when the
    folder holds no ``singers.json``."""
    path = os.path.join(checkpoint_dir, SINGERS_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            singers = json.load(handle)["singers"]
        if not singers or not all(isinstance(name, str) for name in singers) or len(
                set(singers)) != len(singers):
            raise ValueError("expected a list of distinct singer names")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointMismatch(f"cannot read {path}: {one_line(error)}") from None
    return tuple(singers)


def write_singers(checkpoint_dir: str, singers) -> None:
    """Save the singer map of a conditional run (atomically)."""
    atomic_write_text(os.path.join(checkpoint_dir, SINGERS_NAME),
                      json.dumps({"singers": list(singers)}, indent=1) + "\n")


def check_singers(saved: Sequence[str], labels: Sequence[str], where: str) -> None:
    """Refuse records holding a singer that the saved map of a conditional run lacks."""
    unknown = sorted(set(labels) - set(saved))
    if unknown:
        raise CheckpointMismatch(
            f"the conditional checkpoint in {where} knows the singers {', '.join(saved)}; the "
            f"records also hold {', '.join(unknown)}: train those in another --checkpoint_dir")


def saved_feature_stats(config: Config) -> Optional[FeatureStats]:
    """The ``feature_stats.json`` beside the checkpoints of ``config.checkpoint_dir``, or None
    when the folder holds no checkpoint or no such file (a fresh run normalises with its
    records' statistics)."""
    path = os.path.join(config.checkpoint_dir, STATS_NAME)
    # check_checkpoint_dir also refuses a file that the checkpoints' digest does not match.
    if check_checkpoint_dir(config) is None or not os.path.isfile(path):
        return None
    return _load_stats(path)


def check_init_from(config: Config) -> Optional[str]:
    """Refuse ``config.init_from`` unless it is a run folder of the same model; returns it
    (None without ``--init_from``).

    Raises:
        FileNotFoundError: the folder, its config.json or its weights are missing.
        CheckpointMismatch: a model field differs (each named, on one line), or the folder is
            ``checkpoint_dir`` itself.
    """
    source = config.init_from
    if source is None:
        return None
    if os.path.abspath(source) == os.path.abspath(config.checkpoint_dir):
        raise CheckpointMismatch(f"--init_from {source} is --checkpoint_dir itself: rerun "
                                 "without --init_from to resume that run")
    if not os.path.isdir(source):
        raise FileNotFoundError(f"--init_from {source}: run folder not found")
    saved = read_checkpoint_config(source)
    if saved is None:
        raise FileNotFoundError(f"--init_from {source} holds no {CONFIG_NAME}: not a run folder "
                                "written by train.py")
    problems = config.incompatibilities(saved)
    if problems:
        raise CheckpointMismatch(f"--init_from {source} is a run of another model configuration: "
                                 f"{', '.join(problems)}; pass matching model flags")
    if not find_checkpoints(source).candidates and not os.path.isfile(
            os.path.join(source, WEIGHTS_NAME)):
        raise FileNotFoundError(f"--init_from {source} holds no checkpoint and no {WEIGHTS_NAME}")
    return source


def init_from_stats(config: Config) -> FeatureStats:
    """The ``feature_stats.json`` of ``config.init_from`` (a fine-tuning run normalises with it
    unless ``--renormalize``), refused unless its weights were trained with it."""
    path = os.path.join(config.init_from, STATS_NAME)
    stats = _load_stats(path, "--init_from: ")
    if not stats.matches(config):
        raise CheckpointMismatch(f"--init_from: {path} was computed under other feature settings")
    check_stats_tie(config.init_from, stats, what="--init_from: ")
    return stats


class RunFolder:
    """The checkpoint folder of a training run: numbered checkpoints and the files beside them.

    ``checkpoint`` is the run's ``tf.train.Checkpoint`` (model, optimizer, step, skipped_steps);
    checkpoints are numbered by ``step``. Each one saved also holds ``feature_stats_digest``
    (:func:`utils.runs.checkpoint_files.stats_digest` of the run's normalisation), which restoring
    leaves alone, so checkpoints written before it restore as they did. Only the chief worker
    writes into the folder; the other workers take part in every save (a multi-worker save may
    run collectives) but write to a scratch folder that is removed at once. Every write that
    fails raises :class:`SaveFailed` (one line: the path, the OS error, the last good
    checkpoint) with its temporary files removed.

    Attributes:
        last_checkpoint: the checkpoint last written or restored (None before either).
        last_saved_step: the step of that checkpoint (-1 before either).
    """

    def __init__(self, config: Config, checkpoint: tf.train.Checkpoint, step: tf.Variable,
                 task: TaskInfo = TaskInfo()):
        self.config = config
        self.checkpoint = checkpoint
        self.step = step
        self.task = task
        self._manager: Optional[tf.train.CheckpointManager] = None
        self.last_checkpoint: Optional[str] = None
        self.last_saved_step = -1
        with tf.device("/cpu:0"):
            self._digest = tf.Variable(0, dtype=tf.int64, trainable=False, name=DIGEST_NAME)
        # What is saved: the checkpoint's objects and the digest. Restoring uses ``checkpoint``
        # alone, which ignores the digest, so a checkpoint without one still matches.
        parts = dict(tf.train.TrackableView(checkpoint).children(checkpoint))
        parts.pop("save_counter", None)  # each tf.train.Checkpoint keeps its own
        self._saved = tf.train.Checkpoint(**parts, **{DIGEST_NAME: self._digest})

    @property
    def path(self) -> str:
        return self.config.checkpoint_dir

    @property
    def manager(self) -> tf.train.CheckpointManager:
        """The CheckpointManager of the folder (created on first use: it creates the folder)."""
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(
                self._saved, self.path, self.config.max_checkpoints, step_counter=self.step)
        return self._manager

    def writing(self):
        """The folder's lock for the whole of a training run (see :func:`writer_lock`)."""
        return writer_lock(self.path, self.task)

    # ------------------------------------------------------------------ restoring
    def _restore(self, model: Glow, path: str) -> None:
        """Restore ``path``; a damaged file raises one of ``DAMAGE_ERRORS``, a checkpoint of
        another model :class:`CheckpointMismatch`."""
        check_model_matches(model, path)
        try:
            # Every object of the run must be found; the digest, which ``checkpoint`` does not
            # hold, is read apart (expect_partial: no log lines about it).
            self.checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
        except AssertionError as error:
            raise CheckpointMismatch(f"cannot restore {path}: {one_line(error)}") from None
        self.last_checkpoint = path
        self.last_saved_step = int(self.step.numpy())

    def resume(self, model: Glow, stats: Optional[FeatureStats]) -> Optional[str]:
        """Restore the newest checkpoint of the folder that can be read; returns its path (None
        when the folder holds none).

        Checkpoints are found on disk (:func:`utils.runs.checkpoint_files.find_checkpoints`): with a
        missing, garbled or stale index file, or a damaged newest checkpoint, one warning line
        each says which checkpoint the run resumes from, and the chief rewrites the index to
        name it (holding the folder's lock; the manager then keeps and deletes checkpoints as
        before).

        Raises:
            CheckpointDamaged: no checkpoint can be read.
            CheckpointMismatch: another model, or ``stats`` are not the normalisation the
                checkpoint records (checked before the index is rewritten).
            SaveFailed: the index cannot be rewritten.
            FolderLocked: another live run took the folder meanwhile.
        """
        found = find_checkpoints(self.path)
        warn = warnings.warn if self.task.is_chief else (lambda _: None)
        path = restore_newest(found, lambda prefix: self._restore(model, prefix), warn)
        if path is None:
            return None
        if stats is not None:
            check_stats_tie(self.path, stats, path)
        if self.task.is_chief and (found.problem or path != found.candidates[0]):
            kept = [prefix for step, prefix in found.on_disk if step <= step_of(path)]
            with self.writing(), self._writing(found.index_path):
                write_index(self.path, path, kept)
        if found.problem:
            warn(f"{found.index_path} is {found.problem}: resuming from "
                 f"{os.path.basename(path)} found on disk")
        return path

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _writing(self, path: str):
        """Turn a failed write of ``path`` into :class:`SaveFailed`."""
        try:
            yield
        except (OSError, tf.errors.OpError) as error:
            raise self._failed(path, error) from None

    def _failed(self, path: str, error: BaseException) -> SaveFailed:
        if isinstance(error, WriteFailed):  # already names the file and what to do
            core = str(error)
        elif isinstance(error, OSError):
            core = str(WriteFailed.of(path, error))
        else:  # TensorFlow's own file errors
            core = (f"cannot write {path}: {one_line(getattr(error, 'message', error), 200)}; "
                    "free some space or choose a writable location and run again")
        last = read_index(self.path)[1] or self.last_checkpoint
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        return SaveFailed(f"{core}; {kept}")

    def write_run_files(self, stats: Optional[FeatureStats], singers: Sequence[str] = (),
                        split=None) -> None:
        """Write ``config.json``, ``feature_stats.json``, a conditional run's ``singers.json``
        and, when given, the validation ``split`` (a
        :class:`utils.training.validation.ValidationSplit`) as ``validation.json`` (chief only;
        each atomically)."""
        if not self.task.is_chief:
            return
        with self._writing(self.path):
            os.makedirs(self.path, exist_ok=True)
        writes = [(CONFIG_NAME, self.config.save)]
        if stats is not None:
            writes.append((STATS_NAME, stats.save))
        if singers:
            writes.append((SINGERS_NAME, lambda _: write_singers(self.path, singers)))
        if split is not None:
            writes.append((VALIDATION_NAME, split.save))
        for name, write in writes:
            path = os.path.join(self.path, name)
            with self._writing(path):
                write(path)

    # ------------------------------------------------------------------ best/
    @property
    def best_path(self) -> str:
        return os.path.join(self.path, BEST_NAME)

    def best_record(self) -> Optional[dict]:
        """``best/best.json`` (``step``, ``epoch``, ``val_bits_per_dim``, ``val_nll``,
        ``patches``) or None when the folder has no best weights yet."""
        if self.task.is_chief:
            settle_folder(self.best_path)  # a crash inside a replacement: put the old one back
        try:
            with open(os.path.join(self.best_path, BEST_RECORD), encoding="utf-8") as handle:
                record = json.load(handle)
            float(record["val_bits_per_dim"]), int(record["step"]), int(record["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return record

    def write_best(self, model: Glow, stats: FeatureStats, singers: Sequence[str],
                   record: dict) -> Optional[str]:
        """Replace ``best/`` by a complete run folder of ``model``'s current weights: its
        ``config.json`` (this run's, ``checkpoint_dir`` pointing at it), ``feature_stats.json``,
        a conditional run's ``singers.json``, ``glow.weights.h5`` and ``best.json``
        (``record`` and the digest of ``stats``). Chief only (None on the other workers).

        Never partial: built in a scratch folder and swapped in whole by
        :func:`utils.files.replace_folder` (a crash between its two renames is put right by the
        next :meth:`best_record` or :meth:`write_best`).
        """
        if not self.task.is_chief:
            return None

        def build(scratch: str) -> None:
            self.config.replace(checkpoint_dir=self.best_path).save(
                os.path.join(scratch, CONFIG_NAME))
            stats.save(os.path.join(scratch, STATS_NAME))
            if singers:
                write_singers(scratch, singers)
            model.save_weights(os.path.join(scratch, WEIGHTS_NAME))
            tied = dict(record, **{BEST_DIGEST: f"{stats_digest(stats):015x}"})
            atomic_write_text(os.path.join(scratch, BEST_RECORD),
                              json.dumps(tied, indent=1) + "\n")

        with self._writing(self.best_path):
            return replace_folder(self.best_path, build)

    # ------------------------------------------------------------------ checkpoints
    def save(self, stats: Optional[FeatureStats], singers: Sequence[str] = ()) -> Optional[str]:
        """Save a checkpoint numbered by the step, with the run files; returns its path (chief)
        or None (other workers). Every worker must call it.

        Raises:
            SaveFailed: a file cannot be written; what the failed save wrote is removed and the
                index still names the last good checkpoint.
        """
        step = int(self.step.numpy())
        self._digest.assign(stats_digest(stats) if stats is not None else 0)
        if self.task.is_chief:
            self.write_run_files(stats, singers)
            prefix = os.path.join(self.path, f"ckpt-{step}")
            try:
                path = self.manager.save(checkpoint_number=step)
            except (OSError, tf.errors.OpError) as error:
                discard_failed_save(self.path, step)
                raise self._failed(prefix, error) from None
            self.last_checkpoint = path
        else:
            scratch = tempfile.mkdtemp(prefix=f"singlow-worker{self.task.index}-")
            try:
                self._saved.write(os.path.join(scratch, "ckpt"))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            path = None
        self.last_saved_step = step
        return path

    def export_weights(self, model: Glow, path: Optional[str] = None) -> Optional[str]:
        """Write the model weights alone as ``.weights.h5`` (default ``glow.weights.h5`` in the
        folder), atomically (Keras names the file itself, so it is written into a scratch folder
        beside and copied into place); returns the path (None on other workers, which write
        nothing)."""
        path = path or os.path.join(self.path, WEIGHTS_NAME)
        if not path.endswith(".weights.h5"):
            raise ValueError(f"weights must be saved to a .weights.h5 file, got {path}")
        if not self.task.is_chief:
            return None
        parent = os.path.dirname(os.path.abspath(path))
        with self._writing(path):
            os.makedirs(parent, exist_ok=True)
            for name in os.listdir(parent):  # left by a process killed while exporting
                if name.startswith(_EXPORT_SCRATCH):
                    shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            scratch = tempfile.mkdtemp(prefix=_EXPORT_SCRATCH, dir=parent)
            try:
                written = os.path.join(scratch, os.path.basename(path))
                model.save_weights(written)
                atomic_write(path, lambda tmp: shutil.copyfile(written, tmp))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        return path


def load_for_inference(checkpoint_dir: str) -> Codec:
    """The :class:`utils.runs.codec.Codec` (model, config, stats) of a trained run, for migrate.py,
    evaluate.py, the notebooks and the benchmarks.

    Reads ``config.json`` (rebuilds the model it describes), ``feature_stats.json`` (the
    normalisation the model was trained with), a conditional run's ``singers.json`` and the
    newest readable checkpoint's model weights (the optimizer state is ignored; a damaged
    checkpoint or index gives a warning line and the previous one is used), or
    ``glow.weights.h5`` when the folder holds no checkpoint (as a run's ``best/`` folder, the
    weights of its lowest validation bits/dim). The model computes in float32 whatever
    ``--mixed_precision`` trained it. Takes no lock: reading never changes the folder.

    Raises:
        FileNotFoundError: the folder, its config.json, feature_stats.json or weights are missing.
        CheckpointMismatch: the files disagree with each other (one-line message), e.g. a
            ``feature_stats.json`` that is not the one the weights were trained with.
        CheckpointDamaged: no checkpoint can be read and there is no ``glow.weights.h5``.
    """
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(f"checkpoint folder not found: {checkpoint_dir}")
    for name in (CONFIG_NAME, STATS_NAME):
        if not os.path.isfile(os.path.join(checkpoint_dir, name)):
            raise FileNotFoundError(
                f"{os.path.join(checkpoint_dir, name)} is missing: not a folder written by train.py"
            )
    config = read_checkpoint_config(checkpoint_dir)
    try:
        stats = FeatureStats.load(os.path.join(checkpoint_dir, STATS_NAME))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointMismatch(f"cannot read {STATS_NAME} in {checkpoint_dir}: {one_line(error)}") from None
    if not stats.matches(config):
        raise CheckpointMismatch(
            f"{STATS_NAME} in {checkpoint_dir} was computed under other feature settings than its "
            f"{CONFIG_NAME}"
        )

    if config.feature == "world":
        from utils.audio.world import require_pyworld

        require_pyworld()  # one line naming pyworld, not an ImportError on the first song
    singers = read_singers(checkpoint_dir) or ()
    if config.conditional and not singers:
        raise CheckpointMismatch(f"{os.path.join(checkpoint_dir, SINGERS_NAME)} is missing: a "
                                 "conditional checkpoint needs its singer map")
    model = Glow.from_config(config, num_singers=len(singers))
    source = restore_model(model, checkpoint_dir)
    check_stats_tie(checkpoint_dir, stats, source)
    return Codec(model, config, stats, singers if config.conditional else ())

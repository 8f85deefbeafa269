"""Run folders: the files of a trained run, checked and restored, apart from training.

A checkpoint folder (``config.checkpoint_dir``) written by ``train.py``::

    config.json            the Config of the run; a checkpoint is only ever restored under a
                           Config whose model fields agree
    feature_stats.json     the FeatureStats the training data was normalised with
    singers.json           a conditional model's singer map (names in id order)
    validation.json        the songs held out of training (utils/validation.py), kept on resume
    checkpoint, ckpt-N.*   tf.train.Checkpoint(model, optimizer, step, skipped_steps), N = step
    glow.weights.h5        the model weights alone (Keras), written at the end of training
    best/                  the weights of the lowest validation bits/dim so far, as a run folder
                           of its own: config.json, feature_stats.json, [singers.json],
                           glow.weights.h5 and best.json (step, epoch, val_bits_per_dim,
                           val_nll); every --checkpoint_dir reader accepts it

This module reads and writes those files; the trainer (``pipeline.py``) saves checkpoints through
it, and inference (``migrate.py``, ``evaluate.py``, the notebooks) loads a run through
:func:`load_for_inference` without importing any training code.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Optional, Sequence, Tuple

import tensorflow as tf

from common_definitions import Config
from model import Glow
from utils.codec import Codec
from utils.distribute import TaskInfo
from utils.features import FeatureStats
from utils.errors import RefusedError, one_line
from utils.files import atomic_write_text

CONFIG_NAME = "config.json"
STATS_NAME = "feature_stats.json"
WEIGHTS_NAME = "glow.weights.h5"
# The singer map of a conditional model: {"singers": [name of id 0, name of id 1, ...]}.
SINGERS_NAME = "singers.json"
VALIDATION_NAME = "validation.json"
BEST_NAME = "best"
BEST_RECORD = "best.json"
# While best/ is replaced: the previous one (renamed back if a crash left no best/).
_BEST_OLD = ".best-old"
_BEST_NEW_PREFIX = ".best-new-"


class CheckpointMismatch(RefusedError, ValueError):
    """A checkpoint cannot be used with this configuration; the message is one line."""


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
    """Refuse a checkpoint folder that holds a checkpoint of another model configuration.

    Returns the latest checkpoint prefix in ``config.checkpoint_dir`` (None when there is none).

    Raises:
        CheckpointMismatch: the saved ``config.json`` differs in a model field (named in the
            message) or cannot be read.
    """
    latest = tf.train.latest_checkpoint(config.checkpoint_dir) if os.path.isdir(config.checkpoint_dir) else None
    if latest is None:
        return None
    saved = read_checkpoint_config(config.checkpoint_dir)
    if saved is not None:
        problems = config.incompatibilities(saved)
        if problems:
            raise CheckpointMismatch(
                f"the checkpoint in {config.checkpoint_dir} is of another model configuration: "
                f"{', '.join(problems)}; pass matching flags or use another --checkpoint_dir"
            )
    return latest


def saved_model_variables(path: str) -> int:
    """Variables saved under the checkpoint's ``model`` object (its object graph)."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(path).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    stack = [c.node_id for c in graph.nodes[0].children if c.local_name == "model"]
    seen, count = set(), 0
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        count += any(a.name == "VARIABLE_VALUE" for a in graph.nodes[node].attributes)
        stack.extend(c.node_id for c in graph.nodes[node].children)
    return count


def check_model_matches(model: Glow, path: str) -> None:
    """Restoring only checks that the model's variables are found; a checkpoint of a *larger*
    model (more steps or levels) would load partially without complaint, so count them too."""
    saved = saved_model_variables(path)
    if saved != len(model.variables):
        raise CheckpointMismatch(
            f"{path} holds a model of {saved} variables, but the configuration describes one of "
            f"{len(model.variables)}: config.json does not belong to this checkpoint"
        )


def restore_model(model: Glow, checkpoint_dir: str) -> str:
    """Restore the weights of ``model`` from the latest checkpoint (or glow.weights.h5)."""
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    try:
        if latest is not None:
            check_model_matches(model, latest)
            status = tf.train.Checkpoint(model=model).restore(latest).expect_partial()
            status.assert_existing_objects_matched()
            source = latest
        else:
            source = os.path.join(checkpoint_dir, WEIGHTS_NAME)
            if not os.path.isfile(source):
                raise FileNotFoundError(f"no checkpoint and no {WEIGHTS_NAME} in {checkpoint_dir}")
            model.load_weights(source)
    except CheckpointMismatch:
        raise
    except (AssertionError, ValueError, KeyError, tf.errors.OpError) as error:
        raise CheckpointMismatch(f"cannot restore {checkpoint_dir}: {one_line(error)}") from None
    if not model.is_initialized():
        raise CheckpointMismatch(f"{source} holds a model whose ActNorm layers were never initialised")
    return source


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
    if check_checkpoint_dir(config) is None or not os.path.isfile(path):
        return None
    try:
        return FeatureStats.load(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointMismatch(f"cannot read {path}: {one_line(error)}") from None


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
    if tf.train.latest_checkpoint(source) is None and not os.path.isfile(
            os.path.join(source, WEIGHTS_NAME)):
        raise FileNotFoundError(f"--init_from {source} holds no checkpoint and no {WEIGHTS_NAME}")
    return source


def init_from_stats(config: Config) -> FeatureStats:
    """The ``feature_stats.json`` of ``config.init_from`` (a fine-tuning run normalises with it
    unless ``--renormalize``)."""
    path = os.path.join(config.init_from, STATS_NAME)
    try:
        stats = FeatureStats.load(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointMismatch(f"--init_from: cannot read {path}: {one_line(error)}") from None
    if not stats.matches(config):
        raise CheckpointMismatch(f"--init_from: {path} was computed under other feature settings")
    return stats


class RunFolder:
    """The checkpoint folder of a training run: numbered checkpoints and the files beside them.

    ``checkpoint`` is the run's ``tf.train.Checkpoint`` (model, optimizer, step, skipped_steps);
    checkpoints are numbered by ``step``. Only the chief worker writes into the folder; the other
    workers take part in every save (a multi-worker save may run collectives) but write to a
    scratch folder that is removed at once.

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

    @property
    def path(self) -> str:
        return self.config.checkpoint_dir

    @property
    def manager(self) -> tf.train.CheckpointManager:
        """The CheckpointManager of the folder (created on first use: it creates the folder)."""
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(
                self.checkpoint, self.path, self.config.max_checkpoints, step_counter=self.step)
        return self._manager

    def restore(self, model: Glow, path: str) -> str:
        """Restore everything in ``checkpoint`` from ``path``; returns ``path``.

        Raises:
            CheckpointMismatch: the checkpoint holds another model or cannot be read.
        """
        try:
            check_model_matches(model, path)
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except CheckpointMismatch:
            raise
        except (AssertionError, ValueError, KeyError, tf.errors.OpError) as error:
            raise CheckpointMismatch(f"cannot restore {path}: {one_line(error)}") from None
        self.last_checkpoint = path
        self.last_saved_step = int(self.step.numpy())
        return path

    def write_run_files(self, stats: Optional[FeatureStats], singers: Sequence[str] = (),
                        split=None) -> None:
        """Write ``config.json``, ``feature_stats.json``, a conditional run's ``singers.json``
        and, when given, the validation ``split`` (a :class:`utils.validation.ValidationSplit`)
        as ``validation.json`` (chief only)."""
        if not self.task.is_chief:
            return
        os.makedirs(self.path, exist_ok=True)
        self.config.save(os.path.join(self.path, CONFIG_NAME))
        if stats is not None:
            stats.save(os.path.join(self.path, STATS_NAME))
        if singers:
            write_singers(self.path, singers)
        if split is not None:
            split.save(os.path.join(self.path, VALIDATION_NAME))

    # ------------------------------------------------------------------ best/
    @property
    def best_path(self) -> str:
        return os.path.join(self.path, BEST_NAME)

    def _settle_best(self) -> None:
        """Finish or undo a replacement of ``best/`` that a crash interrupted."""
        old = os.path.join(self.path, _BEST_OLD)
        if os.path.isdir(old) and not os.path.isdir(self.best_path):
            os.rename(old, self.best_path)
        shutil.rmtree(old, ignore_errors=True)
        if os.path.isdir(self.path):
            for name in os.listdir(self.path):
                if name.startswith(_BEST_NEW_PREFIX):
                    shutil.rmtree(os.path.join(self.path, name), ignore_errors=True)

    def best_record(self) -> Optional[dict]:
        """``best/best.json`` (``step``, ``epoch``, ``val_bits_per_dim``, ``val_nll``,
        ``patches``) or None when the folder has no best weights yet."""
        if self.task.is_chief:
            self._settle_best()
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
        (``record``). Chief only (None on the other workers).

        Never partial: the new folder is written beside (``.best-new-*``) and renamed into
        place; the old one is first renamed to ``.best-old`` and removed after. A crash
        between the two renames leaves ``.best-old``, which the next :meth:`best_record` or
        :meth:`write_best` renames back.
        """
        if not self.task.is_chief:
            return None
        os.makedirs(self.path, exist_ok=True)
        self._settle_best()
        scratch = tempfile.mkdtemp(prefix=_BEST_NEW_PREFIX, dir=self.path)
        old = os.path.join(self.path, _BEST_OLD)
        try:
            self.config.replace(checkpoint_dir=self.best_path).save(
                os.path.join(scratch, CONFIG_NAME))
            stats.save(os.path.join(scratch, STATS_NAME))
            if singers:
                write_singers(scratch, singers)
            model.save_weights(os.path.join(scratch, WEIGHTS_NAME))
            atomic_write_text(os.path.join(scratch, BEST_RECORD),
                              json.dumps(record, indent=1) + "\n")
            if os.path.isdir(self.best_path):
                os.rename(self.best_path, old)
            os.rename(scratch, self.best_path)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return self.best_path

    def save(self, stats: Optional[FeatureStats], singers: Sequence[str] = ()) -> Optional[str]:
        """Save a checkpoint numbered by the step, with the run files; returns its path (chief)
        or None (other workers). Every worker must call it."""
        step = int(self.step.numpy())
        if self.task.is_chief:
            self.write_run_files(stats, singers)
            path = self.manager.save(checkpoint_number=step)
            self.last_checkpoint = path
        else:
            scratch = tempfile.mkdtemp(prefix=f"singlow-worker{self.task.index}-")
            try:
                self.checkpoint.write(os.path.join(scratch, "ckpt"))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            path = None
        self.last_saved_step = step
        return path

    def export_weights(self, model: Glow, path: Optional[str] = None) -> Optional[str]:
        """Write the model weights alone as ``.weights.h5`` (default ``glow.weights.h5`` in the
        folder); returns the path (None on other workers, which write nothing)."""
        path = path or os.path.join(self.path, WEIGHTS_NAME)
        if not path.endswith(".weights.h5"):
            raise ValueError(f"weights must be saved to a .weights.h5 file, got {path}")
        if not self.task.is_chief:
            return None
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        model.save_weights(path)
        return path


def load_for_inference(checkpoint_dir: str) -> Codec:
    """The :class:`utils.codec.Codec` (model, config, stats) of a trained run, for migrate.py,
    evaluate.py, the notebooks and the benchmarks.

    Reads ``config.json`` (rebuilds the model it describes), ``feature_stats.json`` (the
    normalisation the model was trained with), a conditional run's ``singers.json`` and the
    latest checkpoint's model weights (the optimizer state is ignored), or ``glow.weights.h5``
    when the folder holds no checkpoint (as a run's ``best/`` folder, the weights of its lowest
    validation bits/dim). The model computes in float32 whatever ``--mixed_precision`` trained it.

    Raises:
        FileNotFoundError: the folder, its config.json, feature_stats.json or weights are missing.
        CheckpointMismatch: the files disagree with each other (one-line message).
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
        from utils.world_features import require_pyworld

        require_pyworld()  # one line naming pyworld, not an ImportError on the first song
    singers = read_singers(checkpoint_dir) or ()
    if config.conditional and not singers:
        raise CheckpointMismatch(f"{os.path.join(checkpoint_dir, SINGERS_NAME)} is missing: a "
                                 "conditional checkpoint needs its singer map")
    model = Glow.from_config(config, num_singers=len(singers))
    restore_model(model, checkpoint_dir)
    return Codec(model, config, stats, singers if config.conditional else ())

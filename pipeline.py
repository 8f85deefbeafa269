"""Trainer: the distributed maximum-likelihood training loop of SinGlow-TF2.

One optimizer step, for a global batch of ``B`` patches ``x (B, H, W, C)`` split over the replicas::

    every replica r, on its slice x_r:
        z, logdet = model.encode(x_r)                          z (b, D), logdet (b,) nats
        bits/dim_i = -(sum_d log N(z_id; 0, 1) + logdet_i) / (D ln 2)
        loss_r = sum_i bits/dim_i / B                          tf.nn.compute_average_loss
        g_r = d loss_r / d weights
    g = all-reduce-sum(g_r)          gradient of the mean bits/dim over the *global* batch
    finite = loss and ||g|| are finite                         identical on every replica
    if finite: Adam(clip_by_global_norm(g, clip_norm), warm-up learning rate)
    else:      nothing changes (weights, Adam moments, optimizer.iterations); skipped_steps += 1

Units: ``bits_per_dim`` is in bits per dimension of a patch (``D = H * W * C``); ``nll`` is the
negative log-likelihood in nats per patch (``bits_per_dim * D * ln 2``).

This module holds the compiled step, the loop and the non-finite policy. The rest of a run lives
beside it: the strategy and the collectives across workers (:mod:`utils.training.distribute`), the
data and its normalisation, settled before the trainer is built (:mod:`utils.training.data`), the
checkpoint folder (:mod:`utils.runs.run_folder`), TensorBoard, the progress bar and the output wavs
(:mod:`utils.training.reports`), graceful Ctrl-C / SIGTERM (:mod:`utils.training.stop_signals`), the
optimizer (:mod:`utils.training.optimizer`), the metrics (:mod:`utils.training.metrics`), the
validation curve with the best weights and early stopping (:mod:`utils.training.validation`) and
mixed precision (:mod:`utils.training.precision`). See ``design/training.md``.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Callable, List, Optional

import numpy as np
import tensorflow as tf
import keras

from common_definitions import Config
from data_loader import SongDataLoader
from model import Glow, standard_normal_log_prob
from utils.audio.features import sounding_frames
from utils.audio.signal import check_invertible
from utils.evaluation.plots import spectrogram_image  # noqa: F401 (re-exported)
from utils.runs.run_folder import CheckpointMismatch, RunFolder, check_checkpoint_dir  # noqa: F401
from utils.runs.run_folder import SaveFailed, check_unlocked, restore_model  # noqa: F401
from utils.training.data import TrainingData, prepare_training_data
from utils.training.distribute import (  # noqa: F401 (re-exported)
    Collectives,
    cluster_size,
    make_strategy,
)
from utils.training.optimizer import SummedGradientAdam, WarmupSchedule
from utils.training.precision import MixedPrecision
from utils.training.stop_signals import STOP_SIGNALS, StopRequest, signal_name
# The metrics are re-exported: ``from pipeline import StepMetrics`` keeps working.
from utils.training.metrics import (  # noqa: F401
    ReplicaMetrics,
    StepMetrics,
    StepTotals,
    TrainingDiverged,
    TrainResult,
)
from utils.training.reports import TrainingReport
from utils.training.validation import Steering

# Global batches SingerNorm's per-singer moments are taken over at initialisation.
SINGER_NORM_BATCHES = 16

LN2 = math.log(2.0)


def _holding_the_folder_lock(fit):
    """``Trainer.fit`` run while the chief holds the checkpoint folder's lock (utils/locks.py):
    a second run on the folder is refused (``FolderLocked``) instead of mixing its checkpoints
    with this one's."""

    @functools.wraps(fit)
    def locked(self, *args, **kwargs):
        with self.run_folder.writing():
            return fit(self, *args, **kwargs)

    return locked


def replica_gradients(model: Glow, precision: MixedPrecision, config: Config, x, singer=None,
                      context=None):
    """One replica's share of a train step (replica context): clipped gradients of the global-batch
    mean bits/dim (of p(x | singer) for a conditional model, p(x | singer, context) for a parallel
    one), all-reduced, with the step's metrics and its finite flag (the same on every replica).

    A parallel model's loss adds its first layer's own bits/dim as a conditional Gaussian
    (:meth:`~utils.flow.context_norm.ContextNorm.gaussian_log_prob`): ContextNorm alone stays a
    model of the target given the source, whose mean the rest of the flow refines."""
    shape = x.shape[1:]
    dims = float(np.prod(shape)) if shape.is_fully_defined() else float(config.dims)
    global_batch = float(config.batch_size)
    with tf.GradientTape() as tape:  # float32, or bf16/fp16 convolutions (MixedPrecision)
        z, logdet = precision.encode(model, x, singer, context)
        bits = -(standard_normal_log_prob(z) + logdet) / (dims * LN2)  # (b,)
        objective = bits
        if context is not None:
            first = model.input_norm.gaussian_log_prob(
                x, model.singer_condition(singer), context, model.singer_embedding)
            objective = bits - first / (dims * LN2)
        loss = precision.scale_loss(
            tf.nn.compute_average_loss(objective, global_batch_size=config.batch_size))
    grads = precision.unscale(tape.gradient(
        loss, model.trainable_variables, unconnected_gradients=tf.UnconnectedGradients.ZERO))
    partial = ReplicaMetrics(tf.reduce_sum(bits) / global_batch,
                             tf.reduce_sum(tf.reduce_mean(z, axis=1)) / global_batch,
                             tf.reduce_sum(tf.math.reduce_variance(z, axis=1)) / global_batch)
    grads, partial = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, [grads, partial])
    norm = tf.linalg.global_norm(grads)
    finite = tf.math.is_finite(partial.bits_per_dim) & tf.math.is_finite(norm)
    grads, _ = tf.clip_by_global_norm(grads, config.clip_norm, use_norm=norm)
    applied = StepTotals(*partial, norm, tf.constant(1.0), tf.constant(0.0))
    return grads, applied, finite


def initialize_input_norm(model: Glow, batches, config: Config, stats) -> None:
    """Set a conditional model's input layer from ``batches`` (concatenated ``(x, ids)``, or a
    parallel run's ``(x, ids, context)``): ContextNorm's least squares of the target frames on
    the source's; SingerNorm's per-singer moments over the sounding frames only, so that one
    singer's digital silence does not set the scale its voiced frames get."""
    if model.parallel:
        model.input_norm.initialize(batches[0], batches[2], batches[1])
        return
    many, ids = batches[0], batches[1]
    frames = sounding_frames(many, ids, config, stats)
    model.input_norm.initialize(many, ids, model.singer_embedding, frames)


# ---------------------------------------------------------------------------------- trainer
class Trainer:
    """Trains a :class:`Glow` on the records of ``config`` under a tf.distribute strategy.

    ``Trainer(config)`` builds the strategy (:func:`make_strategy`, or ``strategy``); refuses,
    before anything is written, an STFT that cannot be inverted for the audio summaries
    (``ValueError``), a ``checkpoint_dir`` that another live run holds (``FolderLocked``) or
    of another model (:class:`CheckpointMismatch`); settles the data (``data``, else
    :func:`prepare_training_data`: records made incrementally, the validation split and the
    normalisation chosen); builds the model, a warm-up Adam and the checkpoint in the strategy's
    scope; resumes the newest readable checkpoint (:meth:`resume`), else for ``init_from`` takes
    that run's weights alone (fine-tuning: fresh optimizer, step 0). :meth:`fit` initialises
    ActNorm unless restored and trains to ``epochs * steps_per_epoch`` steps (validating).

    Args:
        config: every hyperparameter and path.
        strategy: a tf.distribute strategy (tests pass one over logical CPU devices).
        data: the records and normalisation to train on (a benchmark feeding batches by hand
            passes ``TrainingData(None, stats)``).
        loader: the data loader used to make the records (default ``SongDataLoader(config)``).
        log: where one-line messages go (only the chief worker logs).
        progress: show a tqdm bar; None shows it when stderr is a terminal.

    The model's initial weights come from ``config.seed`` through ``keras.utils.set_random_seed``,
    which also seeds Python's, NumPy's and TensorFlow's global generators of the process.
    """

    def __init__(self, config: Config, strategy: Optional[tf.distribute.Strategy] = None,
                 data: Optional[TrainingData] = None, loader: Optional[SongDataLoader] = None,
                 log: Callable[[str], None] = print, progress: Optional[bool] = None):
        self.config = config
        self.strategy = strategy or make_strategy()
        self.collectives = Collectives(self.strategy)
        self.is_chief = self.collectives.task.is_chief
        self.report = TrainingReport(config, self.is_chief, log, progress)
        # Spectrogram summaries invert the STFT, and world conversions render on it: refuse a
        # hop it cannot invert now, not later.
        if config.feature in ("spectrogram", "world"):
            check_invertible(config)
        check_unlocked(config.checkpoint_dir, self.collectives.task)  # one writer
        latest = check_checkpoint_dir(config)  # refuses a checkpoint of another model
        self.data = data or prepare_training_data(config, self.collectives, loader,
                                                  self.report.log)
        self.records, self.stats, self.singers = self.data.records, self.data.stats, self.data.singers
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = Glow.from_config(config, num_singers=len(self.singers))
            self.schedule = WarmupSchedule(config.learning_rate, config.warmup_steps)
            self.optimizer = SummedGradientAdam(learning_rate=self.schedule)
            self.optimizer.build(self.model.trainable_variables)
            counter = dict(dtype=tf.int64, trainable=False,
                           aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.step = tf.Variable(0, name="step", **counter)
            self.skipped_steps = tf.Variable(0, name="skipped_steps", **counter)
            # Not checkpointed: a restart gets a fresh allowance of non-finite steps.
            self._nonfinite_run = tf.Variable(0, name="nonfinite_run", **counter)
            self.precision = MixedPrecision(config.mixed_precision)
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.step,
            skipped_steps=self.skipped_steps)
        self.run_folder = RunFolder(config, self.checkpoint, self.step, self.collectives.task)
        self._train_loop = tf.function(self._train_loop_fn)
        resumed = self.resume() if latest is not None else None
        if resumed is None and config.init_from is not None:
            self.start_from(config.init_from)
        self.steering = Steering(self, resumed=resumed is not None)

    # ------------------------------------------------------------------ state
    @property
    def global_step(self) -> int:
        """Train steps run so far (applied and skipped), as saved in the checkpoint."""
        return int(self.step.numpy())

    last_checkpoint = property(lambda self: self.run_folder.last_checkpoint)

    def resume(self) -> Optional[str]:
        """Restore model, optimizer, ``step`` and ``skipped_steps`` on every worker from the
        newest checkpoint that can be read (``resumed from PATH at step N``; a broken index or
        a damaged checkpoint gives a warning line: :meth:`RunFolder.resume`); None if none."""
        path = self.run_folder.resume(self.model, self.stats)
        if path is not None:
            self.collectives.broadcast_from_first_replica(
                self.model.variables + self.optimizer.variables + [self.step, self.skipped_steps])
            self.report.log(f"resumed from {path} at step {self.global_step}")
        return path

    def start_from(self, run_dir: str) -> str:
        """Fine-tuning: the model weights of the run folder ``run_dir`` (its latest checkpoint,
        else its glow.weights.h5) on every worker; the optimizer and the step stay fresh."""
        source = restore_model(self.model, run_dir)
        self.collectives.broadcast_from_first_replica(list(self.model.variables))
        self.report.log(f"starting from the weights of {source} (fresh optimizer, step 0)")
        return source

    def save(self) -> Optional[str]:
        """Save a checkpoint numbered by the step (every worker calls it); its path or None."""
        return self.run_folder.save(self.stats, self.singers)

    # ------------------------------------------------------------------ data
    def training_dataset(self, start_step: int = 0) -> tf.data.Dataset:
        """Global batches ``(B, H, W, C)`` (with singer ids ``(B,)`` for a conditional model)
        for the steps from ``start_step`` on, this worker's own
        (:meth:`TrainingData.worker_batches`)."""
        return self.data.worker_batches(self.config, self.collectives.task.index, start_step)

    def init_batch(self):
        """The first global batch under ``config.seed``: identical on every worker."""
        return next(iter(self.data.batches(self.config, self.config.seed)))

    def init_batches(self, count: int):
        """The first ``count`` global batches under ``config.seed``, concatenated: ``(x, ids)``
        numpy arrays (conditional data; ``(x, ids, context)`` parallel), the same on every
        worker."""
        return self.data.first_batches(self.config, count)

    def distribute(self, dataset: tf.data.Dataset):
        """``strategy.experimental_distribute_dataset`` of global batches."""
        return self.strategy.experimental_distribute_dataset(dataset)

    def initialize(self, batch=None) -> bool:
        """ActNorm's data-dependent initialisation on one global batch, once; SingerNorm's or
        ContextNorm's (:func:`initialize_input_norm`) on the first :data:`SINGER_NORM_BATCHES`
        global batches, or on ``batch`` when one is given.

        Runs in cross-replica context, so every replica's copy gets the same values, and is then
        broadcast from the first worker. Does nothing (returns False) when the model is already
        initialised, e.g. restored from a checkpoint.
        """
        if self.model.is_initialized():
            return False
        given = batch is not None
        batch = self.init_batch() if batch is None else batch
        x, singer, context = (tuple(batch) + (None,))[:3] if isinstance(batch, tuple) else (
            batch, None, None)
        if getattr(self.model, "input_norm", None) is not None:
            # SingerNorm's moments or ContextNorm's least squares over several batches (16 of
            # 16 patches of 64 frames are ~16k frames), not one.
            many = (tuple(np.asarray(a) for a in batch) if given
                    else self.init_batches(SINGER_NORM_BATCHES))
            with self.strategy.scope():
                initialize_input_norm(self.model, many, self.config, self.stats)
        with self.strategy.scope():
            self.model.initialize(tf.convert_to_tensor(x, tf.float32), singer, context)
        self.collectives.broadcast_from_first_replica(list(self.model.variables))
        return True

    # ------------------------------------------------------------------ the compiled step
    def _replica_gradients(self, x, singer=None, context=None):
        return replica_gradients(self.model, self.precision, self.config, x, singer, context)

    def _replica_apply(self, grads):
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))

    def _train_loop_fn(self, iterator, steps):
        """Run up to ``steps`` train steps; stop early after too many non-finite ones.

        Returns the :class:`StepTotals` of the steps run. The non-finite policy: a step whose
        loss or gradient norm is NaN/Inf changes nothing but ``skipped_steps``; after
        ``max_nonfinite_steps`` of them in a row the loop stops (and :meth:`_run_chunk` raises).
        """
        zero = tf.constant(0.0)
        totals = StepTotals(zero, zero, zero, zero, zero, zero)
        skipped = StepTotals(zero, zero, zero, zero, zero, tf.constant(1.0))
        limit = tf.constant(self.config.max_nonfinite_steps, tf.int64)
        first = lambda value: self.strategy.experimental_local_results(value)[0]  # noqa: E731
        for _ in tf.range(steps):
            batch = next(iterator)
            grads, applied, finite = self.strategy.run(
                self._replica_gradients, args=batch if isinstance(batch, tuple) else (batch,))
            # All-reduced, hence the same on every replica and worker: all take the same branch.
            applied, finite = tf.nest.map_structure(first, (applied, finite))
            if finite:
                self.strategy.run(self._replica_apply, args=(grads,))
                self._nonfinite_run.assign(0)
                totals = totals + applied
            else:
                self.skipped_steps.assign_add(1)
                # An fp16 loss-scale overflow does not count toward divergence (precision.py).
                self._nonfinite_run.assign_add(self.precision.divergence_count(applied[0]))
                totals = totals + skipped
            self.precision.update(finite)
            self.step.assign_add(1)
            if self._nonfinite_run >= limit:
                break
        return totals

    def train_steps(self, iterator, steps: int) -> StepMetrics:
        """Run ``steps`` train steps on a distributed iterator in one compiled call; their
        :class:`StepMetrics`."""
        totals, seconds = self._timed_loop(iterator, steps)
        return StepMetrics.from_totals(totals, self.config.dims, seconds)

    def _timed_loop(self, iterator, steps: int):
        """One compiled call of ``steps`` steps: its :class:`StepTotals` and seconds."""
        began = time.perf_counter()
        totals = self._train_loop(iterator, tf.constant(int(steps), tf.int32))
        return StepTotals(*(float(t) for t in totals)), time.perf_counter() - began

    # ------------------------------------------------------------------ the loop
    @_holding_the_folder_lock
    def fit(self) -> TrainResult:
        """Train until ``config.epochs * config.steps_per_epoch`` steps (resuming where it stopped).

        Saves a checkpoint every ``checkpoint_every`` steps and at each epoch's end, writes
        TensorBoard summaries to ``config.logdir`` (scalars every ``log_every`` steps, audio and
        spectrograms every epoch), prints one line per epoch, and at the end exports
        ``glow.weights.h5`` and the wavs of :meth:`TrainingReport.write_outputs`. Ctrl-C or
        SIGTERM stops it after the running compiled call, with a checkpoint of the step reached.

        Raises:
            TrainingDiverged: ``max_nonfinite_steps`` consecutive non-finite steps.
            SaveFailed: a run folder's file cannot be written (the last checkpoint is intact).
        """
        config, report = self.config, self.report
        total = config.total_steps
        history: List[dict] = []
        self.run_folder.write_run_files(self.stats, self.singers, self.data.split)
        start = self.global_step
        finished = self.steering.finished(start, total)
        if finished:
            report.log(finished)
            return TrainResult(start, history, checkpoint=self.last_checkpoint)
        self.initialize()
        iterator = iter(self.distribute(self.training_dataset(start)))
        epoch_totals, epoch_seconds = StepTotals(), 0.0
        stop = early = None
        report.open(start, total)
        try:
            with StopRequest(report.log) as request:
                report.starting(self.model, self.strategy.num_replicas_in_sync, start, total)
                step = start
                while step < total:
                    epoch_end = (step // config.steps_per_epoch + 1) * config.steps_per_epoch
                    next_save = (step // config.checkpoint_every + 1) * config.checkpoint_every
                    count = min(config.log_every, epoch_end - step, next_save - step)
                    totals, seconds = self._run_chunk(iterator, count)
                    step = self.global_step
                    epoch_totals, epoch_seconds = epoch_totals + totals, epoch_seconds + seconds
                    if step % config.checkpoint_every == 0:
                        self.save()
                    if step % config.steps_per_epoch == 0:
                        history.append(self._end_epoch(step, epoch_totals, epoch_seconds))
                        epoch_totals, epoch_seconds = StepTotals(), 0.0
                        early = self.steering.stop_message(step)  # the same on every worker
                    # request.signum is only read here: a signal that lands during the
                    # all-reduce still counts at the next chunk.
                    stop = self.collectives.agreed_signal(request.signum, STOP_SIGNALS)
                    if stop is not None or early:
                        break
        finally:
            report.close()
        if self.run_folder.last_saved_step != self.global_step:
            self.save()
        if stop is not None:
            report.log(f"{signal_name(stop)} at step {self.global_step}; checkpoint saved: "
                       f"{self.last_checkpoint}")
            return TrainResult(self.global_step, history, True, self.last_checkpoint,
                               stop_signal=int(stop))
        if early:
            report.log(early)
        outputs = {}
        weights = self.run_folder.export_weights(self.model)
        if weights:
            outputs["weights"] = weights
        outputs.update(report.write_outputs(report.last_clips or report.clips(self.model, self.data)))
        report.log(f"done at step {self.global_step}: checkpoint {self.last_checkpoint}, "
                   f"weights {weights}, audio in {config.output_dir}")
        return TrainResult(self.global_step, history, False, self.last_checkpoint, outputs,
                           stopped_early=bool(early))

    def _run_chunk(self, iterator, count: int):
        """One compiled call of ``count`` steps, then its report and the non-finite check;
        returns its :class:`StepTotals` and seconds."""
        totals, seconds = self._timed_loop(iterator, count)
        step = self.global_step
        metrics = StepMetrics.from_totals(totals, self.config.dims, seconds)
        self.report.chunk(step, metrics, float(self.schedule(self.optimizer.iterations)),
                          int(self.skipped_steps.numpy()))
        run = int(self._nonfinite_run.numpy())
        if run >= self.config.max_nonfinite_steps:
            raise TrainingDiverged.at(step, run, self.last_checkpoint)
        return totals, seconds

    def _end_epoch(self, step: int, totals: StepTotals, seconds: float) -> dict:
        metrics = StepMetrics.from_totals(totals, self.config.dims, seconds)
        epoch = step // self.config.steps_per_epoch
        if self.run_folder.last_saved_step != step:
            self.save()
        if self.is_chief:
            self.report.audio(step, self.report.clips(self.model, self.data))
        validation = self.steering.end_epoch(step)  # held-out bits/dim, best/ (every worker)
        self.report.epoch(epoch, step, metrics, validation)
        return metrics.history(epoch, step, validation)

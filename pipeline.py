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

Distribution: :func:`make_strategy` picks ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG``
names several tasks, else ``MirroredStrategy`` over the local GPUs (the CPU when there is none).
The update is applied in a second ``strategy.run`` inside a cross-replica ``tf.cond`` because
tf.distribute cannot synchronise inside a replica-context conditional; see
:class:`SummedGradientAdam` for why the optimizer does not all-reduce again.

Checkpoint folder (``config.checkpoint_dir``)::

    config.json            the Config of the run (Config.save); a checkpoint is only ever
                           restored under a Config whose model fields agree
    feature_stats.json     the FeatureStats the training data was normalised with
    checkpoint, ckpt-N.*   tf.train.Checkpoint(model, optimizer, step, skipped_steps), N = step
    glow.weights.h5        the model weights alone (Keras), written at the end of training

See ``design/training.md`` for the full description.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import zlib
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import keras

from common_definitions import Config
from data_loader import SongDataLoader
from model import Glow, standard_normal_log_prob
from utils.errors import SinGlowError, one_line
from utils.plots import spectrogram_image
from utils.run_folder import (
    CONFIG_NAME,
    STATS_NAME,
    WEIGHTS_NAME,
    CheckpointMismatch,
    check_checkpoint_dir,
    check_model_matches,
)
from utils.audio import (
    FeatureStats,
    check_invertible,
    features_to_song,
    save_wav,
    song_to_features,
    spectrogram,
)

LN2 = math.log(2.0)

# Length of the clip reconstructed and sampled for TensorBoard and the output wavs: long enough
# to hear a phrase, short enough that Griffin-Lim on it costs a second or two per epoch.
SUMMARY_SECONDS = 4.0
# Signals that stop training gracefully (save the step reached, then exit).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Layout of the metrics vector a train step returns (all already reduced over the global batch).
_BPD, _Z_MEAN, _Z_VAR, _GRAD_NORM, _FINITE = range(5)
# Layout of the totals the compiled loop accumulates over its steps.
_T_BPD, _T_Z_MEAN, _T_Z_VAR, _T_GRAD_NORM, _T_APPLIED, _T_SKIPPED = range(6)


class TrainingDiverged(SinGlowError, RuntimeError):
    """Too many consecutive non-finite steps; the last checkpoint on disk is left intact."""


# ---------------------------------------------------------------------------------- strategy
def _tf_config() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {one_line(error)}") from None


def cluster_size() -> int:
    """Tasks (chief + workers) that ``TF_CONFIG`` names; 1 when it is unset."""
    cluster = _tf_config().get("cluster", {})
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker")) or 1


def make_strategy() -> tf.distribute.Strategy:
    """The strategy this machine (or cluster) calls for.

    ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names several tasks (it must be created
    before TensorFlow runs anything else, so call this first); otherwise ``MirroredStrategy`` over
    every local GPU, or over the CPU when there is none.
    """
    if cluster_size() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy([d.name for d in gpus] or ["/cpu:0"])


def _task_info(strategy: tf.distribute.Strategy) -> Tuple[bool, int, int]:
    """``(is_chief, worker_index, num_workers)`` of this process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True, 0, 1
    spec = resolver.cluster_spec().as_dict()
    workers = len(spec.get("worker", [])) + len(spec.get("chief", []))
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    has_chief = "chief" in spec
    chief = task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)
    index = task_id + (1 if has_chief and task_type == "worker" else 0)
    return chief, index, max(workers, 1)


# ---------------------------------------------------------------------------------- optimizer
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up: ``peak * min(1, (t + 1) / warmup_steps)`` at optimizer update ``t``.

    ``t`` counts applied updates (``optimizer.iterations``), so skipped steps do not advance the
    warm-up. ``warmup_steps == 0`` gives a constant ``peak``.
    """

    def __init__(self, peak: float, warmup_steps: int):
        super().__init__()
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        if self.warmup_steps <= 0:
            return tf.constant(self.peak, tf.float32)
        progress = (tf.cast(step, tf.float32) + 1.0) / float(self.warmup_steps)
        return self.peak * tf.minimum(1.0, progress)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps}


class SummedGradientAdam(keras.optimizers.Adam):
    """Adam that receives gradients already summed over the replicas.

    The train step all-reduces the gradients itself: it needs the global gradient norm for
    clipping and a finite flag that every replica agrees on *before* deciding to apply. Keras'
    TensorFlow optimizer would sum them over the replicas a second time (doubling them with two
    replicas); this hook makes that sum the identity. Everything else is stock Keras Adam.
    """

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


if not hasattr(keras.optimizers.Adam, "_all_reduce_sum_gradients"):  # pragma: no cover
    raise ImportError(
        f"keras {keras.__version__} has no Adam._all_reduce_sum_gradients; SummedGradientAdam "
        "needs the Keras pinned in requirements.txt"
    )


# ---------------------------------------------------------------------------------- summaries
@dataclasses.dataclass
class Clips:
    """Audio made for the summaries: float32 samples in [-1, 1] at ``config.sampling_rate``.

    original: a real song segment; reconstruction: decode(encode(original)) with its phase;
    sample: a draw at ``config.temperature`` (Griffin-Lim for spectrograms).
    """

    original: np.ndarray
    reconstruction: np.ndarray
    sample: np.ndarray


@dataclasses.dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did.

    step: the global step at the end; history: one dict per finished epoch (``epoch``, ``step``,
    ``nll`` nats/patch, ``bits_per_dim``, ``z_mean``, ``z_var``, ``skipped_steps``,
    ``steps_per_second``); interrupted: stopped by Ctrl-C or SIGTERM (a checkpoint was saved);
    checkpoint: the last checkpoint written (or restored); outputs: name -> path of the wavs and
    weights written at the end; stop_signal: the number of the signal that stopped it, else 0.
    """

    step: int
    history: List[dict]
    interrupted: bool = False
    checkpoint: Optional[str] = None
    outputs: Dict[str, str] = dataclasses.field(default_factory=dict)
    stop_signal: int = 0


# ---------------------------------------------------------------------------------- trainer
class Trainer:
    """Trains a :class:`Glow` on the records of ``config`` under a tf.distribute strategy.

    ``Trainer(config)`` builds the strategy (:func:`make_strategy`, or ``strategy``), and inside
    its scope the model, a warm-up Adam and the checkpoint; refuses spectrogram settings whose STFT
    cannot be inverted for the audio summaries (``ValueError``) and a ``checkpoint_dir`` holding a
    checkpoint of another model (:class:`CheckpointMismatch`), and otherwise restores the latest
    checkpoint there, printing ``resumed from PATH at step N``. :meth:`fit` then makes the records
    (incrementally), initialises ActNorm on the first global batch unless restored, and trains to
    ``config.epochs * config.steps_per_epoch`` steps.

    Args:
        config: every hyperparameter and path.
        strategy: a tf.distribute strategy (tests pass one over logical CPU devices).
        loader: the data loader (default ``SongDataLoader(config)``).
        log: where one-line messages go (only the chief worker logs).
        progress: show a tqdm bar; None shows it when stderr is a terminal.

    The model's initial weights come from ``config.seed`` through ``keras.utils.set_random_seed``,
    which also seeds Python's, NumPy's and TensorFlow's global generators of the process.
    """

    def __init__(self, config: Config, strategy: Optional[tf.distribute.Strategy] = None,
                 loader: Optional[SongDataLoader] = None, log: Callable[[str], None] = print,
                 progress: Optional[bool] = None):
        self.config = config
        self.strategy = strategy or make_strategy()
        self.is_chief, self.worker_index, self.num_workers = _task_info(self.strategy)
        self._log = log
        self.progress = progress
        self.loader = loader or SongDataLoader(config)
        self.global_batch_size = config.batch_size
        self.stats: Optional[FeatureStats] = None
        self._bar = None
        self._writer = None
        self._clip_cache = None
        self._stop_signal: Optional[int] = None
        self._last_saved_step = -1
        self._last_clips: Optional[Clips] = None
        self.last_checkpoint: Optional[str] = None

        if config.feature == "spectrogram":
            # The summaries and output wavs invert spectrograms: refuse before training, not
            # after the first epoch.
            check_invertible(config)
        latest = check_checkpoint_dir(config)
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = Glow(config)
            self.schedule = WarmupSchedule(config.learning_rate, config.warmup_steps)
            self.optimizer = SummedGradientAdam(learning_rate=self.schedule)
            self.optimizer.build(self.model.trainable_variables)
            counter = dict(dtype=tf.int64, trainable=False,
                           aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.step = tf.Variable(0, name="step", **counter)
            self.skipped_steps = tf.Variable(0, name="skipped_steps", **counter)
            # Not checkpointed: a restart gets a fresh allowance of non-finite steps.
            self._nonfinite_run = tf.Variable(0, name="nonfinite_run", **counter)
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.step,
            skipped_steps=self.skipped_steps,
        )
        self._manager = None
        self._train_loop = tf.function(self._train_loop_fn)
        if latest is not None:
            self.restore(latest)

    # ------------------------------------------------------------------ small helpers
    @property
    def global_step(self) -> int:
        """Train steps run so far (applied and skipped), as saved in the checkpoint."""
        return int(self.step.numpy())

    def log(self, message: str) -> None:
        if not self.is_chief:
            return
        if self._bar is not None and not self._bar.disable:
            self._bar.write(message)
        else:
            self._log(message)

    @property
    def manager(self) -> tf.train.CheckpointManager:
        """The CheckpointManager of ``config.checkpoint_dir`` (created on first use)."""
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(
                self.checkpoint, self.config.checkpoint_dir, self.config.max_checkpoints,
                step_counter=self.step,
            )
        return self._manager

    def _all_variables(self) -> list:
        return list(self.model.variables) + list(self.optimizer.variables) + [
            self.step, self.skipped_steps]

    def _broadcast_from_first_replica(self, variables) -> None:
        """Make every worker hold global replica 0's values (multi-worker only).

        A sum in which every replica but the first contributes zeros is an exact broadcast that
        needs no API beyond all-reduce.
        """
        if self.num_workers <= 1:
            return

        def cast(v):
            value = tf.convert_to_tensor(v)
            return value if value.dtype == tf.float32 else tf.cast(value, tf.float64)

        def pick(tensors):
            context = tf.distribute.get_replica_context()
            first = tf.equal(context.replica_id_in_sync_group, 0)
            masked = [tf.where(first, t, tf.zeros_like(t)) for t in tensors]
            # A collective packs its tensors together, so each dtype gets its own all-reduce.
            out = list(masked)
            for dtype in (tf.float32, tf.float64):
                where = [i for i, t in enumerate(masked) if t.dtype == dtype]
                if where:
                    reduced = context.all_reduce(
                        tf.distribute.ReduceOp.SUM, [masked[i] for i in where])
                    for i, t in zip(where, reduced):
                        out[i] = t
            return out

        @tf.function
        def broadcast(tensors):
            return self.strategy.experimental_local_results(
                self.strategy.run(pick, args=(tensors,)))[0]

        summed = broadcast([cast(v) for v in variables])
        for variable, value in zip(variables, summed):
            variable.assign(tf.cast(value, variable.dtype))

    def _barrier(self) -> None:
        """Wait until every worker gets here (a tiny all-reduce); no-op on one worker."""
        if self.num_workers > 1:
            self.strategy.reduce(
                tf.distribute.ReduceOp.SUM, self.strategy.run(lambda: tf.constant(1.0)), axis=None)

    # ------------------------------------------------------------------ checkpoints
    def restore(self, path: Optional[str] = None) -> Optional[str]:
        """Restore model, optimizer, ``step`` and ``skipped_steps`` from ``path`` (default: latest).

        Also reads the ``feature_stats.json`` saved beside it. Returns the path, or None when the
        folder holds no checkpoint. Raises :class:`CheckpointMismatch` when it does not fit.
        """
        path = path or check_checkpoint_dir(self.config)
        if path is None:
            return None
        try:
            check_model_matches(self.model, path)
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except CheckpointMismatch:
            raise
        except (AssertionError, ValueError, KeyError, tf.errors.OpError) as error:
            raise CheckpointMismatch(f"cannot restore {path}: {one_line(error)}") from None
        self._broadcast_from_first_replica(self._all_variables())
        stats_path = os.path.join(self.config.checkpoint_dir, STATS_NAME)
        if os.path.isfile(stats_path):
            self.stats = FeatureStats.load(stats_path)
        self.last_checkpoint = path
        self._last_saved_step = self.global_step
        self.log(f"resumed from {path} at step {self.global_step}")
        return path

    def write_run_files(self) -> None:
        """Write ``config.json`` and ``feature_stats.json`` into the checkpoint folder (chief)."""
        if not self.is_chief:
            return
        os.makedirs(self.config.checkpoint_dir, exist_ok=True)
        self.config.save(os.path.join(self.config.checkpoint_dir, CONFIG_NAME))
        if self.stats is not None:
            self.stats.save(os.path.join(self.config.checkpoint_dir, STATS_NAME))

    def save(self) -> Optional[str]:
        """Save a checkpoint numbered by the global step; returns its path (chief).

        Every worker must call this: a multi-worker save may run collectives. Non-chief workers
        write to a temporary folder that is removed at once.
        """
        step = self.global_step
        if self.is_chief:
            self.write_run_files()
            path = self.manager.save(checkpoint_number=step)
            self.last_checkpoint = path
        else:
            scratch = tempfile.mkdtemp(prefix=f"singlow-worker{self.worker_index}-")
            try:
                self.checkpoint.write(os.path.join(scratch, "ckpt"))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            path = None
        self._last_saved_step = step
        return path

    def export_weights(self, path: Optional[str] = None) -> Optional[str]:
        """Write the model weights alone as ``.weights.h5`` (default ``checkpoint_dir/glow.weights.h5``).

        Returns the path (None on non-chief workers, which write nothing).
        """
        path = path or os.path.join(self.config.checkpoint_dir, WEIGHTS_NAME)
        if not path.endswith(".weights.h5"):
            raise ValueError(f"weights must be saved to a .weights.h5 file, got {path}")
        if not self.is_chief:
            return None
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.model.save_weights(path)
        return path

    # ------------------------------------------------------------------ data
    def prepare_data(self) -> FeatureStats:
        """Make the records from ``config.data_dirs`` when given (incremental), and pick stats.

        The data is normalised with the statistics saved beside the checkpoint when resuming
        (so the model keeps seeing what it was trained on), else with the records' own.
        Returns the statistics in use (also ``self.stats``).

        Raises:
            DataError: missing or empty folders, or no usable song in the records.
        """
        config = self.config
        if config.data_dirs:
            if self.is_chief:
                self.loader.make(config.data_dirs, config.records_dir, log=self.log)
            self._barrier()  # the other workers read what the chief wrote (shared storage)
        data_stats = self.loader.stats(config.records_dir)
        if self.stats is None:
            self.stats = data_stats
        elif not (np.array_equal(self.stats.mean, data_stats.mean)
                  and np.array_equal(self.stats.std, data_stats.std)):
            self.log("the records' feature statistics changed since the checkpoint was written; "
                     "normalising with the checkpoint's")
        return self.stats

    def training_dataset(self, start_step: int = 0) -> tf.data.Dataset:
        """Global batches ``(B, H, W, C)`` for the steps from ``start_step`` on.

        Every worker reads its own random patches: auto-sharding is off and the seed depends on
        the worker and the step, so a resumed run does not replay the first epoch's patches.
        """
        key = f"{self.config.seed}/{self.worker_index}/{start_step}".encode()
        dataset = self.loader.load(self.config.records_dir, batch_size=self.global_batch_size,
                                   training=True, repeat=True, seed=zlib.crc32(key) & 0x7FFFFFFF,
                                   stats=self.stats)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.with_options(options)

    def init_batch(self) -> tf.Tensor:
        """The first global batch under ``config.seed``: identical on every worker."""
        dataset = self.loader.load(self.config.records_dir, batch_size=self.global_batch_size,
                                   training=True, repeat=True, seed=self.config.seed,
                                   stats=self.stats)
        return next(iter(dataset))

    def distribute(self, dataset: tf.data.Dataset):
        """``strategy.experimental_distribute_dataset`` of global batches."""
        return self.strategy.experimental_distribute_dataset(dataset)

    # ------------------------------------------------------------------ initialisation
    def initialize(self, batch=None) -> bool:
        """ActNorm's data-dependent initialisation on one global batch, once.

        Runs in cross-replica context, so every replica's copy gets the same values, and is then
        broadcast from the first worker. Does nothing (returns False) when the model is already
        initialised, e.g. restored from a checkpoint.
        """
        if self.model.is_initialized():
            return False
        batch = self.init_batch() if batch is None else batch
        with self.strategy.scope():
            self.model.initialize(tf.convert_to_tensor(batch, tf.float32))
        self._broadcast_from_first_replica(list(self.model.variables))
        return True

    # ------------------------------------------------------------------ the compiled step
    def _replica_gradients(self, x):
        """Replica context: gradients and metrics of the global-batch mean bits/dim, summed."""
        dims = float(np.prod(x.shape[1:])) if x.shape[1:].is_fully_defined() else float(self.config.dims)
        global_batch = float(self.global_batch_size)
        with tf.GradientTape() as tape:
            z, logdet = self.model.encode(x)
            bits = -(standard_normal_log_prob(z) + logdet) / (dims * LN2)  # (b,)
            loss = tf.nn.compute_average_loss(bits, global_batch_size=self.global_batch_size)
        grads = tape.gradient(loss, self.model.trainable_variables,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        partial = tf.stack([
            tf.reduce_sum(bits),
            tf.reduce_sum(tf.reduce_mean(z, axis=1)),
            tf.reduce_sum(tf.math.reduce_variance(z, axis=1)),
        ]) / global_batch
        grads, partial = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, [grads, partial])
        norm = tf.linalg.global_norm(grads)
        finite = tf.math.is_finite(partial[_BPD]) & tf.math.is_finite(norm)
        grads, _ = tf.clip_by_global_norm(grads, self.config.clip_norm, use_norm=norm)
        metrics = tf.concat([partial, [norm, tf.cast(finite, tf.float32)]], axis=0)
        return grads, metrics

    def _replica_apply(self, grads):
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))

    def _train_loop_fn(self, iterator, steps):
        """Run up to ``steps`` train steps; stop early after too many non-finite ones.

        Returns totals over the steps (see the ``_T_*`` indices): sums of bits/dim, z mean,
        z variance and gradient norm over applied steps, and the applied and skipped counts.
        """
        totals = tf.zeros([6], tf.float32)
        limit = tf.constant(self.config.max_nonfinite_steps, tf.int64)
        for _ in tf.range(steps):
            grads, metrics = self.strategy.run(self._replica_gradients, args=(next(iterator),))
            # All-reduced, hence the same on every replica and worker: all take the same branch.
            metrics = self.strategy.experimental_local_results(metrics)[0]
            if metrics[_FINITE] > 0.5:
                self.strategy.run(self._replica_apply, args=(grads,))
                self._nonfinite_run.assign(0)
                totals += tf.concat([metrics[:_FINITE], [1.0, 0.0]], axis=0)
            else:
                self.skipped_steps.assign_add(1)
                self._nonfinite_run.assign_add(1)
                totals += tf.constant([0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
            self.step.assign_add(1)
            if self._nonfinite_run >= limit:
                break
        return totals

    def train_steps(self, iterator, steps: int) -> Dict[str, float]:
        """Run ``steps`` train steps on a distributed iterator in one compiled call.

        Returns the means over the applied steps: ``bits_per_dim``, ``nll`` (nats per patch),
        ``z_mean``, ``z_var``, ``grad_norm`` (before clipping), and the counts ``applied`` and
        ``skipped``. Means are NaN when no step was applied.
        """
        totals = self._train_loop(iterator, tf.constant(int(steps), tf.int32)).numpy()
        return self._metrics(totals)

    def _metrics(self, totals: np.ndarray) -> Dict[str, float]:
        applied = float(totals[_T_APPLIED])
        mean = (lambda i: float(totals[i]) / applied) if applied else (lambda i: math.nan)
        bpd = mean(_T_BPD)
        return {
            "bits_per_dim": bpd, "nll": bpd * self.config.dims * LN2, "z_mean": mean(_T_Z_MEAN),
            "z_var": mean(_T_Z_VAR), "grad_norm": mean(_T_GRAD_NORM), "applied": int(applied),
            "skipped": int(totals[_T_SKIPPED]),
        }

    # ------------------------------------------------------------------ audio and summaries
    def _summary_clip(self) -> np.ndarray:
        """``SUMMARY_SECONDS`` from the middle of the first song in the records (cached)."""
        if self._clip_cache is None:
            song = next(iter(self.loader.songs(self.config.records_dir)))
            length = min(len(song.samples), int(SUMMARY_SECONDS * self.config.sampling_rate))
            start = (len(song.samples) - length) // 2
            self._clip_cache = np.asarray(song.samples[start:start + length], np.float32)
        return self._clip_cache

    def make_clips(self) -> Clips:
        """Reconstruct a real song segment (with its phase) and draw a sample of the same length."""
        config, stats = self.config, self.stats
        original = self._summary_clip()
        features = song_to_features(original, config, stats)
        z, _ = self.model.encode(features.x[None])
        rebuilt = self.model.decode(z)[0].numpy()
        reconstruction = features_to_song(rebuilt, config, stats, song=features, use_phase=True)
        drawn = self.model.sample(1, temperature=config.temperature,
                                  time_steps=features.x.shape[0], seed=config.seed)[0].numpy()
        sample = features_to_song(drawn, config, stats)
        clip = lambda a: np.clip(np.nan_to_num(np.asarray(a, np.float32)), -1.0, 1.0)
        return Clips(clip(original), clip(reconstruction), clip(sample))

    def write_audio_summaries(self, step: Optional[int] = None) -> Clips:
        """Audio and spectrogram images of a reconstruction and a sample, at ``step``."""
        step = self.global_step if step is None else step
        clips = self.make_clips()
        if self._writer is None:
            return clips
        rate = self.config.sampling_rate
        from utils.metrics import snr_db

        with self._writer.as_default(step=step):
            for name in ("reconstruction", "sample"):
                samples = getattr(clips, name)
                tf.summary.audio(name, samples[None, :, None], rate, max_outputs=1,
                                 description="real song segment -> encode -> decode (its phase)"
                                 if name == "reconstruction" else
                                 f"sample at temperature {self.config.temperature}")
                log_mag = spectrogram(samples, self.config)[0].numpy()
                tf.summary.image(f"{name}_spectrogram", spectrogram_image(log_mag)[None], max_outputs=1)
            tf.summary.scalar("reconstruction_snr_db", min(snr_db(clips.original, clips.reconstruction), 200.0))
        self._writer.flush()
        return clips

    def _write_scalars(self, metrics: Dict[str, float], step: int, steps_per_second: float) -> None:
        if self._writer is None:
            return
        with self._writer.as_default(step=step):
            if metrics["applied"]:
                for name in ("nll", "bits_per_dim", "z_mean", "z_var", "grad_norm"):
                    tf.summary.scalar(name, metrics[name])
            tf.summary.scalar("learning_rate", float(self.schedule(self.optimizer.iterations)))
            tf.summary.scalar("skipped_steps", int(self.skipped_steps.numpy()))
            tf.summary.scalar("steps_per_second", steps_per_second)

    def write_outputs(self, clips: Optional[Clips] = None) -> Dict[str, str]:
        """Write ``original.wav``, ``reconstruction.wav`` and ``sample.wav`` to ``config.output_dir``."""
        if not self.is_chief:
            return {}
        clips = clips or self.make_clips()
        paths = {}
        for name in ("original", "reconstruction", "sample"):
            path = os.path.join(self.config.output_dir, f"{name}.wav")
            save_wav(path, getattr(clips, name), self.config.sampling_rate)
            paths[name] = path
        return paths

    # ------------------------------------------------------------------ the loop
    @contextlib.contextmanager
    def _graceful_interrupt(self):
        """First Ctrl-C or SIGTERM: finish the running call, save, stop. A second one: stop at once.

        SIGTERM is what schedulers and ``docker stop`` send before killing a job, so a pre-empted
        run keeps the step it reached instead of redoing a checkpoint interval.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

        def request_stop(signum, frame):
            self._stop_signal = signum
            for other, handler in previous.items():
                signal.signal(other, handler)
            how = "interrupted" if signum == signal.SIGINT else "terminated"
            self.log(f"{how}: saving a checkpoint after the running steps "
                     f"({'Ctrl-C' if signum == signal.SIGINT else 'the signal'} again to abort)")

        for signum in STOP_SIGNALS:
            signal.signal(signum, request_stop)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _agreed_stop_signal(self) -> Optional[int]:
        """The signal that stops training after this chunk, the same on every worker; None: go on.

        With several workers, a signal that reaches any one of them stops all of them after the
        same chunk, so they save the same step together and none is left waiting alone in a
        collective. SIGTERM wins over SIGINT when both arrived.
        """
        if self.num_workers <= 1:
            return self._stop_signal
        local = [float(self._stop_signal == signum) for signum in STOP_SIGNALS]
        counts = self._sum_over_workers(tf.constant(local, tf.float32)).numpy()
        agreed = [signum for signum, count in zip(STOP_SIGNALS, counts) if count > 0]
        return max(agreed) if agreed else None

    @tf.function
    def _sum_over_workers(self, value):
        """All-reduce (sum) of a small tensor over every replica of every worker."""
        per_replica = self.strategy.run(lambda: tf.identity(value))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def _make_bar(self, start: int, total: int):
        from tqdm import tqdm

        enabled = self.is_chief and (self.progress if self.progress is not None else sys.stderr.isatty())
        return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                    disable=not enabled, leave=False)

    def fit(self) -> TrainResult:
        """Train until ``config.epochs * config.steps_per_epoch`` steps (resuming where it stopped).

        Saves a checkpoint every ``checkpoint_every`` steps and at each epoch's end, writes
        TensorBoard summaries to ``config.logdir`` (scalars every ``log_every`` steps, audio and
        spectrograms every epoch), prints one line per epoch, and at the end exports
        ``glow.weights.h5`` and the wavs of :meth:`write_outputs`.

        Raises:
            TrainingDiverged: ``max_nonfinite_steps`` consecutive non-finite steps.
            DataError: no usable data.
        """
        config = self.config
        total = config.total_steps
        history: List[dict] = []
        self.prepare_data()
        self.write_run_files()
        start = self.global_step
        if start >= total:
            self.log(f"already trained to step {start} (epochs * steps_per_epoch = {total}); "
                     "raise --epochs to train on")
            return TrainResult(start, history, checkpoint=self.last_checkpoint)
        if self.is_chief:
            os.makedirs(config.logdir, exist_ok=True)
            self._writer = tf.summary.create_file_writer(config.logdir)
        self.initialize()
        iterator = iter(self.distribute(self.training_dataset(start)))
        self._stop_signal = None
        epoch_totals, epoch_seconds = np.zeros(6), 0.0
        try:
            with self._graceful_interrupt():
                self.log(f"training {self.model.name}: K={config.k_glow} L={config.l_glow} "
                         f"hidden={config.hidden_channels}, patches {config.input_shape} "
                         f"(D={config.dims}), global batch {self.global_batch_size} on "
                         f"{self.strategy.num_replicas_in_sync} replica(s), steps {start} -> {total}")
                self._bar = self._make_bar(start, total)
                step = start
                while step < total:
                    epoch_end = (step // config.steps_per_epoch + 1) * config.steps_per_epoch
                    next_save = (step // config.checkpoint_every + 1) * config.checkpoint_every
                    count = min(config.log_every, epoch_end - step, next_save - step)
                    totals, seconds = self._run_chunk(iterator, count)
                    step = self.global_step
                    epoch_totals += totals
                    epoch_seconds += seconds
                    if step % config.checkpoint_every == 0:
                        self.save()
                    if step % config.steps_per_epoch == 0:
                        history.append(self._end_epoch(step, epoch_totals, epoch_seconds))
                        epoch_totals, epoch_seconds = np.zeros(6), 0.0
                    # Not assigned to _stop_signal unless agreed: a signal that lands during the
                    # all-reduce must still count at the next chunk.
                    stop = self._agreed_stop_signal()
                    if stop is not None:
                        self._stop_signal = stop
                        break
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        if self._last_saved_step != self.global_step:
            self.save()
        if self._stop_signal is not None:
            how = "interrupted" if self._stop_signal == signal.SIGINT else "terminated"
            self.log(f"{how} at step {self.global_step}; checkpoint saved: {self.last_checkpoint}")
            return TrainResult(self.global_step, history, True, self.last_checkpoint,
                               stop_signal=int(self._stop_signal))
        outputs = {}
        weights = self.export_weights()
        if weights:
            outputs["weights"] = weights
        outputs.update(self.write_outputs(self._last_clips))
        self.log(f"done at step {self.global_step}: checkpoint {self.last_checkpoint}, "
                 f"weights {weights}, audio in {config.output_dir}")
        return TrainResult(self.global_step, history, False, self.last_checkpoint, outputs)

    def _run_chunk(self, iterator, count: int) -> Tuple[np.ndarray, float]:
        """One compiled call of ``count`` steps, then its scalars, progress and non-finite checks."""
        began = time.perf_counter()
        totals = self._train_loop(iterator, tf.constant(count, tf.int32)).numpy()
        seconds = time.perf_counter() - began
        step = self.global_step
        metrics = self._metrics(totals)
        ran = metrics["applied"] + metrics["skipped"]
        rate = ran / max(seconds, 1e-9)
        self._write_scalars(metrics, step, rate)
        if self._bar is not None:
            self._bar.update(ran)
            self._bar.set_postfix({"loss": f"{metrics['nll']:.1f}",
                                   "bpd": f"{metrics['bits_per_dim']:.4f}",
                                   "steps/s": f"{rate:.2f}"}, refresh=False)
        if metrics["skipped"]:
            self.log(f"step {step}: skipped {metrics['skipped']} non-finite step(s) (NaN/Inf loss "
                     f"or gradient; {int(self.skipped_steps.numpy())} in all)")
        run = int(self._nonfinite_run.numpy())
        if run >= self.config.max_nonfinite_steps:
            raise TrainingDiverged(
                f"training stopped at step {step}: {run} consecutive non-finite steps (NaN/Inf "
                f"loss or gradient); the last checkpoint ({self.last_checkpoint or 'none'}) is "
                "intact; try a lower --learning_rate, a longer --warmup_steps or a smaller "
                "--clip_norm")
        return totals, seconds

    def _end_epoch(self, step: int, totals: np.ndarray, seconds: float) -> dict:
        config = self.config
        metrics = self._metrics(totals)
        ran = metrics["applied"] + metrics["skipped"]
        epoch = step // config.steps_per_epoch
        record = {
            "epoch": epoch, "step": step, "nll": metrics["nll"],
            "bits_per_dim": metrics["bits_per_dim"], "z_mean": metrics["z_mean"],
            "z_var": metrics["z_var"], "skipped_steps": metrics["skipped"],
            "steps_per_second": ran / max(seconds, 1e-9),
        }
        if self._last_saved_step != step:
            self.save()
        if self.is_chief:
            self._last_clips = self.write_audio_summaries(step)
        self.log(f"epoch {epoch}/{config.epochs} (step {step}): nll {record['nll']:.1f} nats, "
                 f"{record['bits_per_dim']:.4f} bits/dim, z mean {record['z_mean']:+.3f} "
                 f"var {record['z_var']:.3f}, {record['steps_per_second']:.2f} steps/s, "
                 f"{record['skipped_steps']} skipped")
        return record

"""What a training run shows and leaves behind: TensorBoard summaries, the progress bar, the
one-line messages and the output wavs.

:class:`TrainingReport` is the trainer's only way to the outside: it is told what happened
(:meth:`~TrainingReport.chunk` after every compiled call, :meth:`~TrainingReport.epoch` after every
epoch) and decides what to write. Only the chief worker writes or prints anything.

TensorBoard tags (``config.logdir``): scalars ``nll`` (nats per patch), ``bits_per_dim``,
``z_mean``, ``z_var``, ``grad_norm`` (mean over the applied steps of each compiled call),
``learning_rate``, ``skipped_steps``, ``steps_per_second``; once per epoch audio
``reconstruction`` and ``sample``, images ``reconstruction_spectrogram`` and
``sample_spectrogram``, the scalar ``reconstruction_snr_db`` and, when songs are held out
(:mod:`utils.training.validation`), ``val_bits_per_dim`` and ``val_nll`` (nats per patch) of the
held-out songs.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from common_definitions import Config
from utils.audio.features import FeatureStats, features_to_song, song_to_features
from utils.audio.signal import save_wav, spectrogram
from utils.evaluation.metrics import snr_db
from utils.evaluation.plots import spectrogram_image

# Length of the clip reconstructed and sampled for TensorBoard and the output wavs: long enough
# to hear a phrase, short enough that Griffin-Lim on it costs a second or two per epoch.
SUMMARY_SECONDS = 4.0
# SNR reported for a reconstruction that is exact to the last bit (an infinite SNR).
MAX_SNR_DB = 200.0


@dataclasses.dataclass
class Clips:
    """Audio made for the summaries: float32 samples in [-1, 1] at ``config.sampling_rate``.

    original: a real song segment; reconstruction: decode(encode(original)) with its phase;
    sample: a draw at ``config.temperature`` (Griffin-Lim for spectrograms).
    """

    original: np.ndarray
    reconstruction: np.ndarray
    sample: np.ndarray


def summary_clip(records, config: Config, label: Optional[str] = None
                 ) -> Tuple[np.ndarray, str]:
    """``SUMMARY_SECONDS`` (or all, when shorter) from the middle of the first song of
    ``records`` (a :class:`~utils.data.records.Records`; of the singer ``label`` when given),
    float32, and the song's label."""
    song = next(s for s in records.songs() if label is None or s.label == label)
    length = min(len(song.samples), int(SUMMARY_SECONDS * config.sampling_rate))
    start = (len(song.samples) - length) // 2
    return np.asarray(song.samples[start:start + length], np.float32), song.label


def make_clips(model, config: Config, stats: FeatureStats, original: np.ndarray,
               singer: Optional[int] = None) -> Clips:
    """Reconstruct ``original`` (with its phase) and draw a sample of the same length, under
    the singer id ``singer`` for a conditional model. A parallel model (``original`` a song of
    its source singer, id 0) reconstructs it given its own frames, and its sample is the song's
    conversion to the first other singer (id 1): a draw under the song's frames, with its F0."""
    features = song_to_features(original, config, stats)
    ids = None if singer is None else tf.constant([singer])
    parallel = getattr(model, "parallel", False)
    context = features.x[None] if parallel else None
    z, _ = model.encode(features.x[None], ids, context)
    rebuilt = model.decode(z, ids, context)[0].numpy()
    reconstruction = features_to_song(rebuilt, config, stats, song=features, use_phase=True)
    drawn = model.sample(1, temperature=config.temperature, time_steps=features.x.shape[0],
                         seed=config.seed, singer=tf.constant([1]) if parallel else ids,
                         context=context)[0].numpy()
    sample = features_to_song(drawn, config, stats, song=features if parallel else None)
    clip = lambda a: np.clip(np.nan_to_num(np.asarray(a, np.float32)), -1.0, 1.0)  # noqa: E731
    return Clips(clip(original), clip(reconstruction), clip(sample))


class TrainingReport:
    """TensorBoard, progress bar and messages of one :meth:`Trainer.fit` (chief only).

    Args:
        config: the run's configuration (``logdir``, ``output_dir``, rates).
        is_chief: only the chief writes and prints; other workers' calls do nothing.
        log: where one-line messages go (through the bar while it is shown).
        progress: show a tqdm bar; None shows it when stderr is a terminal.
    """

    def __init__(self, config: Config, is_chief: bool = True,
                 log: Callable[[str], None] = print, progress: Optional[bool] = None):
        self.config = config
        self.is_chief = is_chief
        self._log = log
        self.progress = progress
        self._bar = None
        self._writer = None
        self._clip: Optional[Tuple[np.ndarray, str]] = None
        self.last_clips: Optional[Clips] = None

    def log(self, message: str) -> None:
        if not self.is_chief:
            return
        if self._bar is not None and not self._bar.disable:
            self._bar.write(message)
        else:
            self._log(message)

    # ------------------------------------------------------------------ a run's lifetime
    def open(self, start: int, total: int) -> None:
        """Open the event file in ``config.logdir`` and a bar from step ``start`` to ``total``."""
        if not self.is_chief:
            return
        from tqdm import tqdm

        os.makedirs(self.config.logdir, exist_ok=True)
        self._writer = tf.summary.create_file_writer(self.config.logdir)
        enabled = self.progress if self.progress is not None else sys.stderr.isatty()
        self._bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                         disable=not enabled, leave=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ what happened
    def chunk(self, step: int, metrics, learning_rate: float, skipped_total: int) -> None:
        """Scalars and progress after one compiled call that ended at ``step``.

        ``metrics`` is the call's :class:`pipeline.StepMetrics` (means over applied steps).
        """
        if not self.is_chief:
            return
        if self._writer is not None:
            with self._writer.as_default(step=step):
                if metrics.applied:
                    for name in ("nll", "bits_per_dim", "z_mean", "z_var", "grad_norm"):
                        tf.summary.scalar(name, getattr(metrics, name))
                tf.summary.scalar("learning_rate", learning_rate)
                tf.summary.scalar("skipped_steps", skipped_total)
                tf.summary.scalar("steps_per_second", metrics.steps_per_second)
        if self._bar is not None:
            self._bar.update(metrics.ran)
            self._bar.set_postfix({"loss": f"{metrics.nll:.1f}",
                                   "bpd": f"{metrics.bits_per_dim:.4f}",
                                   "steps/s": f"{metrics.steps_per_second:.2f}"}, refresh=False)
        if metrics.skipped:
            self.log(f"step {step}: skipped {metrics.skipped} non-finite step(s) (NaN/Inf loss "
                     f"or gradient; {skipped_total} in all)")

    def starting(self, model, replicas: int, start: int, total: int) -> None:
        """The line that opens training: the model, the patches, the batch and the steps."""
        config = self.config
        self.log(f"training {model.name}: K={config.k_glow} L={config.l_glow} "
                 f"hidden={config.hidden_channels}, patches {config.input_shape} "
                 f"(D={config.dims}), global batch {config.batch_size} on {replicas} "
                 f"replica(s), steps {start} -> {total}"
                 + ("" if config.mixed_precision == "off" else
                    f", {config.mixed_precision} convolutions"))

    def epoch(self, epoch: int, step: int, metrics, validation=None) -> None:
        """The one line printed at the end of an epoch (its :class:`pipeline.StepMetrics`, and
        the held-out :class:`utils.training.validation.ValidationMetrics` when the run validates:
        ``val B bits/dim``, with ``(best)`` when it is the lowest so far)."""
        val = "" if validation is None else (
            f", val {validation.bits_per_dim:.4f} bits/dim" + (" (best)" if validation.best else ""))
        self.log(f"epoch {epoch}/{self.config.epochs} (step {step}): nll {metrics.nll:.1f} nats, "
                 f"{metrics.bits_per_dim:.4f} bits/dim{val}, z mean {metrics.z_mean:+.3f} "
                 f"var {metrics.z_var:.3f}, {metrics.steps_per_second:.2f} steps/s, "
                 f"{metrics.skipped} skipped")

    def validation(self, step: int, metrics) -> None:
        """``val_bits_per_dim`` and ``val_nll`` (nats per patch) of the held-out songs at
        ``step`` (a :class:`utils.training.validation.ValidationMetrics`)."""
        if not self.is_chief or self._writer is None:
            return
        with self._writer.as_default(step=step):
            tf.summary.scalar("val_bits_per_dim", metrics.bits_per_dim,
                              description="mean bits/dim over every aligned patch of the "
                                          "held-out songs")
            tf.summary.scalar("val_nll", metrics.nll, description="nats per patch, held out")
        self._writer.flush()

    def clips(self, model, data) -> Clips:
        """A reconstruction and a sample of ``SUMMARY_SECONDS`` from the middle of the first
        song of ``data`` (the run's :class:`utils.training.data.TrainingData`: its records,
        normalisation and singer ids) through ``model``."""
        source = data.singers[0] if data.pairs is not None else None
        self._clip = self._clip or summary_clip(data.records, self.config, source)
        samples, label = self._clip
        return make_clips(model, self.config, data.stats, samples, data.singer_id(label))

    def audio(self, step: int, clips: Clips) -> None:
        """Audio and spectrogram images of a reconstruction and a sample, at ``step``."""
        self.last_clips = clips
        if not self.is_chief or self._writer is None:
            return
        with self._writer.as_default(step=step):
            for name in ("reconstruction", "sample"):
                samples = getattr(clips, name)
                tf.summary.audio(name, samples[None, :, None], self.config.sampling_rate,
                                 max_outputs=1,
                                 description="real song segment -> encode -> decode (its phase)"
                                 if name == "reconstruction" else
                                 f"sample at temperature {self.config.temperature}")
                log_mag = spectrogram(samples, self.config)[0].numpy()
                tf.summary.image(f"{name}_spectrogram", spectrogram_image(log_mag)[None],
                                 max_outputs=1)
            tf.summary.scalar("reconstruction_snr_db",
                              min(snr_db(clips.original, clips.reconstruction), MAX_SNR_DB))
        self._writer.flush()

    def write_outputs(self, clips: Clips) -> Dict[str, str]:
        """Write ``original.wav``, ``reconstruction.wav`` and ``sample.wav`` to
        ``config.output_dir``; returns name -> path (empty on other workers)."""
        if not self.is_chief:
            return {}
        paths = {}
        for name in ("original", "reconstruction", "sample"):
            path = os.path.join(self.config.output_dir, f"{name}.wav")
            save_wav(path, getattr(clips, name), self.config.sampling_rate)
            paths[name] = path
        return paths

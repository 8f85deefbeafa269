"""The model's features: training patches, whole songs, and their normalisation.

Both features (``Config.feature``) are shaped ``(H, W, C)`` with time on ``H``:

- ``spectrogram``: ``log(|STFT| + log_floor)`` (natural log of a linear amplitude),
  frames x bins x 1, with the STFT of :mod:`utils.audio.signal`. Training patches are the frames
  of an unpadded slice of ``Config.patch_samples`` samples (``center=False``); a whole song uses
  the centred STFT and keeps its phase, so it can be turned back into the same audio.
- ``waveform``: ``channel_size`` consecutive samples folded into channels:
  ``(window_size // channel_size, 1, channel_size)``.

Features are normalised per channel of the last-but-one axis (per frequency bin for spectrograms,
one scalar for waveforms) with :class:`FeatureStats` computed over the training records from
summed :func:`feature_moments` (:class:`MomentSum`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from common_definitions import Config
from utils.audio.signal import (
    StftShape,
    griffin_lim,
    log_magnitude,
    spectrogram,
    spectrogram_to_audio,
    stft,
)
from utils.files import atomic_write_text

# Lower bound on a normalisation standard deviation, so that a constant bin (e.g. above the
# cut-off of a low-passed corpus) is not blown up by 1/std at inference.
STD_FLOOR = 1e-3


# ---------------------------------------------------------------------------------- patches
def waveform_patches(samples, config: Config) -> tf.Tensor:
    """Fold ``samples [..., steps * channel_size]`` into ``[..., steps, 1, channel_size]``."""
    samples = tf.convert_to_tensor(samples, tf.float32)
    size = config.channel_size
    lead = tf.shape(samples)[:-1]
    shape = tf.concat([lead, [tf.shape(samples)[-1] // size, 1, size]], axis=0)
    return tf.reshape(samples, shape)


def patch_features(windows, config: Config) -> tf.Tensor:
    """Unnormalised model input ``[..., H, W, C]`` from ``config.patch_samples``-sample windows.

    Pure TensorFlow, so it runs inside ``tf.data``; with ``windows [..., patch_samples]`` the
    result has exactly ``config.input_shape``.
    """
    if config.feature == "spectrogram":
        return log_magnitude(windows, config, center=False)[..., None]
    if config.feature == "world":  # windows of cached WORLD frames are the features already
        return tf.convert_to_tensor(windows, tf.float32)
    return waveform_patches(windows, config)


def stats_fields(config: Config) -> dict:
    """The Config fields that normalisation statistics of ``config.feature`` depend on."""
    if config.feature == "spectrogram":
        names = ("feature", "sampling_rate", "n_fft", "hop_length", "log_floor")
    elif config.feature == "world":
        names = ("feature", "sampling_rate", "hop_length", "world_dims", "world_f0")
    else:
        names = ("feature", "sampling_rate")
    return {name: getattr(config, name) for name in names}


_MOMENT_FUNCTIONS: dict = {}


def stats_frame_stride(config: Config) -> int:
    """Spectrogram statistics use every this-many-th frame of the patch frame grid.

    ``ceil(n_fft / hop_length)``: the frames used then tile the audio without overlapping, so
    every sample is seen once instead of ``n_fft / hop`` times. Being a fixed subset of the same
    grid, they are an unbiased sample of the training frames, for a fraction of the FFTs (the
    statistics pass dominates the time to make records).
    """
    return -(-config.n_fft // config.hop_length)


def _spectrogram_moments(config: Config):
    """One traced function per STFT setting, so a corpus of varied lengths traces it once."""
    key = (config.n_fft, config.hop_length, config.log_floor)
    if key not in _MOMENT_FUNCTIONS:
        shape = StftShape(config.n_fft, stats_frame_stride(config) * config.hop_length)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)], autograph=False)
        def moments(samples):
            spec = stft(samples, shape, center=False)
            values = tf.cast(tf.math.log(tf.abs(spec) + config.log_floor), tf.float64)
            count = tf.cast(tf.shape(values)[0], tf.float64)
            return count, tf.reduce_sum(values, 0), tf.reduce_sum(values * values, 0)

        _MOMENT_FUNCTIONS[key] = moments
    return _MOMENT_FUNCTIONS[key]


def _stats_layout(config: Config) -> Tuple[int, int]:
    """``(number of statistics, channels)`` of ``config.feature``'s normalisation."""
    if config.feature == "spectrogram":
        return config.n_bins, 1
    if config.feature == "world":
        return config.world_dims * 2, 2
    return 1, 1


def world_moments(features: np.ndarray) -> Tuple[float, np.ndarray, np.ndarray]:
    """``(count, sum, sum of squares)`` per ``(coefficient, channel)`` of WORLD features
    ``(T, world_dims, 2)`` (float64 sums of shape ``(world_dims * 2,)``)."""
    values = np.asarray(features, np.float64).reshape(len(features), -1)
    return float(len(values)), values.sum(axis=0), np.square(values).sum(axis=0)


def feature_moments(samples: np.ndarray, config: Config) -> Tuple[float, np.ndarray, np.ndarray]:
    """``(count, sum, sum of squares)`` of one song's feature values per normalisation channel.

    Spectrogram: over the frames of the unpadded STFT (what training patches contain), taking
    every :func:`stats_frame_stride`-th one, per bin, shapes ``(bins,)``. Waveform: over the
    samples, shapes ``(1,)``. Sums are float64 so that the moments of many songs can be added
    without loss.
    """
    if config.feature == "spectrogram":
        if len(samples) < config.n_fft:
            return 0.0, np.zeros(config.n_bins), np.zeros(config.n_bins)
        count, total, squares = _spectrogram_moments(config)(tf.constant(samples, tf.float32))
        return float(count), total.numpy(), squares.numpy()
    if config.feature == "world":
        from utils.audio.world import analyse

        return world_moments(analyse(samples, config).features)
    values = np.asarray(samples, np.float64)
    return float(values.size), np.array([values.sum()]), np.array([np.dot(values, values)])


@dataclasses.dataclass
class FeatureStats:
    """Per-channel normalisation statistics: ``x_norm = (x - mean) / std``.

    ``mean`` and ``std`` have shape ``(bins,)`` for spectrograms (one per frequency bin, in nats of
    log-amplitude) and ``(1,)`` for waveforms (amplitude); they apply along the ``W`` axis of
    ``(..., H, W, C)`` features, shared by the channels. With ``channels > 1`` (the ``world``
    feature: ``(world_dims * 2,)``) there is one per ``(W, C)`` pair, laid out ``W``-major.
    ``fields`` records the Config fields they were computed under and ``source`` a fingerprint of
    the records they were computed from.
    """

    mean: np.ndarray
    std: np.ndarray
    fields: dict = dataclasses.field(default_factory=dict)
    count: float = 0.0
    source: str = ""
    channels: int = 1

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, np.float32).reshape(-1)
        self.std = np.asarray(self.std, np.float32).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise ValueError(f"mean {self.mean.shape} and std {self.std.shape} shapes differ")
        if not (np.all(np.isfinite(self.mean)) and np.all(self.std > 0)):
            raise ValueError("feature statistics must be finite with std > 0")
        if self.channels < 1 or self.mean.size % self.channels:
            raise ValueError(f"{self.mean.size} statistics do not split into {self.channels} "
                             "channels")

    @classmethod
    def identity(cls, config: Config) -> "FeatureStats":
        """Statistics that leave features unchanged (mean 0, std 1)."""
        size, channels = _stats_layout(config)
        return cls(np.zeros(size), np.ones(size), stats_fields(config), channels=channels)

    @classmethod
    def from_moments(cls, config: Config, count: float, total, squares,
                     source: str = "") -> "FeatureStats":
        """Statistics from summed :func:`feature_moments`; std is floored at :data:`STD_FLOOR`."""
        if count <= 0:
            raise ValueError("no feature values to compute statistics from")
        mean = np.asarray(total, np.float64) / count
        var = np.maximum(np.asarray(squares, np.float64) / count - mean * mean, 0.0)
        std = np.maximum(np.sqrt(var), STD_FLOOR)
        return cls(mean, std, stats_fields(config), float(count), source,
                   _stats_layout(config)[1])

    def matches(self, config: Config) -> bool:
        """True when these statistics were computed under ``config``'s feature settings."""
        return self.fields == stats_fields(config)

    def save(self, path: str) -> None:
        """Write as JSON (atomically)."""
        data = {
            "mean": self.mean.tolist(), "std": self.std.tolist(), "fields": self.fields,
            "count": self.count, "source": self.source, "channels": self.channels,
        }
        atomic_write_text(path, json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: str) -> "FeatureStats":
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return cls(data["mean"], data["std"], data.get("fields", {}), data.get("count", 0.0),
                   data.get("source", ""), int(data.get("channels", 1)))

    def _broadcast(self, x):
        # (W, channels): along the W axis of (..., H, W, C); one channel is shared by all.
        return (self.mean.reshape(-1, self.channels), self.std.reshape(-1, self.channels))

    def normalize(self, x):
        """``(x - mean) / std`` for ``x`` of shape ``(..., H, W, C)`` (tf tensor or numpy)."""
        mean, std = self._broadcast(x)
        if isinstance(x, (tf.Tensor, tf.Variable)):
            return (x - tf.constant(mean, x.dtype)) / tf.constant(std, x.dtype)
        return ((np.asarray(x) - mean) / std).astype(np.float32)

    def denormalize(self, x):
        """Inverse of :meth:`normalize`."""
        mean, std = self._broadcast(x)
        if isinstance(x, (tf.Tensor, tf.Variable)):
            return x * tf.constant(std, x.dtype) + tf.constant(mean, x.dtype)
        return (np.asarray(x) * std + mean).astype(np.float32)


class MomentSum:
    """Running sums of :func:`feature_moments` over songs, turned into :class:`FeatureStats` at the
    end (float64, so the sums of many songs lose nothing)."""

    def __init__(self, config: Config):
        self.config, self.count, self.total, self.squares = config, 0.0, 0.0, 0.0

    def add(self, samples: np.ndarray) -> None:
        """Add the moments of one song, ``samples (N,)`` at ``config.sampling_rate``."""
        count, total, squares = feature_moments(samples, self.config)
        self.count, self.total, self.squares = (
            self.count + count, self.total + total, self.squares + squares)

    def stats(self, source: str) -> FeatureStats:
        """The statistics of every song added; ``source`` names them (a records fingerprint)."""
        return FeatureStats.from_moments(self.config, self.count, self.total, self.squares, source)


@dataclasses.dataclass
class SongFeatures:
    """A whole song as model input for the fully convolutional model.

    x: normalised features ``(T, W, C)`` float32, ``T`` padded up to a multiple of
        ``config.time_multiple`` with the features of digital silence.
    phase: STFT phase ``(num_steps, bins)`` in radians (spectrogram), else ``None``.
    num_samples: length of the song in samples.
    num_steps: time steps of the song before padding.
    f0: WORLD's F0 ``(num_steps,)`` in Hz, 0 where unvoiced (``world`` feature), else ``None``:
        what every decode resynthesises with, so the melody is kept exactly.
    samples: the analysed song ``(num_samples,)`` float32 (``world`` feature, else ``None``):
        what a change is rendered on (:func:`utils.migration.rendering.on_source`).
    """

    x: np.ndarray
    phase: Optional[np.ndarray]
    num_samples: int
    num_steps: int
    f0: Optional[np.ndarray] = None
    samples: Optional[np.ndarray] = None


def _pad_steps(features: np.ndarray, multiple: int, value: float) -> np.ndarray:
    missing = -len(features) % multiple
    if not missing:
        return features
    filler = np.full((missing,) + features.shape[1:], value, features.dtype)
    return np.concatenate([features, filler])


def song_to_features(samples: np.ndarray, config: Config, stats: FeatureStats) -> SongFeatures:
    """Features of a whole song ``samples [N]`` (at ``config.sampling_rate``).

    Spectrogram: the centred STFT (``1 + ceil(N / hop)`` frames) with its phase. World: WORLD's
    analysis, a frame per hop, with its F0 (:mod:`utils.audio.world`). Waveform: the samples
    zero-padded to a multiple of ``channel_size`` and folded. ``T`` is then padded to a multiple
    of ``config.time_multiple`` (with silence, or the last frame for world).
    """
    samples = np.asarray(samples, np.float32).reshape(-1)
    if config.feature == "world":
        from utils.audio.world import analyse

        analysis = analyse(samples, config)
        features = analysis.features
        padded = np.concatenate([features, np.repeat(
            features[-1:], -len(features) % config.time_multiple, axis=0)])
        return SongFeatures(stats.normalize(padded), None, len(samples), len(features),
                            analysis.f0, samples)
    if config.feature == "spectrogram":
        log_mag, phase = spectrogram(samples, config)
        features = log_mag.numpy()[..., None]
        phase = phase.numpy()
        silence = float(np.log(np.float32(config.log_floor)))
    else:
        size = config.channel_size
        padded = np.pad(samples, (0, -len(samples) % size))
        features = padded.reshape(-1, 1, size)
        phase, silence = None, 0.0
    num_steps = len(features)
    features = _pad_steps(features, config.time_multiple, silence)
    return SongFeatures(stats.normalize(features), phase, len(samples), num_steps)


# Frames this far below the loudest frame of their singer (in a batch) are silence.
SILENCE_DB = 60.0


def frame_levels_db(x, config: Config, stats: FeatureStats) -> np.ndarray:
    """The power of every frame of normalised features ``x (B, H, W, C)``, dB (relative to a
    full-scale unit amplitude), ``(B, H)``: the STFT bins' summed power for spectrograms, the
    decoded WORLD envelope's mean power for world, the samples' mean square for waveforms."""
    raw = np.asarray(stats.denormalize(np.asarray(x, np.float32)), np.float64)
    if config.feature == "spectrogram":
        amplitude = np.maximum(np.exp(raw[..., 0]) - config.log_floor, 0.0)
        power = np.sum(amplitude ** 2, axis=-1)
    elif config.feature == "world":
        from utils.audio.world import envelope_power

        power = envelope_power(raw.reshape(-1, *raw.shape[2:]), config).reshape(raw.shape[:2])
    else:
        power = np.mean(raw ** 2, axis=(2, 3))
    return 10.0 * np.log10(np.maximum(power, 1e-30))


def sounding_frames(x, singer, config: Config, stats: FeatureStats,
                    silence_db: float = SILENCE_DB) -> np.ndarray:
    """``(B, H)`` bool: the frames of ``x (B, H, W, C)`` no more than ``silence_db`` below the
    loudest frame of the same singer (``singer (B,)`` ids) in the batch."""
    levels = frame_levels_db(x, config, stats)
    singer = np.asarray(singer).reshape(-1)
    loudest = np.zeros(len(singer))
    for s in np.unique(singer):
        loudest[singer == s] = levels[singer == s].max()
    return levels >= loudest[:, None] - float(silence_db)


def features_to_song(
    x,
    config: Config,
    stats: FeatureStats,
    song: Optional[SongFeatures] = None,
    use_phase: bool = True,
    semitones: float = 0.0,
) -> np.ndarray:
    """Samples float32 ``[num_samples]`` from normalised features ``x (T, W, C)``.

    With ``song`` (the :class:`SongFeatures` ``x`` came from, or was migrated from), its padding
    is dropped and its length restored; spectrograms use its phase (exact inverse) unless
    ``use_phase`` is False, world features its F0 (transposed by ``semitones``). Without
    ``song`` all ``T`` steps are kept, spectrograms are inverted with Griffin-Lim and world
    features are synthesised unvoiced (no F0: a whisper). Waveforms are simply unfolded.
    (A migration renders a world change on the song's own samples instead:
    :func:`utils.migration.rendering.on_source`.)
    """
    features = stats.denormalize(np.asarray(x, np.float32))
    steps = song.num_steps if song is not None else len(features)
    features = features[:steps]
    if config.feature == "world":
        from utils.audio.world import synthesize

        f0 = song.f0 if song is not None else np.zeros(steps)
        num_samples = song.num_samples if song is not None else (steps - 1) * config.hop_length
        return synthesize(features, f0, config, num_samples, semitones)
    if config.feature == "waveform":
        samples = features.reshape(-1)
        return samples[: song.num_samples] if song is not None else samples
    log_mag = features[..., 0]
    num_samples = song.num_samples if song is not None else (steps - 1) * config.hop_length
    if song is not None and use_phase and song.phase is not None:
        out = spectrogram_to_audio(log_mag, song.phase, config, num_samples)
    else:
        out = griffin_lim(log_mag, config, num_samples)
    return out.numpy().astype(np.float32)

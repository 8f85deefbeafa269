"""Per-frequency-bin statistics of log-STFT frames: what the no-model baseline ``eq`` moves a song
toward (:mod:`utils.migration.eq_baseline`), as latent statistics are what the latent moves move
toward.

Moments are pooled over a song's non-silent frames (:func:`loud`: frames within
:data:`SILENCE_NATS` of its loudest), so the digital silence of a clean source does not count.
Units: log-magnitudes in nats, ``(frames, bins)`` with ``bins = n_fft // 2 + 1``. The STFT
(TensorFlow) is imported when songs are measured, not when this module loads.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

from common_definitions import Config
from utils.errors import SinGlowError

# 60 dB of amplitude in nats of log-magnitude: frames below the loudest by more are silence.
SILENCE_NATS = 60.0 / 20.0 * np.log(10.0)
# Per-bin standard deviations are floored here (nats) so that a constant bin cannot blow up.
MIN_STD_NATS = 1e-3


@dataclasses.dataclass
class BinStats:
    """Per-bin moments of log-magnitude STFT frames (nats): ``count`` frames, ``mean`` and
    ``m2`` (sum of squared deviations) of shape ``(bins,)``, in float64; streamed with Chan's
    parallel update so any split of the frames gives the same result."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, bins: int) -> "BinStats":
        return cls(0, np.zeros(bins), np.zeros(bins))

    def add(self, log_mag: np.ndarray) -> "BinStats":
        """Add the non-silent frames of one song's ``(frames, bins)`` log-magnitudes."""
        frames = _loud_frames(np.asarray(log_mag, np.float64))
        n = len(frames)
        if n:
            mean = frames.mean(axis=0)
            m2 = np.square(frames - mean).sum(axis=0)
            total = self.count + n
            delta = mean - self.mean
            self.mean = self.mean + delta * (n / total)
            self.m2 = self.m2 + m2 + np.square(delta) * (self.count * n / total)
            self.count = total
        return self

    @property
    def std(self) -> np.ndarray:
        if not self.count:
            raise SinGlowError("no non-silent frame to compute per-bin statistics from")
        return np.maximum(np.sqrt(self.m2 / self.count), MIN_STD_NATS)


def loud(log_mag: np.ndarray) -> np.ndarray:
    """(frames,) True where a frame's loudest bin is within SILENCE_NATS of the song's."""
    peak = log_mag.max(axis=1)
    return peak > peak.max() - SILENCE_NATS


def _loud_frames(log_mag: np.ndarray) -> np.ndarray:
    return log_mag[loud(log_mag)] if len(log_mag) else log_mag


def song_bin_stats(songs: Iterable[np.ndarray], config: Config) -> BinStats:
    """:class:`BinStats` of songs given as samples (N,) at ``config.sampling_rate`` Hz."""
    from utils.audio.signal import spectrogram

    stats = BinStats.empty(config.n_bins)
    for samples in songs:
        log_mag, _ = spectrogram(np.asarray(samples, np.float32), config)
        stats.add(log_mag.numpy())
    return stats

"""The no-model baseline of migration, ``eq``: per-frequency-bin moment matching of log-STFTs.

Every claim that moving a flow's latents makes a virtual singer's song more like a real singer's
is measured against this: the same moment matching as the ``match`` method, but applied straight
to each log-magnitude STFT bin (nats), with statistics pooled over the song's non-silent frames,
and inverted with the source's own phase. It is a time-invariant equaliser (plus a per-bin
contrast change): whatever it achieves, a model must beat.

For a source song with per-bin log-magnitude mean ``m_s`` and standard deviation ``s_s`` and a
reference set with ``m_r``, ``s_r`` (each ``(bins,)``), a frame ``x`` moves to
``x + a * (m_r + (x - m_s) * s_r / s_s - x)``; strength ``a = 0`` returns the source exactly.
Frames more than :data:`SILENCE_NATS` below the song's loudest frame are left as they are, so the
digital silence of a clean source is not lifted to the reference's noise level.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Optional

import numpy as np

from common_definitions import Config
from utils.audio.signal import spectrogram, spectrogram_to_audio
from utils.errors import SinGlowError
from utils.migration.harmonic_band import keep_harmonics

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


def _loud(log_mag: np.ndarray) -> np.ndarray:
    """(frames,) True where a frame's loudest bin is within SILENCE_NATS of the song's."""
    peak = log_mag.max(axis=1)
    return peak > peak.max() - SILENCE_NATS


def _loud_frames(log_mag: np.ndarray) -> np.ndarray:
    return log_mag[_loud(log_mag)] if len(log_mag) else log_mag


def song_bin_stats(songs: Iterable[np.ndarray], config: Config) -> BinStats:
    """:class:`BinStats` of songs given as samples (N,) at ``config.sampling_rate`` Hz."""
    stats = BinStats.empty(config.n_bins)
    for samples in songs:
        log_mag, _ = spectrogram(np.asarray(samples, np.float32), config)
        stats.add(log_mag.numpy())
    return stats


def eq_song(samples: np.ndarray, config: Config, reference: BinStats, strength: float,
            source: Optional[BinStats] = None, harmonic_hz: float = 0.0) -> np.ndarray:
    """The ``eq`` baseline on a whole song: (N,) float32 samples in, (N,) float32 out.

    ``source`` defaults to the song's own statistics; the source phase is kept, so pitch and
    timing stay where they were. ``harmonic_hz > 0`` applies the change below that frequency as
    its envelope only (:func:`utils.migration.harmonic_band.keep_harmonics`, what ``convert`` does by
    default): not the baseline, the ablation that shows what the flow adds beside it.
    """
    samples = np.asarray(samples, np.float32).reshape(-1)
    log_mag, phase = spectrogram(samples, config)
    log_mag = log_mag.numpy().astype(np.float64)
    source = source if source is not None else BinStats.empty(config.n_bins).add(log_mag)
    matched = reference.mean + (log_mag - source.mean) * (reference.std / source.std)
    moved = log_mag + float(strength) * (matched - log_mag)
    loud = _loud(log_mag)[:, None]
    out = np.where(loud, moved, log_mag).astype(np.float32)
    if harmonic_hz:
        out = keep_harmonics(out, log_mag, config.sampling_rate, harmonic_hz)
    return spectrogram_to_audio(out, phase, config, len(samples)).numpy()

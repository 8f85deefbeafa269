"""The no-model baseline of migration, ``eq``: per-frequency-bin moment matching of log-STFTs.

Every claim that moving a flow's latents makes a virtual singer's song more like a real singer's
is measured against this: the same moment matching as the ``match`` method, but applied straight
to each log-magnitude STFT bin (nats), with statistics pooled over the song's non-silent frames,
and inverted with the source's own phase. It is a time-invariant equaliser (plus a per-bin
contrast change): whatever it achieves, a model must beat.

For a source song with per-bin log-magnitude mean ``m_s`` and standard deviation ``s_s`` and a
reference set with ``m_r``, ``s_r`` (each ``(bins,)``), a frame ``x`` moves to
``x + a * (m_r + (x - m_s) * s_r / s_s - x)``; strength ``a = 0`` returns the source exactly.
Frames more than :data:`~utils.migration.bin_stats.SILENCE_NATS` below the song's loudest frame
are left as they are, so the digital silence of a clean source is not lifted to the reference's
noise level.

:class:`Eq` is the method of the registry: fitted to a reference set's
:class:`~utils.migration.bin_stats.BinStats`, it runs :func:`eq_song`. The STFT (TensorFlow) is
imported when a song is processed, not when this module loads: the registry that lists
:class:`Eq` is read before TensorFlow loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from common_definitions import Config
from utils.errors import MigrationError
from utils.migration.bin_stats import BinStats, loud
from utils.migration.harmonic_band import keep_harmonics
from utils.migration.method import (
    BINS,
    MigrationMethod,
    MigrationResult,
    MigrationTarget,
    check_strength,
)
from utils.runs.latent_stats import LatentStats

if TYPE_CHECKING:  # the codec loads TensorFlow
    from utils.runs.codec import Codec

def eq_song(samples: np.ndarray, config: Config, reference: BinStats, strength: float,
            source: Optional[BinStats] = None, harmonic_hz: float = 0.0) -> np.ndarray:
    """The ``eq`` baseline on a whole song: (N,) float32 samples in, (N,) float32 out.

    ``source`` defaults to the song's own statistics; the source phase is kept, so pitch and
    timing stay where they were. ``harmonic_hz > 0`` applies the change below that frequency as
    its envelope only (:func:`utils.migration.harmonic_band.keep_harmonics`, what ``convert``
    does by default): not the baseline, the ablation that shows what the flow adds beside it.
    """
    from utils.audio.signal import spectrogram, spectrogram_to_audio

    samples = np.asarray(samples, np.float32).reshape(-1)
    log_mag, phase = spectrogram(samples, config)
    log_mag = log_mag.numpy().astype(np.float64)
    source = source if source is not None else BinStats.empty(config.n_bins).add(log_mag)
    matched = reference.mean + (log_mag - source.mean) * (reference.std / source.std)
    moved = log_mag + float(strength) * (matched - log_mag)
    out = np.where(loud(log_mag)[:, None], moved, log_mag).astype(np.float32)
    if harmonic_hz:
        out = keep_harmonics(out, log_mag, config.sampling_rate, harmonic_hz)
    return spectrogram_to_audio(out, phase, config, len(samples)).numpy()


class Eq(MigrationMethod):
    """The ``eq`` baseline as a method: :func:`eq_song` toward a reference set's :class:`BinStats`
    (``harmonic_hz > 0``: convert's harmonic band, an ablation). Needs no model; the codec
    gives the Config and checks the songs.
    """

    name = "eq"
    help = "the no-model baseline: per-bin moment matching of the log-STFT"
    reference = BINS
    takes_harmonic_hz = True
    uses_model = False
    transposes = False

    def __init__(self, codec: "Codec", reference: BinStats, harmonic_hz: float = 0.0):
        super().__init__(codec)
        self.stats = reference
        self.harmonic_hz = float(harmonic_hz)

    @classmethod
    def fit(cls, codec: "Codec", target: MigrationTarget) -> "Eq":
        if target.bins is None:
            raise MigrationError("eq needs the per-bin statistics of a reference set")
        return cls(codec, target.bins, target.harmonic_hz or 0.0)

    def transform(self, samples: np.ndarray, strength: float,
                  source_stats: Optional[LatentStats] = None, *, semitones: float = 0.0,
                  **options) -> MigrationResult:
        """``eq`` on the whole song's STFT: ``source_stats`` and ``options`` (chunking,
        Griffin-Lim) do not apply; a transposition is refused."""
        strength = check_strength(strength)
        if semitones:
            raise MigrationError("eq works on the STFT and cannot transpose; use a world "
                                 "checkpoint's other methods")
        samples = self.codec.check(samples)
        out = eq_song(samples, self.codec.config, self.stats, strength,
                      harmonic_hz=self.harmonic_hz)
        return MigrationResult(out, None)

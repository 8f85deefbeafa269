"""The ``world`` feature: singing as source and filter, from the WORLD vocoder (``pyworld``).

WORLD splits a voice into its fundamental frequency (F0, where the melody lives), its spectral
envelope (the vocal tract: where the singer lives) and its aperiodicity (breath and noise). The
``world`` feature models the filter and keeps the melody beside it:

- analysis, once per song, at one frame per STFT hop (``frame_period = 1000 * hop_length /
  sampling_rate`` ms, 16 ms by default): F0 by DIO refined by StoneMask (``world_f0 = "dio"``,
  fast) or by Harvest (``"harvest"``, more robust, about 25 times slower); the envelope by
  CheapTrick and the aperiodicity by D4C;
- the patch ``(frames, world_dims, 2)``: channel 0 the envelope and channel 1 the aperiodicity,
  both coded to ``world_dims`` mel-cepstral coefficients by WORLD's own
  ``code_spectral_envelope`` (the aperiodicity through its logarithm, floored at
  :data:`APERIODICITY_FLOOR`). Two channels of the same width, so the flow's squeezes treat both
  alike and one normalisation per (coefficient, channel) applies;
- F0 is not modelled: it is kept per frame (Hz, 0 where unvoiced) beside the patch, and every
  decode resynthesises with the source's F0, so any move of the envelope keeps the melody exactly
  (:func:`synthesize`, with an optional transposition in semitones).

"WORLD's own resynthesis" of a song is :func:`synthesize` of its :func:`analyse` features; it is
not the waveform itself (WORLD does not keep the phase), and its SNR against the song is the
ceiling of this feature (see README). Decoding what was encoded gives back these features to
float32 precision, hence the same resynthesis.

A migration renders a change of the features without that ceiling, on the song's own samples
(:func:`utils.migration.rendering.render_on_source`).

Units: samples are float32 in [-1, 1] at ``config.sampling_rate`` Hz; F0 in Hz; coded
coefficients are unit-free (log-amplitude cepstra).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from common_definitions import Config
from utils.errors import SinGlowError

# Aperiodicity is a ratio in (0, 1]; its logarithm is coded, so it is floored here (-60 dB).
APERIODICITY_FLOOR = 1e-3
# Envelope power floor before the logarithm (digital silence stays finite).
ENVELOPE_FLOOR = 1e-16
# How far (dB of power) a converted envelope may leave the expected per-frequency range.
ENVELOPE_MARGIN_DB = 6.0
# F0 search range of the analysis, Hz: the singing range with a margin.
F0_FLOOR = 60.0
F0_CEIL = 1100.0


class WorldError(SinGlowError, ValueError):
    """The WORLD vocoder is missing or cannot analyse a song; the message is one line."""


def _pyworld():
    try:
        import pyworld
    except ImportError:
        raise WorldError("the world feature needs pyworld (pip install -r requirements.txt); "
                         "it is not installed") from None
    return pyworld


def require_pyworld() -> None:
    """Raise :class:`WorldError` (one line) when ``pyworld`` cannot be imported."""
    _pyworld()


def frame_period_ms(config: Config) -> float:
    """WORLD's frame period: one frame per STFT hop, in milliseconds."""
    return 1000.0 * config.hop_length / config.sampling_rate


def fft_size(config: Config) -> int:
    """CheapTrick's FFT size at ``config.sampling_rate`` (the analysed spectra have
    ``fft_size // 2 + 1`` bins)."""
    return int(_pyworld().get_cheaptrick_fft_size(config.sampling_rate, F0_FLOOR))


@dataclasses.dataclass
class WorldAnalysis:
    """One song in WORLD's terms, a frame per hop.

    f0: (T,) float64 Hz, 0 where unvoiced; features: (T, world_dims, 2) float32 coded envelope
    (channel 0) and coded log-aperiodicity (channel 1); num_samples: the song's length.
    """

    f0: np.ndarray
    features: np.ndarray
    num_samples: int


@dataclasses.dataclass
class WorldSpectra:
    """WORLD's analysis of a song before coding, a frame per hop: ``f0 (T,)`` Hz (0 where
    unvoiced), ``envelope (T, bins)`` power and ``aperiodicity (T, bins)`` in [0, 1], with
    ``bins = fft_size // 2 + 1`` over ``[0, rate / 2]``."""

    f0: np.ndarray
    envelope: np.ndarray
    aperiodicity: np.ndarray


def spectra(samples: np.ndarray, config: Config) -> WorldSpectra:
    """WORLD analysis of a whole song ``samples (N,)`` at ``config.sampling_rate``, uncoded."""
    pw = _pyworld()
    x = np.ascontiguousarray(np.asarray(samples, np.float64).reshape(-1))
    if x.size == 0:
        raise WorldError("no audio samples to analyse")
    rate, period = config.sampling_rate, frame_period_ms(config)
    if config.world_f0 == "harvest":
        f0, times = pw.harvest(x, rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=period)
    else:
        f0, times = pw.dio(x, rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=period)
        f0 = pw.stonemask(x, f0, times, rate)
    size = fft_size(config)
    envelope = pw.cheaptrick(x, f0, times, rate, f0_floor=F0_FLOOR, fft_size=size)
    return WorldSpectra(f0, envelope, pw.d4c(x, f0, times, rate, fft_size=size))


def analyse(samples: np.ndarray, config: Config) -> WorldAnalysis:
    """WORLD analysis of a whole song ``samples (N,)`` at ``config.sampling_rate``, coded."""
    found = spectra(samples, config)
    features = np.stack([_code(np.maximum(found.envelope, ENVELOPE_FLOOR), config),
                         _code(np.maximum(found.aperiodicity, APERIODICITY_FLOOR), config)],
                        axis=-1)
    return WorldAnalysis(found.f0, features.astype(np.float32), int(np.size(samples)))


def _code(spectrum: np.ndarray, config: Config) -> np.ndarray:
    return _pyworld().code_spectral_envelope(np.ascontiguousarray(spectrum, np.float64),
                                             config.sampling_rate, config.world_dims)


def _decode(coded: np.ndarray, config: Config) -> np.ndarray:
    return _pyworld().decode_spectral_envelope(np.ascontiguousarray(coded, np.float64),
                                               config.sampling_rate, fft_size(config))


def envelope_spectrum(features: np.ndarray, config: Config) -> np.ndarray:
    """The power envelope ``(T, fft_size // 2 + 1)`` over ``[0, rate / 2]`` of every frame of
    unnormalised ``features (T, world_dims, 2)`` (channel 0 decoded), floored at
    :data:`ENVELOPE_FLOOR`."""
    return np.maximum(_decode(np.asarray(features, np.float64)[:, :, 0], config), ENVELOPE_FLOOR)


def envelope_power(features: np.ndarray, config: Config) -> np.ndarray:
    """Mean power over frequency of the decoded envelope of every frame of unnormalised
    ``features (T, world_dims, 2)``: ``(T,)``."""
    return _decode(np.asarray(features, np.float64)[:, :, 0], config).mean(axis=1)


def bound_envelope(features: np.ndarray, expected: np.ndarray, config: Config,
                   margin_db: float = ENVELOPE_MARGIN_DB) -> np.ndarray:
    """Keep a decoded envelope inside the per-frequency range of an expected one.

    The coded envelope is a cepstrum: coefficients that are each in a plausible range can still
    sum to a spike in one frequency bin (measured on conversions: +60 to +90 dB at the Nyquist
    bin in a few onset frames, i.e. samples hundreds of times full scale). So the bound is
    applied where the spike is: channel 0 of ``features`` and of ``expected`` (both
    ``(T, world_dims, 2)``, unnormalised coded features) are decoded to log-power envelopes,
    each frequency bin of ``features`` is clipped to ``[min, max]`` of ``expected``'s over its
    frames, widened by ``margin_db``, and re-coded. Channel 1 (aperiodicity) is returned as is
    (synthesis clips it to [0, 1]); frames with no bin outside the range are returned
    untouched.
    """
    features = np.array(features, np.float32)
    expected = np.asarray(expected, np.float32)
    log_env = np.log(_decode(features[:, :, 0], config))
    reference = np.log(_decode(expected[:, :, 0], config))
    margin = float(margin_db) * np.log(10.0) / 10.0  # dB of power -> nats of power
    low, high = reference.min(axis=0) - margin, reference.max(axis=0) + margin
    outside = (log_env < low) | (log_env > high)
    rows = outside.any(axis=1)
    if rows.any():
        clipped = np.clip(log_env[rows], low, high)
        features[rows, :, 0] = _code(np.exp(clipped), config)
    return features


def transpose_f0(f0: np.ndarray, semitones: float) -> np.ndarray:
    """``f0 * 2 ** (semitones / 12)``; unvoiced frames (0 Hz) stay unvoiced."""
    return np.asarray(f0, np.float64) * 2.0 ** (float(semitones) / 12.0)


def synthesize(features: np.ndarray, f0: np.ndarray, config: Config,
               num_samples: Optional[int] = None, semitones: float = 0.0) -> np.ndarray:
    """WORLD synthesis of ``features (T, world_dims, 2)`` (unnormalised, as :func:`analyse`
    gives them) with ``f0 (T,)`` Hz (transposed by ``semitones``); returns float32 samples,
    ``num_samples`` long when given (cut or zero-padded), else WORLD's own length."""
    features = np.asarray(features, np.float64)
    f0 = np.asarray(f0, np.float64).reshape(-1)
    steps = min(len(features), len(f0))
    if steps < 1:
        raise WorldError("nothing to synthesise: no frames")
    return synthesize_spectra(transpose_f0(f0[:steps], semitones),
                              _decode(features[:steps, :, 0], config),
                              _decode(features[:steps, :, 1], config), config, num_samples)


def synthesize_spectra(f0: np.ndarray, envelope: np.ndarray, aperiodicity: np.ndarray,
                       config: Config, num_samples: Optional[int] = None) -> np.ndarray:
    """WORLD synthesis of uncoded spectra (:class:`WorldSpectra`'s arrays, ``(T,)``,
    ``(T, bins)``, ``(T, bins)``): float32 samples, ``num_samples`` long when given."""
    out = _pyworld().synthesize(np.ascontiguousarray(f0, np.float64),
                                np.ascontiguousarray(envelope, np.float64),
                                np.ascontiguousarray(np.clip(aperiodicity, 0.0, 1.0), np.float64),
                                config.sampling_rate, frame_period_ms(config))
    out = out.astype(np.float32)
    if num_samples is not None:
        out = out[:num_samples] if len(out) >= num_samples else np.pad(
            out, (0, num_samples - len(out)))
    return out


def resynthesize(samples: np.ndarray, config: Config, semitones: float = 0.0) -> np.ndarray:
    """WORLD's own analysis and resynthesis of a song (the ceiling of the ``world`` feature)."""
    analysis = analyse(samples, config)
    return synthesize(analysis.features, analysis.f0, config, analysis.num_samples, semitones)

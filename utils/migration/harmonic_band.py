"""Keep a source's harmonics where they carry its pitch: a change to a log-STFT applied as an
envelope in the low band.

A singer's voice below about a kilohertz is its harmonics: peaks every F0 hertz whose spacing *is*
the pitch a listener (and a pitch tracker) hears. A conversion that moves every log-STFT bin on
its own (``convert``, ``eq``) also fills the valleys between those peaks and flattens them, and
the pitch goes first. As in a harmonic-plus-noise model, which is harmonic below a "maximum voiced
frequency" and free above it, :func:`keep_harmonics` applies a change ``out - source`` below
``below_hz`` only as its spectral envelope - the change smoothed across frequency by a cepstral
lifter that drops every ripple finer than :data:`HARMONIC_DETAIL_HZ` (the harmonic spacing of
F0s up to that) - so the source's peaks stay where and as sharp as they were, only raised or
lowered with the envelope; above ``below_hz`` (through a :data:`RAMP_HZ` crossfade) the change
is kept whole, fine structure and all.

Units: log-magnitudes in nats (``log(|STFT| + floor)``), ``(frames, bins)`` with
``bins = n_fft // 2 + 1`` spanning 0 .. ``sampling_rate / 2`` Hz. NumPy/SciPy only.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

# Spectral detail finer than this (Hz) across frequency is harmonic ripple: the harmonic spacing
# of every F0 up to it, above the demo corpus' highest note (587 Hz) and most sung F0s.
HARMONIC_DETAIL_HZ = 650.0
# convert's default band (Hz) below which a change keeps the source's harmonics (0: no band).
DEFAULT_HARMONIC_HZ = 1000.0
# Width (Hz) of the linear crossfade from envelope-only to whole changes around ``below_hz``.
RAMP_HZ = 500.0


def envelope(change: np.ndarray, sampling_rate: int,
             detail_hz: float = HARMONIC_DETAIL_HZ) -> np.ndarray:
    """``change (..., bins)`` smoothed across frequency: its DCT-II over the bins (orthonormal)
    keeps the coefficients whose ripple period (``sampling_rate / k`` Hz for coefficient ``k``)
    is wider than ``detail_hz``; float64, same shape."""
    change = np.asarray(change, np.float64)
    keep = max(1, int(np.ceil(sampling_rate / float(detail_hz))))
    coefficients = scipy.fft.dct(change, type=2, axis=-1, norm="ortho")
    coefficients[..., keep:] = 0.0
    return scipy.fft.idct(coefficients, type=2, axis=-1, norm="ortho")


def keep_harmonics(out: np.ndarray, source: np.ndarray, sampling_rate: int, below_hz: float,
                   detail_hz: float = HARMONIC_DETAIL_HZ) -> np.ndarray:
    """``source + change`` with the change ``out - source`` reduced to its :func:`envelope` below
    ``below_hz`` (crossfaded over :data:`RAMP_HZ`) and whole above; ``(frames, bins)`` float32.

    ``below_hz <= 0`` returns ``out`` unchanged; ``out == source`` returns ``source``.
    """
    out = np.asarray(out, np.float64)
    if below_hz <= 0:
        return out.astype(np.float32)
    source = np.asarray(source, np.float64)
    change = out - source
    smooth = envelope(change, sampling_rate, detail_hz)
    freqs = np.linspace(0.0, sampling_rate / 2.0, change.shape[-1])
    whole = np.clip((freqs - below_hz) / RAMP_HZ + 0.5, 0.0, 1.0)
    return (source + smooth + whole * (change - smooth)).astype(np.float32)

"""Mel-cepstra of spectral envelopes, and the time alignment of two renditions of one melody.

A mel-cepstrum is the cepstrum of a log-amplitude spectrum on a frequency axis warped by a
first-order all-pass filter (warping factor ``alpha``), which for a suitable ``alpha`` follows the
mel scale: the representation speech and singing research measure spectral distances in (the
mel-cepstral distortion, :mod:`utils.evaluation.distance`). Coefficient 0 is the log level; 1 and
up describe the envelope's shape.

Alignment (:func:`align_frames`) is dynamic time warping (``librosa.sequence.dtw``) between two
sequences of per-frame vectors (e.g. mel-cepstra without coefficient 0, so that loudness does not
steer it); long songs are aligned in proportional pieces so memory stays bounded.

Units: envelopes are power spectra ``(frames, bins)`` over ``[0, rate / 2]`` (WORLD's CheapTrick);
mel-cepstra are in nepers of amplitude (natural-log units; SPTK's convention, coefficients 1 and up
one-sided).
"""

from __future__ import annotations

import functools
import math

import numpy as np

# Mel-cepstra are taken to this order (coefficients 0..ORDER), the usual order for 16 kHz speech
# and singing in conversion studies.
MCEP_ORDER = 24
# Power floor before the logarithm (digital silence stays finite).
POWER_FLOOR = 1e-16
# Most DTW cells computed at once (a float64 cost matrix of 64M cells is 512 MB): longer songs
# are aligned piecewise.
MAX_DTW_CELLS = 16_000_000


@functools.lru_cache(maxsize=None)
def warping_alpha(sampling_rate: int) -> float:
    """The all-pass warping factor whose frequency warping best follows the mel scale at
    ``sampling_rate`` Hz (least squares over the band, to 0.001): 0.41 at 16 kHz."""
    freqs = np.linspace(0.0, sampling_rate / 2.0, 1000, endpoint=False)
    mel = np.log1p(freqs / 1000.0)
    mel /= mel[-1]
    omega = np.pi * freqs / (sampling_rate / 2.0)
    best, best_error = 0.0, math.inf
    for alpha in np.arange(0.0, 1.0, 0.001):
        warped = omega + 2.0 * np.arctan(alpha * np.sin(omega) / (1.0 - alpha * np.cos(omega)))
        error = float(np.mean(np.square(warped / warped[-1] - mel)))
        if error < best_error:
            best, best_error = float(alpha), error
    return round(best, 3)


@functools.lru_cache(maxsize=8)
def _warping_matrix(length: int, order: int, alpha: float) -> np.ndarray:
    """``(length, order + 1)``: a linear-frequency cepstrum of ``length`` coefficients times this
    matrix is its ``alpha``-warped cepstrum (the frequency transform is linear, so it is built
    once by running the all-pass recursion on the unit basis)."""
    beta = 1.0 - alpha * alpha
    basis = np.eye(length)
    warped = np.zeros((length, order + 1))
    # The recursion consumes the input cepstrum from its highest coefficient down.
    for index in range(length - 1, -1, -1):
        previous = warped.copy()
        warped[:, 0] = basis[:, index] + alpha * previous[:, 0]
        if order >= 1:
            warped[:, 1] = beta * previous[:, 0] + alpha * previous[:, 1]
        for k in range(2, order + 1):
            warped[:, k] = previous[:, k - 1] + alpha * (previous[:, k] - warped[:, k - 1])
    return warped


def mel_cepstrum(envelope: np.ndarray, sampling_rate: int, order: int = MCEP_ORDER
                 ) -> np.ndarray:
    """Mel-cepstra ``(frames, order + 1)`` of power envelopes ``(frames, bins)``.

    The real cepstrum of each frame's log power, halved at coefficient 0 (so that it is the
    one-sided cepstrum of the log amplitude), warped to the mel scale with
    :func:`warping_alpha`.
    """
    power = np.maximum(np.asarray(envelope, np.float64), POWER_FLOOR)
    cepstrum = np.fft.irfft(np.log(power), axis=1)
    length = power.shape[1]  # quefrencies 0 .. bins - 1 (the rest mirror them)
    cepstrum = cepstrum[:, :length].copy()
    cepstrum[:, 0] /= 2.0
    return cepstrum @ _warping_matrix(length, int(order), warping_alpha(int(sampling_rate)))


def align_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dynamic time warping of frame sequences ``a (Ta, D)`` and ``b (Tb, D)`` (Euclidean
    distance): the warping path ``(P, 2)`` of index pairs, from ``(0, 0)`` to ``(Ta-1, Tb-1)``,
    monotone in both. Sequences whose cost matrix would pass :data:`MAX_DTW_CELLS` are cut into
    the same number of proportional pieces and aligned piece by piece (timing is assumed to
    drift by less than a piece)."""
    import librosa

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 1 or len(b) < 1:
        raise ValueError("cannot align an empty sequence")
    pieces = max(1, math.ceil(len(a) * len(b) / MAX_DTW_CELLS))
    cuts_a = np.linspace(0, len(a), pieces + 1).round().astype(int)
    cuts_b = np.linspace(0, len(b), pieces + 1).round().astype(int)
    paths = []
    for (a0, a1), (b0, b1) in zip(zip(cuts_a[:-1], cuts_a[1:]), zip(cuts_b[:-1], cuts_b[1:])):
        _, path = librosa.sequence.dtw(X=a[a0:a1].T, Y=b[b0:b1].T, metric="euclidean")
        paths.append(path[::-1] + [a0, b0])
    return np.concatenate(paths)


def target_index(path: np.ndarray, source_frames: int) -> np.ndarray:
    """Per source frame, the target frame a warping path ``(P, 2)`` aligns it to (the middle one
    where it aligns several): ``(source_frames,)`` int."""
    path = np.asarray(path)
    index = np.zeros(source_frames, np.int64)
    total = np.zeros(source_frames)
    count = np.zeros(source_frames)
    np.add.at(total, path[:, 0], path[:, 1])
    np.add.at(count, path[:, 0], 1)
    index[:] = np.round(total / np.maximum(count, 1)).astype(np.int64)
    return index

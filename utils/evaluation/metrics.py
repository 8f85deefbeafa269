"""Objective measures for feature migration, computed on audio alone (no model needed).

- fidelity: :func:`snr_db`, :func:`log_spectral_distance`;
- pitch preservation: :func:`pitch_track`, :func:`pitch_metrics` (MIREX raw pitch accuracy and
  cent errors over frames voiced in both signals);
- singer likeness: :class:`SingerClassifier`, a standardised logistic regression on per-second
  MFCC statistics;
- :func:`bits_per_dim_from_log_prob`, the one definition of bits/dim shared by every caller.

Audio arguments are 1-D float arrays of samples at ``sampling_rate`` Hz. When two signals of
different lengths are compared (a decoder may pad to a multiple of ``2**L`` time steps), only their
common leading part is used.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from utils.files import AUDIO_EXTENSIONS, audio_files

# pYIN analysis settings: every signal is analysed at 16 kHz with 128 ms frames and a 32 ms hop,
# which resolves a 5-7 Hz vibrato and keeps a 20 s clip to about a second of pYIN.
PITCH_SAMPLING_RATE = 16000
PITCH_FRAME_LENGTH = 2048
PITCH_HOP_LENGTH = 512
PITCH_HOP_SECONDS = PITCH_HOP_LENGTH / PITCH_SAMPLING_RATE
PITCH_FMIN = 65.0
PITCH_FMAX = 1000.0
# MIREX tolerance for raw pitch accuracy, in cents.
PITCH_TOLERANCE_CENTS = 50.0
# pYIN's Viterbi cost grows with the square of its pitch bins; 20-cent bins are four times faster
# than the default 10 and lose nothing, because YIN refines the estimate below.
_PYIN_RESOLUTION = 0.2
# YIN replaces pYIN's bin-centred estimate only within this many cents of it.
_REFINE_CENTS = 30.0


def _mono(samples, name: str = "samples") -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        x = np.squeeze(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of samples, got shape {np.shape(samples)}")
    return x


def _common(reference, estimate) -> Tuple[np.ndarray, np.ndarray]:
    ref, est = _mono(reference, "reference"), _mono(estimate, "estimate")
    n = min(len(ref), len(est))
    return ref[:n], est[:n]


# ---------------------------------------------------------------------------------- fidelity
def snr_db(reference, estimate) -> float:
    """Signal-to-noise ratio of ``estimate`` against ``reference`` in dB.

    ``10 log10(sum(reference**2) / sum((reference - estimate)**2))`` over the common length.
    ``inf`` when the two are identical (including both silent); ``-inf`` when the reference is
    silent but the estimate is not.
    """
    ref, est = _common(reference, estimate)
    signal = float(np.sum(ref ** 2))
    error = float(np.sum((ref - est) ** 2))
    if error == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / error)


def _default_n_fft(sampling_rate: int) -> int:
    """A power of two close to 32 ms (512 at 16 kHz)."""
    return int(2 ** round(math.log2(max(0.032 * sampling_rate, 16))))


def log_spectral_distance(
    reference,
    estimate,
    sampling_rate: int,
    n_fft: Optional[int] = None,
    hop_length: Optional[int] = None,
    floor_db: float = -100.0,
) -> float:
    """Log-spectral distance in dB.

    For each STFT frame, the RMS over frequency bins of ``10 log10 P_ref - 10 log10 P_est``
    (power spectra, floored at ``floor_db`` dB so that digital silence stays finite); the result is
    the mean over frames. 0 for identical signals.

    Args:
        reference, estimate: samples at ``sampling_rate`` Hz (common length used).
        n_fft: frame length in samples; default about 32 ms (512 at 16 kHz).
        hop_length: hop in samples; default ``n_fft // 4``.
    """
    import librosa

    ref, est = _common(reference, estimate)
    n_fft = _default_n_fft(sampling_rate) if n_fft is None else int(n_fft)
    hop_length = n_fft // 4 if hop_length is None else int(hop_length)
    if len(ref) == 0:
        raise ValueError("log_spectral_distance needs non-empty signals")
    floor = 10.0 ** (floor_db / 10.0)

    def power_db(x):
        spec = librosa.stft(x, n_fft=n_fft, hop_length=hop_length, center=True)
        return 10.0 * np.log10(np.maximum(np.abs(spec) ** 2, floor))

    diff = power_db(ref) - power_db(est)
    return float(np.mean(np.sqrt(np.mean(diff ** 2, axis=0))))


# ---------------------------------------------------------------------------------- pitch
def pitch_track(
    samples,
    sampling_rate: int,
    fmin: float = PITCH_FMIN,
    fmax: float = PITCH_FMAX,
) -> Tuple[np.ndarray, np.ndarray]:
    """Fundamental frequency by pYIN.

    The signal is resampled to :data:`PITCH_SAMPLING_RATE` (16 kHz) and analysed with 2048-sample
    frames every 512 samples, so frame ``i`` is centred at ``i * PITCH_HOP_SECONDS`` (32 ms)
    seconds whatever the input rate. About one second of CPU per 20 s of audio.

    Returns:
        ``(f0, voiced)``: ``f0`` float64 (frames,) in Hz, ``nan`` where unvoiced; ``voiced`` bool
        (frames,).
    """
    import librosa

    x = _mono(samples)
    if sampling_rate != PITCH_SAMPLING_RATE:
        x = librosa.resample(x, orig_sr=sampling_rate, target_sr=PITCH_SAMPLING_RATE,
                             res_type="soxr_hq")
    if len(x) == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    f0, voiced, _ = librosa.pyin(
        x, fmin=fmin, fmax=fmax, sr=PITCH_SAMPLING_RATE, frame_length=PITCH_FRAME_LENGTH,
        hop_length=PITCH_HOP_LENGTH, center=True, resolution=_PYIN_RESOLUTION)
    f0 = np.asarray(f0, dtype=np.float64)
    voiced = np.asarray(voiced, dtype=bool) & np.isfinite(f0)
    # pYIN reports the centre of its pitch bin. YIN's parabolic-interpolated estimate on
    # the same frames is continuous; take it wherever it agrees with pYIN's (octave-safe) choice.
    fine = librosa.yin(x, fmin=fmin, fmax=fmax, sr=PITCH_SAMPLING_RATE,
                       frame_length=PITCH_FRAME_LENGTH, hop_length=PITCH_HOP_LENGTH, center=True)
    fine = np.asarray(fine, dtype=np.float64)[: len(f0)]
    with np.errstate(divide="ignore", invalid="ignore"):
        agree = voiced & (np.abs(1200.0 * np.log2(fine / f0)) < _REFINE_CENTS)
    f0[agree] = fine[agree]
    f0[~voiced] = np.nan
    return f0, voiced


def compare_pitch(f0_source, f0_output) -> Dict[str, float]:
    """Pitch agreement of two f0 tracks (Hz, ``nan`` = unvoiced, same frame grid).

    Over frames voiced in both (the common leading frames):

    - ``raw_pitch_accuracy``: share of frames whose error is within 50 cents (MIREX);
    - ``median_abs_cents``, ``rmse_cents``: error ``1200 log2(f_out / f_src)`` in cents;
    - ``voiced_frames``: number of frames voiced in both;
    - ``voicing_recall``: share of the source's voiced frames that are voiced in the output.

    With no frame voiced in both, the accuracy and cent errors are ``nan``.
    """
    src = np.asarray(f0_source, dtype=np.float64)
    out = np.asarray(f0_output, dtype=np.float64)
    n = min(len(src), len(out))
    src, out = src[:n], out[:n]
    src_voiced = np.isfinite(src) & (src > 0)
    both = src_voiced & np.isfinite(out) & (out > 0)
    count = int(both.sum())
    recall = float(both.sum() / src_voiced.sum()) if src_voiced.any() else math.nan
    if count == 0:
        return {"raw_pitch_accuracy": math.nan, "median_abs_cents": math.nan,
                "rmse_cents": math.nan, "voiced_frames": 0, "voicing_recall": recall}
    cents = 1200.0 * np.log2(out[both] / src[both])
    return {
        "raw_pitch_accuracy": float(np.mean(np.abs(cents) <= PITCH_TOLERANCE_CENTS)),
        "median_abs_cents": float(np.median(np.abs(cents))),
        "rmse_cents": float(np.sqrt(np.mean(cents ** 2))),
        "voiced_frames": count,
        "voicing_recall": recall,
    }


def pitch_metrics(source, output, sampling_rate: int) -> Dict[str, float]:
    """How well ``output`` keeps the pitch of ``source`` (both samples at ``sampling_rate`` Hz).

    Runs :func:`pitch_track` on both and returns :func:`compare_pitch`'s dict:
    ``raw_pitch_accuracy`` (0-1), ``median_abs_cents``, ``rmse_cents``, ``voiced_frames`` (count)
    and ``voicing_recall`` (0-1).
    """
    f0_src, _ = pitch_track(source, sampling_rate)
    f0_out, _ = pitch_track(output, sampling_rate)
    return compare_pitch(f0_src, f0_out)


# ---------------------------------------------------------------------------------- singer
def _load_folder(folder: str, sampling_rate: int) -> List[np.ndarray]:
    """Every audio file under ``folder`` (:func:`utils.files.audio_files`), mono at
    ``sampling_rate``; raises ValueError when there is none."""
    import librosa

    paths = audio_files(folder)
    if not paths:
        raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {folder!r}")
    return [librosa.load(p, sr=sampling_rate, mono=True)[0] for p in paths]


class SingerClassifier:
    """Which singer does a song sound like? Logistic regression on per-second MFCC statistics.

    Each song is cut into 1-second segments (a song shorter than that is one segment; digitally
    silent segments are dropped unless nothing else is left). A segment's features are the mean
    and standard deviation over its frames of ``n_mfcc`` MFCCs (32 ms frames, 16 ms hop, dB
    relative to the song's loudest frame so the song's absolute level does not matter), i.e.
    ``2 * n_mfcc`` numbers. Features are standardised, then a logistic regression is fitted.
    A song's probability for a label is the mean over its segments.
    """

    def __init__(self, n_mfcc: int = 20, segment_seconds: float = 1.0, C: float = 1.0,
                 seed: int = 0):
        self.n_mfcc = int(n_mfcc)
        self.segment_seconds = float(segment_seconds)
        self.C = float(C)
        self.seed = int(seed)
        self.sampling_rate: Optional[int] = None
        self.labels: List[str] = []
        self._model = None

    # -------------------------------------------------------------- features
    def segment_features(self, samples, sampling_rate: int) -> np.ndarray:
        """(segments, 2 * n_mfcc) float64 MFCC means then standard deviations."""
        import librosa

        x = _mono(samples).astype(np.float32)
        n_fft = _default_n_fft(sampling_rate)
        hop = n_fft // 2
        segment = max(int(round(self.segment_seconds * sampling_rate)), 1)
        count = max(len(x) // segment, 1)
        if len(x) < n_fft:
            x = np.pad(x, (0, n_fft - len(x)))
        mel = librosa.feature.melspectrogram(y=x, sr=sampling_rate, n_fft=n_fft, hop_length=hop,
                                             n_mels=40, center=True)
        log_mel = librosa.power_to_db(mel, ref=np.max, top_db=80.0)
        mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=self.n_mfcc)
        features, silent = [], []
        for k in range(count):
            start, stop = k * segment, (k + 1) * segment if k + 1 < count else len(x)
            # Frames whose centre lies in the segment.
            lo = int(math.ceil(start / hop))
            hi = max(int(math.ceil(stop / hop)), lo + 1)
            block = mfcc[:, lo:hi]
            features.append(np.concatenate([block.mean(axis=1), block.std(axis=1)]))
            silent.append(not np.any(x[start:stop]))
        features = np.asarray(features, dtype=np.float64)
        keep = ~np.asarray(silent)
        return features[keep] if keep.any() else features

    # -------------------------------------------------------------- fitting
    def fit(self, songs_by_label: Mapping[str, Sequence[np.ndarray]], sampling_rate: int
            ) -> "SingerClassifier":
        """Fit on ``{label: [samples, ...]}`` (1-D arrays at ``sampling_rate`` Hz); needs at
        least two labels. Returns ``self``."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        labels = sorted(songs_by_label)
        if len(labels) < 2:
            raise ValueError(f"SingerClassifier needs at least two labels, got {labels}")
        xs, ys = [], []
        for index, label in enumerate(labels):
            songs = list(songs_by_label[label])
            if not songs:
                raise ValueError(f"label {label!r} has no songs")
            for song in songs:
                feats = self.segment_features(song, sampling_rate)
                xs.append(feats)
                ys.append(np.full(len(feats), index))
        self._model = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed))
        self._model.fit(np.concatenate(xs), np.concatenate(ys))
        self.labels = labels
        self.sampling_rate = int(sampling_rate)
        return self

    def fit_folders(self, folders_by_label: Mapping[str, str], sampling_rate: int
                    ) -> "SingerClassifier":
        """Fit on ``{label: folder}``; every audio file under a folder (recursively) is loaded as
        mono at ``sampling_rate`` Hz."""
        return self.fit({label: _load_folder(folder, sampling_rate)
                         for label, folder in folders_by_label.items()}, sampling_rate)

    # -------------------------------------------------------------- scoring
    def _check(self, sampling_rate: Optional[int]) -> int:
        if self._model is None:
            raise RuntimeError("SingerClassifier is not fitted; call fit() or fit_folders() first")
        rate = self.sampling_rate if sampling_rate is None else int(sampling_rate)
        if rate != self.sampling_rate:
            raise ValueError(f"the classifier was fitted at {self.sampling_rate} Hz, got "
                             f"{rate} Hz; "
                             "resample the audio first")
        return rate

    def segment_probabilities(self, samples, sampling_rate: Optional[int] = None) -> np.ndarray:
        """(segments, labels) class probabilities, columns in :attr:`labels` order."""
        rate = self._check(sampling_rate)
        return self._model.predict_proba(self.segment_features(samples, rate))

    def score(self, samples, sampling_rate: Optional[int] = None) -> Dict[str, float]:
        """``{label: mean probability over the song's 1-second segments}`` (sums to 1)."""
        probs = self.segment_probabilities(samples, sampling_rate).mean(axis=0)
        return {label: float(p) for label, p in zip(self.labels, probs)}

    def probability(self, samples, label: str, sampling_rate: Optional[int] = None) -> float:
        """Mean P(``label``) over the song's 1-second segments, in [0, 1]."""
        if self._model is not None and label not in self.labels:
            raise KeyError(f"unknown label {label!r}; known labels: {self.labels}")
        return self.score(samples, sampling_rate)[label]


# ---------------------------------------------------------------------------------- likelihood
def bits_per_dim_from_log_prob(log_prob_nats, dims: int):
    """``-log_prob / (dims * ln 2)``: nats per example -> bits per dimension.

    Works on Python floats, numpy arrays and tensors alike (elementwise).
    """
    if dims <= 0:
        raise ValueError(f"dims must be positive, got {dims}")
    return -log_prob_nats / (dims * math.log(2.0))

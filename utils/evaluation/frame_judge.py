"""A frame-level singer judge: one Gaussian mixture per singer on frame MFCCs and their deltas.

:class:`utils.evaluation.metrics.SingerClassifier` scores per-second *statistics* of MFCCs, so a
global equaliser that moves a song's average spectrum can fool it. :class:`FrameJudge` scores every
frame on its own: for each singer a diagonal-covariance GMM models the joint distribution of one
frame's MFCCs and their deltas, and a song's score for a singer is the share of its (non-silent)
frames whose likelihood is highest under that singer's GMM. A frame-by-frame change of timbre is
needed to move it; a per-bin gain that is the same for every frame mostly is not enough.

Audio arguments are 1-D float arrays of samples at the judge's ``sampling_rate``; nothing here
needs TensorFlow or a trained flow.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from utils.errors import SinGlowError

# Analysis frames of about 32 ms with a 16 ms hop at 16 kHz (scaled with the rate).
_FRAME_SECONDS = 0.032
# Frames more than this far below the song's loudest frame are silence and are not judged.
SILENCE_DB = 60.0


class FrameJudge:
    """Share of a song's frames that sound like each singer.

    Args:
        n_mfcc: MFCCs per frame (from a 40-band log-mel spectrum, dB relative to the song's
            loudest frame so the absolute level does not matter); a frame's feature is these
            and their deltas, ``2 * n_mfcc`` numbers.
        n_components: Gaussians per singer.
        max_frames: frames per singer used for fitting (a fixed random subset beyond that).
        seed: seeds the subset and the mixtures' initialisation.
    """

    def __init__(self, n_mfcc: int = 20, n_components: int = 16, max_frames: int = 20000,
                 seed: int = 0):
        self.n_mfcc = int(n_mfcc)
        self.n_components = int(n_components)
        self.max_frames = int(max_frames)
        self.seed = int(seed)
        self.sampling_rate: Optional[int] = None
        self.labels: List[str] = []
        self._mean = self._scale = None
        self._mixtures: list = []

    def frame_features(self, samples, sampling_rate: int) -> np.ndarray:
        """(frames, 2 * n_mfcc) float64: MFCCs then deltas of every non-silent frame."""
        import librosa

        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        n_fft = int(2 ** round(np.log2(max(_FRAME_SECONDS * sampling_rate, 16))))
        if len(x) < n_fft:
            x = np.pad(x, (0, n_fft - len(x)))
        mel = librosa.feature.melspectrogram(y=x, sr=sampling_rate, n_fft=n_fft,
                                             hop_length=n_fft // 2, n_mels=40, center=True)
        log_mel = librosa.power_to_db(mel, ref=np.max, top_db=80.0)
        mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=self.n_mfcc)
        width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2))
        delta = (librosa.feature.delta(mfcc, width=width) if width >= 3
                 else np.zeros_like(mfcc))
        loud = log_mel.max(axis=0) > -SILENCE_DB
        features = np.concatenate([mfcc, delta], axis=0).T.astype(np.float64)
        return features[loud] if loud.any() else features

    def fit(self, songs_by_label: Mapping[str, Sequence[np.ndarray]], sampling_rate: int
            ) -> "FrameJudge":
        """Fit one GMM per label on ``{label: [samples, ...]}``; needs two labels or more."""
        from sklearn.mixture import GaussianMixture

        labels = sorted(songs_by_label)
        if len(labels) < 2:
            raise SinGlowError(f"FrameJudge needs at least two singers, got {labels}")
        rng = np.random.default_rng(self.seed)
        per_label = {}
        for label in labels:
            songs = list(songs_by_label[label])
            if not songs:
                raise SinGlowError(f"singer {label!r} has no songs to fit the frame judge on")
            frames = np.concatenate([self.frame_features(s, sampling_rate) for s in songs])
            if len(frames) > self.max_frames:
                frames = frames[rng.choice(len(frames), self.max_frames, replace=False)]
            per_label[label] = frames
        pooled = np.concatenate(list(per_label.values()))
        self._mean = pooled.mean(axis=0)
        self._scale = np.maximum(pooled.std(axis=0), 1e-8)
        self._mixtures = []
        for label in labels:
            frames = (per_label[label] - self._mean) / self._scale
            components = max(1, min(self.n_components, len(frames) // 10))
            mixture = GaussianMixture(components, covariance_type="diag", reg_covar=1e-3,
                                      max_iter=200, random_state=self.seed)
            self._mixtures.append(mixture.fit(frames))
        self.labels = labels
        self.sampling_rate = int(sampling_rate)
        return self

    def frame_log_likelihoods(self, samples) -> np.ndarray:
        """(frames, labels) log-likelihood of each non-silent frame under each singer's GMM."""
        if not self._mixtures:
            raise SinGlowError("FrameJudge is not fitted; call fit() first")
        frames = (self.frame_features(samples, self.sampling_rate) - self._mean) / self._scale
        return np.stack([m.score_samples(frames) for m in self._mixtures], axis=1)

    def score(self, samples) -> Dict[str, float]:
        """``{label: share of frames most likely under that singer}`` (sums to 1)."""
        winners = np.argmax(self.frame_log_likelihoods(samples), axis=1)
        counts = np.bincount(winners, minlength=len(self.labels)) / max(len(winners), 1)
        return {label: float(c) for label, c in zip(self.labels, counts)}

    def probability(self, samples, label: str) -> float:
        """Share of the song's frames judged to be ``label``'s, in [0, 1]."""
        if label not in self.labels:
            raise SinGlowError(f"unknown singer {label!r}; known: {', '.join(self.labels)}")
        return self.score(samples)[label]

"""Distance of a converted song to the target singer's own rendition of the same melody.

When the target singer has sung the same notes (a parallel pair), the honest yardstick of a
conversion is how far it lands from that rendition: the **mel-cepstral distortion** (MCD, dB)
between the two songs' spectral envelopes, frame against DTW-aligned frame, coefficient 0 (the
level) left out:

    MCD = (10 / ln 10) * sqrt(2 * sum_{d=1..24} (mc_d - mc'_d)^2)     averaged over frames

with ``mc`` the order-24 mel-cepstra (:mod:`utils.audio.mel_cepstrum`) of WORLD's CheapTrick
envelopes at the config's hop, the alignment computed on the same coefficients, and the average
taken over the aligned pairs whose rendition frame is voiced (WORLD's F0 > 0: the voice, not
the rests).

A distance reads against two points: the **source** (the virtual singer's song as it is) and the
**pitch-kept ceiling** (:func:`pitch_kept_ceiling`: WORLD's synthesis of the source's F0 under the
rendition's own time-aligned envelope and aperiodicity, the best any conversion that keeps the
source's pitch and timing can expect). :func:`share_closed` is the part of the way from the
source to the ceiling a conversion went: 0 for the source, 1 at the ceiling.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from common_definitions import Config
from utils.audio.mel_cepstrum import align_frames, mel_cepstrum, target_index
from utils.audio.world import WorldSpectra, spectra, synthesize_spectra

# dB per unit of the mel-cepstral Euclidean distance (the usual MCD constant).
MCD_DB = 10.0 / math.log(10.0) * math.sqrt(2.0)


def mel_cepstral_distortion(converted: np.ndarray, rendition: np.ndarray, config: Config,
                            rendition_spectra: Optional[WorldSpectra] = None) -> float:
    """MCD (dB) of the song ``converted (N,)`` against the target singer's ``rendition (M,)`` of
    the same melody (float32 samples at ``config.sampling_rate``): mean over the DTW-aligned frame
    pairs whose rendition frame is voiced (see the module docstring). ``rendition_spectra``: the
    rendition's :func:`~utils.audio.world.spectra`, when already computed."""
    rate = config.sampling_rate
    ours = mel_cepstrum(spectra(converted, config).envelope, rate)[:, 1:]
    theirs_spectra = rendition_spectra or spectra(rendition, config)
    theirs = mel_cepstrum(theirs_spectra.envelope, rate)[:, 1:]
    path = align_frames(ours, theirs)
    voiced = theirs_spectra.f0[path[:, 1]] > 0
    if not voiced.any():
        voiced[:] = True  # an unvoiced rendition: every aligned pair counts
    distances = np.linalg.norm(ours[path[voiced, 0]] - theirs[path[voiced, 1]], axis=1)
    return float(MCD_DB * distances.mean())


def pitch_kept_ceiling(source: np.ndarray, rendition: np.ndarray, config: Config,
                       rendition_spectra: Optional[WorldSpectra] = None) -> np.ndarray:
    """WORLD's synthesis of the ``source``'s F0 under the ``rendition``'s envelope and
    aperiodicity, each source frame taking the rendition frame DTW aligns it to (mel-cepstra
    without the level): ``(len(source),)`` float32. What a conversion that keeps the source's
    melody and timing could reach at best."""
    rate = config.sampling_rate
    own = spectra(source, config)
    theirs = rendition_spectra or spectra(rendition, config)
    path = align_frames(mel_cepstrum(own.envelope, rate)[:, 1:],
                        mel_cepstrum(theirs.envelope, rate)[:, 1:])
    index = target_index(path, len(own.f0))
    return synthesize_spectra(own.f0, theirs.envelope[index], theirs.aperiodicity[index],
                              config, len(source))


def share_closed(source_db: float, ceiling_db: float, converted_db: float) -> float:
    """The part of the distance from the source to the ceiling a conversion closed: 0 at the
    source, 1 at the ceiling (negative when it moved away); NaN when the two coincide."""
    gap = source_db - ceiling_db
    return (source_db - converted_db) / gap if gap > 0 else math.nan


class Renditions:
    """The target singer's renditions of the evaluated songs, each analysed once.

    ``songs[i]`` is the rendition (samples ``(M,)``) of the ``i``-th evaluated source; :meth:`to`
    measures a converted song against it, :meth:`points` gives the source's and the ceiling's
    distances (what a conversion's distance reads against).
    """

    def __init__(self, songs, config: Config):
        self.songs = [np.asarray(s, np.float32) for s in songs]
        self.config = config
        self._spectra = [spectra(s, config) for s in self.songs]

    def to(self, index: int, converted: np.ndarray) -> float:
        """MCD (dB) of ``converted`` against the ``index``-th rendition."""
        return mel_cepstral_distortion(converted, self.songs[index], self.config,
                                       self._spectra[index])

    def ceiling(self, index: int, source: np.ndarray) -> np.ndarray:
        """The pitch-kept ceiling of the ``index``-th ``source`` (:func:`pitch_kept_ceiling`)."""
        return pitch_kept_ceiling(source, self.songs[index], self.config, self._spectra[index])

"""Rendering steps: what a migration method does to a segment's decoded features, and how it turns
them into audio. A method composes them; the :class:`~utils.runs.codec.Codec` only calls them.

Two kinds of small functions, built for one codec (and one set of options):

- a *feature step* ``(features, source) -> features`` maps a segment's decoded features to what is
  rendered, beside the segment's source features (both normalised ``(T, W, C)``):
  :func:`harmonics_kept` applies a change below a band as its spectral envelope only, so the
  source's harmonics, which carry its pitch, keep their shape
  (:mod:`utils.migration.harmonic_band`);
- a *renderer* ``(features, song) -> samples`` turns a segment's features into its ``(N,)`` float32
  samples, given the :class:`~utils.audio.features.SongFeatures` they came from:
  :func:`on_source` renders a world checkpoint's change on the song's own samples
  (:func:`render_on_source`), and every other feature as the codec's inverse does (with the source's
  STFT phase, which already gives the source back where nothing changed); :func:`envelope_ratio`
  applies a world checkpoint's change of the envelope to the song as a per-frame filter
  (:func:`render_envelope_ratio`), what a parallel conversion is rendered with.

:func:`render_on_source` renders a change of WORLD features without WORLD's resynthesis ceiling:
the change WORLD's resynthesis undergoes, per STFT bin, is added to the song's own STFT magnitude
under the song's phase, so an unchanged song comes back to float32 precision and a changed one
keeps every detail WORLD does not model. Every method of a world checkpoint is rendered so, unless
it transposes.

Units: log-magnitudes in nats; samples float32 at ``config.sampling_rate`` Hz. TensorFlow (the
STFT) is imported when a song is rendered, not when this module loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from common_definitions import Config
from utils.audio.world import envelope_spectrum, synthesize
from utils.migration.harmonic_band import keep_harmonics

if TYPE_CHECKING:  # the codec and the features load TensorFlow
    from utils.audio.features import SongFeatures
    from utils.runs.codec import Codec

# (decoded features (T, W, C), source features (T, W, C)) -> features to render, all normalised.
FeatureStep = Callable[[np.ndarray, np.ndarray], np.ndarray]
# (features (T, W, C) normalised, the SongFeatures they came from) -> samples (N,) float32.
Renderer = Callable[[np.ndarray, "SongFeatures"], np.ndarray]


def render_on_source(features: np.ndarray, source_features: np.ndarray, f0: np.ndarray,
                     samples: np.ndarray, config: Config) -> np.ndarray:
    """A change of a song's WORLD features applied to the song itself: float32 ``(N,)``.

    ``samples (N,)`` is the song, ``source_features`` its (unnormalised)
    :func:`utils.audio.world.analyse` features and ``f0`` its F0, ``features`` the changed ones
    (all ``(T, world_dims, 2)``). Both feature sets are synthesised with the song's F0 (WORLD's
    synthesis is deterministic: the same features give the same samples), and in every STFT bin
    (``config.n_fft`` / ``config.hop_length``) the song's magnitude moves by the difference of
    the two syntheses' magnitudes (floored at 0), under the song's phase. The song keeps its
    harmonics, phase and everything else WORLD does not model; what the change adds (e.g. the
    breath noise of a converted aperiodicity, energy where the song had none) comes from WORLD.
    ``features == source_features`` gives ``samples`` back to float32 precision.
    """
    from utils.audio.signal import istft, stft

    samples = np.asarray(samples, np.float32).reshape(-1)
    num_samples = len(samples)
    song = stft(samples, config).numpy()
    changed, same = (np.abs(stft(synthesize(f, f0, config, num_samples), config).numpy())
                     for f in (features, source_features))
    magnitude = np.maximum(np.abs(song) + changed - same, 0.0)
    moved = (magnitude * np.exp(1j * np.angle(song))).astype(np.complex64)
    return istft(moved, config, num_samples).numpy().astype(np.float32)


def render_envelope_ratio(features: np.ndarray, source_features: np.ndarray,
                          samples: np.ndarray, config: Config) -> np.ndarray:
    """A change of a song's WORLD envelope applied to the song as a filter: float32 ``(N,)``.

    Every STFT frame of ``samples (N,)`` (``config.n_fft`` / ``config.hop_length``: frame ``t``
    is centred on WORLD's frame ``t`` at the same hop) is multiplied, bin by bin, by the amplitude
    ratio of the changed envelope to the song's own, ``sqrt(envelope(features) /
    envelope(source_features))`` (channel 0 of both ``(T, world_dims, 2)``, unnormalised; the
    power envelopes read at the STFT's bin frequencies), under the song's phase. The song keeps
    its harmonics, phase and onsets (its pitch and timing) and each frame takes the changed
    envelope's formants, tilt and level; nothing is added where the song is silent, and the
    aperiodicity channel is not used. Equal features give ``samples`` back to float32 precision.
    """
    from utils.audio.signal import istft, stft

    samples = np.asarray(samples, np.float32).reshape(-1)
    song = stft(samples, config).numpy()  # (frames, bins)
    steps = min(len(features), len(source_features), len(song))
    ratio = np.sqrt(envelope_spectrum(features[:steps], config)
                    / envelope_spectrum(source_features[:steps], config))
    nyquist = config.sampling_rate / 2.0
    world_hz = np.linspace(0.0, nyquist, ratio.shape[1])
    stft_hz = np.linspace(0.0, nyquist, song.shape[1])
    gain = np.ones(song.shape, np.float64)
    gain[:steps] = _interpolate_rows(ratio, world_hz, stft_hz)
    return istft((song * gain).astype(np.complex64), config, len(samples)).numpy().astype(
        np.float32)


def _interpolate_rows(values: np.ndarray, at: np.ndarray, to: np.ndarray) -> np.ndarray:
    """Each row of ``values (T, len(at))``, sampled at the increasing ``at``, linearly
    interpolated at ``to``: ``(T, len(to))``."""
    right = np.clip(np.searchsorted(at, to, side="right"), 1, len(at) - 1)
    left = right - 1
    weight = np.clip((to - at[left]) / (at[right] - at[left]), 0.0, 1.0)
    return values[:, left] * (1.0 - weight) + values[:, right] * weight


def envelope_ratio(codec: "Codec") -> Renderer:
    """The renderer of a world checkpoint's envelope change as a filter on the song
    (:func:`render_envelope_ratio`): what a parallel conversion renders with."""
    config, stats = codec.config, codec.stats

    def render(x: np.ndarray, song: "SongFeatures") -> np.ndarray:
        steps = song.num_steps
        features = stats.denormalize(np.asarray(x, np.float32))[:steps]
        source = stats.denormalize(np.asarray(song.x, np.float32))[:steps]
        return render_envelope_ratio(features, source, song.samples, config)

    return render


def on_source(codec: "Codec", griffin_lim: bool = False, semitones: float = 0.0) -> Renderer:
    """The renderer of a method whose output is the source wherever it changed nothing.

    World features (not transposed) render the change from the song's features to the decoded
    ones on the song's own samples (:func:`render_on_source`): strength 0 is the song itself, not
    WORLD's resynthesis of it. Every other case is :meth:`Codec.to_audio
    <utils.runs.codec.Codec.to_audio>` with the song's phase (or Griffin-Lim) and, for world,
    its F0 transposed by ``semitones``.
    """
    codec.check_transpose(semitones)
    config, stats = codec.config, codec.stats

    def render(x: np.ndarray, song: "SongFeatures") -> np.ndarray:
        if config.feature == "world" and song.samples is not None and not semitones:
            steps = song.num_steps
            features = stats.denormalize(np.asarray(x, np.float32))[:steps]
            source = stats.denormalize(np.asarray(song.x, np.float32))[:steps]
            return render_on_source(features, source, song.f0, song.samples, config)
        return codec.to_audio(x, song, use_phase=not griffin_lim, semitones=semitones)

    return render


def harmonics_kept(codec: "Codec", below_hz: float) -> FeatureStep:
    """The feature step that applies the change from a segment's source to its decoded
    spectrogram features below ``below_hz`` as its spectral envelope only
    (:func:`utils.migration.harmonic_band.keep_harmonics`, on log-magnitudes in nats); the
    identity when ``below_hz`` is 0."""
    config, stats = codec.config, codec.stats

    def step(converted: np.ndarray, source: np.ndarray) -> np.ndarray:
        if not below_hz:
            return converted
        log_mag = keep_harmonics(stats.denormalize(converted)[..., 0],
                                 stats.denormalize(source)[..., 0], config.sampling_rate, below_hz)
        return np.asarray(stats.normalize(log_mag[..., None]), np.float32)

    return step

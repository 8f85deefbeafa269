"""The inference object: a trained Glow with its Config and feature normalisation, on whole songs.

A :class:`Codec` is what :func:`utils.runs.run_folder.load_for_inference` returns and what
``migrate.py``, ``evaluate.py``, the notebooks and the benchmarks work with; none of them needs
the model, the Config and the :class:`~utils.audio.features.FeatureStats` separately, nor any training
code. It offers, for a song given as samples:

- :meth:`Codec.encode` / :meth:`Codec.decode`: the whole song in one model call (the model is
  fully convolutional); exact inverses with the song's own STFT phase;
- :meth:`Codec.transform`: encode -> ``move(z)`` -> decode through audio segments and feature
  chunks (:mod:`utils.runs.song_chunks`), so memory is flat in the song's length and the model only
  sees training-sized inputs; :meth:`Codec.reconstruct` is its identity;
- :meth:`Codec.latent_stats` and :meth:`Codec.folder_latent_stats`: the
  :class:`~utils.runs.latent_stats.LatentStats` of songs or of a folder of songs, streamed over their
  aligned, non-overlapping patches.

Units: audio is mono float32 samples at ``config.sampling_rate`` Hz; features are normalised
``(T, W, C)`` arrays (T in STFT frames or folded samples); latents are whitened (~N(0, 1) under
the model); log-determinants are in nats. This module imports no training code and not
:mod:`utils.runs.run_folder` (which imports it).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Dict, Iterable, Iterator, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from common_definitions import Config
from utils.audio.features import (
    FeatureStats,
    SongFeatures,
    features_to_song,
    song_to_features,
    sounding_frames,
)
from utils.audio.signal import AudioError, check_audio
from utils.audio.world import bound_envelope
from utils.data.song_folders import iter_folder_songs
from utils.migration.harmonic_band import DEFAULT_HARMONIC_HZ, keep_harmonics
from utils.errors import MigrationError
from utils.runs.latent_stats import LatentStats, weights_fingerprint
from utils.runs.song_chunks import (
    batched,
    default_chunking,
    iter_patches,
    iter_segments,
    render_in_segments,
    segment_lengths,
    transform_features,
)

# How far (in normalised units: training standard deviations per bin) converted features may
# leave the source's per-bin range before they count as a blown-up inverse.
CONVERT_MARGIN = 1.0
# What convert standardises a source by, per feature (Codec.convert's source_moments).
SOURCE_MOMENTS = {"spectrogram": "song", "world": "singer", "waveform": "singer"}
# A latent move: chunk latents (B, D) float32 -> moved latents of the same shape.
LatentMove = Callable[[np.ndarray], np.ndarray]
# A feature bound: (decoded (T, W, C), source (T, W, C)) -> bounded (T, W, C), all normalised.
FeatureBound = Callable[[np.ndarray, np.ndarray], np.ndarray]


class EncodedSong(NamedTuple):
    """A whole song encoded in one model call (:meth:`Codec.encode`).

    z: (D,) float32 whitened latent of ``song.x``; ``D = T * W * C``.
    logdet: log|det dz/dx| of the whole map, in nats.
    song: the normalised features ``x (T, W, C)``, their phase and the song's lengths: what
        :meth:`Codec.decode` needs to give the samples back.
    """

    z: np.ndarray
    logdet: float
    song: SongFeatures

    @property
    def bits_per_dim(self) -> float:
        """``-log p(x) / (D ln 2)`` of the song's features, ``log p = sum log N(z; 0, 1) +
        logdet`` (the model's :meth:`~model.Glow.bits_per_dim`, without a second encode)."""
        z = self.z.astype(np.float64)
        log_prob = -0.5 * float(np.dot(z, z)) - 0.5 * z.size * math.log(2 * math.pi) + self.logdet
        return -log_prob / (z.size * math.log(2.0))


class SingerConditioning:
    """The singer side of a :class:`Codec`: a conditional model's singer map, the conditioning
    vectors it encodes and decodes under, and the flow as a singer classifier.

    Expects ``model``, ``config``, ``singers`` (names in id order, empty for an unconditional
    model), ``condition`` (the vector encodes and decodes use, or None) and ``features``.
    """

    def singer_id(self, name: str) -> int:
        """The model's id of the singer ``name``.

        Raises:
            MigrationError: an unconditional model, or a name it does not know (the message
                lists the known ones).
        """
        if not self.singers:
            raise MigrationError("this checkpoint is not singer-conditional (it was trained "
                                 "without --conditional): it has no singers to convert between")
        if name not in self.singers:
            raise MigrationError(f"unknown singer {name!r}; the checkpoint knows "
                                 f"{', '.join(self.singers)}")
        return self.singers.index(name)

    def singer_condition(self, name: str) -> np.ndarray:
        """The conditioning vector ``(singer_dims,)`` float32 of the singer ``name``."""
        ids = np.array([self.singer_id(name)], np.int32)
        return self.model.singer_condition(ids).numpy()[0]

    def with_singer(self, name: str) -> "Codec":
        """This codec with every encode and decode under the singer ``name`` (a conditional
        model; its latent statistics and moves then live in that singer's coordinates)."""
        return type(self)(self.model, self.config, self.stats, self.singers, name)

    def _need_condition(self) -> None:
        if self.singers and self.condition is None:
            raise MigrationError(f"this checkpoint is singer-conditional ({', '.join(self.singers)}):"
                                 " choose the singer to encode under")

    def _batch_condition(self, batch: int):
        self._need_condition()
        if self.condition is None:
            return None
        return np.repeat(self.condition[None], batch, axis=0)

    def singer_scores(self, samples: np.ndarray, batch_size: int = 16) -> Dict[str, float]:
        """``{singer: bits/dim}`` of a song's aligned patches under each singer of a conditional
        model (lower: more likely). A flow is a classifier for free: the song's singer is the
        argmin (:meth:`classify`)."""
        if not self.singers:
            self.singer_id("")  # refuses, naming why
        song = self.features(samples)
        patches = list(iter_patches(song.x[:max(song.num_steps, 1)], self.config.input_shape[0]))
        dims = float(np.prod(self.config.input_shape))
        scores = {}
        for index, name in enumerate(self.singers):
            log_prob = np.concatenate([
                self.model.log_prob(batch, np.full(len(batch), index, np.int32)).numpy()
                for batch in batched(iter(patches), batch_size)]).astype(np.float64)
            scores[name] = float(np.mean(-log_prob / (dims * math.log(2.0))))
        return scores

    def classify(self, samples: np.ndarray) -> str:
        """The singer under whom the song is most likely (:meth:`singer_scores`)."""
        scores = self.singer_scores(samples)
        return min(scores, key=scores.get)


class Codec(SingerConditioning):
    """A trained model, the Config it was built from and its feature normalisation.

    Args:
        model: a :class:`model.Glow` (``encode`` x (B, H, W, C) -> (z (B, D), logdet (B,)),
            ``decode`` its inverse, ``latent_shapes``); ActNorm initialised or restored.
        config: the Config ``model`` was built from (rate, STFT, patch length).
        stats: the normalisation the model was trained with (``feature_stats.json``).
        singers: a singer-conditional model's singer names in id order (``singers.json``);
            empty for an unconditional model.
        singer: for a conditional model, the singer every encode and decode is done under
            (see :meth:`with_singer`); :meth:`convert` decodes under another one.
    """

    def __init__(self, model, config: Config, stats: FeatureStats, singers: Sequence[str] = (),
                 singer: Optional[str] = None):
        self.model = model
        self.config = config
        self.stats = stats
        self.singers: Tuple[str, ...] = tuple(singers)
        if bool(self.singers) != bool(getattr(model, "conditional", False)):
            raise MigrationError("a conditional model needs its singer map, an unconditional "
                                 "one takes none")
        self.singer = singer
        self.condition = self.singer_condition(singer) if singer is not None else None

    def __repr__(self) -> str:
        config = self.config
        singers = f", singers {', '.join(self.singers)}" if self.singers else ""
        under = f" under {self.singer}" if self.singer else ""
        return (f"Codec({config.feature}, {config.sampling_rate} Hz, patches "
                f"{config.input_shape}, K={config.k_glow} L={config.l_glow}{singers}{under})")

    @property
    def latent_shapes(self):
        """``(w_l, c_l)`` per level: the layout of z (:func:`utils.runs.latent_stats.piece_shapes`)."""
        return self.model.latent_shapes

    # ---------------------------------------------------------------- features
    def features(self, samples: np.ndarray) -> SongFeatures:
        """Normalised features of a whole song ``samples (N,)``, with its phase
        (:func:`utils.audio.features.song_to_features`)."""
        return song_to_features(samples, self.config, self.stats)

    def to_audio(self, x: np.ndarray, song: Optional[SongFeatures] = None,
                 use_phase: bool = True, semitones: float = 0.0, on_source: bool = False
                 ) -> np.ndarray:
        """Samples ``(N,)`` float32 from normalised features ``x (T, W, C)``; with ``song`` (what
        ``x`` came from) its length and, unless ``use_phase`` is False, its phase or (world) its
        F0 transposed by ``semitones``; world with ``on_source``: the change from ``song`` to
        ``x`` rendered on the song's samples (:func:`utils.audio.features.features_to_song`)."""
        self._check_transpose(semitones)
        return features_to_song(x, self.config, self.stats, song=song, use_phase=use_phase,
                                semitones=semitones, on_source=on_source)

    def _check_transpose(self, semitones: float) -> None:
        if semitones and self.config.feature != "world":
            raise MigrationError(f"cannot transpose the {self.config.feature} feature: only the "
                                 "world feature keeps F0 apart from the features")

    def check(self, samples: np.ndarray, name: str = "source", warn_short: bool = True
              ) -> np.ndarray:
        """Validate a song to encode; returns it as float32 ``(N,)``.

        Non-finite, empty or silent audio raises :class:`utils.audio.signal.AudioError` (one line). A
        song shorter than one patch is accepted, with a warning naming it ``name`` unless
        ``warn_short`` is False (a caller that only wants to fail early, before
        :meth:`transform` checks and warns): it is padded (by repeating it backwards) to one
        chunk for encoding and cut back afterwards.
        """
        config = self.config
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size == 0:
            raise AudioError("no audio samples")
        short = len(samples) < config.patch_samples
        # check_audio also refuses songs shorter than a patch; zero padding keeps its other checks.
        check_audio(np.pad(samples, (0, config.patch_samples - len(samples))) if short
                    else samples, config)
        if short and warn_short:
            warnings.warn(
                f"{name} is shorter than one patch ({len(samples) / config.sampling_rate:.2f} s "
                f"< {config.patch_seconds:.2f} s); it is padded for encoding and cut back "
                "afterwards", stacklevel=2)
        return samples

    # ---------------------------------------------------------------- the whole song at once
    def encode(self, samples: np.ndarray) -> EncodedSong:
        """Encode a whole song ``samples (N,)`` in one model call.

        Memory grows with the song's length (every activation of every time step at once); for
        long songs use :meth:`transform`, which works in segments and chunks.
        """
        song = self.features(samples)
        z, logdet = self.model.encode(song.x[None], self._batch_condition(1))
        return EncodedSong(z.numpy()[0], float(logdet.numpy()[0]), song)

    def decode(self, z: np.ndarray, song: SongFeatures, use_phase: bool = True) -> np.ndarray:
        """Samples ``(N,)`` float32 of a whole-song latent ``z (D,)`` laid out like
        :meth:`encode`'s for ``song``; with the source phase (``use_phase``) ``decode(encode(s))``
        is ``s`` to float32 precision, else the magnitudes are inverted with Griffin-Lim."""
        x = self.model.decode(np.asarray(z, np.float32).reshape(1, -1),
                              self._batch_condition(1)).numpy()[0]
        return self.to_audio(x, song, use_phase=use_phase)

    # ---------------------------------------------------------------- segments and chunks
    def transform(
        self,
        samples: np.ndarray,
        move: Optional[LatentMove],
        *,
        bound: Optional[FeatureBound] = None,
        griffin_lim: bool = False,
        chunk_steps: Optional[int] = None,
        overlap_steps: Optional[int] = None,
        batch_size: int = 8,
        segment_seconds: Optional[float] = None,
        segment_overlap_seconds: Optional[float] = None,
        decode_condition: Optional[np.ndarray] = None,
        on_source: bool = False,
        semitones: float = 0.0,
        prepare: Optional[Callable[[np.ndarray], Tuple[np.ndarray, Callable]]] = None,
    ) -> np.ndarray:
        """encode -> ``move(z)`` -> decode a whole song; returns ``(N,)`` float32 samples.

        Per audio segment (:func:`~utils.runs.song_chunks.render_in_segments`): features with the
        segment's phase -> encode, move, decode in crossfaded chunks
        (:func:`~utils.runs.song_chunks.transform_features`) -> ``bound`` -> audio with the segment's
        phase (or Griffin-Lim).

        Args:
            samples: ``(N,)`` audio at ``config.sampling_rate`` Hz, validated by :meth:`check`
                (a song shorter than a patch is accepted with a warning).
            move: chunk latents ``(B, D)`` float32 -> moved latents of the same shape, each a
                chunk of ``chunk_steps`` time steps; ``None`` is the identity.
            bound: ``(decoded, source)`` normalised features ``(T, W, C)`` of a segment ->
                what is turned into audio (e.g. :func:`utils.migration.registry.bound_features`).
            griffin_lim: invert spectrograms with Griffin-Lim instead of the source phase.
            chunk_steps, overlap_steps: feature chunking (defaults:
                :func:`~utils.runs.song_chunks.default_chunking`).
            batch_size: chunks per model call; bounds the model's memory.
            segment_seconds, segment_overlap_seconds: audio segmentation (defaults
                :data:`~utils.runs.song_chunks.SEGMENT_SECONDS`,
                :data:`~utils.runs.song_chunks.SEGMENT_OVERLAP_SECONDS`).
            decode_condition: a conditional model's conditioning vector ``(singer_dims,)`` to
                decode under instead of :attr:`singer`'s (what :meth:`convert` does).
            on_source: world: render the change of each segment's features on the segment's
                own samples (:func:`utils.audio.world.render_on_source`), not WORLD's
                resynthesis of the changed features.
            semitones: transpose the melody (the world feature, whose F0 is kept apart).
            prepare: a segment's normalised features ``(T, W, C)`` -> (what is encoded instead,
                a map of the decoded features to what is turned into audio; before ``bound``),
                e.g. :meth:`convert`'s moments and bounds, computed once per segment.

        Returns:
            exactly ``N`` samples; with ``move=None`` and the source phase, the song to float32
            precision.
        """
        self._need_condition()
        decode_condition = self.condition if decode_condition is None else decode_condition
        self._check_transpose(semitones)
        samples = self.check(samples)
        segment, overlap = segment_lengths(self.config, segment_seconds, segment_overlap_seconds)
        chunk, chunk_overlap = default_chunking(self.config, chunk_steps, overlap_steps)

        def render(piece: np.ndarray) -> np.ndarray:
            song = self.features(piece)
            x, finish = prepare(song.x) if prepare is not None else (song.x, None)
            x = transform_features(self.model, x, move, chunk, chunk_overlap, batch_size,
                                   self.condition, decode_condition)
            if finish is not None:
                x = finish(x)
            if bound is not None:
                x = bound(x, song.x)
            return self.to_audio(x, song, use_phase=not griffin_lim, semitones=semitones,
                                 on_source=on_source)

        return render_in_segments(samples, segment, overlap, render)

    def reconstruct(self, samples: np.ndarray, **chunking) -> np.ndarray:
        """decode(encode(song)) through the same segments and chunks as :meth:`transform` (whose
        keyword arguments ``chunking`` takes), with the source phase: ``(N,)`` float32. Measures
        how exactly the model and the stitching invert (the source to float32 precision)."""
        return self.transform(samples, None, **chunking)

    def _harmonic_band(self, harmonic_hz: Optional[float]) -> float:
        """convert's ``harmonic_hz``, checked: its default for the feature, or the given one
        (finite, >= 0; only spectrograms have harmonics in their bins)."""
        if harmonic_hz is None:
            return DEFAULT_HARMONIC_HZ if self.config.feature == "spectrogram" else 0.0
        harmonic_hz = float(harmonic_hz)
        if not math.isfinite(harmonic_hz) or harmonic_hz < 0:
            raise MigrationError(f"harmonic_hz must be a finite number >= 0, not {harmonic_hz!r}")
        if harmonic_hz and self.config.feature != "spectrogram":
            raise MigrationError(f"harmonic_hz is for the spectrogram feature; the "
                                 f"{self.config.feature} feature keeps F0 apart from the features")
        return harmonic_hz

    def convert(self, samples: np.ndarray, target: str, strength: float = 1.0,
                source_moments: Optional[str] = None, harmonic_hz: Optional[float] = None,
                **chunking) -> np.ndarray:
        """Singer conversion: encode under this codec's :attr:`singer`, decode under
        ``(1 - strength) * c_source + strength * c_target``, the conditioning vectors of the
        two singers; ``(N,)`` float32 with the source phase (``chunking``: :meth:`transform`'s
        keywords). Strength 0 is :meth:`reconstruct` (the source to float32 precision), 1 the
        target singer, values between move the conditioning along the line joining them.

        ``source_moments`` (a model with SingerNorm): what the source is standardised by before
        the flow. ``"singer"``: the source singer's per-bin moments (SingerNorm's own, under
        ``c_source``). ``"song"``: each audio segment's own moments over its sounding frames,
        and the output is de-standardised by ``(1 - strength)`` times them plus ``strength``
        times the target singer's. Log-STFT bins hold the melody's harmonics, so one song's
        bin moments are not its singer's; WORLD coefficients hold the envelope, which they
        are. Default (:data:`SOURCE_MOMENTS`): ``"song"`` for spectrograms, ``"singer"``
        otherwise.

        ``harmonic_hz`` (spectrograms; default
        :data:`utils.migration.harmonic_band.DEFAULT_HARMONIC_HZ`, 0 turns it off): below it the change
        to the source's log-STFT is applied as its spectral envelope only
        (:func:`utils.migration.harmonic_band.keep_harmonics`), so the source's harmonics, which carry
        its pitch, keep their shape.

        A decoded value more than :data:`CONVERT_MARGIN` outside the per-bin range expected of
        the moment-matched source, or not finite, is replaced by the moment-matched source's
        value: the inverse can blow up off the data. For the world feature the decoded envelope
        is also kept per frequency bin within that source's range plus 6 dB
        (:func:`utils.audio.world.bound_envelope`).

        World conversions are rendered on the source
        (:func:`utils.audio.world.render_on_source`): the change WORLD's resynthesis
        undergoes is added to the source's own STFT magnitude under its phase, so strength 0 is the source itself (not WORLD's resynthesis of it) and
        the source keeps what WORLD does not model."""
        self._need_condition()
        if self.singer is None:
            raise MigrationError("convert needs a singer-conditional checkpoint")
        a = float(strength)
        target_condition = self.singer_condition(target)
        mix = ((1.0 - a) * self.condition + a * target_condition).astype(np.float32)
        source_moments = source_moments or SOURCE_MOMENTS.get(self.config.feature, "singer")
        if source_moments not in ("singer", "song"):
            raise MigrationError(f"source_moments must be 'singer' or 'song', not "
                                 f"{source_moments!r}")
        band_hz = self._harmonic_band(harmonic_hz)
        model = self.model
        per_song = source_moments == "song" and getattr(model, "input_norm", None) is not None
        if per_song:
            own, under_mix = model.singer_norm_params(self.condition), model.singer_norm_params(mix)
            aimed = model.singer_norm_params(target_condition)

        def standardise(x, params):
            return (x - params[0]) * np.exp(-params[1])

        def destandardise(y, params):
            return y * np.exp(params[1]) + params[0]

        def bound(decoded: np.ndarray, expected: np.ndarray) -> np.ndarray:
            # A value more than CONVERT_MARGIN training standard deviations outside the range
            # expected of the moment-matched source is where the inverse blew up: keep the
            # moment-matched source's value there.
            inside = (np.isfinite(decoded) & (decoded >= expected.min(axis=0) - CONVERT_MARGIN)
                      & (decoded <= expected.max(axis=0) + CONVERT_MARGIN))
            decoded = np.where(inside, decoded, expected).astype(np.float32)
            if self.config.feature == "world":
                # In-range cepstra can still sum to a spike in one frequency bin.
                raw = bound_envelope(self.stats.denormalize(decoded),
                                     self.stats.denormalize(expected), self.config)
                decoded = np.asarray(self.stats.normalize(raw), np.float32)
            return decoded

        def harmonics(converted: np.ndarray, source: np.ndarray) -> np.ndarray:
            if not band_hz:
                return converted
            log_mag = keep_harmonics(self.stats.denormalize(converted)[..., 0],
                                     self.stats.denormalize(source)[..., 0],
                                     self.config.sampling_rate, band_hz)
            return np.asarray(self.stats.normalize(log_mag[..., None]), np.float32)

        def prepare(source: np.ndarray):
            """One segment: (what is encoded, decoded features -> bounded output features)."""
            if not per_song:
                expected = model.singer_moment_map(
                    source[None], self.condition[None], mix[None]).numpy()[0]
                return source, lambda decoded: harmonics(bound(decoded, expected), source)
            sounding = sounding_frames(source[None], np.zeros(1, int), self.config,
                                       self.stats)[0]
            song = model.input_norm.frame_moments(source, sounding)
            out = tuple((1.0 - a) * m + a * t for m, t in zip(song, aimed))
            # Frames of digital silence have nothing to convert, and their STFT phase (zero in
            # every bin) would turn any magnitude put there into a click per frame: as eq does,
            # they keep the source's.
            keep = ~sounding[:, None, None]
            expected = np.where(keep, source, destandardise(standardise(source, song), out))
            # Encoding under c_source standardises by SingerNorm's own moments: hand it the
            # source already moved from the song's moments to those, and undo SingerNorm's
            # de-standardisation under c_mix for the output's.
            encoded = destandardise(standardise(source, song), own).astype(np.float32)

            def finish(decoded: np.ndarray) -> np.ndarray:
                moved = destandardise(standardise(decoded, under_mix), out)
                bounded = bound(np.where(keep, source, moved), expected.astype(np.float32))
                return harmonics(bounded, source)

            return encoded, finish

        return self.transform(samples, None, decode_condition=mix, prepare=prepare,
                              on_source=True, **chunking)

    # ---------------------------------------------------------------- latents of aligned patches
    def patch_latents(self, samples: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """Whitened latents ``(P, D)`` of a song's aligned, non-overlapping patches of
        ``config.window_size`` steps (:func:`~utils.runs.song_chunks.iter_patches`: the incomplete
        tail is dropped; a song shorter than a patch gives one padded patch)."""
        song = self.features(samples)
        patches = iter_patches(song.x[:max(song.num_steps, 1)], self.config.input_shape[0])
        return np.concatenate([self.model.encode(batch, self._batch_condition(len(batch)))[0]
                               .numpy() for batch in batched(patches, batch_size)])

    def patch_latent_stats(self, batches: Iterable, stats: Optional[LatentStats] = None
                           ) -> LatentStats:
        """Stream batches of normalised patches ``(B, H, W, C)`` (numpy or tensors, e.g.
        ``Records.evaluation_dataset(stats=codec.stats)``) through the model into
        :class:`LatentStats`, stamped with the fingerprint of these weights (so that a saved
        copy is refused with others); ``stats`` continues an existing accumulation."""
        if stats is None:
            stats = LatentStats(self.config, self.latent_shapes)
            stats.weights = weights_fingerprint(self.model)
        for batch in batches:
            batch = np.asarray(batch, dtype=np.float32)
            z, _ = self.model.encode(batch, self._batch_condition(len(batch)))
            stats.update(z.numpy(), batch.shape[1])
            stats.update_features(batch)
        return stats

    def feature_latent_stats(self, features: Iterable[np.ndarray], batch_size: int = 16,
                             stats: Optional[LatentStats] = None) -> LatentStats:
        """:class:`LatentStats` of songs given as normalised ``(T, W, C)`` features, over their
        aligned non-overlapping patches of ``config.window_size`` steps."""
        patch_steps = self.config.input_shape[0]
        patches = (p for x in features for p in iter_patches(x, patch_steps))
        return self.patch_latent_stats(batched(patches, batch_size), stats)

    def latent_stats(self, songs: Iterable[np.ndarray], batch_size: int = 16,
                     segment_seconds: Optional[float] = None) -> LatentStats:
        """:class:`LatentStats` of songs given as samples ``(N,)`` at ``config.sampling_rate``.

        Each song is featurised one disjoint segment at a time
        (:func:`~utils.runs.song_chunks.iter_segments`), so memory does not grow with its length.
        """
        segment, _ = segment_lengths(self.config, segment_seconds, overlap_seconds=0.0)
        features = (self.features(piece) for samples in songs
                    for piece in iter_segments(samples, segment))
        return self.feature_latent_stats((f.x[:max(f.num_steps, 1)] for f in features),
                                         batch_size)

    def folder_songs(self, folder: str, on_skip: Optional[Callable[[str, str], None]] = None
                     ) -> Iterator[Tuple[str, np.ndarray]]:
        """``(path, samples)`` of every song under ``folder`` usable at this Config
        (:func:`utils.data.song_folders.iter_folder_songs`; others go to ``on_skip(path, reason)``)."""
        return iter_folder_songs(folder, self.config, on_skip)

    def folder_latent_stats(self, folder: str, batch_size: int = 16,
                            on_skip: Optional[Callable[[str, str], None]] = None) -> LatentStats:
        """:class:`LatentStats` of every usable song under ``folder`` (see :meth:`folder_songs`).

        Raises:
            MigrationError: the folder is missing, holds no audio, or no usable song.
        """
        songs = (samples for _, samples in self.folder_songs(folder, on_skip))
        stats = self.latent_stats(songs, batch_size)
        if stats.empty:
            raise MigrationError(f"no usable song under {folder}")
        return stats

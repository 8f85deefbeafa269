"""The inference object: a trained Glow with its Config and feature normalisation, on whole songs.

A :class:`Codec` is what :func:`utils.runs.run_folder.load_for_inference` returns and what
``migrate.py``, ``evaluate.py``, the notebooks and the benchmarks work with; none of them needs
the model, the Config and the :class:`~utils.audio.features.FeatureStats` separately, nor any
training code. It offers, for a song given as samples:

- :meth:`Codec.encode` / :meth:`Codec.decode`: the whole song in one model call (the model is
  fully convolutional); exact inverses with the song's own STFT phase;
- :meth:`Codec.transform`: encode -> ``move(z)`` -> decode through audio segments and feature
  chunks (:mod:`utils.runs.song_chunks`), so memory is flat in the song's length and the model only
  sees training-sized inputs; :meth:`Codec.reconstruct` is its identity. What a migration method
  does around it (what each segment encodes, what its decode becomes, how that is rendered) is
  handed in as functions (:mod:`utils.migration.rendering`), never a branch in here;
- :meth:`Codec.latent_stats` and :meth:`Codec.folder_latent_stats`: the
  :class:`~utils.runs.latent_stats.LatentStats` of songs or of a folder of songs, streamed over
  their aligned, non-overlapping patches.

Units: audio is mono float32 samples at ``config.sampling_rate`` Hz; features are normalised
``(T, W, C)`` arrays (T in STFT frames or folded samples); latents are whitened (~N(0, 1) under
the model); log-determinants are in nats. This module imports no training code, no migration
code and not :mod:`utils.runs.run_folder` (which imports it).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Callable, Dict, Iterable, Iterator, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from common_definitions import Config
from utils.audio.features import FeatureStats, SongFeatures, features_to_song, song_to_features
from utils.audio.signal import AudioError, check_audio
from utils.data.song_folders import iter_folder_songs
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

# A latent move: chunk latents (B, D) float32 -> moved latents of the same shape.
LatentMove = Callable[[np.ndarray], np.ndarray]
# A segment's normalised features (T, W, C) -> (what is encoded instead, a map of the decoded
# features to what is rendered, or None), computed once per segment.
Prepare = Callable[[np.ndarray], Tuple[np.ndarray, Optional[Callable[[np.ndarray], np.ndarray]]]]
# (normalised features (T, W, C), the SongFeatures of the segment) -> samples (N,) float32.
Render = Callable[[np.ndarray, SongFeatures], np.ndarray]


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

    def check_singer(self) -> None:
        """Raise :class:`MigrationError` (one line) when a conditional model has no singer to
        encode under (see :meth:`with_singer`)."""
        if self.singers and self.condition is None:
            raise MigrationError(f"this checkpoint is singer-conditional ({', '.join(self.singers)}):"
                                 " choose the singer to encode under")

    def _batch_condition(self, batch: int):
        self.check_singer()
        if self.condition is None:
            return None
        return np.repeat(self.condition[None], batch, axis=0)

    def singer_scores(self, samples: np.ndarray, batch_size: int = 16) -> Dict[str, float]:
        """``{singer: bits/dim}`` of a song's aligned patches under each singer of a conditional
        model (lower: more likely). A flow is a classifier for free: the song's singer is the
        argmin (:meth:`classify`)."""
        if not self.singers:
            self.singer_id("")  # refuses, naming why
        if getattr(self.model, "parallel", False):
            raise MigrationError(f"a parallel checkpoint models its target singers given its "
                                 f"source singer, {self.singers[0]}: it does not classify songs")
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
            (see :meth:`with_singer`); :meth:`transform` may decode under another one
            (:class:`utils.migration.convert.Convert`).
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
        """``(w_l, c_l)`` per level: the layout of z
        (:func:`utils.runs.latent_stats.piece_shapes`)."""
        return self.model.latent_shapes

    # ---------------------------------------------------------------- features
    def features(self, samples: np.ndarray) -> SongFeatures:
        """Normalised features of a whole song ``samples (N,)``, with its phase
        (:func:`utils.audio.features.song_to_features`)."""
        return song_to_features(samples, self.config, self.stats)

    def to_audio(self, x: np.ndarray, song: Optional[SongFeatures] = None,
                 use_phase: bool = True, semitones: float = 0.0) -> np.ndarray:
        """Samples ``(N,)`` float32 from normalised features ``x (T, W, C)``; with ``song`` (what
        ``x`` came from) its length and, unless ``use_phase`` is False, its phase or (world) its
        F0 transposed by ``semitones`` (:func:`utils.audio.features.features_to_song`)."""
        self.check_transpose(semitones)
        return features_to_song(x, self.config, self.stats, song=song, use_phase=use_phase,
                                semitones=semitones)

    def check_transpose(self, semitones: float) -> None:
        """Refuse (:class:`MigrationError`) a transposition of a feature that holds its F0."""
        if semitones and self.config.feature != "world":
            raise MigrationError(f"cannot transpose the {self.config.feature} feature: only the "
                                 "world feature keeps F0 apart from the features")

    def check(self, samples: np.ndarray, name: str = "source", warn_short: bool = True
              ) -> np.ndarray:
        """Validate a song to encode; returns it as float32 ``(N,)``.

        Non-finite, empty or silent audio raises :class:`utils.audio.signal.AudioError` (one
        line). A song shorter than one patch is accepted, with a warning naming it ``name`` unless
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

    @property
    def parallel(self) -> bool:
        """Whether the checkpoint is a parallel model (a flow of a target singer's frames given
        the source's: :mod:`utils.flow.context_norm`)."""
        return bool(getattr(self.model, "parallel", False))

    def own_context(self, x: np.ndarray) -> Optional[np.ndarray]:
        """What a parallel model encodes and decodes ``x`` given, outside a conversion: its own
        frames (so that decode(encode(x)) is still x); None for every other model."""
        return x if self.parallel else None

    # ---------------------------------------------------------------- the whole song at once
    def encode(self, samples: np.ndarray) -> EncodedSong:
        """Encode a whole song ``samples (N,)`` in one model call.

        Memory grows with the song's length (every activation of every time step at once); for
        long songs use :meth:`transform`, which works in segments and chunks.
        """
        song = self.features(samples)
        z, logdet = self.model.encode(song.x[None], self._batch_condition(1),
                                      self.own_context(song.x[None]))
        return EncodedSong(z.numpy()[0], float(logdet.numpy()[0]), song)

    def decode(self, z: np.ndarray, song: SongFeatures, use_phase: bool = True) -> np.ndarray:
        """Samples ``(N,)`` float32 of a whole-song latent ``z (D,)`` laid out like
        :meth:`encode`'s for ``song``; with the source phase (``use_phase``) ``decode(encode(s))``
        is ``s`` to float32 precision, else the magnitudes are inverted with Griffin-Lim."""
        x = self.model.decode(np.asarray(z, np.float32).reshape(1, -1),
                              self._batch_condition(1), self.own_context(song.x[None])).numpy()[0]
        return self.to_audio(x, song, use_phase=use_phase)

    # ---------------------------------------------------------------- segments and chunks
    def transform(
        self,
        samples: np.ndarray,
        move: Optional[LatentMove],
        *,
        prepare: Optional[Prepare] = None,
        render: Optional[Render] = None,
        griffin_lim: bool = False,
        semitones: float = 0.0,
        chunk_steps: Optional[int] = None,
        overlap_steps: Optional[int] = None,
        batch_size: int = 8,
        segment_seconds: Optional[float] = None,
        segment_overlap_seconds: Optional[float] = None,
        decode_condition: Optional[np.ndarray] = None,
        through: Optional[Callable[[np.ndarray, int, int, int], np.ndarray]] = None,
    ) -> np.ndarray:
        """encode -> ``move(z)`` -> decode a whole song; returns ``(N,)`` float32 samples.

        Per audio segment (:func:`~utils.runs.song_chunks.render_in_segments`): features with the
        segment's phase -> ``prepare`` -> encode, move, decode in crossfaded chunks
        (:func:`~utils.runs.song_chunks.transform_features`) -> what ``prepare`` maps the decode
        to -> ``render`` (by default audio with the segment's phase, or Griffin-Lim).

        Args:
            samples: ``(N,)`` audio at ``config.sampling_rate`` Hz, validated by :meth:`check`
                (a song shorter than a patch is accepted with a warning).
            move: chunk latents ``(B, D)`` float32 -> moved latents of the same shape, each a
                chunk of ``chunk_steps`` time steps; ``None`` is the identity.
            prepare: a segment's normalised features ``(T, W, C)`` -> (what is encoded instead,
                a map of the decoded features to what is rendered, or None), computed once per
                segment: a method's moments and bounds (:mod:`utils.migration`).
            render: ``(features, song)`` -> the segment's samples, e.g. a change rendered on the
                source (:func:`utils.migration.rendering.on_source`); by default
                :meth:`to_audio` with ``griffin_lim`` and ``semitones``, which then belong to
                ``render`` and must stay unset here.
            griffin_lim: invert spectrograms with Griffin-Lim instead of the source phase.
            semitones: transpose the melody (the world feature, whose F0 is kept apart).
            chunk_steps, overlap_steps: feature chunking (defaults:
                :func:`~utils.runs.song_chunks.default_chunking`).
            batch_size: chunks per model call; bounds the model's memory.
            segment_seconds, segment_overlap_seconds: audio segmentation (defaults
                :data:`~utils.runs.song_chunks.SEGMENT_SECONDS`,
                :data:`~utils.runs.song_chunks.SEGMENT_OVERLAP_SECONDS`).
            decode_condition: a conditional model's conditioning vector ``(singer_dims,)`` to
                decode under instead of :attr:`singer`'s (a conversion).
            through: what a segment's (prepared) features go through instead of encode ->
                ``move`` -> decode: ``(x (T, W, C), chunk steps, overlap steps, batch size)`` ->
                features of the same shape (a parallel model's draw under the source's frames,
                :func:`~utils.runs.song_chunks.draw_given`).

        Returns:
            exactly ``N`` samples; with ``move=None`` and the source phase, the song to float32
            precision.
        """
        self.check_singer()
        decode_condition = self.condition if decode_condition is None else decode_condition
        if render is None:
            self.check_transpose(semitones)
            render = functools.partial(self.to_audio, use_phase=not griffin_lim,
                                       semitones=semitones)
        elif griffin_lim or semitones:
            raise MigrationError("transform takes griffin_lim and semitones for its own "
                                 "rendering only: give them to the render step")
        samples = self.check(samples)
        segment, overlap = segment_lengths(self.config, segment_seconds, segment_overlap_seconds)
        chunk, chunk_overlap = default_chunking(self.config, chunk_steps, overlap_steps)

        def render_segment(piece: np.ndarray) -> np.ndarray:
            song = self.features(piece)
            x, finish = prepare(song.x) if prepare is not None else (song.x, None)
            if through is not None:
                x = through(x, chunk, chunk_overlap, batch_size)
            else:
                x = transform_features(self.model, x, move, chunk, chunk_overlap, batch_size,
                                       self.condition, decode_condition, self.parallel)
            if finish is not None:
                x = finish(x)
            return render(x, song)

        return render_in_segments(samples, segment, overlap, render_segment)

    def reconstruct(self, samples: np.ndarray, **chunking) -> np.ndarray:
        """decode(encode(song)) through the same segments and chunks as :meth:`transform` (whose
        keyword arguments ``chunking`` takes), with the source phase: ``(N,)`` float32. Measures
        how exactly the model and the stitching invert (the source to float32 precision)."""
        return self.transform(samples, None, **chunking)

    # ---------------------------------------------------------------- latents of aligned patches
    def patch_latents(self, samples: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """Whitened latents ``(P, D)`` of a song's aligned, non-overlapping patches of
        ``config.window_size`` steps (:func:`~utils.runs.song_chunks.iter_patches`: the incomplete
        tail is dropped; a song shorter than a patch gives one padded patch)."""
        song = self.features(samples)
        patches = iter_patches(song.x[:max(song.num_steps, 1)], self.config.input_shape[0])
        return np.concatenate([self.model.encode(batch, self._batch_condition(len(batch)),
                                                 self.own_context(batch))[0].numpy()
                               for batch in batched(patches, batch_size)])

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
            z, _ = self.model.encode(batch, self._batch_condition(len(batch)),
                                     self.own_context(batch))
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
        (:func:`utils.data.song_folders.iter_folder_songs`; others go to
        ``on_skip(path, reason)``)."""
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

"""The latent moves: ``midpoint``, ``shift`` and ``match``, a song's whitened latents moved toward
the latent statistics of a reference set.

Each move maps whitened latents ``z`` (unit-free, ~N(0, 1) under the model) toward the moments of
a reference set; ``a`` is the strength, and strength 0 returns ``z`` bit for bit:

- ``midpoint``: ``z + a * (mean_ref - z) / 2``; at ``a = 1`` the seed's ``(z + mean_ref) / 2``;
- ``shift``:    ``z + a * (mean_ref - mean_src)``, Glow's / Blow's attribute vector;
- ``match``:    ``z + a * (z_m - z)`` with ``z_m = mean_ref + (z - mean_src) * std_ref / std_src``,
  per-dimension moment matching: at ``a = 1`` the source set gets exactly the reference's moments.

The arithmetic is the pure NumPy functions :func:`midpoint`, :func:`shift` and :func:`match`; the
methods are the classes :class:`Midpoint`, :class:`Shift` and :class:`Match`, which run them on a
whole song: :meth:`LatentMove.transform` encodes it in chunks, moves each chunk's latents, decodes,
keeps the decoded features inside the source's and the reference's range (:func:`bound_features`)
and renders them on the source (:func:`utils.migration.rendering.on_source`). See
``design/migration.md`` for the reasoning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, ClassVar, Optional

import numpy as np

from utils.errors import MigrationError
from utils.migration.method import (
    LATENT,
    MigrationMethod,
    MigrationResult,
    MigrationTarget,
    check_strength,
)
from utils.migration.rendering import on_source
from utils.runs.latent_stats import LatentStats, Moments
from utils.runs.song_chunks import default_chunking, segment_lengths

if TYPE_CHECKING:  # the codec loads TensorFlow
    from utils.runs.codec import Codec


def midpoint(z: np.ndarray, source: Optional[Moments], reference: Moments, strength: float
             ) -> np.ndarray:
    """The seed's midpoint: ``z + a * (mean_ref - z) / 2`` (``a = 1``: ``(z + mean_ref) / 2``).

    Halves every deviation from the reference mean at ``a = 1``, so it also shrinks the
    source's own variation; ``source`` is unused.
    """
    return z + strength * (reference.mean - z) / 2.0


def shift(z: np.ndarray, source: Moments, reference: Moments, strength: float) -> np.ndarray:
    """Attribute-vector shift: ``z + a * (mean_ref - mean_src)``; moves the mean by exactly
    ``a * (mean_ref - mean_src)`` and keeps every deviation from it."""
    return z + strength * (reference.mean - source.mean)


def match(z: np.ndarray, source: Moments, reference: Moments, strength: float) -> np.ndarray:
    """Per-dimension moment matching: ``z + a * (z_m - z)`` with
    ``z_m = mean_ref + (z - mean_src) * std_ref / std_src``.

    At ``a = 1``, latents distributed with the source moments get exactly the reference's mean
    and standard deviation, dimension by dimension.
    """
    matched = reference.mean + (z - source.mean) * (reference.std / source.std)
    return z + strength * (matched - z)


def bound_features(features: np.ndarray, source: np.ndarray, reference: LatentStats
                   ) -> np.ndarray:
    """Keep decoded features inside what the source and the reference set ever held.

    Glow's inverse is only reliable near the data: a moved latent at a sharp onset next to
    digital silence (|z| ~ 10) can decode to features e**10 times too loud, or overflow. Each
    (W, C) bin of ``features`` is clipped to ``[min(source, ref_min), max(source, ref_max)]``
    and a non-finite value is replaced by the source's. The source's own features are inside that
    range, so strength 0 is unaffected.

    Args:
        features: (T, W, C) decoded normalised features.
        source: (T, W, C) the normalised features they were decoded from.
        reference: statistics whose ``feature_min`` / ``feature_max`` (W, C) bound the target.
    """
    features = np.asarray(features, dtype=np.float32)
    source = np.asarray(source, dtype=np.float32)
    low = np.minimum(source.min(axis=0), reference.feature_min)
    high = np.maximum(source.max(axis=0), reference.feature_max)
    finite = np.isfinite(features)
    if not finite.all():
        features = np.where(finite, features, source)
    return np.clip(features, low, high).astype(np.float32)


class LatentMove(MigrationMethod):
    """A move of a song's latents toward a reference set's :class:`LatentStats` (``move``, one
    of the functions above).

    Args:
        codec: the checkpoint the songs are encoded with (a conditional one under its
            :attr:`~utils.runs.codec.Codec.singer`, whose coordinates ``reference`` is in).
        reference: the reference set's latent statistics, computed with the same weights.

    Raises:
        MigrationError: ``reference`` belongs to a model of another configuration.
    """

    reference = LATENT
    move: ClassVar[Callable[[np.ndarray, Optional[Moments], Moments, float], np.ndarray]]

    def __init__(self, codec: "Codec", reference: LatentStats):
        super().__init__(codec)
        reference.check(codec.config)
        self.stats = reference

    @classmethod
    def fit(cls, codec: "Codec", target: MigrationTarget) -> "LatentMove":
        if target.latent is None:
            raise MigrationError(f"{cls.name} needs the latent statistics of a reference set")
        return cls(codec, target.latent)

    @classmethod
    def move_latents(cls, z: np.ndarray, source: Optional[Moments], reference: Moments,
                     strength: float) -> np.ndarray:
        """``move`` in float64, returned as float32 ``z'`` with ``z``'s shape.

        Args:
            z: (B, D) whitened latents (any shape the moments broadcast to).
            source: the source set's moments; required when ``needs_source_stats``.
            reference: the reference set's moments.
            strength: finite; 0 is the identity, 1 the full move.
        """
        strength = check_strength(strength)
        if cls.needs_source_stats and source is None:
            raise MigrationError(f"method {cls.name!r} needs source statistics")
        moved = cls.move(np.asarray(z, dtype=np.float64), source, reference, strength)
        return moved.astype(np.float32)

    def transform(self, samples: np.ndarray, strength: float,
                  source_stats: Optional[LatentStats] = None, *, griffin_lim: bool = False,
                  chunk_steps: Optional[int] = None, overlap_steps: Optional[int] = None,
                  batch_size: int = 8, segment_seconds: Optional[float] = None,
                  segment_overlap_seconds: Optional[float] = None, semitones: float = 0.0
                  ) -> MigrationResult:
        """Encode a whole song, move its latents toward the reference and decode it to audio.

        :meth:`Codec.transform <utils.runs.codec.Codec.transform>` with :meth:`move_latents` as
        the latent move, :func:`bound_features` on each decoded segment and the song rendered on
        the source (:func:`utils.migration.rendering.on_source`: on the world feature strength
        0 is the song itself), except when ``semitones`` transposes it.

        Args:
            samples: (N,) source audio at ``config.sampling_rate`` Hz (silent or non-finite
                audio is refused; a song shorter than one patch is accepted with a warning).
            strength: 0 = identity, 1 = full.
            source_stats: statistics of the source set for ``shift`` / ``match``; by default
                those of the song itself (one extra encoding pass over it).
            griffin_lim: invert spectrograms with Griffin-Lim instead of the source phase.
            chunk_steps, overlap_steps, batch_size: feature chunking and chunks per model call
                (defaults: :func:`~utils.runs.song_chunks.default_chunking`).
            segment_seconds, segment_overlap_seconds: audio segmentation (defaults
                :data:`~utils.runs.song_chunks.SEGMENT_SECONDS`,
                :data:`~utils.runs.song_chunks.SEGMENT_OVERLAP_SECONDS`).
            semitones: transpose the melody (world feature only: its F0 is explicit).

        Returns:
            a :class:`MigrationResult` of exactly N samples and the source statistics used.
        """
        codec, config = self.codec, self.codec.config
        strength = check_strength(strength)
        # Refuse an unusable source before its statistics pass; transform checks again and warns.
        codec.check(samples, warn_short=False)
        # Refuse bad segment or chunk settings before the (possibly long) source statistics pass.
        segment_lengths(config, segment_seconds, segment_overlap_seconds)
        chunk, chunk_overlap = default_chunking(config, chunk_steps, overlap_steps)
        if self.needs_source_stats and source_stats is None:
            source_stats = codec.latent_stats([samples], batch_size, segment_seconds)
        if source_stats is not None:
            source_stats.check(config)
        reference = self.stats.moments(chunk)
        source = source_stats.moments(chunk) if source_stats is not None else None

        def move(z: np.ndarray) -> np.ndarray:
            return self.move_latents(z, source, reference, strength)

        out = codec.transform(
            samples, move, prepare=self._bounded, render=on_source(codec, griffin_lim, semitones),
            chunk_steps=chunk, overlap_steps=chunk_overlap, batch_size=batch_size,
            segment_seconds=segment_seconds, segment_overlap_seconds=segment_overlap_seconds)
        return MigrationResult(out, source_stats)

    def _bounded(self, source: np.ndarray):
        """A segment's features are encoded as they are; what decodes is bounded."""
        return source, lambda decoded: bound_features(decoded, source, self.stats)


class Midpoint(LatentMove):
    name = "midpoint"
    help = "the seed's move halfway to the reference's latent mean"
    move = staticmethod(midpoint)


class Shift(LatentMove):
    name = "shift"
    help = "the latents shifted by the reference's mean minus the source's (attribute vector)"
    needs_source_stats = True
    move = staticmethod(shift)


class Match(LatentMove):
    name = "match"
    help = "every latent dimension given the reference's mean and spread"
    needs_source_stats = True
    move = staticmethod(match)

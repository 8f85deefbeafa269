"""Feature migration of a whole song: encode it, move its latents toward a reference set, decode.

A song is encoded, its latents are moved toward the statistics of a reference set of songs (for
example real singers) by one of the methods of :mod:`utils.migration.latent_moves`, and the result is
decoded back to audio with the source's phase. See ``design/migration.md`` for the reasoning. The
pieces live in their own modules:

- :mod:`utils.migration.latent_moves`: the methods (pure NumPy), :data:`METHOD_NAMES`;
- :mod:`utils.runs.latent_stats`: the time-invariant latent statistics they move toward, and their
  ``.npz`` files;
- :mod:`utils.runs.song_chunks`: whole songs in crossfaded audio segments and feature chunks;
- :mod:`utils.runs.codec`: the model with its Config and normalisation, which does the chunked
  encode -> move -> decode (:meth:`~utils.runs.codec.Codec.transform`).

This module joins them: :func:`migrate` runs any method of
:data:`~utils.migration.latent_moves.METHOD_NAMES` toward a :class:`MigrationTarget` (latent moves
through :func:`migrate_song`, the no-model baseline ``eq`` through
:func:`utils.migration.eq_baseline.eq_song`, ``convert`` through :meth:`utils.runs.codec.Codec.convert`), and
:func:`bound_features` keeps the decoded features of a latent move inside the per-bin range of
the source and the reference set (Glow's inverse can blow up on latents moved far from the
data).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import numpy as np

from utils.migration.eq_baseline import BinStats, eq_song
from utils.migration.latent_moves import (
    METHOD_NAMES,
    NEEDS_SOURCE,
    MigrationError,
    apply_method,
    check_method,
)
from utils.runs.codec import Codec
from utils.runs.latent_stats import LatentStats
from utils.runs.song_chunks import default_chunking, segment_lengths

__all__ = ["MigrationError", "MigrationResult", "MigrationTarget", "bound_features", "migrate",
           "migrate_song"]


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


class MigrationResult(NamedTuple):
    """What :func:`migrate_song` produced.

    samples: (N,) float32 migrated audio, exactly as long as the source.
    source_stats: the source statistics used (``None`` for ``midpoint``).
    """

    samples: np.ndarray
    source_stats: Optional[LatentStats]


def migrate_song(
    codec: Codec,
    samples: np.ndarray,
    method: str,
    strength: float,
    reference: LatentStats,
    source_stats: Optional[LatentStats] = None,
    griffin_lim: bool = False,
    chunk_steps: Optional[int] = None,
    overlap_steps: Optional[int] = None,
    batch_size: int = 8,
    segment_seconds: Optional[float] = None,
    segment_overlap_seconds: Optional[float] = None,
    semitones: float = 0.0,
) -> MigrationResult:
    """Encode a whole song, move its latents toward ``reference`` and decode it to audio.

    :meth:`Codec.transform` with ``apply_method(method, ...)`` as the latent move and
    :func:`bound_features` as the feature bound; on the world feature the move is rendered on
    the source (:func:`utils.audio.world.render_on_source`: strength 0 is the song itself),
    except when ``semitones`` transposes it.

    Args:
        codec: the trained model, its Config and feature normalisation.
        samples: (N,) source audio at ``config.sampling_rate`` Hz (validated by
            :meth:`Codec.check`: silent or non-finite audio is refused, a song shorter than one
            patch is accepted with a warning).
        method, strength: a :data:`~utils.migration.latent_moves.METHOD_NAMES` name and its strength
            (0 = identity, 1 = full).
        reference: the target set's statistics.
        source_stats: statistics of the source set for ``shift`` / ``match``; by default those
            of the source song itself (one extra encoding pass over it).
        griffin_lim: invert spectrograms with Griffin-Lim instead of reusing the source phase.
        chunk_steps, overlap_steps, batch_size: feature chunking and chunks per model call
            (defaults: :func:`~utils.runs.song_chunks.default_chunking`).
        segment_seconds, segment_overlap_seconds: audio segmentation (defaults
            :data:`~utils.runs.song_chunks.SEGMENT_SECONDS`,
            :data:`~utils.runs.song_chunks.SEGMENT_OVERLAP_SECONDS`).
        semitones: transpose the melody (world feature only: its F0 is explicit).

    Returns:
        a :class:`MigrationResult`; ``samples`` has exactly N samples.
    """
    config = codec.config
    check_method(method)
    reference.check(config)
    # Refuse an unusable source before its statistics pass; transform checks again and warns.
    codec.check(samples, warn_short=False)
    # Refuse bad segment or chunk settings before the (possibly long) source statistics pass.
    segment_lengths(config, segment_seconds, segment_overlap_seconds)
    chunk, chunk_overlap = default_chunking(config, chunk_steps, overlap_steps)
    if NEEDS_SOURCE[method] and source_stats is None:
        source_stats = codec.latent_stats([samples], batch_size, segment_seconds)
    if source_stats is not None:
        source_stats.check(config)
    ref = reference.moments(chunk)
    src = source_stats.moments(chunk) if source_stats is not None else None

    def move(z: np.ndarray) -> np.ndarray:
        return apply_method(method, z, src, ref, strength)

    def bound(decoded: np.ndarray, source: np.ndarray) -> np.ndarray:
        return bound_features(decoded, source, reference)

    out = codec.transform(
        samples, move, bound=bound, griffin_lim=griffin_lim, chunk_steps=chunk,
        overlap_steps=chunk_overlap, batch_size=batch_size, segment_seconds=segment_seconds,
        segment_overlap_seconds=segment_overlap_seconds, semitones=semitones,
        on_source=True)
    return MigrationResult(out, source_stats)


@dataclasses.dataclass
class MigrationTarget:
    """What a method moves a song toward; each method uses one field.

    latent: the reference set's :class:`LatentStats` (``midpoint``, ``shift``, ``match``), in
        the codec's coordinates (a conditional codec's :attr:`~utils.runs.codec.Codec.singer`).
    bins: the reference set's per-bin log-STFT statistics (``eq``,
        :func:`utils.migration.eq_baseline.song_bin_stats`).
    singer: the singer to convert to (``convert``; the codec encodes under its own singer).
    source_moments: ``convert``'s :meth:`~utils.runs.codec.Codec.convert` choice (``"singer"`` or
        ``"song"``; None: the feature's default).
    harmonic_hz: ``convert`` and ``eq``: the band (Hz) below which a change keeps the source's
        harmonics (:mod:`utils.migration.harmonic_band`); None: the method's default (convert's
        :data:`~utils.migration.harmonic_band.DEFAULT_HARMONIC_HZ` on spectrograms, 0 for eq, the
        baseline as it is).
    """

    latent: Optional[LatentStats] = None
    bins: Optional[BinStats] = None
    singer: Optional[str] = None
    source_moments: Optional[str] = None
    harmonic_hz: Optional[float] = None


def migrate(codec: Codec, samples: np.ndarray, method: str, strength: float,
            target: MigrationTarget, source_stats: Optional[LatentStats] = None,
            **options) -> MigrationResult:
    """Run ``method`` (any of :data:`~utils.migration.latent_moves.METHOD_NAMES`) at ``strength`` on a
    whole song ``samples (N,)``; strength 0 returns the source (to float32 precision).

    ``options`` are :func:`migrate_song`'s keyword arguments (``griffin_lim``, chunking,
    segments); ``eq`` works on the whole song's STFT and ignores them.

    Raises:
        MigrationError: an unknown method, or a target without what the method needs.
    """
    check_method(method, METHOD_NAMES)
    if method == "eq":
        if target.bins is None:
            raise MigrationError("eq needs the per-bin statistics of a reference set")
        if options.get("semitones"):
            raise MigrationError("eq works on the STFT and cannot transpose; use a world "
                                 "checkpoint's other methods")
        samples = codec.check(samples)
        return MigrationResult(eq_song(samples, codec.config, target.bins, strength,
                                       harmonic_hz=target.harmonic_hz or 0.0), None)
    if method == "convert":
        if target.singer is None:
            raise MigrationError("convert needs a target singer")
        return MigrationResult(codec.convert(samples, target.singer, strength,
                                             source_moments=target.source_moments,
                                             harmonic_hz=target.harmonic_hz, **options),
                               None)
    if target.latent is None:
        raise MigrationError(f"{method} needs the latent statistics of a reference set")
    return migrate_song(codec, samples, method, strength, target.latent, source_stats, **options)

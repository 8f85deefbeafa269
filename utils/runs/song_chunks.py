"""Whole songs in pieces: feature chunks, audio segments, and their crossfaded overlap-add.

Whole songs are processed at two scales, both crossfaded with raised-cosine weights that sum to
one (:func:`crossfade_weights`), so an identity transform returns the source to float32 rounding:

- audio *segments* (default :data:`SEGMENT_SECONDS` = 60 s, :data:`SEGMENT_OVERLAP_SECONDS` = 1 s
  of overlap; :func:`segment_lengths`, :func:`render_in_segments`): each is turned into features
  with its own STFT phase, transformed, turned back into audio with that phase, and crossfaded
  with its neighbours. Features, phase and STFT temporaries exist for one segment at a time, so a
  30-minute song needs no more memory than a one-minute one beyond its input and output samples;
- feature *chunks* inside a segment (default one training patch, an eighth of a patch of overlap;
  :func:`default_chunking`, :func:`transform_features`): encoded a batch at a time, moved, decoded
  and stitched in the feature domain. The model only ever sees inputs of the training length, so
  its activation memory is fixed.

Statistics use the disjoint versions of both: :func:`iter_segments` (segments with no overlap)
and :func:`iter_patches` (aligned, non-overlapping patches).

Units: time steps are STFT frames (spectrogram) or folded samples (waveform); audio is float32
samples at ``config.sampling_rate`` Hz. This module needs NumPy and the Config; the model is any
object with Glow's ``encode`` / ``decode``.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from common_definitions import Config
from utils.errors import MigrationError


# ----------------------------------------------------------------------------- feature chunks
def chunk_plan(time_steps: int, chunk_steps: int, overlap_steps: int) -> List[int]:
    """Start steps of overlapping chunks covering ``time_steps`` steps.

    Consecutive chunks start ``chunk_steps - overlap_steps`` apart; the last one may run past the
    end (the caller pads). A song shorter than one chunk is one chunk.
    """
    if not 0 <= overlap_steps < chunk_steps:
        raise MigrationError(
            f"overlap_steps ({overlap_steps}) must be >= 0 and below chunk_steps ({chunk_steps})")
    hop = chunk_steps - overlap_steps
    count = 1 + max(0, math.ceil((time_steps - chunk_steps) / hop))
    return [k * hop for k in range(count)]


def crossfade_weights(chunk_steps: int, overlap_steps: int, first: bool, last: bool
                      ) -> np.ndarray:
    """(chunk_steps,) float32 weights of one chunk: a sin^2 fade-in over its first
    ``overlap_steps`` steps (unless ``first``) and the complementary cos^2 fade-out over its last
    ones (unless ``last``). Overlapping fade-out and fade-in sum to exactly one, so identical
    chunks stitch back to the identical signal; the chunk edges, where zero padding of the
    convolutions disturbs the latents most, get the least weight."""
    weights = np.ones(chunk_steps, dtype=np.float64)
    if overlap_steps:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap_steps) + 0.5) / overlap_steps) ** 2
        if not first:
            weights[:overlap_steps] = ramp
        if not last:
            weights[-overlap_steps:] = 1.0 - ramp
    return weights.astype(np.float32)


def default_chunking(config: Config, chunk_steps: Optional[int] = None,
                     overlap_steps: Optional[int] = None) -> Tuple[int, int]:
    """``(chunk_steps, overlap_steps)``: one training patch with an eighth of a patch of overlap
    unless given; ``chunk_steps`` must divide by ``2**l_glow``."""
    chunk = int(chunk_steps or config.input_shape[0])
    if chunk < 1 or chunk % config.time_multiple:
        raise MigrationError(
            f"chunk_steps ({chunk}) must be a positive multiple of "
            f"2**l_glow={config.time_multiple}")
    overlap = chunk // 8 if overlap_steps is None else int(overlap_steps)
    if not 0 <= overlap < chunk:
        raise MigrationError(
            f"overlap_steps ({overlap}) must be >= 0 and below chunk_steps ({chunk})")
    return chunk, overlap


def pad_time(x: np.ndarray, length: int) -> np.ndarray:
    """Pad (T, W, C) to ``length`` steps by repeating the song backwards from its end, so the
    padding looks like the song's own content rather than a step to silence."""
    missing = length - len(x)
    if missing <= 0:
        return x
    reps = math.ceil(missing / len(x))
    tail = np.concatenate([x[::-1]] * reps, axis=0)[:missing] if reps > 1 else x[::-1][:missing]
    return np.concatenate([x, tail], axis=0)


def _repeat(condition: Optional[np.ndarray], batch: int) -> Optional[np.ndarray]:
    """One conditioning vector ``(E,)`` as a batch ``(batch, E)`` float32 (None stays None)."""
    if condition is None:
        return None
    return np.repeat(np.asarray(condition, np.float32).reshape(1, -1), batch, axis=0)


def transform_features(
    model,
    x: np.ndarray,
    latent_fn: Optional[Callable[[np.ndarray], np.ndarray]],
    chunk_steps: int,
    overlap_steps: int,
    batch_size: int = 8,
    encode_condition: Optional[np.ndarray] = None,
    decode_condition: Optional[np.ndarray] = None,
    own_context: bool = False,
) -> np.ndarray:
    """Encode -> ``latent_fn`` -> decode a whole song's features in overlapping chunks.

    Args:
        model: a Glow (``encode``, ``decode``).
        x: (T, W, C) float32 features of the whole song; any T >= 1.
        latent_fn: maps a batch of chunk latents (B, D) float32 to moved latents of the same
            shape; ``None`` is the identity (a pure encode -> decode round trip).
        chunk_steps: chunk length in time steps (a multiple of ``2**L``).
        overlap_steps: steps shared by consecutive chunks, crossfaded.
        batch_size: chunks per encode/decode call; bounds the model's memory.
        encode_condition, decode_condition: a singer-conditional model's conditioning vectors
            ``(singer_dims,)`` to encode and to decode under (``None`` for an unconditional
            model); decoding under another singer than the one encoded under converts.
        own_context: a parallel model encodes and decodes each chunk given its own frames.

    Returns:
        (T, W, C) float32 features, every step covered; memory beyond ``x`` and the output is
        ``batch_size`` chunks. Non-finite decodes are passed through (see
        :func:`utils.migration.latent_moves.bound_features`).
    """
    def through(chunks: np.ndarray) -> np.ndarray:
        # An unconditional model is called without a singer (any Glow-like model will do).
        encode_args = () if encode_condition is None else (
            _repeat(encode_condition, len(chunks)),)
        decode_args = () if decode_condition is None else (
            _repeat(decode_condition, len(chunks)),)
        context = (chunks,) if own_context else ()
        z = model.encode(chunks, *encode_args, *context)[0].numpy()
        if latent_fn is not None:
            z = np.asarray(latent_fn(z), dtype=np.float32)
        return model.decode(z, *decode_args, *context).numpy()

    return over_chunks(x, through, chunk_steps, overlap_steps, batch_size)


def draw_given(model, context: np.ndarray, condition: np.ndarray, temperature: float,
               chunk_steps: int, overlap_steps: int, batch_size: int = 8,
               seed: int = 0) -> np.ndarray:
    """A parallel model's draw of the target singer's frames under a whole song's source frames
    ``context (T, W, C)``, in overlapping chunks: each chunk decodes ``temperature * eps``
    (``eps ~ N(0, I)``, drawn from ``seed`` chunk by chunk, so the same call gives the same
    draw) under the conditioning vector ``condition (singer_dims,)`` and its chunk of
    ``context``; returns ``(T, W, C)`` float32 (normalised, as ``context``)."""
    rng = np.random.default_rng(seed)

    def through(chunks: np.ndarray) -> np.ndarray:
        eps = rng.standard_normal((len(chunks), int(np.prod(chunks.shape[1:]))))
        return model.decode((float(temperature) * eps).astype(np.float32),
                            _repeat(condition, len(chunks)), chunks).numpy()

    return over_chunks(context, through, chunk_steps, overlap_steps, batch_size)


def over_chunks(x: np.ndarray, through: Callable[[np.ndarray], np.ndarray], chunk_steps: int,
                overlap_steps: int, batch_size: int = 8) -> np.ndarray:
    """``x (T, W, C)`` cut into chunks of ``chunk_steps`` (:func:`chunk_plan`; padded at the
    end), passed ``batch_size`` at a time ``(B, chunk_steps, W, C)`` through ``through`` (which
    returns the same shape) and stitched back with complementary crossfades over the
    ``overlap_steps`` they share: ``(T, W, C)`` float32."""
    x = np.asarray(x, dtype=np.float32)
    total = len(x)
    if total < 1:
        raise MigrationError("cannot migrate an empty feature sequence")
    starts = chunk_plan(total, chunk_steps, overlap_steps)
    padded = pad_time(x, starts[-1] + chunk_steps)
    out = np.zeros_like(padded)
    for begin in range(0, len(starts), batch_size):
        batch_starts = starts[begin:begin + batch_size]
        decoded = through(np.stack([padded[s:s + chunk_steps] for s in batch_starts]))
        # A latent moved far off the data can decode to inf/nan; that stays visible in the
        # output (for a method's bound to replace) instead of raising here.
        with np.errstate(invalid="ignore", over="ignore"):
            for k, start in enumerate(batch_starts):
                index = begin + k
                weights = crossfade_weights(chunk_steps, overlap_steps, index == 0,
                                            index == len(starts) - 1)
                out[start:start + chunk_steps] += decoded[k] * weights[:, None, None]
    return out[:total]


def iter_patches(x: np.ndarray, patch_steps: int) -> Iterator[np.ndarray]:
    """Aligned, non-overlapping (patch_steps, W, C) patches of (T, W, C) features.

    The incomplete tail is dropped, except that a song shorter than one patch yields one patch
    padded by :func:`pad_time` (so every song contributes).
    """
    if len(x) < patch_steps:
        yield pad_time(np.asarray(x, dtype=np.float32), patch_steps)
        return
    for start in range(0, len(x) - patch_steps + 1, patch_steps):
        yield np.asarray(x[start:start + patch_steps], dtype=np.float32)


def batched(items: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Stack equally shaped arrays ``(...)`` into batches ``(<= batch_size, ...)``; only the last
    batch may be smaller."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


# ----------------------------------------------------------------------------- audio segments
# Whole songs are handled in audio segments of this length (seconds), crossfaded over
# SEGMENT_OVERLAP_SECONDS, so that features, phase and STFT temporaries never exist for more than
# one segment: memory is flat in the song's length beyond its input and output samples.
SEGMENT_SECONDS = 60.0
SEGMENT_OVERLAP_SECONDS = 1.0


def segment_lengths(config: Config, segment_seconds: Optional[float] = None,
                    overlap_seconds: Optional[float] = None) -> Tuple[int, int]:
    """``(segment, overlap)`` in samples, rounded to whole STFT hops so that every segment's
    frames fall on the song's own frame grid."""
    hop = config.hop_length if config.feature == "spectrogram" else config.channel_size
    seconds = SEGMENT_SECONDS if segment_seconds is None else float(segment_seconds)
    overlap = SEGMENT_OVERLAP_SECONDS if overlap_seconds is None else float(overlap_seconds)
    segment = int(round(seconds * config.sampling_rate / hop)) * hop
    overlap = int(round(overlap * config.sampling_rate / hop)) * hop
    if segment < config.patch_samples or not 0 <= 2 * overlap <= segment:
        raise MigrationError(
            f"segments of {seconds:g} s with {overlap / config.sampling_rate:g} s overlap: a "
            f"segment must hold a patch ({config.patch_seconds:.2f} s) and twice the overlap")
    return segment, overlap


def iter_segments(samples: np.ndarray, segment: int) -> Iterator[np.ndarray]:
    """Disjoint pieces of ``samples`` of ``segment`` samples; the last one absorbs the remainder
    (so it is between one and two segments long and no piece is a stub)."""
    count = max(1, len(samples) // segment)
    for k in range(count):
        yield samples[k * segment:(k + 1) * segment if k + 1 < count else len(samples)]


def render_in_segments(samples: np.ndarray, segment: int, overlap: int,
                       render: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Run ``render`` (samples (n,) -> samples (n,)) over overlapping segments and crossfade.

    Segments start ``segment - overlap`` samples apart; :func:`crossfade_weights` makes the
    overlapping fades sum to one, so a ``render`` that returns its input returns ``samples``
    exactly. Returns (N,) float32.
    """
    samples = np.asarray(samples, dtype=np.float32)
    out = np.zeros_like(samples)
    starts = chunk_plan(len(samples), segment, overlap)
    for index, start in enumerate(starts):
        piece = samples[start:start + segment]
        rendered = np.asarray(render(piece), dtype=np.float32)
        if rendered.shape != piece.shape:
            raise MigrationError(f"a segment of {len(piece)} samples rendered to {rendered.shape}")
        # Only the last segment can be short, and it has no fade-out to lose.
        weights = crossfade_weights(segment, overlap, index == 0, index == len(starts) - 1)
        out[start:start + len(piece)] += rendered * weights[:len(piece)]
    return out

"""Feature migration in Glow's latent space: statistics, the three methods, whole-song processing.

A song is encoded, its latents are moved toward the statistics of a reference set of songs (for
example real singers), and the result is decoded back to audio. See ``design/migration.md`` for
the reasoning; the short version:

Statistics are *time-invariant*. Glow emits, for an input of ``H`` time steps, one latent piece per
level ``l`` of shape ``(H / 2**(l+1), w_l, c_l)`` (``model.latent_shapes[l] == (w_l, c_l)``). A
"dimension" of :class:`LatentStats` is one ``(level, w, c)`` position, and its mean and variance
pool every time position of every patch. They therefore apply to a latent of any length, and one
song alone has enough positions to estimate its own statistics. Statistics are streamed over
aligned, non-overlapping patches of ``config.window_size`` time steps (the patches the model was
trained on) with Chan's parallel update in float64, so memory stays flat whatever the set's size.

Methods (``z`` a whitened latent, ``a`` the strength; strength 0 is always the identity):

- ``midpoint``: ``z + a * (mean_ref - z) / 2``; at ``a = 1`` the seed's ``(z + mean_ref) / 2``;
- ``shift``:    ``z + a * (mean_ref - mean_src)``, Glow's / Blow's attribute vector;
- ``match``:    ``z + a * (z_m - z)`` with ``z_m = mean_ref + (z - mean_src) * std_ref / std_src``,
  per-dimension moment matching: at ``a = 1`` the source set gets exactly the reference's moments.

Whole songs are processed at two scales, both crossfaded with raised-cosine weights that sum to
one (so strength 0 returns the source to float32 rounding):

- audio *segments* (default 60 s, 1 s overlap): each is turned into features with its own STFT
  phase, migrated, turned back into audio with that phase, and crossfaded with its neighbours.
  Features, phase and STFT temporaries exist for one segment at a time, so a 30-minute song needs
  no more memory than a one-minute one beyond its input and output samples;
- feature *chunks* inside a segment (default one training patch, an eighth of a patch of overlap):
  encoded a batch at a time, moved, decoded and stitched in the feature domain. The model only
  ever sees inputs of the training length, so its activation memory is fixed.

Decoded features are kept inside the per-bin range of the source and the reference set
(:func:`bound_features`): Glow's inverse can blow up on latents moved far from the data.

Units: time steps are STFT frames (spectrogram) or folded samples (waveform); audio is float32
samples at ``config.sampling_rate`` Hz; latents are whitened (unit-free, ~N(0, 1)).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from common_definitions import Config
from utils.errors import SinGlowError
from utils.audio import (
    AUDIO_EXTENSIONS,
    AudioError,
    FeatureStats,
    check_audio,
    features_to_song,
    is_audio_file,
    load_audio,
    song_to_features,
)

# Latent standard deviations are floored here (whitened units) so that a dimension that is
# constant in a set (e.g. a silent source) cannot make ``std_ref / std_src`` blow up.
MIN_STD = 1e-3
STATS_FORMAT_VERSION = 1


class MigrationError(SinGlowError, ValueError):
    """A one-line, user-facing error of the migration tools (bad statistics, input or method)."""


def one_line(error: BaseException, limit: int = 400) -> str:
    """An error's message on one line for the CLIs, cut to ``limit`` characters (a failed
    checkpoint restore lists every unmatched variable)."""
    message = " ".join(str(error).split()) or type(error).__name__
    return message if len(message) <= limit else message[:limit - 3] + "..."


# ----------------------------------------------------------------------------- latent layout
def piece_shapes(latent_shapes: Sequence[Tuple[int, int]], time_steps: int
                 ) -> List[Tuple[int, int, int]]:
    """``(h, w, c)`` of each level's latent piece for an input of ``time_steps`` steps.

    ``latent_shapes`` is ``model.latent_shapes`` (``(w_l, c_l)`` per level); level ``l`` halves
    the time axis ``l + 1`` times. The flattened ``z`` of ``model.encode`` is the concatenation of
    these pieces in level order, each flattened row-major.
    """
    levels = len(latent_shapes)
    if time_steps % 2 ** levels:
        raise MigrationError(f"time_steps={time_steps} must divide by 2**L={2 ** levels}")
    return [(time_steps // 2 ** (level + 1), int(w), int(c))
            for level, (w, c) in enumerate(latent_shapes)]


def split_latent(z: np.ndarray, latent_shapes: Sequence[Tuple[int, int]], time_steps: int
                 ) -> List[np.ndarray]:
    """z (B, D) -> per-level pieces (B, h_l, w_l, c_l); the inverse of :func:`join_latent`."""
    shapes = piece_shapes(latent_shapes, time_steps)
    sizes = [h * w * c for h, w, c in shapes]
    if z.shape[-1] != sum(sizes):
        raise MigrationError(
            f"a latent of {time_steps} time steps has {sum(sizes)} dimensions, got {z.shape[-1]}")
    pieces = np.split(z, np.cumsum(sizes)[:-1], axis=-1)
    return [p.reshape(z.shape[0], *s) for p, s in zip(pieces, shapes)]


def join_latent(pieces: Sequence[np.ndarray]) -> np.ndarray:
    """list of (B, h_l, w_l, c_l) -> z (B, D)."""
    return np.concatenate([p.reshape(p.shape[0], -1) for p in pieces], axis=-1)


# ----------------------------------------------------------------------------- statistics
class Moments(NamedTuple):
    """Per-dimension ``mean`` and ``std`` (arrays broadcastable to the latent they move)."""

    mean: np.ndarray
    std: np.ndarray


class LatentStats:
    """Streaming, time-invariant per-dimension moments of whitened latents.

    For each level ``l``: ``count[l]`` pooled positions (int), ``mean[l]`` and ``var[l]``
    (population variance) of shape ``(w_l, c_l)`` in float64. Updates use Chan et al.'s parallel
    combination of (count, mean, M2), so streaming any partition of the data gives the same result
    as ``np.mean`` / ``np.var`` over all of it (to float64 rounding).

    ``feature_min`` / ``feature_max`` (W, C) hold the range of the normalised features the
    latents were encoded from (see :func:`bound_features`).

    The statistics belong to the model that produced the latents: ``config`` is stored with them,
    and :meth:`check` refuses a model whose :meth:`Config.model_signature` differs.
    """

    def __init__(self, config: Config, latent_shapes: Sequence[Tuple[int, int]]):
        self.config = config
        self.latent_shapes = [(int(w), int(c)) for w, c in latent_shapes]
        self.count = np.zeros(len(self.latent_shapes), dtype=np.int64)
        self._mean = [np.zeros(s, dtype=np.float64) for s in self.latent_shapes]
        self._m2 = [np.zeros(s, dtype=np.float64) for s in self.latent_shapes]
        # Per (W, C) range of the normalised features the latents came from: the envelope that
        # migrate_song keeps decoded features inside (see bound_features).
        feature_shape = tuple(config.input_shape[1:])
        self.feature_min = np.full(feature_shape, np.inf)
        self.feature_max = np.full(feature_shape, -np.inf)

    @classmethod
    def for_model(cls, model, config: Config) -> "LatentStats":
        """Empty statistics shaped for ``model`` (a :class:`model.Glow`) built from ``config``."""
        return cls(config, model.latent_shapes)

    # ---------------------------------------------------------------- accumulation
    def update(self, z, time_steps: int) -> "LatentStats":
        """Add a batch of latents ``z`` (B, D) of inputs ``time_steps`` long. Returns ``self``."""
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2:
            raise MigrationError(f"z must be (batch, dims), got shape {z.shape}")
        for level, piece in enumerate(split_latent(z, self.latent_shapes, time_steps)):
            values = piece.reshape(-1, *self.latent_shapes[level])
            if len(values) == 0:
                continue
            mean = values.mean(axis=0)
            m2 = np.square(values - mean).sum(axis=0)
            self._combine(level, len(values), mean, m2)
        return self

    def update_features(self, x) -> "LatentStats":
        """Widen the per-(W, C) feature range with features ``x`` (..., W, C). Returns ``self``."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, *self.feature_min.shape)
        if len(x):
            self.feature_min = np.minimum(self.feature_min, x.min(axis=0))
            self.feature_max = np.maximum(self.feature_max, x.max(axis=0))
        return self

    def merge(self, other: "LatentStats") -> "LatentStats":
        """Fold ``other`` (same layout) into ``self``. Returns ``self``."""
        if other.latent_shapes != self.latent_shapes:
            raise MigrationError("cannot merge latent statistics of different latent layouts")
        for level in range(len(self.latent_shapes)):
            if other.count[level]:
                self._combine(level, int(other.count[level]), other._mean[level], other._m2[level])
        self.feature_min = np.minimum(self.feature_min, other.feature_min)
        self.feature_max = np.maximum(self.feature_max, other.feature_max)
        return self

    def _combine(self, level: int, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        n_a = int(self.count[level])
        n = n_a + n_b
        delta = mean_b - self._mean[level]
        self._mean[level] = self._mean[level] + delta * (n_b / n)
        self._m2[level] = self._m2[level] + m2_b + np.square(delta) * (n_a * n_b / n)
        self.count[level] = n

    # ---------------------------------------------------------------- results
    @property
    def empty(self) -> bool:
        return not bool(self.count.all())

    @property
    def mean(self) -> List[np.ndarray]:
        """Per level (w_l, c_l) float64 means."""
        return [m.copy() for m in self._mean]

    @property
    def var(self) -> List[np.ndarray]:
        """Per level (w_l, c_l) float64 population variances."""
        return [m2 / max(int(n), 1) for m2, n in zip(self._m2, self.count)]

    @property
    def std(self) -> List[np.ndarray]:
        """Per level (w_l, c_l) standard deviations, floored at :data:`MIN_STD`."""
        return [np.maximum(np.sqrt(v), MIN_STD) for v in self.var]

    def moments(self, time_steps: int) -> Moments:
        """Mean and std laid out like ``model.encode``'s z for ``time_steps`` steps: each (D,)
        float64, every level's (w, c) statistics repeated over that level's time positions."""
        if self.empty:
            raise MigrationError("latent statistics are empty: no latent was accumulated")
        shapes = piece_shapes(self.latent_shapes, time_steps)
        mean = [np.broadcast_to(m, s).reshape(-1) for m, s in zip(self._mean, shapes)]
        std = [np.broadcast_to(d, s).reshape(-1) for d, s in zip(self.std, shapes)]
        return Moments(np.concatenate(mean), np.concatenate(std))

    def summary(self) -> str:
        """One line: positions per level and the overall mean / std of the per-dimension moments."""
        means = np.concatenate([m.ravel() for m in self._mean])
        stds = np.concatenate([d.ravel() for d in self.std])
        return (f"{int(self.count.sum())} latent positions over {len(self.count)} levels; "
                f"per-dimension mean {means.mean():+.3f} (spread {means.std():.3f}), "
                f"std {stds.mean():.3f} (spread {stds.std():.3f})")

    # ---------------------------------------------------------------- persistence
    def check(self, config: Config) -> None:
        """Raise :class:`MigrationError` (one line) if these statistics belong to a model of
        another signature than ``config``'s."""
        problems = config.incompatibilities(self.config)
        if problems:
            raise MigrationError(
                "latent statistics were computed with another model configuration: "
                + ", ".join(problems))

    def save(self, path: str) -> None:
        """Write an ``.npz``: per level ``count``, ``mean_<l>``, ``var_<l>``; the feature range
        ``feature_min`` / ``feature_max``; the config JSON and the latent layout. Written
        atomically (a crash leaves the old file)."""
        arrays = {
            "format_version": np.array(STATS_FORMAT_VERSION),
            "config_json": np.array(self.config.to_json()),
            "latent_shapes": np.array(self.latent_shapes, dtype=np.int64),
            "count": self.count,
            "feature_min": self.feature_min,
            "feature_max": self.feature_max,
        }
        for level, (mean, var) in enumerate(zip(self._mean, self.var)):
            arrays[f"mean_{level}"] = mean
            arrays[f"var_{level}"] = var
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        tmp = f"{path}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str, config: Optional[Config] = None) -> "LatentStats":
        """Read :meth:`save`'s file; with ``config``, refuse statistics of another model
        signature. Raises :class:`MigrationError` (one line) for a missing or malformed file."""
        if not os.path.isfile(path):
            raise MigrationError(f"latent statistics file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                version = int(data["format_version"])
                if version != STATS_FORMAT_VERSION:
                    raise MigrationError(
                        f"{path}: statistics format {version}, expected {STATS_FORMAT_VERSION}")
                stats = cls(Config.from_json(str(data["config_json"])),
                            [tuple(s) for s in data["latent_shapes"].tolist()])
                stats.count = data["count"].astype(np.int64)
                stats.feature_min = data["feature_min"].astype(np.float64)
                stats.feature_max = data["feature_max"].astype(np.float64)
                for level in range(len(stats.latent_shapes)):
                    stats._mean[level] = data[f"mean_{level}"].astype(np.float64)
                    stats._m2[level] = (data[f"var_{level}"].astype(np.float64)
                                        * int(stats.count[level]))
        except MigrationError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise MigrationError(f"{path} is not a latent statistics file ({reason})") from None
        if config is not None:
            stats.check(config)
        return stats


# ----------------------------------------------------------------------------- methods
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


# name -> function(z, source, reference, strength) -> z'; NEEDS_SOURCE says which use `source`.
METHODS: Dict[str, Callable[[np.ndarray, Optional[Moments], Moments, float], np.ndarray]] = {
    "midpoint": midpoint,
    "shift": shift,
    "match": match,
}
NEEDS_SOURCE = {"midpoint": False, "shift": True, "match": True}


def apply_method(method: str, z: np.ndarray, source: Optional[Moments], reference: Moments,
                 strength: float) -> np.ndarray:
    """Run ``METHODS[method]`` in float64 and return float32 ``z'`` with ``z``'s shape."""
    if method not in METHODS:
        raise MigrationError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    if not math.isfinite(float(strength)):
        raise MigrationError(f"strength must be a finite number, got {strength!r}")
    if NEEDS_SOURCE[method] and source is None:
        raise MigrationError(f"method {method!r} needs source statistics")
    moved = METHODS[method](np.asarray(z, dtype=np.float64), source, reference, float(strength))
    return moved.astype(np.float32)


# ----------------------------------------------------------------------------- chunking
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


def _pad_time(x: np.ndarray, length: int) -> np.ndarray:
    """Pad (T, W, C) to ``length`` steps by repeating the song backwards from its end, so the
    padding looks like the song's own content rather than a step to silence."""
    missing = length - len(x)
    if missing <= 0:
        return x
    reps = math.ceil(missing / len(x))
    tail = np.concatenate([x[::-1]] * reps, axis=0)[:missing] if reps > 1 else x[::-1][:missing]
    return np.concatenate([x, tail], axis=0)


def transform_features(
    model,
    x: np.ndarray,
    latent_fn: Optional[Callable[[np.ndarray], np.ndarray]],
    chunk_steps: int,
    overlap_steps: int,
    batch_size: int = 8,
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

    Returns:
        (T, W, C) float32 features, every step covered; memory beyond ``x`` and the output is
        ``batch_size`` chunks. Non-finite decodes are passed through (see :func:`bound_features`).
    """
    x = np.asarray(x, dtype=np.float32)
    total = len(x)
    if total < 1:
        raise MigrationError("cannot migrate an empty feature sequence")
    starts = chunk_plan(total, chunk_steps, overlap_steps)
    padded = _pad_time(x, starts[-1] + chunk_steps)
    out = np.zeros_like(padded)
    for begin in range(0, len(starts), batch_size):
        batch_starts = starts[begin:begin + batch_size]
        chunks = np.stack([padded[s:s + chunk_steps] for s in batch_starts])
        z, _ = model.encode(chunks)
        z = z.numpy()
        if latent_fn is not None:
            z = np.asarray(latent_fn(z), dtype=np.float32)
        decoded = model.decode(z).numpy()
        # A latent moved far off the data can decode to inf/nan; that stays visible in the
        # output (for bound_features to replace) instead of raising here.
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
    padded by :func:`_pad_time` (so every song contributes).
    """
    if len(x) < patch_steps:
        yield _pad_time(np.asarray(x, dtype=np.float32), patch_steps)
        return
    for start in range(0, len(x) - patch_steps + 1, patch_steps):
        yield np.asarray(x[start:start + patch_steps], dtype=np.float32)


def latent_stats_from_batches(model, config: Config, batches: Iterable[np.ndarray],
                              stats: Optional[LatentStats] = None) -> LatentStats:
    """Stream batches of patches (B, H, W, C) through ``model.encode`` into :class:`LatentStats`.

    Accepts numpy arrays or tensors (e.g. the patches of ``SongDataLoader.load(...,
    aligned=True)``); ``stats`` continues an existing accumulation.
    """
    stats = stats if stats is not None else LatentStats.for_model(model, config)
    for batch in batches:
        batch = np.asarray(batch, dtype=np.float32)
        z, _ = model.encode(batch)
        stats.update(z.numpy(), batch.shape[1])
        stats.update_features(batch)
    return stats


def _batched(items: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def feature_latent_stats(model, config: Config, features: Iterable[np.ndarray],
                         batch_size: int = 16, stats: Optional[LatentStats] = None
                         ) -> LatentStats:
    """:class:`LatentStats` of songs given as (T, W, C) feature arrays, over their aligned
    non-overlapping patches of ``config.window_size`` steps (see :func:`iter_patches`)."""
    patch_steps = config.input_shape[0]
    patches = (p for x in features for p in iter_patches(x, patch_steps))
    return latent_stats_from_batches(model, config, _batched(patches, batch_size), stats)


# ----------------------------------------------------------------------------- songs
def list_audio(folder: str) -> List[str]:
    """Audio files under ``folder`` (recursively, sorted); raises :class:`MigrationError` when
    the folder is missing or holds none."""
    if not os.path.isdir(folder):
        raise MigrationError(f"not a folder: {folder}")
    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if is_audio_file(name)
    )
    if not paths:
        raise MigrationError(
            f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {folder}")
    return paths


def check_source(samples: np.ndarray, config: Config, name: str = "source") -> np.ndarray:
    """Validate a song to migrate; returns it as float32 (N,).

    Non-finite, empty or silent audio raises :class:`utils.audio.AudioError` (one line). A song
    shorter than one patch is accepted with a warning: it is padded (by repeating it backwards)
    to one chunk for encoding and cut back to its own length afterwards.
    """
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if samples.size == 0:
        raise AudioError("no audio samples")
    short = len(samples) < config.patch_samples
    # check_audio also refuses songs shorter than a patch; zero padding keeps its other checks.
    check_audio(np.pad(samples, (0, config.patch_samples - len(samples))) if short else samples,
                config)
    if short:
        warnings.warn(
            f"{name} is shorter than one patch ({len(samples) / config.sampling_rate:.2f} s < "
            f"{config.patch_seconds:.2f} s); it is padded for encoding and cut back afterwards",
            stacklevel=2)
    return samples


def iter_folder_songs(folder: str, config: Config, on_skip: Optional[Callable[[str, str], None]]
                      = None) -> Iterator[Tuple[str, np.ndarray]]:
    """``(path, samples)`` of every usable song under ``folder``; a file that cannot be loaded or
    is silent/non-finite/shorter than a patch is reported to ``on_skip(path, reason)`` and
    skipped."""
    for path in list_audio(folder):
        try:
            samples = load_audio(path, config.sampling_rate)
            check_audio(samples, config)
        except AudioError as error:
            if on_skip is not None:
                on_skip(path, str(error))
            continue
        yield path, samples


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


def songs_latent_stats(model, config: Config, feature_stats: FeatureStats,
                       songs: Iterable[np.ndarray], batch_size: int = 16,
                       segment_seconds: Optional[float] = None) -> LatentStats:
    """:class:`LatentStats` of songs given as samples (N,) at ``config.sampling_rate``.

    Each song is featurised one segment at a time (:func:`iter_segments`) and its aligned,
    non-overlapping patches are streamed through the model (:func:`feature_latent_stats`).
    """
    segment, _ = segment_lengths(config, segment_seconds, overlap_seconds=0.0)
    features = (song_to_features(piece, config, feature_stats)
                for samples in songs for piece in iter_segments(samples, segment))
    return feature_latent_stats(
        model, config, (f.x[:max(f.num_steps, 1)] for f in features), batch_size)


def folder_latent_stats(model, config: Config, feature_stats: FeatureStats, folder: str,
                        batch_size: int = 16,
                        on_skip: Optional[Callable[[str, str], None]] = None) -> LatentStats:
    """:class:`LatentStats` of every usable song under ``folder`` (see :func:`iter_folder_songs`).
    Raises :class:`MigrationError` when no song is usable."""
    songs = (samples for _, samples in iter_folder_songs(folder, config, on_skip))
    stats = songs_latent_stats(model, config, feature_stats, songs, batch_size)
    if stats.empty:
        raise MigrationError(f"no usable song under {folder}")
    return stats


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
    model,
    config: Config,
    feature_stats: FeatureStats,
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
) -> MigrationResult:
    """Encode a whole song, move its latents toward ``reference`` and decode it to audio.

    Per audio segment (:func:`render_in_segments`): features with the segment's phase ->
    chunked encode -> ``METHODS[method]`` -> decode (:func:`transform_features`) ->
    :func:`bound_features` -> audio with the segment's phase (or Griffin-Lim).

    Args:
        model: the trained Glow of ``config``.
        feature_stats: the checkpoint's feature normalisation.
        samples: (N,) source audio at ``config.sampling_rate`` Hz (see :func:`check_source`).
        method, strength: a :data:`METHODS` name and its strength (0 = identity, 1 = full).
        reference: the target set's statistics.
        source_stats: statistics of the source set for ``shift`` / ``match``; by default those
            of the source song itself (one extra encoding pass over it).
        griffin_lim: invert spectrograms with Griffin-Lim instead of reusing the source phase.
        chunk_steps, overlap_steps, batch_size: see :func:`transform_features`
            (defaults: :func:`default_chunking`).
        segment_seconds, segment_overlap_seconds: audio segmentation (defaults
            :data:`SEGMENT_SECONDS`, :data:`SEGMENT_OVERLAP_SECONDS`).

    Returns:
        a :class:`MigrationResult`; ``samples`` has exactly N samples.
    """
    if method not in METHODS:
        raise MigrationError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    reference.check(config)
    samples = check_source(samples, config)
    segment, overlap = segment_lengths(config, segment_seconds, segment_overlap_seconds)
    chunk, chunk_overlap = default_chunking(config, chunk_steps, overlap_steps)
    if NEEDS_SOURCE[method] and source_stats is None:
        source_stats = songs_latent_stats(model, config, feature_stats, [samples], batch_size,
                                          segment_seconds)
    if source_stats is not None:
        source_stats.check(config)
    ref = reference.moments(chunk)
    src = source_stats.moments(chunk) if source_stats is not None else None

    def move(z):
        return apply_method(method, z, src, ref, strength)

    def render(piece):
        song = song_to_features(piece, config, feature_stats)
        features = transform_features(model, song.x, move, chunk, chunk_overlap, batch_size)
        features = bound_features(features, song.x, reference)
        return features_to_song(features, config, feature_stats, song=song,
                                use_phase=not griffin_lim)

    return MigrationResult(render_in_segments(samples, segment, overlap, render), source_stats)


def reconstruct_song(model, config: Config, feature_stats: FeatureStats, samples: np.ndarray,
                     chunk_steps: Optional[int] = None, overlap_steps: Optional[int] = None,
                     batch_size: int = 8, segment_seconds: Optional[float] = None,
                     segment_overlap_seconds: Optional[float] = None) -> np.ndarray:
    """decode(encode(song)) through the same segments and chunks as :func:`migrate_song`, with
    the source phase: (N,) float32 samples. Measures how exactly the model and the stitching
    invert (it should be the source to float32 precision)."""
    samples = check_source(samples, config)
    segment, overlap = segment_lengths(config, segment_seconds, segment_overlap_seconds)
    chunk, chunk_overlap = default_chunking(config, chunk_steps, overlap_steps)

    def render(piece):
        song = song_to_features(piece, config, feature_stats)
        features = transform_features(model, song.x, None, chunk, chunk_overlap, batch_size)
        return features_to_song(features, config, feature_stats, song=song)

    return render_in_segments(samples, segment, overlap, render)

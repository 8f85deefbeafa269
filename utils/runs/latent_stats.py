"""Latent statistics of a set of songs: the per-dimension moments that migration moves toward.

Statistics are *time-invariant*. Glow emits, for an input of ``H`` time steps, one latent piece per
level ``l`` of shape ``(H / 2**(l+1), w_l, c_l)`` (``model.latent_shapes[l] == (w_l, c_l)``); the
flattened ``z`` of ``model.encode`` is these pieces concatenated in level order
(:func:`piece_shapes`, :func:`split_latent`, :func:`join_latent`). A "dimension" of
:class:`LatentStats` is one ``(level, w, c)`` position, and its mean and variance pool every time
position of every patch. They therefore apply to a latent of any length, and one song alone has
enough positions to estimate its own statistics. Updates use Chan's parallel combination in
float64, so memory stays flat whatever the set's size; :class:`utils.runs.codec.Codec` streams songs
through the model into them.

Statistics are saved as ``.npz`` (:meth:`LatentStats.save`, format :data:`STATS_FORMAT_VERSION`)
with the Config of the model that produced them and, when known, a fingerprint of its weights
(:func:`weights_fingerprint`); they are refused for a model of another signature, or of the same
signature with other weights (another run, or another checkpoint of the same run). Files without
a fingerprint (older ones, or statistics nobody stamped) are accepted on the signature alone.

Units: latents are whitened (unit-free, ~N(0, 1)); feature ranges are in normalised feature units.
This module needs NumPy and the Config only (no TensorFlow, no model).
"""

from __future__ import annotations

import hashlib
import os
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from common_definitions import Config
from utils.errors import MigrationError
from utils.files import atomic_write

# Latent standard deviations are floored here (whitened units) so that a dimension that is
# constant in a set (e.g. a silent source) cannot make ``std_ref / std_src`` blow up.
MIN_STD = 1e-3
STATS_FORMAT_VERSION = 1


class Moments(NamedTuple):
    """Per-dimension ``mean`` and ``std`` (arrays broadcastable to the latent they move), as
    :meth:`LatentStats.moments` lays them out: what the latent moves of
    :mod:`utils.migration.latent_moves` move from and toward."""

    mean: np.ndarray
    std: np.ndarray


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


def weights_fingerprint(model) -> str:
    """16 hex digits of SHA-256 over the shapes and values of ``model.variables`` in order: the
    same for the same weights however they were loaded (a checkpoint or ``glow.weights.h5``),
    different for any other weights of the same architecture. Reads every weight once."""
    hasher = hashlib.sha256()
    for variable in model.variables:
        values = np.ascontiguousarray(np.asarray(variable))
        hasher.update(f"{values.dtype.str}{values.shape};".encode())
        hasher.update(values.tobytes())
    return hasher.hexdigest()[:16]


# ----------------------------------------------------------------------------- statistics
class LatentStats:
    """Streaming, time-invariant per-dimension moments of whitened latents.

    For each level ``l``: ``count[l]`` pooled positions (int), ``mean[l]`` and ``var[l]``
    (population variance) of shape ``(w_l, c_l)`` in float64. Updates use Chan et al.'s parallel
    combination of (count, mean, M2), so streaming any partition of the data gives the same result
    as ``np.mean`` / ``np.var`` over all of it (to float64 rounding).

    ``feature_min`` / ``feature_max`` (W, C) hold the range of the normalised features the
    latents were encoded from (see :func:`utils.migration.latent_moves.bound_features`).

    The statistics belong to the model that produced the latents: ``config`` is stored with them,
    and :meth:`check` refuses a model whose :meth:`Config.model_signature` differs; ``weights``
    (:func:`weights_fingerprint` of that model, "" when unknown) ties them to its weights too.
    """

    def __init__(self, config: Config, latent_shapes: Sequence[Tuple[int, int]]):
        self.config = config
        self.latent_shapes = [(int(w), int(c)) for w, c in latent_shapes]
        self.count = np.zeros(len(self.latent_shapes), dtype=np.int64)
        self._mean = [np.zeros(s, dtype=np.float64) for s in self.latent_shapes]
        self._m2 = [np.zeros(s, dtype=np.float64) for s in self.latent_shapes]
        # Per (W, C) range of the normalised features the latents came from: the envelope that
        # the latent moves keep decoded features inside (latent_moves.bound_features).
        feature_shape = tuple(config.input_shape[1:])
        self.feature_min = np.full(feature_shape, np.inf)
        self.feature_max = np.full(feature_shape, -np.inf)
        self.weights = ""

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
    def check(self, config: Config, weights: Optional[str] = None, where: str = "") -> None:
        """Raise :class:`MigrationError` (one line) if these statistics belong to a model of
        another signature than ``config``'s, or to other weights than those of fingerprint
        ``weights`` (not checked when either fingerprint is unknown). ``where`` (e.g. the
        file) starts the message."""
        start = f"{where}: " if where else ""
        problems = config.incompatibilities(self.config)
        if problems:
            raise MigrationError(
                f"{start}latent statistics were computed with another model configuration: "
                + ", ".join(problems))
        if weights and self.weights and weights != self.weights:
            raise MigrationError(
                f"{start}latent statistics were computed with other weights (fingerprint "
                f"{self.weights}) than the checkpoint's ({weights}): compute them again from "
                "the reference folder with this checkpoint")

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
            "weights_fingerprint": np.array(self.weights),
        }
        for level, (mean, var) in enumerate(zip(self._mean, self.var)):
            arrays[f"mean_{level}"] = mean
            arrays[f"var_{level}"] = var
        atomic_write(path, lambda tmp: np.savez(tmp, **arrays))

    @classmethod
    def load(cls, path: str, config: Optional[Config] = None,
             weights: Optional[str] = None) -> "LatentStats":
        """Read :meth:`save`'s file; with ``config``, refuse statistics of another model
        signature, and with ``weights`` (:func:`weights_fingerprint` of the model they will be
        used with) statistics of other weights. Raises :class:`MigrationError` (one line) for a
        missing or malformed file."""
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
                if "weights_fingerprint" in data.files:  # absent from files saved before it
                    stats.weights = str(data["weights_fingerprint"])
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
            stats.check(config, weights, where=path)
        return stats

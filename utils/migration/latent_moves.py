"""The latent moves of feature migration, as pure NumPy functions.

Each method maps whitened latents ``z`` (unit-free, ~N(0, 1) under the model) toward the moments of
a reference set; ``a`` is the strength, and strength 0 returns ``z`` bit for bit:

- ``midpoint``: ``z + a * (mean_ref - z) / 2``; at ``a = 1`` the seed's ``(z + mean_ref) / 2``;
- ``shift``:    ``z + a * (mean_ref - mean_src)``, Glow's / Blow's attribute vector;
- ``match``:    ``z + a * (z_m - z)`` with ``z_m = mean_ref + (z - mean_src) * std_ref / std_src``,
  per-dimension moment matching: at ``a = 1`` the source set gets exactly the reference's moments.

:data:`METHOD_NAMES` is the one list of method names that ``migrate.py`` and ``evaluate.py``
offer: these latent moves (:data:`LATENT_METHODS`), the no-model baseline ``eq`` and a
conditional model's ``convert``. This module imports only NumPy (no TensorFlow), so a CLI can
build its flags from it before TensorFlow loads.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from utils.errors import MigrationError
from utils.runs.latent_stats import Moments


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
NEEDS_SOURCE: Dict[str, bool] = {"midpoint": False, "shift": True, "match": True,
                                 "eq": False, "convert": False}
# The methods that move latents toward latent statistics (the functions above).
LATENT_METHODS: Tuple[str, ...] = tuple(METHODS)
# The one list of method names (in this order) that the CLIs offer and the notebooks sweep: the
# latent moves, the no-model baseline ``eq`` (per-bin log-STFT moment matching,
# utils/migration/eq_baseline.py) and ``convert`` (a singer-conditional model decodes under another
# singer, utils/runs/codec.py).
METHOD_NAMES: Tuple[str, ...] = LATENT_METHODS + ("eq", "convert")


def check_method(method: str, names: Tuple[str, ...] = LATENT_METHODS) -> None:
    """Raise :class:`MigrationError` (one line) unless ``method`` is one of ``names`` (default:
    the latent moves of :data:`METHODS`)."""
    if method not in names:
        raise MigrationError(f"unknown method {method!r}; choose one of {', '.join(names)}")


def apply_method(method: str, z: np.ndarray, source: Optional[Moments], reference: Moments,
                 strength: float) -> np.ndarray:
    """Run ``METHODS[method]`` in float64 and return float32 ``z'`` with ``z``'s shape.

    Args:
        method: a :data:`METHOD_NAMES` name.
        z: (B, D) whitened latents (any shape the moments broadcast to).
        source: the source set's moments; required when ``NEEDS_SOURCE[method]``.
        reference: the reference set's moments.
        strength: finite; 0 is the identity, 1 the method's full move.
    """
    check_method(method)
    if not math.isfinite(float(strength)):
        raise MigrationError(f"strength must be a finite number, got {strength!r}")
    if NEEDS_SOURCE[method] and source is None:
        raise MigrationError(f"method {method!r} needs source statistics")
    moved = METHODS[method](np.asarray(z, dtype=np.float64), source, reference, float(strength))
    return moved.astype(np.float32)

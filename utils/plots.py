"""Pictures of spectrograms, shared by the trainer's summaries, migrate.py and the notebooks.

Imports only NumPy (matplotlib lazily), so inference code can use it without training code.
"""

from __future__ import annotations

import math

import numpy as np

# Dynamic range shown by the spectrogram images (80 dB of amplitude, in nats of log-magnitude).
IMAGE_RANGE_NATS = 80.0 / 20.0 * math.log(10.0)


def spectrogram_image(log_mag) -> np.ndarray:
    """A log-magnitude spectrogram ``(frames, bins)`` in nats as an RGB image ``(bins, frames, 3)``.

    Low frequencies at the bottom; the top ``IMAGE_RANGE_NATS`` (80 dB) mapped through the
    ``magma`` colour map (grey when matplotlib is missing); float32 in [0, 1].
    """
    image = np.asarray(log_mag, np.float32).T[::-1]
    top = float(np.max(image)) if image.size else 0.0
    image = np.clip((image - (top - IMAGE_RANGE_NATS)) / IMAGE_RANGE_NATS, 0.0, 1.0)
    try:
        from matplotlib import colormaps

        return colormaps["magma"](image)[..., :3].astype(np.float32)
    except ImportError:  # pragma: no cover - matplotlib is in requirements.txt
        return np.repeat(image[..., None], 3, axis=-1)

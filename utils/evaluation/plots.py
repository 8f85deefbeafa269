"""Pictures of spectrograms, shared by the trainer's summaries, migrate.py and the notebooks.

Imports only NumPy (matplotlib lazily), so inference code can use it without training code.
:func:`spectrogram_image` is the one mapping of a log-magnitude spectrogram to colours;
:func:`spectrogram_figure` lays several of them out on one shared colour scale.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np

# Dynamic range shown by the spectrogram images (80 dB of amplitude, in nats of log-magnitude).
IMAGE_RANGE_NATS = 80.0 / 20.0 * math.log(10.0)
# Log-magnitude in nats -> dB of amplitude.
DB_PER_NEPER = 20.0 / math.log(10.0)


def spectrogram_image(log_mag, top: Optional[float] = None,
                      range_nats: float = IMAGE_RANGE_NATS) -> np.ndarray:
    """A log-magnitude spectrogram ``(frames, bins)`` in nats as an RGB image ``(bins, frames, 3)``.

    Low frequencies at the bottom; the ``range_nats`` below ``top`` (default: the image's own
    maximum; pass a shared one to compare images) mapped through the ``magma`` colour map (grey
    when matplotlib is missing); float32 in [0, 1]. The default range is 80 dB.
    """
    image = np.asarray(log_mag, np.float32).T[::-1]
    if top is None:
        top = float(np.max(image)) if image.size else 0.0
    # A constant image (zero range) shows as the colour map's top rather than dividing by zero.
    span = max(float(range_nats), 1e-12)
    image = np.clip((image - (top - span)) / span, 0.0, 1.0)
    try:
        from matplotlib import colormaps

        return colormaps["magma"](image)[..., :3].astype(np.float32)
    except ImportError:  # pragma: no cover - matplotlib is in requirements.txt
        return np.repeat(image[..., None], 3, axis=-1)


def spectrogram_figure(
    panels: Sequence[Tuple[str, np.ndarray, Tuple[float, float]]],
    max_khz: float,
    title: Optional[str] = None,
    range_nats: float = IMAGE_RANGE_NATS,
):
    """One row per panel of :func:`spectrogram_image`, on one colour scale, with a dB colour bar.

    Args:
        panels: ``(name, log_mag, (start, stop))`` each: a log-magnitude ``(frames, bins)`` in
            nats and the time span in seconds its frames cover.
        max_khz: the frequency of the top bin (Nyquist), kHz.
        title: the figure's title.
        range_nats: dynamic range shown below the loudest value of all panels (default 80 dB).

    Returns:
        the ``matplotlib.figure.Figure`` (made with pyplot, so a notebook shows it; a script
        picks its backend, e.g. Agg, before calling and closes the figure after saving it).
    """
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    top = max(float(np.max(log_mag)) for _, log_mag, _ in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 1.0 + 2.3 * len(panels)),
                             sharex=True, sharey=True, squeeze=False, layout="constrained")
    for ax, (name, log_mag, (start, stop)) in zip(axes[:, 0], panels):
        ax.imshow(spectrogram_image(log_mag, top, range_nats), aspect="auto",
                  extent=(start, stop, 0.0, max_khz))
        ax.set_title(name, loc="left", fontsize=10)
        ax.set_ylabel("frequency (kHz)")
    axes[-1, 0].set_xlabel("time (s)")
    scale = ScalarMappable(Normalize(DB_PER_NEPER * (top - range_nats), DB_PER_NEPER * top),
                           cmap="magma")
    fig.colorbar(scale, ax=axes[:, 0].tolist(), label="magnitude (dB)", pad=0.01)
    if title:
        fig.suptitle(title)
    return fig

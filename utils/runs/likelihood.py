"""Held-out likelihood of whole songs under a loaded checkpoint (:class:`~utils.runs.codec.Codec`).

Songs are cut into aligned, non-overlapping patches of the training length
(:func:`~utils.runs.song_chunks.iter_patches`), each scored under its own singer (a conditional
checkpoint) or, for a parallel checkpoint, as the target singer's rendition aligned to the song
it was converted from, given that song's frames. Bits/dim are ``-log p(x) / (D ln 2)`` per patch
with ``D = H * W * C`` (continuous features, no discretisation term, so they can be negative).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict, Iterable

import numpy as np

from utils.data.parallel import aligned_target
from utils.evaluation.metrics import bits_per_dim_from_log_prob
from utils.runs.song_chunks import iter_patches

if TYPE_CHECKING:
    from utils.runs.codec import Codec

# ----------------------------------------------------------------------------- model metrics
def heldout_bits_per_dim(model, batches: Iterable) -> Dict[str, float]:
    """Mean bits/dim over batches of patches (B, H, W, C) (numpy or tensors), or of
    ``(patches, singer ids (B,))`` for a conditional model (each patch under its own singer).

    Returns ``{"bits_per_dim": mean over patches, "patches": count}``; each patch's bits/dim is
    ``-log p(x) / (D ln 2)`` with ``D = H * W * C`` (continuous features, no discretisation
    term).
    """
    total, count = 0.0, 0
    for batch in batches:
        batch, ids = batch if isinstance(batch, tuple) else (batch, None)
        batch = np.asarray(batch, np.float32)
        dims = int(np.prod(batch.shape[1:]))
        log_prob = model.log_prob(batch, ids).numpy().astype(np.float64)
        total += float(np.sum(bits_per_dim_from_log_prob(log_prob, dims)))
        count += len(batch)
    return {"bits_per_dim": total / count if count else math.nan, "patches": count}


def song_patch_batches(codec: "Codec", songs: Iterable, batch_size: int):
    """Batches (B, H, W, C) of the aligned, non-overlapping patches of whole songs, given as
    ``(samples, singer)`` pairs; for a conditional model ``(patches, singer ids (B,))``."""
    patch_steps = codec.config.input_shape[0]

    def patches():
        for samples, singer in songs:
            song = codec.features(samples)
            if song.num_steps < patch_steps:
                continue  # bits/dim of padding would not be the song's
            if codec.singers and singer not in codec.singers:
                singer = codec.classify(samples)  # a folder not named after a singer
            ids = codec.singer_id(singer) if codec.singers else -1
            for patch in iter_patches(song.x[:song.num_steps], patch_steps):
                yield patch, ids

    pending = []
    for patch, ids in patches():
        pending.append((patch, ids))
        if len(pending) == batch_size:
            yield _stacked(pending, codec)
            pending = []
    if pending:
        yield _stacked(pending, codec)


def _stacked(pending, codec: "Codec"):
    x = np.stack([patch for patch, _ in pending])
    return (x, np.array([ids for _, ids in pending], np.int32)) if codec.singers else x


def parallel_heldout(codec: "Codec", evaluated, renditions, target: str, batch_size: int
                     ) -> Dict[str, object]:
    """A parallel checkpoint's held-out bits/dim: the target singer's renditions (aligned to the
    evaluated songs) given the songs' frames; not measured without ``--target_renditions``."""
    if renditions is None:
        return {"bits_per_dim": math.nan, "patches": 0,
                "source": "not measured: a parallel checkpoint needs --target_renditions"}
    config, stats, patch = codec.config, codec.stats, codec.config.input_shape[0]
    ids = codec.singer_id(target)
    batches = []
    for (_, samples), rendition in zip(evaluated, renditions.songs):
        source, wanted = (codec.features(s) for s in (samples, rendition))
        raw = [stats.denormalize(f.x[:f.num_steps]) for f in (source, wanted)]
        aligned = stats.normalize(aligned_target(raw[0], raw[1], config))
        for start in range(0, source.num_steps - patch + 1, patch):
            batches.append((aligned[start:start + patch], source.x[start:start + patch]))
    total, count = 0.0, 0
    for begin in range(0, len(batches), batch_size):
        x, context = (np.stack(part).astype(np.float32) for part in zip(
            *batches[begin:begin + batch_size]))
        bits = codec.model.bits_per_dim(x, np.full(len(x), ids, np.int32), context).numpy()
        total, count = total + float(np.sum(bits)), count + len(x)
    return {"bits_per_dim": total / count if count else math.nan, "patches": count,
            "source": "--target_renditions given the evaluated songs"}

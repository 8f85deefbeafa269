"""What a ``migrate.py`` run moves its songs toward, computed once for the whole run.

A run names its statistics up front (``--reference``: a folder of songs or a latent statistics
``.npz``; ``--source_stats`` likewise) and :func:`open_stats` refuses unusable ones before any
work. :class:`Targets` then computes what the method needs the first time a song needs it, fits
the method (:mod:`utils.migration.registry`) and reuses both for every later song: the
reference's latent statistics (the latent moves) or per-bin log-STFT statistics (``eq``), and the
``--source_stats``. Latent statistics of a singer-conditional checkpoint are in the coordinates of
the singer the songs are encoded under, so they and the fitted method are kept per source singer;
per-bin statistics need no model and are computed once.

Progress and skipped reference songs are reported on a :class:`utils.migration.folders.Console`
(one line each, without tearing a progress bar).
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Dict, NamedTuple, Optional, Tuple

from utils.cli import CliError
from utils.migration.bin_stats import BinStats, song_bin_stats
from utils.migration.folders import Console
from utils.migration.method import BINS, MigrationMethod, MigrationTarget
from utils.migration.registry import fit, method_class

if TYPE_CHECKING:  # imported for real only when used (TensorFlow loads with the codec)
    from utils.runs.codec import Codec
    from utils.runs.latent_stats import LatentStats


class StatsSource(NamedTuple):
    """Where latent statistics come from: ``stats`` loaded from an ``.npz`` (``folder`` None), or
    a ``folder`` of songs whose statistics are computed during the work (``stats`` None)."""

    what: str
    stats: Optional["LatentStats"]
    folder: Optional[str]


def open_stats(path: str, codec: "Codec", what: str) -> StatsSource:
    """Refuse unusable statistics before any work: an ``.npz`` is loaded (and refused when it
    belongs to another model, or to other weights than the codec's: see
    :func:`utils.runs.latent_stats.weights_fingerprint`); a folder must hold audio files."""
    from utils.data.song_folders import list_audio
    from utils.runs.latent_stats import LatentStats, weights_fingerprint

    if os.path.isdir(path):
        list_audio(path)
        return StatsSource(what, None, path)
    if os.path.isfile(path):
        stats = LatentStats.load(path, codec.config, weights_fingerprint(codec.model))
        return StatsSource(what, stats, None)
    raise CliError(f"{what} not found: {path}")


def compute_stats(source: StatsSource, codec: "Codec", console: Console) -> "LatentStats":
    """The LatentStats of ``source`` under ``codec``: as loaded, or over its folder of songs
    (skipped files are warned about, one line each; the codec stamps them with the fingerprint
    of its weights, so that a saved copy is refused with other weights)."""
    if source.folder is None:
        return source.stats

    def skipped(song_path: str, reason: str) -> None:
        console.warn(f"{source.what}: skipping {song_path}: {reason}")

    console.info(f"computing {source.what} statistics over {source.folder} ...")
    return codec.folder_latent_stats(source.folder, on_skip=skipped)


def bin_stats(folder: str, codec: "Codec", console: Console) -> BinStats:
    """Per-bin log-STFT statistics (nats) of every usable song under ``folder`` (the ``eq``
    target)."""
    def skipped(song_path: str, reason: str) -> None:
        console.warn(f"reference: skipping {song_path}: {reason}")

    console.info(f"computing per-bin reference statistics over {folder} ...")
    return song_bin_stats((s for _, s in codec.folder_songs(folder, skipped)), codec.config)


class Targets:
    """The targets of one run, each computed once (see the module docstring).

    Args:
        args: the run's flags (``method``, ``target_singer``, ``save_reference_stats``).
        reference: the reference's :class:`StatsSource` (a folder for ``eq``; None for
            ``convert``).
        source_stats: the ``--source_stats`` :class:`StatsSource`, or None (each song's own).
        console: where progress lines and skipped reference songs are reported.
    """

    def __init__(self, args: argparse.Namespace, reference: Optional[StatsSource],
                 source_stats: Optional[StatsSource], console: Console):
        self.args = args
        self.reference = reference
        self.source_stats = source_stats
        self.console = console
        self._bins: Optional[BinStats] = None
        self._fitted: Dict[Optional[str], Tuple[MigrationMethod, Optional["LatentStats"]]] = {}

    def of(self, codec: "Codec") -> Tuple[MigrationMethod, Optional["LatentStats"]]:
        """``(the run's method fitted for songs encoded under codec, source statistics or
        None)``: under its :attr:`~utils.runs.codec.Codec.singer` on a conditional checkpoint.

        Raises:
            MigrationError: a reference or source folder without one usable song.
        """
        key = codec.singer
        if key not in self._fitted:
            method = fit(self.args.method, codec, self._target(codec))
            source_stats = None
            if self.source_stats is not None:
                source_stats = compute_stats(self.source_stats, codec, self.console)
            self._fitted[key] = (method, source_stats)
        return self._fitted[key]

    def _target(self, codec: "Codec") -> MigrationTarget:
        """What the run's method is fitted to for songs encoded under ``codec``."""
        args = self.args
        target = MigrationTarget(singer=args.target_singer,
                                 source_moments=getattr(args, "source_moments", None),
                                 harmonic_hz=getattr(args, "harmonic_hz", None),
                                 temperature=getattr(args, "temperature", None))
        if method_class(args.method).reference == BINS:
            if self._bins is None:
                self._bins = bin_stats(self.reference.folder, codec, self.console)
            target.bins = self._bins
        elif self.reference is not None:
            target.latent = compute_stats(self.reference, codec, self.console)
            if args.save_reference_stats:
                target.latent.save(args.save_reference_stats)
                self.console.info(f"saved reference statistics to {args.save_reference_stats}")
        return target

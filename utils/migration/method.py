"""The one interface of every migration method: fitted once, then applied to songs at a strength.

A method is a small class (a :class:`MigrationMethod`). It is *fitted* once for songs encoded
under a :class:`~utils.runs.codec.Codec` (:meth:`MigrationMethod.fit`, or its constructor): to
the statistics of a reference set (the latent moves, ``eq``) or to the checkpoint's singers
(``convert``). It then *transforms* any number of songs, each at any strength
(:meth:`MigrationMethod.transform`): strength 0 returns the source (to float32 precision),
strength 1 is the method's full move. Its class attributes are the facts the command lines, the
evaluation and the notebooks need about it (its name, its help, what it takes and what it needs of
the checkpoint), each written once; :mod:`utils.migration.registry` lists the classes.

Units: songs are mono float32 samples ``(N,)`` at the codec's ``config.sampling_rate`` Hz. This
module imports no TensorFlow, nor do the method classes when they load: a command line builds and
checks its flags from them before TensorFlow loads.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Optional

import numpy as np

from utils.errors import MigrationError
from utils.migration.bin_stats import BinStats
from utils.runs.latent_stats import LatentStats

if TYPE_CHECKING:  # the codec loads TensorFlow
    from utils.runs.codec import Codec

# What a method moves toward (MigrationMethod.reference):
LATENT = "latent"  # a reference set's LatentStats: a folder of songs or a statistics .npz
BINS = "bins"  # a reference set's per-bin log-STFT statistics (BinStats): a folder of songs


@dataclasses.dataclass
class MigrationTarget:
    """What a method is fitted to; each method reads the fields it uses.

    latent: the reference set's :class:`LatentStats` (the latent moves), in the codec's
        coordinates (a conditional codec's :attr:`~utils.runs.codec.Codec.singer`).
    bins: the reference set's per-bin log-STFT statistics (``eq``,
        :func:`utils.migration.bin_stats.song_bin_stats`).
    singer: the singer to convert to (``convert``; the codec encodes under its own singer).
    source_moments: ``convert``'s choice of what standardises the source (``"singer"`` or
        ``"song"``; None: the feature's default, :data:`utils.migration.convert.SOURCE_MOMENTS`).
    harmonic_hz: ``convert`` and ``eq``: the band (Hz) below which a change keeps the source's
        harmonics (:mod:`utils.migration.harmonic_band`); None: the method's default (convert's
        :data:`~utils.migration.harmonic_band.DEFAULT_HARMONIC_HZ` on spectrograms, 0 for eq, the
        baseline as it is).
    temperature: ``convert`` on a parallel checkpoint: the standard deviation of the latent it
        decodes under the source's frames (None:
        :data:`~utils.migration.convert.PARALLEL_TEMPERATURE`; 0: the flow's mode).
    """

    latent: Optional[LatentStats] = None
    bins: Optional[BinStats] = None
    singer: Optional[str] = None
    source_moments: Optional[str] = None
    harmonic_hz: Optional[float] = None
    temperature: Optional[float] = None


class MigrationResult(NamedTuple):
    """What :meth:`MigrationMethod.transform` produced.

    samples: (N,) float32 audio, exactly as long as the source.
    source_stats: the source statistics a latent move used (the song's own unless given), so a
        caller can reuse them for the same song; None for every other method.
    """

    samples: np.ndarray
    source_stats: Optional[LatentStats]


def check_strength(strength: float) -> float:
    """``strength`` as a float; raises :class:`MigrationError` (one line) unless it is finite."""
    if not math.isfinite(float(strength)):
        raise MigrationError(f"strength must be a finite number, got {strength!r}")
    return float(strength)


class MigrationMethod(abc.ABC):
    """One migration method, fitted for songs encoded under ``codec``.

    Class attributes (the facts about the method, read by the CLIs, the evaluation and the
    notebooks through :mod:`utils.migration.registry`):

    - ``name``: what ``--method`` calls it; ``help``: one line saying what it does;
    - ``reference``: what it moves toward: :data:`LATENT` (``--reference``: a folder of songs or
      a latent statistics ``.npz``), :data:`BINS` (``--reference``: a folder of songs) or None
      (it takes no reference);
    - ``needs_source_stats``: it moves from the source's latent statistics (``--source_stats``,
      by default the song's own);
    - ``conditional``: it needs a singer-conditional checkpoint and a target singer;
    - ``takes_harmonic_hz``: it takes a band below which the source's harmonics are kept
      (``--harmonic_hz``); ``takes_source_moments``: it takes ``--source_moments``;
      ``takes_temperature``: it takes ``--temperature`` (a parallel checkpoint's draw);
    - ``uses_model``: its output depends on the checkpoint (``eq``'s does not);
    - ``transposes``: it can move the melody of a world checkpoint (``--transpose``).
    """

    name: ClassVar[str]
    help: ClassVar[str]
    reference: ClassVar[Optional[str]] = None
    needs_source_stats: ClassVar[bool] = False
    conditional: ClassVar[bool] = False
    takes_harmonic_hz: ClassVar[bool] = False
    takes_source_moments: ClassVar[bool] = False
    takes_temperature: ClassVar[bool] = False
    uses_model: ClassVar[bool] = True
    transposes: ClassVar[bool] = True

    def __init__(self, codec: "Codec"):
        self.codec = codec

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.codec!r})"

    @classmethod
    def works_with(cls, codec: "Codec") -> bool:
        """Whether this method can run on ``codec``'s checkpoint (``convert`` needs singers)."""
        return not cls.conditional or bool(codec.singers)

    @classmethod
    @abc.abstractmethod
    def fit(cls, codec: "Codec", target: MigrationTarget) -> "MigrationMethod":
        """This method fitted to what it reads of ``target``, for songs encoded under ``codec``.

        Raises:
            MigrationError: ``target`` lacks what the method needs, or it does not fit the
                checkpoint (statistics of another model, an unknown singer).
        """

    @abc.abstractmethod
    def transform(self, samples: np.ndarray, strength: float,
                  source_stats: Optional[LatentStats] = None, **options) -> MigrationResult:
        """The method applied to a whole song ``samples (N,)`` at ``strength``.

        ``source_stats`` (the latent moves that need them): the source set's statistics, by
        default the song's own. ``options``: how the song is processed and rendered:
        ``griffin_lim``, ``semitones`` (a world checkpoint's transposition) and the codec's
        chunking (``chunk_steps``, ``overlap_steps``, ``batch_size``, ``segment_seconds``,
        ``segment_overlap_seconds``: :meth:`utils.runs.codec.Codec.transform`).
        """

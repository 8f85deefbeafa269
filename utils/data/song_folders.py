"""Folders of songs for inference: which files they hold, and which of them a model can use.

The training side reads folders through TFRecords (``data_loader.py``); migration and evaluation
read a reference or source folder directly, one song in memory at a time. Both walk folders with
the one walker, :func:`utils.files.audio_files`.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

from common_definitions import Config
from utils.audio.signal import AudioError, check_audio, load_audio
from utils.errors import MigrationError
from utils.files import AUDIO_EXTENSIONS, audio_files


def list_audio(folder: str) -> List[str]:
    """Audio files under ``folder`` (recursively, in :func:`utils.files.audio_files` order).

    Raises:
        MigrationError: the folder is missing or holds no audio file (one line).
    """
    if not os.path.isdir(folder):
        raise MigrationError(f"not a folder: {folder}")
    paths = audio_files(folder)
    if not paths:
        raise MigrationError(
            f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {folder}")
    return paths


def iter_folder_songs(folder: str, config: Config,
                      on_skip: Optional[Callable[[str, str], None]] = None
                      ) -> Iterator[Tuple[str, np.ndarray]]:
    """``(path, samples)`` of every usable song under ``folder``, loaded one at a time.

    ``samples`` is mono float32 ``(N,)`` at ``config.sampling_rate`` Hz. A file that cannot be
    loaded or is silent, non-finite or shorter than one patch is reported to
    ``on_skip(path, reason)`` and skipped.

    Raises:
        MigrationError: the folder is missing or holds no audio file (see :func:`list_audio`).
    """
    for path in list_audio(folder):
        try:
            samples = load_audio(path, config.sampling_rate)
            check_audio(samples, config)
        except AudioError as error:
            if on_skip is not None:
                on_skip(path, str(error))
            continue
        yield path, samples

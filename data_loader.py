"""SongDataLoader: audio folders -> TFRecord shards -> feature patches -> batches.

The entry point of the data side; the work is done in two modules:

- writing (:mod:`utils.data.records_writer`): ``make`` walks the given folders (recursively;
  ``.wav .mp3 .flac .ogg`` in any case; dot-names ignored), decodes each file to mono float32 at
  ``config.sampling_rate``, and writes one TFRecord example per song into shards of about
  ``config.shard_size_seconds`` of audio. A manifest keyed by path, size and modification time
  makes re-runs incremental: an unchanged file is never decoded again, a changed one is, and a
  removed one drops out. Unusable files are skipped with a one-line reason, and so are FIFOs,
  sockets, devices and unreadable files or folders (never opened blocking). Normalisation
  statistics of the configured feature are saved beside the records. The manifest records each
  shard's size, CRC-32 and record count: a damaged or missing shard is rebuilt on the next
  ``make`` (its songs decoded again). One process at a time writes a records folder
  (``RECORDS/.lock``); Ctrl-C leaves it as it was.
- reading (:mod:`utils.data.records`): ``records`` opens them as a
  :class:`~utils.data.records.Records` (manifest read once, every shard checked against it: a
  damaged one is left out with one warning line naming it and its songs): the songs, their
  statistics, and two ``tf.data`` pipelines of normalised patches: random windows per song per epoch
  (seeded) for training, or aligned windows that tile each song for evaluation.

CLI::

    python data_loader.py AUDIO_DIR [AUDIO_DIR ...] --out RECORDS_DIR [--sampling_rate SR]
        [--feature {spectrogram,waveform}] [--window_size N] [--channel_size N]
        [--n_fft N] [--hop_length N]

Exit status (:mod:`utils.cli`): 0 when some song was written; 1 when none was; 2 for a bad flag
or value, a missing, unreadable or empty audio folder, an output folder that cannot be made, or
a records folder another live run is writing; 130 for Ctrl-C. An ``--out`` inside an audio
folder is not walked as audio (one warning line).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, List, Optional, Sequence, Tuple

from common_definitions import FEATURES, Config
from utils.cli import OneLineArgumentParser, run_cli
# Re-exported: callers of the data side import these from here.
from utils.data.records import Records, read_records_manifest
from utils.data.records_writer import MakeSummary, find_audio_files, outputs_inside, write_records
from utils.data.shards import DataError, Song

__all__ = ["SongDataLoader", "Records", "Song", "MakeSummary", "DataError",
           "find_audio_files", "read_records_manifest", "main"]


class SongDataLoader:
    """Makes and opens the TFRecords of a corpus under one :class:`Config`."""

    def __init__(self, config: Config):
        self.config = config

    def _records_dir(self, records_dir: Optional[str]) -> str:
        return records_dir if records_dir is not None else self.config.records_dir

    def make(
        self,
        data_dirs: Optional[Sequence[str]] = None,
        records_dir: Optional[str] = None,
        log: Callable[[str], None] = print,
        exclude: Sequence[str] = (),
    ) -> MakeSummary:
        """Bring the records in ``records_dir`` (default ``config.records_dir``) up to date with
        the audio under ``data_dirs`` (default ``config.data_dirs``), leaving out the folders in
        ``exclude`` (a run's own outputs, see :func:`utils.data.records_writer.outputs_inside`); see
        :func:`utils.data.records_writer.write_records` (it rebuilds damaged shards and holds the
        folder's lock meanwhile).

        Raises:
            DataError: a folder is missing, unreadable or holds no audio file.
            utils.locks.FolderLocked: another live run is writing ``records_dir``.
        """
        files = find_audio_files(tuple(data_dirs) if data_dirs else self.config.data_dirs,
                                 exclude=exclude)
        return write_records(self.config, files, self._records_dir(records_dir), log)

    def records(self, records_dir: Optional[str] = None) -> Records:
        """The records in ``records_dir`` (default ``config.records_dir``), manifest read once.

        Raises:
            DataError: no records there, records at another sampling rate, no usable song.
        """
        return Records(self.config, self._records_dir(records_dir))


# ---------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="data_loader.py",
                                   description="Audio folders -> TFRecord shards.")
    parser.add_argument("audio_dirs", nargs="+", metavar="AUDIO_DIR",
                        help="folders of audio; each folder's name labels its songs")
    parser.add_argument("--out", required=True, metavar="RECORDS_DIR", help="records folder")
    parser.add_argument("--sampling_rate", type=int, help="Hz (default %(default)s)",
                        default=Config.sampling_rate)
    parser.add_argument("--feature", choices=FEATURES, default=Config.feature)
    parser.add_argument("--window_size", type=int, help="patch length in time steps")
    parser.add_argument("--channel_size", type=int, default=Config.channel_size)
    parser.add_argument("--n_fft", type=int, default=Config.n_fft)
    parser.add_argument("--hop_length", type=int, default=Config.hop_length)
    return parser


def _prepare(args: argparse.Namespace) -> Tuple[Config, List[Tuple[str, str]]]:
    """The Config and the files to read; refuses a bad value, a missing or empty folder and an
    output folder that cannot be made, before any file is decoded."""
    config = Config(
        data_dirs=tuple(args.audio_dirs), records_dir=args.out,
        sampling_rate=args.sampling_rate, feature=args.feature, window_size=args.window_size,
        channel_size=args.channel_size, n_fft=args.n_fft, hop_length=args.hop_length,
    )
    exclude = outputs_inside(config.data_dirs, [("--out", config.records_dir)],
                             refuse_equal=False)
    files = find_audio_files(config.data_dirs, exclude=exclude)
    os.makedirs(config.records_dir, exist_ok=True)
    return config, files


def _work(prepared: Tuple[Config, List[Tuple[str, str]]]) -> int:
    config, files = prepared
    summary = write_records(config, files, config.records_dir)
    return 0 if summary.written else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Make records from audio folders; returns the exit status (see the module docstring)."""
    return run_cli("data_loader.py", build_parser(), _prepare, _work, argv)


if __name__ == "__main__":
    sys.exit(main())

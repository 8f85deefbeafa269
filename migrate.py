"""Migrate a song toward a reference set of songs, or convert it to another singer.

    python migrate.py --checkpoint_dir CK --source SONG --reference REF \\
        --method {midpoint,shift,match,eq} --strength A --output OUT.wav \\
        [--source_stats S.npz] [--save_reference_stats PATH] [--griffin_lim]
    python migrate.py --checkpoint_dir CK --source SONG --method convert \\
        --target_singer NAME [--source_singer NAME] --strength A --output OUT.wav

``REF`` is a folder of songs (searched recursively) or, for the latent moves, a statistics
``.npz`` saved by ``--save_reference_stats``. ``shift`` and ``match`` also need the source's
statistics: from ``--source_stats`` (an ``.npz`` or a folder of songs) or, by default, from the
source song itself. ``eq`` is the no-model baseline: per-frequency-bin moment matching of the
log-STFT toward ``REF``'s songs, with the source phase. ``convert`` needs a singer-conditional
checkpoint (``train.py --conditional``): it encodes under the source singer (``--source_singer``,
or the singer under whom the song is most likely, which it names) and decodes under a
conditioning moved by the strength toward ``--target_singer``. On a conditional checkpoint the
latent moves work under the source singer too. Strength 0 returns the source; strength 1 is the
method's full move (see utils/migration_methods.py).

Writes ``OUT.wav`` (16-bit PCM at the model's rate, exactly as long as the source; scaled down
with a warning if it would clip) and, beside it, ``OUT.png`` comparing the source and migrated
spectrograms. A source shorter than one patch is padded for encoding (with a warning). Bad input
is reported as one line ``migrate.py: error: ...``; the exit status follows :mod:`utils.cli`: 2
for a malformed command line or an input refused before any work (a missing file or folder, a
checkpoint or statistics of another model, an empty reference folder), 1 when the migration
fails (e.g. a silent source), 130 on Ctrl-C. ``--chunk_steps``, ``--overlap_steps`` and
``--batch_size`` tune the chunked encoding.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Sequence

from utils.cli import CliError, OneLineArgumentParser, finite_float, print_warning, run_cli
from utils.migration_methods import METHOD_NAMES, NEEDS_SOURCE

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if TYPE_CHECKING:  # imported for real only once the flags are checked (TensorFlow loads)
    from utils.codec import Codec
    from utils.latent_stats import LatentStats

PROG = "migrate.py"
# Peak the output is scaled to when migration pushed it past full scale (-0.1 dBFS).
FULL_SCALE = 10.0 ** (-0.1 / 20.0)
# Floor of the figure's colour scale: at most this far below its loudest value.
FIGURE_RANGE_DB = 100.0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint_dir", required=True,
                        help="trained checkpoint (config.json and feature_stats.json inside)")
    parser.add_argument("--source", required=True, help="the song to migrate (wav/mp3/flac/ogg)")
    parser.add_argument("--reference",
                        help="folder of reference songs, or a statistics .npz (every method but "
                             "convert)")
    parser.add_argument("--method", choices=METHOD_NAMES, default="match",
                        help="latent move, the no-model eq baseline, or convert (default "
                             "%(default)s)")
    parser.add_argument("--target_singer", metavar="NAME",
                        help="convert: the singer to convert to (a name in the checkpoint's "
                             "singers.json: a training folder's name)")
    parser.add_argument("--source_singer", metavar="NAME",
                        help="conditional checkpoints: the source's singer (default: the one "
                             "under whom the song is most likely)")
    parser.add_argument("--strength", type=finite_float, default=1.0,
                        help="0 = the source, 1 = the method's full move (default %(default)s)")
    parser.add_argument("--output", required=True, help="output .wav; a .png goes beside it")
    parser.add_argument("--source_stats",
                        help="source statistics (.npz or folder of songs) for shift/match; "
                             "default: the source song itself")
    parser.add_argument("--save_reference_stats", metavar="PATH",
                        help="save the reference statistics to this .npz for reuse")
    parser.add_argument("--griffin_lim", action="store_true",
                        help="invert spectrograms with Griffin-Lim instead of the source phase")
    parser.add_argument("--chunk_steps", type=int,
                        help="time steps per encoded chunk (default: the training patch)")
    parser.add_argument("--overlap_steps", type=int,
                        help="crossfaded steps between chunks (default: an eighth of a chunk)")
    parser.add_argument("--batch_size", type=int, default=8, help="chunks per model call")
    return parser


def _warn(message: str) -> None:
    print_warning(PROG, message)


# ----------------------------------------------------------------------------- statistics
class StatsSource(NamedTuple):
    """Where latent statistics come from: ``stats`` loaded from an ``.npz`` (``folder`` None), or
    a ``folder`` of songs whose statistics are computed during the work (``stats`` None)."""

    what: str
    stats: Optional["LatentStats"]
    folder: Optional[str]


def open_stats(path: str, codec: "Codec", what: str) -> StatsSource:
    """Refuse unusable statistics before any work: an ``.npz`` is loaded (and refused when it
    belongs to another model); a folder must hold audio files."""
    from utils.latent_stats import LatentStats
    from utils.song_folders import list_audio

    if os.path.isdir(path):
        list_audio(path)
        return StatsSource(what, None, path)
    if os.path.isfile(path):
        return StatsSource(what, LatentStats.load(path, codec.config), None)
    raise CliError(f"{what} not found: {path}")


def compute_stats(source: StatsSource, codec: "Codec") -> "LatentStats":
    """The LatentStats of ``source``: as loaded, or over its folder of songs (skipped files are
    warned about, one line each)."""
    if source.folder is None:
        return source.stats

    def skipped(song_path: str, reason: str) -> None:
        _warn(f"{source.what}: skipping {song_path}: {reason}")

    print(f"computing {source.what} statistics over {source.folder} ...", file=sys.stderr)
    return codec.folder_latent_stats(source.folder, on_skip=skipped)


# ----------------------------------------------------------------------------- the figure
def spectrogram_columns(samples, config, columns: int = 2000):
    """(<= columns, bins) log-magnitude in nats of Hann-windowed frames spread evenly over the song.

    A long song has far more STFT frames than a figure has pixels, so frames are taken
    ``max(hop_length, N / columns)`` samples apart; memory stays ``columns * n_fft`` whatever
    the song's length.
    """
    import numpy as np

    n_fft = config.n_fft
    padded = np.pad(np.asarray(samples, np.float32), (n_fft // 2, n_fft // 2))
    step = max(config.hop_length, math.ceil(len(samples) / columns))
    starts = np.arange(0, len(samples) + 1, step)
    frames = padded[starts[:, None] + np.arange(n_fft)[None, :]] * np.hanning(n_fft + 1)[:-1]
    magnitude = np.abs(np.fft.rfft(frames, axis=1))
    return np.log(magnitude + config.log_floor)


def spectrogram_figure(source, migrated, config, path: str, title: str) -> None:
    """Two panels (source above, migrated below) of log-magnitude spectrograms, as PNG.

    One colour scale for both: from the loudest value down to the quietest panel's 1st percentile,
    but never more than :data:`FIGURE_RANGE_DB` below the loudest.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from utils.plots import DB_PER_NEPER, spectrogram_figure as figure_of

    panels = [spectrogram_columns(samples, config) for samples in (source, migrated)]
    seconds = len(source) / config.sampling_rate
    high = max(float(p.max()) for p in panels)
    low = max(min(float(np.percentile(p, 1)) for p in panels),
              high - FIGURE_RANGE_DB / DB_PER_NEPER)
    fig = figure_of([(name, panel, (0.0, seconds))
                     for name, panel in zip(("source", "migrated"), panels)],
                    config.sampling_rate / 2000.0, title, range_nats=high - low)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- the CLI
class Prepared(NamedTuple):
    """What :func:`prepare` checked and loaded for :func:`work` (``reference`` is None for
    ``convert``, a folder for ``eq``)."""

    args: argparse.Namespace
    codec: "Codec"
    reference: Optional[StatsSource]
    source_stats: Optional[StatsSource]


def check_paths(args: argparse.Namespace) -> None:
    """Refuse missing inputs before TensorFlow is imported, so such mistakes fail in a blink."""
    if args.batch_size < 1:
        raise CliError(f"--batch_size must be positive, got {args.batch_size}")
    if not os.path.isdir(args.checkpoint_dir):
        raise CliError(f"checkpoint folder not found: {args.checkpoint_dir}")
    if not os.path.isfile(args.source):
        raise CliError(f"source song not found: {args.source}")
    if args.method == "convert":
        if not args.target_singer:
            raise CliError("--method convert needs --target_singer NAME")
        if args.reference:
            raise CliError("--method convert takes no --reference (it converts to "
                           "--target_singer)")
    elif not args.reference:
        raise CliError(f"--method {args.method} needs --reference (a folder of songs"
                       f"{'' if args.method == 'eq' else ' or a statistics .npz'})")
    elif not os.path.exists(args.reference):
        raise CliError(f"reference not found: {args.reference}")
    elif args.method == "eq" and not os.path.isdir(args.reference):
        raise CliError(f"--method eq needs a folder of reference songs, got {args.reference}")
    if args.target_singer and args.method != "convert":
        raise CliError(f"--target_singer is for --method convert, not {args.method}")
    if args.source_stats and not os.path.exists(args.source_stats):
        raise CliError(f"source statistics not found: {args.source_stats}")
    if os.path.isdir(args.output):
        raise CliError(f"--output is a folder, expected a .wav path: {args.output}")
    output_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(output_dir):
        raise CliError(f"output folder does not exist: {output_dir}")


def prepare(args: argparse.Namespace) -> Prepared:
    """Every check that needs no audio decoded and no migration: flags and paths, the checkpoint
    (restored, refused when of another model), the chunking flags, the statistics files (refused
    when of another model) and the reference folder (refused when it holds no audio)."""
    check_paths(args)
    from utils.run_folder import load_for_inference
    from utils.song_chunks import default_chunking

    codec = load_for_inference(args.checkpoint_dir)
    default_chunking(codec.config, args.chunk_steps, args.overlap_steps)
    for name in (args.target_singer, args.source_singer):
        if name is not None:
            codec.singer_id(name)  # refuses an unconditional checkpoint or an unknown name
    reference = None
    if args.method == "eq":
        from utils.song_folders import list_audio

        list_audio(args.reference)
        reference = StatsSource("reference", None, args.reference)
    elif args.reference:
        reference = open_stats(args.reference, codec, "reference")
    source_stats = None
    if args.source_stats and NEEDS_SOURCE[args.method]:
        source_stats = open_stats(args.source_stats, codec, "source stats")
    elif args.source_stats:
        _warn(f"--source_stats is not used by method {args.method!r}")
    return Prepared(args, codec, reference, source_stats)


def work(prepared: Prepared) -> List[str]:
    """Do the migration; returns the paths written. Raises CliError / SinGlowError for input
    that cannot be migrated (one line)."""
    import numpy as np

    from utils.audio import load_audio, save_wav
    from utils.metrics import snr_db
    from utils.migration import MigrationTarget, migrate

    args, codec = prepared.args, prepared.codec
    config = codec.config
    try:
        samples = load_audio(args.source, config.sampling_rate)
        # Fail before the statistics pass; migrate_song checks again and warns if it is short.
        samples = codec.check(samples, warn_short=False)
    except ValueError as error:  # AudioError and MigrationError are ValueErrors
        raise CliError(f"source {args.source}: {error}") from None

    if codec.singers:  # a conditional model encodes under the source's singer
        source_singer = args.source_singer
        if source_singer is None:
            scores = codec.singer_scores(samples)
            source_singer = min(scores, key=scores.get)
            listed = ", ".join(f"{name} {bpd:.4f}" for name, bpd in scores.items())
            print(f"source singer: {source_singer} (the most likely; bits/dim {listed})",
                  file=sys.stderr)
        codec = codec.with_singer(source_singer)
    target = MigrationTarget(singer=args.target_singer)
    if args.method == "eq":
        target.bins = _bin_stats(prepared.reference.folder, codec)
    elif prepared.reference is not None:
        target.latent = compute_stats(prepared.reference, codec)
        if args.save_reference_stats:
            target.latent.save(args.save_reference_stats)
            print(f"saved reference statistics to {args.save_reference_stats}", file=sys.stderr)
    source_stats = None
    if prepared.source_stats is not None:
        source_stats = compute_stats(prepared.source_stats, codec)

    result = migrate(
        codec, samples, args.method, args.strength, target, source_stats=source_stats,
        griffin_lim=args.griffin_lim, chunk_steps=args.chunk_steps,
        overlap_steps=args.overlap_steps, batch_size=args.batch_size)
    out = result.samples
    peak = float(np.max(np.abs(out)))
    if peak > 1.0:
        # A wav clips at full scale; scaling the whole song keeps its shape (and timbre).
        out = out * (FULL_SCALE / peak)
        _warn(f"the migrated song peaks at {20 * math.log10(peak):+.1f} dBFS; scaled by "
              f"{20 * math.log10(FULL_SCALE / peak):.1f} dB so that the wav does not clip")
    save_wav(args.output, out, config.sampling_rate)
    figure = os.path.splitext(args.output)[0] + ".png"
    spectrogram_figure(samples, out, config, figure, f"{args.method}, strength {args.strength:g}")
    snr = snr_db(samples, out)
    print(f"wrote {args.output} ({len(out) / config.sampling_rate:.2f} s, {args.method} at "
          f"strength {args.strength:g}, SNR vs source {snr:.1f} dB) and {figure}")
    return [args.output, figure]


def _bin_stats(folder: str, codec: "Codec"):
    """Per-bin log-STFT statistics of every usable song under ``folder`` (the ``eq`` target)."""
    from utils.eq_baseline import song_bin_stats

    def skipped(song_path: str, reason: str) -> None:
        _warn(f"reference: skipping {song_path}: {reason}")

    print(f"computing per-bin reference statistics over {folder} ...", file=sys.stderr)
    return song_bin_stats((s for _, s in codec.folder_songs(folder, skipped)), codec.config)


def _file_identity(path: str):
    """(inode, mtime_ns) of ``path``, or None when it does not exist: changes when it is replaced."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (see the module docstring)."""
    # The wav at --output as it was before any work: Ctrl-C says whether it has been replaced
    # (save_wav is atomic, so it is written whole or not at all).
    before = {}

    def prepare_recording_output(args: argparse.Namespace) -> Prepared:
        before["output"] = _file_identity(args.output)
        return prepare(args)

    def on_interrupt(args: argparse.Namespace) -> str:
        written = "output" in before and _file_identity(args.output) != before["output"]
        return (f"{args.output} "
                f"{'was written, its figure may not be' if written else 'was not written'}")

    def work_status(prepared: Prepared) -> int:
        work(prepared)
        return 0

    return run_cli(PROG, build_parser(), prepare_recording_output, work_status, argv,
                   on_interrupt)


if __name__ == "__main__":
    sys.exit(main())

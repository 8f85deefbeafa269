"""Migrate a song toward a reference set of songs in SinGlow's latent space.

    python migrate.py --checkpoint_dir CK --source SONG --reference REF \\
        --method {midpoint,shift,match} --strength A --output OUT.wav \\
        [--source_stats S.npz] [--save_reference_stats PATH] [--griffin_lim]

``REF`` is a folder of songs (searched recursively) or a statistics ``.npz`` saved by
``--save_reference_stats``. ``shift`` and ``match`` also need the source's statistics: from
``--source_stats`` (an ``.npz`` or a folder of songs) or, by default, from the source song itself.
Strength 0 returns the source; strength 1 is the method's full move (see utils/migration.py).

Writes ``OUT.wav`` (16-bit PCM at the model's rate, exactly as long as the source; scaled down
with a warning if it would clip) and, beside it, ``OUT.png`` comparing the source and migrated
spectrograms. A source shorter than one patch is padded for encoding (with a warning). Bad input
is reported as one line ``migrate.py: error: ...`` with exit status 1 (2 for a malformed command
line). ``--chunk_steps``, ``--overlap_steps`` and ``--batch_size`` tune the chunked encoding.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from typing import List, Optional, Sequence

from utils.cli import CliError, OneLineArgumentParser, finite_float

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROG = "migrate.py"
METHOD_NAMES = ("midpoint", "shift", "match")
# Peak the output is scaled to when migration pushed it past full scale (-0.1 dBFS).
FULL_SCALE = 10.0 ** (-0.1 / 20.0)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint_dir", required=True,
                        help="trained checkpoint (config.json and feature_stats.json inside)")
    parser.add_argument("--source", required=True, help="the song to migrate (wav/mp3/flac/ogg)")
    parser.add_argument("--reference", required=True,
                        help="folder of reference songs, or a statistics .npz")
    parser.add_argument("--method", choices=METHOD_NAMES, default="match",
                        help="latent move (default %(default)s)")
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
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def load_stats(path: str, model, config, feature_stats, what: str):
    """LatentStats from a saved ``.npz`` or computed over a folder of songs."""
    from utils import migration

    if os.path.isdir(path):
        def skipped(song_path, reason):
            _warn(f"{what}: skipping {song_path}: {reason}")

        print(f"computing {what} statistics over {path} ...", file=sys.stderr)
        return migration.folder_latent_stats(model, config, feature_stats, path,
                                             on_skip=skipped)
    if os.path.isfile(path):
        return migration.LatentStats.load(path, config)
    raise CliError(f"{what} not found: {path}")


def spectrogram_columns(samples, config, columns: int = 2000):
    """(bins, <= columns) log-magnitude in dB of Hann-windowed frames spread evenly over the song.

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
    return 20.0 * np.log10(magnitude + config.log_floor).T


def spectrogram_figure(source, migrated, config, path: str, title: str) -> None:
    """Two panels (source above, migrated below) of log-magnitude spectrograms in dB, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [spectrogram_columns(samples, config) for samples in (source, migrated)]
    seconds = len(source) / config.sampling_rate
    khz = config.sampling_rate / 2000.0
    high = max(float(p.max()) for p in panels)
    low = max(min(float(np.percentile(p, 1)) for p in panels), high - 100.0)
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True, sharey=True)
    for ax, panel, name in zip(axes, panels, ("source", "migrated")):
        image = ax.imshow(panel, origin="lower", aspect="auto", cmap="magma", vmin=low,
                          vmax=high, extent=(0.0, seconds, 0.0, khz))
        ax.set_title(name)
        ax.set_ylabel("frequency (kHz)")
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(title)
    fig.colorbar(image, ax=list(axes), label="magnitude (dB)")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def check_paths(args: argparse.Namespace) -> None:
    """Refuse missing inputs before TensorFlow is imported, so such mistakes fail in a blink."""
    if args.batch_size < 1:
        raise CliError(f"--batch_size must be positive, got {args.batch_size}")
    if not os.path.isdir(args.checkpoint_dir):
        raise CliError(f"checkpoint folder not found: {args.checkpoint_dir}")
    if not os.path.isfile(args.source):
        raise CliError(f"source song not found: {args.source}")
    if not os.path.exists(args.reference):
        raise CliError(f"reference not found: {args.reference}")
    if args.source_stats and not os.path.exists(args.source_stats):
        raise CliError(f"source statistics not found: {args.source_stats}")
    if os.path.isdir(args.output):
        raise CliError(f"--output is a folder, expected a .wav path: {args.output}")
    output_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(output_dir):
        raise CliError(f"output folder does not exist: {output_dir}")


def run(args: argparse.Namespace) -> List[str]:
    """Do the migration; returns the paths written. Raises CliError / ValueError for bad input."""
    import numpy as np

    from utils.run_folder import load_for_inference
    from utils import migration
    from utils.audio import load_audio, save_wav
    from utils.metrics import snr_db

    model, config, feature_stats = load_for_inference(args.checkpoint_dir)
    migration.default_chunking(config, args.chunk_steps, args.overlap_steps)
    try:
        samples = load_audio(args.source, config.sampling_rate)
        samples = migration.check_source(samples, config)
    except ValueError as error:  # AudioError and MigrationError are ValueErrors
        raise CliError(f"source {args.source}: {error}") from None

    reference = load_stats(args.reference, model, config, feature_stats, "reference")
    if args.save_reference_stats:
        reference.save(args.save_reference_stats)
        print(f"saved reference statistics to {args.save_reference_stats}", file=sys.stderr)
    source_stats = None
    if args.source_stats and migration.NEEDS_SOURCE[args.method]:
        source_stats = load_stats(args.source_stats, model, config, feature_stats, "source stats")
    elif args.source_stats:
        _warn(f"--source_stats is not used by method {args.method!r}")

    result = migration.migrate_song(
        model, config, feature_stats, samples, args.method, args.strength, reference,
        source_stats=source_stats, griffin_lim=args.griffin_lim, chunk_steps=args.chunk_steps,
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a bad flag already reported on one line
        return int(stop.code or 0)
    try:
        check_paths(args)
    except CliError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    before = _file_identity(args.output)
    try:
        return _checked_run(args)
    except KeyboardInterrupt:  # the wav is written whole or not at all (save_wav is atomic)
        written = _file_identity(args.output) != before
        print(f"{PROG}: interrupted; {args.output} "
              f"{'was written, its figure may not be' if written else 'was not written'}",
              file=sys.stderr)
        return 130


def _file_identity(path: str):
    """(inode, mtime_ns) of ``path``, or None when it does not exist: changes when it is replaced."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _checked_run(args: argparse.Namespace) -> int:
    """:func:`run`, with expected failures and warnings reported on one line each."""
    from pipeline import CheckpointMismatch
    from utils.audio import AudioError
    from utils.migration import MigrationError, one_line

    expected = (CliError, CheckpointMismatch, AudioError, MigrationError, OSError)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run(args)
            status = 0
        except expected as error:
            print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
            status = 1
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            _warn(" ".join(str(warning.message).split()))
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Migrate a song toward a reference set of songs, or convert it to another singer.

    python migrate.py --checkpoint_dir CK --source SONG --reference REF \\
        --method {midpoint,shift,match,eq} --strength A --output OUT.wav \\
        [--source_stats S.npz] [--save_reference_stats PATH] [--griffin_lim]
    python migrate.py --checkpoint_dir CK --source SONG --method convert \\
        --target_singer NAME [--source_singer NAME] --strength A --output OUT.wav
    python migrate.py --checkpoint_dir CK --source DIR --output OUTDIR [--overwrite] ...

``REF`` is a folder of songs (searched recursively) or, for the latent moves, a statistics
``.npz`` saved by ``--save_reference_stats``. ``shift`` and ``match`` also need the source's
statistics: from ``--source_stats`` (an ``.npz`` or a folder of songs) or, by default, from the
source song itself. ``eq`` is the no-model baseline: per-frequency-bin moment matching of the
log-STFT toward ``REF``'s songs, with the source phase. ``convert`` needs a singer-conditional
checkpoint (``train.py --conditional``): it encodes under the source singer (``--source_singer``,
or the singer under whom the song is most likely, which it names) and decodes under a
conditioning moved by the strength toward ``--target_singer``. On a conditional checkpoint the
latent moves work under the source singer too. Strength 0 returns the source; strength 1 is the
method's full move. Every fact about a method (what it takes, what it needs of the checkpoint,
its help) is read from its class in the registry, :mod:`utils.migration.registry`.

Writes ``OUT.wav`` (16-bit PCM at the model's rate, exactly as long as the source; scaled down
with a warning if it would clip) and, beside it, ``OUT.png`` comparing the source and migrated
spectrograms. A source shorter than one patch is padded for encoding (with a warning). Bad input
is reported as one line ``migrate.py: error: ...``; the exit status follows :mod:`utils.cli`: 2
for a malformed command line or an input refused before any work (a missing file or folder, a
checkpoint or statistics of another model, an empty reference folder), 1 when the migration
fails (e.g. a silent source), 130 on Ctrl-C. ``--chunk_steps``, ``--overlap_steps`` and
``--batch_size`` tune the chunked encoding.

Folder mode: when ``--source`` is a folder, every song under it (recursively) is migrated with
the same flags into the folder ``--output``: ``DIR/a/song.mp3`` -> ``OUTDIR/a/song.wav`` (with
its ``.png`` and a ``.json`` record); nothing is written inside ``DIR``; a rerun skips complete
outputs unless ``--overwrite``; broken songs are skipped with one line each; exit status 0 when
a song was migrated (or already complete), else 1 (see :mod:`utils.migration.folders`). The
reference's statistics and ``--source_stats`` are computed once for the folder (on a conditional
checkpoint once per source singer: latent statistics live in that singer's coordinates); each
song's own statistics and most likely singer are still found song by song.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Sequence

from utils.cli import (EXIT_FAILED, EXIT_OK, CliError, OneLineArgumentParser, finite_float,
                       print_error, print_warning, run_cli)
from utils.errors import SinGlowError, one_line
from utils.migration.folders import (Console, FolderAbort, FolderProgress, SongJob, SongResult,
                                     check_folders, file_identity, is_inside, migrate_folder,
                                     path_identity, plan_folder)
from utils.migration.method import BINS, LATENT
from utils.migration.registry import METHOD_NAMES, METHODS, either, methods_help, names_where
from utils.migration.targets import StatsSource, Targets, open_stats
from utils.resources import check_inference_fits, check_writable_folder

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if TYPE_CHECKING:  # imported for real only once the flags are checked (TensorFlow loads)
    from utils.runs.codec import Codec

PROG = "migrate.py"
# Peak the output is scaled to when migration pushed it past full scale (-0.1 dBFS).
FULL_SCALE = 10.0 ** (-0.1 / 20.0)
# Floor of the figure's colour scale: at most this far below its loudest value.
FIGURE_RANGE_DB = 100.0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint_dir", required=True,
                        help="trained checkpoint (config.json and feature_stats.json inside)")
    parser.add_argument("--source", required=True,
                        help="the song to migrate (wav/mp3/flac/ogg), or a folder: every song "
                             "under it (recursively)")
    parser.add_argument("--reference",
                        help=f"folder of reference songs, or a statistics .npz for "
                             f"{either(names_where(lambda m: m.reference == LATENT))} (every "
                             f"method but {either(names_where(lambda m: m.reference is None))})")
    parser.add_argument("--method", choices=METHOD_NAMES, default="match",
                        help=f"{methods_help()} (default %(default)s)")
    parser.add_argument("--target_singer", metavar="NAME",
                        help=f"{either(names_where(lambda m: m.conditional))}: the singer to "
                             "convert to (a name in the checkpoint's singers.json: a training "
                             "folder's name)")
    parser.add_argument("--source_moments", choices=("singer", "song"),
                        help=f"{either(names_where(lambda m: m.takes_source_moments))} on a "
                             "SingerNorm checkpoint: standardise the source by its singer's "
                             "per-bin moments or by the song's own (default: song for "
                             "spectrograms, singer for world)")
    parser.add_argument("--harmonic_hz", type=finite_float, metavar="HZ",
                        help=f"{either(names_where(lambda m: m.takes_harmonic_hz))} on "
                             "spectrograms: below HZ the change keeps the source's harmonics "
                             "(applied as its spectral envelope), 0 changes every bin freely "
                             "(default: 1000 for convert, 0 for eq)")
    parser.add_argument("--temperature", type=finite_float, metavar="T",
                        help=f"{either(names_where(lambda m: m.takes_temperature))} on a "
                             "parallel checkpoint: the spread of its draw under the source's "
                             "frames (default 0.5; 0: the flow's mode)")
    parser.add_argument("--source_singer", metavar="NAME",
                        help="conditional checkpoints: the source's singer (default: the one "
                             "under whom the song is most likely)")
    parser.add_argument("--strength", type=finite_float, default=1.0,
                        help="0 = the source, 1 = the method's full move (default %(default)s)")
    parser.add_argument("--output", required=True,
                        help="output .wav; a .png goes beside it (a folder when --source is one)")
    parser.add_argument("--overwrite", action="store_true",
                        help="folder mode: migrate again the songs whose output is complete")
    parser.add_argument("--source_stats",
                        help=f"source statistics (.npz or folder of songs) for "
                             f"{either(names_where(lambda m: m.needs_source_stats))}; default: "
                             "the source song itself")
    parser.add_argument("--save_reference_stats", metavar="PATH",
                        help="save the reference statistics to this .npz for reuse")
    parser.add_argument("--transpose", type=finite_float, default=0.0, metavar="SEMITONES",
                        help="shift the melody by this many semitones (a world checkpoint, "
                             "whose F0 is kept apart; default 0)")
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

    from utils.evaluation.plots import DB_PER_NEPER, spectrogram_figure as figure_of

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


# ----------------------------------------------------------------------------- one song
class Migrated(NamedTuple):
    """One migrated song: ``samples`` (N,) as written, its ``seconds``, SNR in dB against the
    source, and the ``singer`` it was encoded under (None on an unconditional checkpoint)."""

    samples: object
    seconds: float
    snr_db: float
    singer: Optional[str]


def load_source(path: str, codec: "Codec"):
    """A source song as ``(N,)`` float32 at the model's rate; raises AudioError (a one-line
    SinGlowError) for a file that cannot be migrated."""
    from utils.audio.signal import load_audio

    samples = load_audio(path, codec.config.sampling_rate)
    # Fail before the statistics pass; the method checks again and warns if it is short.
    return codec.check(samples, warn_short=False)


def source_codec(prepared: "Prepared", samples, console: Optional[Console]) -> "Codec":
    """The codec to encode ``samples`` under: a conditional model's under the source singer
    (given, or the most likely, announced on ``console`` unless it is None)."""
    codec = prepared.codec
    if not codec.singers:
        return codec
    singer = prepared.args.source_singer
    if singer is None and codec.parallel:
        singer = codec.singers[0]
        if console is not None:
            console.info(f"source singer: {singer} (the one this parallel checkpoint converts)")
    elif singer is None:
        scores = codec.singer_scores(samples)
        singer = min(scores, key=scores.get)
        if console is not None:
            listed = ", ".join(f"{name} {bpd:.4f}" for name, bpd in scores.items())
            console.info(f"source singer: {singer} (the most likely; bits/dim {listed})")
    return codec.with_singer(singer)


def migrate_samples(prepared: "Prepared", targets: Targets, codec: "Codec", samples,
                    output: str, figure: str, console: Console) -> Migrated:
    """Migrate ``samples`` (N,) and write ``output`` (the wav) and ``figure`` (the PNG), each
    atomically."""
    import numpy as np

    from utils.audio.signal import save_wav
    from utils.evaluation.metrics import snr_db
    from utils.files import atomic_write

    args, config = prepared.args, codec.config
    method, source_stats = targets.of(codec)
    result = method.transform(
        samples, args.strength, source_stats, griffin_lim=args.griffin_lim,
        chunk_steps=args.chunk_steps, overlap_steps=args.overlap_steps,
        batch_size=args.batch_size, semitones=args.transpose)
    out = result.samples
    peak = float(np.max(np.abs(out)))
    if peak > 1.0:
        # A wav clips at full scale; scaling the whole song keeps its shape (and timbre).
        out = out * (FULL_SCALE / peak)
        # A warning, not a line: in folder mode it is printed with the song's name.
        warnings.warn(f"the migrated song peaks at {20 * math.log10(peak):+.1f} dBFS; scaled "
                      f"by {20 * math.log10(FULL_SCALE / peak):.1f} dB so that the wav does not "
                      "clip", stacklevel=2)
    save_wav(output, out, config.sampling_rate)
    title = f"{args.method}, strength {args.strength:g}"
    atomic_write(figure, lambda tmp: spectrogram_figure(samples, out, config, tmp, title))
    return Migrated(out, len(out) / config.sampling_rate, snr_db(samples, out), codec.singer)


# ----------------------------------------------------------------------------- the CLI
class Prepared(NamedTuple):
    """What :func:`prepare` checked and loaded for :func:`work` (``reference`` is None for
    ``convert``, a folder for ``eq``); in folder mode the ``jobs`` and the ``recipe`` that says
    whether an output is complete (:mod:`utils.migration.folders`)."""

    args: argparse.Namespace
    codec: "Codec"
    reference: Optional[StatsSource]
    source_stats: Optional[StatsSource]
    jobs: Optional[List[SongJob]] = None
    recipe: Optional[dict] = None


def check_paths(args: argparse.Namespace) -> None:
    """Refuse missing inputs before TensorFlow is imported, so such mistakes fail in a blink."""
    if args.batch_size < 1:
        raise CliError(f"--batch_size must be positive, got {args.batch_size}")
    if not os.path.isdir(args.checkpoint_dir):
        raise CliError(f"checkpoint folder not found: {args.checkpoint_dir}")
    folder = os.path.isdir(args.source)
    if not folder and not os.path.isfile(args.source):
        raise CliError(f"source song not found: {args.source}")
    check_method_flags(args)
    if args.harmonic_hz is not None and args.harmonic_hz < 0:
        raise CliError(f"--harmonic_hz must be >= 0, got {args.harmonic_hz:g}")
    if args.source_stats and not os.path.exists(args.source_stats):
        raise CliError(f"source statistics not found: {args.source_stats}")
    if args.save_reference_stats:
        check_writable_folder(os.path.dirname(os.path.abspath(args.save_reference_stats)),
                              f"--save_reference_stats {args.save_reference_stats}: the folder")
    if folder:
        check_folders(args.source, args.output, args.reference)
        if args.save_reference_stats and is_inside(args.save_reference_stats, args.source):
            raise CliError(f"--save_reference_stats {args.save_reference_stats} is inside "
                           f"--source {args.source}, which is never written to")
        check_writable_folder(args.output, "--output")
        return
    if os.path.isdir(args.output):
        raise CliError(f"--output is a folder, expected a .wav path: {args.output}")
    if not args.output.lower().endswith(".wav"):
        raise CliError(f"--output must be a .wav path (its figure goes beside it as .png), got "
                       f"{args.output}")
    if os.path.exists(args.output) and os.path.samefile(args.output, args.source):
        raise CliError(f"--output {args.output} is the source song: choose another path, the "
                       "source is never overwritten")
    for flag, folder in (("--reference", args.reference), ("--source_stats", args.source_stats)):
        if folder and os.path.isdir(folder) and is_inside(args.output, folder):
            raise CliError(f"--output {args.output} is inside the {flag} folder {folder}, which "
                           "is never written to: choose a path outside it")
    output_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(output_dir):
        raise CliError(f"output folder does not exist: {output_dir}")
    check_writable_folder(output_dir, f"--output {args.output}: the folder")


def check_method_flags(args: argparse.Namespace) -> None:
    """Refuse the flags ``--method``'s class does not take, and a missing one it needs (the
    facts are the registry's: :mod:`utils.migration.registry`)."""
    name, method = args.method, METHODS[args.method]
    if method.conditional:
        if not args.target_singer:
            raise CliError(f"--method {name} needs --target_singer NAME")
        if args.reference:
            raise CliError(f"--method {name} takes no --reference (it converts to "
                           "--target_singer)")
    elif not args.reference:
        raise CliError(f"--method {name} needs --reference (a folder of songs"
                       f"{'' if method.reference == BINS else ' or a statistics .npz'})")
    elif not os.path.exists(args.reference):
        raise CliError(f"reference not found: {args.reference}")
    elif method.reference == BINS and not os.path.isdir(args.reference):
        raise CliError(f"--method {name} needs a folder of reference songs, got "
                       f"{args.reference}")
    for flag, given, fact in (
            ("--target_singer", bool(args.target_singer), lambda m: m.conditional),
            ("--source_moments", bool(args.source_moments), lambda m: m.takes_source_moments),
            ("--harmonic_hz", args.harmonic_hz is not None, lambda m: m.takes_harmonic_hz),
            ("--temperature", args.temperature is not None, lambda m: m.takes_temperature)):
        if given and not fact(method):
            raise CliError(f"{flag} is for --method {either(names_where(fact))}, not {name}")


def prepare(args: argparse.Namespace) -> Prepared:
    """Every check that needs no audio decoded and no migration: flags and paths, the checkpoint
    (restored, refused when of another model), the chunking flags, the statistics files (refused
    when of another model) and the reference folder (refused when it holds no audio); in folder
    mode also the source folder (refused when it holds no audio) and its output names."""
    check_paths(args)
    from utils.data.song_folders import list_audio
    from utils.runs.run_folder import load_for_inference
    from utils.runs.song_chunks import default_chunking

    codec = load_for_inference(args.checkpoint_dir)
    chunk, _ = default_chunking(codec.config, args.chunk_steps, args.overlap_steps)
    check_inference_fits(codec.config, chunk, args.batch_size)
    if args.transpose and (codec.config.feature != "world"
                           or not METHODS[args.method].transposes):
        fixed = either(names_where(lambda m: not m.transposes))
        raise CliError(f"--transpose needs a world checkpoint and a method other than {fixed} "
                       f"(this one is {codec.config.feature}, --method {args.method})")
    for name in (args.target_singer, args.source_singer):
        if name is not None:
            codec.singer_id(name)  # refuses an unconditional checkpoint or an unknown name
    reference = None
    if METHODS[args.method].reference == BINS:
        list_audio(args.reference)
        reference = StatsSource("reference", None, args.reference)
    elif args.reference:
        reference = open_stats(args.reference, codec, "reference")
    source_stats = None
    if args.source_stats and METHODS[args.method].needs_source_stats:
        source_stats = open_stats(args.source_stats, codec, "source stats")
    elif args.source_stats:
        _warn(f"--source_stats is not used by method {args.method!r}")
    if not os.path.isdir(args.source):
        if args.overwrite:
            _warn("--overwrite is for a folder --source; one song's --output is always replaced")
        return Prepared(args, codec, reference, source_stats)
    if (codec.singers and args.save_reference_stats and reference is not None
            and METHODS[args.method].reference == LATENT and args.source_singer is None):
        raise CliError("--save_reference_stats of a folder on a conditional checkpoint needs "
                       "--source_singer: the statistics are in the source singer's coordinates, "
                       "and the most likely singer may differ from song to song")
    jobs = plan_folder(args.source, args.output, list_audio(args.source))
    return Prepared(args, codec, reference, source_stats, jobs,
                    recipe(args, source_stats is not None))


def recipe(args: argparse.Namespace, uses_source_stats: bool) -> dict:
    """What a folder output is made of: the checkpoint's files, the method and every flag that
    changes the audio (not ``--batch_size``); an output is complete only under the same one."""
    from utils.runs.run_folder import CONFIG_NAME, SINGERS_NAME, STATS_NAME, WEIGHTS_NAME

    checkpoint = {"path": os.path.abspath(args.checkpoint_dir)}
    # "checkpoint" names the latest ckpt-N and is rewritten by every save.
    for name in (CONFIG_NAME, STATS_NAME, SINGERS_NAME, "checkpoint", WEIGHTS_NAME):
        checkpoint[name] = file_identity(os.path.join(args.checkpoint_dir, name))
    return {
        "checkpoint": checkpoint, "method": args.method, "strength": args.strength,
        "reference": path_identity(args.reference) if args.reference else None,
        "source_stats": path_identity(args.source_stats) if uses_source_stats else None,
        "source_singer": args.source_singer, "target_singer": args.target_singer,
        "source_moments": args.source_moments, "harmonic_hz": args.harmonic_hz,
        "temperature": args.temperature, "griffin_lim": args.griffin_lim,
        "chunk_steps": args.chunk_steps, "overlap_steps": args.overlap_steps,
        "transpose": args.transpose,
    }


def work(prepared: Prepared) -> List[str]:
    """Migrate one song; returns the paths written. Raises CliError / SinGlowError for input
    that cannot be migrated (one line)."""
    args, console = prepared.args, Console(PROG)
    try:
        samples = load_source(args.source, prepared.codec)
    except ValueError as error:  # AudioError and MigrationError are ValueErrors
        raise CliError(f"source {args.source}: {error}") from None
    codec = source_codec(prepared, samples, console)
    figure = os.path.splitext(args.output)[0] + ".png"
    targets = Targets(args, prepared.reference, prepared.source_stats, console)
    done = migrate_samples(prepared, targets, codec, samples, args.output, figure, console)
    print(f"wrote {args.output} ({done.seconds:.2f} s, {args.method} at strength "
          f"{args.strength:g}, SNR vs source {done.snr_db:.1f} dB) and {figure}")
    return [args.output, figure]


def work_folder(prepared: Prepared, progress: FolderProgress) -> int:
    """Migrate every song of the source folder (see :mod:`utils.migration.folders`); returns the
    exit status: 0 when a song was migrated or was already complete, 1 when none could be."""
    args, console = prepared.args, Console(PROG)
    targets = Targets(args, prepared.reference, prepared.source_stats, console)

    def song(job: SongJob, console: Console) -> SongResult:
        samples = load_source(job.source, prepared.codec)
        codec = source_codec(prepared, samples, None)
        try:
            targets.of(codec)  # computed once; a failure here is the run's, not the song's
        except (OSError, SinGlowError) as error:
            raise FolderAbort(one_line(error)) from error
        done = migrate_samples(prepared, targets, codec, samples, job.wav, job.figure, console)
        note = f"SNR vs source {done.snr_db:.1f} dB"
        if done.singer is not None:
            note += f", source singer {done.singer}"
        return SongResult(done.seconds, note, {"seconds": done.seconds, "snr_db": done.snr_db,
                                               "source_singer": done.singer})

    os.makedirs(args.output, exist_ok=True)
    console.info(f"migrating {len(prepared.jobs)} audio files under {args.source} into "
                 f"{args.output} ({args.method} at strength {args.strength:g})")
    try:
        migrate_folder(prepared.jobs, song, prepared.recipe, console, progress,
                       overwrite=args.overwrite)
    except FolderAbort:
        console.out(progress.summary())
        raise
    console.out(progress.summary())
    if progress.migrated or progress.complete:
        return EXIT_OK
    print_error(PROG, f"no song under {args.source} could be migrated")
    return EXIT_FAILED


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
    # (save_wav is atomic, so it is written whole or not at all). In folder mode: the counts.
    before = {}
    progress = FolderProgress()

    def prepare_recording_output(args: argparse.Namespace) -> Prepared:
        before["output"] = _file_identity(args.output)
        before["folder"] = os.path.isdir(args.source)
        return prepare(args)

    def on_interrupt(args: argparse.Namespace) -> str:
        if before.get("folder"):
            written = progress.migrated
            text = f"{written} song{'' if written == 1 else 's'} written to {args.output}"
            if progress.current is not None:
                text += f"; {progress.current} (in progress) was not"
            return text
        written = "output" in before and _file_identity(args.output) != before["output"]
        return (f"{args.output} "
                f"{'was written, its figure may not be' if written else 'was not written'}")

    def work_status(prepared: Prepared) -> int:
        if prepared.jobs is not None:
            return work_folder(prepared, progress)
        work(prepared)
        return EXIT_OK

    return run_cli(PROG, build_parser(), prepare_recording_output, work_status, argv,
                   on_interrupt)


if __name__ == "__main__":
    sys.exit(main())

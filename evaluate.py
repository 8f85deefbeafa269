"""Evaluate a trained SinGlow checkpoint: likelihood, exactness and feature migration.

    python evaluate.py --checkpoint_dir CK --virtual DIR --real DIR \\
        [--methods midpoint shift match eq convert] [--strengths 0 0.5 1] [--songs N] \\
        [--heldout PATH] [--reference_stats S.npz] [--compare_checkpoint_dir CK2 ...] \\
        --json OUT.json

Reports

- held-out bits/dim: mean over the aligned (non-overlapping) patches of ``--heldout`` (a folder of
  songs or a records folder made by data_loader.py; default: the --virtual and --real songs);
- reconstruction: SNR and log-spectral distance (dB) of decode(encode(song)) against the song,
  through the same chunked whole-song path as migration, with the source phase;
- migration, for every method x strength, averaged over the last ``--songs`` virtual songs: P(real)
  of the source and of the migrated song by two judges fitted on the other virtual songs and the
  real songs (the evaluated songs are held out of both): a per-second MFCC-statistics classifier
  (:class:`utils.evaluation.metrics.SingerClassifier`) and a frame-level one (one GMM per singer on
  frame MFCCs + deltas, :class:`utils.evaluation.frame_judge.FrameJudge`: the share of frames judged
  the real singer's); raw pitch accuracy and median cent error of the migrated song's pitch against
  the source's, and SNR / log-spectral distance against the source. The methods are the latent
  moves, ``eq`` (the no-model baseline every method is measured against) and, for a
  singer-conditional checkpoint, ``convert`` to the ``--real`` folder's singer; a summary line per
  method gives its best P(real) by both judges at raw pitch accuracy >= 0.9;
- for a conditional checkpoint, the accuracy of the flow as a singer classifier (the singer under
  whom each evaluated virtual song and each real song is most likely).
- each ``--compare_checkpoint_dir`` (e.g. a ``--feature world`` run beside a spectrogram one):
  the same reports on the same songs by the same judges, under ``"compared"`` in the JSON.

The reference statistics are those of all ``--real`` songs (or ``--reference_stats``); the source
statistics of ``shift`` and ``match`` are each song's own, as ``migrate.py`` does by default.
Prints a table and writes every number to ``--json``. Errors are one line,
``evaluate.py: error: ...``; the exit status follows :mod:`utils.cli`: 2 for a malformed command
line or an input refused before any work (a missing folder, a folder without audio, a checkpoint
or statistics of another model), 1 when the evaluation fails, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Sequence

from utils.cli import CliError, OneLineArgumentParser, finite_float, print_warning, run_cli
from utils.evaluation.report import (
    Judges,
    best_rows,
    format_summary,
    format_table,
    json_safe,
    rendition_points,
    share,
)
from utils.files import atomic_write_text
from utils.migration.method import BINS, LATENT
from utils.migration.registry import METHOD_NAMES, METHODS, either, methods_for, names_where
from utils.resources import check_inference_fits, check_writable_folder

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

if TYPE_CHECKING:  # imported for real once the flags are checked (TensorFlow loads)
    from utils.runs.codec import Codec
    from utils.runs.latent_stats import LatentStats

PROG = "evaluate.py"
VIRTUAL, REAL = "virtual", "real"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint_dir", required=True, help="trained checkpoint")
    parser.add_argument("--compare_checkpoint_dir", action="append", default=[], metavar="CK",
                        help="another checkpoint (e.g. of another --feature) evaluated on the same "
                             "songs by the same judges; repeatable")
    parser.add_argument("--virtual", required=True, help="folder of the source singer's songs")
    parser.add_argument("--real", required=True, help="folder of the reference singer's songs")
    parser.add_argument("--methods", nargs="+", choices=METHOD_NAMES,
                        help="default: every method the checkpoint supports ("
                             f"{either(names_where(lambda m: m.conditional))} needs a "
                             "conditional one)")
    parser.add_argument("--strengths", nargs="+", type=finite_float, default=[0.0, 0.5, 1.0])
    parser.add_argument("--harmonic_hz", type=finite_float, metavar="HZ",
                        help="convert: the band below which a change keeps the source's "
                             "harmonics (default 1000 on spectrograms; 0: every bin freely)")
    parser.add_argument("--eq_harmonic_hz", type=finite_float, default=0.0, metavar="HZ",
                        help="eq with convert's harmonic band (an ablation; default "
                             "%(default)s: the baseline as it is)")
    parser.add_argument("--songs", type=int, default=3,
                        help="virtual songs to migrate, the last ones in name order "
                             "(default %(default)s; without --sources)")
    parser.add_argument("--sources", metavar="DIR",
                        help="folder of unseen songs of the --virtual singer to migrate instead "
                             "(then every --virtual song fits the judges)")
    parser.add_argument("--target_renditions", metavar="DIR",
                        help="folder of the --real singer's renditions of the migrated songs "
                             "(same file names): each output's mel-cepstral distortion to its "
                             "rendition, beside the source's and the pitch-kept ceiling's")
    parser.add_argument("--temperature", type=finite_float, metavar="T",
                        help="convert on a parallel checkpoint: the latent temperature "
                             "(default 0.5; 0: the flow's mode)")
    parser.add_argument("--heldout",
                        help="folder of songs or records folder for bits/dim "
                             "(default: the --virtual and --real songs)")
    parser.add_argument("--reference_stats", help="reference statistics .npz (default: --real)")
    parser.add_argument("--batch_size", type=int, default=16, help="patches per model call")
    parser.add_argument("--json", required=True, help="where to write the results")
    return parser








def reconstruction_metrics(codec: "Codec", samples: np.ndarray) -> Dict[str, float]:
    """SNR and log-spectral distance (dB) of the chunked decode(encode(song)) against the song."""
    from utils.evaluation.metrics import log_spectral_distance, snr_db

    rebuilt = codec.reconstruct(samples)
    return {"snr_db": snr_db(samples, rebuilt),
            "lsd_db": log_spectral_distance(samples, rebuilt, codec.config.sampling_rate)}






def evaluate_migration(codec: "Codec", sources: Sequence[np.ndarray], targets: Dict[str, object],
                       judges: Judges, methods: Sequence[str], strengths: Sequence[float],
                       reference_label: str = REAL, renditions=None) -> List[dict]:
    """Migrate every source with every method x strength and score the result.

    ``targets`` maps each method to its :class:`utils.migration.method.MigrationTarget`; each
    method is fitted to it once (:func:`utils.migration.registry.fit`). Returns one dict per
    (method, strength) with the means over sources of ``p_ref_source``,
    ``p_ref_migrated`` (P(reference_label) by the per-second judge), ``frames_ref_source``,
    ``frames_ref_migrated`` (share of frames the frame judge gives ``reference_label``),
    ``raw_pitch_accuracy``, ``median_abs_cents``, ``snr_db``, ``lsd_db`` and ``per_song`` lists;
    with ``renditions`` (:class:`utils.evaluation.distance.Renditions` of the sources) also
    ``mcd_db``, the mel-cepstral distortion to the target singer's rendition.
    """
    from utils.evaluation.metrics import compare_pitch, log_spectral_distance, pitch_track, snr_db
    from utils.migration.registry import fit

    rate = codec.config.sampling_rate
    source_pitch = [pitch_track(s, rate)[0] for s in sources]
    source_p = [judges.clip.probability(s, reference_label, rate) for s in sources]
    source_frames = [judges.frames.probability(s, reference_label) for s in sources]
    own_stats = [None] * len(sources)
    rows = []
    for method in methods:
        fitted = fit(method, codec, targets[method])
        for strength in strengths:
            per_song = []
            for index, samples in enumerate(sources):
                result = fitted.transform(samples, strength, own_stats[index])
                own_stats[index] = own_stats[index] or result.source_stats
                out = result.samples
                pitch = compare_pitch(source_pitch[index], pitch_track(out, rate)[0])
                per_song.append({
                    "p_ref_source": source_p[index],
                    "p_ref_migrated": judges.clip.probability(out, reference_label, rate),
                    "frames_ref_source": source_frames[index],
                    "frames_ref_migrated": judges.frames.probability(out, reference_label),
                    "raw_pitch_accuracy": pitch["raw_pitch_accuracy"],
                    "median_abs_cents": pitch["median_abs_cents"],
                    "voicing_recall": pitch["voicing_recall"],
                    "snr_db": snr_db(samples, out),
                    "lsd_db": log_spectral_distance(samples, out, rate),
                    **({} if renditions is None else {"mcd_db": renditions.to(index, out)}),
                })
            row = {"method": method, "strength": float(strength)}
            for key in per_song[0]:
                row[key] = float(np.mean([song[key] for song in per_song]))
            row["per_song"] = per_song
            rows.append(row)
    return rows














def _load_folder(codec: "Codec", folder: str, what: str):
    """Every usable song under ``folder`` as ``(path, samples)``; skipped files are warned about."""
    def skipped(path, reason):
        print_warning(PROG, f"{what}: skipping {path}: {reason}")

    songs = list(codec.folder_songs(folder, skipped))
    if not songs:
        raise CliError(f"no usable {what} song under {folder}")
    return songs


def _heldout(codec: "Codec", path: Optional[str], labelled, batch_size: int):
    """Held-out bits/dim of ``path`` (records or a folder of songs) or, without it, of the
    ``(samples, singer)`` pairs ``labelled``; a conditional model scores each song under its own
    singer (the records' labels; a folder's name, else the singer it is most likely under)."""
    from data_loader import SongDataLoader, read_records_manifest
    from utils.runs.likelihood import heldout_bits_per_dim, song_patch_batches

    if path is None:
        batches = song_patch_batches(codec, labelled, batch_size)
        return dict(heldout_bits_per_dim(codec.model, batches),
                    source="--virtual and --real songs")
    if read_records_manifest(path) is not None:
        records = SongDataLoader(codec.config).records(path)
        if not records.stats().matches(codec.config):
            raise CliError(f"records in {path} were made with other feature settings")
        # The checkpoint's normalisation, not the records' own, is what the model was fitted to.
        dataset = records.evaluation_dataset(batch_size, stats=codec.stats,
                                             labels=bool(codec.singers))
        if codec.singers:
            batches = ((x.numpy(), np.array([codec.singer_id(n.decode()) for n in names.numpy()],
                                            np.int32)) for x, names in dataset)
        else:
            batches = (x.numpy() for x in dataset)
        return dict(heldout_bits_per_dim(codec.model, batches), source=f"records {path}")
    folder_songs = _load_folder(codec, path, "held-out")
    batches = song_patch_batches(codec, ((s, _label(path)) for _, s in folder_songs), batch_size)
    return dict(heldout_bits_per_dim(codec.model, batches), source=f"folder {path}")


# ----------------------------------------------------------------------------- the CLI
class Prepared(NamedTuple):
    """What :func:`prepare` checked and loaded for :func:`work`."""

    args: argparse.Namespace
    codec: "Codec"
    reference: Optional["LatentStats"]  # from --reference_stats; None: computed over --real
    started: float  # time.perf_counter() when preparing began
    compared: List["Codec"]  # --compare_checkpoint_dir, in order


def prepare(args: argparse.Namespace) -> Prepared:
    """Every check that needs no song decoded: flags, folders and paths, the checkpoint
    (restored, refused when of another model), ``--reference_stats`` (refused when of another
    model) and the song folders (refused when they hold no audio file)."""
    for flag, path in (("--checkpoint_dir", args.checkpoint_dir), ("--virtual", args.virtual),
                       ("--real", args.real)):
        if not os.path.isdir(path):
            raise CliError(f"{flag} folder not found: {path}")
    if args.songs < 1:
        raise CliError(f"--songs must be at least 1, got {args.songs}")
    for flag in ("harmonic_hz", "eq_harmonic_hz"):
        if (getattr(args, flag) or 0.0) < 0:
            raise CliError(f"--{flag} must be >= 0, got {getattr(args, flag):g}")
    if args.batch_size < 1:
        raise CliError(f"--batch_size must be positive, got {args.batch_size}")
    json_dir = os.path.dirname(os.path.abspath(args.json))
    if not os.path.isdir(json_dir):
        raise CliError(f"folder of --json does not exist: {json_dir}")
    check_writable_folder(json_dir, f"--json {args.json}: the folder")
    if args.heldout is not None and not os.path.isdir(args.heldout):
        raise CliError(f"--heldout not found: {args.heldout}")
    for flag in ("sources", "target_renditions"):
        folder = getattr(args, flag)
        if folder is not None and not os.path.isdir(folder):
            raise CliError(f"--{flag} folder not found: {folder}")
    if args.temperature is not None and args.temperature < 0:
        raise CliError(f"--temperature must be >= 0, got {args.temperature:g}")
    started = time.perf_counter()
    from utils.data.song_folders import list_audio
    from utils.runs.latent_stats import LatentStats, weights_fingerprint
    from utils.runs.run_folder import load_for_inference

    codec = load_for_inference(args.checkpoint_dir)
    # Patches of one window each, --batch_size per model call (the chunked songs are smaller).
    check_inference_fits(codec.config, codec.config.input_shape[0], args.batch_size)
    for folder in (args.virtual, args.real) + ((args.sources,) if args.sources else ()):
        list_audio(folder)
    if args.target_renditions:
        check_renditions(args)
    reference = None
    if args.reference_stats:
        reference = LatentStats.load(args.reference_stats, codec.config,
                                     weights_fingerprint(codec.model))
    if args.methods is None:  # every method this checkpoint supports
        args.methods = list(methods_for(codec))
    if any(METHODS[m].conditional for m in args.methods):
        # The target is the --real folder's singer: refused on an unconditional checkpoint or
        # when the checkpoint does not know it.
        codec.singer_id(_label(args.real))
    codec.run_folder = args.checkpoint_dir
    compared = []
    for folder in args.compare_checkpoint_dir:
        if not os.path.isdir(folder):
            raise CliError(f"--compare_checkpoint_dir folder not found: {folder}")
        other = load_for_inference(folder)
        other.run_folder = folder
        if other.config.sampling_rate != codec.config.sampling_rate:
            raise CliError(f"{folder} is at {other.config.sampling_rate} Hz, --checkpoint_dir "
                           f"at {codec.config.sampling_rate} Hz: the same songs cannot feed both")
        compared.append(other)
    return Prepared(args, codec, reference, started, compared)


def check_renditions(args: argparse.Namespace) -> None:
    """Refuse ``--target_renditions`` unless it holds a song of the same name (extension aside)
    as every song to migrate (``--sources``; else the ``--songs`` last of ``--virtual``)."""
    from utils.data.parallel import song_name
    from utils.data.song_folders import list_audio

    sources = list_audio(args.sources) if args.sources else list_audio(args.virtual)[-args.songs:]
    have = {song_name(p) for p in list_audio(args.target_renditions)}
    missing = [os.path.basename(p) for p in sources if song_name(p) not in have]
    if missing:
        raise CliError(f"--target_renditions {args.target_renditions} has no rendition of "
                       f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} (the same "
                       "file name is the same melody)")


def _label(folder: str) -> str:
    """A folder's singer name: its own name, as the records label its songs."""
    return os.path.basename(os.path.normpath(os.path.abspath(folder)))


def work(prepared: Prepared) -> dict:
    """Evaluate; prints the table(s), writes ``--json`` and returns the results."""
    from utils.evaluation.frame_judge import FrameJudge
    from utils.evaluation.metrics import SingerClassifier

    args, codec = prepared.args, prepared.codec
    config = codec.config
    virtual = _load_folder(codec, args.virtual, VIRTUAL)
    real = _load_folder(codec, args.real, REAL)

    if args.sources:
        evaluated, rest = _load_folder(codec, args.sources, "--sources"), virtual
    else:
        count = min(args.songs, len(virtual))
        evaluated, rest = virtual[-count:], virtual[:-count]
    in_sample = not rest
    if in_sample:
        print_warning(PROG, "every virtual song is evaluated, so the singer classifier is "
                            "fitted on them too (in-sample scores)")
        rest = virtual
    judged = {VIRTUAL: [s for _, s in rest], REAL: [s for _, s in real]}
    judges = Judges(SingerClassifier().fit(judged, config.sampling_rate),
                    FrameJudge().fit(judged, config.sampling_rate))

    renditions = points = None
    if args.target_renditions:
        renditions = load_renditions(codec, args.target_renditions, evaluated)
        points = rendition_points(renditions, [s for _, s in evaluated], judges,
                                  config.sampling_rate)
    results = _evaluate_checkpoint(codec, args, args.methods, prepared.reference, virtual, real,
                                   evaluated, judges, renditions, points)
    results.update({
        "evaluated_songs": [p for p, _ in evaluated],
        "classifier": {"labels": [VIRTUAL, REAL], "virtual_songs": len(rest),
                       "real_songs": len(real), "in_sample": in_sample},
        "judges": {"per_second": "utils.evaluation.metrics.SingerClassifier",
                   "frames": "utils.evaluation.frame_judge.FrameJudge"},
        "reference": args.reference_stats or os.path.abspath(args.real),
        "harmonic_hz": harmonic_bands(args),
        "renditions": points,
    })
    # Other checkpoints (e.g. of another --feature) on the same songs and by the same judges; a
    # method that uses no model (eq) has its rows above stand for every checkpoint.
    results["compared"] = [
        _evaluate_checkpoint(other, args, [m for m in args.methods if METHODS[m].uses_model
                                           and METHODS[m].works_with(other)],
                             None, virtual, real, evaluated, judges, renditions, points)
        for other in prepared.compared]
    results["seconds"] = time.perf_counter() - prepared.started
    atomic_write_text(args.json, json.dumps(json_safe(results), indent=1))
    print(f"wrote {args.json}")
    return results


def load_renditions(codec: "Codec", folder: str, evaluated):
    """:class:`utils.evaluation.distance.Renditions` of the songs ``evaluated`` (``(path,
    samples)``): the song of the same name in ``folder`` for each."""
    from utils.data.parallel import song_name
    from utils.evaluation.distance import Renditions

    by_name = {song_name(p): s for p, s in _load_folder(codec, folder, "--target_renditions")}
    missing = [p for p, _ in evaluated if song_name(p) not in by_name]
    if missing:  # a rendition that could not be decoded (checked by name before any work)
        raise CliError(f"no usable rendition of {missing[0]} in {folder}")
    return Renditions([by_name[song_name(p)] for p, _ in evaluated], codec.config)


def harmonic_bands(args: argparse.Namespace) -> Dict[str, Optional[float]]:
    """``{method: harmonic_hz}`` of the methods that take a harmonic band
    (:mod:`utils.migration.harmonic_band`); None is convert's default for the checkpoint's
    feature."""
    return {"convert": args.harmonic_hz, "eq": args.eq_harmonic_hz}


def _evaluate_checkpoint(codec: "Codec", args: argparse.Namespace, methods: Sequence[str],
                         reference: Optional["LatentStats"], virtual, real, evaluated,
                         judges: Judges, renditions=None, points: Optional[dict] = None) -> dict:
    """Held-out bits/dim, reconstruction and every method x strength of one checkpoint; prints
    its table and summary."""
    from utils.migration.bin_stats import song_bin_stats
    from utils.migration.method import MigrationTarget
    from utils.runs.likelihood import parallel_heldout

    config = codec.config
    print(f"== {os.path.abspath(codec_dir(codec, args))} ({config.feature}"
          f"{', conditional' if codec.singers else ''})")
    flow_classifier = None
    if codec.parallel:  # it converts its source singer's songs; it classifies none
        codec = codec.with_singer(codec.singers[0])
    elif codec.singers:
        flow_classifier = _flow_classifier(codec, args, evaluated, real)
        # The virtual songs are encoded under their singer: the folder's, else the most likely.
        codec = codec.with_singer(_label(args.virtual) if _label(args.virtual) in codec.singers
                                  else flow_classifier["virtual_singer"])
    target = MigrationTarget(singer=_label(args.real) if codec.singers else None,
                             temperature=args.temperature)
    if any(METHODS[m].reference == LATENT for m in methods):
        target.latent = reference
        if target.latent is None:
            target.latent = codec.latent_stats((s for _, s in real), args.batch_size)
    if any(METHODS[m].reference == BINS for m in methods):
        target.bins = song_bin_stats((s for _, s in real), config)

    labelled = [(s, _label(args.virtual)) for _, s in virtual] + [
        (s, _label(args.real)) for _, s in real]
    heldout = (_heldout(codec, args.heldout, labelled, args.batch_size) if not codec.parallel
               else parallel_heldout(codec, evaluated, renditions, _label(args.real),
                                      args.batch_size))
    sources = [s for _, s in evaluated]
    recon = [reconstruction_metrics(codec, s) for s in sources]
    targets = {m: dataclasses.replace(target, harmonic_hz=harmonic_bands(args).get(m))
               for m in methods}
    rows = evaluate_migration(codec, sources, targets, judges, methods, args.strengths,
                              renditions=renditions)
    best = best_rows(rows)
    results = {
        "checkpoint_dir": os.path.abspath(codec_dir(codec, args)),
        "config": config.to_dict(),
        "flow_classifier": flow_classifier,
        "heldout": heldout,
        "reconstruction": {
            "snr_db": float(np.mean([r["snr_db"] for r in recon])),
            "lsd_db": float(np.mean([r["lsd_db"] for r in recon])),
            "per_song": recon,
        },
        "migration": rows,
        "best_at_pitch_accuracy_0.9": {m: {"strength": r["strength"],
                                           "p_ref_migrated": r["p_ref_migrated"],
                                           "frames_ref_migrated": r["frames_ref_migrated"],
                                           "raw_pitch_accuracy": r["raw_pitch_accuracy"],
                                           **({} if points is None else {
                                               "mcd_db": r["mcd_db"],
                                               "share_closed": share(points, r["mcd_db"])})}
                                       for m, r in best.items()},
    }
    print(format_table(rows))
    print(format_summary(best, methods, points=points))
    if flow_classifier is not None:
        print(f"the flow as a singer classifier: accuracy {flow_classifier['accuracy']:.3f} over "
              f"{flow_classifier['songs']} songs")
    print(f"held-out bits/dim {heldout['bits_per_dim']:.4f} over {heldout['patches']} patches "
          f"({heldout['source']}); reconstruction SNR {results['reconstruction']['snr_db']:.1f} dB,"
          f" LSD {results['reconstruction']['lsd_db']:.3f} dB")
    return results




def codec_dir(codec: "Codec", args: argparse.Namespace) -> str:
    """The run folder a codec was loaded from (recorded on it by :func:`prepare`)."""
    return getattr(codec, "run_folder", args.checkpoint_dir)


def _flow_classifier(codec: "Codec", args: argparse.Namespace, virtual, real) -> dict:
    """Accuracy of a conditional flow as a singer classifier (argmin bits/dim over singers) on
    the evaluated virtual songs and the real songs, each labelled by its folder's name."""
    labelled = [(path, samples, _label(args.virtual)) for path, samples in virtual] + [
        (path, samples, _label(args.real)) for path, samples in real]
    predicted = [codec.classify(samples) for _, samples, _ in labelled]
    votes = [p for p, (_, _, label) in zip(predicted, labelled) if label == _label(args.virtual)]
    return {
        "accuracy": float(np.mean([p == label for p, (_, _, label) in zip(predicted, labelled)])),
        "songs": len(labelled),
        "predicted": {path: p for p, (path, _, _) in zip(predicted, labelled)},
        "virtual_singer": max(set(votes), key=votes.count),
    }


def run(args: argparse.Namespace) -> dict:
    """:func:`prepare` then :func:`work` on parsed flags, raising instead of printing errors
    (what the experiment notebook calls); returns the results."""
    return work(prepare(args))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (:mod:`utils.cli`: 0 done, 1 failed during the
    evaluation, 2 bad flags or refused before any work, 130 Ctrl-C)."""
    def work_status(prepared: Prepared) -> int:
        work(prepared)
        return 0

    return run_cli(PROG, build_parser(), prepare, work_status, argv)


if __name__ == "__main__":
    sys.exit(main())

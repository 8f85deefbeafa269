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
import math
import os
import sys
import time
from typing import TYPE_CHECKING, Dict, Iterable, List, NamedTuple, Optional, Sequence

from utils.cli import CliError, OneLineArgumentParser, finite_float, print_warning, run_cli
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
                             "(default %(default)s)")
    parser.add_argument("--heldout",
                        help="folder of songs or records folder for bits/dim "
                             "(default: the --virtual and --real songs)")
    parser.add_argument("--reference_stats", help="reference statistics .npz (default: --real)")
    parser.add_argument("--batch_size", type=int, default=16, help="patches per model call")
    parser.add_argument("--json", required=True, help="where to write the results")
    return parser


# ----------------------------------------------------------------------------- model metrics
def heldout_bits_per_dim(model, batches: Iterable) -> Dict[str, float]:
    """Mean bits/dim over batches of patches (B, H, W, C) (numpy or tensors), or of
    ``(patches, singer ids (B,))`` for a conditional model (each patch under its own singer).

    Returns ``{"bits_per_dim": mean over patches, "patches": count}``; each patch's bits/dim is
    ``-log p(x) / (D ln 2)`` with ``D = H * W * C`` (continuous features, no discretisation
    term).
    """
    from utils.evaluation.metrics import bits_per_dim_from_log_prob

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
    from utils.runs.song_chunks import iter_patches

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


def reconstruction_metrics(codec: "Codec", samples: np.ndarray) -> Dict[str, float]:
    """SNR and log-spectral distance (dB) of the chunked decode(encode(song)) against the song."""
    from utils.evaluation.metrics import log_spectral_distance, snr_db

    rebuilt = codec.reconstruct(samples)
    return {"snr_db": snr_db(samples, rebuilt),
            "lsd_db": log_spectral_distance(samples, rebuilt, codec.config.sampling_rate)}


# Raw pitch accuracy a migrated song must keep for its judges' verdict to count as a success.
MIN_PITCH_ACCURACY = 0.9


class Judges(NamedTuple):
    """The two outside judges of singer likeness, fitted on songs they do not score: ``clip``
    scores per-second MFCC statistics, ``frames`` every frame on its own."""

    clip: object  # utils.evaluation.metrics.SingerClassifier
    frames: object  # utils.evaluation.frame_judge.FrameJudge


def evaluate_migration(codec: "Codec", sources: Sequence[np.ndarray], targets: Dict[str, object],
                       judges: Judges, methods: Sequence[str], strengths: Sequence[float],
                       reference_label: str = REAL) -> List[dict]:
    """Migrate every source with every method x strength and score the result.

    ``targets`` maps each method to its :class:`utils.migration.method.MigrationTarget`; each
    method is fitted to it once (:func:`utils.migration.registry.fit`). Returns one dict per
    (method, strength) with the means over sources of ``p_ref_source``,
    ``p_ref_migrated`` (P(reference_label) by the per-second judge), ``frames_ref_source``,
    ``frames_ref_migrated`` (share of frames the frame judge gives ``reference_label``),
    ``raw_pitch_accuracy``, ``median_abs_cents``, ``snr_db``, ``lsd_db`` and ``per_song`` lists.
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
                })
            row = {"method": method, "strength": float(strength)}
            for key in per_song[0]:
                row[key] = float(np.mean([song[key] for song in per_song]))
            row["per_song"] = per_song
            rows.append(row)
    return rows


def best_rows(rows: Sequence[dict], min_pitch: float = MIN_PITCH_ACCURACY) -> Dict[str, dict]:
    """Per method, the row (strength) whose weaker judge gives the highest P(reference) among the
    rows with raw pitch accuracy >= ``min_pitch``; a method with no such row is left out."""
    best: Dict[str, dict] = {}
    for row in rows:
        if not row["raw_pitch_accuracy"] >= min_pitch:
            continue
        score = min(row["p_ref_migrated"], row["frames_ref_migrated"])
        held = best.get(row["method"])
        if held is None or score > min(held["p_ref_migrated"], held["frames_ref_migrated"]):
            best[row["method"]] = row
    return best


# ----------------------------------------------------------------------------- report
def format_table(rows: Sequence[dict], reference_label: str = REAL) -> str:
    header = (f"{'method':<9} {'strength':>8}  {'P(' + reference_label + ') src -> mig':>22}  "
              f"{'frames src -> mig':>18}  {'pitch acc':>9}  {'med cents':>9}  {'SNR dB':>7}  "
              f"{'LSD dB':>7}")
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['method']:<9} {row['strength']:>8g}  "
            f"{row['p_ref_source']:>11.3f} -> {row['p_ref_migrated']:<7.3f}  "
            f"{row['frames_ref_source']:>7.3f} -> {row['frames_ref_migrated']:<7.3f}  "
            f"{row['raw_pitch_accuracy']:>9.3f}  {row['median_abs_cents']:>9.1f}  "
            f"{row['snr_db']:>7.1f}  {row['lsd_db']:>7.2f}")
    return "\n".join(lines)


def format_summary(best: Dict[str, dict], methods: Sequence[str],
                   reference_label: str = REAL) -> str:
    """One line per method: its best P(reference) by both judges at pitch accuracy >= 0.9."""
    lines = [f"best P({reference_label}) at raw pitch accuracy >= {MIN_PITCH_ACCURACY:g} "
             "(per-second judge / frame judge):"]
    for method in methods:
        row = best.get(method)
        if row is None:
            lines.append(f"  {method:<9} none of its strengths keeps the pitch")
            continue
        lines.append(f"  {method:<9} {row['p_ref_migrated']:.3f} / {row['frames_ref_migrated']:.3f}"
                     f" at strength {row['strength']:g} (pitch accuracy "
                     f"{row['raw_pitch_accuracy']:.3f})")
    return "\n".join(lines)


def _json_safe(value):
    """inf/nan -> None so the file is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


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
    started = time.perf_counter()
    from utils.data.song_folders import list_audio
    from utils.runs.latent_stats import LatentStats, weights_fingerprint
    from utils.runs.run_folder import load_for_inference

    codec = load_for_inference(args.checkpoint_dir)
    # Patches of one window each, --batch_size per model call (the chunked songs are smaller).
    check_inference_fits(codec.config, codec.config.input_shape[0], args.batch_size)
    for folder in (args.virtual, args.real):
        list_audio(folder)
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

    results = _evaluate_checkpoint(codec, args, args.methods, prepared.reference, virtual, real,
                                   evaluated, judges)
    results.update({
        "evaluated_songs": [p for p, _ in evaluated],
        "classifier": {"labels": [VIRTUAL, REAL], "virtual_songs": len(rest),
                       "real_songs": len(real), "in_sample": in_sample},
        "judges": {"per_second": "utils.evaluation.metrics.SingerClassifier",
                   "frames": "utils.evaluation.frame_judge.FrameJudge"},
        "reference": args.reference_stats or os.path.abspath(args.real),
        "harmonic_hz": harmonic_bands(args),
    })
    # Other checkpoints (e.g. of another --feature) on the same songs and by the same judges; a
    # method that uses no model (eq) has its rows above stand for every checkpoint.
    results["compared"] = [
        _evaluate_checkpoint(other, args, [m for m in args.methods if METHODS[m].uses_model
                                           and METHODS[m].works_with(other)],
                             None, virtual, real, evaluated, judges)
        for other in prepared.compared]
    results["seconds"] = time.perf_counter() - prepared.started
    atomic_write_text(args.json, json.dumps(_json_safe(results), indent=1))
    print(f"wrote {args.json}")
    return results


def harmonic_bands(args: argparse.Namespace) -> Dict[str, Optional[float]]:
    """``{method: harmonic_hz}`` of the methods that take a harmonic band
    (:mod:`utils.migration.harmonic_band`); None is convert's default for the checkpoint's
    feature."""
    return {"convert": args.harmonic_hz, "eq": args.eq_harmonic_hz}


def _evaluate_checkpoint(codec: "Codec", args: argparse.Namespace, methods: Sequence[str],
                         reference: Optional["LatentStats"], virtual, real, evaluated,
                         judges: Judges) -> dict:
    """Held-out bits/dim, reconstruction and every method x strength of one checkpoint; prints
    its table and summary."""
    from utils.migration.bin_stats import song_bin_stats
    from utils.migration.method import MigrationTarget

    config = codec.config
    print(f"== {os.path.abspath(codec_dir(codec, args))} ({config.feature}"
          f"{', conditional' if codec.singers else ''})")
    flow_classifier = None
    if codec.singers:
        flow_classifier = _flow_classifier(codec, args, evaluated, real)
        # The virtual songs are encoded under their singer: the folder's, else the most likely.
        codec = codec.with_singer(_label(args.virtual) if _label(args.virtual) in codec.singers
                                  else flow_classifier["virtual_singer"])
    target = MigrationTarget(singer=_label(args.real) if codec.singers else None)
    if any(METHODS[m].reference == LATENT for m in methods):
        target.latent = reference
        if target.latent is None:
            target.latent = codec.latent_stats((s for _, s in real), args.batch_size)
    if any(METHODS[m].reference == BINS for m in methods):
        target.bins = song_bin_stats((s for _, s in real), config)

    labelled = [(s, _label(args.virtual)) for _, s in virtual] + [
        (s, _label(args.real)) for _, s in real]
    heldout = _heldout(codec, args.heldout, labelled, args.batch_size)
    sources = [s for _, s in evaluated]
    recon = [reconstruction_metrics(codec, s) for s in sources]
    targets = {m: dataclasses.replace(target, harmonic_hz=harmonic_bands(args).get(m))
               for m in methods}
    rows = evaluate_migration(codec, sources, targets, judges, methods, args.strengths)
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
                                           "raw_pitch_accuracy": r["raw_pitch_accuracy"]}
                                       for m, r in best.items()},
    }
    print(format_table(rows))
    print(format_summary(best, methods))
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

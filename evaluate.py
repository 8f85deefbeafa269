"""Evaluate a trained SinGlow checkpoint: likelihood, exactness and feature migration.

    python evaluate.py --checkpoint_dir CK --virtual DIR --real DIR \\
        [--methods midpoint shift match] [--strengths 0 0.5 1] [--songs N] \\
        [--heldout PATH] [--reference_stats S.npz] --json OUT.json

Reports

- held-out bits/dim: mean over the aligned (non-overlapping) patches of ``--heldout`` (a folder of
  songs or a records folder made by data_loader.py; default: the --virtual and --real songs);
- reconstruction: SNR and log-spectral distance (dB) of decode(encode(song)) against the song,
  through the same chunked whole-song path as migration, with the source phase;
- migration, for every method x strength, averaged over the last ``--songs`` virtual songs:
  P(real) of the source and of the migrated song by a :class:`utils.metrics.SingerClassifier`
  fitted on the other virtual songs and the real songs (the evaluated songs are held out of it),
  raw pitch accuracy and median cent error of the migrated song's pitch against the source's, and
  SNR / log-spectral distance against the source.

The reference statistics are those of all ``--real`` songs (or ``--reference_stats``); the source
statistics of ``shift`` and ``match`` are each song's own, as ``migrate.py`` does by default.
Prints a table and writes every number to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Dict, Iterable, List, Optional, Sequence

from utils.cli import CliError, OneLineArgumentParser, finite_float

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

PROG = "evaluate.py"
METHOD_NAMES = ("midpoint", "shift", "match")
VIRTUAL, REAL = "virtual", "real"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint_dir", required=True, help="trained checkpoint")
    parser.add_argument("--virtual", required=True, help="folder of the source singer's songs")
    parser.add_argument("--real", required=True, help="folder of the reference singer's songs")
    parser.add_argument("--methods", nargs="+", choices=METHOD_NAMES, default=list(METHOD_NAMES))
    parser.add_argument("--strengths", nargs="+", type=finite_float, default=[0.0, 0.5, 1.0])
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
    """Mean bits/dim over batches of patches (B, H, W, C) (numpy or tensors).

    Returns ``{"bits_per_dim": mean over patches, "patches": count}``; each patch's bits/dim is
    ``-log p(x) / (D ln 2)`` with ``D = H * W * C`` (continuous features, no discretisation
    term).
    """
    from utils.metrics import bits_per_dim_from_log_prob

    total, count = 0.0, 0
    for batch in batches:
        batch = np.asarray(batch, np.float32)
        dims = int(np.prod(batch.shape[1:]))
        bpd = bits_per_dim_from_log_prob(model.log_prob(batch).numpy().astype(np.float64), dims)
        total += float(np.sum(bpd))
        count += len(batch)
    return {"bits_per_dim": total / count if count else math.nan, "patches": count}


def song_patch_batches(config, feature_stats, songs: Iterable[np.ndarray], batch_size: int):
    """Batches of the aligned, non-overlapping patches of whole songs (samples)."""
    from utils import migration
    from utils.audio import song_to_features

    batch = []
    for samples in songs:
        song = song_to_features(samples, config, feature_stats)
        if song.num_steps < config.input_shape[0]:
            continue  # bits/dim of padding would not be the song's
        for patch in migration.iter_patches(song.x[:song.num_steps], config.input_shape[0]):
            batch.append(patch)
            if len(batch) == batch_size:
                yield np.stack(batch)
                batch = []
    if batch:
        yield np.stack(batch)


def reconstruction_metrics(model, config, feature_stats, samples: np.ndarray) -> Dict[str, float]:
    """SNR and log-spectral distance (dB) of the chunked decode(encode(song)) against the song."""
    from utils import migration
    from utils.metrics import log_spectral_distance, snr_db

    rebuilt = migration.reconstruct_song(model, config, feature_stats, samples)
    return {"snr_db": snr_db(samples, rebuilt),
            "lsd_db": log_spectral_distance(samples, rebuilt, config.sampling_rate)}


def evaluate_migration(model, config, feature_stats, sources: Sequence[np.ndarray], reference,
                       classifier, methods: Sequence[str], strengths: Sequence[float],
                       reference_label: str = REAL) -> List[dict]:
    """Migrate every source with every method x strength and score the result.

    Returns one dict per (method, strength) with the means over sources of
    ``p_ref_source``, ``p_ref_migrated`` (P(reference_label) by ``classifier``),
    ``raw_pitch_accuracy``, ``median_abs_cents``, ``snr_db``, ``lsd_db`` and ``per_song`` lists.
    """
    from utils import migration
    from utils.metrics import compare_pitch, log_spectral_distance, pitch_track, snr_db

    rate = config.sampling_rate
    source_pitch = [pitch_track(s, rate)[0] for s in sources]
    source_p = [classifier.probability(s, reference_label, rate) for s in sources]
    own_stats = [None] * len(sources)
    rows = []
    for method in methods:
        for strength in strengths:
            per_song = []
            for index, samples in enumerate(sources):
                result = migration.migrate_song(
                    model, config, feature_stats, samples, method, strength, reference,
                    source_stats=own_stats[index])
                own_stats[index] = own_stats[index] or result.source_stats
                out = result.samples
                pitch = compare_pitch(source_pitch[index], pitch_track(out, rate)[0])
                per_song.append({
                    "p_ref_source": source_p[index],
                    "p_ref_migrated": classifier.probability(out, reference_label, rate),
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


# ----------------------------------------------------------------------------- report
def format_table(rows: Sequence[dict], reference_label: str = REAL) -> str:
    header = (f"{'method':<9} {'strength':>8}  {'P(' + reference_label + ') src -> mig':>22}  "
              f"{'pitch acc':>9}  {'med cents':>9}  {'SNR dB':>7}  {'LSD dB':>7}")
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['method']:<9} {row['strength']:>8g}  "
            f"{row['p_ref_source']:>11.3f} -> {row['p_ref_migrated']:<7.3f}  "
            f"{row['raw_pitch_accuracy']:>9.3f}  {row['median_abs_cents']:>9.1f}  "
            f"{row['snr_db']:>7.1f}  {row['lsd_db']:>7.2f}")
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


def _load_folder(folder: str, config, what: str):
    from utils import migration

    def skipped(path, reason):
        print(f"{PROG}: warning: {what}: skipping {path}: {reason}", file=sys.stderr)

    songs = list(migration.iter_folder_songs(folder, config, skipped))
    if not songs:
        raise CliError(f"no usable {what} song under {folder}")
    return songs


def _heldout(model, config, feature_stats, path: Optional[str], songs, batch_size: int):
    from data_loader import SongDataLoader, read_records_manifest

    if path is None:
        batches = song_patch_batches(config, feature_stats, (s for _, s in songs), batch_size)
        return dict(heldout_bits_per_dim(model, batches), source="--virtual and --real songs")
    if not os.path.isdir(path):
        raise CliError(f"--heldout not found: {path}")
    if read_records_manifest(path) is not None:
        loader = SongDataLoader(config.replace(records_dir=path))
        if not loader.stats(path).matches(config):
            raise CliError(f"records in {path} were made with other feature settings")
        # The checkpoint's normalisation, not the records' own, is what the model was fitted to.
        batches = (b.numpy() for b in loader.load(path, batch_size, training=False, aligned=True,
                                                  repeat=False, stats=feature_stats))
        return dict(heldout_bits_per_dim(model, batches), source=f"records {path}")
    folder_songs = _load_folder(path, config, "held-out")
    batches = song_patch_batches(config, feature_stats, (s for _, s in folder_songs), batch_size)
    return dict(heldout_bits_per_dim(model, batches), source=f"folder {path}")


def run(args: argparse.Namespace) -> dict:
    from utils.run_folder import load_for_inference
    from utils import migration
    from utils.metrics import SingerClassifier

    if args.songs < 1:
        raise CliError(f"--songs must be at least 1, got {args.songs}")
    if args.batch_size < 1:
        raise CliError(f"--batch_size must be positive, got {args.batch_size}")
    json_dir = os.path.dirname(os.path.abspath(args.json))
    if not os.path.isdir(json_dir):
        raise CliError(f"folder of --json does not exist: {json_dir}")
    started = time.perf_counter()
    model, config, feature_stats = load_for_inference(args.checkpoint_dir)
    virtual = _load_folder(args.virtual, config, VIRTUAL)
    real = _load_folder(args.real, config, REAL)

    count = min(args.songs, len(virtual))
    evaluated, rest = virtual[-count:], virtual[:-count]
    in_sample = not rest
    if in_sample:
        print(f"{PROG}: warning: every virtual song is evaluated, so the singer classifier is "
              "fitted on them too (in-sample scores)", file=sys.stderr)
        rest = virtual
    classifier = SingerClassifier().fit(
        {VIRTUAL: [s for _, s in rest], REAL: [s for _, s in real]}, config.sampling_rate)

    if args.reference_stats:
        reference = migration.LatentStats.load(args.reference_stats, config)
    else:
        reference = migration.songs_latent_stats(model, config, feature_stats,
                                                 (s for _, s in real), args.batch_size)

    heldout = _heldout(model, config, feature_stats, args.heldout, virtual + real,
                       args.batch_size)
    sources = [s for _, s in evaluated]
    recon = [reconstruction_metrics(model, config, feature_stats, s) for s in sources]
    rows = evaluate_migration(model, config, feature_stats, sources, reference, classifier,
                              args.methods, args.strengths)
    results = {
        "checkpoint_dir": os.path.abspath(args.checkpoint_dir),
        "config": config.to_dict(),
        "evaluated_songs": [p for p, _ in evaluated],
        "classifier": {"labels": [VIRTUAL, REAL], "virtual_songs": len(rest),
                       "real_songs": len(real), "in_sample": in_sample},
        "reference": args.reference_stats or os.path.abspath(args.real),
        "heldout": heldout,
        "reconstruction": {
            "snr_db": float(np.mean([r["snr_db"] for r in recon])),
            "lsd_db": float(np.mean([r["lsd_db"] for r in recon])),
            "per_song": recon,
        },
        "migration": rows,
        "seconds": time.perf_counter() - started,
    }
    print(format_table(rows))
    print(f"held-out bits/dim {heldout['bits_per_dim']:.4f} over {heldout['patches']} patches "
          f"({heldout['source']}); reconstruction SNR {results['reconstruction']['snr_db']:.1f} dB,"
          f" LSD {results['reconstruction']['lsd_db']:.3f} dB")
    tmp = f"{args.json}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(_json_safe(results), handle, indent=1)
    os.replace(tmp, args.json)
    print(f"wrote {args.json}")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return int(stop.code or 0)
    for flag, path in (("--checkpoint_dir", args.checkpoint_dir), ("--virtual", args.virtual),
                       ("--real", args.real)):
        if not os.path.isdir(path):
            print(f"{PROG}: error: {flag} folder not found: {path}", file=sys.stderr)
            return 1
    from data_loader import DataError
    from pipeline import CheckpointMismatch
    from utils.audio import AudioError
    from utils.migration import MigrationError, one_line

    try:
        run(args)
    except (CliError, CheckpointMismatch, AudioError, MigrationError, DataError, OSError) as error:
        print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

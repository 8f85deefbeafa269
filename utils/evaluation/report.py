"""What an evaluation reports: the judges' verdicts per method and strength, the best of each
method under the pitch constraint, the distance to the target singer's renditions, as tables and
lines.

Rows are the dicts ``evaluate.py`` builds per (method, strength): the means over the evaluated
songs of ``p_ref_source`` / ``p_ref_migrated`` (P(reference) by the per-second judge),
``frames_ref_source`` / ``frames_ref_migrated`` (share of frames the frame judge gives the
reference singer), ``raw_pitch_accuracy``, ``median_abs_cents``, ``snr_db``, ``lsd_db`` and, with
renditions, ``mcd_db`` (dB). Works on numbers and samples only.
"""

from __future__ import annotations

import math
from typing import Dict, NamedTuple, Optional, Sequence

import numpy as np

from utils.evaluation.distance import share_closed

REAL = "real"

# Raw pitch accuracy a migrated song must keep for its judges' verdict to count as a success.
MIN_PITCH_ACCURACY = 0.9


class Judges(NamedTuple):
    """The two outside judges of singer likeness, fitted on songs they do not score: ``clip``
    scores per-second MFCC statistics, ``frames`` every frame on its own."""

    clip: object  # utils.evaluation.metrics.SingerClassifier
    frames: object  # utils.evaluation.frame_judge.FrameJudge


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
                   reference_label: str = REAL, points: Optional[dict] = None) -> str:
    """One line per method: its best P(reference) by both judges at pitch accuracy >= 0.9, and
    with the renditions' ``points`` (source and ceiling MCD) its distance and the share of the
    way from the source to the ceiling it closed."""
    lines = [f"best P({reference_label}) at raw pitch accuracy >= {MIN_PITCH_ACCURACY:g} "
             "(per-second judge / frame judge):"]
    for method in methods:
        row = best.get(method)
        if row is None:
            lines.append(f"  {method:<9} none of its strengths keeps the pitch")
            continue
        distance = ""
        if points is not None and "mcd_db" in row:
            distance = (f", MCD {row['mcd_db']:.2f} dB: {100 * share(points, row['mcd_db']):.0f}% "
                        "of the way to the ceiling")
        lines.append(f"  {method:<9} {row['p_ref_migrated']:.3f} / {row['frames_ref_migrated']:.3f}"
                     f" at strength {row['strength']:g} (pitch accuracy "
                     f"{row['raw_pitch_accuracy']:.3f}{distance})")
    if points is not None:
        lines.append(f"  distance to the target's renditions: source {points['source_mcd_db']:.2f} "
                     f"dB, pitch-kept ceiling {points['ceiling']['mcd_db']:.2f} dB (judges "
                     f"{points['ceiling']['p_ref']:.3f} / {points['ceiling']['frames_ref']:.3f}, "
                     f"pitch accuracy {points['ceiling']['raw_pitch_accuracy']:.3f})")
    return "\n".join(lines)


def share(points: dict, mcd_db: float) -> float:
    """The share of the distance from the source to the ceiling that ``mcd_db`` closed."""
    return share_closed(points["source_mcd_db"], points["ceiling"]["mcd_db"], mcd_db)


def rendition_points(renditions, sources: Sequence[np.ndarray], judges: Judges, rate: int,
                     reference_label: str = REAL) -> dict:
    """The source's distance to the renditions and the pitch-kept ceiling's (its distance, both
    judges and its pitch accuracy against the source), averaged over the sources."""
    from utils.evaluation.metrics import pitch_metrics

    ceilings = [renditions.ceiling(i, s) for i, s in enumerate(sources)]
    per_song = [{"source_mcd_db": renditions.to(i, s), "ceiling_mcd_db": renditions.to(i, c),
                 "ceiling_p_ref": judges.clip.probability(c, reference_label, rate),
                 "ceiling_frames_ref": judges.frames.probability(c, reference_label),
                 "ceiling_pitch": pitch_metrics(s, c, rate)["raw_pitch_accuracy"]}
                for i, (s, c) in enumerate(zip(sources, ceilings))]
    mean = {key: float(np.mean([song[key] for song in per_song])) for key in per_song[0]}
    return {"source_mcd_db": mean["source_mcd_db"],
            "ceiling": {"mcd_db": mean["ceiling_mcd_db"], "p_ref": mean["ceiling_p_ref"],
                        "frames_ref": mean["ceiling_frames_ref"],
                        "raw_pitch_accuracy": mean["ceiling_pitch"]},
            "per_song": per_song}


def json_safe(value):
    """inf/nan -> None so the file is strict JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value

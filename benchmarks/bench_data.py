"""Data pipeline speed, in seconds of audio prepared per second of wall time (x real time).

Generates its own corpus in a temporary folder (by default 10 minutes of 16 kHz 16-bit mono wav
in 20 songs, plus the same length of 44.1 kHz stereo wav to time decoding with resampling), then
times:

- making records from scratch (decode, check, write shards, feature statistics); target
  >= 300x real time for 16 kHz wav, judged on the first run of the process (as the CLI runs,
  including TensorFlow's one-time tracing);
- re-making them with nothing changed (manifest only);
- making them with the world feature (the WORLD analysis of every song, cached beside the
  records; target >= 30x real time; skipped without ``pyworld``);
- loading training patches through tf.data for both features (random windows, shuffle, batch,
  featurise, normalise), counting the audio the patches cover.

Other figures are the median of ``--repeats`` timings (the machine may be shared).

    python benchmarks/bench_data.py [--minutes 10] [--batches 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from common_definitions import Config  # noqa: E402
from data_loader import SongDataLoader  # noqa: E402

MAKE_TARGET = 300.0
# Records making with the world feature's analysis (DIO + StoneMask, CheapTrick, D4C per song).
WORLD_TARGET = 30.0


def write_corpus(folder: str, minutes: float, rate: int, channels: int, songs: int,
                 seed: int) -> float:
    """Write ``songs`` wav files of sung-like tones (vibrato, harmonics, noise); returns seconds."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    seconds = minutes * 60 / songs
    t = np.arange(int(seconds * rate)) / rate
    for i in range(songs):
        f0 = 150 + 250 * rng.random() + 5 * np.sin(2 * np.pi * 5.5 * t)
        phase = 2 * np.pi * np.cumsum(f0) / rate
        tone = sum(np.sin(k * phase) / k for k in range(1, 6))
        signal = 0.2 * tone + 0.01 * rng.standard_normal(len(t))
        data = np.repeat(signal[:, None], channels, axis=1).astype(np.float32)
        sf.write(os.path.join(folder, f"song_{i:03d}.wav"), data, rate, subtype="PCM_16")
    return songs * len(t) / rate


def time_make(config: Config, folder: str, records: str):
    start = time.perf_counter()
    summary = SongDataLoader(config).make([folder], records, log=lambda line: None)
    return summary, time.perf_counter() - start


def make_timings(config: Config, folder: str, tmp: str, repeats: int):
    """Wall times of the first make from scratch (as the CLI runs it: TensorFlow traces its
    functions on first use) and the median of ``repeats`` further ones (fresh folders each)."""
    summary, first = time_make(config, folder, tempfile.mkdtemp(dir=tmp))
    walls = [time_make(config, folder, tempfile.mkdtemp(dir=tmp))[1] for _ in range(repeats)]
    return summary, first, statistics.median(walls)


def median_load(config: Config, records: str, batches: int, repeats: int) -> float:
    """Median wall time of ``batches`` training batches, over ``repeats`` consecutive blocks."""
    iterator = iter(SongDataLoader(config).records(records).training_dataset())
    next(iterator)  # tracing and the first shuffle-buffer fill are start-up, not throughput
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="audio per corpus")
    parser.add_argument("--batches", type=int, default=100, help="batches per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure (median)")
    args = parser.parse_args(argv)
    rows = []  # (stage, seconds of audio, wall seconds, target)
    with tempfile.TemporaryDirectory() as tmp:
        config = Config()
        audio16 = os.path.join(tmp, "wav16k")
        seconds = write_corpus(audio16, args.minutes, 16000, 1, 20, seed=0)
        summary, first, wall = make_timings(config, audio16, tmp, args.repeats)
        rows.append(("make records, 16 kHz mono wav, first run", seconds, first,
                     f">= {MAKE_TARGET:.0f}x"))
        rows.append(("make records, 16 kHz mono wav, later runs", seconds, wall, ""))
        records = os.path.join(tmp, "records16k")
        time_make(config, audio16, records)
        _, wall = time_make(config, audio16, records)
        rows.append(("re-make, nothing changed (no decode)", seconds, wall, ""))

        try:
            import pyworld  # noqa: F401
        except ImportError:
            print("pyworld is not installed: the world feature's records are not timed")
        else:
            world = config.replace(feature="world", window_size=None)
            _, first_world = time_make(world, audio16, tempfile.mkdtemp(dir=tmp))
            rows.append(("make records + WORLD analysis (dio), 16 kHz wav", seconds,
                         first_world, f">= {WORLD_TARGET:.0f}x"))

        audio44 = os.path.join(tmp, "wav44k")
        seconds44 = write_corpus(audio44, args.minutes, 44100, 2, 20, seed=1)
        _, _, wall = make_timings(config, audio44, tmp, args.repeats)
        rows.append(("make records, 44.1 kHz stereo wav -> 16 kHz", seconds44, wall, ""))

        for feature in ("spectrogram", "waveform"):
            feature_config = config.replace(feature=feature, window_size=None)
            wall = median_load(feature_config, records, args.batches, args.repeats)
            covered = args.batches * feature_config.batch_size * feature_config.patch_seconds
            shape = "x".join(map(str, feature_config.input_shape))
            rows.append((f"load {feature} patches ({feature_config.batch_size} x {shape})",
                         covered, wall, ""))

    print(f"data pipeline speed on {os.cpu_count()} CPU cores, {args.minutes:g} min corpus "
          f"({summary.written} songs), median of {args.repeats}")
    print(f"{'stage':<48} {'audio s':>8} {'wall s':>8} {'x real time':>12}  target")
    for name, audio_seconds, wall, target in rows:
        speed = audio_seconds / wall
        print(f"{name:<48} {audio_seconds:>8.0f} {wall:>8.3f} {speed:>11.0f}x  {target}")
    make_speed = rows[0][1] / rows[0][2]
    verdict = "meets" if make_speed >= MAKE_TARGET else "MISSES"
    print(f"records making: {make_speed:.0f}x real time, target {MAKE_TARGET:.0f}x: "
          f"{verdict} the target")
    for name, audio_seconds, wall, _ in rows:
        if "WORLD" in name:
            speed = audio_seconds / wall
            verdict = "meets" if speed >= WORLD_TARGET else "MISSES"
            print(f"records making with the WORLD analysis: {speed:.0f}x real time, target "
                  f"{WORLD_TARGET:.0f}x: {verdict} the target")
    return 0


if __name__ == "__main__":
    sys.exit(main())

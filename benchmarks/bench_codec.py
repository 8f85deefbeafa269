"""Encode + decode speed and memory of whole songs.

1. Real-time factor (seconds of audio per wall second) of the whole-song round trip at the default
   spectrogram Config: STFT -> chunked encode -> decode -> inverse STFT with the source phase, the
   path ``migrate.py`` runs (``utils.runs.codec.Codec.reconstruct``).
2. encode + decode of a batch of R-spec patches, SinGlow-TF2 against ``tfp.bijectors.Glow``,
   timed alternately in one process on the same batch.
3. Peak resident memory (VmHWM) of the whole-song round trip for 1-, 4- and 16-minute songs, each
   in a fresh process, against the 1-minute song.

    python benchmarks/bench_codec.py [--seconds 60] [--minutes 1 4 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from common import (
    REFERENCES,
    ROOT,
    alternate,
    describe_machine,
    glow_forward_flops,
    matmul_ceiling_gflops,
    print_table,
    tfp_glow,
)

import numpy as np
import tensorflow as tf

from common_definitions import Config
from model import Glow
from utils.audio.features import FeatureStats
from utils.data.demo_data import random_melody, synthesize_song
from utils.runs.codec import Codec


def make_song(seconds: float, sampling_rate: int, seed: int = 0) -> np.ndarray:
    """A demo-singer song of ``seconds`` (a one-minute song tiled, so long songs are cheap)."""
    rng = np.random.default_rng(seed)
    unit = min(seconds, 60.0)
    song = synthesize_song(random_melody(rng, unit), "real", sampling_rate, rng)
    reps = int(np.ceil(seconds / unit))
    return np.tile(song, reps)[: int(seconds * sampling_rate)].astype(np.float32)


def default_codec(config: Config) -> Codec:
    """The default model, ActNorm-initialised on a few patches, with identity feature stats."""
    model = Glow.from_config(config)
    model.initialize(tf.random.stateless_normal((4, *config.input_shape), seed=[0, 1]))
    return Codec(model, config, FeatureStats.identity(config))


def real_time_factor(seconds: float, repeats: int) -> dict:
    config = Config()
    codec = default_codec(config)
    song = make_song(seconds, config.sampling_rate)
    codec.reconstruct(song[: config.sampling_rate * 5])  # trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = codec.reconstruct(song)
        times.append(time.perf_counter() - start)
    error = float(np.max(np.abs(out - song)))
    wall = statistics.median(times)
    return {"seconds": seconds, "wall": wall, "rtf": seconds / wall, "max_abs_error": error}


def versus_tfp(repeats: int) -> dict:
    ref = REFERENCES["R-spec"]
    batch = tf.random.stateless_normal((ref.batch_size, *ref.input_shape), seed=[3, 4])
    ours = Glow(input_shape=ref.input_shape, k_glow=ref.k_glow, l_glow=ref.l_glow,
                hidden_channels=ref.hidden_channels)
    ours.initialize(batch)
    glow, _ = tfp_glow(ref)
    glow.inverse(batch)  # TFP's data-dependent ActNorm initialisation
    # Two functions: inside one, TFP's bijector cache would return x for forward(inverse(x))
    # without computing anything.
    tfp_encode = tf.function(glow.inverse)
    tfp_decode = tf.function(glow.forward)

    def run_ours():
        z, _ = ours.encode(batch)
        return ours.decode(z).numpy()

    def run_tfp():
        return tfp_decode(tfp_encode(batch)).numpy()

    times = alternate({"SinGlow-TF2": run_ours, "TFP Glow": run_tfp}, repeats)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_memory_child(minutes: float) -> None:
    """In a fresh process: round-trip a song of ``minutes`` and print peak RSS figures (MiB)."""
    config = Config()
    codec = default_codec(config)
    codec.reconstruct(make_song(5.0, config.sampling_rate))
    baseline = _vm_hwm_mib()
    song = make_song(60.0 * minutes, config.sampling_rate)
    codec.reconstruct(song)
    print(json.dumps({"minutes": minutes, "baseline_mib": baseline, "peak_mib": _vm_hwm_mib()}))


def _vm_hwm_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmHWM not found in /proc/self/status")


def peak_memory(minutes_list) -> list:
    results = []
    for minutes in minutes_list:
        out = subprocess.run([sys.executable, __file__, "--child_minutes", str(minutes)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="song length for the RTF")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child_minutes", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_minutes is not None:
        peak_memory_child(args.child_minutes)
        return

    print(describe_machine())
    rtf = real_time_factor(args.seconds, args.repeats)
    print(f"whole-song encode+decode, default Config ({Config().input_shape}, K={Config().k_glow}, "
          f"L={Config().l_glow}, hidden {Config().hidden_channels}): {rtf['seconds']:.0f} s of "
          f"audio in {rtf['wall']:.2f} s = {rtf['rtf']:.1f}x real time (target >= 30x); "
          f"max |error| {rtf['max_abs_error']:.2e}")

    medians = versus_tfp(args.repeats)
    ref = REFERENCES["R-spec"]
    rows = [[name, f"{seconds * 1000:.0f}", f"{ref.batch_size / seconds:.1f}",
             f"{medians['TFP Glow'] / seconds:.2f}x"] for name, seconds in medians.items()]
    print(f"\nencode+decode of {ref.batch_size} R-spec patches {ref.input_shape} (target >= 2x TFP)")
    print_table(["implementation", "ms/batch", "patches/s", "vs TFP"], rows)
    # Encode and decode each run every convolution once. At the best rate TensorFlow reaches on
    # this machine (a large float32 GEMM), their FLOPs alone bound any float32 implementation.
    conv_flops = 2 * ref.batch_size * glow_forward_flops(
        ref.input_shape, ref.k_glow, ref.l_glow, ref.hidden_channels)
    ceiling = matmul_ceiling_gflops()
    floor_ms = 1000 * conv_flops / (ceiling * 1e9)
    print(f"float32 floor: encode+decode is {conv_flops / 1e9:.1f} GFLOP of convolutions, "
          f"{floor_ms:.0f} ms at the measured matmul ceiling ({ceiling:.0f} GFLOP/s); "
          f"2x TFP would need {medians['TFP Glow'] * 500:.0f} ms")

    memory = peak_memory(args.minutes)
    base = memory[0]["peak_mib"]
    rows = [[f"{m['minutes']:g}", f"{m['baseline_mib']:.0f}", f"{m['peak_mib']:.0f}",
             f"{m['peak_mib'] / base:.2f}x"] for m in memory]
    print("\npeak resident memory of the whole-song round trip (target: 16 min <= 1.2x 1 min)")
    print_table(["minutes", "after warm-up MiB", "peak MiB", "vs first"], rows)


if __name__ == "__main__":
    main()

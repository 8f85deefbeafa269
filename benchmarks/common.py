"""Shared pieces of the benchmarks: the reference configurations, TFP's Glow, FLOP counts, timing.

FLOP convention: a multiply-add counts as 2 FLOPs; a training step counts 3x the forward
convolution FLOPs (forward, gradient w.r.t. inputs, gradient w.r.t. weights). Only convolutions
(coupling networks, priors, invertible 1x1 convs) are counted; element-wise work is free.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import tensorflow as tf  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Reference:
    """A reference configuration of the performance issue."""

    name: str
    input_shape: tuple
    k_glow: int
    l_glow: int
    hidden_channels: int
    batch_size: int


REFERENCES: Dict[str, Reference] = {
    "R-small": Reference("R-small", (32, 64, 1), 4, 2, 128, 32),
    "R-spec": Reference("R-spec", (64, 128, 1), 8, 3, 256, 16),
}


def glow_forward_flops(input_shape, k_glow, l_glow, hidden_channels) -> float:
    """Convolution FLOPs of one forward pass of one example (SinGlow's and TFP's Glow alike)."""
    height, width, channels = input_shape
    time_only = width == 1
    kernel = 3 if time_only else 9
    flops = 0.0
    for level in range(l_glow):
        height //= 2
        width = width if time_only else width // 2
        channels *= 2 if time_only else 4
        positions = height * width
        half = channels // 2
        per_step = (
            kernel * half * hidden_channels          # k x k conv in
            + hidden_channels * hidden_channels       # 1x1 conv
            + kernel * hidden_channels * 2 * half     # zero-initialised k x k conv out
            + channels * channels                     # invertible 1x1 conv
        )
        flops += 2.0 * positions * per_step * k_glow
        if level < l_glow - 1:
            flops += 2.0 * positions * kernel * half * 2 * half  # split prior conv
            channels = half
    return flops


def conv_ceiling_gflops(repeats: int = 5) -> float:
    """Measured GFLOP/s of TensorFlow's own 3x3 conv2d (256 -> 256 channels) on this machine."""
    x = tf.random.normal((16, 32, 64, 256))
    w = tf.random.normal((3, 3, 256, 256)) * 0.02
    conv = tf.function(lambda a: tf.nn.conv2d(a, w, 1, "SAME"))
    flops = 2.0 * 16 * 32 * 64 * 9 * 256 * 256
    seconds = median_seconds(lambda: conv(x).numpy(), repeats=repeats, warmup=2)
    return flops / seconds / 1e9


def matmul_ceiling_gflops(repeats: int = 5) -> float:
    a = tf.random.normal((2048, 2048))
    mm = tf.function(lambda m: m @ m)
    return 2.0 * 2048**3 / median_seconds(lambda: mm(a).numpy(), repeats, 2) / 1e9


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternate(fns: Dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> Dict[str, List[float]]:
    """Time each function ``repeats`` times, interleaved, after ``warmup`` calls of each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def tfp_glow(ref: Reference, seed: int = 0):
    """TFP's Glow bijector at a reference configuration, with GlowDefaultNetwork couplings.

    Returns ``(bijector, latent_distribution)``; ``log p(x) = base.log_prob(glow.inverse(x)) +
    glow.inverse_log_det_jacobian(x)`` in nats.
    """
    import tensorflow_probability as tfp

    tfb, tfd = tfp.bijectors, tfp.distributions
    glow = tfb.Glow(
        output_shape=ref.input_shape,
        num_glow_blocks=ref.l_glow,
        num_steps_per_block=ref.k_glow,
        coupling_bijector_fn=lambda shape: tfb.GlowDefaultNetwork(shape, num_hidden=ref.hidden_channels),
        exit_bijector_fn=tfb.GlowDefaultExitNetwork,
        seed=seed,
    )
    z_shape = glow.inverse_event_shape(ref.input_shape)
    base = tfd.Sample(tfd.Normal(0.0, 1.0), z_shape)
    return glow, base


def print_table(header: List[str], rows: List[List[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = "  ".join("{:>%d}" % w for w in widths)
    print(fmt.format(*header))
    for row in rows:
        print(fmt.format(*row))


def describe_machine() -> str:
    devices = tf.config.list_physical_devices()
    gpus = [d for d in devices if d.device_type == "GPU"]
    kind = f"{len(gpus)} GPU(s)" if gpus else f"CPU, {os.cpu_count()} cores"
    return f"TensorFlow {tf.__version__}, {kind}"

"""Memory of the training step and of an inference call against :mod:`utils.resources`' estimates.

``train.py`` and ``migrate.py`` refuse a size whose estimated memory (a lower bound) is beyond the
machine's. This script checks that the estimate is a lower bound and how far below the real peak
it stays: each size runs in a fresh process, which builds the model, runs one step at batch 1
(compiling it), records its resident memory, then runs the measured step and reports the growth
of its peak resident memory (``ru_maxrss``) over that.

    python benchmarks/bench_memory.py [--sizes 8x64 32x64 32x128]

Sizes are ``BATCHxWINDOW`` (spectrogram patches of WINDOW frames x 256 bins; K=4, L=3, 64 hidden
channels unless given). A ratio measured/estimate at or above 1 everywhere means the refusal can
never refuse a job that fits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = r"""
import json, resource, sys
import numpy as np
import tensorflow as tf
from common_definitions import Config
from model import Glow

config = Config(**json.loads(sys.argv[1]))
mode, batch = sys.argv[2], int(sys.argv[3])
model = Glow.from_config(config)
optimizer = tf.keras.optimizers.Adam(1e-4)

@tf.function(reduce_retracing=True)
def train(x):
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(model.log_prob(x))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                  model.trainable_variables))
    return loss

@tf.function(reduce_retracing=True)
def encode(x):
    return model.encode(x)[0]

step = train if mode == "train" else encode
shape = config.input_shape if mode == "train" else (int(sys.argv[4]),) + config.input_shape[1:]
def batch_of(n):
    return tf.random.normal((n,) + tuple(shape))
step(batch_of(1))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
x = batch_of(batch)
step(x)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grown": (peak - base) * 1024 - x.numpy().nbytes}))
"""


def measure(config_fields: dict, mode: str, batch: int, steps: int = 0) -> int:
    """Growth of the peak resident memory, in bytes, of one step in a fresh process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(config_fields), mode,
                          str(batch), str(steps)], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True).stdout
    return int(json.loads(out.strip().splitlines()[-1])["grown"])


def main() -> None:
    sys.path.insert(0, ROOT)
    from common_definitions import Config
    from utils.resources import GIB, inference_call_bytes, training_step_bytes

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["8x64", "32x64", "16x128"])
    parser.add_argument("--k_glow", type=int, default=4)
    parser.add_argument("--l_glow", type=int, default=3)
    parser.add_argument("--hidden_channels", type=int, default=64)
    args = parser.parse_args()
    print(f"{'job':<34} {'estimate GiB':>12} {'measured GiB':>12} {'measured/estimate':>18}")
    for size in args.sizes:
        batch, window = (int(v) for v in size.split("x"))
        fields = dict(window_size=window, batch_size=batch, k_glow=args.k_glow,
                      l_glow=args.l_glow, hidden_channels=args.hidden_channels)
        config = Config(**fields)
        rows = [(f"train step {batch} x {window} frames", training_step_bytes(config),
                 measure(fields, "train", batch)),
                (f"encode {batch} chunks x {4 * window} frames",
                 inference_call_bytes(config, 4 * window, batch),
                 measure(fields, "encode", batch, 4 * window))]
        for job, estimate, measured in rows:
            print(f"{job:<34} {estimate / GIB:>12.3f} {measured / GIB:>12.3f} "
                  f"{measured / estimate:>18.2f}")


if __name__ == "__main__":
    main()

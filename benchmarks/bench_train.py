"""Training speed of SinGlow-TF2's Glow against ``tfp.bijectors.Glow`` at the reference configs.

Both models get the same batches; their steps (log-likelihood + gradient + Adam update) are timed
alternately in one process after warm-up. SinGlow-TF2 is timed twice: as the Trainer's compiled
step (what ``train.py`` runs) and as a plain ``Glow.log_prob`` + ``GradientTape`` + Keras Adam
step (what an outside harness would write). The median of the repetitions is reported, with the
ratio, the seconds of audio trained per wall second, and the achieved GFLOP/s against the conv2d
ceiling measured by this same script.

    python benchmarks/bench_train.py [--configs R-small R-spec] [--repeats 7]
"""

from __future__ import annotations

import argparse
import math
import statistics

from common import (
    REFERENCES,
    alternate,
    conv_ceiling_gflops,
    describe_machine,
    glow_forward_flops,
    matmul_ceiling_gflops,
    print_table,
    tfp_glow,
)

import tempfile

import tensorflow as tf

from common_definitions import Config
from pipeline import Trainer
from utils.features import FeatureStats
from utils.training_data import TrainingData


def reference_config(ref, workdir: str) -> Config:
    """A spectrogram Config whose patch has exactly the reference input shape."""
    height, width, _ = ref.input_shape
    return Config(n_fft=2 * (width - 1), hop_length=width // 2, window_size=height,
                  k_glow=ref.k_glow, l_glow=ref.l_glow, hidden_channels=ref.hidden_channels,
                  batch_size=ref.batch_size, learning_rate=1e-4, checkpoint_dir=workdir,
                  logdir=workdir, records_dir=workdir, output_dir=workdir)


def our_step(ref, batch):
    """One call of the Trainer's compiled loop for one step: the step ``train.py`` runs."""
    config = reference_config(ref, tempfile.mkdtemp(prefix="bench_train_"))
    trainer = Trainer(config, log=lambda message: None, progress=False,
                      data=TrainingData(None, FeatureStats.identity(config)))
    assert trainer.model.image_shape == tuple(ref.input_shape)
    trainer.initialize(batch)
    iterator = iter(trainer.distribute(tf.data.Dataset.from_tensors(batch).repeat()))
    return lambda: trainer.train_steps(iterator, 1)


def plain_step(ref, batch):
    """``Glow(...)``'s log_prob + gradient + Keras Adam, as an outside harness would write it."""
    import keras

    from model import Glow

    model = Glow(input_shape=ref.input_shape, k_glow=ref.k_glow, l_glow=ref.l_glow,
                 hidden_channels=ref.hidden_channels)
    model.initialize(batch)
    optimizer = keras.optimizers.Adam(1e-4)
    dims = math.prod(ref.input_shape)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model.log_prob(x)) / (dims * math.log(2.0))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return lambda: step(batch).numpy()


def tfp_step(ref, batch):
    import tf_keras

    glow, base = tfp_glow(ref)
    dims = math.prod(ref.input_shape)
    # Data-dependent ActNorm initialisation happens on the first call, outside the timings.
    glow.inverse(batch)
    optimizer = tf_keras.optimizers.Adam(1e-4)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            log_prob = base.log_prob(glow.inverse(x)) + glow.inverse_log_det_jacobian(x, event_ndims=3)
            loss = -tf.reduce_mean(log_prob) / (dims * math.log(2.0))
        variables = glow.trainable_variables
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    return lambda: step(batch).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(REFERENCES), choices=list(REFERENCES))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--hop_seconds", type=float, default=256 / 16000,
                        help="seconds of audio per time step (default: hop 256 at 16 kHz)")
    args = parser.parse_args()

    print(describe_machine())
    conv_ceiling = conv_ceiling_gflops()
    print(f"ceiling: conv2d 3x3 {conv_ceiling:.0f} GFLOP/s, matmul {matmul_ceiling_gflops():.0f} GFLOP/s")
    rows = []
    for name in args.configs:
        ref = REFERENCES[name]
        batch = tf.random.stateless_normal((ref.batch_size, *ref.input_shape), seed=[1, 2])
        fns = {"SinGlow-TF2": our_step(ref, batch), "Glow.log_prob+Adam": plain_step(ref, batch),
               "TFP Glow": tfp_step(ref, batch)}
        times = alternate(fns, args.repeats)
        train_flops = 3.0 * glow_forward_flops(ref.input_shape, ref.k_glow, ref.l_glow,
                                               ref.hidden_channels) * ref.batch_size
        medians = {k: statistics.median(v) for k, v in times.items()}
        audio_per_batch = ref.batch_size * ref.input_shape[0] * args.hop_seconds
        for impl, seconds in medians.items():
            gflops = train_flops / seconds / 1e9
            rows.append([
                name, impl, f"{seconds * 1000:.0f}", f"{ref.batch_size / seconds:.1f}",
                f"{audio_per_batch / seconds:.1f}", f"{gflops:.0f}",
                f"{100 * gflops / conv_ceiling:.0f}%",
                f"{medians['TFP Glow'] / seconds:.2f}x",
            ])
    print_table(["config", "implementation", "ms/step", "examples/s", "audio s/s", "GFLOP/s",
                 "of ceiling", "vs TFP"], rows)


if __name__ == "__main__":
    main()

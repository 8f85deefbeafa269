"""Training speed of SinGlow-TF2's Glow against ``tfp.bijectors.Glow`` at the reference configs.

Both models get the same batches; their steps (log-likelihood + gradient + Adam update) are timed
alternately in one process after warm-up. SinGlow-TF2 is timed twice: as the Trainer's compiled
step (what ``train.py`` runs) and as a plain ``Glow.log_prob`` + ``GradientTape`` + Keras Adam
step (what an outside harness would write). The median of the repetitions is reported, with the
ratio, the seconds of audio trained per wall second, and the achieved GFLOP/s against the conv2d
ceiling measured by this same script.

    python benchmarks/bench_train.py [--configs R-small R-spec] [--repeats 7]

``--precision bf16`` (or ``fp16``) measures mixed-precision training instead, in one run: two
Trainers of the same model (default K=4, L=3, 64 hidden channels, 64 x 256 spectrogram patches,
batch 16) from the same initial weights on the same batches of the same songs (the demo corpus
generated under ``--corpus_seed``, or ``--data_dir`` folders), one in float32 and one with
``--mixed_precision``, trained ``--steps`` steps each in alternating compiled calls of
``--chunk`` steps (so both see the same machine load). It reports each one's steps/s (over all
calls but the first, which compiles) and the validation bits/dim of the held-out songs (``--validation_split``)
computed by the float32 model, as training would report it, and the ratio and the gap:

    python benchmarks/bench_train.py --precision bf16 [--steps 300] [--hidden_channels 64]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

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
from utils.audio.features import FeatureStats
from utils.training.data import TrainingData


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


def precision_config(args, workdir: str, mode: str) -> Config:
    """The benchmark's Config for ``--mixed_precision mode`` (its own checkpoint folder)."""
    folder = os.path.join(workdir, mode)
    return Config(k_glow=args.k_glow, l_glow=args.l_glow, hidden_channels=args.hidden_channels,
                  batch_size=args.batch_size, learning_rate=args.learning_rate,
                  warmup_steps=args.warmup_steps, validation_split=args.validation_split,
                  data_dirs=tuple(args.data_dir), records_dir=os.path.join(workdir, "records"),
                  checkpoint_dir=os.path.join(folder, "ck"), logdir=os.path.join(folder, "logs"),
                  output_dir=folder, mixed_precision=mode, log_every=args.chunk,
                  epochs=1, steps_per_epoch=args.steps)


def compare_precision(args) -> None:
    """float32 against ``args.precision`` training: steps/s and float32 validation bits/dim."""
    workdir = tempfile.mkdtemp(prefix="bench_precision_")
    if not args.data_dir:
        from utils.data.demo_data import make_demo_corpus

        corpus = make_demo_corpus(os.path.join(workdir, "audio"), seed=args.corpus_seed)
        args.data_dir = [os.path.dirname(paths[0]) for paths in corpus.values()]
    modes = ["off", args.precision]
    trainers, iterators = {}, {}
    for mode in modes:
        trainer = Trainer(precision_config(args, workdir, mode), log=lambda message: None,
                          progress=False)
        assert trainer.steering.validates, "the benchmark needs held-out songs"
        trainer.initialize()
        iterators[mode] = iter(trainer.distribute(trainer.training_dataset(0)))
        trainer.train_steps(iterators[mode], args.chunk)  # traces and compiles; not timed
        trainers[mode] = trainer
    seconds = {mode: [] for mode in modes}
    for _ in range(args.steps // args.chunk - 1):
        for mode in modes:
            began = time.perf_counter()
            metrics = trainers[mode].train_steps(iterators[mode], args.chunk)
            seconds[mode].append(time.perf_counter() - began)
            assert metrics.applied == args.chunk, (mode, metrics)
    rows, results = [], {}
    for mode in modes:
        validation = trainers[mode].steering.validator()
        speed = args.chunk * len(seconds[mode]) / sum(seconds[mode])
        results[mode] = (speed, validation.bits_per_dim)
        rows.append([mode, str(trainers[mode].global_step), f"{speed:.2f}",
                     f"{args.chunk / statistics.median(seconds[mode]):.2f}",
                     f"{validation.bits_per_dim:.4f}", str(validation.patches)])
    config = trainers["off"].config
    print(f"K={config.k_glow} L={config.l_glow} hidden={config.hidden_channels}, patches "
          f"{config.input_shape}, batch {config.batch_size}: {trainers['off'].global_step} steps "
          f"each ({args.chunk} untimed, then timed), validation bits/dim on "
          f"{validation.patches} held-out patches")
    print_table(["precision", "steps", "steps/s", "steps/s (median call)", "val bits/dim",
                 "val patches"], rows)
    (fast, bits), (base, base_bits) = results[args.precision], results["off"]
    print(f"{args.precision}: {fast / base:.2f}x the float32 steps/s; validation bits/dim "
          f"{bits - base_bits:+.4f} from float32's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(REFERENCES), choices=list(REFERENCES))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--hop_seconds", type=float, default=256 / 16000,
                        help="seconds of audio per time step (default: hop 256 at 16 kHz)")
    mixed = parser.add_argument_group("mixed precision (--precision)")
    mixed.add_argument("--precision", choices=("bf16", "fp16"),
                       help="compare float32 training with this --mixed_precision instead")
    mixed.add_argument("--steps", type=int, default=300, help="steps of each (default 300)")
    mixed.add_argument("--chunk", type=int, default=20, help="steps per compiled call")
    mixed.add_argument("--k_glow", type=int, default=4)
    mixed.add_argument("--l_glow", type=int, default=3)
    mixed.add_argument("--hidden_channels", type=int, default=64)
    mixed.add_argument("--batch_size", type=int, default=16)
    mixed.add_argument("--learning_rate", type=float, default=1e-3)
    mixed.add_argument("--warmup_steps", type=int, default=100)
    mixed.add_argument("--validation_split", type=float, default=0.2)
    mixed.add_argument("--data_dir", action="append", default=[],
                       help="song folders (default: the demo corpus under --corpus_seed)")
    mixed.add_argument("--corpus_seed", type=int, default=2026,
                       help="seed of the generated demo corpus (not the project's seed 0)")
    args = parser.parse_args()

    print(describe_machine())
    if args.precision:
        compare_precision(args)
        return
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

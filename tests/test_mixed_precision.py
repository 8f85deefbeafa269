"""Mixed-precision training (utils/training/precision.py): the train step's convolutions in bf16 or
fp16, everything else float32, and inference exactly float32 whatever precision trained the
weights."""

import numpy as np
import pytest
import tensorflow as tf

from common_definitions import Config
from model import Glow
from pipeline import Trainer
from utils.audio.features import FeatureStats
from utils.runs.run_folder import load_for_inference
from utils.training.data import TrainingData
from utils.training.precision import GROWTH_INTERVAL, INITIAL_LOSS_SCALE, MixedPrecision

SHAPE = (16, 32, 1)


def batch(seed=0, n=8):
    return tf.random.stateless_normal((n, *SHAPE), seed=[seed, 1])


def nudged_glow(**kwargs):
    """A tiny Glow, initialised, with every weight moved off its (partly zero) start."""
    model = Glow(input_shape=SHAPE, k_glow=2, l_glow=2, hidden_channels=8, **kwargs)
    singer = tf.constant([0, 1] * 4) if kwargs.get("num_singers") else None
    model.initialize(batch(), singer)
    rng = np.random.default_rng(0)
    for v in model.trainable_variables:
        v.assign(v + 0.05 * rng.standard_normal(v.shape).astype(np.float32))
    return model, singer


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
@pytest.mark.parametrize("conditional", [False, True])
def test_low_precision_convolutions_change_the_step_a_little_and_nothing_else(dtype, conditional):
    model, singer = nudged_glow(**(dict(num_singers=2, singer_dims=4) if conditional else {}))
    x = batch(1)
    z, logdet = model.encode(x, singer)
    with tf.GradientTape(persistent=True) as tape:
        z_low, logdet_low = model.train_encode(x, singer, compute_dtype=dtype)
        z_32, logdet_32 = model.train_encode(x, singer, compute_dtype=tf.float32)
        loss_low = -tf.reduce_mean(logdet_low - 0.5 * tf.reduce_sum(z_low ** 2, axis=1))
        loss_32 = -tf.reduce_mean(logdet_32 - 0.5 * tf.reduce_sum(z_32 ** 2, axis=1))
    assert z_low.dtype == logdet_low.dtype == tf.float32
    np.testing.assert_allclose(z_32, z, atol=1e-5)  # train_encode in float32 is encode
    np.testing.assert_allclose(logdet_32, logdet, rtol=1e-5, atol=1e-3)
    # Really computed in low precision: not float32's values, but close to them.
    error = float(tf.reduce_max(tf.abs(z_low - z)))
    assert 1e-5 < error < (0.05 if dtype == tf.bfloat16 else 0.01), error
    # Relative to the batch's scale: one example's log-det can sit near zero.
    np.testing.assert_allclose(logdet_low, logdet, rtol=0.01,
                               atol=0.01 * float(np.abs(logdet).max()))
    # The gradients (through the GEMM route of the thin couplings too) are float32 and close.
    low = tape.gradient(loss_low, model.trainable_variables)
    full = tape.gradient(loss_32, model.trainable_variables)
    assert all(g is not None and g.dtype == tf.float32 for g in low)
    flat = lambda gs: tf.concat([tf.reshape(g, [-1]) for g in gs], 0)  # noqa: E731
    relative = float(tf.norm(flat(low) - flat(full)) / tf.norm(flat(full)))
    assert 0 < relative < 0.05, relative


def tiny(tmp_path, name, **changes):
    return Config(n_fft=62, hop_length=16, window_size=16, k_glow=2, l_glow=2,
                  hidden_channels=8, batch_size=8, warmup_steps=2, learning_rate=2e-3,
                  checkpoint_dir=str(tmp_path / name), records_dir=str(tmp_path / "none"),
                  **changes)


def test_a_bf16_trained_model_is_float32_and_exactly_invertible(tmp_path):
    batches = [batch(seed) for seed in range(4)]
    trained = {}
    for mode in ("off", "bf16"):
        config = tiny(tmp_path, mode, mixed_precision=mode)
        trainer = Trainer(config, log=lambda _: None, progress=False,
                          data=TrainingData(None, FeatureStats.identity(config)))
        trainer.initialize(batches[0])
        metrics = trainer.train_steps(
            iter(trainer.distribute(tf.data.Dataset.from_tensor_slices(tf.stack(batches)))), 4)
        assert metrics.applied == 4 and np.isfinite(metrics.bits_per_dim)
        trained[mode] = trainer
    bf16, f32 = trained["bf16"], trained["off"]
    # float32 variables (and ActNorm's bool flags), as the checkpoint holds them
    assert {v.numpy().dtype for v in bf16.model.variables} == {np.dtype(np.float32), np.dtype(bool)}
    moved = max(float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in
                zip(bf16.model.trainable_variables, f32.model.trainable_variables))
    assert 0 < moved < 0.05, moved  # the same training, in another precision
    # Saved and loaded as every run is, it encodes and decodes in float32, exactly.
    bf16.run_folder.write_run_files(bf16.stats)
    bf16.save()
    codec = load_for_inference(bf16.config.checkpoint_dir)
    x = batch(7)
    z, logdet = codec.model.encode(x)
    np.testing.assert_allclose(codec.model.decode(z), x, atol=2e-5)
    np.testing.assert_allclose(z, bf16.model.encode(x)[0], atol=1e-6)
    # The float32 encode of the trained model is not the bf16 step's.
    assert float(tf.reduce_max(tf.abs(
        bf16.model.train_encode(x, compute_dtype=tf.bfloat16)[0] - z))) > 1e-5


def test_fp16_loss_scaling_skips_an_overflow_halves_the_scale_and_grows_it_back(tmp_path):
    config = tiny(tmp_path, "fp16", mixed_precision="fp16", max_nonfinite_steps=2)
    trainer = Trainer(config, log=lambda _: None, progress=False,
                      data=TrainingData(None, FeatureStats.identity(config)))
    precision = trainer.precision
    assert float(precision.loss_scale.numpy()) == INITIAL_LOSS_SCALE
    trainer.initialize(batch())
    before = [v.numpy().copy() for v in trainer.model.trainable_variables]
    iterator = iter(trainer.distribute(tf.data.Dataset.from_tensors(batch()).repeat()))
    precision.loss_scale.assign(3e38)  # the scaled loss overflows
    metrics = trainer.train_steps(iterator, 3)
    # Three overflows: skipped (weights untouched), the scale halved each time, and not one of
    # them counts toward max_nonfinite_steps (2), so training did not stop.
    assert metrics.skipped == 3 and metrics.applied == 0
    assert float(precision.loss_scale.numpy()) == pytest.approx(3e38 / 8, rel=1e-6)
    assert int(trainer._nonfinite_run.numpy()) == 0
    for new, old in zip([v.numpy() for v in trainer.model.trainable_variables], before):
        np.testing.assert_array_equal(new, old)
    precision.loss_scale.assign(2.0 ** 10)
    metrics = trainer.train_steps(iterator, 2)
    assert metrics.applied == 2 and np.isfinite(metrics.bits_per_dim)
    assert float(precision.loss_scale.numpy()) == 2.0 ** 10


def test_the_loss_scale_policy():
    precision = MixedPrecision("fp16")
    loss = tf.constant(2.0)
    assert float(precision.scale_loss(loss)) == 2.0 * INITIAL_LOSS_SCALE
    assert float(precision.unscale([precision.scale_loss(loss)])[0]) == 2.0
    precision.update(tf.constant(False))
    assert float(precision.loss_scale.numpy()) == INITIAL_LOSS_SCALE / 2
    precision._good_steps.assign(GROWTH_INTERVAL - 1)
    precision.update(tf.constant(True))
    assert float(precision.loss_scale.numpy()) == INITIAL_LOSS_SCALE
    assert int(precision.divergence_count(tf.constant(1.0))) == 0  # an overflow
    assert int(precision.divergence_count(tf.constant(np.nan))) == 1  # a non-finite loss
    precision.loss_scale.assign(1.0)
    precision.update(tf.constant(False))
    assert float(precision.loss_scale.numpy()) == 1.0  # never below 1
    assert int(precision.divergence_count(tf.constant(1.0))) == 1
    for mode in ("off", "bf16"):  # no scaling without fp16
        plain = MixedPrecision(mode)
        assert plain.scale_loss(loss) is loss and plain.divergence_count(loss) == 1
    with pytest.raises(ValueError, match="mixed_precision"):
        MixedPrecision("fp8")

"""Mixed-precision training (``--mixed_precision off|bf16|fp16``): the compute dtype of the train
step's convolutions, and fp16's dynamic loss scaling.

What runs in low precision, and only inside the compiled train step
(:meth:`model.Glow.train_encode`): the inputs, kernels and biases of every coupling network's
three convolutions (also on the GEMM route of :mod:`utils.flow.ops`, whose ops accept bf16 and
fp16) and of every split prior's convolution; the conditioning of a conditional model is computed
in float32 and cast. Each network's and prior's output is cast back to float32 before it becomes
a shift, a scale or a Gaussian's mean and log-scale, so the rest stays float32: the variables
(and hence the checkpoints), ActNorm, the invertible 1x1 convolutions, every log-determinant, the
whitening, the Gaussian log-density, the loss, the gradient all-reduce, clipping and Adam.

Nothing outside the train step changes: validation, the audio summaries, ``load_for_inference``
and every ``encode``/``decode`` after training run the float32 graph of :meth:`model.Glow.encode`,
so a model trained in bf16 is exactly as invertible as one trained in float32. (The low-precision
path is a separate method, never a trace of ``encode``, so no cached graph can mix them up.)

fp16 has bf16's speed on GPUs but a narrow exponent range: small gradients would underflow. The
loss is therefore multiplied by a loss scale before the gradient and the gradients divided by it
after (before the all-reduce, so clipping and Adam see true gradients). The scale starts at
``2**15``; a step whose loss is finite but whose gradient is not (an overflow of the scaled
backward pass) is skipped like any non-finite step (counted in ``skipped_steps``, Adam untouched)
but halves the scale and does not count toward ``max_nonfinite_steps`` while the scale is above 1;
after ``GROWTH_INTERVAL`` applied steps in a row the scale doubles. The scale is not
checkpointed: a resumed run finds it again within a few skipped steps. (Keras'
``LossScaleOptimizer`` does the same; the trainer's own step and ``SummedGradientAdam`` need it
written out.) bf16 has float32's exponent range and needs no scaling.

The modes are for GPUs and CPUs with native bf16 (AVX512-BF16 / AMX with oneDNN). On a CPU
without it TensorFlow falls back to Eigen, whose bf16 convolution gradients are about 20x slower
than float32's: bf16 training is then about 3x *slower* (``benchmarks/bench_train.py --precision
bf16`` measures it; design/training.md has the figures).
"""

from __future__ import annotations

import tensorflow as tf

COMPUTE_DTYPES = {"off": tf.float32, "bf16": tf.bfloat16, "fp16": tf.float16}
INITIAL_LOSS_SCALE = 2.0 ** 15
GROWTH_INTERVAL = 1000


class MixedPrecision:
    """The precision policy of one trainer; create it inside the strategy's scope (fp16 makes
    its loss-scale variables there).

    Attributes:
        mode: ``"off"``, ``"bf16"`` or ``"fp16"``.
        dtype: the compute dtype of the step's convolutions (float32 when off).
        loss_scale: fp16 only: the current loss scale (a float32 variable).
    """

    def __init__(self, mode: str = "off"):
        if mode not in COMPUTE_DTYPES:
            raise ValueError(f"mixed_precision must be one of {tuple(COMPUTE_DTYPES)}, got {mode!r}")
        self.mode = mode
        self.dtype = COMPUTE_DTYPES[mode]
        self.scaled = mode == "fp16"
        if self.scaled:
            kept = dict(trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.loss_scale = tf.Variable(INITIAL_LOSS_SCALE, name="loss_scale", **kept)
            self._good_steps = tf.Variable(0, dtype=tf.int64, name="good_steps", **kept)

    def encode(self, model, x, singer=None, context=None):
        """The train step's ``(z (B, D), logdet (B,) nats)`` of ``x``: :meth:`Glow.encode` when
        off, else :meth:`Glow.train_encode` in :attr:`dtype` (``context``: a parallel model's
        source frames)."""
        if self.dtype == tf.float32:
            return model.encode(x, singer, context)
        return model.train_encode(x, singer, compute_dtype=self.dtype, context=context)

    def scale_loss(self, loss: tf.Tensor) -> tf.Tensor:
        """The loss the gradient is taken of (multiplied by the loss scale for fp16)."""
        return loss * self.loss_scale if self.scaled else loss

    def unscale(self, grads):
        """The true gradients of the scaled loss's ``grads`` (divided by the loss scale)."""
        if not self.scaled:
            return grads
        return [g / self.loss_scale for g in grads]

    def divergence_count(self, bits_per_dim: tf.Tensor):
        """What a skipped step adds to the run of consecutive non-finite steps: 1, except 0 for
        an fp16 overflow (finite loss ``bits_per_dim``, loss scale still above 1)."""
        if not self.scaled:
            return 1
        overflow = tf.math.is_finite(bits_per_dim) & (self.loss_scale > 1.0)
        return tf.where(overflow, tf.constant(0, tf.int64), tf.constant(1, tf.int64))

    def update(self, finite: tf.Tensor) -> None:
        """After a step (cross-replica context): halve the loss scale after a non-finite step
        (not below 1), double it after ``GROWTH_INTERVAL`` finite ones in a row."""
        if not self.scaled:
            return
        good = tf.where(finite, self._good_steps + 1, tf.constant(0, tf.int64))
        grow = good >= GROWTH_INTERVAL
        scale = tf.where(finite, tf.where(grow, self.loss_scale * 2.0, self.loss_scale),
                         tf.maximum(self.loss_scale * 0.5, 1.0))
        self.loss_scale.assign(scale)
        self._good_steps.assign(tf.where(grow, tf.constant(0, tf.int64), good))

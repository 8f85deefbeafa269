"""The optimizer of SinGlow-TF2's trainer: Keras Adam with a linear warm-up, fed gradients that the
train step has already summed over the replicas."""

from __future__ import annotations

import keras
import tensorflow as tf


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up: ``peak * min(1, (t + 1) / warmup_steps)`` at optimizer update ``t``.

    ``t`` counts applied updates (``optimizer.iterations``), so skipped steps do not advance the
    warm-up. ``warmup_steps == 0`` gives a constant ``peak``.
    """

    def __init__(self, peak: float, warmup_steps: int):
        super().__init__()
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        if self.warmup_steps <= 0:
            return tf.constant(self.peak, tf.float32)
        progress = (tf.cast(step, tf.float32) + 1.0) / float(self.warmup_steps)
        return self.peak * tf.minimum(1.0, progress)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps}


class SummedGradientAdam(keras.optimizers.Adam):
    """Adam that receives gradients already summed over the replicas.

    The train step all-reduces the gradients itself: it needs the global gradient norm for
    clipping and a finite flag that every replica agrees on *before* deciding to apply. Keras'
    TensorFlow optimizer would sum them over the replicas a second time (doubling them with two
    replicas); this hook makes that sum the identity. Everything else is stock Keras Adam.
    """

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


if not hasattr(keras.optimizers.Adam, "_all_reduce_sum_gradients"):  # pragma: no cover
    raise ImportError(
        f"keras {keras.__version__} has no Adam._all_reduce_sum_gradients; SummedGradientAdam "
        "needs the Keras pinned in requirements.txt"
    )

"""ContextNorm: the first layer of a parallel model, a per-frame normalisation given the source.

A parallel model (``--parallel``) is a flow of the target singer's frames ``x (B, T, W, C)``
conditioned on the source singer's time-aligned frames ``context (B, T, W, C)`` (its rendition of
the same melody). ContextNorm standardises every target frame by a mean and a scale predicted
from the source frames around it:

    y = (x - shift) * exp(-logs),   [shift, logs] = f(context, c),   logdet = -sum(logs)

so the rest of the flow models what the source does not predict. ``f`` is a sum of

- a **linear map** of the ``taps`` source frames centred on each target frame, one per singer,
  mixed by the conditioning vector ``c`` (B, cond_dims) as SingerNorm mixes its moments (each
  singer's embedding selects its own map; it is linear in ``c``). At initialisation it is solved
  by ridge regression of the target frames on the source frames of the initialisation batches
  (:meth:`ContextNorm.initialize`), its log-scale set to the log of the residuals' standard
  deviation; training then refines it by maximum likelihood;
- a **network** (``taps``-frame convolution of the source frames and ``c`` -> ReLU -> 1x1 ->
  ReLU -> zero-initialised 1x1), which starts at zero and learns what the linear map misses.

Nothing here depends on ``x``: under every context and singer the layer is an affine bijection
of ``x`` with log-determinant ``-sum(logs)``. Like ActNorm and SingerNorm, the ``initialized``
flag is a variable, so a restored model is never re-initialised.

Shapes: x, context (B, T, W, C) with any T; c (B, cond_dims); the singer table (S, cond_dims).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import tensorflow as tf
import keras

from utils.flow.layers import FlowLayer

_LOG_2PI = float(np.log(2.0 * np.pi))
# Source frames each target frame is predicted from (centred): 9 hops, 144 ms at the defaults.
CONTEXT_TAPS = 9
# Ridge penalty of the initial linear map, per initialisation frame (normalised feature units).
RIDGE_PER_FRAME = 1e-3
# The log-scale is kept in [-LOGS_LIMIT, LOGS_LIMIT] (a standard deviation between e^-5 and e^5
# normalised units): a scale that collapses would make the inverse blow up.
LOGS_LIMIT = 5.0


def context_windows(context: np.ndarray, taps: int = CONTEXT_TAPS) -> np.ndarray:
    """``(B, T, W, C)`` -> ``(B * T, taps * W * C)``: each frame's ``taps`` centred neighbours,
    zero beyond the patch (as the layer's convolution pads)."""
    context = np.asarray(context, np.float64)
    batch, steps = context.shape[:2]
    flat = context.reshape(batch, steps, -1)
    half = taps // 2
    padded = np.pad(flat, ((0, 0), (half, half), (0, 0)))
    windows = np.concatenate([padded[:, k:k + steps] for k in range(taps)], axis=-1)
    return windows.reshape(batch * steps, -1)


def _required(context):
    if context is None:
        raise ValueError("a parallel model needs the source's frames (context) to encode or "
                         "decode")
    return context


class ContextNorm(FlowLayer):
    """``y = (x - shift(context, c)) * exp(-logs(context, c))`` (see the module docstring).

    Args:
        width, channels: W and C of a frame.
        num_singers: rows of the singer table; one linear map each.
        cond_dims: size of a conditioning vector.
        hidden: width of the network's hidden layers.
        taps: source frames per prediction (odd).
    """

    def __init__(self, width: int, channels: int, num_singers: int, cond_dims: int,
                 hidden: int, taps: int = CONTEXT_TAPS, **kwargs):
        super().__init__(**kwargs)
        if taps < 1 or taps % 2 == 0:
            raise ValueError(f"taps must be a positive odd number, got {taps}")
        self.width, self.channels = int(width), int(channels)
        self.num_singers, self.cond_dims, self.taps = int(num_singers), int(cond_dims), int(taps)
        frame = self.width * self.channels
        self.frame = frame
        # (taps, W*C, S * 2 W*C): every singer's map in one convolution, mixed afterwards.
        self.linear_kernel = self.add_weight(
            shape=(self.taps, frame, self.num_singers * 2 * frame), initializer="zeros",
            name="linear_kernel")
        self.linear_bias = self.add_weight(shape=(self.num_singers, 2 * frame),
                                           initializer="zeros", name="linear_bias")
        init = keras.initializers.RandomNormal(stddev=0.05)
        self.conv_in = keras.layers.Conv1D(hidden, self.taps, padding="same", activation="relu",
                                           kernel_initializer=init, name="conv_in")
        self.conv_hidden = keras.layers.Conv1D(hidden, 1, activation="relu",
                                               kernel_initializer=init, name="conv_hidden")
        self.conv_out = keras.layers.Conv1D(2 * frame, 1, kernel_initializer="zeros",
                                            name="conv_out")
        self.conv_in.build((None, None, frame + self.cond_dims))
        self.conv_hidden.build((None, None, hidden))
        self.conv_out.build((None, None, hidden))
        self.initialized = self.add_weight(shape=(), initializer="zeros", dtype="bool",
                                           trainable=False, name="initialized")
        self.built = True

    # ------------------------------------------------------------------ parameters
    def _singer_weights(self, cond: tf.Tensor, table: tf.Tensor) -> tf.Tensor:
        """``(B, S)``: ``cond`` as a combination of the singers' embeddings (one-hot for a
        singer's own embedding, when the singers are no more than ``cond_dims``)."""
        return tf.matmul(tf.cast(cond, tf.float32), tf.linalg.pinv(tf.cast(table, tf.float32)))

    def params(self, context: tf.Tensor, cond: tf.Tensor, table: tf.Tensor
               ) -> Tuple[tf.Tensor, tf.Tensor]:
        """``(shift, logs)``, each ``(B, T, W, C)``, from ``context (B, T, W, C)`` under the
        conditioning vectors ``cond (B, cond_dims)`` given the singer ``table (S, cond_dims)``."""
        context = tf.convert_to_tensor(context, tf.float32)
        shape = tf.shape(context)
        batch, steps = shape[0], shape[1]
        flat = tf.reshape(context, [batch, steps, self.frame])
        linear = tf.nn.conv1d(flat, tf.convert_to_tensor(self.linear_kernel), 1, "SAME")
        linear = tf.reshape(linear, [batch, steps, self.num_singers, 2 * self.frame])
        linear = linear + self.linear_bias
        weights = self._singer_weights(cond, table)  # (B, S)
        mixed = tf.einsum("btsf,bs->btf", linear, weights)
        tiled = tf.zeros([batch, steps, 1]) + tf.cast(cond, tf.float32)[:, None, :]
        learned = self.conv_out(self.conv_hidden(self.conv_in(tf.concat([flat, tiled], -1))))
        params = tf.reshape(mixed + learned, [batch, steps, self.width, 2 * self.channels])
        shift, logs = tf.split(params, 2, axis=-1)
        return shift, tf.clip_by_value(logs, -LOGS_LIMIT, LOGS_LIMIT)

    def forward(self, x, cond, context, table):
        """``(y, logdet (B,))`` of target frames ``x`` under ``cond`` given ``context`` and the
        singer ``table`` (SingerNorm's call, with what this layer needs besides)."""
        shift, logs = self.params(_required(context), cond, table)
        y = (x - shift) * tf.exp(-logs)
        return y, -tf.reduce_sum(logs, axis=[1, 2, 3])

    def inverse(self, y, cond, context, table):
        shift, logs = self.params(_required(context), cond, table)
        return y * tf.exp(logs) + shift

    def gaussian_log_prob(self, x, cond, context, table) -> tf.Tensor:
        """``log N(y; 0, I) + logdet`` (nats, ``(B,)``): this layer alone as a model of the target
        frames ``x`` given ``context``, a Gaussian of mean ``shift`` and standard deviation
        ``exp(logs)`` per value (the training objective adds it to the whole flow's)."""
        y, logdet = self.forward(x, cond, context, table)
        count = tf.cast(tf.reduce_prod(tf.shape(y)[1:]), tf.float32)
        return -0.5 * tf.reduce_sum(tf.square(y), axis=[1, 2, 3]) - 0.5 * count * _LOG_2PI + logdet

    # ------------------------------------------------------------------ initialisation
    def initialize(self, x: np.ndarray, context: np.ndarray, singer: np.ndarray) -> None:
        """Solve every singer's linear map from the batch ``x`` (B, T, W, C) of target frames,
        its ``context`` and the target singers' ids ``singer (B,)``, unless already initialised.

        Per singer with frames in the batch: ridge regression (penalty :data:`RIDGE_PER_FRAME`
        per frame, intercept free) of the target frames on :func:`context_windows`; the shift's
        map is its coefficients, the log-scale's bias the log of its residuals' standard
        deviation per coefficient. A singer without frames keeps the zero map (the identity).
        """
        if bool(self.initialized.numpy()):
            return
        x = np.asarray(x, np.float64)
        singer = np.asarray(singer).reshape(-1)
        windows = context_windows(context, self.taps)
        targets = x.reshape(len(windows), -1)
        frame_singer = np.repeat(singer, x.shape[1])
        kernel = np.zeros((self.taps * self.frame, self.num_singers, 2, self.frame))
        bias = np.zeros((self.num_singers, 2, self.frame))
        for index in range(self.num_singers):
            mine = frame_singer == index
            if not mine.any():
                continue
            inputs, wanted = windows[mine], targets[mine]
            in_mean, out_mean = inputs.mean(axis=0), wanted.mean(axis=0)
            centred = inputs - in_mean
            gram = centred.T @ centred + RIDGE_PER_FRAME * len(inputs) * np.eye(centred.shape[1])
            coef = np.linalg.solve(gram, centred.T @ (wanted - out_mean))
            residual = wanted - out_mean - centred @ coef
            kernel[:, index, 0] = coef
            bias[index, 0] = out_mean - in_mean @ coef
            bias[index, 1] = np.clip(0.5 * np.log(np.maximum(residual.var(axis=0), 1e-6)),
                                     -LOGS_LIMIT, LOGS_LIMIT)
        # Output layout of one singer: (W, 2C) = shift channels then log-scale channels per W.
        kernel = kernel.reshape(self.taps, self.frame, self.num_singers, 2, self.width,
                                self.channels)
        kernel = np.moveaxis(kernel, 3, 4).reshape(self.taps, self.frame, -1)
        bias = np.moveaxis(bias.reshape(self.num_singers, 2, self.width, self.channels), 1, 2)
        self.linear_kernel.assign(kernel.astype(np.float32))
        self.linear_bias.assign(bias.reshape(self.num_singers, -1).astype(np.float32))
        self.initialized.assign(True)

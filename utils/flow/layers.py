"""The flow layers of SinGlow-TF2's Glow, each an exact bijection with a tractable log-determinant.

Every layer has ``forward(x[, cond]) -> (y, logdet)`` with ``logdet`` of shape ``(B,)`` in nats,
and a separate exact ``inverse(y[, cond]) -> x``; the direction is never chosen by Keras'
``training`` flag. ``cond`` is an optional conditioning vector ``(B, cond_dims)`` (a singer's
embedding) that enters the coupling networks and the priors only, never the transformed half, so
every layer stays a bijection of ``x`` under every condition.

Layers: :class:`ActNorm` (data-dependent initialisation, persisted), :class:`SingerNorm` (the
per-singer normalisation of a conditional model's input), :class:`Invertible1x1Conv`
(LU-decomposed by default), :class:`AffineCoupling` (affine with a bounded scale, or additive)
with its :class:`CouplingNetwork`, :class:`FlowStep` (the three in a row), :func:`squeeze` /
:func:`unsqueeze` and :class:`GaussianPrior` (the split and top priors). :class:`model.Glow`
stacks them.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import tensorflow as tf
import keras

from utils.flow.ops import conv_from_few, conv_to_few


def _low_precision(compute_dtype) -> bool:
    """True when a train step asks for its convolutions in bf16 or fp16
    (utils/training/precision.py); None and float32 take the layers' float32 paths, the only ones
    inference uses."""
    return compute_dtype is not None and tf.as_dtype(compute_dtype) != tf.float32


def _as(value, dtype) -> tf.Tensor:
    """``value`` (a tensor or a Keras variable) cast to ``dtype``."""
    return tf.cast(tf.convert_to_tensor(value), dtype)


def _spatial_size(x: tf.Tensor) -> tf.Tensor:
    """``H * W`` of an NHWC tensor as float32 (H may be dynamic for whole songs)."""
    shape = tf.shape(x)
    return tf.cast(shape[1] * shape[2], tf.float32)


# ---------------------------------------------------------------------------------------- layers
class FlowLayer(keras.layers.Layer):
    """Base class: an invertible map with a tractable log-determinant.

    Subclasses implement ``forward(x) -> (y, logdet)`` and ``inverse(y) -> x``. ``call`` is the
    forward direction so that Keras' bookkeeping (building, summaries) works as usual.
    """

    def forward(self, x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def inverse(self, y: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def call(self, x):
        return self.forward(x)


class ActNorm(FlowLayer):
    """Per-channel affine normalisation ``y = (x + bias) * exp(log_scale)``.

    Data-dependent initialisation (Glow, section 3.1): :meth:`initialize` sets ``bias`` and
    ``log_scale`` so that the output of its batch has zero mean and unit variance per channel,
    and sets the persisted ``initialized`` variable. Because the flag is a variable it is saved in
    and restored from checkpoints: a restored model is never re-initialised.

    logdet = H * W * sum(log_scale)  (nats, per example).
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.bias = self.add_weight(shape=(channels,), initializer="zeros", name="bias")
        self.log_scale = self.add_weight(shape=(channels,), initializer="zeros", name="log_scale")
        self.initialized = self.add_weight(
            shape=(), initializer="zeros", dtype="bool", trainable=False, name="initialized"
        )
        self.built = True

    def initialize(self, x: tf.Tensor) -> tf.Tensor:
        """Set bias/scale from the batch ``x`` (B, H, W, C) unless already initialised."""
        if not bool(self.initialized.numpy()):
            mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
            self.bias.assign(-mean)
            self.log_scale.assign(-0.5 * tf.math.log(variance + 1e-6))
            self.initialized.assign(True)
        return self.forward(x)[0]

    def forward(self, x):
        y = (x + self.bias) * tf.exp(self.log_scale)
        logdet = _spatial_size(x) * tf.reduce_sum(self.log_scale)
        return y, tf.fill([tf.shape(x)[0]], logdet)

    def inverse(self, y):
        return y * tf.exp(-self.log_scale) - self.bias


class SingerNorm(FlowLayer):
    """Per-singer, per-bin affine normalisation of the input: ``y = (x - shift(c)) * exp(-logs(c))``.

    ``shift`` and ``logs`` are ``(W, C)`` maps, each a linear function of the conditioning vector
    ``c`` (B, cond_dims) (a singer's embedding, or a mix of two): ``[shift, logs] = c @ kernel``.
    Data-dependent initialisation (:meth:`initialize`) solves for ``kernel`` so that each
    singer's own embedding gives that singer's per-bin mean and log-std on the initialisation
    batch: every singer's data then enters the rest of the flow standardised in its own
    coordinates, and decoding under another singer starts from per-bin moment matching between
    the singers rather than from nothing. Because the map is linear in ``c``, a mix
    ``(1 - a) c_s + a c_t`` interpolates the singers' means and log-stds. Like ActNorm, the
    ``initialized`` flag is a variable, so a restored model is never re-initialised. The kernel
    is not trained (and :class:`model.Glow` then keeps the embedding fixed too, since the
    parameters are a function of it): the layer is a fixed per-singer standardisation.

    Shapes: x (B, H, W, C); logdet = -H * sum(logs(c)) over (W, C), (B,) nats.
    """

    # Variance floor (normalised feature units): a bin that is constant for one singer (digital
    # silence) would otherwise get an unbounded scale.
    VARIANCE_FLOOR = 1e-4
    # Fewest selected frames a singer's moments are taken over.
    MIN_FRAMES = 16

    def __init__(self, width: int, channels: int, cond_dims: int, **kwargs):
        super().__init__(**kwargs)
        self.width, self.channels, self.cond_dims = int(width), int(channels), int(cond_dims)
        # Not trained: maximum likelihood alone drifts it away from standardising each singer
        # (measured: after 600 steps the virtual singer's log-stds had moved by up to 1.8 toward
        # the real singer's), and that standardisation is what conversion starts from.
        self.kernel = self.add_weight(shape=(self.cond_dims, 2 * self.width * self.channels),
                                      initializer="zeros", trainable=False, name="kernel")
        self.initialized = self.add_weight(
            shape=(), initializer="zeros", dtype="bool", trainable=False, name="initialized")
        self.built = True

    def params(self, cond: tf.Tensor):
        """``(shift, logs)``, each ``(B, 1, W, C)``, under conditioning vectors ``(B, cond_dims)``."""
        params = tf.matmul(tf.cast(cond, tf.float32), self.kernel)
        params = tf.reshape(params, [-1, 1, self.width, 2 * self.channels])
        return tf.split(params, 2, axis=-1)  # shift, logs: (B, 1, W, C)

    def initialize(self, x: tf.Tensor, singer: tf.Tensor, embedding: tf.Tensor,
                   frames: Optional[np.ndarray] = None) -> None:
        """Set ``kernel`` from the batch ``x`` (B, H, W, C) of singers ``singer`` (B,) int ids,
        given the embedding table ``(S, cond_dims)``, unless already initialised.

        ``frames`` (B, H) bool: the frames the moments are taken over (the sounding ones, so
        that one singer's digital silence does not set the scale of its voiced frames); a
        singer with fewer than :data:`MIN_FRAMES` of them uses all its frames. A singer absent
        from the batch gets the whole batch's moments. With more singers than ``cond_dims`` the
        fit is least squares (exact otherwise)."""
        if bool(self.initialized.numpy()):
            return
        x = np.asarray(x, np.float64)
        singer = np.asarray(singer).reshape(-1)
        table = np.asarray(embedding, np.float64)
        frames = (np.ones(x.shape[:2], bool) if frames is None
                  else np.asarray(frames, bool).reshape(x.shape[:2]))

        def singer_moments(mine):  # -> (W, 2C)
            mean, logs = self.frame_moments(x[mine].reshape(-1, *x.shape[2:]),
                                            frames[mine].reshape(-1))
            return np.concatenate([mean, logs], axis=-1)

        overall = singer_moments(np.ones(len(singer), bool))
        targets = np.stack([singer_moments(singer == s) if np.any(singer == s) else overall
                            for s in range(table.shape[0])])  # (S, W, 2C)
        kernel = np.linalg.pinv(table) @ targets.reshape(table.shape[0], -1)
        self.kernel.assign(kernel.astype(np.float32))
        self.initialized.assign(True)

    @classmethod
    def frame_moments(cls, frames: np.ndarray, chosen: Optional[np.ndarray] = None):
        """Per-bin mean and log-std ``((W, C), (W, C))`` float64 of ``frames (N, W, C)`` over
        the ``chosen (N,)`` ones (all of them when fewer than :data:`MIN_FRAMES` are chosen),
        the variance floored at :data:`VARIANCE_FLOOR`: what this layer standardises by."""
        frames = np.asarray(frames, np.float64)
        if chosen is not None and np.count_nonzero(chosen) >= cls.MIN_FRAMES:
            frames = frames[np.asarray(chosen, bool)]
        variance = np.maximum(frames.var(axis=0), cls.VARIANCE_FLOOR)
        return frames.mean(axis=0), 0.5 * np.log(variance)

    def standardisation(self, cond) -> Tuple[np.ndarray, np.ndarray]:
        """Per-bin ``(shift, logs)``, each ``(W, C)`` float64, under one conditioning vector
        ``(cond_dims,)``: the mean and log-std :meth:`forward` standardises by."""
        shift, logs = self.params(np.asarray(cond)[None])
        return np.asarray(shift, np.float64)[0, 0], np.asarray(logs, np.float64)[0, 0]

    def moment_map(self, x, source, target) -> tf.Tensor:
        """Per-bin moment matching of ``x`` (B, H, W, C) from the ``source`` to the ``target``
        conditioning vectors (B, cond_dims): standardised under one, de-standardised under the
        other."""
        y, _ = self.forward(tf.convert_to_tensor(x, tf.float32), source)
        return self.inverse(y, target)

    def forward(self, x, cond, context=None, table=None):
        """``(y, logdet)``; ``context`` and ``table`` are ContextNorm's (ignored here), so that
        either input layer is called alike."""
        shift, logs = self.params(cond)
        y = (x - shift) * tf.exp(-logs)
        logdet = -tf.cast(tf.shape(x)[1], tf.float32) * tf.reduce_sum(logs, axis=[1, 2, 3])
        return y, logdet

    def inverse(self, y, cond, context=None, table=None):
        shift, logs = self.params(cond)
        return y * tf.exp(logs) + shift


class Invertible1x1Conv(FlowLayer):
    """Invertible 1x1 convolution ``y = x @ W`` over channels (a learned channel permutation).

    With ``lu_decomposed`` (default), ``W = P @ L @ (U + diag(sign * exp(log_s)))`` where ``P`` is a
    fixed permutation, ``L`` unit lower triangular and ``U`` strictly upper triangular: W stays
    invertible and ``log|det W| = sum(log_s)`` costs nothing. Otherwise ``W`` is a free matrix and
    its log-determinant comes from ``slogdet`` in float64. Both start from a random rotation.

    logdet = H * W_spatial * log|det W|  (nats, per example).
    The inverse matrix is computed in float64 so that decode(encode(x)) == x to float32 precision.
    """

    def __init__(self, channels: int, lu_decomposed: bool = True, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.lu_decomposed = lu_decomposed
        rotation = np.linalg.qr(np.random.default_rng(seed).standard_normal((channels, channels)))[0]
        if lu_decomposed:
            import scipy.linalg

            p, lower, upper = scipy.linalg.lu(rotation)
            s = np.diag(upper)
            self.permutation = self.add_weight(
                shape=(channels, channels), initializer=_constant(p), trainable=False, name="P"
            )
            self.lower = self.add_weight(
                shape=(channels, channels), initializer=_constant(np.tril(lower, -1)), name="L"
            )
            self.upper = self.add_weight(
                shape=(channels, channels), initializer=_constant(np.triu(upper, 1)), name="U"
            )
            self.sign_s = self.add_weight(
                shape=(channels,), initializer=_constant(np.sign(s)), trainable=False, name="sign_s"
            )
            self.log_s = self.add_weight(
                shape=(channels,), initializer=_constant(np.log(np.abs(s))), name="log_s"
            )
        else:
            self.kernel = self.add_weight(
                shape=(channels, channels), initializer=_constant(rotation), name="W"
            )
        self.built = True

    def weight(self) -> tf.Tensor:
        """The (C, C) matrix ``W`` (rebuilt from its LU factors once per call)."""
        if not self.lu_decomposed:
            return self.kernel
        eye = tf.eye(self.channels, dtype=self.lower.dtype)
        lower = tf.linalg.band_part(self.lower, -1, 0) - tf.linalg.band_part(self.lower, 0, 0) + eye
        upper = tf.linalg.band_part(self.upper, 0, -1) - tf.linalg.band_part(self.upper, 0, 0)
        upper = upper + tf.linalg.diag(self.sign_s * tf.exp(self.log_s))
        return self.permutation @ lower @ upper

    def log_abs_det(self) -> tf.Tensor:
        if self.lu_decomposed:
            return tf.reduce_sum(self.log_s)
        return tf.cast(tf.linalg.slogdet(tf.cast(self.kernel, tf.float64))[1], tf.float32)

    def inverse_weight(self) -> tf.Tensor:
        return tf.cast(tf.linalg.inv(tf.cast(self.weight(), tf.float64)), tf.float32)

    @staticmethod
    def _apply(x: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
        return tf.nn.conv2d(x, matrix[tf.newaxis, tf.newaxis], strides=1, padding="VALID")

    def forward(self, x):
        logdet = _spatial_size(x) * self.log_abs_det()
        return self._apply(x, self.weight()), tf.fill([tf.shape(x)[0]], logdet)

    def inverse(self, y):
        return self._apply(y, self.inverse_weight())


# Coupling networks conditioned on at most this many channels compute their thin convolutions as
# GEMMs (utils/flow/ops.py): oneDNN's direct conv2d is slow to or from 1-4 channels, but fast
# enough from 8 on that the GEMMs' extra shifting ops no longer pay (benchmarks/bench_train.py).
_GEMM_MAX_CONDITIONING_CHANNELS = 4


class ZeroConv2D(keras.layers.Layer):
    """A convolution whose kernel and bias start at zero, scaled by ``exp(3 * logs)``.

    Used as the last layer of every coupling network and prior, so each flow step starts as the
    identity and each prior as N(0, 1) (Glow's ``conv2d_zeros``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Tuple[int, int],
                 gemm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.gemm = gemm  # compute as utils.flow.ops.conv_to_few (same values, faster when thin)
        self.kernel = self.add_weight(
            shape=(*kernel_size, in_channels, out_channels), initializer="zeros", name="kernel"
        )
        self.bias = self.add_weight(shape=(out_channels,), initializer="zeros", name="bias")
        self.logs = self.add_weight(shape=(out_channels,), initializer="zeros", name="logs")
        self.built = True

    def call(self, x):
        kernel = tf.convert_to_tensor(self.kernel)
        if self.gemm:
            h = conv_to_few(x, kernel)
        else:
            h = tf.nn.conv2d(x, kernel, strides=1, padding="SAME")
        return (h + self.bias) * tf.exp(3.0 * self.logs)

    def low_precision(self, x, compute_dtype):
        """:meth:`call` with the convolution in ``compute_dtype`` (x and kernel cast to it); the
        result is cast back to float32 before the bias and the ``exp(3 * logs)`` scale."""
        x, kernel = _as(x, compute_dtype), _as(self.kernel, compute_dtype)
        h = conv_to_few(x, kernel) if self.gemm else tf.nn.conv2d(x, kernel, 1, "SAME")
        return (tf.cast(h, tf.float32) + self.bias) * tf.exp(3.0 * self.logs)


class CouplingNetwork(keras.layers.Layer):
    """``k x k conv -> ReLU -> 1x1 conv -> ReLU -> zero-initialised k x k conv``.

    ``kernel_size`` is (3, 3) for images and (3, 1) for waveforms (width 1), so no multiply is
    spent on padding. With at most ``_GEMM_MAX_CONDITIONING_CHANNELS`` input channels, the first
    and last convolutions run as GEMMs (``utils.flow.ops``): the same function, computed faster.

    With ``cond_dims > 0`` the network also takes a conditioning vector ``cond (B, cond_dims)``
    (a singer's embedding): a learned linear map of it is added to each hidden layer before its
    ReLU, the same at every position (Blow's speaker conditioning), so what the coupling does to a
    frame depends on both the frame's content and the singer.
    """

    def __init__(self, in_channels, hidden_channels, out_channels, kernel_size, cond_dims=0,
                 **kwargs):
        super().__init__(**kwargs)
        self.cond_dims = int(cond_dims)
        self.gemm = in_channels <= _GEMM_MAX_CONDITIONING_CHANNELS
        self.conv_in = keras.layers.Conv2D(
            hidden_channels, kernel_size, padding="same", activation="relu", name="conv_in",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.05),
        )
        self.conv_hidden = keras.layers.Conv2D(
            hidden_channels, 1, padding="same", activation="relu", name="conv_hidden",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.05),
        )
        self.conv_out = ZeroConv2D(hidden_channels, out_channels, kernel_size, gemm=self.gemm,
                                   name="conv_out")
        self.conv_in.build((None, None, None, in_channels))
        self.conv_hidden.build((None, None, None, hidden_channels))
        if self.cond_dims:
            init = keras.initializers.RandomNormal(stddev=0.05)
            self.cond_in = keras.layers.Dense(hidden_channels, kernel_initializer=init,
                                              name="cond_in")
            self.cond_hidden = keras.layers.Dense(hidden_channels, kernel_initializer=init,
                                                  name="cond_hidden")
            self.cond_in.build((None, self.cond_dims))
            self.cond_hidden.build((None, self.cond_dims))
        self.built = True

    def call(self, x, cond=None):
        if cond is None:
            if self.gemm:
                kernel = tf.convert_to_tensor(self.conv_in.kernel)
                h = tf.nn.relu(conv_from_few(x, kernel) + self.conv_in.bias)
            else:
                h = self.conv_in(x)
            return self.conv_out(self.conv_hidden(h))
        kernel = tf.convert_to_tensor(self.conv_in.kernel)
        h = conv_from_few(x, kernel) if self.gemm else tf.nn.conv2d(x, kernel, 1, "SAME")
        h = tf.nn.relu(h + self.conv_in.bias + self.cond_in(cond)[:, None, None, :])
        hidden = tf.convert_to_tensor(self.conv_hidden.kernel)
        h = tf.nn.conv2d(h, hidden, 1, "SAME") + self.conv_hidden.bias
        h = tf.nn.relu(h + self.cond_hidden(cond)[:, None, None, :])
        return self.conv_out(h)

    def low_precision(self, x, cond, compute_dtype):
        """:meth:`call` with its three convolutions in ``compute_dtype`` (bf16 or fp16): x, the
        kernels and biases cast to it; the conditioning's linear maps run in float32 and are cast.
        Returns float32 (the last convolution casts back before its bias and scale)."""
        low = lambda value: _as(value, compute_dtype)  # noqa: E731
        kernel = low(self.conv_in.kernel)
        h = low(x)
        h = conv_from_few(h, kernel) if self.gemm else tf.nn.conv2d(h, kernel, 1, "SAME")
        h = h + low(self.conv_in.bias)
        if cond is not None:
            h = h + low(self.cond_in(cond))[:, None, None, :]
        h = tf.nn.conv2d(tf.nn.relu(h), low(self.conv_hidden.kernel), 1, "SAME")
        h = h + low(self.conv_hidden.bias)
        if cond is not None:
            h = h + low(self.cond_hidden(cond))[:, None, None, :]
        return self.conv_out.low_precision(tf.nn.relu(h), compute_dtype)


class AffineCoupling(FlowLayer):
    """Coupling layer: the first half of the channels conditions a transform of the second half.

    affine:   y_b = (x_b + t(x_a, c)) * s(x_a, c),  s = sigmoid(h + scale_shift) in (0, 1)
              logdet = sum log s                                       (nats, per example)
    additive: y_b = x_b + t(x_a, c), logdet = 0.
    The bounded scale keeps the inverse ``x_b = y_b / s - t`` well conditioned. ``c`` is the
    optional conditioning vector ``(B, cond_dims)``; like ``x_a`` it is never transformed, so the
    layer is a bijection of ``x`` with the same log-determinant for every ``c``.
    """

    def __init__(self, channels, hidden_channels, kernel_size, coupling="affine",
                 scale_shift=2.0, cond_dims=0, **kwargs):
        super().__init__(**kwargs)
        if channels < 2:
            raise ValueError(f"a coupling needs at least 2 channels, got {channels}")
        self.affine = coupling == "affine"
        self.scale_shift = scale_shift
        self.split_at = channels // 2
        transformed = channels - self.split_at
        self.network = CouplingNetwork(
            self.split_at, hidden_channels, transformed * (2 if self.affine else 1), kernel_size,
            cond_dims, name="nn",
        )
        self.built = True

    def _shift_scale(self, x_a, cond=None, compute_dtype=None):
        """(shift, scale logit) from the conditioning half; the logit is None when additive.
        ``compute_dtype`` bf16/fp16: the network's convolutions in it (training only)."""
        if _low_precision(compute_dtype):
            h = self.network.low_precision(x_a, cond, compute_dtype)
        else:
            h = self.network(x_a, cond)
        if not self.affine:
            return h, None
        shift, raw = tf.split(h, 2, axis=-1)
        return shift, raw + self.scale_shift

    def forward(self, x, cond=None, compute_dtype=None):
        x_a, x_b = tf.split(x, [self.split_at, -1], axis=-1)
        shift, logit = self._shift_scale(x_a, cond, compute_dtype)
        if logit is None:
            return tf.concat([x_a, x_b + shift], axis=-1), tf.zeros([tf.shape(x)[0]])
        y_b = (x_b + shift) * tf.sigmoid(logit)
        # log(sigmoid) directly: no log(0) when the scale underflows.
        logdet = tf.reduce_sum(tf.math.log_sigmoid(logit), axis=[1, 2, 3])
        return tf.concat([x_a, y_b], axis=-1), logdet

    def inverse(self, y, cond=None):
        y_a, y_b = tf.split(y, [self.split_at, -1], axis=-1)
        shift, logit = self._shift_scale(y_a, cond)
        x_b = y_b - shift if logit is None else y_b / tf.sigmoid(logit) - shift
        return tf.concat([y_a, x_b], axis=-1)


class FlowStep(FlowLayer):
    """One step of flow: ActNorm -> invertible 1x1 conv -> coupling (the one conditioned part)."""

    def __init__(self, channels, hidden_channels, kernel_size, coupling, lu_decomposed,
                 scale_shift, seed, cond_dims=0, **kwargs):
        super().__init__(**kwargs)
        self.actnorm = ActNorm(channels, name="actnorm")
        self.invconv = Invertible1x1Conv(channels, lu_decomposed, seed=seed, name="invconv")
        self.coupling = AffineCoupling(
            channels, hidden_channels, kernel_size, coupling, scale_shift, cond_dims,
            name="coupling"
        )
        self.built = True

    def forward(self, x, cond=None, compute_dtype=None):
        """``compute_dtype`` (training only): the coupling network's convolutions in bf16/fp16;
        ActNorm, the 1x1 convolution and every log-determinant stay float32."""
        x, logdet_a = self.actnorm.forward(x)
        x, logdet_w = self.invconv.forward(x)
        x, logdet_c = self.coupling.forward(x, cond, compute_dtype)
        return x, logdet_a + logdet_w + logdet_c

    def inverse(self, y, cond=None):
        return self.actnorm.inverse(self.invconv.inverse(self.coupling.inverse(y, cond)))


def squeeze(x: tf.Tensor, time_only: bool) -> tf.Tensor:
    """(B, H, W, C) -> (B, H/2, W/2, 4C), or (B, H/2, W, 2C) along time only. Volume preserving."""
    if not time_only:
        return tf.nn.space_to_depth(x, 2)
    shape = tf.shape(x)
    channels = x.shape[-1]
    return tf.reshape(x, [shape[0], shape[1] // 2, x.shape[2], 2 * channels])


def unsqueeze(x: tf.Tensor, time_only: bool) -> tf.Tensor:
    """The exact inverse of :func:`squeeze`."""
    if not time_only:
        return tf.nn.depth_to_space(x, 2)
    shape = tf.shape(x)
    channels = x.shape[-1]
    return tf.reshape(x, [shape[0], shape[1] * 2, x.shape[2], channels // 2])


class GaussianPrior(keras.layers.Layer):
    """Whitening of a latent by a diagonal Gaussian: ``eps = (z - mean) * exp(-logs)``.

    ``conditional``: mean and log-scale come from a zero-initialised conv of the kept half (the
    split prior of Glow). Otherwise they are learned per channel and broadcast over positions (the
    top prior), so the prior does not depend on the number of time steps. With ``singer_dims >
    0`` a zero-initialised linear map of the singer's embedding ``(B, singer_dims)`` is added to
    both, the same at every position.

    logdet of z -> eps = -sum(logs) over the latent (nats, per example).
    """

    def __init__(self, channels: int, cond_channels: int = 0, kernel_size=(3, 3),
                 singer_dims: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.conditional = cond_channels > 0
        if self.conditional:
            self.conv = ZeroConv2D(cond_channels, 2 * channels, kernel_size, name="prior_conv")
        else:
            self.mean = self.add_weight(shape=(channels,), initializer="zeros", name="mean")
            self.logs = self.add_weight(shape=(channels,), initializer="zeros", name="logs")
        self.singer_dims = int(singer_dims)
        if self.singer_dims:
            self.singer = keras.layers.Dense(2 * channels, kernel_initializer="zeros",
                                             name="prior_singer")
            self.singer.build((None, self.singer_dims))
        self.built = True

    def _params(self, cond: Optional[tf.Tensor], like: tf.Tensor, singer=None,
                compute_dtype=None):
        if self.conditional and _low_precision(compute_dtype):
            params = self.conv.low_precision(cond, compute_dtype)  # float32 out
        elif self.conditional:
            params = self.conv(cond)
        else:
            params = tf.concat([self.mean, self.logs], axis=0) + tf.zeros_like(
                tf.concat([like, like], axis=-1))
        if singer is not None:
            params = params + self.singer(singer)[:, None, None, :]
        return tf.split(params, 2, axis=-1)

    def whiten(self, z, cond=None, singer=None, compute_dtype=None):
        """z -> (eps, logdet (B,) nats); ``compute_dtype`` (training only): the split prior's
        convolution in bf16/fp16, the whitening itself in float32."""
        mean, logs = self._params(cond, z, singer, compute_dtype)
        eps = (z - mean) * tf.exp(-logs)
        return eps, -tf.reduce_sum(logs, axis=[1, 2, 3])

    def color(self, eps, cond=None, singer=None):
        mean, logs = self._params(cond, eps, singer)
        return eps * tf.exp(logs) + mean


def _constant(value: np.ndarray):
    return keras.initializers.Constant(np.asarray(value, dtype=np.float32))

"""The Glow normalising flow of SinGlow-TF2, written natively in Keras 3.

Flow of one level (``K`` steps, then a split), repeated ``L`` times::

    x (B, H, W, C)
      -> squeeze            (B, H/2, W/2, 4C)    or (B, H/2, W, 2C) when W == 1 (waveform)
      -> K x [ActNorm -> Invertible1x1Conv -> Coupling]
      -> Split              keeps half the channels, whitens the other half with a learned
                            prior conditioned on the kept half and emits it as latent
    ... the last level has no split; its output is whitened by the learned TopPrior.

``z`` is the concatenation of every whitened piece, flattened per example, so under the model
``z ~ N(0, I)`` and ``logdet = log|det dz/dx|`` of the whole map. Hence

    log p(x) = sum_i log N(z_i; 0, 1) + logdet          (nats)
    bits/dim = -log p(x) / (D ln 2),  D = H * W * C.

Every layer has ``forward(x) -> (y, logdet)`` with ``logdet`` of shape ``(B,)`` in nats, and a
separate exact ``inverse(y) -> x``. The direction is never chosen by Keras' ``training`` flag.

The model is fully convolutional: any number of time steps ``H`` that divides by ``2**L`` is
encoded with the same weights (priors do not depend on ``H``), so whole songs can be encoded in one
call. The frequency width ``W`` and channels ``C`` are fixed by the configuration.

References: Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions" (2018);
Dinh et al., "Density estimation using Real NVP" (2017).
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np
import tensorflow as tf
import keras

from common_definitions import Config
from utils.flow_ops import conv_from_few, conv_to_few

LOG_2PI = math.log(2.0 * math.pi)
# Keyword defaults of Glow(...): the default Config's, so a default lives in one place.
_DEFAULTS = Config()
# Glow's keywords besides input_shape: Config fields of the same names (Glow.from_config).
_GLOW_KEYWORDS = ("k_glow", "l_glow", "hidden_channels", "coupling", "lu_decomposed",
                  "scale_shift", "seed", "singer_dims")


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
# GEMMs (utils/flow_ops.py): oneDNN's direct conv2d is slow to or from 1-4 channels, but fast
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
        self.gemm = gemm  # compute as utils.flow_ops.conv_to_few (same values, faster when thin)
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


class CouplingNetwork(keras.layers.Layer):
    """``k x k conv -> ReLU -> 1x1 conv -> ReLU -> zero-initialised k x k conv``.

    ``kernel_size`` is (3, 3) for images and (3, 1) for waveforms (width 1), so no multiply is
    spent on padding. With at most ``_GEMM_MAX_CONDITIONING_CHANNELS`` input channels, the first
    and last convolutions run as GEMMs (``utils.flow_ops``): the same function, computed faster.

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

    def _shift_scale(self, x_a, cond=None):
        """(shift, scale logit) from the conditioning half; the logit is None when additive."""
        h = self.network(x_a, cond)
        if not self.affine:
            return h, None
        shift, raw = tf.split(h, 2, axis=-1)
        return shift, raw + self.scale_shift

    def forward(self, x, cond=None):
        x_a, x_b = tf.split(x, [self.split_at, -1], axis=-1)
        shift, logit = self._shift_scale(x_a, cond)
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

    def forward(self, x, cond=None):
        x, logdet_a = self.actnorm.forward(x)
        x, logdet_w = self.invconv.forward(x)
        x, logdet_c = self.coupling.forward(x, cond)
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

    def _params(self, cond: Optional[tf.Tensor], like: tf.Tensor, singer=None):
        if self.conditional:
            params = self.conv(cond)
        else:
            params = tf.concat([self.mean, self.logs], axis=0) + tf.zeros_like(
                tf.concat([like, like], axis=-1))
        if singer is not None:
            params = params + self.singer(singer)[:, None, None, :]
        return tf.split(params, 2, axis=-1)

    def whiten(self, z, cond=None, singer=None):
        mean, logs = self._params(cond, z, singer)
        eps = (z - mean) * tf.exp(-logs)
        return eps, -tf.reduce_sum(logs, axis=[1, 2, 3])

    def color(self, eps, cond=None, singer=None):
        mean, logs = self._params(cond, eps, singer)
        return eps * tf.exp(logs) + mean


# ----------------------------------------------------------------------------------------- model
class Glow(keras.Model):
    """SinGlow's Glow: ``encode`` x -> (z, logdet), ``decode`` z -> x, exact inverses.

    Built by ``Glow.from_config(config, num_singers=N)`` or from keywords only
    (``Glow(input_shape=(64, 256, 1), k_glow=4, l_glow=3, hidden_channels=128, coupling="affine",
    lu_decomposed=True, scale_shift=2.0, seed=0)``); a keyword not given takes the default
    ``Config``'s value.

    Singer-conditional (``num_singers > 0``): a learned embedding of ``singer_dims`` per singer
    conditions every coupling network and every prior, so the model is p(x | singer). Each
    method then takes ``singer``: ``(B,)`` integer ids, or ``(B, singer_dims)`` float
    conditioning vectors (e.g. a mix of two singers' :meth:`singer_condition`). The conditioning
    never depends on the transformed half of a coupling, so under every singer each layer is a
    bijection with the same kind of log-determinant. ``num_singers = 0`` is the unconditional
    Glow (no conditioning variables at all; ``singer`` must be None).

    Shapes: x (B, H, W, C) with H any multiple of ``2**L`` (time steps), W and C as configured;
    z (B, D) with D = H * W * C; logdet (B,) nats.
    """

    def __init__(self, *, input_shape: Tuple[int, int, int] = _DEFAULTS.input_shape,
                 k_glow: int = _DEFAULTS.k_glow, l_glow: int = _DEFAULTS.l_glow,
                 hidden_channels: int = _DEFAULTS.hidden_channels,
                 coupling: str = _DEFAULTS.coupling, lu_decomposed: bool = _DEFAULTS.lu_decomposed,
                 scale_shift: float = _DEFAULTS.scale_shift, seed: int = _DEFAULTS.seed,
                 num_singers: int = 0, singer_dims: int = _DEFAULTS.singer_dims,
                 name: str = "glow", **kwargs):
        super().__init__(name=name, **kwargs)
        shape = tuple(int(s) for s in input_shape)
        self.k_glow, self.l_glow = int(k_glow), int(l_glow)
        self.hidden_channels, self.coupling = int(hidden_channels), coupling
        self.lu_decomposed = bool(lu_decomposed)
        self.scale_shift, self.seed = float(scale_shift), int(seed)
        self.num_singers, self.singer_dims = int(num_singers), int(singer_dims)
        self._validate(shape)
        cond_dims = self.singer_dims if self.num_singers else 0
        if self.num_singers:
            # Unit-variance embeddings: distinct singers start far apart in conditioning space.
            self.singer_embedding = self.add_weight(
                shape=(self.num_singers, self.singer_dims), name="singer_embedding",
                initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.seed))
        self.image_shape = shape
        height, width, channels = shape
        self.time_only = width == 1
        kernel_size = (3, 1) if self.time_only else (3, 3)

        self.levels: List[List[FlowStep]] = []
        self.priors: List[GaussianPrior] = []
        # Static (W, C) of each emitted latent piece; H of each piece is H / 2**(level + 1).
        self.latent_shapes: List[Tuple[int, int]] = []
        for level in range(self.l_glow):
            width = width if self.time_only else width // 2
            channels = channels * (2 if self.time_only else 4)
            steps = [
                FlowStep(channels, self.hidden_channels, kernel_size, self.coupling,
                         self.lu_decomposed, self.scale_shift,
                         seed=self.seed * 1000 + level * 100 + k, cond_dims=cond_dims,
                         name=f"level{level}_step{k}")
                for k in range(self.k_glow)
            ]
            self.levels.append(steps)
            for step in steps:
                # Direct attributes: tf.train.Checkpoint does not follow Keras' tracked lists.
                setattr(self, step.name, step)
            if level < self.l_glow - 1:
                kept = channels // 2
                out = channels - kept
                self.priors.append(GaussianPrior(out, kept, kernel_size, cond_dims,
                                                 name=f"split_prior{level}"))
                self.latent_shapes.append((width, out))
                channels = kept
            else:
                self.priors.append(GaussianPrior(channels, singer_dims=cond_dims,
                                                 name="top_prior"))
                self.latent_shapes.append((width, channels))
        for prior in self.priors:
            setattr(self, prior.name, prior)
        # Build every sublayer with a single zero example so variables exist before restoring.
        self._forward(tf.zeros((1, *self.image_shape)),
                      tf.zeros((1, cond_dims)) if cond_dims else None)
        self.built = True

    @classmethod
    def from_config(cls, config: Config, num_singers: int = 0, **kwargs) -> "Glow":
        """The model ``config`` describes (``kwargs`` go to Keras, e.g. ``name``). Overrides
        Keras' ``Model.from_config``, whose :meth:`get_config` dicts it also still accepts.

        ``num_singers``: the singers of a ``config.conditional`` model (the length of its singer
        map); an unconditional config ignores it.
        """
        if not isinstance(config, Config):
            return cls(**{**config, **kwargs})
        if config.conditional and num_singers < 1:
            raise ValueError("a conditional model needs num_singers >= 1 (its singer map)")
        options = {key: getattr(config, key) for key in _GLOW_KEYWORDS}
        return cls(input_shape=config.input_shape, num_singers=num_singers if config.conditional
                   else 0, **options, **kwargs)

    def get_config(self) -> dict:
        """The keywords that rebuild this architecture (Keras serialisation; no weights)."""
        options = {key: getattr(self, key) for key in _GLOW_KEYWORDS}
        return {"name": self.name, "input_shape": self.image_shape,
                "num_singers": self.num_singers, **options}

    @property
    def conditional(self) -> bool:
        return self.num_singers > 0

    def singer_condition(self, singer) -> Optional[tf.Tensor]:
        """The conditioning vectors ``(B, singer_dims)`` float32 of ``singer``: ``(B,)`` ids are
        looked up in the embedding, float vectors pass through. None for the unconditional model
        (which refuses any ``singer``)."""
        if not self.conditional:
            if singer is not None:
                raise ValueError("this model is unconditional: it takes no singer")
            return None
        if singer is None:
            raise ValueError(f"this model is conditional on {self.num_singers} singers: give "
                             "singer ids (or conditioning vectors)")
        singer = tf.convert_to_tensor(singer)
        if singer.dtype.is_floating:
            return tf.cast(singer, tf.float32)
        return tf.gather(self.singer_embedding, tf.cast(singer, tf.int32))

    def _validate(self, shape):
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"input_shape must be (H, W, C) with positive sizes, got {shape}")
        if self.k_glow < 1 or self.l_glow < 1 or self.hidden_channels < 1:
            raise ValueError("k_glow, l_glow and hidden_channels must be positive integers")
        step = 2 ** self.l_glow
        height, width, _ = shape
        if height % step:
            raise ValueError(
                f"H={height} time steps must divide by 2**l_glow={step}; pad or choose another "
                "window_size or l_glow"
            )
        if width > 1 and width % step:
            raise ValueError(f"W={width} must divide by 2**l_glow={step} (or be 1 for waveforms)")
        if self.coupling not in ("affine", "additive"):
            raise ValueError(f"coupling must be 'affine' or 'additive', got {self.coupling!r}")

    # ------------------------------------------------------------------ core passes
    def _forward(self, x, cond=None, initialize: bool = False):
        """x (B, H, W, C), cond (B, singer_dims) or None -> (whitened latents, logdet (B,))."""
        logdet = tf.zeros([tf.shape(x)[0]])
        latents = []
        h = x
        for level, steps in enumerate(self.levels):
            h = squeeze(h, self.time_only)
            for step in steps:
                if initialize:
                    # Only the ActNorm is set from data, on the input this step really sees.
                    step.actnorm.initialize(h)
                h, step_logdet = step.forward(h, cond)
                logdet += step_logdet
            prior = self.priors[level]
            if prior.conditional:
                kept = h.shape[-1] // 2
                h, z = tf.split(h, [kept, -1], axis=-1)
                eps, prior_logdet = prior.whiten(z, h, cond)
            else:
                eps, prior_logdet = prior.whiten(h, singer=cond)
            logdet += prior_logdet
            latents.append(eps)
        return latents, logdet

    def _inverse(self, latents, cond=None):
        h = None
        for level in reversed(range(self.l_glow)):
            prior = self.priors[level]
            if prior.conditional:
                h = tf.concat([h, prior.color(latents[level], h, cond)], axis=-1)
            else:
                h = prior.color(latents[level], singer=cond)
            for step in reversed(self.levels[level]):
                h = step.inverse(h, cond)
            h = unsqueeze(h, self.time_only)
        return h

    def _flatten(self, latents) -> tf.Tensor:
        batch = tf.shape(latents[0])[0]
        return tf.concat([tf.reshape(z, [batch, -1]) for z in latents], axis=1)

    def _unflatten(self, z: tf.Tensor):
        """(B, D) -> the list of latent pieces; H is recovered from D."""
        height, width, channels = self.image_shape
        batch = tf.shape(z)[0]
        per_step = width * channels  # dimensions per input time step
        time_steps = tf.shape(z)[1] // per_step
        sizes, shapes = [], []
        for level, (w, c) in enumerate(self.latent_shapes):
            h = time_steps // 2 ** (level + 1)
            sizes.append(h * w * c)
            shapes.append([batch, h, w, c])
        pieces = tf.split(z, sizes, axis=1)
        return [tf.reshape(p, s) for p, s in zip(pieces, shapes)]

    # ------------------------------------------------------------------ public API
    def call(self, x, singer=None):
        """Keras entry point: the forward (encoding) direction, returns (z, logdet)."""
        return self.encode(x, singer)

    def initialize(self, x: tf.Tensor, singer=None) -> bool:
        """Data-dependent ActNorm initialisation on the batch ``x`` (of singers ``singer``);
        runs at most once.

        Returns True if it initialised, False if the model was already initialised (for example
        restored from a checkpoint), in which case nothing changes.
        """
        if self.is_initialized():
            return False
        self._forward(tf.convert_to_tensor(x, tf.float32), self.singer_condition(singer),
                      initialize=True)
        return True

    def is_initialized(self) -> bool:
        return all(bool(step.actnorm.initialized.numpy()) for steps in self.levels for step in steps)

    @tf.function(reduce_retracing=True)
    def encode(self, x, singer=None):
        """x (B, H, W, C) -> (z (B, D) whitened latent, logdet (B,) nats of x -> z), under
        ``singer`` for a conditional model."""
        cond = self.singer_condition(singer)
        latents, logdet = self._forward(tf.convert_to_tensor(x, tf.float32), cond)
        return self._flatten(latents), logdet

    @tf.function(reduce_retracing=True)
    def decode(self, z, singer=None):
        """z (B, D) -> x (B, H, W, C) with H = D / (W * C); the exact inverse of :meth:`encode`
        under the same ``singer`` (conversion: decode under another one)."""
        cond = self.singer_condition(singer)
        return self._inverse(self._unflatten(tf.convert_to_tensor(z, tf.float32)), cond)

    def log_prob(self, x, singer=None):
        """log p(x) (or log p(x | singer)) in nats, shape (B,): sum log N(z; 0, 1) + logdet."""
        z, logdet = self.encode(x, singer)
        return standard_normal_log_prob(z) + logdet

    def bits_per_dim(self, x, singer=None):
        """-log p(x) / (D ln 2), shape (B,), with D = H * W * C of ``x``."""
        x = tf.convert_to_tensor(x, tf.float32)
        dims = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
        return -self.log_prob(x, singer) / (dims * math.log(2.0))

    def sample(self, n: int, temperature: float = 0.7, time_steps: Optional[int] = None,
               seed: Optional[int] = None, singer=None):
        """Decode ``n`` draws of N(0, T^2 I) (under ``singer``: ``(n,)`` ids or vectors);
        returns (n, time_steps, W, C).

        ``time_steps`` defaults to the training patch length and must divide by ``2**L``.
        """
        height, width, channels = self.image_shape
        time_steps = time_steps or height
        if time_steps % 2 ** self.l_glow:
            raise ValueError(f"time_steps={time_steps} must divide by 2**l_glow={2 ** self.l_glow}")
        shape = (n, time_steps * width * channels)
        if seed is None:
            eps = tf.random.normal(shape)
        else:
            eps = tf.random.stateless_normal(shape, seed=[seed, 0])
        return self.decode(float(temperature) * eps, singer)

    def latent_dims(self, time_steps: Optional[int] = None) -> int:
        """D for an input of ``time_steps`` steps (default: the training patch)."""
        height, width, channels = self.image_shape
        return (time_steps or height) * width * channels


def standard_normal_log_prob(z: tf.Tensor) -> tf.Tensor:
    """sum_i log N(z_i; 0, 1) over the last axis, in nats; z (B, D) -> (B,)."""
    dims = tf.cast(tf.shape(z)[-1], tf.float32)
    return -0.5 * tf.reduce_sum(tf.square(z), axis=-1) - 0.5 * dims * LOG_2PI


def _constant(value: np.ndarray):
    return keras.initializers.Constant(np.asarray(value, dtype=np.float32))

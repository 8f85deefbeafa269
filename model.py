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

Every layer (:mod:`utils.flow.layers`) has ``forward(x) -> (y, logdet)`` with ``logdet`` of
shape ``(B,)`` in nats, and a separate exact ``inverse(y) -> x``. The direction is never chosen by
Keras' ``training`` flag. A singer-conditional Glow (``num_singers > 0``) passes a learned
embedding of the singer to every coupling network and prior: p(x | singer).

The model is fully convolutional: any number of time steps ``H`` that divides by ``2**L`` is
encoded with the same weights (priors do not depend on ``H``), so whole songs can be encoded in one
call. The frequency width ``W`` and channels ``C`` are fixed by the configuration.

References: Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions" (2018);
Dinh et al., "Density estimation using Real NVP" (2017).
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import tensorflow as tf
import keras

from common_definitions import Config
# The layers are re-exported: ``from model import ActNorm`` keeps working.
from utils.flow.context_norm import ContextNorm
from utils.flow.layers import (  # noqa: F401
    ActNorm,
    AffineCoupling,
    CouplingNetwork,
    FlowLayer,
    FlowStep,
    GaussianPrior,
    Invertible1x1Conv,
    SingerNorm,
    ZeroConv2D,
    squeeze,
    unsqueeze,
)

LOG_2PI = math.log(2.0 * math.pi)
# Keyword defaults of Glow(...): the default Config's, so a default lives in one place.
_DEFAULTS = Config()
# Glow's keywords besides input_shape: Config fields of the same names (Glow.from_config).
_GLOW_KEYWORDS = ("k_glow", "l_glow", "hidden_channels", "coupling", "lu_decomposed",
                  "scale_shift", "seed", "singer_dims", "singer_norm", "parallel")


def check_architecture(shape: Tuple[int, ...], k_glow: int, l_glow: int, hidden_channels: int,
                       coupling: str, num_singers: int = 0, parallel: bool = False) -> None:
    """Raise ``ValueError`` (saying how to fix it) for an architecture Glow cannot build: every
    size positive, ``H`` (and ``W`` unless it is 1) dividing by ``2**l_glow``, a known coupling,
    singers for a parallel model."""
    if parallel and num_singers < 1:
        raise ValueError("a parallel model is conditional: give num_singers >= 1")
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (H, W, C) with positive sizes, got {shape}")
    if k_glow < 1 or l_glow < 1 or hidden_channels < 1:
        raise ValueError("k_glow, l_glow and hidden_channels must be positive integers")
    step = 2 ** l_glow
    height, width, _ = shape
    if height % step:
        raise ValueError(
            f"H={height} time steps must divide by 2**l_glow={step}; pad or choose another "
            "window_size or l_glow"
        )
    if width > 1 and width % step:
        raise ValueError(f"W={width} must divide by 2**l_glow={step} (or be 1 for waveforms)")
    if coupling not in ("affine", "additive"):
        raise ValueError(f"coupling must be 'affine' or 'additive', got {coupling!r}")


# ----------------------------------------------------------------------------------------- model
def input_layer(shape: Tuple[int, int, int], num_singers: int, cond_dims: int,
                singer_norm: bool, parallel: bool, hidden_channels: int):
    """A conditional model's first layer: ContextNorm for a parallel model (the target's frames
    standardised given the source's), else SingerNorm when asked for; None otherwise."""
    _, width, channels = shape
    if num_singers and parallel:
        return ContextNorm(width, channels, num_singers, cond_dims, hidden=4 * hidden_channels,
                           name="context_norm")
    if num_singers and singer_norm:
        return SingerNorm(width, channels, cond_dims, name="singer_norm")
    return None


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
                 singer_norm: bool = _DEFAULTS.singer_norm, parallel: bool = _DEFAULTS.parallel,
                 name: str = "glow", **kwargs):
        super().__init__(name=name, **kwargs)
        shape = tuple(int(s) for s in input_shape)
        self.k_glow, self.l_glow = int(k_glow), int(l_glow)
        self.hidden_channels, self.coupling = int(hidden_channels), coupling
        self.lu_decomposed = bool(lu_decomposed)
        self.scale_shift, self.seed = float(scale_shift), int(seed)
        self.num_singers, self.singer_dims = int(num_singers), int(singer_dims)
        self.parallel = bool(parallel)
        self.singer_norm = bool(singer_norm) and not self.parallel
        check_architecture(shape, self.k_glow, self.l_glow, self.hidden_channels,
                           self.coupling, self.num_singers, self.parallel)
        cond_dims = self.singer_dims if self.num_singers else 0
        self.image_shape = shape
        height, width, channels = shape
        self.input_norm = input_layer(shape, self.num_singers, cond_dims, self.singer_norm,
                                      self.parallel, self.hidden_channels)
        if self.num_singers:
            # Unit-variance embeddings: distinct singers start far apart in conditioning space.
            # Every use of an embedding is a trained map of it, so with SingerNorm or ContextNorm
            # (which read it) it is fixed, at no loss while the singers are <= singer_dims.
            self.singer_embedding = self.add_weight(
                shape=(self.num_singers, self.singer_dims), name="singer_embedding",
                initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.seed),
                trainable=self.input_norm is None)
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
        zeros = tf.zeros((1, *self.image_shape))
        self._forward(zeros, tf.zeros((1, cond_dims)) if cond_dims else None,
                      context=zeros if self.parallel else None)
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

    # ------------------------------------------------------------------ core passes
    def _forward(self, x, cond=None, initialize: bool = False, compute_dtype=None, context=None):
        """x (B, H, W, C), cond (B, singer_dims) or None, a parallel model's context (the source's
        frames, like x) -> (whitened latents, logdet (B,)).

        ``compute_dtype`` (bf16/fp16, training only; see :meth:`train_encode`): the coupling
        networks' and split priors' convolutions in that dtype."""
        logdet = tf.zeros([tf.shape(x)[0]])
        latents = []
        h = x
        if self.input_norm is not None:
            h, logdet = self.input_norm.forward(h, cond, context, self.singer_embedding)
        for level, steps in enumerate(self.levels):
            h = squeeze(h, self.time_only)
            for step in steps:
                if initialize:
                    # Only the ActNorm is set from data, on the input this step really sees.
                    step.actnorm.initialize(h)
                h, step_logdet = step.forward(h, cond, compute_dtype)
                logdet += step_logdet
            prior = self.priors[level]
            if prior.conditional:
                kept = h.shape[-1] // 2
                h, z = tf.split(h, [kept, -1], axis=-1)
                eps, prior_logdet = prior.whiten(z, h, cond, compute_dtype=compute_dtype)
            else:
                eps, prior_logdet = prior.whiten(h, singer=cond)
            logdet += prior_logdet
            latents.append(eps)
        return latents, logdet

    def _inverse(self, latents, cond=None, context=None):
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
        if self.input_norm is not None:
            h = self.input_norm.inverse(h, cond, context, self.singer_embedding)
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
    def call(self, x, singer=None, context=None):
        """Keras entry point: the forward (encoding) direction, returns (z, logdet)."""
        return self.encode(x, singer, context)

    def initialize(self, x: tf.Tensor, singer=None, context=None) -> bool:
        """Data-dependent ActNorm (and SingerNorm or ContextNorm, unless already set: the trainer
        sets them from several batches) initialisation on the batch ``x`` (of singers ``singer``
        (B,) ids; a parallel model's source frames ``context``); runs at most once.

        Returns True if it initialised, False if the model was already initialised (for example
        restored from a checkpoint), in which case nothing changes.
        """
        if self.is_initialized():
            return False
        x = tf.convert_to_tensor(x, tf.float32)
        cond = self.singer_condition(singer)
        if self.input_norm is not None:
            singer = tf.convert_to_tensor(singer)
            if singer.dtype.is_floating:
                raise ValueError("initialising an input normalisation needs singer ids, not "
                                 "vectors")
            if self.parallel:
                self.input_norm.initialize(x, context, singer)
            else:
                self.input_norm.initialize(x, singer, self.singer_embedding)
        self._forward(x, cond, initialize=True, context=context)
        return True

    def is_initialized(self) -> bool:
        flags = [step.actnorm.initialized for steps in self.levels for step in steps]
        if self.input_norm is not None:
            flags.append(self.input_norm.initialized)
        return all(bool(flag.numpy()) for flag in flags)

    @tf.function(reduce_retracing=True)
    def encode(self, x, singer=None, context=None):
        """x (B, H, W, C) -> (z (B, D) whitened latent, logdet (B,) nats of x -> z), under
        ``singer`` for a conditional model, given the source's frames ``context`` (B, H, W, C)
        for a parallel one."""
        cond = self.singer_condition(singer)
        latents, logdet = self._forward(tf.convert_to_tensor(x, tf.float32), cond,
                                        context=context)
        return self._flatten(latents), logdet

    def train_encode(self, x, singer=None, compute_dtype=tf.float32, context=None):
        """:meth:`encode` as a mixed-precision train step computes it (utils/training/precision.py):
        the coupling networks' and split priors' convolutions in ``compute_dtype`` (bf16 or fp16),
        everything else, the variables and the returned ``(z (B, D), logdet (B,) nats)`` float32.

        Not a ``tf.function`` of its own: it is traced into the caller's step, so a
        low-precision graph is never cached as one of :meth:`encode`'s, which (with
        :meth:`decode`) stays float32 and exactly invertible whatever precision trained the
        weights.
        """
        cond = self.singer_condition(singer)
        latents, logdet = self._forward(tf.convert_to_tensor(x, tf.float32), cond,
                                        compute_dtype=compute_dtype, context=context)
        return self._flatten(latents), logdet

    @tf.function(reduce_retracing=True)
    def decode(self, z, singer=None, context=None):
        """z (B, D) -> x (B, H, W, C) with H = D / (W * C); the exact inverse of :meth:`encode`
        under the same ``singer`` and ``context`` (conversion: decode under another singer, or a
        parallel model's draw under the source's frames)."""
        cond = self.singer_condition(singer)
        return self._inverse(self._unflatten(tf.convert_to_tensor(z, tf.float32)), cond,
                             context)

    def log_prob(self, x, singer=None, context=None):
        """log p(x) (or log p(x | singer[, context])) in nats, shape (B,): sum log N(z; 0, 1) +
        logdet."""
        z, logdet = self.encode(x, singer, context)
        return standard_normal_log_prob(z) + logdet

    def bits_per_dim(self, x, singer=None, context=None):
        """-log p(x) / (D ln 2), shape (B,), with D = H * W * C of ``x``."""
        x = tf.convert_to_tensor(x, tf.float32)
        dims = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
        return -self.log_prob(x, singer, context) / (dims * math.log(2.0))

    def sample(self, n: int, temperature: float = 0.7, time_steps: Optional[int] = None,
               seed: Optional[int] = None, singer=None, context=None):
        """Decode ``n`` draws of N(0, T^2 I) (under ``singer``: ``(n,)`` ids or vectors; a
        parallel model given ``context``) into (n, time_steps, W, C); ``time_steps`` (the
        context's, else by default the training patch's) must divide by ``2**L``."""
        height, width, channels = self.image_shape
        time_steps = int(context.shape[1]) if context is not None else (time_steps or height)
        if time_steps % 2 ** self.l_glow:
            raise ValueError(f"time_steps={time_steps} must divide by 2**l_glow={2 ** self.l_glow}")
        shape = (n, time_steps * width * channels)
        if seed is None:
            eps = tf.random.normal(shape)
        else:
            eps = tf.random.stateless_normal(shape, seed=[seed, 0])
        return self.decode(float(temperature) * eps, singer, context)

    def latent_dims(self, time_steps: Optional[int] = None) -> int:
        """D for an input of ``time_steps`` steps (default: the training patch)."""
        height, width, channels = self.image_shape
        return (time_steps or height) * width * channels


def standard_normal_log_prob(z: tf.Tensor) -> tf.Tensor:
    """sum_i log N(z_i; 0, 1) over the last axis, in nats; z (B, D) -> (B,)."""
    dims = tf.cast(tf.shape(z)[-1], tf.float32)
    return -0.5 * tf.reduce_sum(tf.square(z), axis=-1) - 0.5 * dims * LOG_2PI


def __getattr__(name: str):
    """``model.GlowBijector`` (:mod:`utils.flow.bijector`), imported on first use: TensorFlow
    Probability adds seconds to ``import model``."""
    if name == "GlowBijector":
        from utils.flow.bijector import GlowBijector

        return GlowBijector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

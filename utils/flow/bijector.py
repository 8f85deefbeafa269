"""A trained Glow seen from TensorFlow Probability: :class:`GlowBijector`.

``GlowBijector(glow)`` is a ``tfp.bijectors.Bijector`` whose *forward* map is the model's
``decode`` (latent ``z (..., D)`` -> features ``x (..., H, W, C)``) and whose *inverse* is its
``encode``. With the standard normal of the whitened latent as base distribution, the
transformed distribution is the model itself::

    import tensorflow_probability as tfp
    tfd = tfp.distributions
    flow = tfd.TransformedDistribution(
        tfd.Independent(tfd.Normal(tf.zeros(glow.latent_dims()), 1.0), 1),
        GlowBijector(glow))
    flow.log_prob(x)          # == glow.log_prob(x), (B,) nats
    flow.sample(8, seed=...)  # (8, H, W, C) == glow.sample(8, temperature=1.0, ...)

Log-determinants are exact and in nats: ``inverse_log_det_jacobian(x, event_ndims=3)`` is
encode's ``logdet = log|det dz/dx|`` and ``forward_log_det_jacobian(z, event_ndims=1)`` is
``-logdet`` at ``x = decode(z)``. ``encode`` returns ``z`` and ``logdet`` together, so one
``log_prob`` runs the model once: the inverse caches its log-determinant (the pattern of
``tfp.bijectors.FFJORD``).

Shapes: the forward event is ``(D,)`` with ``D = H * W * C``; the inverse event is ``(H, W, C)``
with ``W, C`` fixed by the model and ``H`` any multiple of ``2**L`` (the model is fully
convolutional, so one bijector serves patches and whole songs alike; the base distribution fixes
``D``). Any leading sample and batch dimensions are flattened into one model batch and restored.

A singer-conditional model (``glow.conditional``) needs the singer it is conditioned on: given at
construction (``GlowBijector(glow, singer=ids)``) or per call through TFP's keyword routing
(``flow.log_prob(x, bijector_kwargs={"singer": ids})``; a per-call singer wins). ``singer`` is a
scalar id (one singer for every example), ``(...,)`` int ids or ``(..., singer_dims)`` float
conditioning vectors, broadcast against the leading dimensions of the input. An unconditional
model refuses a singer.

This module duck-types the model (``encode``, ``decode``, ``image_shape``, ``l_glow``,
``conditional``, ``singer_condition``, ``variables``) and imports no project module, so it sits
below ``model.py`` (which re-exports :class:`GlowBijector` lazily: TFP costs seconds to import).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

try:  # the cache that stores what the decorated directions return beside their result
    from tensorflow_probability.python.internal import cache_util as _cache_util
except ImportError:  # pragma: no cover - another TFP layout: the default cache (encode twice)
    _cache_util = None


class GlowBijector(tfp.bijectors.Bijector):
    """``forward = glow.decode``, ``inverse = glow.encode``, exact log-det Jacobians (nats).

    Args:
        glow: a :class:`model.Glow` (ActNorm initialised or restored).
        singer: for a conditional model, the default singer of every call: a scalar or
            ``(...,)`` int ids, or ``(..., singer_dims)`` float vectors; None to give it per call
            (``singer=`` keyword of each method, ``bijector_kwargs`` of a
            ``TransformedDistribution``). Refused for an unconditional model.
        validate_args: also check at run time that the time steps divide by ``2**L`` (static
            shapes are always checked).
        name: the bijector's name scope.

    Event shapes: forward ``(D,) -> (D / (W C), W, C)``, inverse ``(H, W, C) -> (H W C,)``;
    ``D`` must divide by ``W * C * 2**L``. ``trainable_variables`` are the model's, so a TFP
    training loop over the transformed distribution trains the Glow.
    """

    if _cache_util is not None:
        # encode gives z and the log-determinant at once: keep the latter with the cached pair.
        _cache = _cache_util.BijectorCacheWithGreedyAttrs(
            forward_name="_augmented_forward", inverse_name="_augmented_inverse")

    def __init__(self, glow, singer=None, validate_args: bool = False, name: str = "glow"):
        parameters = dict(locals())
        conditional = bool(getattr(glow, "conditional", False))
        if singer is not None and not conditional:
            raise ValueError("GlowBijector: this model is unconditional: it takes no singer")
        with tf.name_scope(name) as name_scope:
            self._glow = glow
            self._singer = None if singer is None else tf.convert_to_tensor(singer)
            if self._singer is not None:
                glow.singer_condition(self._singer)  # refuses what the model cannot condition on
            # tf.Module does not look inside Keras objects: list the model's tf.Variables so that
            # ``trainable_variables`` (of the bijector and of a distribution over it) are its.
            self._glow_variables = tuple(getattr(v, "value", v) for v in glow.variables)
            _, width, channels = (int(s) for s in glow.image_shape)
            self._width, self._channels = width, channels
            self._time_multiple = 2 ** int(glow.l_glow)
            super().__init__(forward_min_event_ndims=1, inverse_min_event_ndims=3,
                             is_constant_jacobian=False, validate_args=validate_args,
                             dtype=tf.float32, parameters=parameters, name=name_scope)

    @classmethod
    def _parameter_properties(cls, dtype=None, num_classes=None):
        # The model's weights are not batched parameters: the bijector has batch shape ().
        return dict()

    @property
    def glow(self):
        """The wrapped model."""
        return self._glow

    @property
    def singer(self):
        """The singer given at construction (a tensor), or None."""
        return self._singer

    # ------------------------------------------------------------------ shapes
    @property
    def _per_step(self) -> int:
        """Latent dimensions per input time step, ``W * C``."""
        return self._width * self._channels

    def _check_static_steps(self, steps, what: str) -> None:
        if steps is not None and steps % self._time_multiple:
            raise ValueError(f"GlowBijector: {what} must divide by 2**L = {self._time_multiple}, "
                             f"got {steps}")

    def _forward_event_shape(self, input_shape):
        dims = tf.compat.dimension_value(tf.TensorShape(input_shape)[-1])
        if dims is not None and dims % (self._per_step * self._time_multiple):
            raise ValueError(f"GlowBijector: D={dims} latent dimensions are not a number of time "
                             f"steps (W*C = {self._per_step} dimensions each) that divides by "
                             f"2**L = {self._time_multiple}")
        steps = None if dims is None else dims // self._per_step
        return tf.TensorShape([steps, self._width, self._channels])

    def _forward_event_shape_tensor(self, input_shape):
        steps = input_shape[-1] // self._per_step
        return tf.stack([steps, self._width, self._channels])

    def _inverse_event_shape(self, output_shape):
        shape = tf.TensorShape(output_shape)
        steps = tf.compat.dimension_value(shape[-3])
        self._check_static_steps(steps, "the time steps H")
        return tf.TensorShape([None if steps is None else steps * self._per_step])

    def _inverse_event_shape_tensor(self, output_shape):
        return tf.reshape(output_shape[-3] * self._per_step, [1])

    # ------------------------------------------------------------------ the model
    def _condition(self, singer, lead):
        """The conditioning vectors ``(prod(lead), singer_dims)`` of a batch of leading shape
        ``lead``, or None for an unconditional model."""
        if not self._glow.conditional:
            if singer is not None:
                raise ValueError("GlowBijector: this model is unconditional: it takes no singer")
            return None
        singer = self._singer if singer is None else tf.convert_to_tensor(singer)
        if singer is None:
            raise ValueError(
                f"GlowBijector: the model is conditional on {self._glow.num_singers} singers: give "
                "GlowBijector(glow, singer=ids) or the singer per call (bijector_kwargs="
                "{'singer': ids} of a TransformedDistribution)")
        cond = self._glow.singer_condition(singer)  # (..., singer_dims): looked up now (trainable)
        dims = tf.shape(cond)[-1:]
        cond = tf.broadcast_to(cond, tf.concat([lead, dims], axis=0))
        return tf.reshape(cond, tf.concat([[-1], dims], axis=0))

    def _assert_steps(self, steps):
        if not self.validate_args:
            return []
        return [tf.debugging.assert_equal(
            steps % self._time_multiple, 0,
            message=f"GlowBijector: the time steps must divide by 2**L = {self._time_multiple}")]

    def _augmented_inverse(self, x, singer=None):
        """encode: x ``(..., H, W, C)`` -> (z ``(..., D)``, {"ildj": logdet ``(...)``,
        "fldj": -logdet}), logdet = log|det dz/dx| in nats."""
        x = tf.convert_to_tensor(x, tf.float32)
        self._check_static_steps(tf.compat.dimension_value(x.shape[-3]), "the time steps H")
        shape = tf.shape(x)
        lead, event = shape[:-3], shape[-3:]
        with tf.control_dependencies(self._assert_steps(event[0])):
            flat = tf.reshape(x, tf.concat([[-1], event], axis=0))
        z, logdet = self._glow.encode(flat, self._condition(singer, lead))
        z = tf.reshape(z, tf.concat([lead, [event[0] * self._per_step]], axis=0))
        logdet = tf.reshape(logdet, lead)
        return z, {"ildj": logdet, "fldj": -logdet}

    def _augmented_forward(self, z, singer=None):
        """decode: z ``(..., D)`` -> (x ``(..., D / (W C), W, C)``, None): the log-determinant of
        decode is only known from an encode (:meth:`_forward_log_det_jacobian`)."""
        z = tf.convert_to_tensor(z, tf.float32)
        self._forward_event_shape(z.shape[-1:])  # static check of D
        shape = tf.shape(z)
        lead, dims = shape[:-1], shape[-1]
        steps = dims // self._per_step
        with tf.control_dependencies(self._assert_steps(steps)):
            flat = tf.reshape(z, [-1, dims])
        x = self._glow.decode(flat, self._condition(singer, lead))
        return tf.reshape(x, tf.concat([lead, [steps, self._width, self._channels]], 0)), None

    def _forward(self, z, singer=None):
        """decode: z ``(..., D)`` -> x ``(..., H, W, C)``."""
        return self._augmented_forward(z, singer)[0]

    def _inverse(self, x, singer=None):
        """encode: x ``(..., H, W, C)`` -> z ``(..., D)``."""
        return self._augmented_inverse(x, singer)[0]

    def _inverse_log_det_jacobian(self, x, singer=None):
        """log|det dz/dx| at x ``(..., H, W, C)``, ``(...)`` nats (encode's logdet)."""
        if _cache_util is not None:
            cached = self._cache.inverse_attributes(x, **self._kwargs(singer))
            if "ildj" not in cached:
                cached.update(self._augmented_inverse(x, singer)[1])
            return cached["ildj"]
        return self._augmented_inverse(x, singer)[1]["ildj"]

    def _forward_log_det_jacobian(self, z, singer=None):
        """log|det dx/dz| at z ``(..., D)``, ``(...)`` nats: ``-logdet`` of encode at
        ``x = decode(z)`` (exact: the maps are inverses)."""
        if _cache_util is not None:
            cached = self._cache.forward_attributes(z, **self._kwargs(singer))
            if "fldj" not in cached:
                x = self.forward(z, **self._kwargs(singer))
                cached.update(self._augmented_inverse(x, singer)[1])
            return cached["fldj"]
        return self._augmented_inverse(self.forward(z, **self._kwargs(singer)), singer)[1]["fldj"]

    @staticmethod
    def _kwargs(singer) -> dict:
        """The keywords as TFP's cache keys them: a singer only when one was passed per call."""
        return {} if singer is None else {"singer": singer}

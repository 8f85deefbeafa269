"""model.GlowBijector: the Glow as a tfp.bijectors.Bijector (forward = decode, inverse = encode),
whose TransformedDistribution over N(0, I) is the model's log_prob and sampler."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import model
from model import Glow
from tests.conftest import run_python

tfd = tfp.distributions


def _ready(glow, x, singer=None, scale=0.02, seed=0):
    """ActNorm-initialise ``glow`` on ``x`` and move every trainable weight off its
    identity-like start, so that every layer (and the log-determinant) does something."""
    assert glow.initialize(x, singer)
    rng = np.random.default_rng(seed)
    for v in glow.trainable_variables:
        v.assign(v.numpy() + scale * rng.standard_normal(v.shape).astype(np.float32))
    return glow


def _flow(glow, time_steps=None, **kwargs):
    base = tfd.Independent(tfd.Normal(tf.zeros(glow.latent_dims(time_steps)), 1.0), 1)
    return tfd.TransformedDistribution(base, model.GlowBijector(glow, **kwargs))


def _normal(shape, seed):
    return tf.random.stateless_normal(shape, seed=[seed, 7])


@pytest.fixture(scope="module")
def small():
    """A K=1, L=2 model on (8, 4, 1) patches: D = 32, small enough for brute-force Jacobians.
    ActNorm is initialised on data of scale 3, so the log-determinant is far from 0."""
    return _ready(Glow(input_shape=(8, 4, 1), k_glow=1, l_glow=2, hidden_channels=8, seed=3),
                  3.0 * _normal((16, 8, 4, 1), 1) + 1.0, scale=0.05)


def test_the_transformed_distribution_is_the_model_on_16384_dimensions():
    glow = _ready(Glow(input_shape=(64, 256, 1), k_glow=2, l_glow=3, hidden_channels=16),
                  _normal((4, 64, 256, 1), 1))
    x = _normal((3, 64, 256, 1), 2)
    flow = _flow(glow)
    assert flow.event_shape == (64, 256, 1) and flow.batch_shape == ()
    assert glow.latent_dims() == 64 * 256
    log_prob, expected = flow.log_prob(x).numpy(), glow.log_prob(x).numpy()
    assert log_prob.shape == (3,)
    np.testing.assert_allclose(log_prob, expected, rtol=0, atol=0.1)
    # Not the base density alone: the log-determinant is large at this size.
    z, logdet = glow.encode(x)
    assert np.all(np.abs(logdet.numpy()) > 100.0)

    # Sampling is decode of the base draws: the same stateless seed gives Glow.sample's patches.
    samples = flow.sample(2, seed=tf.constant([5, 0]))
    np.testing.assert_allclose(samples.numpy(), glow.sample(2, temperature=1.0, seed=5).numpy(),
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(flow.log_prob(samples).numpy(), glow.log_prob(samples).numpy(),
                               rtol=0, atol=0.1)


def test_log_det_jacobians_are_exact_in_both_directions(small):
    bijector = model.GlowBijector(small)
    z = _normal((1, small.latent_dims()), 3)

    def brute_force(fn, at):
        with tf.GradientTape() as tape:
            tape.watch(at)
            out = tf.reshape(fn(at), [-1])
        jac = tape.jacobian(out, at)
        sign, value = np.linalg.slogdet(tf.reshape(jac, [out.shape[0], -1]).numpy().astype(
            np.float64))
        assert sign != 0
        return value

    forward = float(bijector.forward_log_det_jacobian(z, event_ndims=1)[0])
    assert forward == pytest.approx(brute_force(bijector.forward, z), abs=1e-3)
    # A new tensor: the output of forward maps back to the cached z, which no tape can see into.
    x = tf.identity(bijector.forward(z))
    inverse = float(bijector.inverse_log_det_jacobian(x, event_ndims=3)[0])
    assert inverse == pytest.approx(brute_force(bijector.inverse, x), abs=1e-3)
    assert inverse == pytest.approx(-forward, abs=1e-3) and abs(inverse) > 10.0


def test_log_prob_runs_the_model_once(small):
    """inverse and its log-determinant come from one encode (a cached pair), and the log_prob of
    a sample reuses the sample's latent."""

    class Counting:
        """``small`` with its encode and decode calls counted."""

        def __init__(self, glow):
            self.glow, self.calls = glow, {"encode": 0, "decode": 0}

        def __getattr__(self, name):
            return getattr(self.glow, name)

        def encode(self, *args):
            self.calls["encode"] += 1
            return self.glow.encode(*args)

        def decode(self, *args):
            self.calls["decode"] += 1
            return self.glow.decode(*args)

    counting = Counting(small)
    flow = tfd.TransformedDistribution(
        tfd.Independent(tfd.Normal(tf.zeros(small.latent_dims()), 1.0), 1),
        model.GlowBijector(counting))
    x = _normal((5, 8, 4, 1), 4)
    np.testing.assert_allclose(flow.log_prob(x).numpy(), small.log_prob(x).numpy(), atol=1e-4)
    assert counting.calls == {"encode": 1, "decode": 0}
    samples = flow.sample(3, seed=tf.constant([1, 2]))
    flow.log_prob(samples)
    assert counting.calls == {"encode": 2, "decode": 1}


def test_leading_dimensions_whole_songs_and_event_shapes(small):
    bijector = model.GlowBijector(small)
    x = _normal((2, 3, 8, 4, 1), 5)
    z = bijector.inverse(x)
    assert z.shape == (2, 3, 32)
    ildj = bijector.inverse_log_det_jacobian(x, event_ndims=3)
    assert ildj.shape == (2, 3)
    expected_z, expected_logdet = small.encode(tf.reshape(x, (6, 8, 4, 1)))
    np.testing.assert_allclose(z.numpy().reshape(6, 32), expected_z.numpy(), atol=1e-6)
    np.testing.assert_allclose(ildj.numpy().reshape(6), expected_logdet.numpy(), atol=1e-4)
    np.testing.assert_allclose(bijector.forward(tf.identity(z)).numpy(), x.numpy(), atol=1e-4)

    # Fully convolutional: a song four patches long, with a base distribution of its size.
    song = _normal((1, 32, 4, 1), 6)
    flow = _flow(small, time_steps=32)
    assert flow.event_shape == (32, 4, 1)
    np.testing.assert_allclose(flow.log_prob(song).numpy(), small.log_prob(song).numpy(),
                               atol=1e-3)

    assert bijector.forward_event_shape([128]) == (32, 4, 1)
    assert bijector.inverse_event_shape([32, 4, 1]) == (128,)
    assert bijector.forward_event_shape([None]).as_list() == [None, 4, 1]
    with pytest.raises(ValueError, match="2\\*\\*L"):
        bijector.forward_event_shape([36])  # 9 time steps
    with pytest.raises(ValueError, match="2\\*\\*L"):
        bijector.inverse(_normal((1, 6, 4, 1), 7))


def test_graph_mode_gradients_and_trainable_variables(small):
    flow = _flow(small)
    x = _normal((4, 8, 4, 1), 8)
    eager = flow.log_prob(x).numpy()
    np.testing.assert_allclose(tf.function(flow.log_prob)(x).numpy(), eager, atol=1e-4)

    # The distribution's variables are the model's: a TFP training loop trains the Glow.
    variables = flow.trainable_variables
    assert len(variables) == len(small.trainable_variables) > 0
    assert {id(v) for v in variables} == {id(v.value) for v in small.trainable_variables}
    with tf.GradientTape(persistent=True) as tape:
        ours = -tf.reduce_mean(flow.log_prob(x))
        theirs = -tf.reduce_mean(small.log_prob(x))
    for got, want in zip(tape.gradient(ours, variables), tape.gradient(theirs, variables)):
        assert got is not None
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-3, atol=1e-5)


def test_a_conditional_model_takes_its_singer_at_construction_or_per_call():
    x = _normal((4, 8, 8, 1), 9)
    ids = tf.constant([0, 1, 1, 0])
    glow = _ready(Glow(input_shape=(8, 8, 1), k_glow=1, l_glow=2, hidden_channels=8,
                       num_singers=2, singer_dims=4), x, ids, scale=0.05)
    flow = _flow(glow, singer=ids)
    expected = glow.log_prob(x, ids).numpy()
    np.testing.assert_allclose(flow.log_prob(x).numpy(), expected, atol=1e-4)
    other = glow.log_prob(x, 1 - ids).numpy()
    assert np.max(np.abs(other - expected)) > 1e-2  # the singer matters to the density
    # A per-call singer wins over the constructor's; a scalar id conditions every example.
    np.testing.assert_allclose(flow.log_prob(x, bijector_kwargs={"singer": 1 - ids}).numpy(),
                               other, atol=1e-4)
    np.testing.assert_allclose(_flow(glow, singer=1).log_prob(x).numpy(),
                               glow.log_prob(x, tf.ones(4, tf.int32)).numpy(), atol=1e-4)
    # Conditioning vectors (e.g. a mix of two singers) pass through.
    mix = 0.5 * (glow.singer_condition([0]) + glow.singer_condition([1]))
    np.testing.assert_allclose(_flow(glow, singer=mix[0]).log_prob(x).numpy(),
                               glow.log_prob(x, tf.tile(mix, [4, 1])).numpy(), atol=1e-4)
    # Samples decode under the singer: encoding them under it gives the base draws back.
    samples = flow.sample(4, seed=tf.constant([3, 0]))
    np.testing.assert_allclose(samples.numpy(),
                               glow.sample(4, temperature=1.0, seed=3, singer=ids).numpy(),
                               atol=1e-5)

    with pytest.raises(ValueError, match="conditional on 2 singers"):
        _flow(glow).log_prob(x)
    unconditional = Glow(input_shape=(8, 8, 1), k_glow=1, l_glow=2, hidden_channels=8)
    with pytest.raises(ValueError, match="unconditional"):
        model.GlowBijector(unconditional, singer=0)


def test_import_model_does_not_import_tensorflow_probability():
    """TFP costs seconds to import: ``model`` loads it only when GlowBijector is asked for."""
    code = "\n".join([
        "import sys, model",
        "assert 'tensorflow_probability' not in sys.modules",
        "assert model.GlowBijector.__module__ == 'utils.flow.bijector'",
        "assert 'tensorflow_probability' in sys.modules",
        "assert not hasattr(model, 'NoSuchThing')",
    ])
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]

"""GEMM formulations of the coupling networks' thin convolutions (utils/flow/ops.py).

They must be the same function as ``tf.nn.conv2d(..., padding='SAME')``, with the same gradients,
and a flow built on them must keep its exact inverse and its brute-force log-determinant.
"""

import numpy as np
import pytest
import tensorflow as tf

import utils.flow.layers as model_module
from model import AffineCoupling, Glow
from utils.flow.ops import conv_from_few, conv_to_few

from test_model import _brute_force_logdet, _perturb

CONV_CASES = [
    # (batch, height, width, in channels, out channels, kernel height, kernel width)
    (2, 6, 8, 2, 16, 3, 3),
    (2, 6, 8, 16, 4, 3, 3),
    (3, 8, 1, 4, 12, 3, 1),
    (3, 8, 1, 12, 4, 3, 1),
    (1, 5, 7, 3, 2, 1, 3),
    (1, 5, 7, 3, 2, 5, 5),
]


def _conv_and_grads(fn, x, kernel, upstream):
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        out = fn(x, kernel)
        loss = tf.reduce_sum(out * upstream)
    return (out, *tape.gradient(loss, [x, kernel]))


@pytest.mark.parametrize("fn", [conv_from_few, conv_to_few], ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_values_and_gradients_equal_conv2d_same(fn, case):
    batch, height, width, c_in, c_out, kh, kw = case
    rng = np.random.default_rng(sum(case))
    x = tf.constant(rng.standard_normal((batch, height, width, c_in)), tf.float32)
    kernel = tf.constant(rng.standard_normal((kh, kw, c_in, c_out)), tf.float32)
    upstream = tf.constant(rng.standard_normal((batch, height, width, c_out)), tf.float32)
    got = _conv_and_grads(fn, x, kernel, upstream)
    reference = _conv_and_grads(lambda a, k: tf.nn.conv2d(a, k, 1, "SAME"), x, kernel, upstream)
    for name, g, r in zip(("output", "d input", "d kernel"), got, reference):
        assert g.shape == r.shape, name
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-5, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("fn", [conv_from_few, conv_to_few], ids=lambda f: f.__name__)
def test_traced_once_for_any_spatial_size(fn):
    kernel = tf.random.stateless_normal((3, 3, 4, 4), seed=[1, 2])

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 4], tf.float32)])
    def value_and_grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = fn(x, kernel)
            loss = tf.reduce_sum(out ** 2)
        return out, tape.gradient(loss, x)

    for shape in [(1, 4, 6, 4), (2, 9, 3, 4)]:
        x = tf.random.stateless_normal(shape, seed=[3, 4])
        out, grad = value_and_grad(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            expected = tf.nn.conv2d(x, kernel, 1, "SAME")
            expected_loss = tf.reduce_sum(expected ** 2)
        expected_grad = tape.gradient(expected_loss, x)
        np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(grad.numpy(), expected_grad.numpy(), rtol=1e-5, atol=1e-3)
    assert value_and_grad.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("fn", [conv_from_few, conv_to_few], ids=lambda f: f.__name__)
def test_even_kernel_is_refused(fn):
    with pytest.raises(ValueError, match="odd kernel"):
        fn(tf.zeros((1, 4, 4, 2)), tf.zeros((2, 2, 2, 2)))


# ----------------------------------------------------------------------------- inside the flow
@pytest.fixture
def gemm_everywhere(monkeypatch):
    """Route every coupling network built from now on through the GEMM convolutions."""
    monkeypatch.setattr(model_module, "_GEMM_MAX_CONDITIONING_CHANNELS", 10 ** 9)


def test_thin_coupling_networks_take_the_gemm_route():
    thin = AffineCoupling(8, 32, (3, 3)).network          # conditioned on 4 channels
    wide = AffineCoupling(16, 32, (3, 3)).network         # conditioned on 8
    assert thin.gemm and thin.conv_out.gemm
    assert not wide.gemm and not wide.conv_out.gemm


@pytest.mark.parametrize("coupling", ["affine", "additive"])
def test_gemm_coupling_inverse_and_logdet_match_jacobian(gemm_everywhere, coupling):
    layer = AffineCoupling(16, 32, (3, 3), coupling)
    x = tf.random.stateless_normal((1, 4, 2, 16), seed=[1, 2])
    layer(x)
    assert layer.network.gemm
    for v in layer.trainable_variables:
        v.assign(v + 0.1 * tf.random.stateless_normal(v.shape, seed=[3, 4]))
    y, logdet = layer.forward(x)
    np.testing.assert_allclose(layer.inverse(y).numpy(), x.numpy(), atol=1e-5)
    expected = _brute_force_logdet(lambda t: layer.forward(t)[0], x)
    assert abs(float(logdet[0]) - expected) < 1e-3


@pytest.mark.parametrize("shape", [(16, 8, 1), (64, 1, 1)])
def test_gemm_glow_matches_conv2d_glow(monkeypatch, shape):
    """Same weights, both routes: equal log p(x), equal gradients, exact round trip."""
    x = tf.random.stateless_normal((4, *shape), seed=[5, 6])
    weights = None
    results = []
    for max_channels in (0, 10 ** 9):  # conv2d everywhere, then GEMMs everywhere
        monkeypatch.setattr(model_module, "_GEMM_MAX_CONDITIONING_CHANNELS", max_channels)
        model = Glow(input_shape=shape, k_glow=2, l_glow=2, hidden_channels=32)
        routes = {step.coupling.network.gemm for steps in model.levels for step in steps}
        assert routes == {bool(max_channels)}
        model.initialize(x)
        if weights is None:
            _perturb(model, 0.05, seed=8)
            weights = model.get_weights()
        else:
            model.set_weights(weights)
        with tf.GradientTape() as tape:
            log_prob = model.log_prob(x)
            loss = -tf.reduce_sum(log_prob)
        grads = tape.gradient(loss, model.trainable_variables)
        z, _ = model.encode(x)
        assert float(tf.reduce_max(tf.abs(model.decode(z) - x))) <= 1e-4
        results.append((log_prob.numpy(), [g.numpy() for g in grads]))
    (lp_conv, g_conv), (lp_gemm, g_gemm) = results
    np.testing.assert_allclose(lp_gemm, lp_conv, rtol=1e-5, atol=1e-3)
    for a, b in zip(g_gemm, g_conv):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_gemm_glow_logdet_equals_brute_force_jacobian(gemm_everywhere):
    # Three channels in: every level's couplings are conditioned on more than 4 channels.
    model = Glow(input_shape=(8, 4, 3), k_glow=2, l_glow=2, hidden_channels=16)
    assert all(step.coupling.network.gemm for steps in model.levels for step in steps)
    model.initialize(tf.random.stateless_normal((8, 8, 4, 3), seed=[10, 11]))
    _perturb(model, 0.05)
    x = tf.random.stateless_normal((1, 8, 4, 3), seed=[12, 13])
    _, logdet = model.encode(x)
    expected = _brute_force_logdet(lambda t: model.encode(t)[0], x)
    assert abs(float(logdet[0]) - expected) <= 1e-3

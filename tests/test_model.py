"""The Glow model: every layer's forward/inverse/log-det, and the model contract of DESIGN.md."""

import math

import numpy as np
import pytest
import tensorflow as tf

from common_definitions import Config
from model import (
    ActNorm,
    AffineCoupling,
    FlowStep,
    GaussianPrior,
    Glow,
    Invertible1x1Conv,
    SingerNorm,
    squeeze,
    unsqueeze,
)


def _perturb(model, scale=0.05, seed=0):
    """Move every trainable weight off its (identity-like) initial value."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(v.numpy() + scale * rng.standard_normal(v.shape).astype(np.float32))


def _brute_force_logdet(fn, x):
    """log|det d fn(x) / dx| of one example ``x (1, ...)``: :func:`_brute_force_logdets`."""
    return float(_brute_force_logdets(fn, x)[0])


def _brute_force_logdets(fn, x):
    """log|det d fn(x)_b / dx_b| ``(B,)`` of each example of a batch ``x`` whose rows ``fn`` maps
    independently (one ``GradientTape.batch_jacobian`` for the whole batch) + float64 slogdet."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reshape(fn(x), [x.shape[0], -1])
    jac = tape.batch_jacobian(y, x)
    jac = tf.reshape(jac, [x.shape[0], y.shape[1], -1]).numpy().astype(np.float64)
    sign, logabsdet = np.linalg.slogdet(jac)
    assert np.all(sign != 0)
    return logabsdet


# ----------------------------------------------------------------------------- single layers
LAYER_CASES = {
    "actnorm": lambda c: ActNorm(c),
    "invconv_lu": lambda c: Invertible1x1Conv(c, lu_decomposed=True, seed=1),
    "invconv_plain": lambda c: Invertible1x1Conv(c, lu_decomposed=False, seed=1),
    "affine": lambda c: AffineCoupling(c, 8, (3, 3), "affine"),
    "additive": lambda c: AffineCoupling(c, 8, (3, 3), "additive"),
    "step": lambda c: FlowStep(c, 8, (3, 3), "affine", True, 2.0, seed=2),
}


@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_layer_inverse_and_logdet_match_jacobian(name):
    channels = 4
    layer = LAYER_CASES[name](channels)
    x = tf.random.stateless_normal((1, 4, 4, channels), seed=[1, 2])
    layer(x)  # build
    for v in layer.trainable_variables:
        v.assign(v + 0.1 * tf.random.stateless_normal(v.shape, seed=[3, 4]))
    y, logdet = layer.forward(x)
    assert logdet.shape == (1,)
    np.testing.assert_allclose(layer.inverse(y).numpy(), x.numpy(), atol=1e-5)
    expected = _brute_force_logdet(lambda t: layer.forward(t)[0], x)
    assert abs(float(logdet[0]) - expected) < 1e-3


def test_gaussian_prior_whiten_color_and_logdet():
    prior = GaussianPrior(2, cond_channels=2)
    cond = tf.random.stateless_normal((1, 4, 4, 2), seed=[5, 6])
    z = tf.random.stateless_normal((1, 4, 4, 2), seed=[7, 8])
    prior.whiten(z, cond)
    for v in prior.trainable_variables:
        v.assign(v + 0.1 * tf.random.stateless_normal(v.shape, seed=[9, 9]))
    eps, logdet = prior.whiten(z, cond)
    np.testing.assert_allclose(prior.color(eps, cond).numpy(), z.numpy(), atol=1e-5)
    expected = _brute_force_logdet(lambda t: prior.whiten(t, cond)[0], z)
    assert abs(float(logdet[0]) - expected) < 1e-4


@pytest.mark.parametrize("time_only,shape", [(False, (2, 8, 4, 3)), (True, (2, 8, 1, 3))])
def test_squeeze_is_an_exact_permutation(time_only, shape):
    x = tf.reshape(tf.range(np.prod(shape), dtype=tf.float32), shape)
    y = squeeze(x, time_only)
    assert y.shape[1] == shape[1] // 2
    assert sorted(y.numpy().ravel()) == sorted(x.numpy().ravel())
    np.testing.assert_array_equal(unsqueeze(y, time_only).numpy(), x.numpy())


def test_squeeze_keeps_neighbouring_time_steps_together():
    # Time-only squeeze folds samples (2t, 2t+1) into the channels of step t.
    x = tf.reshape(tf.range(8, dtype=tf.float32), (1, 8, 1, 1))
    np.testing.assert_array_equal(squeeze(x, True).numpy()[0, :, 0, :], [[0, 1], [2, 3], [4, 5], [6, 7]])


# ----------------------------------------------------------------------------- whole model
MODEL_CASES = [
    # (input_shape, coupling, lu)
    ((16, 8, 1), "affine", True),
    ((16, 8, 1), "additive", True),
    ((16, 8, 1), "affine", False),
    ((64, 1, 1), "affine", True),
    ((64, 1, 1), "additive", False),
]


@pytest.fixture(scope="module")
def tiny_models():
    models = {}
    for shape, coupling, lu in MODEL_CASES:
        model = Glow(input_shape=shape, k_glow=2, l_glow=2, hidden_channels=16,
                     coupling=coupling, lu_decomposed=lu)
        x = tf.random.stateless_normal((8, *shape), seed=[10, 11])
        assert model.initialize(x)
        _perturb(model, 0.05)
        models[(shape, coupling, lu)] = model
    return models


@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda c: f"{c[0]}-{c[1]}-lu{c[2]}")
def test_encode_logdet_equals_brute_force_jacobian(tiny_models, case):
    model = tiny_models[case]
    x = tf.random.stateless_normal((1, *case[0]), seed=[12, 13])
    z, logdet = model.encode(x)
    assert z.shape == (1, int(np.prod(case[0])))
    assert z.shape[1] >= 64
    expected = _brute_force_logdet(lambda t: model.encode(t)[0], x)
    assert abs(float(logdet[0]) - expected) <= 1e-3


@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda c: f"{c[0]}-{c[1]}-lu{c[2]}")
def test_log_prob_and_bits_per_dim_are_consistent(tiny_models, case):
    model = tiny_models[case]
    x = tf.random.stateless_normal((3, *case[0]), seed=[14, 15])
    z, logdet = model.encode(x)
    dims = int(np.prod(case[0]))
    expected = -0.5 * np.sum(z.numpy().astype(np.float64) ** 2, axis=1) - 0.5 * dims * math.log(2 * math.pi)
    expected += logdet.numpy()
    log_prob = model.log_prob(x).numpy()
    np.testing.assert_allclose(log_prob, expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(model.bits_per_dim(x).numpy(), -log_prob / (dims * math.log(2)), rtol=1e-6)


def test_decode_inverts_encode_at_realistic_size_and_twice_the_length():
    model = Glow(input_shape=(64, 256, 1), k_glow=4, l_glow=3, hidden_channels=32)
    x = tf.random.stateless_normal((2, 64, 256, 1), seed=[16, 17])
    model.initialize(x)
    _perturb(model, 0.02, seed=1)
    z, _ = model.encode(x)
    assert float(tf.reduce_max(tf.abs(model.decode(z) - x))) <= 1e-4
    long_x = tf.random.stateless_normal((1, 128, 256, 1), seed=[18, 19])
    long_z, long_logdet = model.encode(long_x)
    assert long_z.shape == (1, 128 * 256)
    assert float(tf.reduce_max(tf.abs(model.decode(long_z) - long_x))) <= 1e-4
    assert np.isfinite(long_logdet.numpy()).all()


def test_whole_song_lengths_share_weights_and_priors():
    model = Glow(input_shape=(16, 1, 1), k_glow=2, l_glow=2, hidden_channels=8)
    model.initialize(tf.random.stateless_normal((4, 16, 1, 1), seed=[1, 1]))
    _perturb(model)
    n_weights = len(model.weights)
    for length in (4, 16, 100 * 4):
        x = tf.random.stateless_normal((1, length, 1, 1), seed=[2, length])
        z, _ = model.encode(x)
        np.testing.assert_allclose(model.decode(z).numpy(), x.numpy(), atol=1e-5)
    assert len(model.weights) == n_weights


def test_untrained_model_maps_standard_normal_data_to_standard_normal_latents():
    # At initialisation an additive coupling is the identity and every prior is N(0, 1): after
    # ActNorm init on N(0, 1) data the latents are N(0, 1) too, so bits/dim is near
    # 1/2 log2(2 pi e). (An affine coupling starts at scale sigmoid(2) instead.)
    model = Glow(input_shape=(32, 16, 1), k_glow=2, l_glow=2, hidden_channels=8,
                 coupling="additive")
    x = tf.random.stateless_normal((16, 32, 16, 1), seed=[3, 3])
    model.initialize(x)
    z, _ = model.encode(x)
    assert abs(float(tf.reduce_mean(z))) < 0.05
    assert abs(float(tf.math.reduce_variance(z)) - 1.0) < 0.05
    expected = 0.5 * math.log2(2 * math.pi * math.e)
    assert abs(float(tf.reduce_mean(model.bits_per_dim(x))) - expected) < 0.05


# ----------------------------------------------------------------------------- ActNorm state
def test_actnorm_init_gives_zero_mean_unit_variance():
    layer = ActNorm(3)
    x = tf.random.stateless_normal((16, 5, 5, 3), seed=[20, 21]) * [1.0, 3.0, 0.2] + [5.0, -2.0, 0.5]
    y = layer.initialize(x)
    mean, var = tf.nn.moments(y, axes=[0, 1, 2])
    np.testing.assert_allclose(mean.numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(var.numpy(), 1.0, atol=1e-3)
    assert bool(layer.initialized.numpy())
    # A second call on other data must not re-initialise.
    before = layer.bias.numpy().copy()
    layer.initialize(x * 10.0)
    np.testing.assert_array_equal(layer.bias.numpy(), before)


def test_restore_into_fresh_model_is_not_reinitialised(tmp_path):
    kwargs = dict(input_shape=(16, 8, 1), k_glow=2, l_glow=2, hidden_channels=8)
    model = Glow(**kwargs)
    x = tf.random.stateless_normal((8, 16, 8, 1), seed=[22, 23]) * 3.0 + 1.0
    assert model.initialize(x)
    _perturb(model)
    z_before, _ = model.encode(x)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))

    fresh = Glow(**kwargs, seed=99)
    assert not fresh.is_initialized()
    tf.train.Checkpoint(model=fresh).restore(path).assert_consumed()
    assert fresh.is_initialized()
    # initialize() after a restore is a no-op, even on very different data.
    assert not fresh.initialize(x * 100.0)
    np.testing.assert_allclose(fresh.encode(x)[0].numpy(), z_before.numpy(), atol=1e-6)

    weights = str(tmp_path / "glow.weights.h5")
    model.save_weights(weights)
    other = Glow(**kwargs, seed=7)
    other.load_weights(weights)
    assert other.is_initialized()
    np.testing.assert_allclose(other.encode(x)[0].numpy(), z_before.numpy(), atol=1e-6)


# ----------------------------------------------------------------------------- sampling, config
def test_sample_shapes_and_zero_temperature_is_the_prior_mean(tiny_models):
    model = tiny_models[((16, 8, 1), "affine", True)]
    samples = model.sample(3, temperature=0.7, seed=1)
    assert samples.shape == (3, 16, 8, 1)
    assert np.isfinite(samples.numpy()).all()
    assert model.sample(2, temperature=0.7, time_steps=32).shape == (2, 32, 8, 1)
    mean_x = model.sample(2, temperature=0.0)
    np.testing.assert_allclose(mean_x.numpy(), model.decode(tf.zeros((2, 16 * 8))).numpy(), atol=1e-6)
    # The two draws at T = 0 coincide: there is no randomness left.
    np.testing.assert_allclose(mean_x[0].numpy(), mean_x[1].numpy(), atol=1e-6)
    # and re-encoding the mean gives z = 0.
    np.testing.assert_allclose(model.encode(mean_x)[0].numpy(), 0.0, atol=1e-4)


def test_glow_from_config_uses_its_fields():
    config = Config(feature="waveform", window_size=256, channel_size=2, k_glow=2, l_glow=3,
                    hidden_channels=8, coupling="additive", lu_decomposed=False)
    model = Glow.from_config(config)
    assert model.image_shape == (128, 1, 2)
    assert (model.k_glow, model.l_glow, model.hidden_channels) == (2, 3, 8)
    assert model.coupling == "additive" and not model.lu_decomposed
    assert len(model.levels) == 3 and all(len(steps) == 2 for steps in model.levels)


def test_from_config_builds_what_the_same_keywords_build():
    config = Config(n_fft=14, hop_length=4, window_size=16, k_glow=2, l_glow=2, hidden_channels=8,
                    coupling="additive", scale_shift=1.5, seed=4)
    from_config = Glow.from_config(config)
    keywords = Glow(input_shape=(16, 8, 1), k_glow=2, l_glow=2, hidden_channels=8,
                    coupling="additive", lu_decomposed=True, scale_shift=1.5, seed=4)
    assert from_config.get_config() == keywords.get_config()
    # The same variables under the same names (checkpoints load either way).
    variables = lambda model: [(v.path, tuple(v.shape)) for v in model.variables]  # noqa: E731
    assert variables(from_config) == variables(keywords)
    # Keras' own config round trip rebuilds the same architecture.
    assert Glow.from_config(keywords.get_config()).get_config() == keywords.get_config()
    with pytest.raises(TypeError):
        Glow(config)  # a Config goes through Glow.from_config


@pytest.mark.parametrize("kwargs,match", [
    (dict(input_shape=(10, 8, 1)), "divide by 2\\*\\*l_glow"),
    (dict(input_shape=(16, 6, 1)), "W=6"),
    (dict(input_shape=(16, 8, 1), coupling="spline"), "coupling"),
])
def test_bad_model_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Glow(**{"k_glow": 1, "l_glow": 2, "hidden_channels": 4, **kwargs})


def test_model_initialize_normalises_every_actnorm_on_its_own_input():
    model = Glow(input_shape=(16, 8, 1), k_glow=3, l_glow=2, hidden_channels=8)
    # Non-identity couplings before init, so each step really changes the data it passes on.
    rng = np.random.default_rng(5)
    for steps in model.levels:
        for step in steps:
            for v in step.coupling.trainable_variables:
                v.assign(v.numpy() + 0.3 * rng.standard_normal(v.shape).astype(np.float32))
    x = tf.random.stateless_normal((32, 16, 8, 1), seed=[30, 31]) * 2.0 + 0.5
    assert model.initialize(x)
    h = x
    for level, steps in enumerate(model.levels):
        h = squeeze(h, model.time_only)
        for step in steps:
            normalised, _ = step.actnorm.forward(h)
            mean, var = tf.nn.moments(normalised, axes=[0, 1, 2])
            np.testing.assert_allclose(mean.numpy(), 0.0, atol=1e-4)
            np.testing.assert_allclose(var.numpy(), 1.0, atol=1e-2)
            h, _ = step.forward(h)
        if model.priors[level].conditional:
            h = h[..., : h.shape[-1] // 2]


# ----------------------------------------------------------------------------- singer-conditional
SINGER_DIMS = 3


def _condition(seed, batch=1):
    return tf.random.stateless_normal((batch, SINGER_DIMS), seed=[seed, 77])


@pytest.mark.parametrize("name", ["affine", "additive", "step", "singer_norm"])
def test_conditional_layers_invert_with_the_jacobian_logdet_under_each_condition(name):
    channels = 4
    layer = {
        "affine": lambda: AffineCoupling(channels, 8, (3, 3), "affine", cond_dims=SINGER_DIMS),
        "additive": lambda: AffineCoupling(channels, 8, (3, 3), "additive",
                                           cond_dims=SINGER_DIMS),
        "step": lambda: FlowStep(channels, 8, (3, 3), "affine", True, 2.0, seed=2,
                                 cond_dims=SINGER_DIMS),
        "singer_norm": lambda: SingerNorm(4, channels, SINGER_DIMS),
    }[name]()
    x = tf.random.stateless_normal((1, 4, 4, channels), seed=[1, 2])
    layer.forward(x, _condition(0))  # build
    # SingerNorm's kernel is set from data, not trained: move it too.
    moved = [layer.kernel] if name == "singer_norm" else layer.trainable_variables
    for v in moved:
        v.assign(v + 0.1 * tf.random.stateless_normal(v.shape, seed=[3, 4]))
    outputs = []
    for seed in (0, 1):
        cond = _condition(seed)
        y, logdet = layer.forward(x, cond)
        np.testing.assert_allclose(layer.inverse(y, cond).numpy(), x.numpy(), atol=1e-5)
        expected = _brute_force_logdet(lambda t: layer.forward(t, cond)[0], x)
        assert abs(float(logdet[0]) - expected) < 1e-3
        outputs.append(y.numpy())
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-3  # the condition changes the map


def test_singer_conditioned_priors_whiten_color_and_logdet():
    for prior, cond in ((GaussianPrior(2, cond_channels=2, singer_dims=SINGER_DIMS),
                         tf.random.stateless_normal((1, 4, 4, 2), seed=[5, 6])),
                        (GaussianPrior(2, singer_dims=SINGER_DIMS), None)):
        z = tf.random.stateless_normal((1, 4, 4, 2), seed=[7, 8])
        prior.whiten(z, cond, _condition(0))
        for v in prior.trainable_variables:
            v.assign(v + 0.1 * tf.random.stateless_normal(v.shape, seed=[9, 9]))
        for seed in (0, 1):
            singer = _condition(seed)
            eps, logdet = prior.whiten(z, cond, singer)
            np.testing.assert_allclose(prior.color(eps, cond, singer).numpy(), z.numpy(),
                                       atol=1e-5)
            expected = _brute_force_logdet(lambda t: prior.whiten(t, cond, singer)[0], z)
            assert abs(float(logdet[0]) - expected) < 1e-4


def test_singer_norm_standardises_each_singer_and_maps_moments_between_them():
    rng = np.random.default_rng(0)
    # Two singers with different per-bin means and spreads; ids interleaved in the batch.
    means, stds = np.array([[0.0, 2.0, -1.0], [3.0, -2.0, 0.5]]), np.array([[1.0, 0.5, 2.0],
                                                                              [0.2, 3.0, 1.0]])
    singer = np.array([0, 1, 0, 1, 1, 0])
    x = (means[singer][:, None, :, None] + stds[singer][:, None, :, None]
         * rng.standard_normal((6, 200, 3, 1))).astype(np.float32)
    embedding = rng.standard_normal((2, SINGER_DIMS)).astype(np.float32)
    layer = SingerNorm(3, 1, SINGER_DIMS)
    layer.initialize(x, singer, embedding)
    y, _ = layer.forward(x, tf.gather(embedding, singer))
    for s in (0, 1):
        own = y.numpy()[singer == s]
        np.testing.assert_allclose(own.mean(axis=(0, 1)), 0.0, atol=1e-5)
        np.testing.assert_allclose(own.var(axis=(0, 1)), 1.0, rtol=1e-4)
    # Moments over the chosen frames only: a singer's silent frames do not set its scale.
    silent = x.copy()
    silent[singer == 0, :100] = -5.0
    frames = np.ones(x.shape[:2], bool)
    frames[singer == 0, :100] = False
    masked = SingerNorm(3, 1, SINGER_DIMS)
    masked.initialize(silent, singer, embedding, frames)
    y_masked = masked.forward(silent, tf.gather(embedding, singer))[0].numpy()
    sounding = y_masked[singer == 0][:, 100:]
    np.testing.assert_allclose(sounding.mean(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(sounding.var(axis=(0, 1)), 1.0, rtol=1e-4)
    assert not masked.trainable_weights  # a fixed standardisation, never trained
    # Once initialised it keeps its kernel (restored models are never re-initialised).
    kernel = layer.kernel.numpy()
    layer.initialize(np.zeros_like(x), singer, embedding)
    np.testing.assert_array_equal(layer.kernel.numpy(), kernel)
    # Standardise under singer 0, de-standardise under singer 1: singer 1's moments.
    source = x[singer == 0]
    cond = lambda s: tf.constant(np.repeat(embedding[s:s + 1], len(source), 0))  # noqa: E731
    moved = layer.inverse(layer.forward(source, cond(0))[0], cond(1)).numpy()
    np.testing.assert_allclose(moved.mean(axis=(0, 1, 3)), x[singer == 1].mean(axis=(0, 1, 3)),
                               atol=0.05 * stds[1].max())
    np.testing.assert_allclose(moved.std(axis=(0, 1, 3)), x[singer == 1].std(axis=(0, 1, 3)),
                               rtol=0.05)


def test_configs_saved_before_singer_norm_load_without_it():
    old = Config(conditional=True).to_dict()
    del old["singer_norm"]
    assert Config.from_dict(old).singer_norm is False
    assert Config.from_dict(Config(conditional=True).to_dict()).singer_norm is True


@pytest.fixture(scope="module")
def conditional_models():
    models = {}
    for shape in ((16, 8, 1), (64, 1, 1)):
        model = Glow(input_shape=shape, k_glow=2, l_glow=2, hidden_channels=16, num_singers=3,
                     singer_dims=SINGER_DIMS)
        x = tf.random.stateless_normal((6, *shape), seed=[10, 11])
        assert model.initialize(x, tf.constant([0, 1, 2, 0, 1, 2]))
        _perturb(model, 0.05)
        models[shape] = model
    return models


@pytest.mark.parametrize("shape", [(16, 8, 1), (64, 1, 1)], ids=["spectrogram", "waveform"])
def test_conditional_glow_is_exact_under_every_singer(conditional_models, shape):
    model = conditional_models[shape]
    # The same example once under each singer: row b of the batch is singer b.
    x = tf.repeat(tf.random.stateless_normal((1, *shape), seed=[12, 13]), model.num_singers, 0)
    ids = tf.range(model.num_singers)
    z, logdet = model.encode(x, ids)
    np.testing.assert_allclose(model.decode(z, ids).numpy(), x.numpy(), atol=1e-4)
    expected = _brute_force_logdets(lambda t: model.encode(t, ids)[0], x)
    np.testing.assert_allclose(logdet.numpy(), expected, rtol=0, atol=1e-3)
    dims = int(np.prod(shape))
    np.testing.assert_allclose(
        model.log_prob(x, ids).numpy(),
        -0.5 * np.sum(z.numpy() ** 2, 1) - 0.5 * dims * math.log(2 * math.pi) + logdet.numpy(),
        rtol=1e-5, atol=1e-3)
    latents = z.numpy()[:, None]  # (singers, 1, D)
    assert np.abs(latents[0] - latents[1]).max() > 1e-3
    x = x[:1]
    # Conditioning vectors: the embedding of a singer is that singer; a mix is another bijection.
    vector = model.singer_condition(tf.constant([1]))
    np.testing.assert_allclose(model.encode(x, vector)[0].numpy(), latents[1], atol=1e-6)
    mix = 0.5 * model.singer_condition(tf.constant([0])) + 0.5 * vector
    z, _ = model.encode(x, mix)
    np.testing.assert_allclose(model.decode(z, mix).numpy(), x.numpy(), atol=1e-4)
    samples = model.sample(2, time_steps=shape[0], seed=3, singer=tf.constant([0, 2]))
    assert samples.shape == (2, *shape)


def test_conditional_model_refuses_a_missing_singer_and_the_plain_one_any_singer(
        conditional_models):
    model = conditional_models[(16, 8, 1)]
    x = tf.zeros((1, 16, 8, 1))
    with pytest.raises(ValueError, match="conditional on 3 singers"):
        model.encode(x)
    plain = Glow(input_shape=(16, 8, 1), k_glow=1, l_glow=2, hidden_channels=4)
    with pytest.raises(ValueError, match="unconditional"):
        plain.encode(x, tf.constant([0]))
    # The unconditional model holds no conditioning variables (its checkpoints keep loading).
    assert not any("singer" in v.path or "cond_" in v.path for v in plain.variables)
    config = Config(n_fft=14, hop_length=4, window_size=16, k_glow=1, l_glow=2, hidden_channels=4,
                    conditional=True, singer_dims=SINGER_DIMS)
    assert Glow.from_config(config, num_singers=2).num_singers == 2
    with pytest.raises(ValueError, match="num_singers"):
        Glow.from_config(config)

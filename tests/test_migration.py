"""Migration: the latent moves' algebra (utils/migration/latent_moves.py), streaming statistics and
their persistence (utils/runs/latent_stats.py), chunked whole-song processing
(utils/runs/song_chunks.py, utils/runs/codec.py), and (with a small model trained here) migration
on the demo corpus (utils/migration/registry.py, evaluate.py)."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from common_definitions import Config
from model import Glow
from utils.audio.features import FeatureStats
from utils.audio.signal import AudioError, load_audio
from utils.errors import MigrationError
from utils.evaluation.metrics import snr_db
from utils.migration import latent_moves as methods
from utils.migration.latent_moves import bound_features
from utils.migration.registry import LATENT_METHODS, METHODS, method_class
from utils.runs import latent_stats, song_chunks
from utils.runs.codec import Codec

# A toy latent layout: two levels, (w, c) per level, like model.latent_shapes.
LAYOUT = [(4, 2), (2, 4)]
STEPS = 8  # time steps per toy patch: level 0 has 4 positions, level 1 has 2


def _toy_latents(n, rng, loc=0.0, scale=1.0):
    """(n, D) latents of STEPS-step patches with per-dimension means and scales."""
    dims = sum(h * w * c for h, w, c in latent_stats.piece_shapes(LAYOUT, STEPS))
    per_dim_loc = loc + rng.normal(0.0, 1.0, dims)
    per_dim_scale = scale * rng.uniform(0.5, 2.0, dims)
    return (per_dim_loc + per_dim_scale * rng.standard_normal((n, dims))).astype(np.float32)


def _stats(z, config=None):
    return latent_stats.LatentStats(config or Config(), LAYOUT).update(z, STEPS)


def apply_method(name, z, source, reference, strength):
    """The latent move ``name`` of the registry on latents ``z`` (B, D)."""
    return method_class(name).move_latents(z, source, reference, strength)


def migrate_song(codec, samples, method, strength, reference, **options):
    """The latent move ``method`` of the registry, fitted to ``reference``, on one song."""
    return METHODS[method](codec, reference).transform(samples, strength, **options)


def _pooled(z):
    """Per-level (w, c) mean and variance of z pooled over batch and time, by plain numpy."""
    pieces = latent_stats.split_latent(np.asarray(z, np.float64), LAYOUT, STEPS)
    flat = [p.reshape(-1, *p.shape[2:]) for p in pieces]
    return [f.mean(axis=0) for f in flat], [f.var(axis=0) for f in flat]


# ----------------------------------------------------------------------------- algebra
@pytest.mark.parametrize("method", sorted(LATENT_METHODS))
def test_strength_zero_is_the_identity(method):
    rng = np.random.default_rng(0)
    z = _toy_latents(16, rng)
    src, ref = _stats(z).moments(STEPS), _stats(_toy_latents(16, rng, 1.0, 2.0)).moments(STEPS)
    out = apply_method(method, z, src, ref, 0.0)
    np.testing.assert_array_equal(out, z)


def test_midpoint_at_full_strength_is_the_seeds_average():
    rng = np.random.default_rng(1)
    z = _toy_latents(8, rng)
    ref = _stats(_toy_latents(8, rng, 2.0)).moments(STEPS)
    np.testing.assert_allclose(methods.midpoint(z, None, ref, 1.0), (z + ref.mean) / 2, atol=1e-6)
    np.testing.assert_allclose(methods.midpoint(z, None, ref, 0.5), z + (ref.mean - z) / 4,
                               atol=1e-6)


@pytest.mark.parametrize("strength", [0.25, 1.0, 1.5])
def test_shift_moves_the_mean_by_strength_times_delta(strength):
    rng = np.random.default_rng(2)
    z_src, z_ref = _toy_latents(64, rng), _toy_latents(64, rng, 1.0, 3.0)
    src, ref = _stats(z_src), _stats(z_ref)
    out = apply_method("shift", z_src, src.moments(STEPS), ref.moments(STEPS), strength)
    moved = _stats(out)
    for level in range(len(LAYOUT)):
        np.testing.assert_allclose(
            moved.mean[level] - src.mean[level],
            strength * (ref.mean[level] - src.mean[level]), atol=1e-5)
        # Every deviation from the mean is kept.
        np.testing.assert_allclose(moved.var[level], src.var[level], rtol=1e-5)


def test_match_at_full_strength_gives_the_reference_moments_on_the_source_set():
    rng = np.random.default_rng(3)
    z_src, z_ref = _toy_latents(64, rng), _toy_latents(48, rng, -1.0, 4.0)
    src, ref = _stats(z_src), _stats(z_ref)
    out = apply_method("match", z_src, src.moments(STEPS), ref.moments(STEPS), 1.0)
    means, variances = _pooled(out)
    for level in range(len(LAYOUT)):
        np.testing.assert_allclose(means[level], ref.mean[level], atol=1e-5)
        np.testing.assert_allclose(np.sqrt(variances[level]), ref.std[level], rtol=1e-5)
    # Half strength lands halfway in latent space.
    half = apply_method("match", z_src, src.moments(STEPS), ref.moments(STEPS), 0.5)
    np.testing.assert_allclose(half, (z_src + out) / 2, atol=1e-5)


def test_methods_refuse_bad_arguments():
    rng = np.random.default_rng(4)
    z = _toy_latents(4, rng)
    ref = _stats(z).moments(STEPS)
    with pytest.raises(MigrationError, match="needs source statistics"):
        apply_method("match", z, None, ref, 1.0)
    with pytest.raises(MigrationError, match="unknown method"):
        apply_method("average", z, ref, ref, 1.0)
    with pytest.raises(MigrationError, match="finite"):
        apply_method("shift", z, ref, ref, float("nan"))


# ----------------------------------------------------------------------------- statistics
def test_streamed_statistics_equal_numpy_over_all_latents():
    rng = np.random.default_rng(5)
    z = _toy_latents(101, rng, 3.0, 0.01) + 1e3  # a large offset tests the numerics too
    stats = latent_stats.LatentStats(Config(), LAYOUT)
    for start, stop in [(0, 1), (1, 30), (30, 31), (31, 101)]:
        stats.update(z[start:stop], STEPS)
    means, variances = _pooled(z)
    # Two halves accumulated separately and merged give the same answer.
    merged = _stats(z[:50]).merge(_stats(z[50:]))
    for level in range(len(LAYOUT)):
        for result in (stats, merged):
            np.testing.assert_allclose(result.mean[level], means[level], rtol=1e-12)
            np.testing.assert_allclose(result.var[level], variances[level], rtol=1e-6)
    assert list(stats.count) == [101 * 4, 101 * 2]


def test_statistics_apply_to_any_length():
    rng = np.random.default_rng(6)
    stats = _stats(_toy_latents(8, rng))
    long = stats.moments(4 * STEPS)
    pieces = latent_stats.split_latent(long.mean[None], LAYOUT, 4 * STEPS)
    for level, piece in enumerate(pieces):
        # Every time position of a level carries the same (w, c) statistics.
        np.testing.assert_array_equal(piece[0], np.broadcast_to(stats.mean[level], piece[0].shape))


def test_npz_round_trip_and_refusal_of_another_config(tmp_path):
    rng = np.random.default_rng(7)
    config = Config(k_glow=2, l_glow=2, hidden_channels=16)
    stats = _stats(_toy_latents(20, rng), config)
    path = str(tmp_path / "ref.npz")
    stats.save(path)
    loaded = latent_stats.LatentStats.load(path, config)
    assert loaded.config == config and loaded.latent_shapes == stats.latent_shapes
    np.testing.assert_array_equal(loaded.count, stats.count)
    for level in range(len(LAYOUT)):
        np.testing.assert_array_equal(loaded.mean[level], stats.mean[level])
        np.testing.assert_allclose(loaded.var[level], stats.var[level], rtol=1e-12)
    # Fields outside the model signature (paths, training length) do not matter.
    latent_stats.LatentStats.load(path, config.replace(epochs=99, checkpoint_dir="elsewhere"))
    with pytest.raises(MigrationError) as caught:
        latent_stats.LatentStats.load(path, config.replace(k_glow=3))
    message = str(caught.value)
    assert "\n" not in message and "k_glow=2" in message
    not_stats = tmp_path / "junk.npz"
    not_stats.write_bytes(b"not an npz")
    with pytest.raises(MigrationError, match="not a latent statistics file"):
        latent_stats.LatentStats.load(str(not_stats))
    with pytest.raises(MigrationError, match="not found"):
        latent_stats.LatentStats.load(str(tmp_path / "missing.npz"))


# ----------------------------------------------------------------------------- the real layout
TINY = Config(k_glow=2, l_glow=2, hidden_channels=16, window_size=32)


@pytest.fixture(scope="module")
def tiny_model():
    """An ActNorm-initialised, perturbed (so not an identity) tiny Glow and identity stats."""
    model = Glow.from_config(TINY)
    rng = np.random.default_rng(0)
    model.initialize(rng.standard_normal((4, *TINY.input_shape)).astype(np.float32))
    for v in model.trainable_variables:
        v.assign(v.numpy() + 0.02 * rng.standard_normal(v.shape).astype(np.float32))
    return model


def test_split_latent_matches_the_models_layout(tiny_model):
    steps = 3 * TINY.input_shape[0]
    x = np.random.default_rng(1).standard_normal((2, steps, *TINY.input_shape[1:]))
    z, _ = tiny_model.encode(x.astype(np.float32))
    ours = latent_stats.split_latent(z.numpy(), tiny_model.latent_shapes, steps)
    theirs = tiny_model._unflatten(z)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b.numpy())
    np.testing.assert_array_equal(latent_stats.join_latent(ours), z.numpy())


# ----------------------------------------------------------------------------- stitching
class _ShiftModel:
    """A stand-in model whose latent is the features themselves (identity encode/decode)."""

    def __init__(self):
        self.batch_shapes = []

    def encode(self, x):
        self.batch_shapes.append(tuple(np.shape(x)))
        x = tf.convert_to_tensor(x)
        return tf.reshape(x, [x.shape[0], -1]), tf.zeros([x.shape[0]])

    def decode(self, z, shape=(16, 3, 1)):
        return tf.reshape(z, [z.shape[0], -1, *shape[1:]])


@pytest.mark.parametrize("total", [1, 15, 16, 17, 100])
def test_chunks_stitch_back_every_step_exactly(total):
    x = np.random.default_rng(total).standard_normal((total, 3, 1)).astype(np.float32)
    model = _ShiftModel()
    out = song_chunks.transform_features(model, x, lambda z: z, 16, 4, batch_size=3)
    assert out.shape == x.shape
    np.testing.assert_allclose(out, x, atol=1e-6)
    # Memory stays flat: never more than batch_size chunks of chunk_steps per model call.
    assert max(s[0] for s in model.batch_shapes) <= 3
    assert {s[1] for s in model.batch_shapes} == {16}


def test_crossfade_has_no_steps_at_chunk_boundaries():
    """Each chunk moved by a different offset: a hard cut would jump by the offsets' difference
    at every boundary; the crossfade spreads it over the overlap."""
    x = np.zeros((200, 3, 1), np.float32)
    calls = iter(range(1000))

    def chunk_offsets(z):
        return z + np.array([[next(calls) % 2] for _ in range(len(z))], np.float32)

    out = song_chunks.transform_features(_ShiftModel(), x, chunk_offsets, 16, 8, batch_size=1)
    steps = np.abs(np.diff(out[:, 0, 0]))
    # Offsets differ by 1 between neighbours; a sin^2 ramp over 8 steps moves at most ~0.2/step.
    assert steps.max() < 0.25
    weights = [song_chunks.crossfade_weights(16, 8, k == 0, k == 3) for k in range(4)]
    covered = np.zeros(16 + 3 * 8)
    for k, w in enumerate(weights):
        covered[8 * k:8 * k + 16] += w
    np.testing.assert_allclose(covered, 1.0, atol=1e-6)


# ----------------------------------------------------------------------------- whole songs
@pytest.fixture(scope="module")
def demo_paths(tmp_path_factory):
    from utils.data.demo_data import make_demo_corpus

    return make_demo_corpus(str(tmp_path_factory.mktemp("demo")), songs_per_singer=4,
                            song_seconds=8.0)


def test_audio_segments_crossfade_back_to_every_sample():
    rng = np.random.default_rng(8)
    samples = rng.standard_normal(10_007).astype(np.float32)
    lengths = []

    def render(piece):
        lengths.append(len(piece))
        return piece

    out = song_chunks.render_in_segments(samples, 3000, 500, render)
    np.testing.assert_allclose(out, samples, atol=1e-6)
    assert max(lengths) == 3000 and len(lengths) == 4
    # Disjoint segments for statistics cover every sample once, with no stub at the end.
    pieces = list(song_chunks.iter_segments(samples, 3000))
    assert sum(len(p) for p in pieces) == len(samples) and min(len(p) for p in pieces) >= 3000


@pytest.mark.parametrize("method", sorted(LATENT_METHODS))
def test_strength_zero_returns_the_source_audio(tiny_model, demo_paths, method):
    """Through 3-second audio segments and 32-step chunks: many boundaries of both kinds."""
    samples = load_audio(demo_paths["virtual"][0], TINY.sampling_rate)
    stats = FeatureStats.identity(TINY)
    real = [load_audio(p, TINY.sampling_rate) for p in demo_paths["real"][:2]]
    codec = Codec(tiny_model, TINY, stats)
    reference = codec.latent_stats(real)
    kwargs = dict(chunk_steps=32, overlap_steps=8, segment_seconds=3.0,
                  segment_overlap_seconds=0.5)
    result = migrate_song(codec, samples, method, 0.0, reference, **kwargs)
    assert result.samples.shape == samples.shape
    assert snr_db(samples, result.samples) >= 40.0
    # The latents did move at strength 1, so the identity above is not vacuous.
    moved = migrate_song(codec, samples, method, 1.0, reference, **kwargs)
    assert moved.samples.shape == samples.shape and np.isfinite(moved.samples).all()
    assert snr_db(samples, moved.samples) < 40.0


def test_bound_features_keeps_the_source_and_stops_blow_ups():
    rng = np.random.default_rng(9)
    source = rng.standard_normal((40, 6, 1)).astype(np.float32)
    reference = latent_stats.LatentStats(Config(), LAYOUT)
    reference.feature_min = np.full((6, 1), -1.0)
    reference.feature_max = np.full((6, 1), 4.0)
    np.testing.assert_array_equal(bound_features(source, source, reference), source)
    decoded = source.copy()
    decoded[3, 2, 0], decoded[5, 1, 0], decoded[7, 0, 0] = 1e9, np.inf, np.nan
    bounded = bound_features(decoded, source, reference)
    assert bounded[3, 2, 0] == max(4.0, source[:, 2, 0].max())
    assert bounded[5, 1, 0] == source[5, 1, 0] and bounded[7, 0, 0] == source[7, 0, 0]


def test_waveform_feature_round_trips_too():
    config = Config(feature="waveform", window_size=512, channel_size=2, k_glow=1, l_glow=2,
                    hidden_channels=8)
    model = Glow.from_config(config)
    rng = np.random.default_rng(10)
    t = np.arange(3 * config.sampling_rate) / config.sampling_rate
    song = 0.5 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(len(t))
    song = song.astype(np.float32)
    stats = FeatureStats.identity(config)
    model.initialize(song[:4 * config.window_size].reshape(4, *config.input_shape))
    codec = Codec(model, config, stats)
    reference = codec.latent_stats([song[::-1].copy()])
    for strength, check in ((0.0, lambda snr: snr >= 40.0), (1.0, math.isfinite)):
        out = migrate_song(codec, song, "match", strength, reference,
                           segment_seconds=1.0, segment_overlap_seconds=0.1).samples
        assert out.shape == song.shape and check(snr_db(song, out))


def test_short_and_silent_sources(tiny_model):
    stats = FeatureStats.identity(TINY)
    rng = np.random.default_rng(3)
    short = (0.3 * rng.standard_normal(TINY.patch_samples // 3)).astype(np.float32)
    codec = Codec(tiny_model, TINY, stats)
    reference = codec.latent_stats([short])
    with pytest.warns(UserWarning, match="shorter than one patch"):
        result = migrate_song(codec, short, "match", 0.0, reference)
    assert result.samples.shape == short.shape
    assert snr_db(short, result.samples) >= 40.0
    with pytest.raises(AudioError, match="silent"):
        migrate_song(codec, np.zeros(40000, np.float32), "match", 1.0, reference)
    with pytest.raises(MigrationError, match="another model configuration"):
        migrate_song(Codec(tiny_model, TINY.replace(hidden_channels=8), stats), short,
                     "match", 1.0, reference)


# ----------------------------------------------------------------------------- the codec
def test_codec_whole_song_encode_and_decode_are_exact_inverses(tiny_model, demo_paths):
    samples = load_audio(demo_paths["virtual"][1], TINY.sampling_rate)
    codec = Codec(tiny_model, TINY, FeatureStats.identity(TINY))
    encoded = codec.encode(samples)
    steps = encoded.song.x.shape[0]
    assert steps % TINY.time_multiple == 0 and steps >= encoded.song.num_steps
    assert encoded.z.shape == (steps * TINY.n_bins,)
    # One call over the whole song: the same numbers as the model on the whole feature array.
    z, logdet = tiny_model.encode(encoded.song.x[None])
    np.testing.assert_array_equal(encoded.z, z.numpy()[0])
    assert encoded.logdet == pytest.approx(float(logdet[0]), rel=1e-6)
    bits = float(tiny_model.bits_per_dim(encoded.song.x[None])[0])
    assert encoded.bits_per_dim == pytest.approx(bits, rel=1e-4, abs=1e-4)
    rebuilt = codec.decode(encoded.z, encoded.song)
    assert rebuilt.shape == samples.shape and snr_db(samples, rebuilt) >= 40.0


def test_codec_transform_reconstruct_and_patch_latents(tiny_model, demo_paths):
    samples = load_audio(demo_paths["virtual"][2], TINY.sampling_rate)
    codec = Codec(tiny_model, TINY, FeatureStats.identity(TINY))
    kwargs = dict(chunk_steps=32, overlap_steps=8, segment_seconds=3.0,
                  segment_overlap_seconds=0.5)
    rebuilt = codec.reconstruct(samples, **kwargs)
    assert rebuilt.shape == samples.shape and snr_db(samples, rebuilt) >= 40.0
    seen = []

    def move(z):
        seen.append(z.shape)
        return z

    np.testing.assert_allclose(codec.transform(samples, move, **kwargs), rebuilt, atol=1e-6)
    # The move sees batches of whole chunks: 32 steps x n_bins latent dimensions each.
    assert seen and {shape[1] for shape in seen} == {32 * TINY.n_bins}
    assert max(shape[0] for shape in seen) <= 8
    # What prepare maps a segment's decoded features to is what is heard.
    silenced = codec.transform(samples, None,
                               prepare=lambda source: (source, lambda x: source * 0.0 - 20.0),
                               **kwargs)
    assert np.abs(silenced).max() < 1e-3 * np.abs(samples).max()

    latents = codec.patch_latents(samples, batch_size=3)
    song = codec.features(samples)
    patch_steps = TINY.input_shape[0]
    assert latents.shape == (song.num_steps // patch_steps, TINY.dims)
    first, _ = tiny_model.encode(song.x[None, :patch_steps])
    np.testing.assert_allclose(latents[0], first.numpy()[0], atol=1e-5)
    # Statistics of the song's patches, streamed in segments, equal those of its latents.
    stats = codec.latent_stats([samples], segment_seconds=60.0)
    direct = latent_stats.LatentStats(TINY, tiny_model.latent_shapes).update(latents, patch_steps)
    np.testing.assert_array_equal(stats.count, direct.count)
    for level in range(len(stats.count)):
        np.testing.assert_allclose(stats.mean[level], direct.mean[level], atol=1e-5)


def test_codec_folder_latent_stats_and_its_refusals(tiny_model, demo_paths, tmp_path):
    codec = Codec(tiny_model, TINY, FeatureStats.identity(TINY))
    folder = os.path.dirname(demo_paths["real"][0])
    skipped = []
    (tmp_path / "notes.wav").write_bytes(b"not audio")
    stats = codec.folder_latent_stats(folder, on_skip=lambda path, reason: skipped.append(path))
    songs = [load_audio(p, TINY.sampling_rate) for p in sorted(demo_paths["real"])]
    expected = codec.latent_stats(songs)
    np.testing.assert_array_equal(stats.count, expected.count)
    assert not skipped
    with pytest.raises(MigrationError, match="no usable song"):
        codec.folder_latent_stats(str(tmp_path), on_skip=lambda path, _: skipped.append(path))
    assert skipped == [str(tmp_path / "notes.wav")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(MigrationError, match="no audio files"):
        codec.folder_latent_stats(str(tmp_path / "empty"))
    with pytest.raises(MigrationError, match="not a folder"):
        codec.folder_latent_stats(str(tmp_path / "nothing"))


# ----------------------------------------------------------------------------- a trained model
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Glow trained by pipeline.Trainer for ~200 steps (under a minute on 2 CPU cores) on
    songs 0-4 of each demo singer; song 5 of each is held out of training, of the reference
    statistics and of the singer classifier."""
    from pipeline import Trainer
    from utils.data.demo_data import make_demo_corpus
    from utils.evaluation.metrics import SingerClassifier
    from utils.runs.run_folder import load_for_inference

    root = tmp_path_factory.mktemp("trained")
    paths = make_demo_corpus(str(root / "demo"), songs_per_singer=6, song_seconds=20.0)
    for singer, files in paths.items():
        (root / "train" / singer).mkdir(parents=True)
        for path in files[:5]:
            os.symlink(path, root / "train" / singer / os.path.basename(path))
    config = Config(
        k_glow=2, l_glow=2, hidden_channels=32, batch_size=16, epochs=1, steps_per_epoch=200,
        warmup_steps=50, checkpoint_every=200, log_every=50,
        data_dirs=(str(root / "train" / "virtual"), str(root / "train" / "real")),
        records_dir=str(root / "records"), checkpoint_dir=str(root / "ck"),
        logdir=str(root / "logs"), output_dir=str(root / "out"))
    Trainer(config, progress=False, log=lambda message: None).fit()
    codec = load_for_inference(config.checkpoint_dir)
    config = codec.config
    songs = {s: [load_audio(p, config.sampling_rate) for p in files] for s, files in paths.items()}
    classifier = SingerClassifier().fit({s: songs[s][:5] for s in songs}, config.sampling_rate)
    reference = codec.latent_stats(songs["real"][:5])
    return dict(codec=codec, config=config, songs=songs, classifier=classifier,
                reference=reference, root=root)


def test_match_moves_a_held_out_song_toward_the_real_singer_and_keeps_its_pitch(trained):
    from utils.evaluation.metrics import pitch_metrics

    codec, config = trained["codec"], trained["config"]
    source = trained["songs"]["virtual"][5]
    classifier, rate = trained["classifier"], config.sampling_rate
    identity = migrate_song(codec, source, "match", 0.0, trained["reference"]).samples
    assert snr_db(source, identity) >= 40.0
    migrated = migrate_song(codec, source, "match", 1.0, trained["reference"]).samples
    assert migrated.shape == source.shape and np.isfinite(migrated).all()
    before = classifier.probability(source, "real", rate)
    after = classifier.probability(migrated, "real", rate)
    pitch = pitch_metrics(source, migrated, rate)
    assert after - before >= 0.2, (before, after)
    assert pitch["raw_pitch_accuracy"] >= 0.9, pitch
    assert pitch["voicing_recall"] >= 0.9, pitch


def test_evaluate_cli_reports_every_metric(trained, tmp_path, capsys):
    import json

    import evaluate

    root, out = trained["root"], tmp_path / "eval.json"
    code = evaluate.main([
        "--checkpoint_dir", str(root / "ck"), "--virtual", str(root / "demo" / "virtual"),
        "--real", str(root / "train" / "real"), "--methods", "match", "--strengths", "0", "1",
        "--songs", "1", "--json", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "P(real) src -> mig" in table and "held-out bits/dim" in table
    with open(out, encoding="utf-8") as handle:
        results = json.load(handle)
    assert results["evaluated_songs"][0].endswith("song_05.wav")
    assert not results["classifier"]["in_sample"]
    assert results["heldout"]["patches"] > 0 and math.isfinite(results["heldout"]["bits_per_dim"])
    assert results["reconstruction"]["snr_db"] >= 40.0
    rows = {row["strength"]: row for row in results["migration"]}
    assert rows[0.0]["snr_db"] >= 40.0 and rows[0.0]["raw_pitch_accuracy"] == 1.0
    assert rows[1.0]["p_ref_migrated"] - rows[1.0]["p_ref_source"] >= 0.2
    assert rows[1.0]["raw_pitch_accuracy"] >= 0.9

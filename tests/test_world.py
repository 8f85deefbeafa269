"""The world feature: WORLD analysis and synthesis, its normalisation, and a flow on it whose
decode(encode(x)) with the source's F0 is WORLD's own resynthesis of x."""

import os

import numpy as np
import pytest

from common_definitions import Config
from utils.audio import load_audio
from utils.features import FeatureStats, features_to_song, song_to_features
from utils.metrics import compare_pitch, pitch_track, snr_db

pytest.importorskip("pyworld")

from utils import world_features  # noqa: E402

WORLD = Config(feature="world", world_dims=16, window_size=16, k_glow=2, l_glow=2,
               hidden_channels=8)
RATE = WORLD.sampling_rate


@pytest.fixture(scope="module")
def song(demo_corpus):
    return load_audio(os.path.join(demo_corpus.real, "song_00.wav"), RATE)


def test_world_config_shapes_and_refusals():
    assert WORLD.input_shape == (16, 16, 2) and WORLD.dims == 16 * 16 * 2
    assert Config(feature="world").input_shape == (64, 64, 2)
    with pytest.raises(ValueError, match="world_dims=12 does not divide by 2\\*\\*l_glow=8"):
        Config(feature="world", world_dims=12)
    with pytest.raises(ValueError, match="world_f0 must be one of"):
        Config(feature="world", world_f0="yin")
    with pytest.raises(ValueError, match="channel_size must be 1 for the world feature"):
        Config(feature="world", channel_size=2)


def test_analysis_is_a_frame_per_hop_and_synthesis_keeps_the_melody(song):
    analysis = world_features.analyse(song, WORLD)
    frames = len(analysis.f0)
    assert analysis.features.shape == (frames, WORLD.world_dims, 2)
    assert analysis.features.dtype == np.float32 and np.isfinite(analysis.features).all()
    assert abs(frames - (1 + len(song) / WORLD.hop_length)) <= 2
    resynthesis = world_features.synthesize(analysis.features, analysis.f0, WORLD, len(song))
    assert resynthesis.shape == song.shape and np.isfinite(resynthesis).all()
    pitch = compare_pitch(pitch_track(song, RATE)[0], pitch_track(resynthesis, RATE)[0])
    assert pitch["raw_pitch_accuracy"] >= 0.95, pitch
    # Transposed F0: an octave up is the same melody an octave up.
    octave = world_features.synthesize(analysis.features, analysis.f0, WORLD, len(song), 12.0)
    source_f0, moved_f0 = pitch_track(song, RATE)[0], pitch_track(octave, RATE)[0]
    shifted = compare_pitch(source_f0 * 2.0, moved_f0)
    assert shifted["raw_pitch_accuracy"] >= 0.9, shifted
    assert compare_pitch(source_f0, moved_f0)["raw_pitch_accuracy"] < 0.1
    np.testing.assert_array_equal(world_features.transpose_f0([0.0, 220.0], 12), [0.0, 440.0])


def test_world_statistics_have_a_channel_each_and_persist(song, tmp_path):
    from utils.features import MomentSum

    moments = MomentSum(WORLD)
    moments.add(song)
    stats = moments.stats("test")
    assert stats.mean.shape == (WORLD.world_dims * 2,) and stats.channels == 2
    path = str(tmp_path / "stats.json")
    stats.save(path)
    loaded = FeatureStats.load(path)
    assert loaded.channels == 2 and loaded.matches(WORLD)
    features = world_features.analyse(song, WORLD).features
    normalised = loaded.normalize(features)
    np.testing.assert_allclose(normalised.reshape(len(features), -1).mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(loaded.denormalize(normalised), features, rtol=1e-5, atol=1e-4)
    assert not loaded.matches(WORLD.replace(world_dims=32))
    assert FeatureStats.identity(WORLD).channels == 2


def test_a_world_flow_decodes_what_it_encoded_to_worlds_own_resynthesis(song):
    from model import Glow
    from utils.codec import Codec

    model = Glow.from_config(WORLD)
    rng = np.random.default_rng(0)
    model.initialize(rng.standard_normal((4, *WORLD.input_shape)).astype(np.float32))
    for v in model.trainable_variables:
        v.assign(v.numpy() + 0.02 * rng.standard_normal(v.shape).astype(np.float32))
    features = world_features.analyse(song, WORLD).features
    mean = features.reshape(len(features), -1).mean(0)
    std = features.reshape(len(features), -1).std(0) + 1e-3
    stats = FeatureStats(mean, std, {}, channels=2)
    codec = Codec(model, WORLD, stats)
    resynthesis = world_features.resynthesize(song, WORLD)
    rebuilt = codec.reconstruct(song)
    assert rebuilt.shape == song.shape
    # The same features to float32 precision give the same WORLD synthesis.
    assert snr_db(resynthesis, rebuilt) >= 60.0
    whole = song_to_features(song, WORLD, stats)
    assert whole.f0 is not None and len(whole.f0) == whole.num_steps
    assert whole.x.shape[0] % WORLD.time_multiple == 0
    again = features_to_song(whole.x, WORLD, stats, whole)
    assert snr_db(resynthesis, again) >= 60.0

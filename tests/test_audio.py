"""utils/audio/signal.py and utils/audio/features.py on real files written here: decoding, checks,
STFT, features and inverses."""

import struct

import librosa
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from common_definitions import Config
from utils.audio import features
from utils.audio import signal as audio
from utils.audio.features import FeatureStats
from utils.audio.signal import AudioError
from utils.files import is_audio_file

RATE = 16000


def tone(seconds, rate=RATE, f0=220.0, seed=0):
    """A sung-like test signal: harmonics with vibrato and a little noise, peak about 0.5."""
    t = np.arange(int(round(seconds * rate))) / rate
    phase = 2 * np.pi * np.cumsum(f0 + 6 * np.sin(2 * np.pi * 5 * t)) / rate
    x = 0.3 * np.sin(phase) + 0.1 * np.sin(2 * phase) + 0.05 * np.sin(3 * phase)
    x += 0.005 * np.random.default_rng(seed).standard_normal(len(t))
    return x.astype(np.float32)


def snr_db(reference, estimate):
    reference, estimate = np.asarray(reference, np.float64), np.asarray(estimate, np.float64)
    return 10 * np.log10(np.sum(reference ** 2) / max(np.sum((reference - estimate) ** 2), 1e-30))


@pytest.fixture(scope="module")
def config():
    return Config()


# The STFT must stay exact and well conditioned both below and above 50 % window overlap.
HOPS = [Config(hop_length=128), Config(hop_length=256)]


# ---------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("fmt, subtype, ext, tolerance", [
    ("WAV", "PCM_16", "wav", 1e-4),
    ("WAV", "PCM_24", "wav", 1e-6),
    ("WAV", "PCM_32", "wav", 1e-6),
    ("WAV", "FLOAT", "wav", 0.0),
    ("WAV", "PCM_U8", "wav", 1 / 128),
    ("FLAC", "PCM_16", "flac", 1e-4),
])
def test_lossless_formats_decode_to_the_written_samples(tmp_path, fmt, subtype, ext, tolerance):
    x = tone(1.3)
    path = str(tmp_path / f"song.{ext}")
    sf.write(path, x, RATE, format=fmt, subtype=subtype)
    y = audio.load_audio(path, RATE)
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) == len(x)
    assert np.max(np.abs(y - x)) <= tolerance


@pytest.mark.parametrize("fmt, subtype, ext", [
    ("MP3", "MPEG_LAYER_III", "mp3"), ("OGG", "VORBIS", "ogg"),
])
def test_lossy_formats_decode_with_their_length_and_pitch(tmp_path, fmt, subtype, ext):
    x = tone(1.5)
    path = str(tmp_path / f"song.{ext}")
    sf.write(path, x, RATE, format=fmt, subtype=subtype)
    y = audio.load_audio(path, RATE)
    assert abs(len(y) - len(x)) <= 1152
    spectrum = lambda s: np.abs(np.fft.rfft(s[:16000]))
    assert np.argmax(spectrum(y)) == pytest.approx(np.argmax(spectrum(x)), abs=2)
    assert np.sqrt(np.mean(y ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=0.15)


def test_stereo_44k_is_downmixed_and_resampled_without_cutting(tmp_path):
    seconds, rate = 1.37, 44100
    t = np.arange(int(seconds * rate)) / rate
    left = 0.4 * np.sin(2 * np.pi * 1000 * t)
    stereo = np.stack([left, 0.5 * left], axis=1).astype(np.float32)  # mono mix: 0.75 * left
    path = str(tmp_path / "stereo.wav")
    sf.write(path, stereo, rate, subtype="PCM_16")
    y = audio.load_audio(path, RATE)
    assert len(y) == round(len(t) * RATE / rate)  # 21920 samples: 1.37 s, not 1 s or 2 s
    expected = 0.3 * np.sin(2 * np.pi * 1000 * np.arange(len(y)) / RATE)
    inner = slice(200, -200)  # the resampler's filter settles within a few ms of the edges
    assert snr_db(expected[inner], y[inner]) > 40


def test_clipped_audio_is_valid_and_kept(tmp_path, config):
    x = np.clip(3 * tone(2.0), -1, 1)
    path = str(tmp_path / "clipped.wav")
    sf.write(path, x, RATE, subtype="PCM_16")
    y = audio.load_audio(path, RATE)
    audio.check_audio(y, config)
    assert y.min() == -1.0 and y.max() > 0.9999


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        audio.load_audio(str(path), RATE)


def test_text_named_mp3_cannot_be_decoded(tmp_path):
    path = tmp_path / "lyrics.mp3"
    path.write_text("la la la, this is not audio\n" * 50)
    with pytest.raises(AudioError, match="^cannot decode") as info:
        audio.load_audio(str(path), RATE)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("ext, fmt", [("wav", "WAV"), ("flac", "FLAC"), ("mp3", "MP3")])
def test_truncated_files_are_rejected(tmp_path, ext, fmt):
    path = tmp_path / f"song.{ext}"
    sf.write(str(path), tone(2.0), RATE, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated|cannot decode"):
        audio.load_audio(str(path), RATE)


def test_streamed_wav_with_placeholder_size_is_not_truncated(tmp_path):
    path = tmp_path / "streamed.wav"
    sf.write(str(path), tone(1.0), RATE, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    data[at + 4:at + 8] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    assert len(audio.load_audio(str(path), RATE)) == RATE


@pytest.mark.parametrize("where, bad", [(0.0, np.nan), (1.5, np.nan), (1.999, np.inf)])
def test_non_finite_samples_anywhere_are_located(tmp_path, where, bad):
    x = tone(2.0)
    x[int(where * RATE)] = bad
    path = str(tmp_path / "nan.wav")
    sf.write(path, x, RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match=f"non-finite samples at {where:.2f} s"):
        audio.load_audio(path, RATE)
    with pytest.raises(AudioError, match="non-finite"):
        audio.check_audio(x, Config())


def test_check_audio_silent_and_short(config):
    with pytest.raises(AudioError, match="^silent$"):
        audio.check_audio(np.zeros(RATE, np.float32), config)
    with pytest.raises(AudioError, match="silent"):  # 16-bit dither of a silent take
        audio.check_audio(np.full(RATE, 3 / 32768, np.float32), config)
    with pytest.raises(audio.TooShortError, match=r"shorter than one patch \(0\.54 s < 0\.54 s\)"):
        audio.check_audio(tone(0.535), Config(hop_length=128))  # a patch is 8574 samples, 0.536 s
    audio.check_audio(tone(config.patch_seconds), config)
    with pytest.raises(audio.TooShortError):
        audio.check_audio(tone(config.patch_seconds)[:-1], config)


def test_save_wav_clips_and_round_trips(tmp_path):
    x = tone(0.5)
    x[:10] = 2.0
    x[10] = np.nan
    path = str(tmp_path / "out" / "song.wav")
    audio.save_wav(path, x, RATE)
    info = sf.info(path)
    assert info.subtype == "PCM_16" and info.samplerate == RATE
    y = audio.load_audio(path, RATE)
    assert np.all(y[:10] > 0.9999) and y[10] == 0.0
    assert np.max(np.abs(y[11:] - x[11:])) < 1e-4
    audio.save_wav(path, x[11:], RATE, subtype="FLOAT")
    assert np.array_equal(audio.load_audio(path, RATE), x[11:])


def test_save_wav_interrupted_mid_write_keeps_the_earlier_file(tmp_path, monkeypatch):
    path = str(tmp_path / "song.wav")
    audio.save_wav(path, tone(0.5), RATE)
    before = open(path, "rb").read()
    real_write = sf.write

    def write_half_then_interrupt(file, data, *args, **kwargs):
        real_write(file, data[: len(data) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(audio.sf, "write", write_half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        audio.save_wav(path, tone(1.0), RATE)
    assert open(path, "rb").read() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav"]


def test_extensions_match_in_any_case_and_skip_hidden_names():
    assert is_audio_file("a/Song ü.WAV") and is_audio_file("x.Mp3")
    assert is_audio_file("x.flac") and is_audio_file("x.OGG")
    assert not is_audio_file(".hidden.wav") and not is_audio_file("notes.txt")


# ---------------------------------------------------------------------------------- STFT
@pytest.mark.parametrize("config", HOPS, ids=lambda c: f"hop{c.hop_length}")
@pytest.mark.parametrize("num_samples", [12288, 12300])
def test_stft_is_librosas_centred_stft_of_whole_hops(config, num_samples):
    x = tone(num_samples / RATE)
    ours = audio.stft(x, config).numpy()
    whole_hops = np.pad(x, (0, -num_samples % config.hop_length))  # unchanged for 12288
    theirs = librosa.stft(whole_hops, n_fft=config.n_fft, hop_length=config.hop_length,
                          window="hann", center=True, pad_mode="constant").T
    assert ours.shape == theirs.shape == (audio.num_frames(num_samples, config), config.n_bins)
    assert len(ours) == 1 + int(np.ceil(num_samples / config.hop_length))
    assert np.max(np.abs(ours - theirs)) < 1e-4 * np.max(np.abs(theirs))


@pytest.mark.parametrize("config", HOPS, ids=lambda c: f"hop{c.hop_length}")
@pytest.mark.parametrize("num_samples", [16000, 16077, 16383, 9000])
def test_spectrogram_round_trip_is_exact_including_edges(config, num_samples):
    x = tone(num_samples / RATE)
    log_mag, phase = audio.spectrogram(x, config)
    assert log_mag.shape == phase.shape == (audio.num_frames(num_samples, config), config.n_bins)
    y = audio.spectrogram_to_audio(log_mag, phase, config, num_samples).numpy()
    assert y.shape == x.shape
    edge = config.n_fft
    assert snr_db(x, y) > 60
    assert snr_db(x[:edge], y[:edge]) > 60 and snr_db(x[-edge:], y[-edge:]) > 60
    assert abs(y[0] - x[0]) < 1e-4 and abs(y[-1] - x[-1]) < 1e-4


def test_istft_refuses_a_hop_that_leaves_samples_uncovered():
    config = Config(n_fft=510, hop_length=510)
    with pytest.raises(ValueError, match="hop_length"):
        audio.istft(tf.zeros([10, config.n_bins], tf.complex64), config, 3000)


@pytest.mark.parametrize("config", HOPS, ids=lambda c: f"hop{c.hop_length}")
def test_griffin_lim_matches_librosa(config):
    x = tone(0.8)[: 48 * config.hop_length]  # whole hops: where the two STFTs coincide
    log_mag, _ = audio.spectrogram(x, config)
    ours = audio.griffin_lim(log_mag, config, len(x), n_iter=16, seed=3).numpy()
    theirs = librosa.griffinlim(
        audio.magnitude(log_mag, config).numpy().T, n_iter=16, hop_length=config.hop_length,
        win_length=config.n_fft, n_fft=config.n_fft, window="hann", center=True,
        pad_mode="constant", length=len(x), momentum=0.99, init="random",
        random_state=np.random.default_rng(3),
    )
    assert snr_db(theirs, ours) > 50


@pytest.mark.parametrize("config", HOPS, ids=lambda c: f"hop{c.hop_length}")
def test_griffin_lim_recovers_the_magnitude(config):
    x = tone(1.0)[: 60 * config.hop_length - 1]  # the last sample far from a frame centre
    log_mag, _ = audio.spectrogram(x, config)
    target = audio.magnitude(log_mag, config).numpy()

    def convergence(n_iter):
        y = audio.griffin_lim(log_mag, config, len(x), n_iter=n_iter)
        rebuilt = np.abs(audio.stft(y, config).numpy())
        return np.linalg.norm(rebuilt - target) / np.linalg.norm(target)

    start, end = convergence(0), convergence(config.griffin_lim_iters)
    assert end < 0.1 and end < start / 4
    # No sample is divided by a near-zero window sum: no click at the edges of the estimate.
    y = audio.griffin_lim(log_mag, config, len(x)).numpy()
    assert np.max(np.abs(y)) < 2 * np.max(np.abs(x))


# ---------------------------------------------------------------------------------- features
@pytest.mark.parametrize("feature, window_size, channel_size", [
    ("spectrogram", 64, 1), ("waveform", 4096, 1), ("waveform", 4096, 4),
])
def test_patch_features_have_the_model_input_shape(feature, window_size, channel_size):
    config = Config(feature=feature, window_size=window_size, channel_size=channel_size)
    windows = tf.constant(np.stack([tone(2.0)[: config.patch_samples]] * 3))
    patches = features.patch_features(windows, config)
    assert tuple(patches.shape) == (3,) + config.input_shape
    if feature == "waveform":  # consecutive samples folded into channels
        second_step = windows[0, channel_size:2 * channel_size]
        np.testing.assert_array_equal(patches[0, 1, 0].numpy(), second_step)


@pytest.mark.parametrize("config", HOPS, ids=lambda c: f"hop{c.hop_length}")
def test_patch_frames_equal_the_whole_song_frames(config):
    x = tone(2.0)
    start = 10 * config.hop_length - config.n_fft // 2  # frame 10 of the centred STFT
    patch = features.patch_features(x[start:start + config.patch_samples], config)[..., 0].numpy()
    whole, _ = audio.spectrogram(x, config)
    np.testing.assert_allclose(patch, whole.numpy()[10:10 + config.window_size], atol=1e-3)


def test_feature_stats_normalise_both_ways_and_persist(tmp_path, config):
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 2.0, size=(50, config.n_bins)) * np.linspace(0.5, 2, config.n_bins)
    stats = FeatureStats.from_moments(config, len(values), values.sum(0), (values ** 2).sum(0))
    np.testing.assert_allclose(stats.mean, values.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, values.std(0), rtol=1e-4)
    path = str(tmp_path / "stats.json")
    stats.save(path)
    loaded = FeatureStats.load(path)
    assert loaded.matches(config) and not loaded.matches(config.replace(log_floor=1e-3))
    batch = rng.normal(size=(2, 8, config.n_bins, 1)).astype(np.float32)
    as_numpy = loaded.normalize(batch)
    as_tf = loaded.normalize(tf.constant(batch)).numpy()
    np.testing.assert_allclose(as_numpy, as_tf, rtol=1e-6)
    expected = (batch[0, 0, :, 0] - stats.mean) / stats.std
    np.testing.assert_allclose(as_numpy[0, 0, :, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(loaded.denormalize(as_numpy), batch, atol=1e-5)
    ones = np.full(config.n_bins, 10.0)
    flat = FeatureStats.from_moments(config, 10, ones, ones)
    assert np.all(flat.std == features.STD_FLOOR)  # a constant bin is not blown up


@pytest.mark.parametrize("config", HOPS, ids=lambda c: f"hop{c.hop_length}")
def test_whole_song_spectrogram_round_trip_with_phase(config):
    x = tone(1.234)
    log_mag, _ = audio.spectrogram(x, config)
    flat = log_mag.numpy()
    stats = FeatureStats(flat.mean(0), flat.std(0), features.stats_fields(config))
    song = features.song_to_features(x, config, stats)
    assert song.x.dtype == np.float32 and song.x.shape[1:] == (config.n_bins, 1)
    assert song.x.shape[0] % config.time_multiple == 0 and song.x.shape[0] >= song.num_steps
    assert song.num_steps == len(flat) and song.num_samples == len(x)
    assert abs(float(song.x[: song.num_steps].mean())) < 0.05
    y = features.features_to_song(song.x, config, stats, song)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert snr_db(x, y) > 60 and snr_db(x[:512], y[:512]) > 60 and snr_db(x[-512:], y[-512:]) > 60
    without_phase = features.features_to_song(song.x, config, stats, song, use_phase=False)
    assert without_phase.shape == x.shape and np.all(np.isfinite(without_phase))
    no_song = features.features_to_song(song.x[: song.num_steps], config, stats)
    assert len(no_song) == (song.num_steps - 1) * config.hop_length


@pytest.mark.parametrize("channel_size", [1, 4])
def test_whole_song_waveform_round_trip_is_exact(channel_size):
    config = Config(feature="waveform", window_size=4096, channel_size=channel_size)
    x = tone(0.5)[:7999]
    identity = FeatureStats.identity(config)
    song = features.song_to_features(x, config, identity)
    assert song.x.shape[1:] == (1, channel_size) and song.phase is None
    assert song.x.shape[0] % config.time_multiple == 0
    np.testing.assert_array_equal(features.features_to_song(song.x, config, identity, song), x)
    stats = FeatureStats([0.01], [0.2], features.stats_fields(config))
    song = features.song_to_features(x, config, stats)
    np.testing.assert_allclose(features.features_to_song(song.x, config, stats, song), x, atol=1e-6)


def test_feature_moments_match_the_patches(config):
    x = tone(2.0)
    count, total, squares = features.feature_moments(x, config)
    stride = features.stats_frame_stride(config)
    assert stride == int(np.ceil(config.n_fft / config.hop_length))
    frames = audio.log_magnitude(x, config, center=False).numpy()[::stride]
    assert count == len(frames)
    np.testing.assert_allclose(total / count, frames.mean(0), rtol=1e-4, atol=1e-4)
    wave = config.replace(feature="waveform", window_size=4096)
    count, total, squares = features.feature_moments(x, wave)
    assert count == len(x) and total.shape == (1,)
    assert total[0] == pytest.approx(x.astype(np.float64).sum(), rel=1e-6)

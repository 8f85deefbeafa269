"""data_loader.py on a corpus of real files written here: records, manifest, patches, the CLI."""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

import data_loader
from common_definitions import Config
from data_loader import DataError, SongDataLoader
from tests.test_audio import tone
from utils.audio.features import FeatureStats
from utils.data import records_writer

RATE = 16000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY = re.compile(r"^written: (\d+) files \((\d+(?:\.\d+)?) s of audio\), skipped: (\d+) files$")


def write(path, samples, rate=RATE, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, samples, rate, **kwargs)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """``real/`` and ``virtual/`` folders with every supported kind of file and every bad case.

    Returns the root and the expected ``{file name: expected reason (None when valid)}``.
    """
    root = str(tmp_path_factory.mktemp("corpus"))
    real, virtual = os.path.join(root, "real"), os.path.join(root, "virtual")
    t44 = np.arange(int(1.5 * 44100)) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 330 * t44), 0.2 * np.sin(2 * np.pi * 440 * t44)], 1)
    valid = {
        "real/pcm16.wav": dict(samples=tone(1.5, seed=1), subtype="PCM_16"),
        "real/deeper/pcm24.wav": dict(samples=tone(1.6, seed=2), subtype="PCM_24"),
        "real/float32.wav": dict(samples=tone(1.7, seed=3), subtype="FLOAT"),
        "real/u8.wav": dict(samples=tone(1.4, seed=4), subtype="PCM_U8"),
        "real/stereo 44k.wav": dict(samples=stereo.astype(np.float32), rate=44100, subtype="PCM_16"),
        "real/take.flac": dict(samples=tone(1.5, seed=5), format="FLAC"),
        "real/take.mp3": dict(samples=tone(1.5, seed=6), format="MP3"),
        "real/chorus ü ñ.WAV": dict(samples=tone(1.3, seed=7), subtype="PCM_16"),
        "real/clipped.wav": dict(samples=np.clip(4 * tone(1.5, seed=8), -1, 1), subtype="PCM_16"),
        "virtual/v1.wav": dict(samples=tone(2.5, f0=300, seed=9), subtype="PCM_16"),
        "virtual/nested/v2.OGG": dict(samples=tone(1.5, f0=350, seed=10), format="OGG"),
    }
    for name, spec in valid.items():
        write(os.path.join(root, name), **spec)
    bad = {
        "real/empty.wav": "empty file",
        "real/lyrics.mp3": "cannot decode",
        "real/truncated.wav": "truncated",
        "real/nan late.wav": "non-finite samples at 1.80 s",
        "real/inf first.wav": "non-finite samples at 0.00 s",
        "real/silent.flac": "silent",
        "real/short.wav": f"shorter than one patch (0.20 s < {Config().patch_seconds:.2f} s)",
    }
    open(os.path.join(real, "empty.wav"), "wb").close()
    with open(os.path.join(real, "lyrics.mp3"), "w") as handle:
        handle.write("not audio at all\n" * 100)
    write(os.path.join(real, "truncated.wav"), tone(1.5), subtype="PCM_16")
    with open(os.path.join(real, "truncated.wav"), "r+b") as handle:
        handle.truncate(20000)
    late, first = tone(2.0), tone(1.5)
    late[int(1.8 * RATE)] = np.nan
    first[0] = np.inf
    write(os.path.join(real, "nan late.wav"), late, subtype="FLOAT")
    write(os.path.join(real, "inf first.wav"), first, subtype="FLOAT")
    write(os.path.join(real, "silent.flac"), np.zeros(RATE, np.float32), format="FLAC")
    write(os.path.join(real, "short.wav"), tone(0.2), subtype="PCM_16")
    # ignored silently: hidden files and folders, other extensions
    with open(os.path.join(real, ".hidden.wav"), "w") as handle:
        handle.write("garbage")
    write(os.path.join(real, ".cache", "song.wav"), tone(1.0))
    with open(os.path.join(virtual, "notes.txt"), "w") as handle:
        handle.write("not a song")
    return root, valid, bad


@pytest.fixture(scope="module")
def made(corpus, tmp_path_factory):
    root, valid, bad = corpus
    records = str(tmp_path_factory.mktemp("records"))
    config = Config(data_dirs=(os.path.join(root, "real"), os.path.join(root, "virtual")),
                    records_dir=records, batch_size=4, shuffle_buffer=64)
    lines = []
    summary = SongDataLoader(config).make(log=lines.append)
    return config, summary, lines


def test_make_writes_every_valid_file_and_skips_every_bad_one(corpus, made):
    root, valid, bad = corpus
    config, summary, lines = made
    assert summary.written == len(valid) and summary.skipped == len(bad)
    assert summary.decoded == len(valid) + len(bad)
    reasons = {os.path.relpath(path, root): reason for path, reason in summary.skipped_files}
    assert set(reasons) == set(bad)
    for name, expected in bad.items():
        assert expected in reasons[name], (name, reasons[name])
    skip_lines = [line for line in lines if line.startswith("skipped: ")]
    assert len(skip_lines) == len(bad)
    assert all("\n" not in line and os.path.join(root, "real") in line for line in skip_lines)
    match = SUMMARY.match(lines[-1])
    assert match and int(match.group(1)) == len(valid) and int(match.group(3)) == len(bad)
    assert float(match.group(2)) == pytest.approx(summary.seconds, abs=0.05)


def test_records_hold_mono_float32_at_the_rate_with_labels(corpus, made):
    root, valid, _ = corpus
    config, summary, _ = made
    songs = {os.path.relpath(song.path, root): song
             for song in SongDataLoader(config).records().songs()}
    assert set(songs) == set(valid)
    for name, song in songs.items():
        assert song.label == name.split("/")[0]
        assert song.sampling_rate == RATE and song.samples.dtype == np.float32
        assert song.samples.ndim == 1
    assert len(songs["real/stereo 44k.wav"].samples) == round(int(1.5 * 44100) * RATE / 44100)
    np.testing.assert_allclose(songs["real/pcm16.wav"].samples, tone(1.5, seed=1), atol=1e-4)
    assert songs["real/clipped.wav"].samples.min() == -1.0
    assert summary.seconds == pytest.approx(sum(len(s.samples) for s in songs.values()) / RATE)


def test_stats_are_saved_beside_the_records_and_follow_the_feature(made):
    config, _, _ = made
    records = SongDataLoader(config).records()
    path = os.path.join(config.records_dir, "feature_stats_spectrogram.json")
    assert os.path.exists(path)
    stats = records.stats()
    assert stats.mean.shape == stats.std.shape == (config.n_bins,)
    assert stats.fields["n_fft"] == config.n_fft
    waveform = SongDataLoader(config.replace(feature="waveform", window_size=None))
    wave_stats = waveform.records().stats()
    assert wave_stats.mean.shape == (1,) and 0.05 < wave_stats.std[0] < 0.5
    assert os.path.exists(os.path.join(config.records_dir, "feature_stats_waveform.json"))
    # fields differ: recomputed
    changed = SongDataLoader(config.replace(log_floor=1e-3)).records().stats()
    assert changed.fields["log_floor"] == 1e-3 and not np.allclose(changed.mean, stats.mean)


@pytest.mark.parametrize("feature, window_size, channel_size", [
    ("spectrogram", 64, 1), ("waveform", 4096, 1), ("waveform", 2048, 4),
])
def test_load_yields_normalised_patches_of_the_input_shape(made, feature, window_size, channel_size):
    config, _, _ = made
    config = config.replace(feature=feature, window_size=window_size, channel_size=channel_size)
    dataset = SongDataLoader(config).records().training_dataset(labels=True)
    patches, labels = next(iter(dataset))
    assert tuple(patches.shape) == (config.batch_size,) + config.input_shape
    assert patches.dtype == tf.float32 and labels.dtype == tf.string
    assert set(labels.numpy()) <= {b"real", b"virtual"}
    # Static shapes (batch included: drop_remainder when training), as Keras wants them.
    assert tuple(dataset.element_spec[0].shape) == (config.batch_size,) + config.input_shape
    evaluation = SongDataLoader(config).records().evaluation_dataset()
    values = np.concatenate([batch.numpy().reshape(-1) for batch in evaluation])
    assert abs(values.mean()) < 0.2 and 0.7 < values.std() < 1.3


def test_aligned_windows_tile_each_song(made):
    config, _, _ = made
    records = SongDataLoader(config).records()
    step = config.window_size * config.hop_length
    expected = sum(1 + (len(s.samples) - config.patch_samples) // step for s in records.songs())
    batches = list(records.evaluation_dataset(batch_size=5))
    assert sum(int(b.shape[0]) for b in batches) == expected
    again = list(records.evaluation_dataset(batch_size=5))
    np.testing.assert_array_equal(batches[0].numpy(), again[0].numpy())


def test_random_windows_are_seeded(made):
    config, _, _ = made
    records = SongDataLoader(config).records()

    def first_batches(seed):
        return [b.numpy() for b in records.training_dataset(seed=seed).take(3)]

    a, b, c = first_batches(1), first_batches(1), first_batches(2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, z) for x, z in zip(a, c))
    # A new epoch draws new windows: a song's patches differ from one pass to the next.
    assert not np.array_equal(a[0], a[1])


def test_missing_or_empty_folder_is_a_data_error(tmp_path):
    loader = SongDataLoader(Config(records_dir=str(tmp_path / "records")))
    with pytest.raises(DataError, match="not found"):
        loader.make([str(tmp_path / "nowhere")])
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no songs")
    with pytest.raises(DataError, match="no audio files"):
        loader.make([str(tmp_path / "empty")])
    with pytest.raises(DataError, match="no records"):
        loader.records()


def test_make_is_incremental(tmp_path, monkeypatch):
    folder = tmp_path / "virtual"
    for i in range(4):
        write(str(folder / f"song{i}.wav"), tone(1.5, seed=i), subtype="PCM_16")
    write(str(folder / "bad.wav"), np.zeros(RATE, np.float32))
    config = Config(data_dirs=(str(folder),), records_dir=str(tmp_path / "records"),
                    shard_size_seconds=3.0)
    loader = SongDataLoader(config)
    first = loader.make(log=lambda line: None)
    assert (first.written, first.skipped, first.decoded) == (4, 1, 5)
    stats_before = loader.records().stats()

    real_load = records_writer.load_audio
    calls = []
    monkeypatch.setattr(records_writer, "load_audio",
                        lambda *a: calls.append(a[0]) or real_load(*a))
    again = loader.make(log=lambda line: None)
    assert (again.written, again.skipped, again.decoded) == (4, 1, 0) and calls == []

    changed = folder / "song1.wav"
    write(str(changed), tone(2.0, seed=99), subtype="PCM_16")
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime, whatever the clock
    os.remove(folder / "song3.wav")
    third = loader.make(log=lambda line: None)
    assert (third.written, third.skipped, third.decoded) == (3, 1, 1)
    assert calls == [str(changed)]
    songs = {os.path.basename(s.path): s for s in loader.records().songs()}
    assert sorted(songs) == ["song0.wav", "song1.wav", "song2.wav"]
    np.testing.assert_allclose(songs["song1.wav"].samples, tone(2.0, seed=99), atol=1e-4)
    np.testing.assert_allclose(songs["song0.wav"].samples, tone(1.5, seed=0), atol=1e-4)
    assert loader.records().stats().source != stats_before.source
    shards = loader.records().shard_paths
    assert sorted(os.listdir(config.records_dir)) == sorted(
        [os.path.basename(p) for p in shards] + ["manifest.json", "feature_stats_spectrogram.json"])

    with open(os.path.join(config.records_dir, "manifest.json")) as handle:
        files = json.load(handle)["files"]
    first = os.path.basename(shards[0])
    lost = {os.path.basename(p) for p, e in files.items() if e.get("shard") == first}
    os.remove(shards[0])  # deleted by hand: its songs are decoded again, nothing else is
    calls.clear()
    fourth = loader.make(log=lambda line: None)
    assert (fourth.written, fourth.decoded) == (3, len(lost))
    assert {os.path.basename(p) for p in calls} == lost


def test_a_larger_patch_skips_short_songs_without_decoding(tmp_path):
    folder = tmp_path / "real"
    write(str(folder / "one second.wav"), tone(1.0), subtype="PCM_16")
    write(str(folder / "three seconds.wav"), tone(3.0), subtype="PCM_16")
    config = Config(data_dirs=(str(folder),), records_dir=str(tmp_path / "records"),
                    hop_length=128)  # a patch is 0.54 s
    assert SongDataLoader(config).make(log=lambda line: None).written == 2
    long_patch = config.replace(window_size=256)  # 2.07 s
    summary = SongDataLoader(long_patch).make(log=lambda line: None)
    assert (summary.written, summary.skipped, summary.decoded) == (1, 1, 0)
    assert "shorter than one patch (1.00 s < 2.07 s)" in summary.skipped_files[0][1]
    back = SongDataLoader(config).make(log=lambda line: None)
    assert (back.written, back.decoded) == (2, 1)


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, os.path.join(ROOT, "data_loader.py"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_writes_records_and_ends_with_the_summary(corpus, tmp_path):
    root, valid, bad = corpus
    result = run_cli(os.path.join(root, "real"), os.path.join(root, "virtual"),
                     "--out", str(tmp_path / "records"), "--sampling_rate", "16000")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    match = SUMMARY.match(lines[-1])
    assert match and (int(match.group(1)), int(match.group(3))) == (len(valid), len(bad))
    skipped = [line for line in lines if line.startswith("skipped: ")]
    assert len(skipped) == len(bad)
    assert any("lyrics.mp3" in line and "cannot decode" in line for line in skipped)
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_errors_are_one_line_with_a_non_zero_exit(tmp_path):
    (tmp_path / "empty").mkdir()
    missing, empty = tmp_path / "missing", tmp_path / "empty"
    result = run_cli(str(missing), str(empty), "--out", str(tmp_path / "r"))
    assert result.returncode == 2  # refused before any work (was 1)
    assert "Traceback" not in result.stderr
    # TensorFlow's own start-up notes may precede it; ours is the single last line.
    error = f"data_loader.py: error: audio folder not found: {missing}"
    assert result.stderr.splitlines()[-1] == error
    assert sum(line.startswith("data_loader.py: error:")
               for line in result.stderr.splitlines()) == 1
    assert data_loader.main([str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    (tmp_path / "only bad").mkdir()
    (tmp_path / "only bad" / "x.wav").write_bytes(b"RIFF")
    assert data_loader.main([str(tmp_path / "only bad"), "--out", str(tmp_path / "r")]) == 1
    assert data_loader.main([str(tmp_path / "empty")]) == 2  # --out is required
    assert data_loader.main([str(tmp_path), "--out", "r", "--window_size", "63"]) == 2


def test_only_a_records_manifest_counts_as_records(tmp_path):
    from data_loader import read_records_manifest

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # The demo corpus writes a manifest.json of its own: that folder holds songs, not records.
    (corpus / "manifest.json").write_text('{"params": {}, "singers": [], "files": {}}')
    assert read_records_manifest(str(corpus)) is None
    (corpus / "manifest.json").write_text("not json")
    assert read_records_manifest(str(corpus)) is None
    assert read_records_manifest(str(tmp_path / "missing")) is None


def test_load_normalises_with_the_statistics_it_is_given(made):
    # A checkpoint's statistics replace the records' own, in the one featurising map.
    config, _, _ = made
    records = SongDataLoader(config).records()
    own = records.stats()
    default = next(iter(records.evaluation_dataset(batch_size=4))).numpy()
    identity = FeatureStats.identity(config)
    raw = next(iter(records.evaluation_dataset(batch_size=4, stats=identity))).numpy()
    np.testing.assert_allclose(own.normalize(raw), default, rtol=1e-5, atol=1e-5)
    assert not np.allclose(raw, default)
